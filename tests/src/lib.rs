//! # ferric-tests
//!
//! End-to-end suites of Ferric and the helpers they share: a coordinator started in-process
//! on loopback with real QUIC sockets and a real SQLite store, agents started in-process or
//! as real processes, and a way to find the built binaries.
//!
//! Their emulated BMCs and QEMU machines are configured by the lab crate's own code
//! (`ferric_lab::bmc`, `ferric_lab::qemu`), the same that builds a lab rack's nodes.
#![forbid(unsafe_code)]

pub mod bmc;
pub mod browser;
pub mod cloud_image;
pub mod hostvm;
pub mod hv;
pub mod initramfs;
pub mod netboot;
pub mod node;
pub mod os_image;
pub mod rack;
pub mod ramdisk;
pub mod sushy;
pub mod vbmc;

use anyhow::{Context, Result, bail};
use ferric_agent::driver::{Drivers, FakeDriver};
use ferric_agent::enroll::{EnrollOptions, enroll};
use ferric_agent::telemetry::FixedSampler;
use ferric_agent::tls::CaPin;
use ferric_coordinator::client::Client;
use ferric_proto::msg::Role;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A coordinator config on loopback with ephemeral ports.
pub fn coordinator_config(data_dir: &Path) -> ferric_coordinator::Config {
    let mut c = ferric_coordinator::Config::new(data_dir.to_owned());
    c.listen = "127.0.0.1:0".parse().expect("addr");
    c.api_listen = "127.0.0.1:0".parse().expect("addr");
    c.drain_grace = Duration::from_secs(2);
    // The host as a QEMU user-network guest reaches it (the host-VM tests' agent fetches
    // images from there): a name the API's certificate must carry.
    c.api_names = vec![hostvm::HostVm::HOST.to_owned()];
    c
}

/// Starts an in-process coordinator.
pub async fn start_coordinator(data_dir: &Path) -> Result<ferric_coordinator::Running> {
    start(coordinator_config(data_dir)).await
}

/// Starts an in-process coordinator from `cfg` and keeps its first admin token for
/// [`client`] and [`cli`].
pub async fn start(cfg: ferric_coordinator::Config) -> Result<ferric_coordinator::Running> {
    let data = cfg.data_dir.clone();
    let coord = ferric_coordinator::start(cfg).await?;
    admit(&data, coord.api)?;
    Ok(coord)
}

/// The admin tokens and CA files of the coordinators this test runs, by API address (nextest
/// runs each test in its own process).
static ADMINS: std::sync::Mutex<Vec<(std::net::SocketAddr, String, PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// The token in a coordinator's `admin.conf`.
pub fn admin_token_in(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(ferric_coordinator::ADMIN_CONF);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|t| t.strip_suffix('"'))
        .map(str::to_owned)
        .with_context(|| format!("{} has no token", path.display()))
}

/// Keeps the admin token and the CA of the coordinator at `api` whose data is in `data_dir`.
pub fn admit(data_dir: &Path, api: std::net::SocketAddr) -> Result<()> {
    let token = admin_token_in(data_dir)?;
    let mut admins = ADMINS.lock().unwrap_or_else(|p| p.into_inner());
    admins.retain(|(a, _, _)| *a != api);
    admins.push((api, token, data_dir.join("ca.pem")));
    Ok(())
}

/// The admin token kept for the coordinator at `api`.
pub fn admin_token(api: std::net::SocketAddr) -> Option<String> {
    let admins = ADMINS.lock().unwrap_or_else(|p| p.into_inner());
    admins
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, t, _)| t.clone())
}

/// The CA file kept for the coordinator at `api`.
pub fn ca_file(api: std::net::SocketAddr) -> Option<PathBuf> {
    let admins = ADMINS.lock().unwrap_or_else(|p| p.into_inner());
    admins
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, _, c)| c.clone())
}

/// The API's base URL (HTTPS, as every coordinator the tests start serves it).
pub fn base_url(api: std::net::SocketAddr) -> String {
    format!("https://{api}")
}

/// A client of the API at `api` pinning the CA in `ca`, presenting `token` if any.
pub fn client_pinned(api: std::net::SocketAddr, ca: &Path, token: Option<&str>) -> Client {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
    Client::connect(&base_url(api), token, Some(&pem)).expect("an API client")
}

/// A reqwest client trusting only the CA of the coordinator at `api` (for raw HTTP calls).
pub fn http_client(api: std::net::SocketAddr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = ca_file(api).expect("the coordinator's CA is kept (started with tests::start)");
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("CA PEM"))
        .build()
        .expect("an HTTP client")
}

