//! Link benchmark: a real coordinator process and N agents in this process over loopback QUIC
//! with mutual TLS. One plan is pushed to all of them; the coordinator's own timestamps give
//! push→accept (plan written to the agent's stream → the agent's journaled-acceptance stored)
//! and create→done (plan stored → its last event stored) latencies. Coordinator memory per
//! agent is the growth of its RSS from before the agents to all of them connected and
//! streaming telemetry, divided by N.
//!
//! Agents keep their journals under /dev/shm when it exists: one machine hosting many agents
//! would otherwise measure its disk's fsync queue, not the coordinator.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::driver::FakeDriver;
use ferric_coordinator::conductor::plans::{PlanFile, StepSpec};
use ferric_proto::plan::Step;
use ferric_tests::{Proc, agent_config, enroll_in_process, free_port, spawn_agent, wait_for};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// The `ferric` binary to run as the coordinator.
    #[arg(long)]
    ferric: PathBuf,
    /// Agent counts (repeat).
    #[arg(long = "agents", required = true)]
    agents: Vec<usize>,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    n: usize,
    enroll_s: f64,
    connect_s: f64,
    rss_per_agent_kib: f64,
    accept_p50: f64,
    accept_p99: f64,
    done_p50: f64,
    done_p99: f64,
}

async fn one(args: &Args, n: usize) -> Result<Row> {
    let scratch = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(&scratch)?;
    let disk = tempfile::tempdir()?; // the coordinator's store stays on a real disk
    let (qp, ap) = (free_port()?, free_port()?);
    let quic = format!("127.0.0.1:{qp}");
    let api = format!("127.0.0.1:{ap}");
    let mut coord = Proc::spawn(
        &args.ferric,
        &[
            "coordinator",
            "--data-dir",
            disk.path().join("coord").to_str().unwrap_or_default(),
            "--listen",
            &quic,
            "--api-listen",
            &api,
        ],
        &disk.path().join("coordinator.log"),
    )?;
    let c = ferric_tests::wait_admitted(
        &disk.path().join("coord"),
        api.parse()?,
        Duration::from_secs(30),
    )
    .await?;
    let pid = coord_pid(&coord)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid)?;

    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let state = dir.path().join(format!("a{i}"));
        let (api_addr, quic_addr) = (api.parse()?, quic.parse()?);
        let sem = sem.clone();
        set.spawn(async move {
            let _p = sem.acquire().await;
            enroll_in_process(api_addr, quic_addr, &format!("n{i}"), &state).await
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let enroll_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let fake = Arc::new(FakeDriver::new());
        let mut cfg = agent_config(&dir.path().join(format!("a{i}")), fake.clone());
        cfg.backoff_min = Duration::from_millis(200);
        cfg.backoff_max = Duration::from_secs(5);
        agents.push(spawn_agent(cfg, fake));
    }
    wait_for(Duration::from_secs(120), "all agents connected", || async {
        let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await?;
        Ok((nodes.iter().filter(|x| x["connected"] == true).count() == n).then_some(()))
    })
    .await?;
    let connect_s = t.elapsed().as_secs_f64();
    // Let telemetry flow for a few intervals before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(pid)?;

    let plan = PlanFile {
        steps: vec![StepSpec {
            step: Step::EnsureBridge {
                name: "br-bench".into(),
                uplink: None,
                vlan: None,
            },
            key: None,
            timeout: Some("60s".into()),
        }],
    };
    let created = c
        .apply((0..n).map(|i| format!("n{i}")).collect(), plan)
        .await?;
    if created.iter().any(|p| !p.pushed) {
        bail!("some plans were not pushed at once");
    }
    let plans: Vec<serde_json::Value> =
        wait_for(Duration::from_secs(120), "all plans finished", || async {
            let plans: Vec<serde_json::Value> = c.get(&format!("/v1/plans?limit={n}")).await?;
            Ok(
                (plans.len() == n && plans.iter().all(|p| p["state"] == "succeeded"))
                    .then_some(plans),
            )
        })
        .await?;
    let mut accept = Vec::with_capacity(n);
    let mut done = Vec::with_capacity(n);
    for p in &plans {
        let us = |k: &str| p[k].as_i64().unwrap_or(0) as f64;
        accept.push((us("accepted_at_us") - us("pushed_at_us")) / 1000.0);
        done.push((us("finished_at_us") - us("created_at_us")) / 1000.0);
    }
    accept.sort_by(f64::total_cmp);
    done.sort_by(f64::total_cmp);

    for a in &agents {
        a.shutdown.cancel();
    }
    for a in agents {
        let _ = a.task.await;
    }
    let _ = coord.terminate(Duration::from_secs(10));
    Ok(Row {
        n,
        enroll_s,
        connect_s,
        rss_per_agent_kib: (rss_after.saturating_sub(rss_before)) as f64 / n as f64,
        accept_p50: pct(&accept, 0.5),
        accept_p99: pct(&accept, 0.99),
        done_p50: pct(&done, 0.5),
        done_p99: pct(&done, 0.99),
    })
}

fn coord_pid(p: &Proc) -> Result<u32> {
    p.pid().context("coordinator is not running")
}

fn main() -> Result<()> {
    let args = Args::parse();
    // One UDP socket per in-process agent: raise the open-file limit to the hard limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &n in &args.agents {
        eprintln!("measuring {n} agents…");
        rows.push(rt.block_on(one(&args, n))?);
    }
    println!(
        "\n| agents | enroll all (s) | connect all (s) | coordinator RSS per agent (KiB) | push→accept p50 / p99 (ms) | create→done p50 / p99 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            r.n,
            r.enroll_s,
            r.connect_s,
            r.rss_per_agent_kib,
            r.accept_p50,
            r.accept_p99,
            r.done_p50,
            r.done_p99
        );
    }
    println!(
        "\ngoals: push→accept p99 < 50 ms at 1000 agents; < 100 KiB coordinator RSS per agent"
    );
    Ok(())
}
