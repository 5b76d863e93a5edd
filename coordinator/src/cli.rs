//! The `ferric` command line: the coordinator server and the client commands that talk to its
//! HTTP API.

use crate::api::{
    CreatePlans, CreateToken, CreatedPlan, CreatedToken, NodeDetail, NodeView, PlanFile,
};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Ferric provisions and runs a datacenter's machines from one place.
#[derive(Debug, Parser)]
#[command(name = "ferric", version, about)]
pub struct Cli {
    /// Coordinator API address.
    #[arg(
        long,
        global = true,
        env = "FERRIC_API",
        default_value = "http://127.0.0.1:7180"
    )]
    pub api: String,
    /// Output format of client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (store, CA, agent link, API).
    Coordinator(CoordinatorArgs),
    /// Bootstrap tokens for enrolling agents.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Enrolled nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Plans.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Live telemetry.
    #[command(subcommand)]
    Telemetry(TelemetryCmd),
    /// Guests on hypervisor hosts (desired state; placed by the coordinator).
    #[command(subcommand)]
    Guest(GuestCmd),
    /// Hypervisor hosts with capacity and use.
    #[command(subcommand)]
    Host(HostCmd),
    /// Disk images in the coordinator's store.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Racks of virtual bare metal on this machine (QEMU machines with emulated BMCs).
    Lab {
        /// Rack name.
        #[arg(long, global = true, default_value = "rack1")]
        name: String,
        /// Where racks keep their files.
        #[arg(
            long,
            global = true,
            env = "FERRIC_LAB_ROOT",
            default_value = "/var/lib/ferric/lab"
        )]
        root: PathBuf,
        /// What to do.
        #[command(subcommand)]
        cmd: crate::lab_cli::LabCmd,
    },
}

/// `ferric image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Upload an image file; it is inspected here and again by the coordinator, and refused
    /// when unsafe (backing files, external data files, headers that lie…).
    Upload {
        /// The image file.
        file: PathBuf,
        /// Name to store it under.
        #[arg(long)]
        name: String,
        /// Declared format (raw, qcow2, …); content that differs is refused.
        #[arg(long)]
        format: Option<String>,
        /// Expected checksum of the file, `sha256:HEX` or `sha512:HEX`.
        #[arg(long)]
        checksum: Option<String>,
    },
    /// List stored images.
    List,
    /// Show one image.
    Show {
        /// Name.
        name: String,
    },
    /// Delete an image (its content goes when no other name refers to it).
    Delete {
        /// Name.
        name: String,
    },
    /// Write an image (a file or an http(s) URL) to a block device or a file here, with the
    /// pipeline the deploy ramdisk uses: inspected first, decoded as it streams, zeros
    /// skipped, checksum verified before success.
    Write {
        /// Image file or URL (for example `http://ctl:7180/images/sha256/<hex>`).
        source: String,
        /// Block device or file to write the disk to.
        target: PathBuf,
        /// Declared format; content that differs is refused.
        #[arg(long)]
        format: Option<String>,
        /// Expected checksum of the image, `sha256:HEX` or `sha512:HEX`.
        #[arg(long)]
        checksum: Option<String>,
        /// Write with O_DIRECT (the default on a block device).
        #[arg(long, conflicts_with = "buffered")]
        direct: bool,
        /// Write through the page cache (the default on a file).
        #[arg(long)]
        buffered: bool,
    },
}

/// `ferric guest …`.
#[derive(Debug, Subcommand)]
pub enum GuestCmd {
    /// Place a guest on a host and create it there.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory, e.g. `512M` or `2G`.
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        memory: u64,
        /// Root disk, e.g. `10G`.
        #[arg(long, default_value = "10G", value_parser = parse_size)]
        disk: u64,
        /// Bridge for a NIC (repeat for several).
        #[arg(long = "net")]
        nets: Vec<String>,
        /// Boot this kernel (a path on the host) instead of the disk.
        #[arg(long, requires = "initrd")]
        kernel: Option<String>,
        /// Initrd for `--kernel`.
        #[arg(long, requires = "kernel")]
        initrd: Option<String>,
        /// Kernel command line for `--kernel`.
        #[arg(long, default_value = "console=ttyS0")]
        cmdline: String,
        /// Storage pool of the root volume on the host.
        #[arg(long, default_value = crate::guests::ROOT_POOL)]
        pool: String,
        /// Image in the store to clone the root disk from (the guest boots from that disk
        /// unless --kernel is given).
        #[arg(long)]
        image: Option<String>,
    },
    /// List guests with desired and observed state.
    List,
    /// Show one guest.
    Show {
        /// Name.
        name: String,
    },
    /// Start a guest.
    Start {
        /// Name.
        name: String,
    },
    /// Shut a guest down (ACPI, then destroy after the host's grace period).
    Stop {
        /// Name.
        name: String,
    },
    /// Delete a guest and its root volume.
    Delete {
        /// Name.
        name: String,
    },
}

/// `ferric host …`.
#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hypervisor hosts.
    List,
}

/// Parses `512M`, `2G`, `1T` (binary units) or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("`{s}`: unit must be K, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512M or 10G"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))
}

