//! Runs plans step by step through the drivers, journaling every event before it is sent.

use crate::driver::Drivers;
use crate::journal::{Journal, JournalError, Work};
use ferric_proto::msg::StepProgress;
use ferric_proto::plan::{ErrorKind, StepEvent, StepEventKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The plan executor of one agent. Plans run one at a time, in the order received.
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
    /// The running step, for telemetry.
    pub progress: Arc<Mutex<Option<StepProgress>>>,
}

impl Executor {
    /// Runs until `shutdown`; the current step is finished first (the caller bounds the wait).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JournalError> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let work = lock(&self.journal).next_work();
            match work {
                Some(w) => self.run_step(w).await?,
                None => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.cancelled() => return Ok(()),
                },
            }
        }
    }

    fn record(&self, w: &Work, kind: StepEventKind) -> Result<(), JournalError> {
        let ev = lock(&self.journal).record(w.plan.id, w.step as u32, now_ms(), kind)?;
        // The link may be down; the journal re-sends on the next session.
        let _ = self.events.send(ev);
        Ok(())
    }

    async fn run_step(&self, w: Work) -> Result<(), JournalError> {
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
            let kind = match tokio::time::timeout(timeout, self.drivers.run(&ps.step)).await {
                Ok(Ok(changed)) => StepEventKind::Done { changed },
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
