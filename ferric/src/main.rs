//! `ferric`: the coordinator server and its command line.

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
use ferric_cli as cli;
use ferric_cli::{Cli, Command, run_client};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferric: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain once, without a backtrace: the message names the problem.
            eprintln!("ferric: error: {e:#}");
            std::process::ExitCode::from(cli::exit_status(&e))
        }
    }
}

async fn real_main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let Command::Coordinator(args) = &cli.command else {
        return run_client(cli).await;
    };
    // `--api` and `--output` are the client's; given to the server they would do nothing.
    let server = matches.subcommand_matches("coordinator");
    for (id, instead) in [
        (
            "api",
            "the server listens where --api-listen says (TCP, e.g. 127.0.0.1:7180)",
        ),
        ("output", "the server prints logs, not command output"),
    ] {
        let given = |m: &clap::ArgMatches| {
            m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        if given(&matches) || server.is_some_and(given) {
            anyhow::bail!(
                "`--{id}` is a client option and does nothing for `ferric coordinator`: {instead}"
            );
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,sqlx=warn".into()),
        )
        .init();
    let mut config = ferric_coordinator::Config::new(args.data_dir.clone());
    config.listen = args.listen;
    config.api_listen = args.api_listen;
    config.images_url = args.images_url.clone();
    config.api_plain_http = args.api_plain_http;
    config.api_names = args.api_names.clone();
    config.telemetry_interval = args.telemetry_interval;
    config.drain_grace = args.drain_grace;
    config.lifecycle.callback = args.callback_timeout;
    config.lifecycle.inspect = args.inspect_timeout;
    config.lifecycle.clean = args.clean_timeout;
    config.lifecycle.deploy = args.deploy_timeout;
    config.secrets_key = args.secrets_key.clone();
    config.max_image_bytes = args.max_image_size;
    config.audit_retention = args.audit_retention;
    config.audit_max_rows = args.audit_max_rows;
    if let Some(iface) = &args.boot_services {
        let dir = args
            .ramdisk_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("ramdisk"));
        let mut b = ferric_coordinator::boot_services::BootConfig::new(iface, dir);
        b.dhcp = if args.proxy_dhcp {
            ferric_coordinator::boot_services::DhcpMode::Proxy
        } else {
            ferric_coordinator::boot_services::DhcpMode::Full {
                range: args.dhcp_range,
                router: args.dhcp_router,
            }
        };
        b.discovery = args.discovery;
        b.discovery_limits = ferric_coordinator::conductor::network_boot::DiscoveryLimits {
            per_minute: args.discovery_rate,
            max_waiting: args.discovery_max,
        };
        b.http_port = args.boot_http_port;
        config.boot = Some(b);
    }
    let running = ferric_coordinator::start(config).await?;
    let shutdown = running.shared.shutdown.clone();
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
    }
    shutdown.cancel();
    running.wait().await;
    Ok(())
}