/// `ferric coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Data directory (store, CA).
    #[arg(long, env = "FERRIC_DATA_DIR", default_value = "/var/lib/ferric")]
    pub data_dir: PathBuf,
    /// UDP address agents dial.
    #[arg(long, default_value = "0.0.0.0:7443")]
    pub listen: SocketAddr,
    /// TCP address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7180")]
    pub api_listen: SocketAddr,
    /// Base URL agents fetch images from (this server's HTTP as they reach it);
    /// `http://<api-listen>` when absent.
    #[arg(long)]
    pub images_url: Option<String>,
    /// Telemetry interval told to agents.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub telemetry_interval: Duration,
    /// How long a drain waits for connections on SIGTERM.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
}

/// `ferric token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a single-use bootstrap token.
    Create {
        /// Lifetime.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// `ferric node …`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List,
    /// Show one node.
    Show {
        /// Node name.
        name: String,
    },
    /// Enroll a bare-metal node by its BMC. The password comes from --password-file,
    /// --password-env, or a prompt (or one line on standard input when it is not a terminal).
    Enroll {
        /// Node name (a DNS label).
        name: String,
        /// BMC address, `ipmi://USER@HOST[:PORT]`.
        #[arg(long)]
        bmc: String,
        /// Agent that reaches the BMC (needed when several are enrolled).
        #[arg(long)]
        via: Option<String>,
        /// Read the password from this file (first line).
        #[arg(long, conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// Read the password from this environment variable.
        #[arg(long)]
        password_env: Option<String>,
        /// MAC address of a NIC of the node (repeat for several).
        #[arg(long = "mac")]
        macs: Vec<String>,
    },
    /// Power a bare-metal node on, off, cycle, reset, soft (ACPI) off, or read its status.
    Power {
        /// Action.
        #[arg(value_enum)]
        action: PowerArg,
        /// Node name.
        name: String,
        /// Return once the plan is pushed instead of waiting for the result.
        #[arg(long)]
        no_wait: bool,
    },
    /// Set a bare-metal node's next boot device.
    Bootdev {
        /// Node name.
        name: String,
        /// Device.
        #[arg(value_enum)]
        device: BootdevArg,
        /// For every boot, not just the next one.
        #[arg(long)]
        persistent: bool,
        /// UEFI boot (legacy BIOS otherwise).
        #[arg(long)]
        uefi: bool,
    },
    /// Read every sensor of a bare-metal node's BMC.
    Sensors {
        /// Node name.
        name: String,
    },
    /// Read a bare-metal node's System Event Log (hardware events the BMC logged).
    Sel {
        /// Node name.
        name: String,
        /// Clear the log once it has been read.
        #[arg(long)]
        clear: bool,
    },
    /// Forget a bare-metal node (the machine itself is not touched).
    Delete {
        /// Node name.
        name: String,
    },
}

/// Power actions on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PowerArg {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Off, then on.
    Cycle,
    /// Hard reset.
    Reset,
    /// ACPI soft off (the OS shuts down).
    Soft,
    /// Read the power state.
    Status,
}

impl From<PowerArg> for ferric_proto::plan::PowerAction {
    fn from(a: PowerArg) -> Self {
        use ferric_proto::plan::PowerAction as P;
        match a {
            PowerArg::On => P::On,
            PowerArg::Off => P::Off,
            PowerArg::Cycle => P::Cycle,
            PowerArg::Reset => P::Reset,
            PowerArg::Soft => P::Soft,
            PowerArg::Status => P::Status,
        }
    }
}

/// Boot devices on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BootdevArg {
    /// Network boot.
    Pxe,
    /// Local disk.
    Disk,
    /// Firmware setup.
    Bios,
    /// Optical media.
    Cdrom,
}

impl From<BootdevArg> for ferric_proto::plan::BootDevice {
    fn from(a: BootdevArg) -> Self {
        use ferric_proto::plan::BootDevice as B;
        match a {
            BootdevArg::Pxe => B::Pxe,
            BootdevArg::Disk => B::Disk,
            BootdevArg::Bios => B::Bios,
            BootdevArg::Cdrom => B::Cdrom,
        }
    }
}

/// How long the CLI waits for a BMC plan.
const BMC_WAIT: Duration = Duration::from_secs(180);

fn read_password(file: Option<&std::path::Path>, env: Option<&str>) -> Result<String> {
    let pw = if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the password file {}", f.display()))?;
        text.lines().next().unwrap_or("").to_owned()
    } else if let Some(var) = env {
        std::env::var(var)
            .with_context(|| format!("environment variable {var} holds no password"))?
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        rpassword::prompt_password("BMC password: ").context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if pw.is_empty() {
        bail!("the BMC password is empty");
    }
    Ok(pw)
}

