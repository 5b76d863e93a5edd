//! `ferric-agent`: enroll with a coordinator, then run plans and stream telemetry.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use ferric_agent::driver::{BmcControl, Drivers, FakeDriver, Unsupported};
use ferric_agent::enroll::{EnrollOptions, enroll};
use ferric_agent::telemetry::{Sampler, SysinfoSampler};
use ferric_agent::tls::CaPin;
use ferric_proto::msg::Role;
use ferric_proto::plan::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The Ferric agent of a hypervisor or management host.
#[derive(Debug, Parser)]
#[command(name = "ferric-agent", version, about)]
struct Cli {
    /// State directory (identity, journal).
    #[arg(
        long,
        global = true,
        env = "FERRIC_AGENT_STATE",
        default_value = "/var/lib/ferric-agent"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Hypervisor,
    Management,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DriverArg {
    /// In-memory driver that records calls (no hardware is touched).
    Fake,
    /// This host's libvirtd (guests, volumes) and Linux bridges (netlink), and the BMCs the
    /// coordinator assigns to it (IPMI over LAN).
    Libvirt,
    /// BMCs only (a management host): IPMI over LAN; no guests, volumes or bridges.
    Bmc,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM when the host's hardware KVM module is loaded, TCG otherwise.
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's emulation.
    Tcg,
}

fn parse_lvm_pool(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, vg)) if !name.is_empty() && !vg.is_empty() && !vg.contains('/') => {
            Ok((name.to_owned(), vg.to_owned()))
        }
        _ => Err(format!("`{s}` is not NAME=VOLUME_GROUP")),
    }
}

fn parse_pool(s: &str) -> Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=DIRECTORY"))?;
    if name.is_empty() || !dir.starts_with('/') {
        return Err(format!(
            "`{s}`: the pool needs a name and an absolute directory"
        ));
    }
    Ok((name.to_owned(), PathBuf::from(dir)))
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enroll once with a bootstrap token; afterwards only mutual TLS is used.
    Enroll {
        /// Coordinator `host:port` (UDP).
        #[arg(long)]
        coordinator: String,
        /// Bootstrap token from `ferric token create`.
        #[arg(long, env = "FERRIC_BOOTSTRAP_TOKEN", hide_env_values = true)]
        token: String,
        /// CA fingerprint to pin, `sha256:…`.
        #[arg(long)]
        ca_hash: String,
        /// Node name (a DNS label); the host name when absent.
        #[arg(long)]
        node: Option<String>,
        /// Role of this agent.
        #[arg(long, value_enum, default_value_t = RoleArg::Hypervisor)]
        role: RoleArg,
    },
    /// Run: keep the link up, execute plans, stream telemetry.
    Run(Box<RunArgs>),
}

/// `ferric-agent run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Coordinator `host:port`; the one enrolled with when absent.
    #[arg(long)]
    coordinator: Option<String>,
    /// Hardware drivers.
    #[arg(long, value_enum, default_value_t = DriverArg::Fake)]
    driver: DriverArg,
    /// libvirt connection URI.
    #[arg(long, default_value = "qemu:///system")]
    libvirt_uri: String,
    /// A directory storage pool the agent may create, `NAME=/DIR` (repeat).
    #[arg(long = "pool", value_parser = parse_pool, default_value = "default=/var/lib/ferric/pools/default")]
    pools: Vec<(String, PathBuf)>,
    /// LVM storage pool the agent may define over an existing volume group: NAME=VG
    /// (repeat for several; needs device-mapper). Its volumes are raw block devices.
    #[arg(long = "lvm-pool", value_parser = parse_lvm_pool)]
    lvm_pools: Vec<(String, String)>,
    /// Accelerator for guests.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// How long a guest's ACPI shutdown may take before it is destroyed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// Fake driver: time each call takes.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    fake_step_delay: Duration,
    /// Fake driver: fail steps of this kind with `io` (e.g. `ensure_volume`).
    #[arg(long)]
    fake_fail: Vec<String>,
    /// Fake driver: append `begin`/`end` lines for each call to this file.
    #[arg(long)]
    fake_record: Option<PathBuf>,
    /// First reconnect delay.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    backoff_min: Duration,
    /// Longest reconnect delay.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// How long SIGTERM waits for the running step.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_grace: Duration,
    /// How often the BMCs this agent drives are polled for power (and sensors); `0s` turns
    /// the poll off.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bmc_poll: Duration,
    /// A PEM file of CAs that sign the certificates of Redfish BMCs (checked with the BMC's
    /// host name). Without it only BMCs whose address pins their certificate
    /// (`?pin=sha256:…`) are accepted; no certificate is ever accepted unchecked.
    #[arg(long = "bmc-ca", value_name = "FILE")]
    bmc_ca: Option<PathBuf>,
    /// A directory plans may name host paths in — guests' serial logs, kernels, initrds
    /// (repeat; beside /var/log/ferric, /var/lib/libvirt/boot and /var/lib/libvirt/images).
    /// Never the agent's state directory, nor a directory holding a Ferric key or store.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_paths: Vec<PathBuf>,
    /// A directory the serial console logs of the nodes whose BMCs this agent drives may
    /// be in (repeat; default /var/log/ferric/consoles). Only regular files there are
    /// read.
    #[arg(long = "console-dir", value_name = "DIR")]
    console_dirs: Vec<PathBuf>,
    /// A bridge of the host's that plans may attach guests to (repeat): plans otherwise
    /// touch only bridges Ferric made.
    #[arg(long = "bridge", value_name = "NAME")]
    bridges: Vec<String>,
    /// A volume of the host's (`POOL/NAME`, e.g. an existing LV) plans may use (repeat):
    /// plans otherwise touch only volumes Ferric made, and never delete one it did not.
    #[arg(long = "volume", value_name = "POOL/NAME")]
    volumes: Vec<String>,
    /// An interface that holds the host's address or default route which bridges may
    /// still take as their uplink (repeat): otherwise such an uplink is refused, since
    /// enslaving it cuts the host off.
    #[arg(long = "uplink", value_name = "IFACE")]
    uplinks: Vec<String>,
}

