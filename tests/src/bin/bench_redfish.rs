//! Redfish benchmark: a power-status sweep over N of the lab's Redfish BMCs (a rack of `--bmc
//! redfish` nodes, one BMC process each on the rack's management network, HTTPS with its own
//! certificate). Ferric's client reads every BMC's system at once over the sessions and TLS
//! connections it keeps; the reference is curl at its fastest — one process for a whole run,
//! all BMCs in parallel (`--parallel --parallel-max N`), HTTP/1.1 keep-alive reusing each TLS
//! connection, basic authentication (no login round trip) and no certificate check (`-k`,
//! less work than Ferric's pin). Both make a first sweep (TLS handshakes; Ferric's logins)
//! and then kept sweeps; curl's kept sweep is (time of 1 + K sweeps − time of 1 sweep) / K in
//! one process. Every answer is checked: each BMC reports its power off.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_lab::{BmcKind, Firmware, UpOptions};
use ferric_proto::Secret;
use ferric_redfish::{Client, Target};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Redfish BMCs (rack nodes).
    #[arg(long, default_value_t = 50)]
    bmcs: u32,
    /// Kept sweeps after the first.
    #[arg(long, default_value_t = 20)]
    sweeps: u32,
    /// Rounds of the whole comparison (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The `ferric` binary the rack's BMCs run.
    #[arg(long)]
    ferric: PathBuf,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One Ferric sweep: every BMC's power, at once; all must be off.
async fn ferric_sweep(c: &Client, targets: &[Target]) -> Result<Duration> {
    let started = Instant::now();
    let answers = futures_util::future::join_all(targets.iter().map(|t| c.power_on(t))).await;
    let took = started.elapsed();
    for (t, a) in targets.iter().zip(answers) {
        if a.with_context(|| format!("BMC {}", t.name()))? {
            bail!("BMC {} reports power on", t.name());
        }
    }
    Ok(took)
}

/// One curl process fetching every BMC's system `sweeps` times, all BMCs in parallel.
fn curl_run(
    ips: &[String],
    password: &str,
    sweeps: u32,
    dir: &std::path::Path,
) -> Result<Duration> {
    let config = dir.join(format!("curl-{sweeps}.conf"));
    let mut text = String::new();
    for s in 0..sweeps {
        for (i, ip) in ips.iter().enumerate() {
            text.push_str(&format!(
                "url = \"https://{ip}/redfish/v1/Systems/1\"\noutput = \"{}\"\n",
                dir.join(format!("out-{s}-{i}.json")).display()
            ));
        }
    }
    std::fs::write(&config, text)?;
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--insecure",
            "--http1.1",
        ])
        .args(["--parallel", "--parallel-max"])
        .arg(ips.len().to_string())
        .args(["--user", &format!("{}:{password}", ferric_lab::BMC_USER)])
        .arg("--config")
        .arg(&config)
        .output()
        .context("cannot run curl")?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    for s in 0..sweeps {
        for i in 0..ips.len() {
            let p = dir.join(format!("out-{s}-{i}.json"));
            let body = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
            if !body.contains("\"PowerState\":\"Off\"") {
                bail!(
                    "curl's answer {} does not say power off: {body}",
                    p.display()
                );
            }
            std::fs::remove_file(&p)?;
        }
    }
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir()?;
    let name = format!("rb{}", std::process::id() % 10_000);
    println!("building a rack of {} Redfish BMCs…", args.bmcs);
    let rack = ferric_lab::up(&UpOptions {
        name: name.clone(),
        dir: work.path().join(&name),
        nodes: args.bmcs,
        memory_mib: 128,
        disk_bytes: 1 << 20,
        accel: "tcg".into(),
        ferric: args.ferric.clone(),
        firmware: vec![Firmware::Bios],
        disk_bus: Vec::new(),
        sector_size: Vec::new(),
        netboot: Vec::new(),
        bmc: vec![BmcKind::Redfish],
    })?;
    let guard = ferric_tests::rack::RackGuard(rack);
    let rack = &guard.0;
    let targets: Vec<Target> = rack
        .nodes
        .iter()
        .map(|n| {
            Target::parse(
                &ferric_lab::bmc_address(rack, n),
                Secret::new(rack.bmc_password.clone()),
            )
            .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;
    let ips: Vec<String> = rack.nodes.iter().map(|n| n.bmc_ip.clone()).collect();

    let (mut f_first, mut f_kept, mut c_first, mut c_kept) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        // Ferric: a new client (new connections, new sessions), then kept sweeps.
        let c = Client::default();
        f_first.push(ferric_sweep(&c, &targets).await?);
        let started = Instant::now();
        for _ in 0..args.sweeps {
            ferric_sweep(&c, &targets).await?;
        }
        f_kept.push(started.elapsed() / args.sweeps);
        c.close_all().await;
        // curl: one sweep in one process, then 1 + K sweeps in one process.
        let one = curl_run(&ips, &rack.bmc_password, 1, work.path())?;
        let many = curl_run(&ips, &rack.bmc_password, 1 + args.sweeps, work.path())?;
        c_first.push(one);
        c_kept.push(many.saturating_sub(one) / args.sweeps);
        println!(
            "round {}: ferric first {} kept {}; curl first {} kept {}",
            round + 1,
            ms(*f_first.last().unwrap_or(&Duration::ZERO)),
            ms(*f_kept.last().unwrap_or(&Duration::ZERO)),
            ms(one),
            ms(*c_kept.last().unwrap_or(&Duration::ZERO)),
        );
    }
    let (ff, fk, cf, ck) = (
        median(f_first),
        median(f_kept),
        median(c_first),
        median(c_kept),
    );
    println!();
    println!(
        "power-status sweep over {} Redfish BMCs (lab, HTTPS), median of {} rounds, {} kept sweeps each",
        args.bmcs, args.rounds, args.sweeps
    );
    println!("| method | first sweep | kept sweep |");
    println!("|---|---|---|");
    println!(
        "| Ferric (pinned TLS, sessions, all at once) | {} | {} |",
        ms(ff),
        ms(fk)
    );
    println!(
        "| curl --parallel (kept connections, basic auth, -k) | {} | {} |",
        ms(cf),
        ms(ck)
    );
    println!(
        "| ratio curl / Ferric | {:.2}x | {:.2}x |",
        cf.as_secs_f64() / ff.as_secs_f64(),
        ck.as_secs_f64() / fk.as_secs_f64()
    );
    Ok(())
}
