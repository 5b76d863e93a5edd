//! The hardware inventory of this machine, read from `/proc` and `/sys` (under a root that
//! tests point elsewhere): CPUs, memory, disks, NICs, DMI identity. The ramdisk's `inspect`
//! step reports it; every agent announces its digest in `Hello`, so that the coordinator sees
//! when a host's hardware changed.

use ferric_proto::msg::{CpuInfo, DiskInfo, DmiInfo, Inventory, NicInfo};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where `/proc` and `/sys` are (the machine's own: `/`).
#[derive(Debug, Clone)]
pub struct Root(pub PathBuf);

impl Default for Root {
    fn default() -> Self {
        Root(PathBuf::from("/"))
    }
}

impl Root {
    pub(crate) fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }

    /// A system file (`/proc/…`, `/sys/…`) under the root.
    fn text(&self, p: &str) -> Option<String> {
        file(&self.path(p))
    }
}

/// A file's trimmed text, `None` when missing or empty.
fn file(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Reads the inventory. Missing files leave their fields empty: a machine without DMI (or a
/// container) still has an inventory.
pub fn read(root: &Root) -> Inventory {
    Inventory {
        cpu: cpu(root),
        memory_bytes: memory(root),
        disks: disks(root),
        nics: nics(root),
        dmi: dmi(root),
    }
}

fn cpu(root: &Root) -> CpuInfo {
    let info = root.text("/proc/cpuinfo").unwrap_or_default();
    let count = info.lines().filter(|l| l.starts_with("processor")).count() as u32;
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|r| r.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    CpuInfo { model, count }
}

fn memory(root: &Root) -> u64 {
    root.text("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Whole disks: block devices that are not partitions, loop, RAM, device-mapper, zram or
/// optical drives, nor hidden (an NVMe namespace's path through one controller, `nvme0c0n1`,
/// which has no device node: the disk is its multipath head, `nvme0n1`).
fn disks(root: &Root) -> Vec<DiskInfo> {
    let dir = root.path("/sys/block");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut out: Vec<DiskInfo> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "dm-", "zram", "sr", "md", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                return None;
            }
            let d = e.path();
            if file(&d.join("hidden")).as_deref() == Some("1") {
                return None;
            }
            let sectors: u64 = file(&d.join("size"))?.parse().ok()?;
            if sectors == 0 {
                return None;
            }
            Some(DiskInfo {
                size_bytes: sectors * 512,
                model: file(&d.join("device/model")).unwrap_or_default(),
                serial: file(&d.join("device/serial"))
                    .or_else(|| file(&d.join("serial")))
                    .unwrap_or_default(),
                wwn: file(&d.join("wwid"))
                    .or_else(|| file(&d.join("device/wwid")))
                    .unwrap_or_default(),
                rotational: file(&d.join("queue/rotational")).as_deref() == Some("1"),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Physical NICs: interfaces with a device behind them (not `lo`, bridges, veths, taps).
fn nics(root: &Root) -> Vec<NicInfo> {
    let dir = root.path("/sys/class/net");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut out: Vec<NicInfo> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let d = e.path();
            if !d.join("device").exists() {
                return None;
            }
            let mac = file(&d.join("address"))?;
            Some(NicInfo {
                link_up: file(&d.join("carrier")).as_deref() == Some("1"),
                speed_mbps: file(&d.join("speed"))
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|s| *s > 0)
                    .map(|s| s as u64),
                name,
                mac,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn dmi(root: &Root) -> DmiInfo {
    let f = |n: &str| {
        root.text(&format!("/sys/class/dmi/id/{n}"))
            .unwrap_or_default()
    };
    DmiInfo {
        vendor: f("sys_vendor"),
        product: f("product_name"),
        serial: f("product_serial"),
        uuid: f("product_uuid"),
    }
}

/// The digest announced in `Hello`: SHA-256 of what identifies the hardware (not the link
/// state or speed of NICs, which change on their own).
pub fn digest(inv: &Inventory) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("cpu {} {}\n", inv.cpu.count, inv.cpu.model));
    h.update(format!("memory {}\n", inv.memory_bytes));
    for d in &inv.disks {
        h.update(format!(
            "disk {} {} {} {}\n",
            d.name, d.size_bytes, d.serial, d.wwn
        ));
    }
    for n in &inv.nics {
        h.update(format!("nic {} {}\n", n.name, n.mac));
    }
    h.update(format!(
        "dmi {} {} {} {}\n",
        inv.dmi.vendor, inv.dmi.product, inv.dmi.serial, inv.dmi.uuid
    ));
    h.finalize().into()
}

/// How the firmware started this kernel: UEFI when the kernel has the EFI runtime
/// (`/sys/firmware/efi`), BIOS otherwise.
pub fn boot_mode(root: &Root) -> ferric_proto::hardware::BootMode {
    if root.path("/sys/firmware/efi").is_dir() {
        ferric_proto::hardware::BootMode::Uefi
    } else {
        ferric_proto::hardware::BootMode::Bios
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, p: &str, s: &str) {
        let p = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn the_inventory_is_read_from_proc_and_sys_and_its_digest_ignores_link_state() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        put(
            r,
            "/proc/cpuinfo",
            "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU version 2.5+\n",
        );
        put(
            r,
            "/proc/meminfo",
            "MemTotal:         501716 kB\nMemFree: 1 kB\n",
        );
        put(r, "/sys/block/vda/size", "2097152\n");
        put(r, "/sys/block/vda/queue/rotational", "1\n");
        put(r, "/sys/block/vda/serial", "ferric-disk-0\n");
        put(r, "/sys/block/loop0/size", "100\n");
        put(r, "/sys/block/sr0/size", "100\n");
        // An NVMe disk with multipath: its head, and its hidden path through controller 0.
        put(r, "/sys/block/nvme0n1/size", "4194304\n");
        put(r, "/sys/block/nvme0n1/hidden", "0\n");
        put(r, "/sys/block/nvme0c0n1/size", "4194304\n");
        put(r, "/sys/block/nvme0c0n1/hidden", "1\n");
        put(r, "/sys/class/net/eth0/address", "52:54:00:12:34:56\n");
        put(r, "/sys/class/net/eth0/carrier", "1\n");
        put(r, "/sys/class/net/eth0/speed", "1000\n");
        put(r, "/sys/class/net/eth0/device/vendor", "0x8086\n");
        put(r, "/sys/class/net/lo/address", "00:00:00:00:00:00\n");
        put(r, "/sys/class/dmi/id/sys_vendor", "QEMU\n");
        put(
            r,
            "/sys/class/dmi/id/product_uuid",
            "4d9a1b2c-0000-0000-0000-000000000001\n",
        );
        let root = Root(r.to_owned());
        let inv = read(&root);
        assert_eq!(inv.cpu.count, 2);
        assert_eq!(inv.cpu.model, "QEMU Virtual CPU version 2.5+");
        assert_eq!(inv.memory_bytes, 501_716 * 1024);
        let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"], "{:?}", inv.disks);
        let d = &inv.disks[1];
        assert_eq!(
            (
                d.name.as_str(),
                d.size_bytes,
                d.rotational,
                d.serial.as_str()
            ),
            ("vda", 1 << 30, true, "ferric-disk-0")
        );
        assert_eq!(inv.nics.len(), 1);
        assert_eq!(inv.nics[0].mac, "52:54:00:12:34:56");
        assert!(inv.nics[0].link_up);
        assert_eq!(inv.nics[0].speed_mbps, Some(1000));
        assert_eq!(inv.dmi.vendor, "QEMU");
        let before = digest(&inv);
        put(r, "/sys/class/net/eth0/carrier", "0\n");
        assert_eq!(digest(&read(&root)), before, "link state is not hardware");
        put(r, "/sys/block/vdb/size", "2048\n");
        assert_ne!(digest(&read(&root)), before, "a new disk is");
    }
}