/// What `--driver libvirt` is configured with (unread in a build without libvirt, which
/// refuses the driver).
#[derive(Debug)]
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
struct LibvirtArgs {
    uri: String,
    pools: Vec<(String, PathBuf)>,
    lvm_pools: Vec<(String, String)>,
    accel: AccelArg,
    shutdown_grace: Duration,
    state_dir: PathBuf,
    bridges: Vec<String>,
    volumes: Vec<String>,
    uplinks: Vec<String>,
}

/// The libvirt and netlink drivers, and the host's sampler with the guests' statistics added.
#[cfg(feature = "libvirt")]
fn libvirt_drivers(
    args: LibvirtArgs,
    host: Arc<dyn Sampler>,
    bmc: Arc<dyn BmcControl>,
) -> Result<(Drivers, Arc<dyn Sampler>)> {
    use ferric_agent::hypervisor::libvirt::{Accel, Libvirt, LibvirtConfig, probe_accel};
    use ferric_agent::telemetry::HostAndGuests;
    use std::path::Path;
    let accel = match args.accel {
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
        AccelArg::Auto => probe_accel(Path::new("/dev/kvm"), Path::new("/sys/module")),
    };
    tracing::info!(?accel, uri = %args.uri, "using the libvirt and netlink drivers");
    let mut cfg = LibvirtConfig::system(accel);
    cfg.uri = args.uri;
    cfg.pools = args.pools.into_iter().collect();
    cfg.lvm_pools = args.lvm_pools.into_iter().collect();
    cfg.shutdown_grace = args.shutdown_grace;
    cfg.state_dir = args.state_dir;
    cfg.bridges = args.bridges;
    cfg.volumes = args.volumes;
    let owned = ferric_agent::hypervisor::owned::Owned::new(
        &cfg.state_dir,
        cfg.bridges.iter().cloned(),
        cfg.volumes.iter().cloned(),
        args.uplinks,
    );
    let lv = Arc::new(Libvirt::new(cfg));
    let sampler = Arc::new(HostAndGuests {
        host,
        guests: lv.clone(),
    });
    let drivers = Drivers {
        network: Arc::new(ferric_agent::hypervisor::netlink::Netlink::new(
            "/sys/class/net",
            owned,
        )),
        storage: lv.clone(),
        compute: lv,
        bmc,
        machine: Arc::new(ferric_agent::driver::local::LocalMachine::default()),
    };
    Ok((drivers, sampler))
}

