//! Faults `ferric lab fault` injects into a node. They live in the node's `faults` file, one
//! a line, which the chassis program, the relay and power-on read.

use crate::bmc::bmc_pid;
use crate::error::{IoContext, LabError, Result};
use crate::layout::Rack;
use crate::process::signal;
use nix::sys::signal::Signal;
use std::path::Path;

/// Faults `ferric lab fault` injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The BMC stops answering (its process is stopped).
    BmcSilent,
    /// The BMC's LAN loses this percentage of datagrams each way.
    BmcLoss(u32),
    /// Power commands are accepted but change nothing.
    PowerStuck,
    /// The disk fails every read and write (from the next power-on).
    DiskFail,
    /// Boot device commands are accepted but change nothing: the node boots its disk.
    BootStuck,
    /// The node's provisioning link is down (its cable pulled): it boots, but hears nothing.
    NetDown,
    /// Every fault is lifted.
    Clear,
}

/// The faults of the node whose directory is `dir`.
pub(crate) fn faults(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("faults"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whether the node whose directory is `dir` has fault `f` (its first word).
pub(crate) fn has_fault(dir: &Path, f: &str) -> bool {
    faults(dir)
        .iter()
        .any(|x| x.split_whitespace().next() == Some(f))
}

/// The share (percent) of its BMC's datagrams the node whose directory is `dir` loses.
pub(crate) fn bmc_loss(dir: &Path) -> u32 {
    faults(dir)
        .iter()
        .find_map(|l| {
            l.strip_prefix("bmc-loss ")
                .and_then(|p| p.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Injects (or clears) a fault on a node.
pub fn fault(rack: &Rack, node: &str, f: &Fault) -> Result<()> {
    let n = rack.node(node)?;
    let dir = rack.node_dir(n);
    let mut list = faults(&dir);
    let bmc = bmc_pid(rack, n);
    match f {
        Fault::BmcSilent => {
            let bmc = bmc.ok_or_else(|| LabError::BmcNotRunning(node.to_owned()))?;
            signal(bmc, Signal::SIGSTOP)?;
            list.push("bmc-silent".into());
        }
        Fault::BmcLoss(pct) => {
            if *pct > 100 {
                return Err(LabError::BadLoss(*pct));
            }
            // The rack's relay drops this share each way (this host has no netem).
            list.retain(|l| !l.starts_with("bmc-loss"));
            list.push(format!("bmc-loss {pct}"));
        }
        Fault::PowerStuck => list.push("power-stuck".into()),
        Fault::DiskFail => list.push("disk-fail".into()),
        Fault::NetDown => {
            crate::netns::ip(&["-n", &rack.netns, "link", "set", &n.tap, "down"])?;
            list.push("net-down".into());
        }
        Fault::BootStuck => {
            let file = dir.join("boot");
            std::fs::write(&file, "default")
                .or_lab(|| format!("cannot write {}", file.display()))?;
            list.push("boot-stuck".into());
        }
        Fault::Clear => {
            // Clearing works on a node whose BMC died too: the faults file is what counts.
            if let Some(bmc) = bmc {
                let _ = signal(bmc, Signal::SIGCONT);
            }
            if list.iter().any(|f| f == "net-down") {
                crate::netns::ip(&["-n", &rack.netns, "link", "set", &n.tap, "up"])?;
            }
            list.clear();
        }
    }
    list.dedup();
    let file = dir.join("faults");
    std::fs::write(&file, list.join("\n")).or_lab(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faults_file_says_which_faults_a_node_has_and_its_loss() {
        let dir = std::env::temp_dir().join(format!("ferric-lab-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(faults(&dir).is_empty());
        assert_eq!(bmc_loss(&dir), 0);
        std::fs::write(dir.join("faults"), "power-stuck\n\nbmc-loss 30").unwrap();
        assert_eq!(faults(&dir), ["power-stuck", "bmc-loss 30"]);
        assert!(has_fault(&dir, "power-stuck") && has_fault(&dir, "bmc-loss"));
        assert!(!has_fault(&dir, "disk-fail"));
        assert_eq!(bmc_loss(&dir), 30);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
