//! The coordinator's store: nodes, bootstrap tokens, plans and every step event.
//!
//! The embedded default is SQLite in the data directory. Queries go through sqlx's `Any`
//! driver with `$N` placeholders so that the same statements serve PostgreSQL later; schema
//! migrations are versioned per backend and run at start.

use ferric_proto::plan::{Plan, PlanId, PlanStep, StepEvent, StepEventKind};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Running migrations failed.
    #[error("schema migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored plan could not be decoded.
    #[error("stored plan {0} is corrupt")]
    CorruptPlan(PlanId, #[source] serde_json::Error),
    /// The node does not exist.
    #[error("node `{0}` is not enrolled")]
    UnknownNode(String),
    /// The node exists already.
    #[error("node `{0}` is already enrolled")]
    NodeExists(String),
    /// An event names a plan this node does not have.
    #[error("plan {plan} does not exist for node `{node}`")]
    UnknownPlan {
        /// Plan.
        plan: PlanId,
        /// Node.
        node: String,
    },
}

/// Why a bootstrap token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Unknown id or wrong secret.
    Invalid,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
}

/// A node as stored.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Name (identity).
    pub name: String,
    /// Agent role.
    pub role: String,
    /// Enrollment time, ms since the epoch.
    pub enrolled_at_ms: i64,
    /// Last time the agent said hello, ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// Capabilities from the last hello.
    pub capabilities: Vec<String>,
}

/// Plan lifecycle in the store.
pub mod state {
    /// Stored, not yet journaled by the agent.
    pub const PENDING: &str = "pending";
    /// The agent journaled it.
    pub const ACCEPTED: &str = "accepted";
    /// A step started.
    pub const RUNNING: &str = "running";
    /// All steps done.
    pub const SUCCEEDED: &str = "succeeded";
    /// A step failed.
    pub const FAILED: &str = "failed";
}

/// A plan as stored, with its timestamps.
#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    /// Id.
    pub id: PlanId,
    /// Node.
    pub node: String,
    /// Steps.
    pub steps: Vec<PlanStep>,
    /// State (see [`state`]).
    pub state: String,
    /// Creation, µs since the epoch.
    pub created_at_us: i64,
    /// First push to a connected agent.
    pub pushed_at_us: Option<i64>,
    /// Journaled by the agent.
    pub accepted_at_us: Option<i64>,
    /// Finished (succeeded or failed).
    pub finished_at_us: Option<i64>,
}

impl PlanRow {
    /// The plan as pushed on the wire.
    pub fn to_plan(&self) -> Plan {
        Plan {
            id: self.id,
            node: self.node.clone(),
            steps: self.steps.clone(),
        }
    }
}

/// A stored step event.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// Plan.
    pub plan: PlanId,
    /// Sequence number within the plan.
    pub seq: u32,
    /// Step index.
    pub step: u32,
    /// The event.
    pub kind: StepEventKind,
    /// Agent clock, ms since the epoch.
    pub agent_at_ms: i64,
    /// Coordinator clock at receipt, µs since the epoch.
    pub received_at_us: i64,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Statement that opens a write transaction. SQLite's plain `BEGIN` defers the write lock,
    /// and a deferred transaction that reads first fails with "database is locked" when another
    /// writer commits meanwhile; `BEGIN IMMEDIATE` takes the lock up front and waits for it.
    begin_write: &'static str,
}

