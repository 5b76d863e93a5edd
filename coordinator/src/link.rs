//! The coordinator's end of the agent link: a QUIC endpoint with mutual TLS.
//!
//! One endpoint serves two ALPNs. `ferric-enroll/1` accepts a client without a certificate,
//! reads one [`EnrollRequest`] and answers with a signed certificate or a refusal.
//! `ferric/1` requires a client certificate issued by this coordinator's CA (verified by
//! rustls) and runs a [`CoordSession`] over the first bidirectional stream; telemetry arrives
//! as datagrams.

use crate::Shared;
use crate::pki::node_of_certificate;
use crate::store::{EnrollProblem, TokenProblem};
use ferric_proto::close;
use ferric_proto::frame::{FrameDecoder, Message, decode_payload, to_frame};
use ferric_proto::msg::{
    AgentMsg, EnrollRefusal, EnrollRequest, EnrollResponse, RefuseReason, StoredCursor,
    TelemetrySample,
};
use ferric_proto::session::{CoordEvent, CoordSession};
use ferric_proto::{ALPN, ALPN_ENROLL};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

/// Largest enrollment message accepted (a CSR is well under 4 KiB).
const MAX_ENROLL_FRAME: usize = 16 * 1024;

/// Errors setting up the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS configuration failed.
    #[error("TLS configuration failed")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier could not be built")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// QUIC rejected the TLS configuration.
    #[error("QUIC rejected the TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The stateless-reset key could not be stored.
    #[error("cannot store the stateless-reset key: {0}")]
    ResetKey(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind the QUIC endpoint to {addr}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the QUIC server configuration from the CA.
pub fn server_config(
    pki: &crate::pki::Pki,
    idle: Duration,
) -> Result<quinn::ServerConfig, LinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = pki.server_identity();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_ENROLL.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).unwrap_or(quinn::VarInt::from_u32(30_000).into()),
    ));
    transport.max_concurrent_bidi_streams(4u32.into());
    transport.max_concurrent_uni_streams(4u32.into());
    // Small windows: agents send a few KiB per second; this keeps memory per agent low.
    transport.stream_receive_window(quinn::VarInt::from_u32(256 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(512 * 1024));
    transport.send_window(512 * 1024);
    transport.datagram_receive_buffer_size(Some(64 * 1024));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Endpoint settings with a stateless-reset key kept in the data directory (`reset.key`,
/// 0600). A coordinator restarted after a crash can then reset the connections its previous
/// life held, and agents reconnect at once instead of waiting out the idle timeout.
pub fn endpoint_config(data_dir: &std::path::Path) -> Result<quinn::EndpointConfig, LinkError> {
    let path = data_dir.join("reset.key");
    let key = match std::fs::read(&path) {
        Ok(k) if k.len() == 32 => k,
        _ => {
            let mut k = vec![0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut k[..]);
            crate::pki::write_private(&path, &k[..])
                .map_err(|e| LinkError::ResetKey(e.to_string()))?;
            k
        }
    };
    let mut cfg = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &key,
    )));
    // Connection ids carry a check value keyed by the same secret, so that the restarted
    // coordinator recognises its predecessor's ids as its own and answers them with a reset
    // (with a fresh key it would drop them as invalid and stay silent).
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&key[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(cfg)
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

/// Serves one incoming connection until it ends.
pub async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes TLS failures such as a client certificate from another CA.
            info!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<HandshakeData>().ok())
        .and_then(|h| h.protocol);
    match alpn.as_deref() {
        Some(p) if p == ALPN_ENROLL => {
            serve_enroll(conn, &shared)
                .instrument(info_span!("enroll", %remote))
                .await
        }
        Some(p) if p == ALPN => serve_agent(conn, shared).await,
        _ => conn.close(close::PROTOCOL_ERROR.into(), b"unknown ALPN"),
    }
}

