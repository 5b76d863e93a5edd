//! Plans: plan files, their submission, status and cancelling.

use crate::model::PlanState;
use ferric_proto::plan::{PlanError, PlanId, PlanStep, Step, StepEventKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default step timeout when a plan file names none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// A step as written in a plan file: the step, and optionally its key and timeout.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepSpec {
    /// The step (`ensure_bridge: {name: br0}` and so on).
    #[serde(flatten)]
    pub step: Step,
    /// Idempotency key; `<index>-<kind>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Deadline such as `30s` or `5m`; 5 minutes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A plan file (YAML or JSON).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Steps in order.
    pub steps: Vec<StepSpec>,
}

/// What is wrong with a plan file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanFileError {
    /// A timeout that is no duration.
    #[error("step {index}: field `timeout` `{value}`: {problem}")]
    Timeout {
        /// Step index.
        index: usize,
        /// What was written.
        value: String,
        /// Why it is no duration.
        problem: String,
    },
    /// A timeout beyond what a step can carry.
    #[error("step {0}: field `timeout` is too long")]
    TimeoutTooLong(usize),
    /// The steps do not make a valid plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl PlanFileError {
    /// Whether the plan is only too large (413 rather than 400).
    pub fn too_large(&self) -> bool {
        matches!(self, PlanFileError::Plan(PlanError::TooLarge { .. }))
    }
}

impl PlanFile {
    /// Turns the file into validated plan steps.
    pub fn to_steps(&self) -> std::result::Result<Vec<PlanStep>, PlanFileError> {
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let timeout = match &s.timeout {
                    None => DEFAULT_STEP_TIMEOUT,
                    Some(t) => {
                        humantime::parse_duration(t).map_err(|e| PlanFileError::Timeout {
                            index: i,
                            value: t.clone(),
                            problem: e.to_string(),
                        })?
                    }
                };
                Ok(PlanStep {
                    key: s
                        .key
                        .clone()
                        .unwrap_or_else(|| format!("{i}-{}", s.step.kind())),
                    timeout_secs: u32::try_from(timeout.as_secs().max(1))
                        .map_err(|_| PlanFileError::TimeoutTooLong(i))?,
                    step: s.step.clone(),
                })
            })
            .collect::<std::result::Result<Vec<_>, PlanFileError>>()?;
        ferric_proto::plan::validate_steps(&steps)?;
        Ok(steps)
    }
}

/// Body of `POST /v1/plans`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlans {
    /// Nodes to receive the plan (one plan each).
    pub nodes: Vec<String>,
    /// The plan.
    pub plan: PlanFile,
}

/// One created plan.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedPlan {
    /// Plan id.
    pub id: u64,
    /// Node.
    pub node: String,
    /// Whether it was handed to a connected agent at once.
    pub pushed: bool,
}

/// A plan with its events in order (`GET /v1/plans/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanStatus {
    /// The plan.
    pub plan: PlanView,
    /// Its events in order.
    pub events: Vec<PlanEvent>,
}

/// What `POST /v1/plans/{id}/cancel` did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// The plan.
    pub plan: PlanId,
    /// Its state now (`failed` when it ended here at once).
    pub state: PlanState,
    /// Whether its connected agent was told to stop it (else it is told when it connects, or
    /// the plan fails when it would be delivered).
    pub agent_told: bool,
}

/// A plan as stored, with its timestamps.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = PlanRow)]
pub struct PlanView {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at_ms: Option<i64>,
}

/// A stored step event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EventRow)]
pub struct PlanEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_plan_example_is_a_valid_plan() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("README has a yaml block");
        let f: PlanFile = serde_yaml_ng::from_str(block).expect("README plan parses");
        let steps = f.to_steps().expect("README plan validates");
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[2].timeout_secs, 60);
    }

    #[test]
    fn plan_file_parses_yaml_and_names_bad_fields() {
        let yaml = "steps:\n  - ensure_bridge: { name: br0 }\n    timeout: 30s\n  - ensure_volume: { pool: default, name: v1, size_bytes: 1048576 }\n";
        let f: PlanFile = serde_yaml_ng::from_str(yaml).unwrap();
        let steps = f.to_steps().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].timeout_secs, 30);
        assert_eq!(steps[1].key, "1-ensure_volume");
        assert_eq!(steps[1].timeout_secs, 300);

        let bad: PlanFile = serde_yaml_ng::from_str(
            "steps:\n  - ensure_guest: { name: g, vcpus: 0, memory_mib: 5 }\n",
        )
        .unwrap();
        assert_eq!(
            bad.to_steps().unwrap_err().to_string(),
            "step 0 (ensure_guest): field `vcpus` must be at least 1"
        );
        let late: PlanFile = serde_yaml_ng::from_str(
            "steps:\n  - ensure_bridge: { name: br0 }\n    timeout: soon\n",
        )
        .unwrap();
        assert!(matches!(
            late.to_steps(),
            Err(PlanFileError::Timeout { index: 0, .. })
        ));
        let typo =
            serde_yaml_ng::from_str::<PlanFile>("steps:\n  - ensure_bridge: { nmae: br0 }\n");
        assert!(typo.unwrap_err().to_string().contains("nmae"));
    }
}
