//! The lifecycle as a pure state machine: a node's provision state and step, an input (an
//! operator's verb, the end of the plan the node waits for, its ramdisk calling back, a
//! deadline passing), and what follows — the next state and step, how long it may take, and
//! the work to push. No store, no clock, no I/O: tests drive it with simulated time.

use crate::model::ProvisionState as S;
pub use crate::model::{Phase, Verb};
use std::time::Duration;

/// How long each wait may last before the node fails with that reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A power read through the BMC.
    pub power: Duration,
    /// Power off, network boot, power on through the BMC.
    pub boot: Duration,
    /// From the network boot to the ramdisk's call back.
    pub callback: Duration,
    /// The ramdisk's inspection.
    pub inspect: Duration,
    /// The ramdisk's erasing.
    pub clean: Duration,
    /// The ramdisk's image and config drive writing.
    pub deploy: Duration,
}

impl Default for Timeouts {
    /// Minutes, not Ironic's 30-minute callback wait: a node that does not call back fails
    /// while the operator still remembers why it was booted.
    fn default() -> Self {
        Timeouts {
            power: Duration::from_secs(120),
            boot: Duration::from_secs(180),
            callback: Duration::from_secs(300),
            inspect: Duration::from_secs(600),
            clean: Duration::from_secs(3600),
            deploy: Duration::from_secs(3600),
        }
    }
}

impl Timeouts {
    /// The deadline of a phase.
    pub fn of(&self, p: Phase) -> Duration {
        match p {
            Phase::ReadPower => self.power,
            Phase::BootRamdisk => self.boot,
            Phase::WaitCallback => self.callback,
            Phase::Inspect => self.inspect,
            Phase::Erase => self.clean,
            Phase::Write => self.deploy,
        }
    }
}

/// What happens to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An operator's verb.
    Verb(Verb),
    /// The plan the node waits for ended.
    PlanEnded {
        /// Whether it succeeded.
        ok: bool,
        /// Why it failed.
        message: Option<String>,
    },
    /// Its ramdisk connected.
    RamdiskConnected,
    /// Its deadline passed.
    DeadlinePassed,
}

/// Work the coordinator pushes for a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A plan for the management agent: read power.
    ReadPower,
    /// A plan for the management agent: power off, next boot from the network, power on.
    BootRamdisk,
    /// A plan for the ramdisk.
    Ramdisk(Phase),
}

/// Where a node is: its state and, in a state that waits, the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Provision state.
    pub state: S,
    /// What it is doing, if anything.
    pub phase: Option<Phase>,
}

/// What follows an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Where the node goes.
    pub at: At,
    /// How long the phase may take (`None`: no wait).
    pub timeout: Option<Duration>,
    /// What to push, if anything.
    pub work: Option<Work>,
    /// The error the node now shows (a failure's reason); `None` keeps none.
    pub error: Option<String>,
}

/// Why an input does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The verb does not apply in this state.
    #[error("cannot {verb} a node in state `{state}`{hint}")]
    Verb {
        /// The verb.
        verb: Verb,
        /// The state.
        state: S,
        /// What would apply.
        hint: String,
    },
}

/// Whether an input changes nothing (a ramdisk that connects when none is awaited, a plan's
/// end in a state that no longer waits for it).
pub type Outcome = Result<Option<Next>, Refused>;

/// The work a phase pushes (`None`: it waits for a call back, not for a plan).
pub fn work_of(phase: Phase) -> Option<Work> {
    match phase {
        Phase::ReadPower => Some(Work::ReadPower),
        Phase::BootRamdisk => Some(Work::BootRamdisk),
        Phase::WaitCallback => None,
        p => Some(Work::Ramdisk(p)),
    }
}

fn go(state: S, phase: Phase, t: &Timeouts) -> Next {
    let work = work_of(phase);
    Next {
        at: At {
            state,
            phase: Some(phase),
        },
        timeout: Some(t.of(phase)),
        work,
        error: None,
    }
}

fn rest(state: S) -> Next {
    Next {
        at: At { state, phase: None },
        timeout: None,
        work: None,
        error: None,
    }
}

fn fail(state: S, why: String) -> Next {
    Next {
        error: Some(why),
        ..rest(state)
    }
}

/// The state a failure in `state` lands in.
pub fn failed_state(state: S) -> S {
    match state {
        S::Verifying => S::Enroll,
        S::Inspecting => S::InspectFailed,
        S::Cleaning => S::CleanFailed,
        S::Deploying | S::WaitCallback => S::DeployFailed,
        _ => S::Error,
    }
}

/// The phase a ramdisk runs once it is there for `state`, and the state it runs it in.
fn ramdisk_work(state: S) -> Option<(S, Phase)> {
    match state {
        S::Inspecting => Some((S::Inspecting, Phase::Inspect)),
        S::Cleaning | S::Undeploying => Some((S::Cleaning, Phase::Erase)),
        S::WaitCallback | S::Deploying => Some((S::Deploying, Phase::Write)),
        _ => None,
    }
}

