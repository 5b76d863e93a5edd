//! A rack as built and recorded (`rack.json`): building it (`ferric lab up`), its status, and
//! removing it (`ferric lab down`).

use crate::error::{IoContext, LabError, Result};
use crate::fault::faults;
use crate::layout::{BmcKind, DiskBus, Firmware, NetBoot, Node, Rack};
use crate::process::{kill_wait, pid_alive};
use crate::{BMC_PORT, BMC_USER, bmc, bmc_lan, netns, qemu};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `ferric lab up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Rack name.
    pub name: String,
    /// Where its files go.
    pub dir: PathBuf,
    /// Nodes.
    pub nodes: u32,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// Disk per node, bytes.
    pub disk_bytes: u64,
    /// `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// The `ferric` binary (for ipmi_sim's chassis control).
    pub ferric: PathBuf,
    /// Firmware per node: node `i` takes entry `i`, the last entry the nodes past the list
    /// (one entry: every node); empty: UEFI.
    pub firmware: Vec<Firmware>,
    /// Disk bus per node, as `firmware`; empty: virtio.
    pub disk_bus: Vec<DiskBus>,
    /// Disk sector size per node (512 or 4096), as `firmware`; empty: 512.
    pub sector_size: Vec<u32>,
    /// Network boot per UEFI node, as `firmware`; empty: PXE.
    pub netboot: Vec<NetBoot>,
    /// BMC per node, as `firmware`; empty: ipmi_sim.
    pub bmc: Vec<BmcKind>,
}

/// Node `i`'s entry of a per-node list (the last entry for the nodes past it).
fn per_node<T: Copy>(list: &[T], i: usize, default: T) -> T {
    list.get(i).or(list.last()).copied().unwrap_or(default)
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 10
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(LabError::BadName(name.to_owned()));
    }
    Ok(())
}

/// The third octet of a `10.247.K.0/24` + `10.248.K.0/24` pair that no address in `taken`
/// (`ip -o addr show`) uses, starting from one the rack's name picks.
fn free_subnet(name: &str, taken: &str) -> Result<u8> {
    let first = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % 200;
    (0..200)
        .map(|k| 20 + ((first + k) % 200) as u8)
        .find(|k| {
            !taken.contains(&format!(" 10.247.{k}.")) && !taken.contains(&format!(" 10.248.{k}."))
        })
        .ok_or(LabError::NoFreeSubnet)
}