/// Waits for a plan to finish; returns its status, or fails with the step's error.
async fn wait_plan(client: &Client, id: u64, wait: Duration) -> Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = client.plan(id).await?;
        match s["plan"]["state"].as_str().unwrap_or("") {
            "succeeded" => return Ok(s),
            "failed" => {
                let why = s["events"]
                    .as_array()
                    .and_then(|e| e.iter().rev().find(|e| e["kind"].get("failed").is_some()))
                    .map(describe_event)
                    .unwrap_or_else(|| "failed".into());
                bail!("plan {id} {why}");
            }
            st if tokio::time::Instant::now() >= deadline => bail!(
                "plan {id} is still `{st}` after {}; follow it with `ferric plan status {id} --wait 5m`",
                humantime::format_duration(wait)
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The `output` of a finished plan's events.
fn plan_output(status: &serde_json::Value) -> Option<serde_json::Value> {
    status["events"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e["kind"].get("output").cloned())
}

/// `ferric plan …`.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Store a plan for nodes and push it to them.
    Apply {
        /// Plan file (YAML or JSON).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Node to run it on (repeat for several; one plan each).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
    /// Show a plan and its events.
    Status {
        /// Plan id.
        id: u64,
        /// Wait until the plan finishes (at most this long).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// List recent plans.
    List {
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
    },
}

/// `ferric telemetry …`.
#[derive(Debug, Subcommand)]
pub enum TelemetryCmd {
    /// Print a node's samples as they arrive.
    Watch {
        /// Node name.
        node: String,
        /// Stop after this many samples.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// HTTP client of the API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        // reqwest is built without a TLS provider of its own: Ferric uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let body = resp.bytes().await.context("reading the API response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{msg} (HTTP {status})");
        }
        serde_json::from_slice(&body).context("decoding the API response")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator API at {}", self.base))?;
        self.decode(resp).await
    }

    /// POST JSON, decode JSON.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator API at {}", self.base))?;
        self.decode(resp).await
    }

    /// DELETE, decode JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .delete(self.url(path))
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator API at {}", self.base))?;
        self.decode(resp).await
    }

    /// Creates a bootstrap token.
    pub async fn create_token(&self, ttl: Duration) -> Result<CreatedToken> {
        self.post(
            "/v1/tokens",
            &CreateToken {
                ttl_secs: ttl.as_secs(),
            },
        )
        .await
    }

    /// Applies a plan to nodes.
    pub async fn apply(&self, nodes: Vec<String>, plan: PlanFile) -> Result<Vec<CreatedPlan>> {
        self.post("/v1/plans", &CreatePlans { nodes, plan }).await
    }

    /// A plan's status as JSON.
    pub async fn plan(&self, id: u64) -> Result<serde_json::Value> {
        self.get(&format!("/v1/plans/{id}")).await
    }

    /// Streams an image file to the store, showing progress on a terminal.
    pub async fn upload_image(
        &self,
        file: &std::path::Path,
        name: &str,
        format: Option<&str>,
        checksum: Option<&str>,
    ) -> Result<crate::images::ImageView> {
        use futures_util::StreamExt;
        use std::io::IsTerminal;
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let total = f.metadata().await?.len();
        let started = std::time::Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut sent = 0u64;
        let mut shown = std::time::Instant::now();
        let label = file.display().to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                if tty && (shown.elapsed().as_millis() >= 200 || sent == total) {
                    shown = std::time::Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    let rate = sent as f64 / secs;
                    let eta = (total.saturating_sub(sent)) as f64 / rate.max(1.0);
                    eprint!(
                        "\r{label}: {} / {} ({:.0}%), {}/s, ETA {:.0}s   ",
                        human_bytes(sent),
                        human_bytes(total),
                        sent as f64 * 100.0 / (total.max(1) as f64),
                        human_bytes(rate as u64),
                        eta
                    );
                    if sent == total {
                        eprintln!();
                    }
                }
            }
            chunk
        });
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(f) = format {
            query.push(("format", f));
        }
        if let Some(c) = checksum {
            query.push(("checksum", c));
        }
        let resp = self
            .http
            .put(self.url(&format!("/v1/images/{name}")))
            .query(&query)
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator API at {}", self.base))?;
        self.decode(resp).await
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r));
    }
    out
}

