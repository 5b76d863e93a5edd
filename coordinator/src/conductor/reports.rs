//! What agents report, entering the conductor in one place that decides what follows: an
//! agent's hello (who may connect, and what it resumes), a ramdisk's presence, step events
//! (stored exactly once, then what they tell acted on: a power step's power, an inspection,
//! the end of a plan a lifecycle waits for), BMC reads, console lines, plans journaled — and
//! the coordinator's own reports of plans that end without their agent (not deliverable,
//! cancelled). The rules below this module (`lifecycle`, `network_boot`, `power_sync`, `plans`,
//! `bmcs`, `nodes`) never call back up here.

use super::plans::{Cancelled, Delivery};
use super::{ConductorError, Env, Result};
use crate::Shared;
use crate::model::{BootStage, NodeRole, ProvisionState};
use ferric_proto::msg::{BmcState, Capability, ConsoleLines, Hello, StoredCursor};
use ferric_proto::plan::{ErrorKind, Plan, PlanId, Step, StepEvent, StepEventKind};

/// What an agent's hello gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloVerdict {
    /// Refused, with the reason the agent is told.
    Refused(ferric_proto::msg::RefuseReason),
    /// A hypervisor or management agent.
    Agent,
    /// A bare-metal node's ramdisk of a boot Ferric runs: `resident` unless its machine just
    /// left it for its image (then it only delivers what it journaled).
    Ramdisk {
        /// Given work, taken for the lifecycle's call back.
        resident: bool,
    },
}

/// An agent's hello on a connection whose certificate has the key `key` (SHA-256): refused
/// when the node is not enrolled, or when it is a bare-metal node and the certificate is not
/// that of a ramdisk enrolled in a boot Ferric runs for it (the node's role decides, not what
/// the hello claims); otherwise what it announced is recorded.
pub async fn hello(
    s: &Shared,
    node: &str,
    h: &Hello,
    key: Option<&str>,
    now_ms: i64,
) -> Result<HelloVerdict> {
    use ferric_proto::msg::{RefuseReason, Role};
    let Some(row) = s.store.node(node).await? else {
        return Ok(HelloVerdict::Refused(RefuseReason::UnknownNode(
            node.to_owned(),
        )));
    };
    let verdict = if row.role == NodeRole::Baremetal {
        use super::network_boot::RamdiskAdmission as A;
        match super::network_boot::admit_ramdisk(s, node, key.unwrap_or_default()).await? {
            A::Resident => HelloVerdict::Ramdisk { resident: true },
            A::Leaving => HelloVerdict::Ramdisk { resident: false },
            A::Refused(why) => {
                tracing::warn!(%node, role = h.role.as_str(), "{why}");
                return Ok(HelloVerdict::Refused(RefuseReason::NotBooting(why)));
            }
        }
    } else if h.role == Role::Ramdisk {
        return Ok(HelloVerdict::Refused(RefuseReason::NotBooting(format!(
            "node `{node}` is not a bare-metal node; it has no ramdisk"
        ))));
    } else {
        HelloVerdict::Agent
    };
    let capabilities: Vec<Capability> = h
        .capabilities
        .iter()
        .filter_map(|c| {
            let known = Capability::from_name(c);
            if known.is_none() {
                tracing::debug!(capability = %c, "skipped a capability this build does not know");
            }
            known
        })
        .collect();
    s.store
        .node_seen(
            node,
            now_ms,
            &capabilities,
            &hex::encode(h.inventory_digest),
        )
        .await?;
    Ok(verdict)
}

/// Most plans an agent's hello may name (its journal holds the plans it has not finished or
/// that are not fully acknowledged: a few dozen; more is a broken or hostile agent).
pub const MAX_HELLO_PLANS: usize = 4096;

/// What a (re)connected agent resumes.
#[derive(Debug, Default)]
pub struct Resume {
    /// How many events of each plan it holds are stored (plans of other nodes count 0: their
    /// events are dropped when they come).
    pub stored: Vec<StoredCursor>,
    /// Its unfinished plans it does not hold, to push.
    pub missing: Vec<ferric_proto::plan::Plan>,
    /// Plans it holds that an operator asked to cancel and that have not ended.
    pub cancel: Vec<ferric_proto::plan::PlanId>,
}

/// What a (re)connected agent resumes, read in one pass over the node's plans whatever the
/// hello names (at most [`MAX_HELLO_PLANS`]; the caller refuses more).
pub async fn resume(s: &Shared, node: &str, h: &Hello) -> Result<Resume> {
    let named: std::collections::HashSet<_> = h.plans.iter().map(|c| c.plan).collect();
    let oldest = named.iter().min().copied().unwrap_or(u64::MAX);
    let held = s.store.plan_cursors(node, oldest).await?;
    let stored = h
        .plans
        .iter()
        .map(|c| StoredCursor {
            plan: c.plan,
            stored: held.get(&c.plan).map_or(0, |h| h.stored),
        })
        .collect();
    let cancel = held
        .iter()
        .filter(|(id, h)| named.contains(id) && h.cancel_pending)
        .map(|(id, _)| *id)
        .collect();
    let missing = s
        .store
        .unfinished_plans(node)
        .await?
        .into_iter()
        .filter(|p| !named.contains(&p.id))
        .map(|p| p.to_plan())
        .collect();
    Ok(Resume {
        stored,
        missing,
        cancel,
    })
}