/// Builds a rack: namespace, links, bridge, one BMC per node (nodes stay powered off until
/// their BMC powers them on).
pub fn up(o: &UpOptions) -> Result<Rack> {
    valid_name(&o.name)?;
    if o.nodes == 0 || o.nodes > 200 {
        return Err(LabError::BadNodeCount(o.nodes));
    }
    for (what, len) in [
        ("--firmware", o.firmware.len()),
        ("--disk-bus", o.disk_bus.len()),
        ("--sector-size", o.sector_size.len()),
        ("--netboot", o.netboot.len()),
        ("--bmc", o.bmc.len()),
    ] {
        if len > o.nodes as usize {
            return Err(LabError::BadNodeOption(format!(
                "{what} names {len} nodes and the rack has {}",
                o.nodes
            )));
        }
    }
    if o.dir.join("rack.json").exists() {
        return Err(LabError::RackExists {
            name: o.name.clone(),
            dir: o.dir.clone(),
        });
    }
    let netns = format!("ferric-{}", o.name);
    if netns::exists(&netns) {
        return Err(LabError::NetnsExists {
            netns,
            name: o.name.clone(),
        });
    }
    for tool in ["ipmi_sim", qemu::QEMU, "ip"] {
        if crate::run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            return Err(LabError::MissingTool(tool));
        }
    }
    let taken = netns::ip(&["-o", "addr", "show"]).unwrap_or_default();
    let subnet = free_subnet(&o.name, &taken)?;
    let accel = match o.accel.as_str() {
        "auto" => qemu::probe_accel().to_owned(),
        "kvm" | "tcg" => o.accel.clone(),
        other => return Err(LabError::BadAccel(other.to_owned())),
    };
    std::fs::create_dir_all(&o.dir).or_lab(|| format!("cannot create {}", o.dir.display()))?;
    let seed: [u8; 3] = rand::random();
    let nodes: Vec<Node> = (0..o.nodes)
        .map(|i| Node {
            name: format!("{}-n{i}", o.name),
            index: i,
            mac: format!(
                "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                seed[0], seed[1], seed[2], i as u8
            ),
            bmc_ip: format!("10.247.{subnet}.{}", 10 + i),
            vm_port: 9000 + i as u16,
            tap: format!("tap{i}"),
            firmware: per_node(&o.firmware, i as usize, Firmware::Uefi),
            disk_bus: per_node(&o.disk_bus, i as usize, DiskBus::Virtio),
            sector_size: per_node(&o.sector_size, i as usize, 512),
            netboot: per_node(&o.netboot, i as usize, NetBoot::Pxe),
            bmc: per_node(&o.bmc, i as usize, BmcKind::Openipmi),
        })
        .collect();
    if let Some(n) = nodes
        .iter()
        .find(|n| n.firmware == Firmware::Both && n.bmc == BmcKind::Openipmi)
    {
        return Err(LabError::BadNodeOption(format!(
            "{}: --firmware both needs --bmc ferric or redfish (ipmi_sim drops the boot flags' \
             EFI bit, which picks the firmware)",
            n.name
        )));
    }
    if nodes.iter().any(|n| n.firmware.has_uefi()) && !Path::new(qemu::OVMF_CODE).exists() {
        return Err(LabError::MissingFirmware(qemu::OVMF_CODE));
    }
    let rack = Rack {
        name: o.name.clone(),
        dir: o.dir.clone(),
        netns,
        subnet,
        memory_mib: o.memory_mib,
        disk_bytes: o.disk_bytes,
        accel,
        bmc_password: hex::encode(rand::random::<[u8; 8]>()), // IPMI passwords are at most 20 bytes
        ferric: o.ferric.clone(),
        nodes,
    };
    // Written first: whatever follows fails, `down` finds what was made.
    rack.save()?;
    if let Err(e) = build(&rack) {
        let _ = down(&rack.dir);
        return Err(LabError::Build {
            rack: rack.name.clone(),
            source: Box::new(e),
        });
    }
    Ok(rack)
}

fn build(rack: &Rack) -> Result<()> {
    netns::create(rack)?;
    for n in &rack.nodes {
        let dir = rack.node_dir(n);
        std::fs::create_dir_all(&dir).or_lab(|| format!("cannot create {}", dir.display()))?;
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(rack.disk_bytes))
            .or_lab(|| format!("cannot make the disk {}", disk.display()))?;
        let boot = dir.join("boot");
        std::fs::write(&boot, "default").or_lab(|| format!("cannot write {}", boot.display()))?;
        if n.firmware.has_uefi() {
            // The node's NVRAM: kept from an earlier rack of this name, else fresh.
            let nvram = rack.nvram(n);
            if !nvram.exists() {
                let d = rack.nvram_dir();
                std::fs::create_dir_all(&d)
                    .and_then(|()| std::fs::copy(qemu::OVMF_VARS, &nvram))
                    .or_lab(|| format!("cannot make the NVRAM {}", nvram.display()))?;
            }
        }
        if n.bmc == BmcKind::Redfish {
            crate::redfish_bmc::make_certificate(rack, n)?;
        }
        bmc::start(rack, n)?;
    }
    for n in &rack.nodes {
        bmc::wait(rack, n)?;
    }
    bmc_lan::start(rack)
}

/// What `ferric lab status` shows of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node.
    pub name: String,
    /// `on` or `off` (whether its QEMU runs).
    pub power: String,
    /// Next boot device as the BMC set it.
    pub boot: String,
    /// `ipmi://admin@IP:623`, or `redfish://admin@IP:443?pin=sha256:…`.
    pub bmc: String,
    /// Whether the BMC process runs.
    pub bmc_up: bool,
    /// Which BMC it is.
    pub bmc_kind: BmcKind,
    /// NIC MAC.
    pub mac: String,
    /// `bios` or `uefi`.
    pub firmware: Firmware,
    /// Its disk: bus and sector size (`nvme/4096`).
    pub disk: String,
    /// Active faults.
    pub faults: Vec<String>,
    /// Last console lines.
    pub console_tail: Vec<String>,
}

