//! Step events, stored exactly once, and the plan states they drive.

use super::{Store, StoreError};
use crate::model::PlanState;
use ferric_proto::plan::{PlanId, StepEvent, StepEventKind};
use sqlx::Row;

/// A stored step event.
#[derive(Debug, Clone)]
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

impl Store {
    /// Stores an event of `node`'s plan exactly once and advances the plan's state.
    /// Returns false when the event was stored before.
    pub async fn insert_event(
        &self,
        node: &str,
        ev: &StepEvent,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
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
                    StepEventKind::Failed { .. } => PlanState::Failed,
                    _ => PlanState::Succeeded,
                })
            } else if matches!(ev.kind, StepEventKind::Started) {
                Some(PlanState::Running)
            } else {
                None
            };
            if let Some(next) = next {
                let finished = next.is_finished().then_some(now_us);
                // An event after the plan's end (an agent's step run again after a restart)
                // is stored, but a finished plan stays as it ended.
                sqlx::query(
                    "UPDATE plans SET state = $1, finished_at_us = COALESCE($2, finished_at_us), \
                     accepted_at_us = COALESCE(accepted_at_us, $3) \
                     WHERE id = $4 AND state NOT IN ($5, $6)",
                )
                .bind(next.as_str())
                .bind(finished)
                .bind(now_us)
                .bind(ev.plan as i64)
                .bind(PlanState::Succeeded.as_str())
                .bind(PlanState::Failed.as_str())
                .execute(&mut *tx)
                .await?;
                if next == PlanState::Succeeded {
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

fn parse_error_kind(s: &str) -> ferric_proto::plan::ErrorKind {
    // A kind this build does not know (written by a newer one) reads as `internal`.
    s.parse().unwrap_or(ferric_proto::plan::ErrorKind::Internal)
}
