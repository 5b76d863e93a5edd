//! What agents report about their plans: each step event stored exactly once, and what a
//! step found acted on — a BMC power step's power, an inspection, the end of a plan a
//! bare-metal node's lifecycle waits for.

use super::Result;
use crate::Shared;
use ferric_proto::plan::{StepEvent, StepEventKind};

/// An event of `node`'s plan: stored exactly once, and what it reports acted on. An event for
/// a plan the node does not have is dropped (the agent still gets its acknowledgement).
pub async fn record_event(s: &Shared, node: &str, e: &StepEvent) -> Result<()> {
    match s.store.insert_event(node, e, crate::now_us()).await {
        Ok(true) => match &e.kind {
            StepEventKind::Output(ferric_proto::plan::StepOutput::Inspection(found)) => {
                super::boot::inspected(s, node, found, e.at_ms as i64).await
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
        StepEventKind::Failed { kind, message } => Some(format!(
            "step {} ({}) failed: {message} [{kind}]",
            e.step,
            plan.steps
                .get(e.step as usize)
                .map_or("?", |st| st.step.kind())
        )),
        _ => None,
    };
    super::lifecycle::plan_ended(s, e.plan, message.is_none(), message).await
}
