//! The `ferric` command line: the client commands that talk to a coordinator's HTTP API, a file
//! per resource, and the flags of the server (`ferric coordinator`, which the `ferric` binary
//! runs itself). Commands reach a coordinator through the API's [`Client`] and read the API's
//! documents (`ferric-api`) only: nothing here knows the store or the conductor. [`output`]
//! is the rendering shared by the commands.
//!
//! `ferric lab …` (racks of virtual bare metal) is compiled in with the `lab` feature only,
//! which the tests and the demo turn on and the production binary leaves out.

mod access;
pub mod config;
mod guest;
mod image;
#[cfg(feature = "lab")]
pub mod lab;
mod network;
mod node;
pub mod output;
mod plan;
mod provision;
mod telemetry;
mod token;
mod wait;

pub use access::{ApiTokenCmd, ProjectCmd};
pub use ferric_api::client::Client;
pub use guest::{GuestCmd, HostCmd};
pub use image::ImageCmd;
pub use node::NodeCmd;
pub use output::parse_size;
pub use plan::PlanCmd;
pub use telemetry::TelemetryCmd;
pub use token::TokenCmd;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `ferric --help` ends with: examples, where settings come from, and the exit status.
const AFTER_HELP: &str = "\
Examples:
  ferric coordinator --data-dir /var/lib/ferric          run the server (dashboard at its API address)
  ferric node list                                       every node, its state and power
  ferric node enroll n1 --bmc ipmi://admin@10.0.0.21 --password-file pw --mac 52:54:00:00:00:01
  ferric node manage n1 --wait                           verify its BMC, wait for `manageable`
  ferric node inspect n1 --wait && ferric node provide n1 --wait
  ferric image upload debian-12.qcow2 --name debian-12   with a progress bar
  ferric node deploy n1 --image debian-12 --wait         progress bar from the node's telemetry
  ferric plan status 42 --wait 5m -o yaml
  ferric completions bash > /etc/bash_completion.d/ferric

Settings: --api, --ca and --token, else FERRIC_API, FERRIC_CA and FERRIC_TOKEN, else the
config file (~/.config/ferric/config.toml, or /var/lib/ferric/admin.conf when readable):
  api = \"https://coordinator.example:7180\"
  ca = \"/etc/ferric/ca.pem\"
  token = \"ID.SECRET\"

Exit status:
  0  done
  1  an error: refused, unreachable, bad input (the message names it)
  2  the command line is not one ferric understands
  3  what was waited for ended failed (a plan, a node's provision state)
  4  what was waited for did not end within the wait";

/// Ferric provisions and runs a datacenter's machines from one place.
#[derive(Debug, Parser)]
#[command(name = "ferric", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Coordinator API address [default: the config file's, else https://127.0.0.1:7180].
    #[arg(long, global = true, env = "FERRIC_API")]
    pub api: Option<String>,
    /// The coordinator's CA certificate (its DATA_DIR/ca.pem), the only CA trusted for the
    /// API [default: the config file's, else /var/lib/ferric/ca.pem when readable, else the
    /// system's CAs].
    #[arg(long, global = true, env = "FERRIC_CA")]
    pub ca: Option<PathBuf>,
    /// API token (`ID.SECRET`) [default: the config file's].
    #[arg(long, global = true, env = "FERRIC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Config file with `api`, `ca` and `token` [default: ~/.config/ferric/config.toml, else
    /// /var/lib/ferric/admin.conf when readable].
    #[arg(long, global = true, env = "FERRIC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Act in this project (fleet tokens; a project token acts in its own).
    #[arg(long, global = true, env = "FERRIC_PROJECT")]
    pub project: Option<String>,
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
    /// JSON for programs (the API's own documents).
    Json,
    /// YAML of the same documents.
    Yaml,
}

/// A wait that ended with what it waited for failed: exit status 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EndedFailed(pub String);

/// A wait that ran out of time: exit status 4.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

