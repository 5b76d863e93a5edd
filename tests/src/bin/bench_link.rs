//! Link benchmark: a real coordinator process and N agents in this process over loopback QUIC
//! with mutual TLS. One plan is pushed to all of them; the coordinator's own timestamps give
//! push→accept (plan written to the agent's stream → the agent's journaled-acceptance stored)
//! and create→done (plan stored → its last event stored) latencies. Coordinator memory per
//! agent is the growth of its RSS from before the agents to all of them connected and
//! streaming telemetry, divided by N: first a few seconds after they connect, then at steady
//! state, once every node's telemetry ring is full (600 samples). Agents send a real sample
//! of this host (its disks and NICs, taken once) rather than the smallest one; the
//! steady-state run tells them a shorter telemetry interval so that the rings fill in about
//! two minutes instead of ten.
//!
//! Agents keep their journals under /dev/shm when it exists: one machine hosting many agents
//! would otherwise measure its disk's fsync queue, not the coordinator.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::driver::FakeDriver;
use ferric_agent::telemetry::{FixedSampler, Sampler};
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
    /// Skip the steady-state memory run (rings full).
    #[arg(long)]
    no_steady: bool,
}

/// Telemetry samples per second the steady-state run asks of all agents together (loopback
/// and one coordinator keep up with this on two cores).
const FILL_RATE: f64 = 5000.0;

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

/// A coordinator process with `n` enrolled, connected in-process agents.
struct Fleet {
    coord: Proc,
    c: ferric_coordinator::client::Client,
    pid: u32,
    rss_before: u64,
    agents: Vec<ferric_tests::InProcessAgent>,
    enroll_s: f64,
    connect_s: f64,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Fleet {
    async fn stop(mut self) {
        for a in &self.agents {
            a.shutdown.cancel();
        }
        for a in self.agents.drain(..) {
            let _ = a.task.await;
        }
        let _ = self.coord.terminate(Duration::from_secs(10));
    }
}

struct Steady {
    n: usize,
    sample_bytes: usize,
    held: usize,
    rss_per_agent_kib: f64,
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

/// Starts a coordinator telling agents `interval`, then enrolls and connects `n` agents that
/// all send `sample`.
async fn start(
    args: &Args,
    n: usize,
    interval: Duration,
    sample: &ferric_proto::msg::TelemetrySample,
) -> Result<Fleet> {
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
    let interval_arg = format!("{}ms", interval.as_millis());
    let coord = Proc::spawn(
        &args.ferric,
        &[
            "coordinator",
            "--data-dir",
            disk.path().join("coord").to_str().unwrap_or_default(),
            "--listen",
            &quic,
            "--api-listen",
            &api,
            "--telemetry-interval",
            &interval_arg,
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
    let sampler = Arc::new(FixedSampler(sample.clone()));
    for i in 0..n {
        let fake = Arc::new(FakeDriver::new());
        let mut cfg = agent_config(&dir.path().join(format!("a{i}")), fake.clone());
        cfg.backoff_min = Duration::from_millis(200);
        cfg.backoff_max = Duration::from_secs(5);
        cfg.sampler = sampler.clone();
        agents.push(spawn_agent(cfg, fake));
    }
    wait_for(Duration::from_secs(120), "all agents connected", || async {
        let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await?;
        Ok((nodes.iter().filter(|x| x["connected"] == true).count() == n).then_some(()))
    })
    .await?;
    let connect_s = t.elapsed().as_secs_f64();
    Ok(Fleet {
        coord,
        c,
        pid,
        rss_before,
        agents,
        enroll_s,
        connect_s,
        _dirs: (dir, disk),
    })
}

/// Coordinator memory per agent once every node's telemetry ring is full.
async fn steady(
    args: &Args,
    n: usize,
    sample: &ferric_proto::msg::TelemetrySample,
) -> Result<Steady> {
    let interval = Duration::from_secs_f64((n as f64 / FILL_RATE).max(0.01));
    let fleet = start(args, n, interval, sample).await?;
    let ring = ferric_coordinator::hub::TELEMETRY_RING;
    let fill = interval * ring as u32;
    eprintln!(
        "  {n} agents at {} ms: filling {ring}-sample rings, about {} s …",
        interval.as_millis(),
        fill.as_secs()
    );
    let held = wait_for(
        fill * 3 + Duration::from_secs(60),
        "telemetry rings full",
        || async {
            let mut least = usize::MAX;
            // The first and the last agent to connect.
            for node in ["n0".to_owned(), format!("n{}", n - 1)] {
                let t: serde_json::Value =
                    fleet.c.get(&format!("/v1/nodes/{node}/telemetry")).await?;
                least = least.min(t.as_array().map_or(0, Vec::len));
            }
            Ok((least >= ring).then_some(least))
        },
    )
    .await?;
    // A few more intervals at full rings (old samples dropped as new ones come).
    tokio::time::sleep(interval * 20).await;
    let rss = rss_kib(fleet.pid)?;
    let per = rss.saturating_sub(fleet.rss_before) as f64 / n as f64;
    fleet.stop().await;
    Ok(Steady {
        n,
        sample_bytes: ferric_proto::frame::to_frame(sample, usize::MAX)?.len(),
        held,
        rss_per_agent_kib: per,
    })
}

async fn one(args: &Args, n: usize, sample: &ferric_proto::msg::TelemetrySample) -> Result<Row> {
    let fleet = start(args, n, Duration::from_secs(1), sample).await?;
    let c = &fleet.c;
    // Let telemetry flow for a few intervals before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(fleet.pid)?;
    let (rss_before, enroll_s, connect_s) = (fleet.rss_before, fleet.enroll_s, fleet.connect_s);

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

    fleet.stop().await;
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
    // A real sample of this host, as its agent would send it every interval.
    let sample = ferric_agent::telemetry::SysinfoSampler::new()?.sample();
    let mut rows = Vec::new();
    let mut steadies = Vec::new();
    for &n in &args.agents {
        eprintln!("measuring {n} agents…");
        rows.push(rt.block_on(one(&args, n, &sample))?);
        if !args.no_steady {
            steadies.push(rt.block_on(steady(&args, n, &sample))?);
        }
    }
    println!("\nmemory a few seconds after connecting (1 s telemetry), and latencies:");
    println!(
        "| agents | enroll all (s) | connect all (s) | coordinator RSS per agent (KiB) | push→accept p50 / p99 (ms) | create→done p50 / p99 (ms) |"
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
    if !steadies.is_empty() {
        println!("\nmemory at steady state, every node's telemetry ring full:");
        println!(
            "| agents | sample (bytes, encoded) | samples held per node | ring bound per node (KiB) | coordinator RSS per agent (KiB) |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for s in &steadies {
            let bound = (s.sample_bytes * ferric_coordinator::hub::TELEMETRY_RING)
                .min(ferric_coordinator::hub::TELEMETRY_RING_BYTES);
            println!(
                "| {} | {} | {} | {:.0} | {:.1} |",
                s.n,
                s.sample_bytes,
                s.held,
                bound as f64 / 1024.0,
                s.rss_per_agent_kib
            );
        }
    }
    println!(
        "\ngoals: push→accept p99 < 50 ms at 1000 agents; < 100 KiB coordinator RSS per agent"
    );
    Ok(())
}
