//! # ferric-coordinator
//!
//! The coordinator holds the inventory and decides what must happen; agents make it happen.
//! This crate is the `ferric` binary's library: the rules ([`conductor`]) over its vocabulary
//! ([`model`]), the store ([`store`]), the certificate authority ([`pki`]), the registry of
//! connected agents and their telemetry ([`hub`]), and the edges that call the rules — the
//! QUIC link to agents ([`link`]) and the HTTP API ([`api`]) with its client ([`client`]).
//! The `ferric` binary's command line (`src/cli/`) is its own.
#![forbid(unsafe_code)]

pub mod api;
pub mod blobs;
pub mod boot_services;
pub use ferric_api::client;
pub mod clock;
pub mod conductor;
pub mod http;
pub mod hub;
pub mod link;
pub mod media;
pub use ferric_api::model;
pub mod pki;
pub mod secrets;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Configuration of a coordinator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory: store, CA, server identity.
    pub data_dir: PathBuf,
    /// UDP address of the agent link.
    pub listen: SocketAddr,
    /// TCP address of the HTTP API (loopback by default).
    pub api_listen: SocketAddr,
    /// Telemetry interval told to agents.
    pub telemetry_interval: Duration,
    /// Time allowed for an agent's handshake.
    pub handshake_timeout: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Largest control frame accepted.
    pub max_frame: usize,
    /// How long a drain waits for connections to close.
    pub drain_grace: Duration,
    /// Base URL agents fetch images from; `https://<API address>` when absent.
    pub images_url: Option<String>,
    /// Serve the API over plain HTTP instead of HTTPS (loopback addresses only).
    pub api_plain_http: bool,
    /// Names and addresses the API's certificate carries beside `coordinator.ferric.internal`,
    /// `localhost`, the loopback addresses, this host's name, the API address and the images
    /// URL's host.
    pub api_names: Vec<String>,
    /// Boot services on a provisioning interface (off when absent).
    pub boot: Option<boot_services::BootConfig>,
    /// How long bare-metal lifecycle waits may last.
    pub lifecycle: conductor::lifecycle::Timeouts,
    /// The key that seals secrets at rest; `DATA_DIR/secrets.key` when absent.
    pub secrets_key: Option<PathBuf>,
    /// Largest image an upload may store, bytes.
    pub max_image_bytes: u64,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// How many audit entries are kept at most (the newest).
    pub audit_max_rows: i64,
}

impl Config {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7180)),
            telemetry_interval: Duration::from_secs(1),
            handshake_timeout: ferric_proto::session::DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Duration::from_secs(30),
            max_frame: ferric_proto::frame::DEFAULT_MAX_FRAME,
            drain_grace: Duration::from_secs(5),
            images_url: None,
            api_plain_http: false,
            api_names: Vec::new(),
            boot: None,
            lifecycle: conductor::lifecycle::Timeouts::default(),
            secrets_key: None,
            max_image_bytes: 64 << 30,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            audit_max_rows: 1_000_000,
        }
    }
}

/// The client configuration with the first admin token, in the data directory (0600).
pub use ferric_api::ADMIN_CONF;

/// State shared by the link, the API and the hub.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Store.
    pub store: store::Store,
    /// Certificate authority.
    pub pki: pki::Pki,
    /// Connected agents.
    pub hub: hub::Hub,
    /// Cancelled when the coordinator drains.
    pub shutdown: CancellationToken,
    /// Image files.
    pub images: conductor::images::ImageStore,
    /// Taken while a bare-metal node's lifecycle moves.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// The boot services' addresses, once they listen.
    pub boot_site: std::sync::OnceLock<conductor::network_boot::BootSite>,
    /// Seals secrets at rest (BMC passwords).
    pub secrets: secrets::SecretBox,
    /// The process's open-file limit (raised at start), which the HTTP servers' connection
    /// caps follow.
    pub open_files: u64,
    /// The rules' clock (see [`clock`]).
    pub clock: std::sync::Arc<dyn clock::Clock>,
    /// API calls refused for want of a valid token since the audit log last summed them up,
    /// by code (counted, not each written: a flood of them must not fill the disk).
    pub unauthenticated: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The same, since the start (for `/metrics`).
    pub unauthenticated_total: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Shared {
    /// The narrow handles the conductor's rules act through.
    pub fn env(&self) -> conductor::Env<'_> {
        conductor::Env {
            store: &self.store,
            hub: &self.hub,
            clock: &*self.clock,
            timeouts: &self.config.lifecycle,
            lifecycle: &self.lifecycle,
            boot: self.boot_site.get(),
        }
    }
}