/// A node's BMC address as Ferric enrolls it: `ipmi://admin@IP:623`, or for a Redfish BMC
/// `redfish://admin@IP:443?pin=sha256:…` with its certificate pinned.
pub fn bmc_address(rack: &Rack, n: &Node) -> String {
    match n.bmc {
        BmcKind::Redfish => {
            let pin = crate::redfish_bmc::fingerprint(rack, n)
                .map(|f| format!("?pin={}", ferric_proto::msg::fingerprint_text(&f)))
                .unwrap_or_default();
            format!(
                "redfish://{BMC_USER}@{}:{}{pin}",
                n.bmc_ip,
                crate::bmc::REDFISH_PORT
            )
        }
        _ => format!("ipmi://{BMC_USER}@{}:{BMC_PORT}", n.bmc_ip),
    }
}

/// Status of every node.
pub fn status(rack: &Rack) -> Vec<NodeStatus> {
    rack.nodes
        .iter()
        .map(|n| {
            let dir = rack.node_dir(n);
            // Firmware draws its menus in bytes that are not UTF-8: read what is text.
            let console = String::from_utf8_lossy(
                &std::fs::read(dir.join("console.log")).unwrap_or_default(),
            )
            .into_owned();
            let lines: Vec<String> = console
                .lines()
                .map(|l| l.trim_end().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            NodeStatus {
                name: n.name.clone(),
                power: if qemu::qemu_pid(rack, n).is_some() {
                    "on"
                } else {
                    "off"
                }
                .into(),
                boot: std::fs::read_to_string(dir.join("boot"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                bmc: bmc_address(rack, n),
                bmc_up: bmc::bmc_pid(rack, n).is_some(),
                bmc_kind: n.bmc,
                mac: n.mac.clone(),
                firmware: n.firmware,
                disk: format!("{}/{}", n.disk_bus, n.sector_size),
                faults: faults(&dir),
                console_tail: lines[lines.len().saturating_sub(3)..].to_vec(),
            }
        })
        .collect()
}

/// Removes a rack: every process, the namespace with its links, bridge and taps, and its
/// directory. Works from what `rack.json` and the pid files say, so also after a crash.
pub fn down(dir: &Path) -> Result<()> {
    let rack = Rack::load(dir)?;
    for n in &rack.nodes {
        if let Some(pid) = qemu::qemu_pid(&rack, n) {
            kill_wait(pid, Duration::from_secs(3));
        }
        if let Some(pid) = bmc::bmc_pid(&rack, n) {
            kill_wait(pid, Duration::from_secs(3));
        }
    }
    if let Some(pid) = pid_alive(&rack.dir.join("relay.pid"), &rack.dir.display().to_string()) {
        kill_wait(pid, Duration::from_secs(3));
    }
    netns::remove(&rack)?;
    std::fs::remove_dir_all(&rack.dir).or_lab(|| format!("cannot remove {}", rack.dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rack_names_are_short_lowercase_words() {
        for ok in ["a", "rack-1", "abcdefghij"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Rack", "abcdefghijk", "a_b", "a.b"] {
            assert!(
                matches!(valid_name(bad), Err(LabError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_subnet_in_use_on_the_host_is_skipped() {
        let first = free_subnet("r1", "").unwrap();
        assert!((20..220).contains(&first));
        let taken = format!("2: eth0    inet 10.248.{first}.7/24 brd …");
        let next = free_subnet("r1", &taken).unwrap();
        assert_eq!(next, 20 + (first - 20 + 1) % 200);
        let all: String = (20..220).map(|k| format!(" 10.247.{k}.1/24\n")).collect();
        assert!(matches!(
            free_subnet("r1", &all),
            Err(LabError::NoFreeSubnet)
        ));
    }

    #[test]
    fn a_missing_rack_names_its_directory_and_a_node_it_lacks() {
        let dir = Path::new("/nonexistent/ferric-lab-rack");
        let e = Rack::load(dir).unwrap_err();
        assert!(e.to_string().starts_with("no rack at /nonexistent"), "{e}");
        let rack = Rack {
            name: "r".into(),
            dir: dir.to_owned(),
            netns: "ferric-r".into(),
            subnet: 20,
            memory_mib: 128,
            disk_bytes: 1 << 20,
            accel: "tcg".into(),
            bmc_password: "p".into(),
            ferric: "ferric".into(),
            nodes: Vec::new(),
        };
        assert_eq!(
            rack.node("r-n9").unwrap_err().to_string(),
            "rack `r` has no node `r-n9`"
        );
    }
}
