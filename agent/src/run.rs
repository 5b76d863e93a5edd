//! The running agent: its configuration, the link and executor started side by side, the
//! drain on shutdown, and the poll of the BMCs it drives.

use crate::driver::Drivers;
use crate::executor::Executor;
use crate::journal::Journal;
use crate::{driver, enroll, journal, link, telemetry, tls};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Configuration of a running agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory: identity and journal.
    pub state_dir: PathBuf,
    /// Coordinator `host:port`; the address enrolled with when `None`.
    pub coordinator: Option<String>,
    /// Drivers.
    pub drivers: Drivers,
    /// Telemetry source.
    pub sampler: Arc<dyn telemetry::Sampler>,
    /// fsync the journal on every record.
    pub journal_sync: bool,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// QUIC keepalive.
    pub keepalive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// How long a drain waits for the running step.
    pub drain_grace: Duration,
    /// Protocol version announced (tests of refusal change it).
    pub protocol_version: u16,
    /// How often the BMCs this agent drives are polled (power, and sensors every
    /// [`SENSOR_POLL_EVERY`]th time); zero turns the poll off.
    pub bmc_poll: Duration,
    /// The directories plans may name host paths in (serial logs, kernels).
    pub paths: crate::paths::PathPolicy,
    /// The directories console logs may be tailed in (their own list: the plans' directories
    /// hold keys and disks).
    pub console_dirs: crate::paths::PathPolicy,
}

/// Sensors are read on every this-many BMC polls (an SDR walk per BMC is cached, but each
/// sensor is one more exchange).
pub const SENSOR_POLL_EVERY: u32 = 3;

impl Config {
    /// Defaults for a state directory and drivers.
    pub fn new(state_dir: PathBuf, drivers: Drivers, sampler: Arc<dyn telemetry::Sampler>) -> Self {
        Self {
            state_dir,
            coordinator: None,
            drivers,
            sampler,
            journal_sync: true,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: ferric_proto::session::DEFAULT_HANDSHAKE_TIMEOUT,
            drain_grace: Duration::from_secs(30),
            protocol_version: ferric_proto::PROTOCOL_VERSION,
            bmc_poll: Duration::from_secs(10),
            paths: crate::paths::PathPolicy::default(),
            console_dirs: crate::paths::PathPolicy::new(
                crate::console::DEFAULT_DIRS
                    .iter()
                    .map(std::path::PathBuf::from),
            ),
        }
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Identity missing or invalid.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The link ended for good.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// The coordinator address did not resolve.
    #[error("cannot resolve coordinator address `{0}`")]
    Resolve(String, #[source] std::io::Error),
}

/// Runs the agent until `shutdown`, then drains: the running step finishes (up to the grace
/// period), its events are sent, and the link closes.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let identity = tls::Identity::load(&cfg.state_dir)?;
    let coordinator = cfg
        .coordinator
        .clone()
        .unwrap_or_else(|| identity.meta.coordinator.clone());
    let addr = enroll::resolve(&coordinator)
        .await
        .map_err(|e| AgentError::Resolve(coordinator.clone(), e))?;
    let journal = Arc::new(Mutex::new(Journal::open(
        &cfg.state_dir.join("journal"),
        cfg.journal_sync,
    )?));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let wake = Arc::new(Notify::new());
    let progress = Arc::new(Mutex::new(None));
    let cancels = Arc::new(crate::executor::Cancels::default());
    let executor = Executor {
        journal: journal.clone(),
        drivers: cfg.drivers.clone(),
        events: events_tx,
        wake: wake.clone(),
        progress: progress.clone(),
        // Never in the agent's own state directory, nor where it reads consoles.
        paths: Arc::new(
            cfg.paths.clone().denying(
                std::iter::once(cfg.state_dir.clone())
                    .chain(cfg.console_dirs.allowed().iter().cloned()),
            ),
        ),
        cancels: cancels.clone(),
    };
    let exec_task = tokio::spawn(executor.run(shutdown.clone()));
    let (bmc_tx, bmc_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    if !cfg.bmc_poll.is_zero() {
        tokio::spawn(poll_bmcs(
            cfg.drivers.bmc.clone(),
            cfg.bmc_poll,
            bmc_tx,
            shutdown.clone(),
        ));
    }
    let link = link::Link {
        node: identity.meta.node.clone(),
        role: identity.meta.role,
        capabilities: cfg.drivers.capabilities(),
        inventory_digest: crate::inventory::digest(&crate::inventory::read(
            &crate::inventory::Root::default(),
        )),
        coordinator: addr,
        client_config: tls::link_client_config(&identity, cfg.keepalive, cfg.idle_timeout)?,
        handshake_timeout: cfg.handshake_timeout,
        max_frame: ferric_proto::frame::DEFAULT_MAX_FRAME,
        journal,
        wake,
        sampler: cfg.sampler.clone(),
        progress,
        protocol_version: cfg.protocol_version,
        bmc: cfg.drivers.bmc.clone(),
        bmc_states: bmc_rx,
        consoles: Arc::new(Mutex::new(crate::console::ConsoleTail::new(
            cfg.console_dirs.clone(),
        ))),
        cancels,
    };
    let endpoint = enroll::client_endpoint(addr, None).map_err(link::LinkError::Socket)?;
    info!(node = %link.node, %coordinator, "agent starting");
    let link_stop = CancellationToken::new();
    let drain = {
        let link_stop = link_stop.clone();
        let shutdown = shutdown.clone();
        let grace = cfg.drain_grace;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            info!("draining: finishing the running step");
            match tokio::time::timeout(grace, exec_task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "executor stopped with an error"),
                Ok(Err(e)) => warn!(error = %e, "executor task failed"),
                Err(_) => warn!(
                    ?grace,
                    "running step did not finish within the grace period; it resumes on restart"
                ),
            }
            link_stop.cancel();
        })
    };
    let backoff = link::Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let result = link
        .run(&endpoint, &mut events_rx, backoff, link_stop)
        .await;
    if result.is_err() {
        shutdown.cancel();
    }
    let _ = drain.await;
    // BMC sessions are few per user on a BMC: hand them back.
    cfg.drivers.bmc.close().await;
    endpoint.close(ferric_proto::close::SHUTDOWN.into(), b"agent stopped");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    info!("agent stopped");
    Ok(result?)
}

/// Polls every BMC the agent drives each `every`, publishing the states for the link. A BMC
/// that does not answer costs its own poll time, not the others' (they run side by side).
async fn poll_bmcs(
    bmc: Arc<dyn driver::BmcControl>,
    every: Duration,
    tx: tokio::sync::watch::Sender<Arc<Vec<ferric_proto::msg::BmcState>>>,
    shutdown: CancellationToken,
) {
    let mut iv = tokio::time::interval(every);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let states = tokio::select! {
            s = bmc.poll(n.is_multiple_of(SENSOR_POLL_EVERY)) => s,
            _ = shutdown.cancelled() => return,
        };
        n = n.wrapping_add(1);
        if !states.is_empty() {
            tx.send_replace(Arc::new(states));
        }
    }
}
