//! Plans and their lifecycle states.

use super::{Store, StoreError};
use crate::model::PlanState;
use ferric_proto::plan::{Plan, PlanId, PlanStep};
use sqlx::Row;
use sqlx::any::AnyRow;

/// `SELECT` of every column of `plans`, then the rest of the statement.
macro_rules! select_plans {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            "id, node, steps_json, state, created_at_us, pushed_at_us, accepted_at_us, finished_at_us, \
             cancel_requested_at_ms",
            " FROM plans ",
            $rest
        )
    };
}

/// A plan counted by `/metrics`.
#[derive(Debug, Clone)]
pub struct PlanFigure {
    /// Its node.
    pub node: String,
    /// Its state.
    pub state: PlanState,
    /// From creation to finish, µs; `None` while unfinished.
    pub took_us: Option<i64>,
}

/// A plan's stored events and whether a cancel of it waits, for a reconnecting agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCursorRow {
    /// Events stored.
    pub stored: u32,
    /// An operator asked to cancel it and it has not ended.
    pub cancel_pending: bool,
}

/// A plan as stored, with its timestamps.
#[derive(Debug, Clone)]
pub struct PlanRow {
    /// Id.
    pub id: PlanId,
    /// Node.
    pub node: String,
    /// Steps.
    pub steps: Vec<PlanStep>,
    /// State.
    pub state: PlanState,
    /// Creation, µs since the epoch.
    pub created_at_us: i64,
    /// First push to a connected agent.
    pub pushed_at_us: Option<i64>,
    /// Journaled by the agent.
    pub accepted_at_us: Option<i64>,
    /// Finished (succeeded or failed).
    pub finished_at_us: Option<i64>,
    /// When an operator asked to cancel it, ms since the epoch.
    pub cancel_requested_at_ms: Option<i64>,
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
impl Store {
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
        .bind(PlanState::Pending.as_str())
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
            state: row.try_get::<String, _>("state")?.parse()?,
            created_at_us: row.try_get("created_at_us")?,
            pushed_at_us: row.try_get("pushed_at_us")?,
            accepted_at_us: row.try_get("accepted_at_us")?,
            finished_at_us: row.try_get("finished_at_us")?,
            cancel_requested_at_ms: row.try_get("cancel_requested_at_ms")?,
        })
    }

    /// One plan.
    pub async fn plan(&self, id: PlanId) -> Result<Option<PlanRow>, StoreError> {
        let q = sqlx::query(select_plans!("WHERE id = $1"));
        self.fetch_row(q.bind(id as i64), Self::plan_row).await
    }

    /// Plans, newest first, optionally of one node.
    pub async fn plans(&self, node: Option<&str>, limit: i64) -> Result<Vec<PlanRow>, StoreError> {
        let q = match node {
            Some(n) => {
                sqlx::query(select_plans!("WHERE node = $1 ORDER BY id DESC LIMIT $2")).bind(n)
            }
            None => sqlx::query(select_plans!("ORDER BY id DESC LIMIT $1")),
        };
        self.fetch_rows(q.bind(limit), Self::plan_row).await
    }

    /// Plans of `node` that have not finished, oldest first.
    pub async fn unfinished_plans(&self, node: &str) -> Result<Vec<PlanRow>, StoreError> {
        let q = sqlx::query(select_plans!(
            "WHERE node = $1 AND state IN ($2, $3, $4) ORDER BY id"
        ))
        .bind(node)
        .bind(PlanState::Pending.as_str())
        .bind(PlanState::Accepted.as_str())
        .bind(PlanState::Running.as_str());
        self.fetch_rows(q, Self::plan_row).await
    }

    /// The plans of `node` from id `from` on, with how many of their events are stored and
    /// whether a cancel waits: one query, however many plans a reconnecting agent names.
    pub async fn plan_cursors(
        &self,
        node: &str,
        from: PlanId,
    ) -> Result<std::collections::HashMap<PlanId, PlanCursorRow>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT p.id, p.state, p.cancel_requested_at_ms, \
             (SELECT COUNT(*) FROM events e WHERE e.plan_id = p.id) AS stored \
             FROM plans p WHERE p.node = $1 AND p.id >= $2",
        )
        .bind(node)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let state: PlanState = r.try_get::<String, _>("state")?.parse()?;
                let cancel: Option<i64> = r.try_get("cancel_requested_at_ms")?;
                let stored: i64 = r.try_get("stored")?;
                Ok((
                    id as PlanId,
                    PlanCursorRow {
                        stored: stored as u32,
                        cancel_pending: cancel.is_some() && !state.is_finished(),
                    },
                ))
            })
            .collect()
    }

    /// Notes the first push of a plan.
    pub async fn plan_pushed(&self, id: PlanId, now_us: i64) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE plans SET pushed_at_us = $1 WHERE id = $2 AND pushed_at_us IS NULL",
        );
        self.run(q.bind(now_us).bind(id as i64)).await?;
        Ok(())
    }

    /// Notes that an operator asked to cancel plan `id`; false when it has ended (or does not
    /// exist).
    pub async fn request_cancel(&self, id: PlanId, now_ms: i64) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE plans SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, $1) \
             WHERE id = $2 AND state IN ($3, $4, $5)",
        )
        .bind(now_ms)
        .bind(id as i64)
        .bind(PlanState::Pending.as_str())
        .bind(PlanState::Accepted.as_str())
        .bind(PlanState::Running.as_str());
        Ok(self.run(q).await? == 1)
    }

    /// Notes that the agent journaled a plan.
    pub async fn plan_accepted(
        &self,
        id: PlanId,
        node: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE plans SET accepted_at_us = $1, state = $2 \
             WHERE id = $3 AND node = $4 AND state = $5",
        )
        .bind(now_us)
        .bind(PlanState::Accepted.as_str())
        .bind(id as i64)
        .bind(node)
        .bind(PlanState::Pending.as_str());
        self.run(q).await?;
        Ok(())
    }
    /// Every plan's node and state and, once it finished, how long it took from its creation
    /// (µs): what `/metrics` counts.
    pub async fn plan_figures(&self) -> Result<Vec<PlanFigure>, StoreError> {
        let q = sqlx::query(
            "SELECT node, state, CASE WHEN finished_at_us IS NULL THEN NULL \
             ELSE finished_at_us - created_at_us END AS took_us FROM plans",
        );
        self.fetch_rows(q, |r| {
            Ok(PlanFigure {
                node: r.try_get("node")?,
                state: r.try_get::<String, _>("state")?.parse()?,
                took_us: r.try_get("took_us")?,
            })
        })
        .await
    }
}
