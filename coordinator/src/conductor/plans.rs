//! Plans: the plan file operators write, its validation, and the one way a plan comes to be —
//! stored first, then pushed to the agent that runs it when that agent is connected (an
//! offline agent gets it when it connects).

use super::{ConductorError, Result, invalid};
use crate::Shared;
use crate::store::{EventRow, PlanRow};
use ferric_proto::plan::{ErrorKind, Plan, PlanError, PlanId, PlanStep, Step, StepEventKind};
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
    pub plan: PlanRow,
    /// Its events in order.
    pub events: Vec<EventRow>,
}

/// Steps the coordinator makes itself (guests, BMC actions), keyed `<index>-<kind>`, each
/// with its timeout in seconds; validated like a plan file's.
pub fn keyed_steps(steps: Vec<(Step, u32)>) -> Result<Vec<PlanStep>> {
    let steps: Vec<PlanStep> = steps
        .into_iter()
        .enumerate()
        .map(|(i, (step, timeout_secs))| PlanStep {
            key: format!("{i}-{}", step.kind()),
            timeout_secs,
            step,
        })
        .collect();
    ferric_proto::plan::validate_steps(&steps).map_err(PlanFileError::from)?;
    Ok(steps)
}

/// Stores a plan for `node` and pushes it if its agent is connected; returns the plan's id
/// and whether it was pushed. A plan that sets a bare-metal node's boot device to `pxe` arms
/// that node's network boot first ([`super::network_boot::arm`]): Ferric hands a ramdisk script only
/// to a boot it started.
pub async fn submit(
    env: &super::Env<'_>,
    node: &str,
    steps: &[PlanStep],
) -> Result<(PlanId, bool)> {
    for booting in super::network_boot::pxe_boots(steps) {
        if env
            .store
            .node(&booting)
            .await?
            .is_some_and(|n| n.role == crate::model::NodeRole::Baremetal)
        {
            super::network_boot::arm(env, &booting, &format!("boot device pxe, through `{node}`"))
                .await?;
        }
    }
    let plan = env.store.create_plan(node, steps, crate::now_us()).await?;
    let id = plan.id;
    Ok((id, env.hub.links.push(plan)))
}

/// `POST /v1/plans`: one plan per node, all or nothing — every node must exist before any
/// plan is stored.
pub async fn create(
    s: &Shared,
    caller: &super::access::Caller,
    req: CreatePlans,
) -> Result<Vec<CreatedPlan>> {
    if req.nodes.is_empty() {
        return Err(invalid("field `nodes` is empty: name at least one node"));
    }
    let steps = req.plan.to_steps()?;
    for n in &req.nodes {
        // Another project's node answers as one that is not enrolled.
        if !s
            .store
            .node(n)
            .await?
            .is_some_and(|n| caller.sees(&n.project))
        {
            return Err(ConductorError::UnknownNode(n.clone()));
        }
    }
    let mut out = Vec::with_capacity(req.nodes.len());
    for n in &req.nodes {
        let (id, pushed) = submit(&s.env(), n, &steps).await?;
        out.push(CreatedPlan {
            id,
            node: n.clone(),
            pushed,
        });
    }
    Ok(out)
}

/// What a reader may not see of a plan: the files of its config drives (user-data, keys a
/// member gave) are replaced by their size.
pub fn redact_for(caller: &super::access::Caller, plan: &mut PlanRow) {
    if caller.role.allows(crate::model::ApiRole::Member) {
        return;
    }
    for st in &mut plan.steps {
        if let Step::WriteConfigDrive { files, .. } = &mut st.step {
            for f in files {
                f.content = format!("({} bytes, not shown to readers)", f.content.len());
            }
        }
    }
}

/// Plans, newest first (of one node when given), at most `limit`.
/// Plans of nodes the caller does not see are left out.
pub async fn list(
    s: &Shared,
    caller: &super::access::Caller,
    node: Option<&str>,
    limit: i64,
) -> Result<Vec<PlanRow>> {
    let limit = limit.clamp(1, 10_000);
    if caller.fleet() {
        let mut out = s.store.plans(node, limit).await?;
        out.iter_mut().for_each(|p| redact_for(caller, p));
        return Ok(out);
    }
    let seen: std::collections::HashSet<String> = s
        .store
        .nodes()
        .await?
        .into_iter()
        .filter(|n| caller.sees(&n.project))
        .map(|n| n.name)
        .collect();
    if let Some(n) = node
        && !seen.contains(n)
    {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    // Newest first across nodes: read each seen node's newest `limit` and merge.
    for n in node.map_or_else(
        || seen.iter().cloned().collect::<Vec<_>>(),
        |n| vec![n.to_owned()],
    ) {
        out.extend(s.store.plans(Some(&n), limit).await?);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.id));
    out.truncate(limit as usize);
    out.iter_mut().for_each(|p| redact_for(caller, p));
    Ok(out)
}