macro_rules! plan_columns {
    () => {
        "id, node, steps_json, state, created_at_us, pushed_at_us, accepted_at_us, finished_at_us"
    };
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            begin_write: "BEGIN IMMEDIATE",
        })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tokens -------------------------------------------------------------------------

    /// Records a new bootstrap token (only the hash of its secret).
    pub async fn create_token(
        &self,
        id: &str,
        secret_sha256: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, secret_sha256, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(secret_sha256)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Checks a token without using it.
    pub async fn check_token(
        &self,
        id: &str,
        secret_sha256: &str,
        now_ms: i64,
    ) -> Result<Result<(), TokenProblem>, StoreError> {
        let row = sqlx::query(
            "SELECT secret_sha256, expires_at_ms, used_at_ms FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Err(TokenProblem::Invalid));
        };
        let stored: String = row.try_get(0)?;
        if !constant_time_eq(stored.as_bytes(), secret_sha256.as_bytes()) {
            return Ok(Err(TokenProblem::Invalid));
        }
        let used: Option<i64> = row.try_get(2)?;
        if used.is_some() {
            return Ok(Err(TokenProblem::Used));
        }
        let expires: i64 = row.try_get(1)?;
        if now_ms >= expires {
            return Ok(Err(TokenProblem::Expired));
        }
        Ok(Ok(()))
    }

    /// Uses a token and enrolls `node` in one transaction: either both happen or neither.
    pub async fn enroll(
        &self,
        token_id: &str,
        secret_sha256: &str,
        node: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<Result<(), EnrollProblem>, StoreError> {
        let mut tx = self.pool.begin_with(self.begin_write).await?;
        let used = sqlx::query(
            "UPDATE tokens SET used_at_ms = $1, used_by = $2 \
             WHERE id = $3 AND secret_sha256 = $4 AND used_at_ms IS NULL AND expires_at_ms > $1",
        )
        .bind(now_ms)
        .bind(node)
        .bind(token_id)
        .bind(secret_sha256)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            // Name the precise problem (the token may have been used concurrently).
            let problem = self
                .check_token(token_id, secret_sha256, now_ms)
                .await?
                .err()
                .unwrap_or(TokenProblem::Used);
            return Ok(Err(EnrollProblem::Token(problem)));
        }
        let exists = sqlx::query("SELECT 1 FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            tx.rollback().await?;
            return Ok(Err(EnrollProblem::NodeExists));
        }
        sqlx::query("INSERT INTO nodes (name, role, enrolled_at_ms) VALUES ($1, $2, $3)")
            .bind(node)
            .bind(role)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Number of tokens not yet used (for tests and status).
    pub async fn unused_tokens(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM tokens WHERE used_at_ms IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    // ---- nodes --------------------------------------------------------------------------

    fn node_row(row: &AnyRow) -> Result<NodeRow, StoreError> {
        let caps: String = row.try_get("capabilities")?;
        Ok(NodeRow {
            name: row.try_get("name")?,
            role: row.try_get("role")?,
            enrolled_at_ms: row.try_get("enrolled_at_ms")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            capabilities: caps
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// One node.
    pub async fn node(&self, name: &str) -> Result<Option<NodeRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, role, enrolled_at_ms, last_seen_ms, capabilities FROM nodes WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::node_row).transpose()
    }

    /// All nodes, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, enrolled_at_ms, last_seen_ms, capabilities FROM nodes ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::node_row).collect()
    }

    /// Records a hello.
    pub async fn node_seen(
        &self,
        name: &str,
        now_ms: i64,
        capabilities: &[String],
        inventory_sha256: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nodes SET last_seen_ms = $1, capabilities = $2, inventory_sha256 = $3 WHERE name = $4",
        )
        .bind(now_ms)
        .bind(capabilities.join(","))
        .bind(inventory_sha256)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records when a node's agent was last heard, as its link closes.
    pub async fn node_heard(&self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nodes SET last_seen_ms = $1 WHERE name = $2 AND (last_seen_ms IS NULL OR last_seen_ms < $1)",
        )
        .bind(at_ms)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- images -------------------------------------------------------------------------

    /// Stores an image's record (false if the name is taken).
    pub async fn insert_image(&self, i: &ImageRow) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO images (name, sha256, sha512, format, wrapper, virtual_size, size, details, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&i.name)
        .bind(&i.sha256)
        .bind(&i.sha512)
        .bind(&i.format)
        .bind(i.wrapper.clone())
        .bind(i.virtual_size)
        .bind(i.size)
        .bind(i.details.join(","))
        .bind(i.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    fn image_row(r: &AnyRow) -> Result<ImageRow, StoreError> {
        let details: String = r.try_get("details")?;
        Ok(ImageRow {
            name: r.try_get("name")?,
            sha256: r.try_get("sha256")?,
            sha512: r.try_get("sha512")?,
            format: r.try_get("format")?,
            wrapper: r.try_get("wrapper")?,
            virtual_size: r.try_get("virtual_size")?,
            size: r.try_get("size")?,
            details: details
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at_ms: r.try_get("created_at_ms")?,
        })
    }

    /// All images, by name.
    pub async fn images(&self) -> Result<Vec<ImageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, sha256, sha512, format, wrapper, virtual_size, size, details, created_at_ms FROM images ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::image_row).collect()
    }

    /// One image.
    pub async fn image(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, sha256, sha512, format, wrapper, virtual_size, size, details, created_at_ms FROM images WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::image_row).transpose()
    }

    /// Removes an image's record; returns it.
    pub async fn delete_image(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        let Some(row) = self.image(name).await? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM images WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(Some(row))
    }

    /// How many names refer to this content.
    pub async fn image_refs(&self, sha256: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM images WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    // ---- guests -------------------------------------------------------------------------

    /// Stores a placed guest (fails if the name is taken).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_guest(&self, g: &GuestRow) -> Result<bool, StoreError> {
        let spec = serde_json::to_string(&g.spec).map_err(|e| StoreError::CorruptPlan(0, e))?;
        let r = sqlx::query(
            "INSERT INTO guests (name, host, vcpus, memory_mib, disk_bytes, spec_json, desired, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&g.name)
        .bind(&g.host)
        .bind(g.vcpus)
        .bind(g.memory_mib)
        .bind(g.disk_bytes)
        .bind(spec)
        .bind(&g.desired)
        .bind(g.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    fn guest_row(r: &AnyRow) -> Result<GuestRow, StoreError> {
        let spec: String = r.try_get("spec_json")?;
        Ok(GuestRow {
            name: r.try_get("name")?,
            host: r.try_get("host")?,
            vcpus: r.try_get("vcpus")?,
            memory_mib: r.try_get("memory_mib")?,
            disk_bytes: r.try_get("disk_bytes")?,
            spec: serde_json::from_str(&spec).map_err(|e| StoreError::CorruptPlan(0, e))?,
            desired: r.try_get("desired")?,
            created_at_ms: r.try_get("created_at_ms")?,
            last_plan: r.try_get("last_plan")?,
        })
    }

    /// All guests, by name.
    pub async fn guests(&self) -> Result<Vec<GuestRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, host, vcpus, memory_mib, disk_bytes, spec_json, desired, created_at_ms, last_plan FROM guests ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::guest_row).collect()
    }

    /// One guest.
    pub async fn guest(&self, name: &str) -> Result<Option<GuestRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, host, vcpus, memory_mib, disk_bytes, spec_json, desired, created_at_ms, last_plan FROM guests WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::guest_row).transpose()
    }

    /// Records the desired state of a guest and the plan that brings it there.
    pub async fn guest_desired(
        &self,
        name: &str,
        desired: &str,
        plan: PlanId,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE guests SET desired = $1, last_plan = $2 WHERE name = $3")
            .bind(desired)
            .bind(plan as i64)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Resources promised per host by guests that are not being deleted.
    pub async fn allocations(
        &self,
    ) -> Result<std::collections::HashMap<String, Allocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, SUM(vcpus), SUM(memory_mib), SUM(disk_bytes), COUNT(*) FROM guests WHERE desired <> 'deleted' GROUP BY host",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = std::collections::HashMap::new();
        for r in rows {
            let host: String = r.try_get(0)?;
            let n =
                |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
            out.insert(
                host,
                Allocation {
                    vcpus: n(1)?,
                    memory_mib: n(2)?,
                    disk_bytes: n(3)?,
                    guests: n(4)?,
                },
            );
        }
        Ok(out)
    }

    // ---- plans --------------------------------------------------------------------------

    /// Stores a plan for `node` (state pending) and returns it with its id.
    pub async fn create_plan(
        &self,
        node: &str,
        steps: &[PlanStep],
        now_us: i64,
    ) -> Result<Plan, StoreError> {
        if self.node(node).await?.is_none() {
            return Err(StoreError::UnknownNode(node.to_owned()));
        }
        let json = serde_json::to_string(steps).map_err(|e| StoreError::CorruptPlan(0, e))?;
        let row = sqlx::query(
            "INSERT INTO plans (node, steps_json, step_count, state, created_at_us) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(node)
        .bind(json)
        .bind(steps.len() as i64)
        .bind(state::PENDING)
        .bind(now_us)
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get(0)?;
        Ok(Plan {
            id: id as PlanId,
            node: node.to_owned(),
            steps: steps.to_vec(),
        })
    }

    fn plan_row(row: &AnyRow) -> Result<PlanRow, StoreError> {
        let id: i64 = row.try_get("id")?;
        let json: String = row.try_get("steps_json")?;
        Ok(PlanRow {
            id: id as PlanId,
            node: row.try_get("node")?,
            steps: serde_json::from_str(&json)
                .map_err(|e| StoreError::CorruptPlan(id as PlanId, e))?,
            state: row.try_get("state")?,
            created_at_us: row.try_get("created_at_us")?,
            pushed_at_us: row.try_get("pushed_at_us")?,
            accepted_at_us: row.try_get("accepted_at_us")?,
            finished_at_us: row.try_get("finished_at_us")?,
        })
    }

    /// One plan.
    pub async fn plan(&self, id: PlanId) -> Result<Option<PlanRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            plan_columns!(),
            " FROM plans WHERE id = $1"
        ))
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::plan_row).transpose()
    }

    /// Plans, newest first, optionally of one node.
    pub async fn plans(&self, node: Option<&str>, limit: i64) -> Result<Vec<PlanRow>, StoreError> {
        let rows = match node {
            Some(n) => {
                sqlx::query(concat!(
                    "SELECT ",
                    plan_columns!(),
                    " FROM plans WHERE node = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(n)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    plan_columns!(),
                    " FROM plans ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(Self::plan_row).collect()
    }

    /// Plans of `node` that have not finished, oldest first.
    pub async fn unfinished_plans(&self, node: &str) -> Result<Vec<PlanRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            plan_columns!(),
            " FROM plans WHERE node = $1 AND state IN ($2, $3, $4) ORDER BY id"
        ))
        .bind(node)
        .bind(state::PENDING)
        .bind(state::ACCEPTED)
        .bind(state::RUNNING)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::plan_row).collect()
    }

    /// Notes the first push of a plan.
    pub async fn plan_pushed(&self, id: PlanId, now_us: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE plans SET pushed_at_us = $1 WHERE id = $2 AND pushed_at_us IS NULL")
            .bind(now_us)
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Notes that the agent journaled a plan.
    pub async fn plan_accepted(
        &self,
        id: PlanId,
        node: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE plans SET accepted_at_us = $1, state = $2 \
             WHERE id = $3 AND node = $4 AND state = $5",
        )
        .bind(now_us)
        .bind(state::ACCEPTED)
        .bind(id as i64)
        .bind(node)
        .bind(state::PENDING)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores an event of `node`'s plan exactly once and advances the plan's state.
    /// Returns false when the event was stored before.
    pub async fn insert_event(
        &self,
        node: &str,
        ev: &StepEvent,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(self.begin_write).await?;
        let plan = sqlx::query("SELECT step_count, state FROM plans WHERE id = $1 AND node = $2")
            .bind(ev.plan as i64)
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(plan) = plan else {
            tx.rollback().await?;
            return Err(StoreError::UnknownPlan {
                plan: ev.plan,
                node: node.to_owned(),
            });
        };
        let step_count: i64 = plan.try_get(0)?;
        let (kind, error_kind, message, done, total, changed) = match &ev.kind {
            StepEventKind::Started => ("started", None, None, None, None, None),
            StepEventKind::Progress { done, total } => (
                "progress",
                None,
                None,
                Some(*done as i64),
                total.map(|t| t as i64),
                None,
            ),
            StepEventKind::Done { changed } => {
                ("done", None, None, None, None, Some(i64::from(*changed)))
            }
            StepEventKind::Failed { kind, message } => (
                "failed",
                Some(kind.as_str().to_owned()),
                Some(message.clone()),
                None,
                None,
                None,
            ),
            StepEventKind::Output(out) => (
                "output",
                None,
                Some(serde_json::to_string(out).map_err(|e| StoreError::CorruptPlan(ev.plan, e))?),
                None,
                None,
                None,
            ),
        };
        let inserted = sqlx::query(
            "INSERT INTO events (plan_id, seq, step, kind, error_kind, message, progress_done, \
             progress_total, changed, agent_at_ms, received_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(ev.plan as i64)
        .bind(i64::from(ev.seq))
        .bind(i64::from(ev.step))
        .bind(kind)
        .bind(error_kind)
        .bind(message)
        .bind(done)
        .bind(total)
        .bind(changed)
        .bind(ev.at_ms as i64)
        .bind(now_us)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            let next = if ev.ends_plan(step_count as usize) {
                Some(match ev.kind {
                    StepEventKind::Failed { .. } => state::FAILED,
                    _ => state::SUCCEEDED,
                })
            } else if matches!(ev.kind, StepEventKind::Started) {
                Some(state::RUNNING)
            } else {
                None
            };
            if let Some(next) = next {
                let finished = matches!(next, state::FAILED | state::SUCCEEDED).then_some(now_us);
                sqlx::query(
                    "UPDATE plans SET state = $1, finished_at_us = COALESCE($2, finished_at_us), \
                     accepted_at_us = COALESCE(accepted_at_us, $3) WHERE id = $4",
                )
                .bind(next)
                .bind(finished)
                .bind(now_us)
                .bind(ev.plan as i64)
                .execute(&mut *tx)
                .await?;
                if next == state::SUCCEEDED {
                    // A guest whose deletion this plan carried out leaves the inventory.
                    sqlx::query("DELETE FROM guests WHERE last_plan = $1 AND desired = 'deleted'")
                        .bind(ev.plan as i64)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// How many events of each plan are stored (events `0..n` are, by construction).
    pub async fn stored_events(&self, plan: PlanId) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM events WHERE plan_id = $1")
            .bind(plan as i64)
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get(0)?;
        Ok(n as u32)
    }

    /// Events of a plan, in order.
    pub async fn events(&self, plan: PlanId) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, step, kind, error_kind, message, progress_done, progress_total, changed, \
             agent_at_ms, received_at_us FROM events WHERE plan_id = $1 ORDER BY seq",
        )
        .bind(plan as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let kind = match kind.as_str() {
                    "started" => StepEventKind::Started,
                    "progress" => StepEventKind::Progress {
                        done: r.try_get::<Option<i64>, _>("progress_done")?.unwrap_or(0) as u64,
                        total: r
                            .try_get::<Option<i64>, _>("progress_total")?
                            .map(|t| t as u64),
                    },
                    "done" => StepEventKind::Done {
                        changed: r.try_get::<Option<i64>, _>("changed")?.unwrap_or(0) != 0,
                    },
                    "output" => {
                        let json = r
                            .try_get::<Option<String>, _>("message")?
                            .unwrap_or_default();
                        StepEventKind::Output(
                            serde_json::from_str(&json)
                                .map_err(|e| StoreError::CorruptPlan(plan, e))?,
                        )
                    }
                    _ => StepEventKind::Failed {
                        kind: parse_error_kind(
                            r.try_get::<Option<String>, _>("error_kind")?
                                .as_deref()
                                .unwrap_or(""),
                        ),
                        message: r
                            .try_get::<Option<String>, _>("message")?
                            .unwrap_or_default(),
                    },
                };
                let seq: i64 = r.try_get("seq")?;
                let step: i64 = r.try_get("step")?;
                Ok(EventRow {
                    plan,
                    seq: seq as u32,
                    step: step as u32,
                    kind,
                    agent_at_ms: r.try_get("agent_at_ms")?,
                    received_at_us: r.try_get("received_at_us")?,
                })
            })
            .collect()
    }
}

