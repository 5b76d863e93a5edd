//! Per-boot tokens of bare-metal nodes, and what their ramdisks found on inspection.

use super::{Store, StoreError};
use ferric_proto::msg::Inspection;
use sqlx::Row;

/// Why a per-boot token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTokenProblem {
    /// Unknown id or wrong secret.
    Invalid,
    /// Already used by a ramdisk.
    Used,
    /// Past its expiry.
    Expired,
    /// A later boot of the node has its own token.
    Replaced,
    /// Issued for another node.
    OtherNode(String),
}

impl Store {
    /// Records a token for `node`'s next boot (only the hash of its secret) and kills the
    /// unused tokens of its earlier boots, in one transaction.
    pub async fn create_boot_token(
        &self,
        id: &str,
        secret_sha256: &str,
        node: &str,
        mac: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        sqlx::query(
            "UPDATE boot_tokens SET revoked_at_ms = $1 \
             WHERE node = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO boot_tokens (id, secret_sha256, node, mac, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(secret_sha256)
        .bind(node)
        .bind(mac)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `id` names a per-boot token (of any state).
    pub async fn is_boot_token(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM boot_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Uses a per-boot token for `node`: checked and marked used in one transaction.
    pub async fn use_boot_token(
        &self,
        id: &str,
        secret_sha256: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<Result<(), BootTokenProblem>, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        let row = sqlx::query(
            "SELECT secret_sha256, node, expires_at_ms, used_at_ms, revoked_at_ms \
             FROM boot_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let verdict = match row {
            None => Err(BootTokenProblem::Invalid),
            Some(r) => {
                let stored: String = r.try_get(0)?;
                let bound: String = r.try_get(1)?;
                let expires: i64 = r.try_get(2)?;
                let used: Option<i64> = r.try_get(3)?;
                let revoked: Option<i64> = r.try_get(4)?;
                if !super::tokens::constant_time_eq(stored.as_bytes(), secret_sha256.as_bytes()) {
                    Err(BootTokenProblem::Invalid)
                } else if bound != node {
                    Err(BootTokenProblem::OtherNode(bound))
                } else if used.is_some() {
                    Err(BootTokenProblem::Used)
                } else if revoked.is_some() {
                    Err(BootTokenProblem::Replaced)
                } else if now_ms >= expires {
                    Err(BootTokenProblem::Expired)
                } else {
                    Ok(())
                }
            }
        };
        if verdict.is_ok() {
            sqlx::query("UPDATE boot_tokens SET used_at_ms = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(verdict)
    }

    /// Kills every token of `node` not used yet (its boot ended).
    pub async fn end_boot(&self, node: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE boot_tokens SET revoked_at_ms = $1 WHERE node = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A node found by network boot: a bare-metal node in state `enroll` named `node`, with
    /// its MAC; the existing node when the MAC was found before.
    pub async fn discovered(
        &self,
        mac: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        if let Some(r) = sqlx::query("SELECT node FROM discovered_macs WHERE mac = $1")
            .bind(mac)
            .fetch_optional(&mut *tx)
            .await?
        {
            tx.rollback().await?;
            return Ok(r.try_get(0)?);
        }
        sqlx::query(
            "INSERT INTO nodes (name, role, enrolled_at_ms, provision_state) VALUES ($1, $2, $3, $4)",
        )
        .bind(node)
        .bind(crate::model::NodeRole::Baremetal.as_str())
        .bind(now_ms)
        .bind(crate::model::ProvisionState::Enroll.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO discovered_macs (mac, node, at_ms) VALUES ($1, $2, $3)")
            .bind(mac)
            .bind(node)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(node.to_owned())
    }

    /// MACs of discovered nodes, with their nodes.
    pub async fn discovered_macs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT mac, node FROM discovered_macs ORDER BY mac")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Stores what a node's ramdisk found (replacing an earlier inspection).
    pub async fn save_inspection(
        &self,
        node: &str,
        inspection: &Inspection,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(inspection).map_err(StoreError::Corrupt)?;
        sqlx::query(
            "INSERT INTO inspections (node, at_ms, inspection_json) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET at_ms = $2, inspection_json = $3",
        )
        .bind(node)
        .bind(at_ms)
        .bind(json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest inspection of a node, with its time.
    pub async fn inspection(&self, node: &str) -> Result<Option<(Inspection, i64)>, StoreError> {
        let row = sqlx::query("SELECT inspection_json, at_ms FROM inspections WHERE node = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let json: String = r.try_get(0)?;
            let at: i64 = r.try_get(1)?;
            Ok((
                serde_json::from_str(&json).map_err(StoreError::Corrupt)?,
                at,
            ))
        })
        .transpose()
    }
}