/// A plan and its events, as `caller` may see them.
pub async fn status(s: &Shared, caller: &super::access::Caller, id: PlanId) -> Result<PlanStatus> {
    let mut plan = s
        .store
        .plan(id)
        .await?
        .ok_or(ConductorError::UnknownPlan(id))?;
    redact_for(caller, &mut plan);
    let events = s.store.events(id).await?;
    Ok(PlanStatus { plan, events })
}

/// Whether a plan goes to its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Push it.
    Push,
    /// It cannot go: it fails here at `step`, as a one-event plan (see
    /// [`super::reports::undelivered`]).
    Fail {
        /// The step it fails at.
        step: usize,
        /// Why, for machines.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
}

/// Whether `plan` may go to `node`'s agent, which speaks protocol version `speaks` and takes
/// frames of at most `max_frame` bytes. A plan with a step newer than the agent fails with
/// `unsupported`, naming the agent's version, the step and the version it needs (pushed, the
/// unknown step would read as a malformed frame and close the link); one too large for a
/// frame with `invalid_spec` (it could never be delivered, and would close the link at every
/// reconnect); one an operator cancelled as `cancelled`.
pub async fn delivery(
    store: &crate::store::Store,
    node: &str,
    plan: &Plan,
    speaks: u16,
    max_frame: usize,
) -> Result<Delivery> {
    if store
        .plan(plan.id)
        .await?
        .is_some_and(|p| p.cancel_requested_at_ms.is_some())
    {
        return Ok(Delivery::Fail {
            step: 0,
            kind: ErrorKind::Cancelled,
            message: format!("plan {} was cancelled before it was delivered", plan.id),
        });
    }
    let bytes =
        ferric_proto::frame::to_frame(&ferric_proto::msg::CoordMsg::Plan(plan.clone()), usize::MAX)
            .map_or(usize::MAX, |f| f.len());
    if bytes > max_frame {
        return Ok(Delivery::Fail {
            step: 0,
            kind: ErrorKind::InvalidSpec,
            message: format!(
                "plan {} encodes to {bytes} bytes, over the {max_frame}-byte frame of the agent link: it cannot be delivered",
                plan.id
            ),
        });
    }
    let (needs, step) = plan.min_protocol();
    if needs <= speaks {
        return Ok(Delivery::Push);
    }
    let i = step.unwrap_or(0);
    let kind = plan.steps.get(i).map_or("?", |s| s.step.kind());
    Ok(Delivery::Fail {
        step: i,
        kind: ErrorKind::Unsupported,
        message: format!(
            "agent `{node}` speaks protocol version {speaks}; step {i} ({kind}) needs version {needs}: upgrade the agent"
        ),
    })
}

/// What `POST /v1/plans/{id}/cancel` did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// The plan.
    pub plan: PlanId,
    /// Its state now (`failed` when it ended here at once).
    pub state: crate::model::PlanState,
    /// Whether its connected agent was told to stop it (else it is told when it connects, or
    /// the plan fails when it would be delivered).
    pub agent_told: bool,
}

/// How a plan ended, as its end event told it: `None` while it runs, else whether it
/// succeeded and why not.
pub async fn outcome(
    store: &crate::store::Store,
    plan: PlanId,
) -> Result<Option<(bool, Option<String>)>> {
    let Some(row) = store.plan(plan).await? else {
        return Ok(None);
    };
    if !row.state.is_finished() {
        return Ok(None);
    }
    let events = store.events(plan).await?;
    let message = events.iter().rev().find_map(|e| match &e.kind {
        StepEventKind::Failed { kind, message } => Some(failure(&row, e.step, *kind, message)),
        _ => None,
    });
    Ok(Some((message.is_none(), message)))
}

/// A plan's failure at `step`, for people: the step's kind, its message and its kind.
pub fn failure(plan: &PlanRow, step: u32, kind: ErrorKind, message: &str) -> String {
    format!(
        "step {step} ({}) failed: {message} [{kind}]",
        plan.steps
            .get(step as usize)
            .map_or("?", |st| st.step.kind())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_plan_example_is_a_valid_plan() {
        let readme = include_str!("../../../README.md");
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
