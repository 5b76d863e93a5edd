//! Lab benchmark: how fast a rack of virtual bare metal comes up, what an idle node costs, and
//! how many this machine holds. For each rack size: `ferric lab up` (namespace, bridge, BMCs),
//! then every node powered on through its BMC (Ferric's IPMI client, boot device pxe) until
//! a DHCP DISCOVER from each node's MAC is seen on the provisioning network; then, after the
//! nodes idle in iPXE for a while, the resident memory and CPU of their QEMU and BMC processes;
//! then `ferric lab down`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::bmc::ipmi::{IpmiClient, IpmiOptions};
use ferric_agent::bmc::{BmcTarget, Secret};
use ferric_proto::plan::{BootDevice, PowerAction};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Rack sizes (repeat).
    #[arg(long = "nodes", required = true)]
    nodes: Vec<u32>,
    /// Memory per node.
    #[arg(long, default_value = "256M")]
    memory: String,
    /// Seconds the nodes idle before memory and CPU are read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

fn pid_stats(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks))
}

/// (RSS KiB, CPU ticks) summed over the rack's QEMU and BMC processes.
fn rack_usage(dir: &Path) -> (u64, u64) {
    let mut rss = 0;
    let mut ticks = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in ["qemu.pid", "bmc.pid"] {
            if let Ok(pid) = std::fs::read_to_string(e.path().join(f))
                && let Some((r, t)) = pid_stats(pid.trim())
            {
                rss += r;
                ticks += t;
            }
        }
    }
    (rss, ticks)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Listens on the rack's provisioning network (inside its namespace) for a DHCP DISCOVER from
/// every MAC in `macs`; returns when the last one was seen. Any other packet on a tap (an ARP,
/// an IPv6 solicitation, a DHCP message of another kind) does not count.
fn await_discovers(
    netns: String,
    mut macs: std::collections::HashSet<[u8; 6]>,
    limit: Duration,
) -> std::thread::JoinHandle<Result<Instant>> {
    std::thread::spawn(move || {
        use dhcproto::v4::{DhcpOption, MessageType, OptionCode};
        let ns = std::fs::File::open(Path::new("/var/run/netns").join(&netns))
            .with_context(|| format!("namespace {netns}"))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("enter namespace {netns}"))?;
        let sock = std::net::UdpSocket::bind("0.0.0.0:67").context("bind the DHCP port")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 1500];
        while !macs.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "{} nodes sent no DHCP DISCOVER within {} s",
                    macs.len(),
                    limit.as_secs()
                );
            }
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Some(m) = ferric_netboot::dhcp::decode(&buf[..n]) else {
                continue;
            };
            let discover = matches!(
                m.opts().get(OptionCode::MessageType),
                Some(DhcpOption::MessageType(MessageType::Discover))
            );
            if discover && let Ok(mac) = <[u8; 6]>::try_from(&m.chaddr()[..6]) {
                macs.remove(&mac);
            }
        }
        Ok(Instant::now())
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let ferric = ferric_tests::bin("ferric")?;
    let root = tempfile::tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut rows = Vec::new();
    for &n in &args.nodes {
        let name = format!("b{n}");
        let lab = |a: &[&str]| -> Result<String> {
            let out = Command::new(&ferric)
                .args(["lab", "--root"])
                .arg(root.path())
                .args(["--name", &name])
                .args(a)
                .output()?;
            if !out.status.success() {
                bail!("ferric lab {a:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let started = Instant::now();
        lab(&[
            "up",
            "--nodes",
            &n.to_string(),
            "--memory",
            &args.memory,
            "--disk",
            "1G",
        ])?;
        let up = started.elapsed();
        let dir = root.path().join(&name);
        let rack: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("rack.json"))?)?;
        let netns = rack["netns"].as_str().context("netns")?.to_owned();
        let password = rack["bmc_password"]
            .as_str()
            .context("password")?
            .to_owned();
        let nodes = rack["nodes"].as_array().context("nodes")?.clone();
        let macs = nodes
            .iter()
            .map(|x| {
                x["mac"]
                    .as_str()
                    .and_then(ferric_netboot::dhcp::parse_mac)
                    .context("a node's MAC")
            })
            .collect::<Result<_>>()?;
        let discovers = await_discovers(netns.clone(), macs, Duration::from_secs(300));
        let client = IpmiClient::new(IpmiOptions::default());
        let mut tasks = tokio::task::JoinSet::new();
        for node in &nodes {
            let t = BmcTarget::parse(
                &format!("ipmi://admin@{}:623", node["bmc_ip"].as_str().unwrap_or("")),
                Secret::new(password.clone()),
            )
            .map_err(anyhow::Error::msg)?;
            let c = client.clone();
            tasks.spawn(async move {
                c.set_boot_device(&t, BootDevice::Pxe, false, false).await?;
                c.power(&t, PowerAction::On).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let powered = started.elapsed();
        let last_discover = tokio::task::spawn_blocking(move || discovers.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the DHCP listener panicked"))??;
        let ready = last_discover - started;
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        let (_, t0) = rack_usage(&dir);
        let sample = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (rss, t1) = rack_usage(&dir);
        let cpu = (t1 - t0) as f64 / 100.0 / sample.elapsed().as_secs_f64();
        let down_started = Instant::now();
        client.close_all().await;
        lab(&["down"])?;
        let down = down_started.elapsed();
        let per_node_mib = rss as f64 / 1024.0 / f64::from(n);
        let per_node_cpu = cpu / f64::from(n);
        let by_mem = (mem_available_kib() as f64 / 1024.0 / per_node_mib).floor();
        let by_cpu = (cores / per_node_cpu.max(1e-3)).floor();
        rows.push((
            n,
            up,
            powered,
            ready,
            down,
            per_node_mib,
            per_node_cpu,
            by_mem,
            by_cpu,
        ));
    }
    println!();
    println!(
        "| nodes | lab up s | all powered on s | all sent DHCP DISCOVER s | down s | RSS/idle node MiB | CPU/idle node (cores) | fit by memory | fit by CPU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, up, powered, ready, down, mem, cpu, by_mem, by_cpu) in rows {
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {mem:.0} | {cpu:.3} | {by_mem:.0} | {by_cpu:.0} |",
            up.as_secs_f64(),
            powered.as_secs_f64(),
            ready.as_secs_f64(),
            down.as_secs_f64()
        );
    }
    println!(
        "\n(memory per node {}; an idle node sits in iPXE retrying DHCP; 'fit' = this machine's MemAvailable or cores over one node's use)",
        args.memory
    );
    Ok(())
}