/// A resident ramdisk said hello: its lifecycle gets what it waited for; a node in `enroll`
/// (found by network boot, or booted by hand) with no plan under way inspects the machine.
pub async fn ramdisk_present(env: &Env<'_>, node: &str) -> Result<()> {
    env.hub
        .boot_stages
        .mark(node, BootStage::Connected, env.now_ms());
    if super::lifecycle::ramdisk_connected(env, node).await? {
        return Ok(());
    }
    let found = env.store.node(node).await?;
    let state = found.as_ref().and_then(|n| n.provision_state);
    if found.is_none_or(|n| n.role != NodeRole::Baremetal)
        || state.is_some_and(|st| st != ProvisionState::Enroll)
        || !env.store.unfinished_plans(node).await?.is_empty()
    {
        return Ok(());
    }
    let steps = super::plans::keyed_steps(vec![(Step::Inspect {}, 300)])?;
    let (plan, _) = super::plans::submit(env, node, &steps).await?;
    tracing::info!(%node, plan, "ramdisk connected: inspecting");
    Ok(())
}

/// Events one plan may have stored (a plan has at most 256 steps, each a handful of events).
pub const MAX_EVENTS_PER_PLAN: u32 = 4096;

/// An event of `node`'s plan: stored exactly once, and what it reports acted on. An event for
/// a plan the node does not have is dropped (the agent still gets its acknowledgement).
pub async fn event(env: &Env<'_>, node: &str, e: &StepEvent) -> Result<()> {
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
    match env.store.insert_event(node, e, crate::now_us()).await {
        Ok(true) => match &e.kind {
            StepEventKind::Output(out) if let Some(found) = out.inspection() => {
                super::network_boot::inspected(env, node, &found, e.at_ms as i64).await
            }
            StepEventKind::Done { .. } | StepEventKind::Failed { .. } => {
                super::power_sync::step_output(env, node, e).await?;
                plan_end(env, e).await
            }
            _ => super::power_sync::step_output(env, node, e).await,
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
async fn plan_end(env: &Env<'_>, e: &StepEvent) -> Result<()> {
    let Some(plan) = env.store.plan(e.plan).await? else {
        return Ok(());
    };
    if !plan.state.is_finished() {
        return Ok(());
    }
    let message = match &e.kind {
        StepEventKind::Failed { kind, message } => {
            Some(super::plans::failure(&plan, e.step, *kind, message))
        }
        _ => None,
    };
    super::lifecycle::plan_ended(env, e.plan, message.is_none(), message).await
}

/// BMC reads agent `via` sent (power sync, the newest sensors).
pub async fn bmc_states(env: &Env<'_>, via: &str, states: Vec<BmcState>) -> Result<()> {
    super::power_sync::bmc_states(env, via, states).await
}

/// Console lines agent `via` read.
pub async fn console(env: &Env<'_>, via: &str, lines: Vec<ConsoleLines>) -> Result<()> {
    super::power_sync::console(env, via, lines).await
}

/// Agent `node` journaled plan `id`.
pub async fn plan_accepted(env: &Env<'_>, node: &str, id: PlanId) -> Result<()> {
    env.store.plan_accepted(id, node, crate::now_us()).await?;
    Ok(())
}

/// Plan `plan` of `node` cannot go to its agent (see [`Delivery`]): it fails here with one
/// event, recorded as an agent's would be, so that a lifecycle waiting for it hears.
pub async fn undelivered(env: &Env<'_>, node: &str, plan: &Plan, why: Delivery) -> Result<()> {
    let Delivery::Fail {
        step,
        kind,
        message,
    } = why
    else {
        return Ok(());
    };
    tracing::warn!(plan = plan.id, %message, "plan not pushed");
    let ev = StepEvent {
        plan: plan.id,
        seq: 0,
        step: step as u32,
        at_ms: env.now_ms() as u64,
        kind: StepEventKind::Failed { kind, message },
    };
    event(env, node, &ev).await
}

/// Cancels an unfinished plan: one never handed to its agent fails here at once; one its
/// agent holds is stopped by the agent (the step under way abandoned; agents older than
/// protocol 7 cannot, and run it to its end). It ends `failed` with kind `cancelled`, and a
/// lifecycle waiting for it fails with that reason.
pub async fn cancel(env: &Env<'_>, id: PlanId) -> Result<Cancelled> {
    let plan = env
        .store
        .plan(id)
        .await?
        .ok_or(ConductorError::UnknownPlan(id))?;
    if plan.state.is_finished() || !env.store.request_cancel(id, env.now_ms()).await? {
        return Err(ConductorError::Busy(format!(
            "plan {id} has ended ({}); there is nothing to cancel",
            plan.state
        )));
    }
    tracing::info!(plan = id, node = %plan.node, "plan cancel requested");
    let mut agent_told = false;
    if plan.pushed_at_us.is_none() {
        // Never handed to the link: fail it here (the link checks the request before it
        // pushes; should both act, the second event is a duplicate and dropped).
        let why = Delivery::Fail {
            step: 0,
            kind: ErrorKind::Cancelled,
            message: format!("plan {id} was cancelled before it was delivered"),
        };
        undelivered(env, &plan.node, &plan.to_plan(), why).await?;
    } else {
        agent_told = env.hub.links.push_cancel(&plan.node, id);
    }
    let state = env.store.plan(id).await?.map_or(plan.state, |p| p.state);
    Ok(Cancelled {
        plan: id,
        state,
        agent_told,
    })
}
