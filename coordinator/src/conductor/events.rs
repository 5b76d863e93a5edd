//! What agents report about their plans: each step event stored exactly once, and what a
//! step found acted on — a BMC power step's power, an inspection, the end of a plan a
//! bare-metal node's lifecycle waits for.

use super::Result;
use crate::Shared;
use crate::store::PlanRow;
use ferric_proto::plan::{ErrorKind, PlanId, StepEvent, StepEventKind};

/// Events one plan may have stored (a plan has at most 256 steps, each a handful of events).
pub const MAX_EVENTS_PER_PLAN: u32 = 4096;

/// An event of `node`'s plan: stored exactly once, and what it reports acted on. An event for
/// a plan the node does not have is dropped (the agent still gets its acknowledgement).
pub async fn record_event(s: &Shared, node: &str, e: &StepEvent) -> Result<()> {
    if e.seq >= MAX_EVENTS_PER_PLAN {
        // An agent numbers a few events per step; this many is a broken or hostile one, and
        // storing them would let it grow the store without bound.
        tracing::warn!(
            plan = e.plan,
            seq = e.seq,
            "event beyond a plan's bound; acknowledged and dropped"
        );
        return Ok(());
    }
    match s.store.insert_event(node, e, crate::now_us()).await {
        Ok(true) => match &e.kind {
            StepEventKind::Output(ferric_proto::plan::StepOutput::Inspection(found)) => {
                super::network_boot::inspected(s, node, found, e.at_ms as i64).await
            }
            StepEventKind::Done { .. } | StepEventKind::Failed { .. } => {
                super::power_sync::step_output(s, node, e).await?;
                plan_end(s, e).await
            }
            _ => super::power_sync::step_output(s, node, e).await,
        },
        Ok(false) => Ok(()),
        Err(crate::store::StoreError::UnknownPlan { plan, .. }) => {
            tracing::warn!(
                plan,
                "event for a plan this node does not have; acknowledged and dropped"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// When `e` ended its plan, the lifecycle that waits for the plan hears of it.
async fn plan_end(s: &Shared, e: &StepEvent) -> Result<()> {
    let Some(plan) = s.store.plan(e.plan).await? else {
        return Ok(());
    };
    if !plan.state.is_finished() {
        return Ok(());
    }
    let message = match &e.kind {
        StepEventKind::Failed { kind, message } => Some(failure(&plan, e.step, *kind, message)),
        _ => None,
    };
    super::lifecycle::plan_ended(s, e.plan, message.is_none(), message).await
}

/// How a plan ended, as its end event told it: `None` while it runs, else whether it
/// succeeded and why not.
pub(super) async fn outcome(s: &Shared, plan: PlanId) -> Result<Option<(bool, Option<String>)>> {
    let Some(row) = s.store.plan(plan).await? else {
        return Ok(None);
    };
    if !row.state.is_finished() {
        return Ok(None);
    }
    let events = s.store.events(plan).await?;
    let message = events.iter().rev().find_map(|e| match &e.kind {
        StepEventKind::Failed { kind, message } => Some(failure(&row, e.step, *kind, message)),
        _ => None,
    });
    Ok(Some((message.is_none(), message)))
}

fn failure(plan: &PlanRow, step: u32, kind: ErrorKind, message: &str) -> String {
    format!(
        "step {step} ({}) failed: {message} [{kind}]",
        plan.steps
            .get(step as usize)
            .map_or("?", |st| st.step.kind())
    )
}