fn ago(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) => {
            let d = (crate::now_ms() - ms).max(0) as u64;
            format!("{}s ago", d / 1000)
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn bmc_cmd(client: &Client, cmd: NodeCmd, json: bool) -> Result<()> {
    use crate::bmcs::{BmcAction, BmcView, BootdevRequest, EnrollBmcNode, PowerRequest};
    match cmd {
        NodeCmd::Enroll {
            name,
            bmc,
            via,
            password_file,
            password_env,
            macs,
        } => {
            // Catch a malformed address before asking for a password.
            ferric_proto::msg::BmcAddress::parse(&bmc).map_err(|e| anyhow::anyhow!(e))?;
            let password = read_password(password_file.as_deref(), password_env.as_deref())?;
            let v: BmcView = client
                .post(
                    "/v1/nodes",
                    &EnrollBmcNode {
                        name,
                        bmc,
                        password,
                        via,
                        macs,
                    },
                )
                .await?;
            if json {
                return print_json(&v);
            }
            println!(
                "node {} enrolled: BMC {} driven by agent `{}`",
                v.node, v.address, v.via
            );
        }
        NodeCmd::Power {
            action,
            name,
            no_wait,
        } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/power"),
                    &PowerRequest {
                        action: action.into(),
                    },
                )
                .await?;
            if no_wait {
                println!(
                    "node {name}: plan {} pushed to `{}` (ferric plan status {} --wait 2m)",
                    a.plan, a.via, a.plan
                );
                return Ok(());
            }
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            if json {
                return print_json(&status);
            }
            let on = plan_output(&status)
                .and_then(|o| o["power"]["on"].as_bool())
                .context("the plan finished without reporting the power state")?;
            println!("node {name}: power {}", if on { "on" } else { "off" });
        }
        NodeCmd::Bootdev {
            name,
            device,
            persistent,
            uefi,
        } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/bootdev"),
                    &BootdevRequest {
                        device: device.into(),
                        persistent,
                        uefi,
                    },
                )
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            if json {
                return print_json(&status);
            }
            println!(
                "node {name}: next boot from {}{}{}",
                format!("{device:?}").to_lowercase(),
                if persistent { ", persistent" } else { ", once" },
                if uefi { ", UEFI" } else { "" }
            );
        }
        NodeCmd::Sensors { name } => {
            let a: BmcAction = client
                .post(&format!("/v1/nodes/{name}/sensors"), &serde_json::json!({}))
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            let readings = plan_output(&status)
                .and_then(|o| o.get("sensors").cloned())
                .context("the plan finished without sensor readings")?;
            if json {
                return print_json(&readings);
            }
            if readings.as_array().is_none_or(Vec::is_empty) {
                println!("node {name}: the BMC reports no sensors");
                return Ok(());
            }
            let rows = readings
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    vec![
                        r["name"].as_str().unwrap_or("").to_owned(),
                        r["kind"].as_str().unwrap_or("").to_owned(),
                        r["value"]
                            .as_f64()
                            .map_or("n/a".into(), |v| format!("{v:.2}")),
                        r["unit"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            println!("{}", table(&["SENSOR", "TYPE", "VALUE", "UNIT"], rows));
        }
        NodeCmd::Sel { name, clear } => {
            let a: BmcAction = client
                .post(
                    &format!("/v1/nodes/{name}/sel"),
                    &crate::bmcs::SelRequest { clear },
                )
                .await?;
            let status = wait_plan(client, a.plan, BMC_WAIT).await?;
            // Every entry either step read (the clearing step's read may hold newer ones).
            let mut list: Vec<serde_json::Value> = Vec::new();
            let outputs: Vec<&serde_json::Value> = status["events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["kind"]["output"].get("sel"))
                        .collect()
                })
                .unwrap_or_default();
            if outputs.is_empty() {
                bail!("the plan finished without the event log");
            }
            for e in outputs.iter().filter_map(|o| o.as_array()).flatten() {
                if !list.iter().any(|x| x["raw"] == e["raw"]) {
                    list.push(e.clone());
                }
            }
            if json {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|e| {
                    vec![
                        e["id"].to_string(),
                        e["at_s"].as_u64().map_or("-".into(), |t| {
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + Duration::from_secs(t),
                            )
                            .to_string()
                        }),
                        format!(
                            "{} #0x{:02x}",
                            e["sensor"].as_str().unwrap_or(""),
                            e["sensor_number"].as_u64().unwrap_or(0)
                        ),
                        e["event"].as_str().unwrap_or("").to_owned(),
                        if e["asserted"] == true {
                            "Asserted"
                        } else {
                            "Deasserted"
                        }
                        .to_owned(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["ID", "TIME", "SENSOR", "EVENT", "DIRECTION"], rows)
            );
            if clear {
                println!(
                    "node {name}: event log cleared ({} entries read)",
                    list.len()
                );
            }
        }
        NodeCmd::Delete { name } => {
            let v: BmcView = client.delete(&format!("/v1/nodes/{name}")).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "node {name} removed (BMC {} is no longer driven)",
                v.address
            );
        }
        NodeCmd::List | NodeCmd::Show { .. } => bail!("not a BMC command"),
    }
    Ok(())
}