/// This binary has no libvirt driver: says so.
#[cfg(not(feature = "libvirt"))]
fn libvirt_drivers(
    _: LibvirtArgs,
    _: Arc<dyn Sampler>,
    _: Arc<dyn BmcControl>,
) -> Result<(Drivers, Arc<dyn Sampler>)> {
    anyhow::bail!(
        "`--driver libvirt`: this ferric-agent was built without libvirt support (cargo \
         feature `libvirt`); it can run `--driver bmc` or `--driver fake`"
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "node".into())
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferric-agent: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain once, without a backtrace: the message names the problem.
            eprintln!("ferric-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Enroll {
            coordinator,
            token,
            ca_hash,
            node,
            role,
        } => {
            let ca_pin: CaPin = ca_hash.parse()?;
            let node = node.unwrap_or_else(hostname);
            let opts = EnrollOptions {
                coordinator,
                token,
                ca_pin,
                node: node.clone(),
                role: match role {
                    RoleArg::Hypervisor => Role::Hypervisor,
                    RoleArg::Management => Role::Management,
                },
                timeout: Duration::from_secs(20),
                local: None,
            };
            let identity = enroll(&opts).await?;
            identity.save(&cli.state_dir)?;
            println!(
                "enrolled as `{node}`; identity saved in {}",
                cli.state_dir.display()
            );
            Ok(())
        }
        Cmd::Run(args) => {
            let RunArgs {
                coordinator,
                driver,
                libvirt_uri,
                pools,
                lvm_pools,
                accel,
                shutdown_grace,
                fake_step_delay,
                fake_fail,
                fake_record,
                backoff_min,
                backoff_max,
                drain_grace,
                bmc_poll,
                bmc_ca,
                allow_paths,
                console_dirs,
                bridges,
                volumes,
                uplinks,
            } = *args;
            let ca_bundle = match &bmc_ca {
                Some(p) => Some(Arc::new(
                    ferric_agent::bmc::redfish::read_ca_bundle(p).map_err(anyhow::Error::msg)?,
                )),
                None => None,
            };
            let ipmi = || -> Arc<ferric_agent::bmc::redfish::Bmcs> {
                Arc::new(ferric_agent::bmc::redfish::Bmcs::new(
                    ferric_agent::bmc::control::IpmiBmcs::new(
                        ferric_agent::bmc::ipmi::IpmiClient::default(),
                        ferric_agent::bmc::control::POWER_SETTLE,
                    ),
                    ferric_agent::bmc::redfish::RedfishBmcs::new(ferric_redfish::Client::new(
                        ferric_redfish::Options {
                            ca_bundle: ca_bundle.clone(),
                            ..ferric_redfish::Options::default()
                        },
                    )),
                ))
            };
            let host: Arc<dyn Sampler> = Arc::new(
                SysinfoSampler::new().context("cannot read host information for telemetry")?,
            );
            let mut sampler = host.clone();
            let drivers = match driver {
                DriverArg::Libvirt => {
                    let (drivers, with_guests) = libvirt_drivers(
                        LibvirtArgs {
                            uri: libvirt_uri,
                            pools,
                            lvm_pools,
                            accel,
                            shutdown_grace,
                            state_dir: cli.state_dir.clone(),
                            bridges,
                            volumes,
                            uplinks,
                        },
                        host,
                        ipmi(),
                    )?;
                    sampler = with_guests;
                    drivers
                }
                DriverArg::Bmc => {
                    tracing::info!("driving BMCs only (IPMI over LAN and Redfish)");
                    let none = Arc::new(Unsupported(
                        "this agent drives BMCs only (run it with --driver libvirt for guests)",
                    ));
                    Drivers {
                        network: none.clone(),
                        storage: none.clone(),
                        compute: none.clone(),
                        bmc: ipmi(),
                        machine: none,
                    }
                }
                DriverArg::Fake => {
                    let fake = match &fake_record {
                        Some(p) => FakeDriver::recording(p)
                            .with_context(|| format!("cannot open {}", p.display()))?,
                        None => FakeDriver::new(),
                    };
                    fake.set_delay(fake_step_delay);
                    for kind in &fake_fail {
                        fake.fail_kind(kind, ErrorKind::Io);
                    }
                    tracing::warn!(
                        "using the fake driver: steps are recorded, no hardware is touched"
                    );
                    Drivers::fake(Arc::new(fake))
                }
            };
            let mut cfg = ferric_agent::Config::new(cli.state_dir.clone(), drivers, sampler);
            cfg.coordinator = coordinator;
            cfg.backoff_min = backoff_min;
            cfg.backoff_max = backoff_max;
            cfg.drain_grace = drain_grace;
            cfg.bmc_poll = bmc_poll;
            cfg.paths = ferric_agent::paths::PathPolicy::new(
                ferric_agent::paths::DEFAULT_ALLOWED
                    .iter()
                    .map(PathBuf::from)
                    .chain(allow_paths),
            );
            tracing::info!(allowed = ?cfg.paths.allowed(), "plans may name host paths in these directories");
            if !console_dirs.is_empty() {
                cfg.console_dirs = ferric_agent::paths::PathPolicy::new(console_dirs);
            }
            let shutdown = CancellationToken::new();
            let mut term = signal(SignalKind::terminate())?;
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: draining"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
                }
                trigger.cancel();
            });
            ferric_agent::run(cfg, shutdown).await?;
            Ok(())
        }
    }
}
