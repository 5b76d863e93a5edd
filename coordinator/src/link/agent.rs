//! An agent's connection (`ferric/1`): the control stream's session, telemetry datagrams and
//! streams, and what the coordinator pushes (plans, BMC credentials).

use crate::Shared;
use crate::conductor::{self, ConductorError};
use crate::pki::node_of_certificate;
use ferric_proto::close;
use ferric_proto::frame::{FrameDecoder, decode_payload};
use ferric_proto::msg::{AgentMsg, RefuseReason, TelemetrySample};
use ferric_proto::session::{CoordEvent, CoordSession};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

/// The node the peer's certificate names, and SHA-256 of its key.
fn peer_node(conn: &quinn::Connection) -> Option<(String, Option<String>)> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let cert = certs.first()?;
    Some((
        node_of_certificate(cert)?,
        crate::pki::key_of_certificate(cert),
    ))
}

/// Serves an agent's connection until it ends.
pub(super) async fn serve(conn: quinn::Connection, shared: Arc<Shared>) {
    let Some((node, key)) = peer_node(&conn) else {
        info!(remote = %conn.remote_address(), "agent without client certificate refused");
        conn.close(
            close::CERT_REQUIRED.into(),
            b"client certificate required: enroll the agent first (ferric-agent enroll)",
        );
        return;
    };
    let conn_id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("agent", node = %node, conn = conn_id);
    let result = AgentConn::run(conn.clone(), node.clone(), key, conn_id, shared.clone())
        .instrument(span.clone())
        .await;
    if let Some(heard) = shared.hub.links.unregister(&node, conn_id)
        && let Err(e) = shared.store.node_heard(&node, heard).await
    {
        warn!(node = %node, error = %e, "cannot store when the agent was last heard");
    }
    let _enter = span.enter();
    match result {
        Ok(()) => info!("agent disconnected"),
        Err((code, reason)) => {
            warn!(code, %reason, "agent connection closed");
            conn.close(code.into(), reason.as_bytes());
        }
    }
}

struct AgentConn {
    conn: quinn::Connection,
    node: String,
    /// SHA-256 of the certificate's key (what ties a ramdisk to its boot).
    key: Option<String>,
    conn_id: u64,
    shared: Arc<Shared>,
    session: CoordSession,
    send: quinn::SendStream,
    plans_tx: mpsc::UnboundedSender<crate::hub::Push>,
    registered: bool,
    out: Vec<u8>,
}

type Closing = (u32, String);

/// A conductor failure ends the link with a store error (the agent reconnects and resumes).
fn closing(e: ConductorError) -> Closing {
    (close::STORE_ERROR, format!("coordinator store error: {e}"))
}