async fn read_one<M: Message>(recv: &mut quinn::RecvStream, max: usize) -> Result<M, String> {
    let mut dec = FrameDecoder::new(max);
    let mut buf = vec![0u8; 4096];
    loop {
        match dec.next_msg::<M>() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => dec.extend(&buf[..n]),
            Ok(None) => {
                return Err(dec
                    .finish()
                    .err()
                    .map_or("stream ended before a message".into(), |e| e.to_string()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Checks a node name (a DNS label).
pub fn valid_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(
            "may hold only lowercase letters, digits and inner hyphens (a DNS label)".into(),
        );
    }
    Ok(())
}

async fn serve_enroll(conn: quinn::Connection, shared: &Shared) {
    let stream = tokio::time::timeout(shared.config.handshake_timeout, conn.accept_bi()).await;
    let Ok(Ok((mut send, mut recv))) = stream else {
        conn.close(close::HANDSHAKE_TIMEOUT.into(), b"no enrollment request");
        return;
    };
    let req = match tokio::time::timeout(
        shared.config.handshake_timeout,
        read_one::<EnrollRequest>(&mut recv, MAX_ENROLL_FRAME),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            warn!(error = %e, "bad enrollment request");
            conn.close(
                close::PROTOCOL_ERROR.into(),
                format!("malformed enrollment request: {e}").as_bytes(),
            );
            return;
        }
        Err(_) => {
            conn.close(
                close::HANDSHAKE_TIMEOUT.into(),
                b"enrollment request timed out",
            );
            return;
        }
    };
    let response = match enroll(&req, shared).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "enrollment failed in the store");
            conn.close(
                close::STORE_ERROR.into(),
                b"coordinator store error; retry later",
            );
            return;
        }
    };
    match &response {
        EnrollResponse::Enrolled { .. } => {
            info!(node = %req.node, role = req.role.as_str(), "node enrolled")
        }
        EnrollResponse::Refused(r) => warn!(node = %req.node, reason = %r, "enrollment refused"),
    }
    if let Ok(frame) = to_frame(&response, MAX_ENROLL_FRAME) {
        let _ = send.write_all(&frame).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    }
    conn.close(close::ENROLL_DONE.into(), b"enrollment done");
}

fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Hash under which a token secret is stored.
pub fn token_secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

async fn enroll(
    req: &EnrollRequest,
    shared: &Shared,
) -> Result<EnrollResponse, crate::store::StoreError> {
    use EnrollRefusal as R;
    let refuse = |r| Ok(EnrollResponse::Refused(r));
    let Some((id, secret)) = split_token(&req.token) else {
        return refuse(R::InvalidToken);
    };
    let hash = token_secret_hash(secret);
    let now = crate::now_ms();
    // Check everything that needs no state change first.
    match shared.store.check_token(id, &hash, now).await? {
        Ok(()) => {}
        Err(TokenProblem::Invalid) => return refuse(R::InvalidToken),
        Err(TokenProblem::Used) => return refuse(R::TokenUsed),
        Err(TokenProblem::Expired) => return refuse(R::TokenExpired),
    }
    if let Err(e) = valid_node_name(&req.node) {
        return refuse(R::BadNodeName(format!("`{}` {e}", req.node)));
    }
    let cert = match shared.pki.sign_client(&req.csr_der, &req.node) {
        Ok(c) => c,
        Err(e) => return refuse(R::BadCsr(e.to_string())),
    };
    match shared
        .store
        .enroll(id, &hash, &req.node, req.role.as_str(), now)
        .await?
    {
        Ok(()) => Ok(EnrollResponse::Enrolled {
            cert_der: cert.to_vec(),
            ca_der: shared.pki.ca_der().to_vec(),
        }),
        Err(EnrollProblem::NodeExists) => refuse(R::AlreadyEnrolled(req.node.clone())),
        Err(EnrollProblem::Token(TokenProblem::Used)) => refuse(R::TokenUsed),
        Err(EnrollProblem::Token(TokenProblem::Expired)) => refuse(R::TokenExpired),
        Err(EnrollProblem::Token(TokenProblem::Invalid)) => refuse(R::InvalidToken),
    }
}

fn peer_node(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    node_of_certificate(certs.first()?)
}

async fn serve_agent(conn: quinn::Connection, shared: Arc<Shared>) {
    let Some(node) = peer_node(&conn) else {
        info!(remote = %conn.remote_address(), "agent without client certificate refused");
        conn.close(
            close::CERT_REQUIRED.into(),
            b"client certificate required: enroll the agent first (ferric-agent enroll)",
        );
        return;
    };
    let conn_id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("agent", node = %node, conn = conn_id);
    let result = AgentConn::run(conn.clone(), node.clone(), conn_id, shared.clone())
        .instrument(span.clone())
        .await;
    if let Some(heard) = shared.hub.unregister(&node, conn_id)
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
    conn_id: u64,
    shared: Arc<Shared>,
    session: CoordSession,
    send: quinn::SendStream,
    plans_tx: mpsc::UnboundedSender<crate::hub::Push>,
    registered: bool,
    out: Vec<u8>,
}

type Closing = (u32, String);

