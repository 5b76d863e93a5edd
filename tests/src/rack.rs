//! What the bare-metal lifecycle tests share: a lab rack taken down when dropped, its nodes'
//! consoles, `ferric node wait` with the consoles when it fails, and the check that every
//! plan of a node ran each of its steps exactly once.

use anyhow::{Result, bail};
use ferric_lab::{Node, Rack, UpOptions};
use std::path::Path;

/// A rack that is taken down when dropped.
#[derive(Debug)]
pub struct RackGuard(pub Rack);

impl Drop for RackGuard {
    fn drop(&mut self) {
        let _ = ferric_lab::down(&self.0.dir);
    }
}

/// Brings up a TCG rack `name` of `nodes` nodes under `lab_root`.
pub fn up(
    lab_root: &Path,
    name: &str,
    nodes: u32,
    memory_mib: u64,
    disk: u64,
) -> Result<RackGuard> {
    up_with(lab_root, name, nodes, memory_mib, disk, Vec::new())
}

/// As [`up`], with the nodes' BMCs of `bmc` (a list as `ferric lab up --bmc` takes).
pub fn up_with(
    lab_root: &Path,
    name: &str,
    nodes: u32,
    memory_mib: u64,
    disk: u64,
    bmc: Vec<ferric_lab::BmcKind>,
) -> Result<RackGuard> {
    Ok(RackGuard(ferric_lab::up(&UpOptions {
        name: name.to_owned(),
        dir: lab_root.join(name),
        nodes,
        memory_mib,
        disk_bytes: disk,
        accel: "tcg".into(),
        ferric: crate::bin("ferric")?,
        // The small MBR test image boots with SYSLINUX: BIOS.
        firmware: vec![ferric_lab::Firmware::Bios],
        disk_bus: Vec::new(),
        sector_size: Vec::new(),
        netboot: Vec::new(),
        bmc,
    })?))
}

/// A node's serial console so far (firmware draws its menus in bytes that are not UTF-8).
pub fn console(rack: &Rack, n: &Node) -> String {
    String::from_utf8_lossy(
        &std::fs::read(rack.node_dir(n).join("console.log")).unwrap_or_default(),
    )
    .into_owned()
}

/// How often `what` appears on all the rack's consoles.
pub fn count_in_consoles(rack: &Rack, what: &str) -> usize {
    rack.nodes
        .iter()
        .map(|n| console(rack, n).matches(what).count())
        .sum()
}

/// The last 30 lines of every node's console.
pub fn console_tails(rack: &Rack) -> String {
    rack.nodes
        .iter()
        .map(|n| {
            let c = console(rack, n);
            let lines: Vec<&str> = c.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("--- {} console (tail):\n{tail}\n", n.name)
        })
        .collect()
}

/// `ferric node wait NAMES --state STATE` (6 minutes at most); fails with what it said and
/// the consoles.
pub async fn wait_state(
    api: std::net::SocketAddr,
    rack: &Rack,
    names: &[&str],
    state: &str,
) -> Result<String> {
    let mut args = vec!["node", "wait"];
    args.extend(names);
    args.extend(["--state", state, "--timeout", "6m"]);
    let (ok, out, err) = crate::cli(api, &args, &[]).await;
    if !ok {
        bail!("waiting for {state}: {err}\n{out}\n{}", console_tails(rack));
    }
    Ok(out)
}

/// Every plan of `node` succeeded, and its events are numbered without a gap with each step
/// started and done exactly once. Returns how many plans it checked.
pub async fn every_step_once(c: &ferric_coordinator::client::Client, node: &str) -> Result<usize> {
    let plans: Vec<serde_json::Value> = c.get(&format!("/v1/plans?node={node}")).await?;
    if plans.is_empty() {
        bail!("no plans for {node}");
    }
    for p in &plans {
        let id = p["id"].as_u64().unwrap_or(u64::MAX);
        let status: serde_json::Value = c.get(&format!("/v1/plans/{id}")).await?;
        if status["plan"]["state"] != "succeeded" {
            bail!("plan {id} of {node} did not succeed: {status}");
        }
        let steps = status["plan"]["steps"].as_array().map_or(0, Vec::len) as u64;
        let events = crate::event_list(&status);
        let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
        if seqs != (0..events.len() as u64).collect::<Vec<_>>() {
            bail!("plan {id} of {node}: events not numbered 0.. without a gap: {status}");
        }
        for step in 0..steps {
            for kind in ["started", "done"] {
                let n = events.iter().filter(|e| e.1 == step && e.2 == kind).count();
                if n != 1 {
                    bail!("plan {id} of {node}: step {step} {kind} {n} times: {status}");
                }
            }
        }
    }
    Ok(plans.len())
}
