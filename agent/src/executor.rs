//! Runs plans step by step through the drivers, journaling every event before it is sent.

use crate::clock::now_ms;
use crate::driver::Drivers;
use crate::journal::{Journal, JournalError, Work};
use crate::lock;
use ferric_proto::msg::StepProgress;
use ferric_proto::plan::{ErrorKind, PlanId, StepEvent, StepEventKind};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Plans the coordinator asked to stop (protocol 7), with a token for each running plan
/// that its step is raced against. A request outlives nothing: the plan's `failed` event,
/// journaled, is what ends it for good.
#[derive(Debug, Default)]
pub struct Cancels {
    inner: Mutex<(HashSet<PlanId>, HashMap<PlanId, CancellationToken>)>,
}

impl Cancels {
    /// Asks `plan` to stop: its running step is abandoned, no further step starts.
    pub fn request(&self, plan: PlanId) {
        let mut g = lock(&self.inner);
        g.0.insert(plan);
        if let Some(t) = g.1.get(&plan) {
            t.cancel();
        }
    }

    /// The token of running plan `plan` (cancelled already when a stop was asked for).
    fn token(&self, plan: PlanId) -> CancellationToken {
        let mut g = lock(&self.inner);
        let t = CancellationToken::new();
        if g.0.contains(&plan) {
            t.cancel();
        }
        g.1.insert(plan, t.clone());
        t
    }

    /// Plans asked to stop that are not running.
    fn waiting(&self) -> Vec<PlanId> {
        let g = lock(&self.inner);
        g.0.iter()
            .filter(|p| !g.1.contains_key(p))
            .copied()
            .collect()
    }

    /// `plan` ended: forget it.
    fn done(&self, plan: PlanId) {
        let mut g = lock(&self.inner);
        g.0.remove(&plan);
        g.1.remove(&plan);
    }
}

/// The plan executor of one agent.
#[derive(Debug, Clone)]
pub struct Executor {
    /// Journal shared with the link.
    pub journal: Arc<Mutex<Journal>>,
    /// Drivers.
    pub drivers: Drivers,
    /// Journaled events go here for the link to send.
    pub events: mpsc::UnboundedSender<StepEvent>,
    /// Woken when a plan arrives.
    pub wake: Arc<Notify>,
    /// The running step, for telemetry (the latest to start, when several run).
    pub progress: Arc<Mutex<Option<StepProgress>>>,
    /// The directories steps may name host paths in.
    pub paths: Arc<crate::paths::PathPolicy>,
    /// Plans to stop.
    pub cancels: Arc<Cancels>,
}

/// Plans an agent runs side by side at most.
pub const MAX_PARALLEL_PLANS: usize = 16;

impl Executor {
    /// Runs until `shutdown`. Plans that share no object (guest, volume, bridge, BMC) run side
    /// by side; plans that share one keep their arrival order. On shutdown no new step starts
    /// and the running ones finish first (the caller bounds the wait).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JournalError> {
        let mut tasks: tokio::task::JoinSet<(PlanId, Result<(), JournalError>)> =
            tokio::task::JoinSet::new();
        let mut running: HashSet<PlanId> = HashSet::new();
        loop {
            if !shutdown.is_cancelled() {
                // A cancelled plan waiting behind another fails now, not when its turn comes.
                for id in self
                    .cancels
                    .waiting()
                    .into_iter()
                    .filter(|id| !running.contains(id))
                {
                    let work = lock(&self.journal).next_work_of(id);
                    if let Some(w) = work {
                        let kind = w.plan.steps.get(w.step).map_or("?", |s| s.step.kind());
                        self.record(
                            &w,
                            StepEventKind::Failed {
                                kind: ErrorKind::Cancelled,
                                message: format!(
                                    "plan {id} was cancelled before step {} ({kind}) started",
                                    w.step
                                ),
                            },
                        )?;
                    }
                    self.cancels.done(id);
                }
                let startable = lock(&self.journal).startable(&running);
                for id in startable {
                    if running.len() >= MAX_PARALLEL_PLANS {
                        break;
                    }
                    running.insert(id);
                    let this = self.clone();
                    let stop = shutdown.clone();
                    tasks.spawn(async move { (id, this.run_plan(id, stop).await) });
                }
            } else if tasks.is_empty() {
                return Ok(());
            }
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let (id, result) = done.map_err(|e| JournalError::Io {
                        path: "executor".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                    running.remove(&id);
                    result?;
                }
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
        }
    }

