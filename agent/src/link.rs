//! The agent's end of the link: dial the coordinator with mutual TLS, run an
//! [`AgentSession`] over the control stream, journal plans, forward events, send telemetry,
//! and reconnect with jittered exponential backoff when the link drops.

use crate::clock::now_ms;
use crate::journal::Journal;
use crate::lock;
use crate::telemetry::Sampler;
use ferric_proto::close;
use ferric_proto::frame::{FrameDecoder, encode, to_datagram, to_frame};
use ferric_proto::msg::{CoordMsg, Hello, RefuseReason, Role, StepProgress};
use ferric_proto::plan::StepEvent;
use ferric_proto::session::{AgentEvent, AgentSession, SessionError};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Errors that end the agent's link for good (retrying cannot help).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The coordinator refused the session.
    #[error("coordinator refused the session: {0}")]
    Refused(RefuseReason),
    /// The coordinator closed the connection for a reason that retrying will not fix.
    #[error("coordinator closed the link: {0}")]
    Rejected(String),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// No local UDP socket.
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
}

/// How one session ended, when it was not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The link dropped; `established` tells whether the handshake had completed.
    Lost {
        /// Whether the session had been established.
        established: bool,
        /// Why it ended.
        reason: String,
    },
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniform in `[0, min(max, min·2^attempt)]`, at least 10 ms.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let cap = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ms = rng.random_range(0..=cap.as_millis().max(10) as u64);
        Duration::from_millis(ms.max(10))
    }

    /// Back to the first step after a good session.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Everything the link needs.
#[derive(Debug, Clone)]
pub struct Link {
    /// Node name.
    pub node: String,
    /// Role.
    pub role: Role,
    /// Capabilities announced.
    pub capabilities: Vec<String>,
    /// Digest of the hardware inventory, announced in `Hello`.
    pub inventory_digest: [u8; 32],
    /// Coordinator address.
    pub coordinator: SocketAddr,
    /// mTLS client configuration.
    pub client_config: quinn::ClientConfig,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Frame limit.
    pub max_frame: usize,
    /// Journal.
    pub journal: Arc<Mutex<Journal>>,
    /// Wakes the executor when a plan arrives.
    pub wake: Arc<Notify>,
    /// Telemetry source.
    pub sampler: Arc<dyn Sampler>,
    /// Running step, for telemetry.
    pub progress: Arc<Mutex<Option<StepProgress>>>,
    /// Protocol version announced (always the current one outside tests of refusal).
    pub protocol_version: u16,
    /// BMC driver: takes the credentials the coordinator sends.
    pub bmc: Arc<dyn crate::driver::BmcControl>,
    /// Newest BMC poll results, sent when they change.
    pub bmc_states: tokio::sync::watch::Receiver<Arc<Vec<ferric_proto::msg::BmcState>>>,
    /// Console logs tailed for the coordinator (their places kept across sessions).
    pub consoles: Arc<Mutex<crate::console::ConsoleTail>>,
    /// Plans the coordinator asked to stop, for the executor.
    pub cancels: Arc<crate::executor::Cancels>,
}

/// How often the console logs are looked at.
pub const CONSOLE_POLL: Duration = Duration::from_secs(1);