/// A bare-metal node's BMC as stored (the password stays inside the store module's callers
/// that send it to the agent; it is skipped when serialized).
#[derive(Debug, Clone, Serialize)]
pub struct BmcRow {
    /// The bare-metal node.
    pub node: String,
    /// `ipmi://USER@HOST:PORT`.
    pub address: String,
    /// Password.
    #[serde(skip)]
    pub password: Secret,
    /// Agent that drives the BMC.
    pub via: String,
    /// The node's NIC MAC addresses.
    pub macs: Vec<String>,
    /// Power state Ferric last set (`on`/`off`).
    pub power_expected: Option<String>,
    /// When that was confirmed, agent clock, ms since the epoch.
    pub expected_at_ms: Option<i64>,
    /// Power state last read (`on`/`off`).
    pub power_observed: Option<String>,
    /// When, agent clock, ms since the epoch.
    pub observed_at_ms: Option<i64>,
    /// The newest failed read's error (kept after the BMC answers again).
    pub last_error: Option<String>,
    /// When that read was, agent clock, ms since the epoch.
    pub error_at_ms: Option<i64>,
    /// What changed behind Ferric's back, until a power action clears it.
    pub flag: Option<String>,
    /// When it was flagged.
    pub flagged_at_ms: Option<i64>,
}

