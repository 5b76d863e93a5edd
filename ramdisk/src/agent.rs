//! The ramdisk's agent: the network up, enrollment with the per-boot token and the pinned CA
//! from the kernel command line, then the same link, journal (in RAM) and telemetry as any
//! agent, with the machine driver (inspection, disks, in-band boot device, reboot) and no
//! hypervisor or out-of-band BMC drivers.

use crate::cmdline::{BootArgs, MissingArg};
use ferric_agent::driver::Drivers;
use ferric_agent::driver::local::LocalMachine;
use ferric_agent::enroll::{EnrollOptions, enroll};
use ferric_agent::tls::CaPin;
use ferric_proto::msg::Role;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the ramdisk keeps its identity and journal (RAM).
pub const STATE_DIR: &str = "/run/ferric";

/// Why the ramdisk's agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    /// `/proc/cmdline` could not be read.
    #[error("cannot read /proc/cmdline: {0}")]
    Cmdline(#[source] std::io::Error),
    /// A `ferric.*` word is missing.
    #[error(transparent)]
    Args(#[from] MissingArg),
    /// `ferric.ca` is no fingerprint.
    #[error("ferric.ca: {0}")]
    Ca(String),
    /// The network did not come up.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// Enrollment with the per-boot token failed.
    #[error("enrollment with the per-boot token failed: {0}")]
    Enroll(#[from] ferric_agent::enroll::EnrollError),
    /// The identity could not be kept.
    #[error(transparent)]
    Identity(#[from] ferric_agent::tls::TlsError),
    /// The host sampler could not start.
    #[error("cannot read this machine's statistics: {0}")]
    Sampler(String),
    /// The agent stopped with an error.
    #[error(transparent)]
    Agent(#[from] ferric_agent::AgentError),
}

/// Brings the network up, enrolls (once per boot) and runs the agent.
pub async fn main() -> Result<(), RamdiskError> {
    // The console is the only place an operator sees the ramdisk's own account of a step.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,quinn=warn,rustls=warn,quinn_proto=warn",
        ))
        .with_ansi(false)
        .with_target(false)
        .try_init();
    let started = Instant::now();
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(RamdiskError::Cmdline)?;
    let args = BootArgs::parse(&cmdline)?;
    let ca_pin: CaPin = args
        .ca
        .parse()
        .map_err(|e: <CaPin as std::str::FromStr>::Err| RamdiskError::Ca(e.to_string()))?;
    let (nic, lease) = crate::net::up(
        args.mac.as_deref(),
        args.static_net,
        Duration::from_secs(60),
    )
    .await?;
    println!(
        "FERRIC-RAMDISK-NET {} {}/{} on {nic} from {} ({:.1} s)",
        args.node,
        lease.ip,
        lease.prefix,
        if args.static_net.is_some() {
            "the command line (no DHCP)".to_owned()
        } else {
            lease.server.to_string()
        },
        started.elapsed().as_secs_f64()
    );
    let state = PathBuf::from(STATE_DIR);
    if ferric_agent::tls::Identity::load(&state).is_err() {
        let identity = enroll(&EnrollOptions {
            coordinator: args.coordinator.clone(),
            token: args.token.clone(),
            ca_pin,
            node: args.node.clone(),
            role: Role::Ramdisk,
            timeout: Duration::from_secs(30),
            local: None,
        })
        .await?;
        identity.save(&state)?;
    }
    println!(
        "FERRIC-RAMDISK-ENROLLED {} ({:.1} s)",
        args.node,
        started.elapsed().as_secs_f64()
    );
    let none = Arc::new(ferric_agent::driver::Unsupported(
        "a deploy ramdisk runs no guests and drives no BMC over the network",
    ));
    let drivers = Drivers {
        network: none.clone(),
        storage: none.clone(),
        compute: none.clone(),
        bmc: none,
        machine: Arc::new(LocalMachine {
            owns_machine: true,
            ..LocalMachine::default()
        }),
    };
    let sampler = Arc::new(
        ferric_agent::telemetry::SysinfoSampler::new()
            .map_err(|e| RamdiskError::Sampler(e.to_string()))?,
    );
    let mut cfg = ferric_agent::Config::new(state, drivers, sampler);
    cfg.coordinator = Some(args.coordinator.clone());
    cfg.bmc_poll = Duration::ZERO;
    cfg.backoff_max = Duration::from_secs(5);
    let shutdown = tokio_util::sync::CancellationToken::new();
    ferric_agent::run(cfg, shutdown).await?;
    Ok(())
}