impl Link {
    /// Keeps a session up until `stop`, reconnecting with backoff. Returns on shutdown or a
    /// fatal refusal.
    pub async fn run(
        &self,
        endpoint: &quinn::Endpoint,
        events: &mut mpsc::UnboundedReceiver<StepEvent>,
        mut backoff: Backoff,
        stop: CancellationToken,
    ) -> Result<(), LinkError> {
        loop {
            match self.session(endpoint, events, stop.clone()).await? {
                SessionEnd::Shutdown => return Ok(()),
                SessionEnd::Lost {
                    established,
                    reason,
                } => {
                    if established {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(&mut rand::rng());
                    warn!(%reason, retry_in = ?delay, "link to coordinator lost");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    /// One connection and session, until it ends.
    pub async fn session(
        &self,
        endpoint: &quinn::Endpoint,
        events: &mut mpsc::UnboundedReceiver<StepEvent>,
        stop: CancellationToken,
    ) -> Result<SessionEnd, LinkError> {
        let lost = |established: bool, reason: String| {
            Ok(SessionEnd::Lost {
                established,
                reason,
            })
        };
        let connecting = match endpoint.connect_with(
            self.client_config.clone(),
            self.coordinator,
            ferric_proto::COORDINATOR_SERVER_NAME,
        ) {
            Ok(c) => c,
            Err(e) => return lost(false, format!("cannot dial {}: {e}", self.coordinator)),
        };
        let conn = tokio::select! {
            c = connecting => match c {
                Ok(c) => c,
                Err(e) => return lost(false, format!("cannot connect to {}: {e}", self.coordinator)),
            },
            _ = stop.cancelled() => return Ok(SessionEnd::Shutdown),
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return Self::closed(&conn, e, false),
        };

        // Everything journaled is re-sent from the journal; drop what queued meanwhile.
        while events.try_recv().is_ok() {}
        let (hello, unacked) = {
            let j = lock(&self.journal);
            (
                Hello {
                    version: self.protocol_version,
                    node: self.node.clone(),
                    role: self.role,
                    capabilities: self.capabilities.clone(),
                    inventory_digest: self.inventory_digest,
                    plans: j.cursors(),
                },
                j.unacked(),
            )
        };
        let mut session = AgentSession::new(Instant::now(), hello, unacked, self.handshake_timeout);
        let mut dec = FrameDecoder::new(self.max_frame);
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        let mut telemetry: Option<tokio::time::Interval> = None;
        let mut sample_seq = 0u64;
        let mut stopping: Option<tokio::time::Instant> = None;
        let mut bmc_states = self.bmc_states.clone();
        bmc_states.mark_unchanged();
        let mut consoles: Option<tokio::time::Interval> = None;
        loop {
            // Write what the session wants sent.
            out.clear();
            while let Some(m) = session.poll_transmit() {
                if let Err(e) = encode(&m, self.max_frame, &mut out) {
                    error!(error = %e, "cannot encode a message; dropping it");
                }
            }
            if !out.is_empty()
                && let Err(e) = send.write_all(&out).await
            {
                return lost(session.is_established(), format!("write failed: {e}"));
            }
            let deadline = session.poll_timeout();
            tokio::select! {
                r = recv.read(&mut buf) => match r {
                    Ok(Some(n)) => {
                        dec.extend(&buf[..n]);
                        loop {
                            match dec.next_msg::<CoordMsg>() {
                                Ok(Some(m)) => session.handle_frame(Instant::now(), m),
                                Ok(None) => break,
                                Err(e) => {
                                    conn.close(close::PROTOCOL_ERROR.into(), format!("bad frame from coordinator: {e}").as_bytes());
                                    return lost(session.is_established(), format!("bad frame from coordinator: {e}"));
                                }
                            }
                        }
                    }
                    Ok(None) => {
                        if stopping.is_some() {
                            conn.close(close::SHUTDOWN.into(), b"agent shutting down");
                            return Ok(SessionEnd::Shutdown);
                        }
                        return Self::closed(&conn, quinn::ConnectionError::LocallyClosed, session.is_established()).map(|e| match e {
                            SessionEnd::Lost { established, .. } => SessionEnd::Lost { established, reason: "coordinator ended the control stream".into() },
                            other => other,
                        });
                    }
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        if stopping.is_some() {
                            return Ok(SessionEnd::Shutdown);
                        }
                        return Self::closed(&conn, e, session.is_established());
                    }
                    Err(e) => return lost(session.is_established(), format!("control stream failed: {e}")),
                },
                Some(ev) = events.recv(), if stopping.is_none() => session.send_event(ev),
                Ok(()) = bmc_states.changed(), if session.is_established() && stopping.is_none() => {
                    let states = bmc_states.borrow_and_update().clone();
                    session.send_bmc_states(states.as_ref().clone());
                }
                _ = tick(&mut consoles), if stopping.is_none() => {
                    let mut tail = lock(&self.consoles);
                    if !tail.is_empty() {
                        // One message per node: each stays far below the frame limit.
                        for c in tail.poll() {
                            session.send_console(vec![c]);
                        }
                    }
                }
                _ = tick(&mut telemetry) => {
                    sample_seq += 1;
                    // Sampling reads /proc and may ask libvirt: keep it off the executor.
                    let sampler = self.sampler.clone();
                    if let Ok(sample) = tokio::task::spawn_blocking(move || sampler.sample()).await {
                        self.send_sample(&conn, sample_seq, sample);
                    }
                }
                _ = sleep_until(deadline) => session.handle_timeout(Instant::now()),
                _ = stop.cancelled(), if stopping.is_none() => {
                    // Send what the executor journaled last, then let the coordinator ack it.
                    while let Ok(ev) = events.try_recv() {
                        session.send_event(ev);
                    }
                    stopping = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    let mut tail = Vec::new();
                    while let Some(m) = session.poll_transmit() {
                        let _ = encode(&m, self.max_frame, &mut tail);
                    }
                    let _ = send.write_all(&tail).await;
                    let _ = send.finish();
                }
                _ = sleep_until_tokio(stopping) => {
                    conn.close(close::SHUTDOWN.into(), b"agent shutting down");
                    return Ok(SessionEnd::Shutdown);
                }
            }
            while let Some(ev) = session.poll_event() {
                match ev {
                    AgentEvent::Established {
                        session: id,
                        telemetry_interval,
                    } => {
                        info!(session = id, coordinator = %self.coordinator, "session established");
                        let mut iv = tokio::time::interval(telemetry_interval);
                        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        telemetry = Some(iv);
                        let mut iv = tokio::time::interval(CONSOLE_POLL);
                        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        consoles = Some(iv);
                    }
                    AgentEvent::PlanReceived(plan) => {
                        let id = plan.id;
                        if plan.node != self.node {
                            warn!(plan = id, for_node = %plan.node, "ignoring a plan for another node");
                            continue;
                        }
                        let new = lock(&self.journal).add_plan(&plan)?;
                        if new {
                            info!(plan = id, steps = plan.steps.len(), "plan received");
                            self.wake.notify_one();
                        } else {
                            debug!(plan = id, "plan already journaled");
                        }
                        session.plan_accepted(id);
                    }
                    AgentEvent::Acked { plan, seq } => lock(&self.journal).ack(plan, seq)?,
                    AgentEvent::Bmcs(bmcs) => self.bmc.set_bmcs(bmcs),
                    AgentEvent::Cancel(plan) => {
                        if lock(&self.journal).next_work_of(plan).is_some() {
                            info!(plan, "plan cancelled by the coordinator");
                            self.cancels.request(plan);
                            self.wake.notify_one();
                        } else {
                            debug!(plan, "cancel of a plan not held or already ended");
                        }
                    }
                    AgentEvent::Consoles(c) => {
                        if !c.is_empty() {
                            info!(consoles = c.len(), "console logs to tail");
                        }
                        lock(&self.consoles).set(c);
                    }
                    AgentEvent::Closed(SessionError::Refused(r)) => {
                        conn.close(close::REFUSED.into(), b"refused");
                        return Err(LinkError::Refused(r));
                    }
                    AgentEvent::Closed(e) => {
                        let code = match e {
                            SessionError::HandshakeTimeout(_) => close::HANDSHAKE_TIMEOUT,
                            _ => close::PROTOCOL_ERROR,
                        };
                        conn.close(code.into(), e.to_string().as_bytes());
                        return lost(false, e.to_string());
                    }
                }
            }
        }
    }

    fn send_sample(
        &self,
        conn: &quinn::Connection,
        seq: u64,
        mut s: ferric_proto::msg::TelemetrySample,
    ) {
        s.seq = seq;
        s.at_ms = now_ms();
        s.progress = lock(&self.progress).clone();
        let Ok(bytes) = to_datagram(&s) else { return };
        if conn.max_datagram_size().is_some_and(|m| bytes.len() <= m) {
            if let Err(e) = conn.send_datagram(bytes.into()) {
                debug!(error = %e, "telemetry datagram not sent");
            }
            return;
        }
        // Too large for a datagram: send it on a unidirectional stream of its own.
        let conn = conn.clone();
        tokio::spawn(async move {
            let Ok(frame) = to_frame(&s, 1 << 20) else {
                return;
            };
            if let Ok(mut u) = conn.open_uni().await {
                let _ = u.write_all(&frame).await;
                let _ = u.finish();
            }
        });
    }

    fn closed(
        conn: &quinn::Connection,
        e: quinn::ConnectionError,
        established: bool,
    ) -> Result<SessionEnd, LinkError> {
        let e = conn.close_reason().unwrap_or(e);
        if let quinn::ConnectionError::ApplicationClosed(ac) = &e {
            let reason = String::from_utf8_lossy(&ac.reason).into_owned();
            if ac.error_code == close::CERT_REQUIRED.into() {
                return Err(LinkError::Rejected(reason));
            }
            return Ok(SessionEnd::Lost {
                established,
                reason: format!("coordinator closed the link: {reason}"),
            });
        }
        Ok(SessionEnd::Lost {
            established,
            reason: e.to_string(),
        })
    }
}

async fn tick(iv: &mut Option<tokio::time::Interval>) {
    match iv {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_tokio(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..12).map(|_| b.next_delay(&mut rng)).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d <= Duration::from_secs(2) && *d >= Duration::from_millis(10))
        );
        assert!(delays[..2].iter().all(|d| *d <= Duration::from_millis(200)));
        // Jitter: not all the same.
        assert!(delays.windows(2).any(|w| w[0] != w[1]));
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