/// A password: shown as `***` in debug output and never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

macro_rules! bmc_columns {
    () => {
        "node, address, password, via, macs, power_expected, expected_at_ms, power_observed, \
         observed_at_ms, last_error, error_at_ms, flag, flagged_at_ms"
    };
}

impl Store {
    fn bmc_row(r: &AnyRow) -> Result<BmcRow, StoreError> {
        Ok(BmcRow {
            node: r.try_get("node")?,
            address: r.try_get("address")?,
            password: Secret(r.try_get("password")?),
            via: r.try_get("via")?,
            macs: r
                .try_get::<String, _>("macs")?
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            power_expected: r.try_get("power_expected")?,
            expected_at_ms: r.try_get("expected_at_ms")?,
            power_observed: r.try_get("power_observed")?,
            observed_at_ms: r.try_get("observed_at_ms")?,
            last_error: r.try_get("last_error")?,
            error_at_ms: r.try_get("error_at_ms")?,
            flag: r.try_get("flag")?,
            flagged_at_ms: r.try_get("flagged_at_ms")?,
        })
    }

    /// Enrolls a bare-metal node with its BMC, driven by the agent `via`.
    pub async fn insert_bmc_node(
        &self,
        node: &str,
        address: &str,
        password: &str,
        via: &str,
        macs: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(self.begin_write).await?;
        let exists = sqlx::query("SELECT 1 FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            tx.rollback().await?;
            return Err(StoreError::NodeExists(node.to_owned()));
        }
        let agent = sqlx::query("SELECT 1 FROM nodes WHERE name = $1 AND role <> 'baremetal'")
            .bind(via)
            .fetch_optional(&mut *tx)
            .await?;
        if agent.is_none() {
            tx.rollback().await?;
            return Err(StoreError::UnknownNode(via.to_owned()));
        }
        sqlx::query("INSERT INTO nodes (name, role, enrolled_at_ms) VALUES ($1, 'baremetal', $2)")
            .bind(node)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO bmcs (node, address, password, via, macs) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(node)
        .bind(address)
        .bind(password)
        .bind(via)
        .bind(macs.join(","))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a bare-metal node and its BMC; returns the row removed.
    pub async fn delete_bmc_node(&self, node: &str) -> Result<Option<BmcRow>, StoreError> {
        let Some(row) = self.bmc(node).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin_with(self.begin_write).await?;
        sqlx::query("DELETE FROM bmcs WHERE node = $1")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE name = $1 AND role = 'baremetal'")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// One node's BMC.
    pub async fn bmc(&self, node: &str) -> Result<Option<BmcRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            bmc_columns!(),
            " FROM bmcs WHERE node = $1"
        ))
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::bmc_row).transpose()
    }

    /// Every BMC (of one driving agent, when given), by node name.
    pub async fn bmcs(&self, via: Option<&str>) -> Result<Vec<BmcRow>, StoreError> {
        let rows = match via {
            Some(v) => {
                sqlx::query(concat!(
                    "SELECT ",
                    bmc_columns!(),
                    " FROM bmcs WHERE via = $1 ORDER BY node"
                ))
                .bind(v)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    bmc_columns!(),
                    " FROM bmcs ORDER BY node"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(Self::bmc_row).collect()
    }

    /// Records the power state a Ferric power action left (confirmed by the agent at `at_ms`)
    /// and clears any flag.
    pub async fn bmc_power_set(&self, node: &str, on: bool, at_ms: i64) -> Result<(), StoreError> {
        let p = if on { "on" } else { "off" };
        sqlx::query(
            "UPDATE bmcs SET power_expected = $1, expected_at_ms = $2, power_observed = $1, \
             observed_at_ms = $2, flag = NULL, flagged_at_ms = NULL WHERE node = $3",
        )
        .bind(p)
        .bind(at_ms)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records what a poll saw. Returns the new flag when the power differs from what Ferric
    /// set (an observation older than Ferric's last action is stale, and one made while a
    /// power plan is `busy` is in flux: both are only recorded). The first observation of a
    /// node becomes what Ferric expects.
    pub async fn bmc_observed(
        &self,
        node: &str,
        busy: bool,
        power_on: Option<bool>,
        error: Option<&str>,
        at_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool.begin_with(self.begin_write).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            bmc_columns!(),
            " FROM bmcs WHERE node = $1"
        ))
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row.as_ref().map(Self::bmc_row).transpose()? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if row
            .observed_at_ms
            .max(row.error_at_ms)
            .is_some_and(|t| t > at_ms)
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let seen = power_on.map(|on| if on { "on" } else { "off" });
        let mut flag = None;
        let mut expected = row.power_expected.clone();
        if let Some(seen) = seen {
            match &row.power_expected {
                None => expected = Some(seen.to_owned()),
                Some(e)
                    if !busy
                        && e != seen
                        && row.flag.is_none()
                        && row.expected_at_ms.is_none_or(|t| at_ms > t) =>
                {
                    flag = Some(format!(
                        "power changed behind Ferric's back: Ferric left it {e}, the BMC reports {seen}"
                    ));
                }
                _ => {}
            }
        }
        // A read whose power failed keeps the last power read and its time; its error and
        // time are kept apart, so that the view can tell "failing now" from "failed once".
        sqlx::query(
            "UPDATE bmcs SET power_observed = COALESCE($1, power_observed), \
             observed_at_ms = CASE WHEN $1 IS NULL THEN observed_at_ms ELSE $2 END, \
             last_error = COALESCE($3, last_error), \
             error_at_ms = CASE WHEN $3 IS NULL THEN error_at_ms ELSE $2 END, \
             power_expected = $4, flag = COALESCE($5, flag), \
             flagged_at_ms = COALESCE($6, flagged_at_ms) WHERE node = $7",
        )
        .bind(seen)
        .bind(at_ms)
        .bind(error)
        .bind(expected)
        .bind(flag.clone())
        .bind(flag.as_ref().map(|_| at_ms))
        .bind(node)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(flag)
    }
}

