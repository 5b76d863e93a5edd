//! Who may use the API: projects, API tokens (only a hash of their secret is kept) and the
//! audit log of mutating calls.

use super::{Store, StoreError};
use crate::model::ApiRole;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A project as stored.
#[derive(Debug, Clone)]
pub struct ProjectRow {
    /// Name.
    pub name: String,
    /// Most bytes of images it may keep; `None`: the coordinator's default (or none).
    pub image_quota_bytes: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
}

/// An API token as stored (never its secret).
#[derive(Debug, Clone)]
pub struct ApiTokenRow {
    /// Its id (the part before the dot).
    pub id: String,
    /// Its project; `None`: the whole fleet.
    pub project: Option<String>,
    /// What it may do there.
    pub role: ApiRole,
    /// What it is for.
    pub description: String,
    /// The token that made it.
    pub created_by: Option<String>,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Expiry, ms since the epoch; `None`: until revoked.
    pub expires_at_ms: Option<i64>,
    /// Revoked at, ms since the epoch.
    pub revoked_at_ms: Option<i64>,
    /// Last used, ms since the epoch.
    pub last_used_ms: Option<i64>,
}

/// One audited call.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Order.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The token's id; `None` when the call carried no valid token.
    pub token_id: Option<String>,
    /// The project the call acted in (`None` for fleet-wide calls and refused ones).
    pub project: Option<String>,
    /// The caller's role.
    pub role: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// HTTP status of the answer.
    pub status: i64,
    /// The problem's stable code when it failed.
    pub code: Option<String>,
}