/// Renders one event row (JSON as served by the API) for tables.
pub fn describe_event(e: &serde_json::Value) -> String {
    let kind = &e["kind"];
    if kind == "started" {
        return "started".into();
    }
    if let Some(d) = kind.get("done") {
        return if d["changed"] == true {
            "done (changed)".into()
        } else {
            "done (unchanged)".into()
        };
    }
    if let Some(f) = kind.get("failed") {
        return format!(
            "failed: {} — {}",
            f["kind"].as_str().unwrap_or("?"),
            f["message"].as_str().unwrap_or("")
        );
    }
    if let Some(p) = kind.get("progress") {
        return format!("progress {}/{}", p["done"], p["total"]);
    }
    if let Some(o) = kind.get("output") {
        if let Some(p) = o.get("power") {
            return format!("power {}", if p["on"] == true { "on" } else { "off" });
        }
        if let Some(s) = o.get("sensors").and_then(|s| s.as_array()) {
            return format!("{} sensor readings", s.len());
        }
    }
    kind.to_string()
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn image_cmd(client: &Client, cmd: ImageCmd, json: bool) -> Result<()> {
    use crate::images::ImageView;
    let show = |i: &ImageView| {
        format!(
            "name:         {}\nformat:       {}{}\nvirtual size: {}\nsize:         {}\nsha256:       {}\nsha512:       {}\ndetails:      {}\npath:         {}",
            i.name,
            i.format,
            i.wrapper
                .as_deref()
                .map(|w| format!(" (in {w})"))
                .unwrap_or_default(),
            i.virtual_size
                .map(human_bytes)
                .unwrap_or_else(|| "-".into()),
            human_bytes(i.size),
            i.sha256,
            i.sha512,
            i.details.join(" "),
            i.path,
        )
    };
    match cmd {
        ImageCmd::Upload {
            file,
            name,
            format,
            checksum,
        } => {
            crate::images::check_name(&name).map_err(anyhow::Error::msg)?;
            // Refuse here what the coordinator would refuse, before sending a byte.
            let declared = ferric_images::inspect::Format::parse_declared(format.as_deref())
                .map_err(anyhow::Error::msg)?;
            let mut f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let inspection = match declared {
                Some(d) => ferric_images::inspect::inspect_as(&mut f, d),
                None => ferric_images::inspect::inspect(&mut f),
            }
            .with_context(|| format!("{} refused", file.display()))?;
            drop(f);
            // A taken name is refused before a byte of a large file is sent.
            if client
                .get::<ImageView>(&format!("/v1/images/{name}"))
                .await
                .is_ok()
            {
                bail!("an image named `{name}` exists; delete it first");
            }
            let view = client
                .upload_image(&file, &name, format.as_deref(), checksum.as_deref())
                .await?;
            if json {
                return print_json(&view);
            }
            eprintln!(
                "{} stored as `{}` ({}, {})",
                file.display(),
                view.name,
                inspection.format.as_str(),
                human_bytes(view.size)
            );
            println!("{}", show(&view));
        }
        ImageCmd::Write {
            source,
            target,
            format,
            checksum,
            direct,
            buffered,
        } => {
            let direct = match (direct, buffered) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let report = write_image_here(&source, &target, format, checksum, direct).await?;
            if json {
                return print_json(&serde_json::json!({
                    "format": report.inspection.format,
                    "wrapper": report.inspection.wrapper,
                    "virtual_size": report.virtual_size,
                    "written": report.written,
                    "zeros_skipped": report.zeros_skipped,
                    "digest": report.digest,
                    "source_bytes": report.source_bytes,
                    "resumes": report.resumes,
                }));
            }
            println!(
                "{} written to {}: {} of disk, {} of data written, {} zeros skipped{}{}",
                source,
                target.display(),
                human_bytes(report.virtual_size),
                human_bytes(report.written),
                human_bytes(report.zeros_skipped),
                report
                    .digest
                    .map(|d| format!(", checksum {d} verified"))
                    .unwrap_or_default(),
                if report.resumes > 0 {
                    format!(", {} resumed transfers", report.resumes)
                } else {
                    String::new()
                }
            );
        }
        ImageCmd::List => {
            let images: Vec<ImageView> = client.get("/v1/images").await?;
            if json {
                return print_json(&images);
            }
            let rows = images
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        match &i.wrapper {
                            Some(w) => format!("{}+{w}", i.format),
                            None => i.format.clone(),
                        },
                        i.virtual_size
                            .map(human_bytes)
                            .unwrap_or_else(|| "-".into()),
                        human_bytes(i.size),
                        format!("sha256:{}", &i.sha256[..16.min(i.sha256.len())]),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["IMAGE", "FORMAT", "VIRTUAL", "SIZE", "CHECKSUM"], rows)
            );
        }
        ImageCmd::Show { name } => {
            let i: ImageView = client.get(&format!("/v1/images/{name}")).await?;
            if json {
                return print_json(&i);
            }
            println!("{}", show(&i));
        }
        ImageCmd::Delete { name } => {
            let i: ImageView = client.delete(&format!("/v1/images/{name}")).await?;
            if json {
                return print_json(&i);
            }
            println!("image `{}` deleted", i.name);
        }
    }
    Ok(())
}

/// `ferric image write`: the write pipeline on this machine, with progress on a terminal.
async fn write_image_here(
    source: &str,
    target: &std::path::Path,
    format: Option<String>,
    checksum: Option<String>,
    direct: Option<bool>,
) -> Result<ferric_images::write::WriteReport> {
    use ferric_images::write::{WriteOptions, write_image};
    use std::io::IsTerminal;
    let declared = ferric_images::inspect::Format::parse_declared(format.as_deref())
        .map_err(anyhow::Error::msg)?;
    let expected = checksum
        .as_deref()
        .map(ferric_images::source::Algo::parse_checksum)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let opts = WriteOptions {
        declared,
        expected,
        direct,
    };
    let src = ferric_images::source::ImageSource::parse(source);
    let target = target.to_owned();
    let tty = std::io::stderr().is_terminal();
    tokio::task::spawn_blocking(move || {
        let mut shown = std::time::Instant::now();
        let mut progress = |p: ferric_images::write::Progress| {
            if tty && shown.elapsed().as_millis() >= 200 {
                shown = std::time::Instant::now();
                let eta = p.eta();
                eprint!(
                    "\r{} / {} ({}/s{})   ",
                    human_bytes(p.done),
                    human_bytes(p.total),
                    human_bytes(p.bytes_per_sec() as u64),
                    if eta == Duration::MAX {
                        String::new()
                    } else {
                        format!(", ETA {}s", eta.as_secs())
                    }
                );
            }
        };
        let r = write_image(&src, &target, &opts, &mut progress);
        if tty {
            eprintln!();
        }
        r.with_context(|| format!("cannot write {src} to {}", target.display()))
    })
    .await
    .context("the write task failed")?
}

