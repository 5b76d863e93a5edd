//! Plans: the plan file operators write, its validation, and the one way a plan comes to be —
//! stored first, then pushed to the agent that runs it when that agent is connected (an
//! offline agent gets it when it connects).

use super::{ConductorError, Result, invalid};
use crate::Shared;
use crate::store::{EventRow, PlanRow};
pub use ferric_api::plans::{
    Cancelled, CreatePlans, CreatedPlan, DEFAULT_STEP_TIMEOUT, PlanEvent, PlanFile, PlanFileError,
    PlanStatus, PlanView, StepSpec,
};
use ferric_proto::plan::{ErrorKind, Plan, PlanId, PlanStep, Step, StepEventKind};

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
) -> Result<Vec<PlanView>> {
    let limit = limit.clamp(1, 10_000);
    if caller.fleet() {
        let mut out = s.store.plans(node, limit).await?;
        out.iter_mut().for_each(|p| redact_for(caller, p));
        return Ok(out.into_iter().map(PlanView::from).collect());
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
    Ok(out.into_iter().map(PlanView::from).collect())
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
    Ok(PlanStatus {
        plan: plan.into(),
        events: events.into_iter().map(PlanEvent::from).collect(),
    })
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

impl From<PlanRow> for PlanView {
    fn from(r: PlanRow) -> Self {
        PlanView {
            id: r.id,
            node: r.node,
            steps: r.steps,
            state: r.state,
            created_at_us: r.created_at_us,
            pushed_at_us: r.pushed_at_us,
            accepted_at_us: r.accepted_at_us,
            finished_at_us: r.finished_at_us,
            cancel_requested_at_ms: r.cancel_requested_at_ms,
        }
    }
}

impl From<EventRow> for PlanEvent {
    fn from(r: EventRow) -> Self {
        PlanEvent {
            plan: r.plan,
            seq: r.seq,
            step: r.step,
            kind: r.kind,
            agent_at_ms: r.agent_at_ms,
            received_at_us: r.received_at_us,
        }
    }
}