impl Store {
    /// Creates a project (`false`: the name is taken).
    pub async fn create_project(&self, p: &ProjectRow) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO projects (name, image_quota_bytes, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&p.name)
        .bind(p.image_quota_bytes)
        .bind(p.created_at_ms);
        Ok(self.run(q).await? == 1)
    }

    fn project_row(r: &AnyRow) -> Result<ProjectRow, StoreError> {
        Ok(ProjectRow {
            name: r.try_get("name")?,
            image_quota_bytes: r.try_get("image_quota_bytes")?,
            created_at_ms: r.try_get("created_at_ms")?,
        })
    }

    /// Every project, by name.
    pub async fn projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        let q = sqlx::query(
            "SELECT name, image_quota_bytes, created_at_ms FROM projects ORDER BY name",
        );
        self.fetch_rows(q, Self::project_row).await
    }

    /// One project.
    pub async fn project(&self, name: &str) -> Result<Option<ProjectRow>, StoreError> {
        let q = sqlx::query(
            "SELECT name, image_quota_bytes, created_at_ms FROM projects WHERE name = $1",
        );
        self.fetch_row(q.bind(name), Self::project_row).await
    }

    /// Stores a new API token with the hash of its secret.
    pub async fn create_api_token(
        &self,
        t: &ApiTokenRow,
        secret_sha256: &str,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO api_tokens (id, secret_sha256, project, role, description, created_by, \
             created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(secret_sha256)
        .bind(&t.project)
        .bind(t.role.as_str())
        .bind(&t.description)
        .bind(&t.created_by)
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms);
        self.run(q).await?;
        Ok(())
    }

    fn api_token_row(r: &AnyRow) -> Result<ApiTokenRow, StoreError> {
        Ok(ApiTokenRow {
            id: r.try_get("id")?,
            project: r.try_get("project")?,
            role: r.try_get::<String, _>("role")?.parse()?,
            description: r.try_get("description")?,
            created_by: r.try_get("created_by")?,
            created_at_ms: r.try_get("created_at_ms")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
            revoked_at_ms: r.try_get("revoked_at_ms")?,
            last_used_ms: r.try_get("last_used_ms")?,
        })
    }

    /// Every API token, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        let q = sqlx::query(
            "SELECT id, project, role, description, created_by, created_at_ms, expires_at_ms, \
             revoked_at_ms, last_used_ms FROM api_tokens ORDER BY created_at_ms, id",
        );
        self.fetch_rows(q, Self::api_token_row).await
    }

    /// The token `id` if `secret_sha256` is its secret's hash (revoked and expired ones too:
    /// the caller says why they are refused).
    pub async fn api_token(
        &self,
        id: &str,
        secret_sha256: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret_sha256, project, role, description, created_by, created_at_ms, \
             expires_at_ms, revoked_at_ms, last_used_ms FROM api_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("secret_sha256")?;
        if !super::tokens::constant_time_eq(stored.as_bytes(), secret_sha256.as_bytes()) {
            return Ok(None);
        }
        Self::api_token_row(&row).map(Some)
    }

    /// The token `id`, whatever its secret: for a holder admitted already, whether it still
    /// stands (revoked or expired since).
    pub async fn api_token_by_id(&self, id: &str) -> Result<Option<ApiTokenRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, project, role, description, created_by, created_at_ms, \
             expires_at_ms, revoked_at_ms, last_used_ms FROM api_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::api_token_row).transpose()
    }

    /// Whether any API token exists (revoked ones count: the first admin token is made once).
    pub async fn any_api_token(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Records that a token was used (at most once a minute is worth a write).
    pub async fn api_token_used(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE api_tokens SET last_used_ms = $2 WHERE id = $1 \
             AND (last_used_ms IS NULL OR last_used_ms < $3)",
        )
        .bind(id)
        .bind(at_ms)
        .bind(at_ms - 60_000);
        self.run(q).await?;
        Ok(())
    }

    /// Revokes a token (`false`: no such token, or revoked already).
    pub async fn revoke_api_token(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE api_tokens SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(id)
        .bind(at_ms);
        Ok(self.run(q).await? == 1)
    }

    /// Appends to the audit log.
    pub async fn audit(&self, a: &AuditRow) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO audit (at_ms, token_id, project, role, method, path, status, code) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(a.at_ms)
        .bind(&a.token_id)
        .bind(&a.project)
        .bind(&a.role)
        .bind(&a.method)
        .bind(&a.path)
        .bind(a.status)
        .bind(&a.code);
        self.run(q).await?;
        Ok(())
    }

    /// Removes audit entries older than `before_ms`, and all but the newest `keep`; how many
    /// went.
    pub async fn prune_audit(&self, before_ms: i64, keep: i64) -> Result<u64, StoreError> {
        let mut gone = self
            .run(sqlx::query("DELETE FROM audit WHERE at_ms < $1").bind(before_ms))
            .await?;
        gone += self
            .run(
                sqlx::query(
                    "DELETE FROM audit WHERE id <= \
                     (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
                )
                .bind(keep.max(0)),
            )
            .await?;
        Ok(gone)
    }

    /// Audit entries held.
    pub async fn audit_rows(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM audit")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The newest `limit` audit entries (of `project` only, when given), newest first.
    pub async fn audit_log(
        &self,
        project: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let read = |r: &AnyRow| -> Result<AuditRow, StoreError> {
            Ok(AuditRow {
                id: r.try_get("id")?,
                at_ms: r.try_get("at_ms")?,
                token_id: r.try_get("token_id")?,
                project: r.try_get("project")?,
                role: r.try_get("role")?,
                method: r.try_get("method")?,
                path: r.try_get("path")?,
                status: r.try_get("status")?,
                code: r.try_get("code")?,
            })
        };
        let rows = match project {
            Some(p) => {
                sqlx::query(
                    "SELECT id, at_ms, token_id, project, role, method, path, status, code \
                     FROM audit WHERE project = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(p)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, at_ms, token_id, project, role, method, path, status, code \
                     FROM audit ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(read).collect()
    }

    /// The project a node belongs to (`None`: no such node).
    pub async fn node_project(&self, node: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT project FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The project a guest belongs to: its host's (`None`: no such guest).
    pub async fn guest_project(&self, guest: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT nodes.project FROM guests JOIN nodes ON nodes.name = guests.host \
             WHERE guests.name = $1",
        )
        .bind(guest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The project a plan belongs to: its node's (`None`: no such plan).
    pub async fn plan_project(&self, plan: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT nodes.project FROM plans JOIN nodes ON nodes.name = plans.node \
             WHERE plans.id = $1",
        )
        .bind(plan)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The project an image belongs to (`None`: no such image).
    pub async fn image_project(&self, image: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT project FROM images WHERE name = $1")
            .bind(image)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Bytes of images a project keeps.
    pub async fn project_image_bytes(&self, project: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(SUM(size), 0) FROM images WHERE project = $1")
            .bind(project)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Certificates of `node` issued before this generation are refused; bumps it and
    /// returns the new one (`None`: no such node).
    pub async fn revoke_node_certs(&self, node: &str) -> Result<Option<i64>, StoreError> {
        let q =
            sqlx::query("UPDATE nodes SET cert_generation = cert_generation + 1 WHERE name = $1")
                .bind(node);
        if self.run(q).await? == 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT cert_generation FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(row.try_get(0)?))
    }

    /// Every node's certificate generation that is not the first.
    pub async fn cert_generations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT name, cert_generation FROM nodes WHERE cert_generation > 0")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// A node's certificate generation (`None`: no such node).
    pub async fn cert_generation(&self, node: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT cert_generation FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