/// Starts the ramdisk's work for `state`: at once when the ramdisk is resident (fast track),
/// else after a network boot.
fn with_ramdisk(state: S, ramdisk: bool, t: &Timeouts) -> Next {
    match (ramdisk, ramdisk_work(state)) {
        (true, Some((s, p))) => go(s, p, t),
        _ => go(state, Phase::BootRamdisk, t),
    }
}

/// The next state of a node at `at` (with its ramdisk connected or not) on `input`.
pub fn next(at: At, ramdisk: bool, input: &Input, t: &Timeouts) -> Outcome {
    match input {
        Input::Verb(v) => verb(at, ramdisk, *v, t).map(Some),
        Input::RamdiskConnected => Ok(match at.phase {
            Some(Phase::WaitCallback | Phase::BootRamdisk) => {
                ramdisk_work(at.state).map(|(s, p)| go(s, p, t))
            }
            _ => None,
        }),
        Input::PlanEnded { ok: false, message } => Ok(at.phase.map(|p| {
            fail(
                failed_state(at.state),
                format!(
                    "{} failed: {}",
                    p.describe(),
                    message.as_deref().unwrap_or("(no reason given)")
                ),
            )
        })),
        Input::PlanEnded { ok: true, .. } => Ok(match (at.state, at.phase) {
            (_, None | Some(Phase::WaitCallback)) => None,
            (S::Verifying, Some(Phase::ReadPower)) => Some(rest(S::Manageable)),
            (S::Deploying, Some(Phase::ReadPower)) => Some(rest(S::Active)),
            (s, Some(Phase::BootRamdisk)) => {
                let waiting = if s == S::Deploying {
                    S::WaitCallback
                } else {
                    s
                };
                Some(go(waiting, Phase::WaitCallback, t))
            }
            (S::Inspecting, Some(Phase::Inspect)) => Some(rest(S::Manageable)),
            (S::Cleaning, Some(Phase::Erase)) => Some(rest(S::Available)),
            (S::Deploying, Some(Phase::Write)) => Some(go(S::Deploying, Phase::ReadPower, t)),
            _ => None,
        }),
        Input::DeadlinePassed => Ok(at.phase.map(|p| {
            let within = humantime::format_duration(t.of(p));
            let why = match p {
                Phase::WaitCallback => format!(
                    "no ramdisk called back within {within} of the network boot (a boot device \
                     that did not change, a node that did not power on, or a BMC that does not \
                     answer)"
                ),
                Phase::BootRamdisk | Phase::ReadPower => {
                    format!(
                        "{} did not finish within {within} (a BMC or a management agent that \
                         does not answer)",
                        p.describe()
                    )
                }
                _ => format!(
                    "the ramdisk did not finish {} within {within}",
                    p.describe()
                ),
            };
            fail(failed_state(at.state), why)
        })),
    }
}

fn verb(at: At, ramdisk: bool, v: Verb, t: &Timeouts) -> Result<Next, Refused> {
    let refuse = |hint: &str| Refused::Verb {
        verb: v,
        state: at.state,
        hint: hint.to_owned(),
    };
    match (v, at.state) {
        (Verb::Manage, S::Enroll) => Ok(go(S::Verifying, Phase::ReadPower, t)),
        (
            Verb::Manage,
            S::InspectFailed | S::CleanFailed | S::DeployFailed | S::Error | S::Available,
        ) => Ok(rest(S::Manageable)),
        (Verb::Inspect, S::Manageable | S::InspectFailed) => {
            Ok(with_ramdisk(S::Inspecting, ramdisk, t))
        }
        (Verb::Provide, S::Manageable | S::CleanFailed) => {
            Ok(with_ramdisk(S::Cleaning, ramdisk, t))
        }
        (Verb::Deploy, S::Available) => Ok(with_ramdisk(S::Deploying, ramdisk, t)),
        (Verb::Rebuild, S::Active | S::DeployFailed) => Ok(with_ramdisk(S::Deploying, ramdisk, t)),
        (Verb::Undeploy, S::Active | S::DeployFailed) => {
            Ok(with_ramdisk(S::Undeploying, ramdisk, t))
        }
        (Verb::Abort, s) if at.phase.is_some() => Ok(fail(
            failed_state(s),
            format!(
                "aborted by the operator while {}",
                at.phase.map_or("", Phase::describe)
            ),
        )),
        (Verb::Abort, _) => Err(refuse(" (nothing is under way to abort)")),
        (_, s) => Err(refuse(&match s {
            S::Enroll => " (manage it first)".to_owned(),
            S::Manageable => " (inspect or provide it)".to_owned(),
            S::Available => " (deploy it, or manage it back)".to_owned(),
            S::Active => " (undeploy or rebuild it)".to_owned(),
            s if s.to_string().ends_with("-failed") || s == S::Error => {
                " (manage it to recover)".to_owned()
            }
            _ => " (wait for it, or abort)".to_owned(),
        })),
    }
}

#[cfg(test)]
mod tests;