/// An image as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    /// Name.
    pub name: String,
    /// sha256 of the file (its address in the store).
    pub sha256: String,
    /// sha512 of the file.
    pub sha512: String,
    /// Format (qemu-img's spelling).
    pub format: String,
    /// Compression wrapper.
    pub wrapper: Option<String>,
    /// Size of the disk it holds.
    pub virtual_size: Option<i64>,
    /// Bytes stored.
    pub size: i64,
    /// Inspection details.
    pub details: Vec<String>,
    /// Uploaded, ms since the epoch.
    pub created_at_ms: i64,
}

/// A guest as stored.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRow {
    /// Name.
    pub name: String,
    /// Host it is placed on.
    pub host: String,
    /// vCPUs.
    pub vcpus: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Root disk, bytes.
    pub disk_bytes: i64,
    /// Its spec as pushed in `ensure_guest`.
    pub spec: ferric_proto::plan::GuestSpec,
    /// `running`, `stopped` or `deleted`.
    pub desired: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// The last plan that acted on it.
    pub last_plan: Option<i64>,
}

/// Resources promised on a host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocation {
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Disk, bytes.
    pub disk_bytes: u64,
    /// Guests.
    pub guests: u64,
}

/// Why an enrollment did not happen (nothing was changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollProblem {
    /// The token was not accepted.
    Token(TokenProblem),
    /// The node name is taken.
    NodeExists,
}