async fn guest_cmd(client: &Client, cmd: GuestCmd, json: bool) -> Result<()> {
    use crate::guests::{CreateGuest, GuestAction, GuestView};
    let action: GuestAction = match cmd {
        GuestCmd::Create {
            name,
            vcpus,
            memory,
            disk,
            nets,
            kernel,
            initrd,
            cmdline,
            pool,
            image,
        } => {
            let boot = match (kernel, initrd) {
                (Some(kernel), Some(initrd)) => ferric_proto::plan::GuestBoot::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                },
                _ => ferric_proto::plan::GuestBoot::Disk,
            };
            let body = CreateGuest {
                name,
                vcpus,
                memory_mib: memory >> 20,
                disk_bytes: disk,
                nets,
                boot,
                pool,
                image,
            };
            client.post("/v1/guests", &body).await?
        }
        GuestCmd::List => {
            let guests: Vec<GuestView> = client.get("/v1/guests").await?;
            if json {
                return print_json(&guests);
            }
            let rows = guests
                .into_iter()
                .map(|g| {
                    vec![
                        g.name,
                        g.host,
                        g.vcpus.to_string(),
                        g.memory_mib.to_string(),
                        (g.disk_bytes >> 30).to_string(),
                        g.desired,
                        g.observed,
                        g.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
                        if g.drift.is_empty() {
                            "-".into()
                        } else {
                            g.drift.join("; ")
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "GUEST", "HOST", "VCPUS", "MEM MiB", "DISK GiB", "DESIRED", "OBSERVED",
                        "CPU%", "DRIFT"
                    ],
                    rows
                )
            );
            return Ok(());
        }
        GuestCmd::Show { name } => {
            let g: GuestView = client.get(&format!("/v1/guests/{name}")).await?;
            if json {
                return print_json(&g);
            }
            println!(
                "guest:    {}\nhost:     {}\nvcpus:    {}\nmemory:   {} MiB\ndisk:     {} GiB\ndesired:  {}\nobserved: {}\ndrift:    {}\nplan:     {}",
                g.name,
                g.host,
                g.vcpus,
                g.memory_mib,
                g.disk_bytes >> 30,
                g.desired,
                g.observed,
                if g.drift.is_empty() {
                    "none".into()
                } else {
                    g.drift.join("; ")
                },
                g.last_plan.map_or("-".into(), |p| p.to_string())
            );
            return Ok(());
        }
        GuestCmd::Start { name } => {
            client
                .post(&format!("/v1/guests/{name}/start"), &serde_json::json!({}))
                .await?
        }
        GuestCmd::Stop { name } => {
            client
                .post(&format!("/v1/guests/{name}/stop"), &serde_json::json!({}))
                .await?
        }
        GuestCmd::Delete { name } => client.delete(&format!("/v1/guests/{name}")).await?,
    };
    if json {
        return print_json(&action);
    }
    println!(
        "guest {} on {}: plan {} pushed (ferric plan status {} --wait 2m)",
        action.guest, action.host, action.plan, action.plan
    );
    Ok(())
}