impl AgentConn {
    async fn run(
        conn: quinn::Connection,
        node: String,
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
                .heard(&self.node, self.conn_id, crate::now_ms());
        }
    }

    fn on_datagram(&self, bytes: &[u8]) {
        match decode_payload::<TelemetrySample>(bytes) {
            Ok(s) if self.registered => {
                self.heard();
                self.shared
                    .hub
                    .record_telemetry(&self.node, s, crate::now_ms())
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
            match read_one::<TelemetrySample>(&mut u, shared.config.max_frame).await {
                Ok(s) => shared.hub.record_telemetry(&node, s, crate::now_ms()),
                Err(e) => debug!(error = %e, "dropped a malformed telemetry stream"),
            }
        });
    }

    /// Pushes a plan the agent can decode; a plan with a step newer than the agent's protocol
    /// fails here instead, naming the step (pushed, it would read as a malformed frame and
    /// break the link). An upgraded agent can run it when the plan is applied again.
    async fn offer_plan(&mut self, plan: ferric_proto::plan::Plan) -> Result<(), Closing> {
        use ferric_proto::plan::{ErrorKind, StepEvent, StepEventKind};
        let (needs, step) = plan.min_protocol();
        let speaks = self.session.version();
        if needs <= speaks {
            self.session.push_plan(plan);
            return Ok(());
        }
        let i = step.unwrap_or(0);
        let kind = plan.steps.get(i).map_or("?", |s| s.step.kind());
        let message = format!(
            "agent `{}` speaks protocol version {speaks}; step {i} ({kind}) needs version {needs}: upgrade the agent",
            self.node
        );
        warn!(plan = plan.id, %message, "plan not pushed");
        let ev = StepEvent {
            plan: plan.id,
            seq: 0,
            step: i as u32,
            at_ms: crate::now_ms() as u64,
            kind: StepEventKind::Failed {
                kind: ErrorKind::Unsupported,
                message,
            },
        };
        self.shared
            .store
            .insert_event(&self.node, &ev, crate::now_us())
            .await
            .map_err(|e| (close::STORE_ERROR, format!("coordinator store error: {e}")))?;
        Ok(())
    }

    /// Sends the agent every BMC it drives, with credentials (over this mutual-TLS link only).
    async fn push_bmcs(&mut self) -> Result<(), Closing> {
        let rows = self
            .shared
            .store
            .bmcs(Some(&self.node))
            .await
            .map_err(|e| (close::STORE_ERROR, format!("coordinator store error: {e}")))?;
        let n = rows.len();
        let creds = rows
            .into_iter()
            .map(|r| ferric_proto::msg::BmcCredential {
                name: r.node,
                address: r.address,
                password: r.password.0,
            })
            .collect();
        if !self.session.push_bmcs(creds) && n > 0 {
            warn!(
                bmcs = n,
                version = self.session.version(),
                "agent speaks a protocol too old to drive BMCs; upgrade it"
            );
        }
        Ok(())
    }

    /// Records BMC states this agent read: power sync (flags a node whose power changed
    /// behind Ferric's back) and the newest sensors. States of BMCs it does not drive are
    /// dropped.
    async fn on_bmc_states(
        &self,
        states: Vec<ferric_proto::msg::BmcState>,
    ) -> Result<(), crate::store::StoreError> {
        let store = &self.shared.store;
        let mine: HashSet<String> = store
            .bmcs(Some(&self.node))
            .await?
            .into_iter()
            .map(|r| r.node)
            .collect();
        for st in states {
            if !mine.contains(&st.name) {
                debug!(bmc = %st.name, "dropped the state of a BMC this agent does not drive");
                continue;
            }
            let busy = self
                .shared
                .bmc_plan_running(&self.node, &st.name, true)
                .await?;
            if let Some(flag) = store
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
            self.shared.hub.record_bmc(st, crate::now_ms());
        }
        Ok(())
    }

    /// A step's output: what a BMC power step found is what Ferric now expects (or, for a
    /// status read, what it observed).
    async fn on_output(
        &self,
        e: &ferric_proto::plan::StepEvent,
    ) -> Result<(), crate::store::StoreError> {
        use ferric_proto::plan::{PowerAction, Step, StepEventKind, StepOutput};
        let StepEventKind::Output(StepOutput::Power { on }) = &e.kind else {
            return Ok(());
        };
        let store = &self.shared.store;
        let Some(plan) = store.plan(e.plan).await? else {
            return Ok(());
        };
        let Some(Step::BmcPower { bmc, action }) = plan.steps.get(e.step as usize).map(|s| &s.step)
        else {
            return Ok(());
        };
        if store.bmc(bmc).await?.is_none_or(|r| r.via != self.node) {
            return Ok(());
        }
        if *action == PowerAction::Status {
            if let Some(flag) = store
                .bmc_observed(bmc, false, Some(*on), None, e.at_ms as i64)
                .await?
            {
                warn!(node = %bmc, %flag, "node flagged");
            }
        } else {
            store.bmc_power_set(bmc, *on, e.at_ms as i64).await?;
        }
        Ok(())
    }

    /// Acts on session events and writes what the session wants sent.
    async fn process(&mut self) -> Result<(), Closing> {
        let shared = self.shared.clone();
        let store = &shared.store;
        let store_err = |e: crate::store::StoreError| {
            (close::STORE_ERROR, format!("coordinator store error: {e}"))
        };
        let mut closing = None;
        let mut pushed = Vec::new();
        while let Some(ev) = self.session.poll_event() {
            match ev {
                CoordEvent::Hello(h) => {
                    if store.node(&self.node).await.map_err(store_err)?.is_none() {
                        self.session
                            .refuse(RefuseReason::UnknownNode(self.node.clone()));
                        continue;
                    }
                    let now = crate::now_ms();
                    store
                        .node_seen(
                            &self.node,
                            now,
                            &h.capabilities,
                            &hex::encode(h.inventory_digest),
                        )
                        .await
                        .map_err(store_err)?;
                    // Register before loading, so a plan stored meanwhile is either loaded or
                    // arrives through the channel (the session drops the duplicate).
                    self.shared.hub.register(
                        &self.node,
                        self.conn_id,
                        self.conn.clone(),
                        self.plans_tx.clone(),
                        now,
                    );
                    self.registered = true;
                    let mut stored = Vec::with_capacity(h.plans.len());
                    for c in &h.plans {
                        stored.push(StoredCursor {
                            plan: c.plan,
                            stored: store.stored_events(c.plan).await.map_err(store_err)?,
                        });
                    }
                    let known: HashSet<_> = h.plans.iter().map(|c| c.plan).collect();
                    self.session.accept(stored);
                    // Credentials first: a plan pushed next may name one of these BMCs.
                    self.push_bmcs().await?;
                    for p in store
                        .unfinished_plans(&self.node)
                        .await
                        .map_err(store_err)?
                    {
                        if !known.contains(&p.id) {
                            self.offer_plan(p.to_plan()).await?;
                        }
                    }
                    info!(
                        plans = h.plans.len(),
                        version = h.version,
                        "agent session established"
                    );
                }
                CoordEvent::Event(e) => {
                    match store.insert_event(&self.node, &e, crate::now_us()).await {
                        Ok(true) => self.on_output(&e).await.map_err(store_err)?,
                        Ok(false) => {}
                        Err(crate::store::StoreError::UnknownPlan { plan, .. }) => {
                            warn!(
                                plan,
                                "event for a plan this node does not have; acknowledged and dropped"
                            );
                        }
                        Err(e) => return Err(store_err(e)),
                    }
                    self.session.ack(e.plan, e.seq);
                }
                CoordEvent::BmcStates(states) => {
                    self.on_bmc_states(states).await.map_err(store_err)?
                }
                CoordEvent::PlanAccepted(id) => {
                    store
                        .plan_accepted(id, &self.node, crate::now_us())
                        .await
                        .map_err(store_err)?;
                }
                CoordEvent::Closed(err) => {
                    let code = match err {
                        ferric_proto::session::SessionError::Refused(_) => close::REFUSED,
                        ferric_proto::session::SessionError::HandshakeTimeout(_) => {
                            close::HANDSHAKE_TIMEOUT
                        }
                        ferric_proto::session::SessionError::Violation(_) => close::PROTOCOL_ERROR,
                    };
                    closing = Some((code, err.to_string()));
                }
            }
        }
        self.out.clear();
        while let Some(m) = self.session.poll_transmit() {
            if let ferric_proto::msg::CoordMsg::Plan(p) = &m {
                pushed.push(p.id);
            }
            ferric_proto::frame::encode(&m, self.shared.config.max_frame, &mut self.out)
                .map_err(|e| (close::PROTOCOL_ERROR, format!("cannot encode: {e}")))?;
        }
        if !self.out.is_empty()
            && let Err(e) = self.send.write_all(&self.out).await
        {
            debug!(error = %e, "write to agent failed");
        }
        let now = crate::now_us();
        for id in pushed {
            store.plan_pushed(id, now).await.map_err(store_err)?;
        }
        if let Some(c) = closing {
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
