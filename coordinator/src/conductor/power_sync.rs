//! Power sync: what agents read from the BMCs they drive, and what power steps leave. A node
//! whose power differs from what Ferric's last power step left, while no power plan for it
//! runs, is flagged ("power changed behind Ferric's back"); the next power action clears it.

use super::{Env, Result};
use ferric_proto::msg::{BmcState, ConsoleLines};
use ferric_proto::plan::{PowerAction, Step, StepEvent, StepEventKind, StepOutput};
use std::collections::HashSet;
use tracing::{debug, warn};

/// Records BMC states agent `via` read: power sync and the newest sensors. States of BMCs it
/// does not drive are dropped.
pub async fn bmc_states(env: &Env<'_>, via: &str, states: Vec<BmcState>) -> Result<()> {
    let mine: HashSet<String> = env
        .store
        .bmcs(Some(via))
        .await?
        .into_iter()
        .map(|r| r.node)
        .collect();
    for st in states {
        if !mine.contains(&st.name) {
            debug!(bmc = %st.name, "dropped the state of a BMC this agent does not drive");
            continue;
        }
        let busy = super::bmcs::plan_running(env.store, via, &st.name, true).await?;
        if let Some(flag) = env
            .store
            .bmc_observed(
                &st.name,
                busy,
                st.power_on,
                st.error.as_deref(),
                st.at_ms as i64,
            )
            .await?
        {
            warn!(node = %st.name, %flag, "node flagged");
        }
        env.hub.bmc.record(st, env.now_ms());
    }
    Ok(())
}

/// Records the console lines agent `via` read; those of nodes whose BMC it does not drive
/// (or that have no console log) are dropped.
pub async fn console(env: &Env<'_>, via: &str, lines: Vec<ConsoleLines>) -> Result<()> {
    let mine: HashSet<String> = super::bmcs::consoles(env.store, via)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    for c in lines {
        if !mine.contains(&c.name) {
            debug!(node = %c.name, "dropped console lines of a node this agent does not tail");
            continue;
        }
        if let Some(e) = &c.error {
            warn!(node = %c.name, error = %e, "console log not read");
        }
        env.hub
            .consoles
            .record(&c.name, c.lines, c.error, env.now_ms());
    }
    Ok(())
}

/// A step's output from agent `via`: what a BMC power step found is what Ferric now expects
/// (or, for a status read, what it observed).
pub async fn step_output(env: &Env<'_>, via: &str, e: &StepEvent) -> Result<()> {
    let StepEventKind::Output(StepOutput::Power { on }) = &e.kind else {
        return Ok(());
    };
    let Some(plan) = env.store.plan(e.plan).await? else {
        return Ok(());
    };
    let Some(Step::BmcPower { bmc, action }) = plan.steps.get(e.step as usize).map(|st| &st.step)
    else {
        return Ok(());
    };
    if env.store.bmc(bmc).await?.is_none_or(|r| r.via != via) {
        return Ok(());
    }
    if *action == PowerAction::Status {
        if let Some(flag) = env
            .store
            .bmc_observed(bmc, false, Some(*on), None, e.at_ms as i64)
            .await?
        {
            warn!(node = %bmc, %flag, "node flagged");
        }
    } else {
        env.store.bmc_power_set(bmc, *on, e.at_ms as i64).await?;
    }
    Ok(())
}
