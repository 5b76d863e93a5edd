//! Guest benchmark: create-to-running latency of Ferric against `virsh` doing the same work
//! (create a qcow2 volume, define the same domain XML, start it), for 1 and for 10 guests at
//! once, in one run on one libvirtd; and the agent's RSS and CPU idle and with 10 guests
//! reporting telemetry every second.
//!
//! Each round runs one side, destroys its guests, then runs the other; rounds alternate which
//! side goes first.
//!
//! Ferric's latency is the coordinator's own: plan stored → its last event (guest started)
//! stored. It includes the push over QUIC, the agent's journal, and the events back.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::hypervisor::libvirt::{Accel, domain_xml};
use ferric_coordinator::conductor::plans::PlanFile;
use ferric_proto::plan::{GuestBoot, GuestNic, GuestSpec, VolumeRef};
use ferric_tests::hv::{ensure_libvirtd, guest_image, virsh};
use ferric_tests::{Proc, bin, client, start_coordinator, wait_for, wait_plan_finished};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Guest counts to create at once (repeat).
    #[arg(long = "guests", default_values_t = vec![1usize, 10])]
    guests: Vec<usize>,
    /// Rounds per count, alternating which side goes first.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const MEM_MIB: u64 = 96;
const VOL_BYTES: u64 = 16 << 20;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn proc_stat(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Ok((rss, ticks))
}

/// Agent RSS (MiB) and CPU (% of one core) over `secs`.
fn agent_use(pid: u32, secs: u64) -> Result<(f64, f64)> {
    let (_, t0) = proc_stat(pid)?;
    std::thread::sleep(Duration::from_secs(secs));
    let (rss, t1) = proc_stat(pid)?;
    let hz = 100.0; // USER_HZ on Linux
    Ok((
        rss as f64 / 1024.0,
        (t1 - t0) as f64 / hz / secs as f64 * 100.0,
    ))
}

fn spec(
    name: &str,
    pool: &str,
    bridge: &str,
    kernel: &str,
    initrd: &str,
    logs: &Path,
) -> GuestSpec {
    GuestSpec {
        name: name.into(),
        vcpus: 1,
        memory_mib: MEM_MIB,
        volumes: vec![VolumeRef {
            pool: pool.into(),
            name: format!("{name}-root"),
        }],
        nics: vec![GuestNic {
            bridge: bridge.into(),
            mac: None,
        }],
        boot: GuestBoot::Kernel {
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline: "console=ttyS0 panic=-1".into(),
        },
        serial_log: Some(logs.join(format!("{name}.log")).display().to_string()),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure_libvirtd()?;
    let image = guest_image()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args, image))
}