/// Errors starting a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created, or others may read it.
    #[error("data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    /// The CA failed.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The store failed.
    #[error("cannot open the store")]
    Store(#[from] store::StoreError),
    /// The secrets key could not be loaded.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    /// Secrets kept in clear by an older version could not be sealed.
    #[error("sealing stored secrets: {0}")]
    Seal(#[source] conductor::ConductorError),
    /// The first admin token could not be made.
    #[error("making the first admin API token: {0}")]
    FirstToken(#[source] conductor::ConductorError),
    /// The link failed.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// The boot services did not start.
    #[error(transparent)]
    Boot(#[from] boot_services::BootError),
    /// Plain HTTP was asked for on an address other hosts reach.
    #[error(
        "the API serves plain HTTP on loopback only, and {0} is not: drop the plain-HTTP flag (HTTPS with the coordinator's CA is the default)"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// The API's TLS configuration failed.
    #[error("the API's TLS configuration: {0}")]
    ApiTls(#[source] rustls::Error),
    /// The API socket could not be bound.
    #[error("cannot bind the HTTP API to {0}")]
    ApiBind(SocketAddr, #[source] std::io::Error),
}

/// A started coordinator.
#[derive(Debug)]
pub struct Running {
    /// Bound agent-link address.
    pub listen: SocketAddr,
    /// Bound API address.
    pub api: SocketAddr,
    /// Shared state (for in-process tests and benchmarks).
    pub shared: Arc<Shared>,
    /// The boot services, when on.
    pub boot: Option<boot_services::Running>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The CA fingerprint agents pin.
    pub fn ca_hash(&self) -> String {
        self.shared.pki.ca_hash()
    }

    /// Drains: stops accepting, closes agent connections, waits up to the grace period.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Waits until the coordinator stops (after a cancel of its shutdown token).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// An error and its sources on one line (`a: b: c`), for logs and close reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Locks a mutex whose data stays consistent even if a holder panicked (single inserts and
/// removals): a poisoned lock is taken as it is, not turned into a second panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Creates `dir` readable by its owner only, or checks that an existing one is: the store,
/// the CA's key, the secrets key and the images are nobody else's. (An existing directory is
/// not changed: it may be shared by mistake, and the fix is the operator's to make.)
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "others may read or enter it (mode {mode:o}); it holds the store, the CA key and the secrets key: `chmod 700` it"
            ),
        ));
    }
    Ok(())
}

/// Creates `path` empty if missing, and makes it readable by its owner only (SQLite gives its
/// journal files the database's mode).
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Opens the store and CA, binds both sockets, and serves until shut down.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let open_files = http::raise_open_files();
    private_dir(&config.data_dir).map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    let pki = pki::Pki::load_or_create(&config.data_dir)?;
    let secrets = secrets::SecretBox::load_or_create(
        &config
            .secrets_key
            .clone()
            .unwrap_or_else(|| config.data_dir.join("secrets.key")),
    )?;
    let db = config.data_dir.join("ferric.db");
    private_file(&db).map_err(|e| StartError::DataDir(db.clone(), e))?;
    let store = store::Store::open_sqlite(&db).await?;
    let images = conductor::images::ImageStore::open(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.join("images"), e))?;
    let server_config = link::server_config(&pki, config.idle_timeout)?;
    let bind_err = |source| link::LinkError::Bind {
        addr: config.listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(config.listen).map_err(bind_err)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_err(std::io::Error::other("no async runtime for QUIC")))?;
    let endpoint = quinn::Endpoint::new(
        link::endpoint_config(&config.data_dir)?,
        Some(server_config),
        socket,
        runtime,
    )
    .map_err(bind_err)?;
    let listen = endpoint
        .local_addr()
        .map_err(|source| link::LinkError::Bind {
            addr: config.listen,
            source,
        })?;
    if config.api_plain_http && !config.api_listen.ip().is_loopback() {
        return Err(StartError::PlainHttpNotLoopback(config.api_listen));
    }
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| StartError::ApiBind(config.api_listen, e))?;
    let api = api_listener
        .local_addr()
        .map_err(|e| StartError::ApiBind(config.api_listen, e))?;
    let mut config = config;
    let scheme = if config.api_plain_http {
        "http"
    } else {
        "https"
    };
    if config.images_url.is_none() {
        config.images_url = Some(format!("{scheme}://{api}"));
    }
    let api_tls = if config.api_plain_http {
        None
    } else {
        Some(api::listen::tls_config(
            &pki,
            &api_cert_names(&config, api),
        )?)
    };
    let shared = Arc::new(Shared {
        config,
        store,
        pki,
        hub: hub::Hub::default(),
        shutdown: CancellationToken::new(),
        images,
        lifecycle: tokio::sync::Mutex::new(()),
        boot_site: std::sync::OnceLock::new(),
        secrets,
        open_files,
        clock: std::sync::Arc::new(clock::Rebased::system()),
        unauthenticated: Default::default(),
        unauthenticated_total: Default::default(),
    });
    let sealed = conductor::bmcs::seal_clear_passwords(&shared)
        .await
        .map_err(StartError::Seal)?;
    if sealed > 0 {
        shared.store.flush_journal().await?;
        tracing::warn!(
            sealed,
            "BMC passwords an older version kept in clear are sealed now"
        );
    }
    // Deleted nodes' names first: a node enrolled again under one carries its own.
    for (node, generation) in shared.store.retired_generations().await? {
        shared.pki.revocations().set(&node, generation);
    }
    for (node, generation) in shared.store.cert_generations().await? {
        shared.pki.revocations().set(&node, generation);
    }
    if let Some(t) = conductor::access::first_admin_token(&shared)
        .await
        .map_err(StartError::FirstToken)?
    {
        let path = shared.config.data_dir.join(ADMIN_CONF);
        let host = if api.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], api.port()))
        } else {
            api
        };
        pki::write_private(
            &path,
            format!(
                "# The first admin token of this coordinator (the whole fleet); keep it secret.\n\
                 # Use it with FERRIC_CONFIG={} or copy it to ~/.config/ferric/config.toml.\n\
                 api = \"{scheme}://{host}\"\nca = \"{}\"\ntoken = \"{}\"\n",
                path.display(),
                shared.config.data_dir.join("ca.pem").display(),
                t.token
            ),
        )?;
        tracing::warn!(path = %path.display(), token_id = %t.info.id, "first admin API token written (0600)");
    }
    info!(%listen, %api, ca = %shared.pki.ca_hash(), "coordinator listening");

    let boot = match shared.config.boot.clone() {
        Some(b) => Some(boot_services::start(shared.clone(), b, listen.port()).await?),
        None => None,
    };
    tokio::spawn(conductor::lifecycle::deadlines(shared.clone()));
    tokio::spawn(conductor::access::audit_upkeep(shared.clone()));
    let task = tokio::spawn(serve(endpoint, api_listener, api_tls, shared.clone()));
    Ok(Running {
        listen,
        api,
        shared,
        boot,
        task,
    })
}