/// Runs a client command (everything but `coordinator`).
pub async fn run_client(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.api);
    let json = cli.output == Output::Json;
    match cli.command {
        Command::Coordinator(_) => {
            bail!("`ferric coordinator` runs the server; it is not a client command")
        }
        Command::Guest(cmd) => return guest_cmd(&client, cmd, json).await,
        Command::Image(cmd) => return image_cmd(&client, cmd, json).await,
        Command::Lab { name, root, cmd } => {
            return crate::lab_cli::run(&client, &root, &name, cmd, json).await;
        }
        Command::Host(HostCmd::List) => {
            let hosts: Vec<crate::placement::HostView> = client.get("/v1/hosts").await?;
            if json {
                return print_json(&hosts);
            }
            let rows = hosts
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        if h.connected {
                            "connected".into()
                        } else {
                            "offline".into()
                        },
                        format!(
                            "{}/{}",
                            h.vcpus_used,
                            (f64::from(h.cpus) * crate::placement::CPU_ALLOCATION_RATIO) as u64
                        ),
                        format!("{}/{}", h.mem_used_mib, h.mem_total_mib),
                        format!("{}/{}", h.disk_used_bytes >> 30, h.disk_free_bytes >> 30),
                        h.guests.to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "HOST",
                        "LINK",
                        "VCPUS USED/MAX",
                        "MEM MiB USED/TOTAL",
                        "DISK GiB USED/FREE",
                        "GUESTS"
                    ],
                    rows
                )
            );
        }
        Command::Token(TokenCmd::Create { ttl }) => {
            let t = client.create_token(ttl).await?;
            if json {
                return print_json(&t);
            }
            println!("token:   {}", t.token);
            println!(
                "expires: in {}",
                humantime::format_duration(Duration::from_secs(ttl.as_secs()))
            );
            println!("ca-hash: {}", t.ca_hash);
            println!();
            println!("enroll an agent with:");
            println!(
                "  ferric-agent enroll --coordinator HOST:7443 --token {} --ca-hash {} --node NAME",
                t.token, t.ca_hash
            );
        }
        Command::Node(
            cmd @ (NodeCmd::Enroll { .. }
            | NodeCmd::Power { .. }
            | NodeCmd::Bootdev { .. }
            | NodeCmd::Sensors { .. }
            | NodeCmd::Sel { .. }
            | NodeCmd::Delete { .. }),
        ) => return bmc_cmd(&client, cmd, json).await,
        Command::Node(NodeCmd::List) => {
            let nodes: Vec<NodeView> = client.get("/v1/nodes").await?;
            if json {
                return print_json(&nodes);
            }
            let rows = nodes
                .into_iter()
                .map(|n| {
                    vec![
                        n.name,
                        n.role.clone(),
                        if n.role == "baremetal" {
                            "-".into() // reached through its BMC, not a link of its own
                        } else if n.connected {
                            "connected".into()
                        } else {
                            "offline".into()
                        },
                        if n.role == "baremetal" {
                            "-".into()
                        } else {
                            ago(n.last_seen_ms)
                        },
                        n.capabilities.join(","),
                        match (&n.power, &n.flag) {
                            (Some(p), Some(_)) => format!("{p} (flagged)"),
                            (Some(p), None) => p.clone(),
                            (None, _) => String::new(),
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["NAME", "ROLE", "LINK", "LAST SEEN", "CAPABILITIES", "POWER"],
                    rows
                )
            );
        }
        Command::Node(NodeCmd::Show { name }) => {
            let d: NodeDetail = client.get(&format!("/v1/nodes/{name}")).await?;
            if json {
                return print_json(&d);
            }
            println!("name:         {}", d.node.name);
            println!("role:         {}", d.node.role);
            println!(
                "link:         {}",
                if d.node.connected {
                    "connected"
                } else {
                    "offline"
                }
            );
            println!("last seen:    {}", ago(d.node.last_seen_ms));
            println!("capabilities: {}", d.node.capabilities.join(", "));
            if let Some(b) = &d.bmc {
                println!("bmc:          {} (via agent `{}`)", b.address, b.via);
                if b.failing {
                    println!(
                        "power:        unknown — the BMC's reads fail ({})",
                        match (&b.power_observed, b.observed_at_ms) {
                            (Some(p), at @ Some(_)) => format!("last read {p}, {}", ago(at)),
                            _ => "never read".into(),
                        }
                    );
                } else {
                    println!(
                        "power:        {} (Ferric left it {}; read {})",
                        b.power_observed.as_deref().unwrap_or("unknown"),
                        b.power_expected.as_deref().unwrap_or("-"),
                        ago(b.observed_at_ms)
                    );
                }
                if let Some(f) = &b.flag {
                    println!("FLAG:         {f}");
                }
                if let Some(e) = &b.last_error {
                    println!("last error:   {e} ({})", ago(b.error_at_ms));
                }
                for r in &b.sensors {
                    println!(
                        "sensor:       {:<16} {:>10} {}",
                        r.name,
                        r.value.map_or("n/a".into(), |v| format!("{v:.2}")),
                        r.unit
                    );
                }
            }
            if let Some(t) = &d.telemetry {
                let s = &t["sample"];
                println!(
                    "telemetry:    cpu {:.1}%  mem {}/{} MiB  load {:.2}",
                    s["cpu_percent"].as_f64().unwrap_or(0.0),
                    s["mem_used_bytes"].as_u64().unwrap_or(0) >> 20,
                    s["mem_total_bytes"].as_u64().unwrap_or(0) >> 20,
                    s["load1"].as_f64().unwrap_or(0.0)
                );
            }
            let rows = d
                .plans
                .iter()
                .map(|p| {
                    vec![
                        p["id"].to_string(),
                        p["state"].as_str().unwrap_or("").to_owned(),
                        p["steps"].as_array().map_or(0, |s| s.len()).to_string(),
                    ]
                })
                .collect();
            println!("\n{}", table(&["PLAN", "STATE", "STEPS"], rows));
        }
        Command::Plan(PlanCmd::Apply { file, nodes }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let plan: PlanFile = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{} is not a valid plan file", file.display()))?;
            plan.to_steps()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let created = client.apply(nodes, plan).await?;
            if json {
                return print_json(&created);
            }
            let rows = created
                .into_iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.node,
                        if c.pushed {
                            "pushed".into()
                        } else {
                            "queued (agent offline)".into()
                        },
                    ]
                })
                .collect();
            println!("{}", table(&["PLAN", "NODE", "DELIVERY"], rows));
        }
        Command::Plan(PlanCmd::Status { id, wait }) => {
            let deadline = wait.map(|w| tokio::time::Instant::now() + w);
            let status = loop {
                let s = client.plan(id).await?;
                let st = s["plan"]["state"].as_str().unwrap_or("");
                let done = st == "succeeded" || st == "failed";
                match deadline {
                    Some(d) if !done && tokio::time::Instant::now() < d => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Some(_) if !done => bail!("plan {id} is still `{st}` after the wait"),
                    _ => break s,
                }
            };
            if json {
                return print_json(&status);
            }
            let p = &status["plan"];
            println!(
                "plan {} on {}: {}",
                p["id"],
                p["node"].as_str().unwrap_or(""),
                p["state"].as_str().unwrap_or("")
            );
            let steps = p["steps"].as_array().cloned().unwrap_or_default();
            let rows = status["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let step = e["step"].as_u64().unwrap_or(0) as usize;
                    let kind = steps
                        .get(step)
                        .and_then(|s| s["step"].as_object())
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default();
                    vec![
                        e["seq"].to_string(),
                        step.to_string(),
                        kind,
                        describe_event(e),
                    ]
                })
                .collect();
            println!("{}", table(&["SEQ", "STEP", "KIND", "EVENT"], rows));
            if p["state"] == "failed" {
                std::process::exit(3);
            }
        }
        Command::Plan(PlanCmd::List { node }) => {
            let path = match &node {
                Some(n) => format!("/v1/plans?node={n}"),
                None => "/v1/plans".into(),
            };
            let plans: Vec<serde_json::Value> = client.get(&path).await?;
            if json {
                return print_json(&plans);
            }
            let rows = plans
                .iter()
                .map(|p| {
                    vec![
                        p["id"].to_string(),
                        p["node"].as_str().unwrap_or("").to_owned(),
                        p["state"].as_str().unwrap_or("").to_owned(),
                        p["steps"].as_array().map_or(0, |s| s.len()).to_string(),
                    ]
                })
                .collect();
            println!("{}", table(&["PLAN", "NODE", "STATE", "STEPS"], rows));
        }
        Command::Telemetry(TelemetryCmd::Watch { node, count }) => {
            let detail: NodeDetail = client.get(&format!("/v1/nodes/{node}")).await?;
            if detail.node.role == "baremetal" {
                return watch_bmc(&client, &node, count, json).await;
            }
            let mut after = 0i64;
            let mut seen = 0usize;
            if !json {
                println!(
                    "{:<20}  {:<14}  {:>5}  {:>13}  {:>5}  NET RX/TX KiB",
                    "TIME", "NODE", "CPU%", "MEM MiB", "LOAD1"
                );
            }
            loop {
                let samples: Vec<serde_json::Value> = client
                    .get(&format!("/v1/nodes/{node}/telemetry?after_ms={after}"))
                    .await?;
                for t in samples {
                    after = after.max(t["received_at_ms"].as_i64().unwrap_or(after));
                    if json {
                        println!("{}", serde_json::to_string(&t)?);
                    } else {
                        let s = &t["sample"];
                        let (rx, tx) = s["nics"].as_array().map_or((0, 0), |n| {
                            n.iter().fold((0u64, 0u64), |(r, t), x| {
                                (
                                    r + x["rx_bytes"].as_u64().unwrap_or(0),
                                    t + x["tx_bytes"].as_u64().unwrap_or(0),
                                )
                            })
                        });
                        let secs = t["received_at_ms"].as_i64().unwrap_or(0) / 1000;
                        println!(
                            "{:<20}  {:<14}  {:>5.1}  {:>13}  {:>5.2}  {}/{}",
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + Duration::from_secs(secs as u64)
                            ),
                            node,
                            s["cpu_percent"].as_f64().unwrap_or(0.0),
                            format!(
                                "{}/{}",
                                s["mem_used_bytes"].as_u64().unwrap_or(0) >> 20,
                                s["mem_total_bytes"].as_u64().unwrap_or(0) >> 20
                            ),
                            s["load1"].as_f64().unwrap_or(0.0),
                            rx >> 10,
                            tx >> 10
                        );
                    }
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Ok(())
}

/// `ferric telemetry watch` of a bare-metal node: its BMC reads as the management agent polls.
async fn watch_bmc(client: &Client, node: &str, count: Option<usize>, json: bool) -> Result<()> {
    let mut after = 0i64;
    let mut seen = 0usize;
    if !json {
        println!(
            "{:<20}  {:<14}  {:<7}  SENSORS (BMC)",
            "TIME", "NODE", "POWER"
        );
    }
    loop {
        let reads: Vec<serde_json::Value> = client
            .get(&format!("/v1/nodes/{node}/telemetry?after_ms={after}"))
            .await?;
        for r in reads {
            after = after.max(r["received_at_ms"].as_i64().unwrap_or(after));
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let b = &r["bmc"];
                let power = match b["power_on"].as_bool() {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "unknown",
                };
                let detail = match b["error"].as_str() {
                    Some(e) => format!("error: {e}"),
                    None => b["sensors"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|x| {
                                    format!(
                                        "{} {} {}",
                                        x["name"].as_str().unwrap_or("?"),
                                        x["value"]
                                            .as_f64()
                                            .map_or("n/a".into(), |v| format!("{v:.2}")),
                                        x["unit"].as_str().unwrap_or("")
                                    )
                                    .trim_end()
                                    .to_owned()
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                };
                let secs = r["received_at_ms"].as_i64().unwrap_or(0) / 1000;
                println!(
                    "{:<20}  {:<14}  {:<7}  {}",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(secs as u64)
                    ),
                    node,
                    power,
                    if detail.is_empty() { "-" } else { &detail }
                );
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_binary_units_and_name_bad_input() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2X").unwrap_err().contains("unit must be"));
        assert!(parse_size("G").is_err());
        assert!(parse_size("0M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