/// The exit status of a failed command (see `ferric --help`).
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<EndedFailed>().is_some() {
        3
    } else if e.downcast_ref::<TimedOut>().is_some() {
        4
    } else {
        1
    }
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator (store, CA, agent link, API).
    Coordinator(CoordinatorArgs),
    /// Bootstrap tokens for enrolling agents.
    #[command(subcommand)]
    Token(TokenCmd),
    /// API tokens: who may use the API, with which role, in which project.
    #[command(subcommand)]
    ApiToken(ApiTokenCmd),
    /// Projects: what owns nodes and images (guests and plans belong to their node's).
    #[command(subcommand)]
    Project(ProjectCmd),
    /// The audit log: every mutating API call, newest first (admins).
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Which token this is, its role and its scope.
    Whoami,
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
    /// Print a shell completion script (`ferric completions bash > /etc/bash_completion.d/ferric`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Racks of virtual bare metal on this machine (QEMU machines with emulated BMCs).
    #[cfg(feature = "lab")]
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
        cmd: lab::LabCmd,
    },
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
    /// Base URL agents fetch images from (this server's API as they reach it, its host is
    /// added to the API certificate's names); `https://<api-listen>` when absent.
    #[arg(long)]
    pub images_url: Option<String>,
    /// Serve the API over plain HTTP instead of HTTPS: refused unless --api-listen is a
    /// loopback address (agents then cannot fetch images with their certificates).
    #[arg(long)]
    pub api_plain_http: bool,
    /// Another name or address the API's certificate carries (repeat) beside
    /// coordinator.ferric.internal, localhost, the loopback addresses, this host's name, the
    /// API address and the images URL's host.
    #[arg(long = "api-name", value_name = "NAME")]
    pub api_names: Vec<String>,
    /// Telemetry interval told to agents.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub telemetry_interval: Duration,
    /// How long a drain waits for connections on SIGTERM.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
    /// Serve DHCP, TFTP and HTTP network boot on this provisioning interface.
    #[arg(long, value_name = "IFACE")]
    pub boot_services: Option<String>,
    /// DHCP pool `FIRST-LAST` (default: the upper half of the interface's subnet).
    #[arg(long, requires = "boot_services", conflicts_with = "proxy_dhcp", value_parser = parse_range)]
    pub dhcp_range: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    /// Default gateway handed out by DHCP.
    #[arg(long, requires = "boot_services", conflicts_with = "proxy_dhcp")]
    pub dhcp_router: Option<std::net::Ipv4Addr>,
    /// Proxy DHCP beside an existing DHCP server: boot information only, no addresses.
    #[arg(long, requires = "boot_services")]
    pub proxy_dhcp: bool,
    /// Answer machines whose MAC no enrolled node has.
    #[arg(long, requires = "boot_services")]
    pub discovery: bool,
    /// Port of the boot HTTP server on the interface's address.
    #[arg(long, default_value_t = 8080)]
    pub boot_http_port: u16,
    /// Directory with the ramdisk's `vmlinuz` and `initramfs` (`ferric-ramdisk build`);
    /// `DATA_DIR/ramdisk` when absent.
    #[arg(long)]
    pub ramdisk_dir: Option<PathBuf>,
    /// How long a network-booted node may take to call back from its ramdisk.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub callback_timeout: Duration,
    /// How long a ramdisk's inspection may take.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub inspect_timeout: Duration,
    /// How long a ramdisk's erasing of the disks may take.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub clean_timeout: Duration,
    /// How long a ramdisk's image writing may take.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub deploy_timeout: Duration,
    /// The key that seals BMC passwords at rest (32 bytes, mode 0600, created when missing);
    /// `DATA_DIR/secrets.key` when absent. Keep it off the database's backups.
    #[arg(long, value_name = "FILE")]
    pub secrets_key: Option<PathBuf>,
    /// Largest image an upload may store (`512M`, `64G`); a larger one is refused and
    /// nothing of it is kept.
    #[arg(long, default_value = "64G", value_parser = |s: &str| output::parse_size(s).map_err(|e| e.to_string()))]
    pub max_image_size: u64,
    /// How long audit entries are kept.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
    /// How many audit entries are kept at most (the newest).
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_max_rows: i64,
    /// Discovery (`--discovery`): new machines found per minute at most.
    #[arg(long, default_value_t = 30, requires = "discovery")]
    pub discovery_rate: u32,
    /// Discovery (`--discovery`): discovered nodes waiting in `enroll` at most.
    #[arg(long, default_value_t = 256, requires = "discovery")]
    pub discovery_max: i64,
}

