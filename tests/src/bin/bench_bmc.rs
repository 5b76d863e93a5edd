//! BMC benchmark: a power-status sweep over N emulated BMCs (`ipmi_sim` on loopback, one
//! process each). Ferric's IPMI client asks all of them at once over sessions it keeps; the
//! reference is what other provisioning systems do — one `ipmitool -I lanplus` process per
//! call (a new process, a new RMCP+ login, one command, logout) — run one after another and,
//! for fairness, eight at a time. Every answer is checked (each BMC reports its power off).

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::bmc::ipmi::{IpmiClient, IpmiOptions};
use ferric_agent::bmc::{BmcTarget, Secret};
use ferric_tests::bmc::{ADMIN, SimBmc};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Emulated BMCs.
    #[arg(long, default_value_t = 50)]
    bmcs: usize,
    /// Sweeps per method (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ipmitool_status(port: u16) -> Result<bool> {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", ADMIN.0, "-P", ADMIN.1, "chassis", "power", "status"])
        .output()
        .context("cannot run ipmitool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ipmitool on port {port}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text.contains("is on"))
}

/// One sweep with `parallel` ipmitool processes at a time; returns its time.
fn ipmitool_sweep(ports: &[u16], parallel: usize) -> Result<Duration> {
    let started = Instant::now();
    for chunk in ports.chunks(parallel) {
        let answers: Vec<Result<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&p| s.spawn(move || ipmitool_status(p)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("ipmitool thread panicked"))
                })
                .collect()
        });
        for a in answers {
            if a? {
                bail!("a BMC reported power on; all are off");
            }
        }
    }
    Ok(started.elapsed())
}

async fn ferric_sweep(c: &IpmiClient, targets: &[BmcTarget]) -> Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        let (c, t) = (c.clone(), t.clone());
        tasks.spawn(async move { c.chassis_status(&t).await });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        let st = r??;
        if st.power_on {
            bail!("a BMC reported power on; all are off");
        }
        n += 1;
    }
    if n != targets.len() {
        bail!("{n} answers for {} BMCs", targets.len());
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    println!("starting {} emulated BMCs (ipmi_sim)…", args.bmcs);
    let sims: Vec<SimBmc> = (0..args.bmcs)
        .map(|i| SimBmc::start(&dir.path().join(format!("bmc{i}"))))
        .collect::<Result<_>>()?;
    let ports: Vec<u16> = sims.iter().map(|s| s.port).collect();
    let targets: Vec<BmcTarget> = ports
        .iter()
        .map(|p| {
            BmcTarget::parse(
                &format!("ipmi://{}@127.0.0.1:{p}", ADMIN.0),
                Secret::new(ADMIN.1),
            )
            .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;

    let client = IpmiClient::new(IpmiOptions::default());
    let cold = ferric_sweep(&client, &targets).await?;
    let mut warm = Vec::new();
    for _ in 0..args.rounds {
        warm.push(ferric_sweep(&client, &targets).await?);
    }
    let warm = median(warm);
    let mut seq = Vec::new();
    let mut par = Vec::new();
    for _ in 0..args.rounds {
        let p = ports.clone();
        seq.push(tokio::task::spawn_blocking(move || ipmitool_sweep(&p, 1)).await??);
        let p = ports.clone();
        par.push(tokio::task::spawn_blocking(move || ipmitool_sweep(&p, 8)).await??);
    }
    let (seq, par) = (median(seq), median(par));
    client.close_all().await;

    let n = args.bmcs as f64;
    let row = |name: &str, d: Duration| {
        println!(
            "| {name:<52} | {:>9.3} | {:>9.2} | {:>8.1}× |",
            d.as_secs_f64(),
            d.as_secs_f64() * 1000.0 / n,
            d.as_secs_f64() / warm.as_secs_f64()
        );
    };
    println!();
    println!(
        "power-status sweep over {} BMCs, median of {} sweeps; ratio = time / Ferric's warm sweep",
        args.bmcs, args.rounds
    );
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>9} |",
        "method", "sweep s", "ms/BMC", "ratio"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11)
    );
    row("Ferric, sessions kept, all BMCs at once", warm);
    row("Ferric, first sweep (logins included)", cold);
    row("ipmitool, one process per call, one after another", seq);
    row("ipmitool, one process per call, 8 at a time", par);
    println!();
    println!(
        "Ferric is {:.1}× faster than one ipmitool per call (sequential), {:.1}× than 8 in parallel",
        seq.as_secs_f64() / warm.as_secs_f64(),
        par.as_secs_f64() / warm.as_secs_f64()
    );
    drop(sims);
    Ok(())
}