impl AgentConn {
    async fn run(
        conn: quinn::Connection,
        node: String,
        key: Option<String>,
        conn_id: u64,
        shared: Arc<Shared>,
    ) -> Result<(), Closing> {
        let cfg = shared.config.clone();
        let (send, mut recv) = match tokio::time::timeout(cfg.handshake_timeout, conn.accept_bi())
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(error = %e, "connection ended before the control stream");
                return Ok(());
            }
            Err(_) => return Err((close::HANDSHAKE_TIMEOUT, "no control stream opened".into())),
        };
        let session = CoordSession::new(
            Instant::now(),
            node.clone(),
            conn_id,
            cfg.telemetry_interval,
            cfg.handshake_timeout,
        );
        let (plans_tx, mut plans_rx) = mpsc::unbounded_channel();
        let mut this = AgentConn {
            conn: conn.clone(),
            node,
            key,
            conn_id,
            shared: shared.clone(),
            session,
            send,
            plans_tx,
            registered: false,
            out: Vec::with_capacity(4096),
        };
        let mut dec = FrameDecoder::new(cfg.max_frame);
        let mut buf = vec![0u8; 16 * 1024];
        let shutdown = shared.shutdown.clone();
        loop {
            let deadline = this.session.poll_timeout();
            tokio::select! {
                r = recv.read(&mut buf) => match r {
                    Ok(Some(n)) => {
                        dec.extend(&buf[..n]);
                        loop {
                            match dec.next_msg::<AgentMsg>() {
                                Ok(Some(m)) => {
                                    this.heard();
                                    this.session.handle_frame(Instant::now(), m)
                                }
                                Ok(None) => break,
                                Err(e) => return Err((close::PROTOCOL_ERROR, format!("bad frame from agent: {e}"))),
                            }
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => { debug!(error = %e, "control stream ended"); return Ok(()); }
                },
                Some(push) = plans_rx.recv() => match push {
                    crate::hub::Push::Plan(plan) => this.offer_plan(plan).await?,
                    crate::hub::Push::Bmcs => this.push_bmcs().await?,
                    crate::hub::Push::Cancel(plan) => this.cancel_plan(plan),
                },
                d = conn.read_datagram() => match d {
                    Ok(bytes) => this.on_datagram(&bytes),
                    Err(e) => { debug!(error = %e, "connection ended"); return Ok(()); }
                },
                u = conn.accept_uni() => match u {
                    Ok(u) if this.registered => this.read_uni_sample(u),
                    Ok(_) => {}
                    Err(e) => { debug!(error = %e, "connection ended"); return Ok(()); }
                },
                _ = sleep_until(deadline) => this.session.handle_timeout(Instant::now()),
                _ = shutdown.cancelled() => {
                    conn.close(close::SHUTDOWN.into(), b"coordinator shutting down");
                    return Ok(());
                }
            }
            this.process().await?;
        }
    }

    /// The agent sent something: its link is alive now.
    fn heard(&self) {
        if self.registered {
            self.shared
                .hub
                .links
                .heard(&self.node, self.conn_id, crate::now_ms());
        }
    }

    fn on_datagram(&self, bytes: &[u8]) {
        match decode_payload::<TelemetrySample>(bytes) {
            Ok(s) if self.registered => {
                self.heard();
                self.shared
                    .hub
                    .telemetry
                    .record(&self.node, s, crate::now_ms())
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "dropped a malformed telemetry datagram"),
        }
    }

    /// A telemetry sample too large for a datagram arrives on a unidirectional stream.
    fn read_uni_sample(&self, mut u: quinn::RecvStream) {
        self.heard();
        let node = self.node.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let max = crate::hub::TELEMETRY_SAMPLE_MAX;
            match super::read_one::<TelemetrySample>(&mut u, max).await {
                Ok(s) => shared.hub.telemetry.record(&node, s, crate::now_ms()),
                Err(e) => debug!(error = %e, "dropped a malformed telemetry stream"),
            }
        });
    }

    /// Pushes a plan the agent can decode; one with a step newer than the agent's protocol
    /// fails instead (see [`conductor::plans::delivery`]), reported as the agent's would be.
    async fn offer_plan(&mut self, plan: ferric_proto::plan::Plan) -> Result<(), Closing> {
        let speaks = self.session.version();
        // What the agent's decoder takes, whatever this coordinator would send.
        let max_frame = self
            .shared
            .config
            .max_frame
            .min(ferric_proto::frame::DEFAULT_MAX_FRAME);
        let delivery =
            conductor::plans::delivery(&self.shared.store, &self.node, &plan, speaks, max_frame)
                .await
                .map_err(closing)?;
        if delivery == conductor::plans::Delivery::Push {
            // Noted before it goes: a cancel from now on tells the agent instead of failing
            // the plan here.
            self.shared
                .store
                .plan_pushed(plan.id, crate::now_us())
                .await
                .map_err(|e| closing(e.into()))?;
            self.session.push_plan(plan);
        } else {
            conductor::reports::undelivered(&self.shared.env(), &self.node, &plan, delivery)
                .await
                .map_err(closing)?;
        }
        Ok(())
    }

    /// Tells the agent to stop `plan` (an agent older than protocol 7 cannot: it runs on).
    fn cancel_plan(&mut self, plan: ferric_proto::plan::PlanId) {
        if self.session.cancel_plan(plan) {
            info!(plan, "agent told to cancel the plan");
        } else {
            warn!(
                plan,
                version = self.session.version(),
                "agent speaks a protocol too old to cancel a plan it holds; it runs to its end"
            );
        }
    }

    /// Sends the agent every BMC it drives, with credentials (over this mutual-TLS link only).
    async fn push_bmcs(&mut self) -> Result<(), Closing> {
        let creds = conductor::bmcs::credentials(&self.shared, &self.node)
            .await
            .map_err(closing)?;
        let n = creds.len();
        if !self.session.push_bmcs(creds) && n > 0 {
            warn!(
                bmcs = n,
                version = self.session.version(),
                "agent speaks a protocol too old to drive BMCs; upgrade it"
            );
        }
        let consoles = conductor::bmcs::consoles(&self.shared.store, &self.node)
            .await
            .map_err(closing)?;
        let n = consoles.len();
        if !self.session.push_consoles(consoles) && n > 0 {
            warn!(
                consoles = n,
                version = self.session.version(),
                "agent speaks a protocol too old to tail console logs; upgrade it"
            );
        }
        Ok(())
    }

    /// Acts on session events and writes what the session wants sent.
    async fn process(&mut self) -> Result<(), Closing> {
        let shared = self.shared.clone();
        let mut closing_with = None;
        while let Some(ev) = self.session.poll_event() {
            match ev {
                CoordEvent::Hello(h) => {
                    let now = crate::now_ms();
                    if h.plans.len() > conductor::reports::MAX_HELLO_PLANS {
                        self.session.refuse(RefuseReason::TooManyPlans {
                            named: h.plans.len() as u64,
                            max: conductor::reports::MAX_HELLO_PLANS as u64,
                        });
                        continue;
                    }
                    use conductor::reports::HelloVerdict;
                    let resident = match conductor::reports::hello(
                        &shared,
                        &self.node,
                        &h,
                        self.key.as_deref(),
                        now,
                    )
                    .await
                    .map_err(closing)?
                    {
                        HelloVerdict::Refused(r) => {
                            self.session.refuse(r);
                            continue;
                        }
                        HelloVerdict::Agent => false,
                        HelloVerdict::Ramdisk { resident: false } => {
                            // Its machine reboots into its image: the old ramdisk's last
                            // breath, let in to deliver what it journaled; given no work.
                            info!("a ramdisk about to reboot into its image reconnected");
                            false
                        }
                        HelloVerdict::Ramdisk { resident: true } => true,
                    };
                    if !shared.hub.links.may_replace(&self.node, now) {
                        warn!("a second agent with this identity; refused");
                        self.session
                            .refuse(RefuseReason::DuplicateIdentity(self.node.clone()));
                        continue;
                    }
                    // Register before loading, so a plan stored meanwhile is either loaded or
                    // arrives through the channel (the session drops the duplicate).
                    shared.hub.links.register(
                        &self.node,
                        self.conn_id,
                        self.conn.clone(),
                        self.plans_tx.clone(),
                        now,
                        resident,
                    );
                    self.registered = true;
                    let resume = conductor::reports::resume(&shared, &self.node, &h)
                        .await
                        .map_err(closing)?;
                    self.session.accept(resume.stored);
                    // Credentials first: a plan pushed next may name one of these BMCs.
                    self.push_bmcs().await?;
                    for p in resume.missing {
                        self.offer_plan(p).await?;
                    }
                    // Plans it holds that an operator cancelled meanwhile.
                    for plan in resume.cancel {
                        self.cancel_plan(plan);
                    }
                    if resident {
                        conductor::reports::ramdisk_present(&shared.env(), &self.node)
                            .await
                            .map_err(closing)?;
                    }
                    info!(
                        plans = h.plans.len(),
                        version = h.version,
                        "agent session established"
                    );
                }
                CoordEvent::Event(e) => {
                    conductor::reports::event(&shared.env(), &self.node, &e)
                        .await
                        .map_err(closing)?;
                    self.session.ack(e.plan, e.seq);
                }
                CoordEvent::BmcStates(states) => {
                    conductor::reports::bmc_states(&shared.env(), &self.node, states)
                        .await
                        .map_err(closing)?
                }
                CoordEvent::Console(lines) => {
                    conductor::reports::console(&shared.env(), &self.node, lines)
                        .await
                        .map_err(closing)?
                }
                CoordEvent::PlanAccepted(id) => {
                    shared
                        .store
                        .plan_accepted(id, &self.node, crate::now_us())
                        .await
                        .map_err(|e| closing(e.into()))?;
                }
                CoordEvent::Closed(err) => {
                    let code = match err {
                        ferric_proto::session::SessionError::Refused(_) => close::REFUSED,
                        ferric_proto::session::SessionError::HandshakeTimeout(_) => {
                            close::HANDSHAKE_TIMEOUT
                        }
                        ferric_proto::session::SessionError::Violation(_) => close::PROTOCOL_ERROR,
                    };
                    closing_with = Some((code, err.to_string()));
                }
            }
        }
        self.out.clear();
        while let Some(m) = self.session.poll_transmit() {
            ferric_proto::frame::encode(&m, self.shared.config.max_frame, &mut self.out)
                .map_err(|e| (close::PROTOCOL_ERROR, format!("cannot encode: {e}")))?;
        }
        if !self.out.is_empty()
            && let Err(e) = self.send.write_all(&self.out).await
        {
            debug!(error = %e, "write to agent failed");
        }
        if let Some(c) = closing_with {
            let _ = self.send.flush().await;
            let _ = self.send.finish();
            // Give the refusal a moment to reach the agent before the close overtakes it.
            let _ = tokio::time::timeout(Duration::from_millis(500), self.send.stopped()).await;
            return Err(c);
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