/// How to fetch the image blobs of the coordinator at `api` (its CA pinned, its admin token).
pub fn blob_options(api: std::net::SocketAddr) -> ferric_images::source::HttpOptions {
    client(api)
        .http_options_for(&format!("{}/images/", base_url(api)))
        .expect("an API URL gets the API's options")
}

/// API client of a running coordinator, with its admin token when it is known.
pub fn client(api: std::net::SocketAddr) -> Client {
    let ca = ca_file(api).expect("the coordinator's CA is kept (started with tests::start)");
    client_pinned(api, &ca, admin_token(api).as_deref())
}

/// Waits until the coordinator process at `api` with its data in `data_dir` is ready, keeps
/// its admin token, and returns its admin client.
pub async fn wait_admitted(
    data_dir: &Path,
    api: std::net::SocketAddr,
    limit: Duration,
) -> Result<Client> {
    let ca = data_dir.join("ca.pem");
    wait_for(limit, "the coordinator's API", || async {
        if !ca.exists() || !data_dir.join(ferric_coordinator::ADMIN_CONF).exists() {
            return Ok(None);
        }
        Ok(client_pinned(api, &ca, None)
            .get_text("/ready")
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    admit(data_dir, api)?;
    Ok(client(api))
}

/// API client presenting `token`.
pub fn client_with(api: std::net::SocketAddr, token: &str) -> Client {
    let ca = ca_file(api).expect("the coordinator's CA is kept (started with tests::start)");
    client_pinned(api, &ca, Some(token))
}

/// How most suites begin: tracing on, a temporary directory, an in-process coordinator with
/// its data in `coord/` there, and its API client.
pub async fn coordinator_in_tempdir() -> (tempfile::TempDir, ferric_coordinator::Running, Client) {
    init_tracing();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let coord = start_coordinator(&dir.path().join("coord"))
        .await
        .expect("the coordinator starts");
    let c = client(coord.api);
    (dir, coord, c)
}

/// Creates a token through the API and enrolls `node` into `state_dir` (in-process).
pub async fn enroll_in_process(
    api: std::net::SocketAddr,
    quic: std::net::SocketAddr,
    node: &str,
    state_dir: &Path,
) -> Result<()> {
    enroll_in_project(api, quic, node, state_dir, None).await
}

/// Like [`enroll_in_process`], the node joining `project` (the default one when `None`).
pub async fn enroll_in_project(
    api: std::net::SocketAddr,
    quic: std::net::SocketAddr,
    node: &str,
    state_dir: &Path,
    project: Option<&str>,
) -> Result<()> {
    let t = client(api)
        .in_project(project.map(str::to_owned))
        .create_token(Duration::from_secs(600))
        .await?;
    let id = enroll(&EnrollOptions {
        coordinator: quic.to_string(),
        token: t.token,
        ca_pin: t.ca_hash.parse::<CaPin>()?,
        node: node.to_owned(),
        role: Role::Hypervisor,
        timeout: Duration::from_secs(20),
        local: None,
    })
    .await?;
    id.save(state_dir)?;
    Ok(())
}

/// An agent running in this process.
#[derive(Debug)]
pub struct InProcessAgent {
    /// Its fake driver.
    pub fake: Arc<FakeDriver>,
    /// Stops it (drain).
    pub shutdown: CancellationToken,
    /// Its task.
    pub task: tokio::task::JoinHandle<Result<(), ferric_agent::AgentError>>,
}

impl InProcessAgent {
    /// Drains the agent and checks it stopped without an error.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.task.await.context("agent task panicked")??;
        Ok(())
    }
}

/// Enrolls `node` into the coordinator (in-process) with its state in `dir/node`; returns
/// that state directory.
pub async fn enroll_node(
    coord: &ferric_coordinator::Running,
    dir: &Path,
    node: &str,
) -> Result<PathBuf> {
    let state = dir.join(node);
    // A coordinator listening on every address is dialled on loopback.
    let mut link = coord.listen;
    if link.ip().is_unspecified() {
        link.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    enroll_in_process(coord.api, link, node, &state).await?;
    Ok(state)
}

/// Enrolls `node` (state in `dir/node`) and starts it with a fresh fake driver.
pub async fn enrolled_agent(
    coord: &ferric_coordinator::Running,
    dir: &Path,
    node: &str,
) -> Result<InProcessAgent> {
    let state = enroll_node(coord, dir, node).await?;
    let fake = Arc::new(FakeDriver::new());
    Ok(spawn_agent(agent_config(&state, fake.clone()), fake))
}

/// Enrolls the management agent `mgmt` (state in `dir/mgmt`) and starts it driving BMCs over
/// IPMI through `ipmi`, reading them every `poll` (the agent's default when `None`).
pub async fn management_agent(
    coord: &ferric_coordinator::Running,
    dir: &Path,
    ipmi: ferric_agent::bmc::ipmi::IpmiClient,
    poll: Option<Duration>,
) -> Result<InProcessAgent> {
    let state = enroll_node(coord, dir, "mgmt").await?;
    Ok(bmc_agent(&state, ipmi, poll, &[]))
}

/// [`management_agent`] that may tail console logs in `allow` (a lab rack's directory).
pub async fn management_agent_allowing(
    coord: &ferric_coordinator::Running,
    dir: &Path,
    ipmi: ferric_agent::bmc::ipmi::IpmiClient,
    allow: &[&Path],
) -> Result<InProcessAgent> {
    let state = enroll_node(coord, dir, "mgmt").await?;
    Ok(bmc_agent(&state, ipmi, None, allow))
}

/// Starts the enrolled agent in `state` driving BMCs over IPMI through `ipmi` and over
/// Redfish with the default client (pinned certificates only) (read every
/// `poll`, the agent's default when `None`), with a fake for everything else; it may tail
/// console logs in `allow` (besides the default directory).
pub fn bmc_agent(
    state: &Path,
    ipmi: ferric_agent::bmc::ipmi::IpmiClient,
    poll: Option<Duration>,
    allow: &[&Path],
) -> InProcessAgent {
    use ferric_agent::bmc::control::{IpmiBmcs, POWER_SETTLE};
    use ferric_agent::bmc::redfish::{Bmcs, RedfishBmcs};
    let fake = Arc::new(FakeDriver::new());
    let mut cfg = agent_config(state, fake.clone());
    cfg.drivers.bmc = Arc::new(Bmcs::new(
        IpmiBmcs::new(ipmi, POWER_SETTLE),
        RedfishBmcs::new(ferric_redfish::Client::default()),
    ));
    if let Some(poll) = poll {
        cfg.bmc_poll = poll;
    }
    if !allow.is_empty() {
        cfg.console_dirs = ferric_agent::paths::PathPolicy::new(
            ferric_agent::console::DEFAULT_DIRS
                .iter()
                .map(std::path::PathBuf::from)
                .chain(allow.iter().map(|p| p.to_path_buf())),
        );
    }
    spawn_agent(cfg, fake)
}

/// Agent config for tests: fast backoff, fixed telemetry sampler.
pub fn agent_config(state_dir: &Path, fake: Arc<FakeDriver>) -> ferric_agent::Config {
    let mut cfg = ferric_agent::Config::new(
        state_dir.to_owned(),
        Drivers::fake(fake),
        Arc::new(FixedSampler::small()),
    );
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.drain_grace = Duration::from_secs(5);
    cfg
}

/// Starts an enrolled agent in this process.
pub fn spawn_agent(cfg: ferric_agent::Config, fake: Arc<FakeDriver>) -> InProcessAgent {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ferric_agent::run(cfg, shutdown.clone()));
    InProcessAgent {
        fake,
        shutdown,
        task,
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until plan `id` has finished and returns its status JSON.
pub async fn wait_plan_finished(c: &Client, id: u64, limit: Duration) -> Result<serde_json::Value> {
    wait_for(limit, &format!("plan {id} to finish"), || async {
        let s = c.plan(id).await?;
        let st = s["plan"]["state"].as_str().unwrap_or("").to_owned();
        Ok((st == "succeeded" || st == "failed").then_some(s))
    })
    .await
}

/// The `(seq, step, kind)` triples of a plan status, kind as `started`/`done`/`failed`/`progress`.
pub fn event_list(status: &serde_json::Value) -> Vec<(u64, u64, String)> {
    status["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let kind = match &e["kind"] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Object(o) => {
                            o.keys().next().cloned().unwrap_or_default()
                        }
                        other => other.to_string(),
                    };
                    (
                        e["seq"].as_u64().unwrap_or(u64::MAX),
                        e["step"].as_u64().unwrap_or(u64::MAX),
                        kind,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The event list a plan of `steps` steps has when each step started once and finished.
pub fn clean_run(steps: u64) -> Vec<(u64, u64, String)> {
    (0..steps)
        .flat_map(|i| {
            [
                (2 * i, i, "started".to_owned()),
                (2 * i + 1, i, "done".to_owned()),
            ]
        })
        .collect()
}

/// A path to a binary built from this workspace (`ferric`, `ferric-agent`). The test command
/// (`cargo xtask test`) builds them before the tests run; after a plain `cargo test`, run
/// `cargo build --workspace --bins` first.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // A test runs from target/<profile>/deps/, a benchmark binary from target/<profile>/.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .collect();
    candidates.iter().find(|p| p.exists()).cloned().with_context(|| {
        format!(
            "{name} is not built (looked at {candidates:?}): run `cargo build --workspace --bins` (cargo xtask test does)"
        )
    })
}

/// A child process killed (SIGKILL) when dropped, with its output in a log file.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// Log file of stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `program args…`, logging to `log`.
    pub fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args).env("RUST_LOG", "info,quinn=warn");
        Self::spawn_command(cmd, log)
    }

    /// Spawns a prepared command (its arguments and environment set), logging to `log`.
    pub fn spawn_command(mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        Ok(Self {
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// Kills the process at once (SIGKILL): no drain, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("not running")
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if std::time::Instant::now() >= deadline {
                let _ = c.kill();
                bail!("process did not exit within {limit:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `ferric` CLI against the coordinator at `api`, with extra environment; returns
/// (success, stdout, stderr).
pub async fn cli(
    api: std::net::SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(bin("ferric").expect("the ferric binary"));
    // The machine's own config files are not this test's.
    cmd.env_remove("FERRIC_TOKEN")
        .env_remove("FERRIC_CA")
        .env_remove("FERRIC_PROJECT")
        .env("FERRIC_CONFIG", "/dev/null");
    if let Some(t) = admin_token(api) {
        cmd.env("FERRIC_TOKEN", t);
    }
    if let Some(ca) = ca_file(api) {
        cmd.env("FERRIC_CA", ca);
    }
    let out = cmd
        .arg("--api")
        .arg(base_url(api))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run ferric");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `ferric` CLI and returns its stdout; panics, with its stderr, when it fails.
pub async fn cli_ok(api: std::net::SocketAddr, args: &[&str]) -> String {
    let (success, out, err) = cli(api, args, &[]).await;
    assert!(success, "ferric {args:?} failed: {err}");
    out
}

/// `ferric node enroll NODE --bmc ADDRESS` with the password from an environment variable;
/// returns (success, stdout, stderr).
pub async fn cli_enroll_bmc(
    api: std::net::SocketAddr,
    node: &str,
    address: &str,
    password: &str,
) -> (bool, String, String) {
    let args = [
        "node",
        "enroll",
        node,
        "--bmc",
        address,
        "--password-env",
        "BMC_PW",
    ];
    cli(api, &args, &[("BMC_PW", password)]).await
}

/// Enrolls a lab rack's node with the coordinator by its BMC and MAC, and sets it to boot
/// from the network (`ferric node enroll … --mac`, `ferric node bootdev … pxe`).
pub async fn enroll_lab_node(
    api: std::net::SocketAddr,
    rack: &ferric_lab::Rack,
    node: &ferric_lab::Node,
) -> Result<()> {
    let bmc = ferric_lab::bmc_address(rack, node);
    let (ok, _, err) = cli(
        api,
        &[
            "node",
            "enroll",
            &node.name,
            "--bmc",
            &bmc,
            "--password-env",
            "PW",
            "--mac",
            &node.mac,
            "--boot-mode",
            // A node with both firmwares is enrolled as what servers of today boot.
            match node.firmware {
                ferric_lab::Firmware::Both => "uefi",
                f => f.as_str(),
            },
        ],
        &[("PW", rack.bmc_password.as_str())],
    )
    .await;
    if !ok {
        bail!("ferric node enroll {}: {err}", node.name);
    }
    cli_ok(api, &["node", "bootdev", &node.name, "pxe"]).await;
    Ok(())
}

/// What `ferric node power ACTION NODE` prints, trimmed; panics when it fails.
pub async fn cli_power(api: std::net::SocketAddr, action: &str, node: &str) -> String {
    cli_ok(api, &["node", "power", action, node])
        .await
        .trim()
        .to_owned()
}

/// A free loopback port for UDP and TCP (bound and released; fine for tests on one host).
pub fn free_port() -> Result<u16> {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = udp.local_addr()?.port();
    drop(udp);
    Ok(port)
}