async fn run(args: Args, image: ferric_tests::hv::GuestImage) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let id = std::process::id();
    let pool = format!("ferric-bench-{id}");
    let bridge = format!("brfb{}", id % 100_000);
    let pool_dir = dir.path().join("pool");
    let logs = dir.path().join("consoles");
    std::fs::create_dir_all(&logs)?;
    let (kernel, initrd) = (
        image.kernel.display().to_string(),
        image.initrd.display().to_string(),
    );

    let coord = start_coordinator(&dir.path().join("coord")).await?;
    let c = client(coord.api);
    let agent_bin = bin("ferric-agent")?;
    let state = dir.path().join("agent");
    let t = c.create_token(Duration::from_secs(600)).await?;
    let out = Command::new(&agent_bin)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "enroll",
            "--coordinator",
            &coord.listen.to_string(),
            "--token",
            &t.token,
            "--ca-hash",
            &t.ca_hash,
            "--node",
            "bench",
        ])
        .output()?;
    if !out.status.success() {
        bail!("enroll failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pool_arg = format!("{pool}={}", pool_dir.display());
    let kernel_dir = image
        .kernel
        .parent()
        .context("the guest kernel's directory")?
        .display()
        .to_string();
    let logs_dir = logs.display().to_string();
    let agent = Proc::spawn(
        &agent_bin,
        &[
            "--state-dir",
            state.to_str().unwrap_or_default(),
            "run",
            "--driver",
            "libvirt",
            "--pool",
            &pool_arg,
            "--accel",
            "tcg",
            "--shutdown-grace",
            "1s",
            "--allow-path",
            &kernel_dir,
            "--allow-path",
            &logs_dir,
        ],
        &dir.path().join("agent.log"),
    )?;
    let pid = agent.pid().context("agent not running")?;
    wait_for(Duration::from_secs(30), "agent connected", || async {
        Ok(coord.shared.hub.links.connected_since("bench").map(|_| ()))
    })
    .await?;
    let setup: PlanFile = serde_yaml_ng::from_str(&format!(
        "steps:\n  - ensure_bridge: {{ name: {bridge} }}\n  - ensure_volume: {{ pool: {pool}, name: warm, size_bytes: 1048576 }}\n"
    ))?;
    let p = c.apply(vec!["bench".into()], setup).await?[0].id;
    wait_plan_finished(&c, p, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle_rss, idle_cpu) = agent_use(pid, 5)?;

    // Removes guests and their volumes (not timed): each side's guests are gone before the
    // other side runs, so neither pays for the other's TCG guests still booting.
    let clean = |names: &[String]| {
        for name in names {
            let _ = virsh(&["destroy", name]);
            let _ = virsh(&["undefine", name]);
            let _ = virsh(&["vol-delete", &format!("{name}-root"), "--pool", &pool]);
        }
    };
    let mut rows = Vec::new();
    let mut busy = (0.0, 0.0);
    for &n in &args.guests {
        let (mut ferric, mut reference) = (Vec::new(), Vec::new());
        // Rounds alternate which side goes first, so that neither always runs on a host the
        // other has just warmed (or loaded).
        for round in 0..args.rounds {
            for side in [round % 2, 1 - round % 2] {
                if side == 0 {
                    // Ferric: n plans pushed together.
                    let names: Vec<String> =
                        (0..n).map(|i| format!("fb{id}-{n}-{round}-{i}")).collect();
                    let mut plans = Vec::new();
                    for name in &names {
                        let s = spec(name, &pool, &bridge, &kernel, &initrd, &logs);
                        let plan = PlanFile {
                            steps: serde_json::from_value(serde_json::json!([
                                { "ensure_volume": { "pool": pool, "name": format!("{name}-root"), "size_bytes": VOL_BYTES } },
                                { "ensure_guest": s },
                                { "guest_power": { "name": name, "action": "start" } },
                            ]))?,
                        };
                        plans.push(c.apply(vec!["bench".into()], plan).await?[0].id);
                    }
                    for p in &plans {
                        let s = wait_plan_finished(&c, *p, Duration::from_secs(300)).await?;
                        if s["plan"]["state"] != "succeeded" {
                            bail!("plan {p} failed: {s}");
                        }
                        let us = |k: &str| s["plan"][k].as_i64().unwrap_or(0) as f64;
                        ferric.push((us("finished_at_us") - us("created_at_us")) / 1000.0);
                    }
                    if n >= 10 && round == 0 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        busy = agent_use(pid, 5)?;
                    }
                    clean(&names);
                } else {
                    // virsh: the same work, n at once.
                    let vnames: Vec<String> =
                        (0..n).map(|i| format!("vb{id}-{n}-{round}-{i}")).collect();
                    let handles: Vec<_> = vnames
                        .iter()
                        .map(|name| {
                            let s = spec(name, &pool, &bridge, &kernel, &initrd, &logs);
                            let pool = pool.clone();
                            let xml_dir = dir.path().to_owned();
                            std::thread::spawn(move || -> Result<f64> {
                                let t = Instant::now();
                                virsh(&[
                                    "vol-create-as",
                                    &pool,
                                    &format!("{}-root", s.name),
                                    &VOL_BYTES.to_string(),
                                    "--format",
                                    "qcow2",
                                ])?;
                                let path = virsh(&[
                                    "vol-path",
                                    &format!("{}-root", s.name),
                                    "--pool",
                                    &pool,
                                ])?
                                .trim()
                                .to_owned();
                                let xml = domain_xml(&s, Accel::Tcg, &[(path, "qcow2".into())]);
                                let f = xml_dir.join(format!("{}.xml", s.name));
                                std::fs::write(&f, xml)?;
                                virsh(&["define", f.to_str().unwrap_or_default()])?;
                                virsh(&["start", &s.name])?;
                                Ok(t.elapsed().as_secs_f64() * 1000.0)
                            })
                        })
                        .collect();
                    let mut failed = None;
                    for h in handles {
                        match h.join() {
                            Ok(Ok(ms)) => reference.push(ms),
                            Ok(Err(e)) => failed = Some(e),
                            Err(_) => failed = Some(anyhow::anyhow!("virsh thread panicked")),
                        }
                    }
                    clean(&vnames);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
            }
        }
        let (f50, f99, v50, v99) = (
            pct(&mut ferric, 0.5),
            pct(&mut ferric, 0.99),
            pct(&mut reference, 0.5),
            pct(&mut reference, 0.99),
        );
        rows.push((n, f50, f99, v50, v99));
    }
    drop(agent);
    let _ = virsh(&["vol-delete", "warm", "--pool", &pool]);
    let _ = virsh(&["pool-destroy", &pool]);
    let _ = virsh(&["pool-undefine", &pool]);
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    coord.shutdown().await;

    println!(
        "\n{} rounds per count, alternating which side goes first; each side's guests destroyed before the other runs",
        args.rounds
    );
    println!(
        "| guests at once | Ferric create→running p50 / p99 (ms) | virsh vol-create-as+define+start p50 / p99 (ms) | Ferric / virsh (p50) |"
    );
    println!("|---:|---:|---:|---:|");
    for (n, f50, f99, v50, v99) in rows {
        println!(
            "| {n} | {f50:.0} / {f99:.0} | {v50:.0} / {v99:.0} | {:.2} |",
            f50 / v50
        );
    }
    println!("\n| agent | RSS (MiB) | CPU (% of one core) |");
    println!("|---|---:|---:|");
    println!("| idle, no guests | {idle_rss:.1} | {idle_cpu:.1} |");
    println!(
        "| 10 guests, 1 s telemetry | {:.1} | {:.1} |",
        busy.0, busy.1
    );
    println!("\ngoals: Ferric adds < 20% over virsh; agent RSS < 30 MiB");
    Ok(())
}