/// `FIRST-LAST` of IPv4 addresses.
fn parse_range(s: &str) -> Result<(std::net::Ipv4Addr, std::net::Ipv4Addr), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not FIRST-LAST"))?;
    let a: std::net::Ipv4Addr = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
    let b: std::net::Ipv4Addr = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not an IPv4 address"))?;
    if u32::from(a) > u32::from(b) {
        return Err(format!("`{s}`: the first address is after the last"));
    }
    Ok((a, b))
}

/// The completion script of `shell` for every command and option.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ferric", &mut script);
    script
}

/// Runs a client command (everything but `coordinator`).
pub async fn run_client(cli: Cli) -> Result<()> {
    // Needs no coordinator, nor a config to reach one.
    if let Command::Completions { shell } = cli.command {
        use std::io::Write;
        return match std::io::stdout().write_all(&completions(shell)) {
            // Read by `head` or the like, which stopped reading: nothing is wrong.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(anyhow::Error::new(e).context("cannot write the completion script"))
            }
            _ => Ok(()),
        };
    }
    let endpoint = config::resolve(cli.api, cli.token, cli.ca, cli.config.as_deref())?;
    let client = endpoint.client()?.in_project(cli.project);
    let json = cli.output != Output::Table;
    if cli.output == Output::Yaml {
        output::use_yaml();
    }
    match cli.command {
        Command::Coordinator(_) | Command::Completions { .. } => {
            bail!("`ferric coordinator` runs the server; it is not a client command")
        }
        Command::Guest(cmd) => guest::run(&client, cmd, json).await,
        Command::Image(cmd) => image::run(&client, cmd, json).await,
        #[cfg(feature = "lab")]
        Command::Lab { name, root, cmd } => lab::run(&client, &root, &name, cmd, json).await,
        Command::Host(HostCmd::List) => guest::hosts(&client, json).await,
        Command::Token(TokenCmd::Create { ttl }) => token::create(&client, ttl, json).await,
        Command::ApiToken(cmd) => access::api_token(&client, cmd, json).await,
        Command::Project(cmd) => access::project(&client, cmd, json).await,
        Command::Audit { limit } => access::audit(&client, limit, json).await,
        Command::Whoami => access::whoami(&client, json).await,
        Command::Node(NodeCmd::List) => node::list(&client, json).await,
        Command::Node(NodeCmd::Show { name }) => node::show(&client, &name, json).await,
        Command::Node(NodeCmd::Network { name, file }) => {
            network::network(&client, &name, file, json).await
        }
        Command::Node(NodeCmd::Port(a)) => network::port(&client, a, json).await,
        Command::Node(cmd) if cmd.is_lifecycle() => node::lifecycle_cmd(&client, cmd, json).await,
        Command::Node(cmd) => node::bmc_cmd(&client, cmd, json).await,
        Command::Plan(PlanCmd::Apply { file, nodes }) => {
            plan::apply(&client, &file, nodes, json).await
        }
        Command::Plan(PlanCmd::Status { id, wait }) => plan::status(&client, id, wait, json).await,
        Command::Plan(PlanCmd::List { node }) => plan::list(&client, node, json).await,
        Command::Plan(PlanCmd::Cancel { id, wait }) => plan::cancel(&client, id, wait, json).await,
        Command::Telemetry(TelemetryCmd::Watch { node, count }) => {
            telemetry::watch(&client, &node, count, json).await
        }
    }
}
