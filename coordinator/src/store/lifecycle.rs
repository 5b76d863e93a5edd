//! Bare-metal nodes' lifecycle: state and step, deadline, the plan awaited, the last error,
//! what was asked, and the log of transitions. A change is a compare-and-set on where the
//! node was, so that two causes (a plan's end, a deadline) never both move it.

use super::{Store, StoreError};
use crate::model::{Phase, ProvisionState};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A bare-metal node's lifecycle as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleRow {
    /// Node.
    pub node: String,
    /// Provision state.
    pub state: ProvisionState,
    /// What it is doing, in a state that waits.
    pub step: Option<Phase>,
    /// When it entered the state or step, ms since the epoch.
    pub since_ms: i64,
    /// When the step fails if it has not ended.
    pub deadline_ms: Option<i64>,
    /// The plan the step waits for.
    pub wait_plan: Option<u64>,
    /// The last failure's reason.
    pub error: Option<String>,
    /// When it failed.
    pub error_at_ms: Option<i64>,
    /// What the node was asked to become (JSON of the conductor's spec).
    pub spec_json: Option<String>,
}

/// One transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    /// Order within the node.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// From.
    pub from: String,
    /// To.
    pub to: String,
    /// The step entered.
    pub step: Option<String>,
    /// What caused it (`verb manage`, `plan 12 ended`, `ramdisk called back`, `deadline`).
    pub cause: String,
    /// The failure's reason, when it was one.
    pub error: Option<String>,
}

/// `SELECT` of the lifecycle's columns of `nodes`, then the rest of the statement.
macro_rules! select_lifecycle {
    ($rest:literal) => {
        concat!(
            "SELECT name, provision_state, provision_step, state_since_ms, deadline_ms, ",
            "wait_plan, provision_error, provision_error_at_ms, provision_json FROM nodes ",
            $rest
        )
    };
}

impl Store {
    fn lifecycle_row(row: &AnyRow) -> Result<LifecycleRow, StoreError> {
        Ok(LifecycleRow {
            node: row.try_get("name")?,
            state: row.try_get::<String, _>("provision_state")?.parse()?,
            step: row
                .try_get::<Option<String>, _>("provision_step")?
                .map(|s| s.parse())
                .transpose()?,
            since_ms: row
                .try_get::<Option<i64>, _>("state_since_ms")?
                .unwrap_or_default(),
            deadline_ms: row.try_get("deadline_ms")?,
            wait_plan: row
                .try_get::<Option<i64>, _>("wait_plan")?
                .map(|p| p as u64),
            error: row.try_get("provision_error")?,
            error_at_ms: row.try_get("provision_error_at_ms")?,
            spec_json: row.try_get("provision_json")?,
        })
    }

    /// A bare-metal node's lifecycle (`None` for nodes that have none: agents).
    pub async fn lifecycle(&self, node: &str) -> Result<Option<LifecycleRow>, StoreError> {
        let sql = select_lifecycle!("WHERE name = $1 AND provision_state IS NOT NULL");
        self.fetch_row(sqlx::query(sql).bind(node), Self::lifecycle_row)
            .await
    }

    /// The node whose step waits for `plan`.
    pub async fn lifecycle_waiting_for(
        &self,
        plan: u64,
    ) -> Result<Option<LifecycleRow>, StoreError> {
        let sql = select_lifecycle!("WHERE wait_plan = $1");
        self.fetch_row(sqlx::query(sql).bind(plan as i64), Self::lifecycle_row)
            .await
    }

    /// Nodes whose lifecycle is in a step (waiting for work, a call back or a plan).
    pub async fn lifecycles_under_way(&self) -> Result<Vec<LifecycleRow>, StoreError> {
        let sql = select_lifecycle!("WHERE provision_step IS NOT NULL ORDER BY name");
        self.fetch_rows(sqlx::query(sql), Self::lifecycle_row).await
    }

    /// Nodes whose deadline is at or before `now_ms`.
    pub async fn lifecycles_due(&self, now_ms: i64) -> Result<Vec<LifecycleRow>, StoreError> {
        let sql = select_lifecycle!(
            "WHERE deadline_ms IS NOT NULL AND deadline_ms <= $1 ORDER BY deadline_ms"
        );
        self.fetch_rows(sqlx::query(sql).bind(now_ms), Self::lifecycle_row)
            .await
    }

    /// Moves `from` (as it was read) to `to`, logging the transition with its `cause`, in one
    /// transaction; false (and nothing changed) when the node is no longer where `from` says.
    pub async fn move_lifecycle(
        &self,
        from: &LifecycleRow,
        to: &LifecycleRow,
        cause: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        let changed = sqlx::query(
            "UPDATE nodes SET provision_state = $1, provision_step = $2, state_since_ms = $3, \
             deadline_ms = $4, wait_plan = $5, provision_error = $6, provision_error_at_ms = $7, \
             provision_json = $8 \
             WHERE name = $9 AND provision_state = $10 AND COALESCE(provision_step, '') = $11 \
             AND COALESCE(wait_plan, -1) = $12 AND COALESCE(state_since_ms, 0) = $13",
        )
        .bind(to.state.as_str())
        .bind(to.step.map(|s| s.as_str()))
        .bind(to.since_ms)
        .bind(to.deadline_ms)
        .bind(to.wait_plan.map(|p| p as i64))
        .bind(to.error.clone())
        .bind(to.error_at_ms)
        .bind(to.spec_json.clone())
        .bind(&from.node)
        .bind(from.state.as_str())
        .bind(from.step.map_or("", |s| s.as_str()))
        .bind(from.wait_plan.map_or(-1, |p| p as i64))
        .bind(from.since_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            tx.rollback().await?;
            return Ok(false);
        }
        let fresh_error = (to.error_at_ms != from.error_at_ms)
            .then(|| to.error.clone())
            .flatten();
        sqlx::query(
            "INSERT INTO transitions (node, seq, at_ms, from_state, to_state, step, cause, error) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM transitions \
             WHERE node = $1",
        )
        .bind(&from.node)
        .bind(to.since_ms)
        .bind(from.state.as_str())
        .bind(to.state.as_str())
        .bind(to.step.map(|s| s.as_str()))
        .bind(cause)
        .bind(fresh_error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records the plan `node`'s step (entered at `since_ms`) waits for.
    pub async fn lifecycle_waits_for(
        &self,
        node: &str,
        since_ms: i64,
        plan: u64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE nodes SET wait_plan = $1 WHERE name = $2 AND state_since_ms = $3 \
             AND wait_plan IS NULL",
        );
        Ok(self
            .run(q.bind(plan as i64).bind(node).bind(since_ms))
            .await?
            == 1)
    }

    /// The last `limit` transitions of `node`, oldest first.
    pub async fn transitions(
        &self,
        node: &str,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let q = sqlx::query(
            "SELECT seq, at_ms, from_state, to_state, step, cause, error FROM transitions \
             WHERE node = $1 ORDER BY seq DESC LIMIT $2",
        );
        let mut rows = self
            .fetch_rows(q.bind(node).bind(limit), |r| {
                Ok(TransitionRow {
                    seq: r.try_get("seq")?,
                    at_ms: r.try_get("at_ms")?,
                    from: r.try_get("from_state")?,
                    to: r.try_get("to_state")?,
                    step: r.try_get("step")?,
                    cause: r.try_get("cause")?,
                    error: r.try_get("error")?,
                })
            })
            .await?;
        rows.reverse();
        Ok(rows)
    }
}