/// The names the API's certificate carries beside the fixed ones: this host's name, the API
/// address when it is a specific one, the images URL's host, and the configured extras.
fn api_cert_names(config: &Config, api: SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
    {
        names.push(h.to_owned());
    }
    if !api.ip().is_unspecified() {
        names.push(api.ip().to_string());
    }
    if let Some(host) = config
        .images_url
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        names.push(host);
    }
    names.extend(config.api_names.iter().cloned());
    names
}

async fn serve(
    endpoint: quinn::Endpoint,
    api_listener: tokio::net::TcpListener,
    api_tls: Option<rustls::ServerConfig>,
    shared: Arc<Shared>,
) {
    let shutdown = shared.shutdown.clone();
    // Half the open files for the API, 256 connections at most from one address (loopback
    // clients, the dashboard's streams).
    let limits = http::Limits::for_open_files(shared.open_files, 2, 1024, 256);
    let api_task = tokio::spawn(api::listen::serve(
        api_listener,
        api_tls,
        limits,
        shared.clone(),
    ));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => { conns.spawn(link::serve(i, shared.clone())); }
                None => break,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    info!(agents = shared.hub.links.connected(), "draining");
    endpoint.set_server_config(None);
    shared.hub.links.close_all(b"coordinator shutting down");
    let grace = shared.config.drain_grace;
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
    let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
    let _ = api_task.await;
    shared.store.close().await;
    info!("coordinator stopped");
}
