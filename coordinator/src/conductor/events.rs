//! What agents report about their plans: each step event stored exactly once, and what a
//! step found acted on — a BMC power step's power, an inspection.

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