fn parse_error_kind(s: &str) -> ferric_proto::plan::ErrorKind {
    // A kind this build does not know (written by a newer one) reads as `internal`.
    s.parse().unwrap_or(ferric_proto::plan::ErrorKind::Internal)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::plan::{ErrorKind, Step};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_sqlite(&dir.path().join("ferric.db"))
            .await
            .unwrap();
        (dir, s)
    }

    fn steps(n: usize) -> Vec<PlanStep> {
        (0..n)
            .map(|i| PlanStep {
                key: format!("k{i}"),
                timeout_secs: 5,
                step: Step::DeleteGuest {
                    name: format!("g{i}"),
                },
            })
            .collect()
    }

    #[tokio::test]
    async fn token_is_single_use_and_enrollment_is_atomic() {
        let (_d, s) = store().await;
        s.create_token("abc", "h", 0, 1_000).await.unwrap();
        assert_eq!(
            s.enroll("abc", "wrong", "n1", "hypervisor", 10)
                .await
                .unwrap(),
            Err(EnrollProblem::Token(TokenProblem::Invalid))
        );
        assert_eq!(
            s.enroll("abc", "h", "n1", "hypervisor", 2_000)
                .await
                .unwrap(),
            Err(EnrollProblem::Token(TokenProblem::Expired))
        );
        assert!(
            s.node("n1").await.unwrap().is_none(),
            "refusals change nothing"
        );
        assert_eq!(
            s.enroll("abc", "h", "n1", "hypervisor", 10).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.enroll("abc", "h", "n2", "hypervisor", 11).await.unwrap(),
            Err(EnrollProblem::Token(TokenProblem::Used))
        );
        // A taken name does not burn a fresh token.
        s.create_token("def", "h2", 0, 1_000).await.unwrap();
        assert_eq!(
            s.enroll("def", "h2", "n1", "hypervisor", 12).await.unwrap(),
            Err(EnrollProblem::NodeExists)
        );
        assert_eq!(s.unused_tokens().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_wait_for_each_other_instead_of_failing() {
        let (_d, s) = store().await;
        s.create_token("t", "h", 0, 1_000).await.unwrap();
        s.enroll("t", "h", "n1", "hypervisor", 1)
            .await
            .unwrap()
            .unwrap();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let plan = s.create_plan("n1", &steps(40), 5).await.unwrap();
            let s = s.clone();
            set.spawn(async move {
                for seq in 0..40u32 {
                    let ev = StepEvent {
                        plan: plan.id,
                        seq,
                        step: seq / 2,
                        at_ms: 1,
                        kind: StepEventKind::Started,
                    };
                    s.insert_event("n1", &ev, 6).await?;
                }
                Ok::<_, StoreError>(plan.id)
            });
        }
        while let Some(r) = set.join_next().await {
            let id = r.unwrap().unwrap();
            assert_eq!(s.stored_events(id).await.unwrap(), 40);
        }
    }

    #[tokio::test]
    async fn events_are_stored_once_and_drive_plan_state() {
        let (_d, s) = store().await;
        s.create_token("t", "h", 0, 1_000).await.unwrap();
        s.enroll("t", "h", "n1", "hypervisor", 1)
            .await
            .unwrap()
            .unwrap();
        let plan = s.create_plan("n1", &steps(2), 5).await.unwrap();
        let ev = |seq, step, kind| StepEvent {
            plan: plan.id,
            seq,
            step,
            at_ms: 1,
            kind,
        };
        assert!(
            s.insert_event("n1", &ev(0, 0, StepEventKind::Started), 6)
                .await
                .unwrap()
        );
        assert!(
            !s.insert_event("n1", &ev(0, 0, StepEventKind::Started), 7)
                .await
                .unwrap()
        );
        assert_eq!(
            s.plan(plan.id).await.unwrap().unwrap().state,
            state::RUNNING
        );
        s.insert_event("n1", &ev(1, 0, StepEventKind::Done { changed: true }), 8)
            .await
            .unwrap();
        s.insert_event(
            "n1",
            &ev(
                2,
                1,
                StepEventKind::Failed {
                    kind: ErrorKind::Timeout,
                    message: "slow".into(),
                },
            ),
            9,
        )
        .await
        .unwrap();
        let row = s.plan(plan.id).await.unwrap().unwrap();
        assert_eq!(row.state, state::FAILED);
        assert_eq!(row.finished_at_us, Some(9));
        assert_eq!(s.stored_events(plan.id).await.unwrap(), 3);
        let evs = s.events(plan.id).await.unwrap();
        assert_eq!(
            evs[2].kind,
            StepEventKind::Failed {
                kind: ErrorKind::Timeout,
                message: "slow".into()
            }
        );
        assert!(s.unfinished_plans("n1").await.unwrap().is_empty());
        // Another node cannot write into this plan.
        assert!(matches!(
            s.insert_event("n2", &ev(3, 1, StepEventKind::Started), 10)
                .await,
            Err(StoreError::UnknownPlan { .. })
        ));
    }
}