    /// Runs one plan's remaining steps, stopping between steps on shutdown; a plan the
    /// coordinator cancels fails with `cancelled` at the step it was at.
    async fn run_plan(&self, id: PlanId, shutdown: CancellationToken) -> Result<(), JournalError> {
        let cancel = self.cancels.token(id);
        let result = async {
            while !shutdown.is_cancelled() {
                let work = lock(&self.journal).next_work_of(id);
                let Some(w) = work else { break };
                if cancel.is_cancelled() {
                    let kind = w.plan.steps.get(w.step).map_or("?", |s| s.step.kind());
                    info!(
                        plan = id,
                        step = w.step,
                        "plan cancelled before its next step"
                    );
                    self.record(
                        &w,
                        StepEventKind::Failed {
                            kind: ErrorKind::Cancelled,
                            message: format!(
                                "plan {id} was cancelled before step {} ({kind}) started",
                                w.step
                            ),
                        },
                    )?;
                    break;
                }
                self.run_step(w, &cancel).await?;
            }
            Ok(())
        }
        .await;
        self.cancels.done(id);
        result
    }

    fn record(&self, w: &Work, kind: StepEventKind) -> Result<(), JournalError> {
        let ev = lock(&self.journal).record(w.plan.id, w.step as u32, now_ms(), kind)?;
        // The link may be down; the journal re-sends on the next session.
        let _ = self.events.send(ev);
        Ok(())
    }

    async fn run_step(&self, w: Work, cancel: &CancellationToken) -> Result<(), JournalError> {
        let Some(ps) = w.plan.steps.get(w.step) else {
            return Ok(());
        };
        let span = info_span!(
            "step",
            plan = w.plan.id,
            step = w.step,
            kind = ps.step.kind()
        );
        async {
            if w.resumed {
                info!("resuming a step that was running when the agent stopped");
            }
            self.record(&w, StepEventKind::Started)?;
            *lock(&self.progress) = Some(StepProgress {
                plan: w.plan.id,
                step: w.step as u32,
                done: 0,
                total: None,
            });
            let timeout = Duration::from_secs(u64::from(ps.timeout_secs));
            let meter: crate::driver::Meter = {
                let (progress, plan, step) = (self.progress.clone(), w.plan.id, w.step as u32);
                Arc::new(move |done, total| {
                    *lock(&progress) = Some(StepProgress {
                        plan,
                        step,
                        done,
                        total: Some(total),
                    });
                })
            };
            let delivered: crate::driver::Delivered = {
                let (journal, plan, step) = (self.journal.clone(), w.plan.id, w.step as u32);
                Arc::new(move || lock(&journal).delivered(plan, step))
            };
            let ctx = crate::driver::StepContext { meter, delivered };
            let run = async {
                if let Err((kind, message)) = self.paths.check(&ps.step) {
                    return Err(crate::driver::DriverError::new(kind, message));
                }
                self.drivers.run_with(&ps.step, ctx).await
            };
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout, run) => Some(r),
                _ = cancel.cancelled() => None,
            };
            let Some(outcome) = outcome else {
                // Abandoned where it was (steps are idempotent: run again, it repairs).
                warn!("step abandoned: the plan was cancelled");
                *lock(&self.progress) = None;
                return self.record(
                    &w,
                    StepEventKind::Failed {
                        kind: ErrorKind::Cancelled,
                        message: format!(
                            "plan {} was cancelled during step {} ({})",
                            w.plan.id,
                            w.step,
                            ps.step.kind()
                        ),
                    },
                );
            };
            let kind = match outcome {
                Ok(Ok(done)) => {
                    if let Some(output) = done.output {
                        self.record(&w, StepEventKind::Output(output))?;
                    }
                    StepEventKind::Done {
                        changed: done.changed,
                    }
                }
                Ok(Err(e)) => {
                    warn!(kind = %e.kind, error = %e.message, "step failed");
                    StepEventKind::Failed {
                        kind: e.kind,
                        message: e.message,
                    }
                }
                Err(_) => StepEventKind::Failed {
                    kind: ErrorKind::Timeout,
                    message: format!(
                        "step `{}` did not finish within {}s",
                        ps.step.kind(),
                        ps.timeout_secs
                    ),
                },
            };
            *lock(&self.progress) = None;
            self.record(&w, kind)
        }
        .instrument(span)
        .await
    }
}
