//! What a rack is made of, as recorded in `rack.json`: its nodes, names, subnets and the
//! interfaces on the host side. Every part of the lab reads it; building and removing a rack
//! is [`crate::rack`]'s.

use crate::error::{IoContext, LabError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A node's firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS), the NIC's iPXE option ROM for network boot.
    #[default]
    Bios,
    /// UEFI (OVMF), its own network stack on the NIC's driver, NVRAM kept per node.
    Uefi,
    /// Both, as a server with UEFI and a compatibility module: each power-on boots the mode
    /// the BMC's boot flags say (their EFI bit), else the mode of the boot before (UEFI at
    /// first). A q35 whose e1000 carries iPXE's legacy and EFI drivers, so the hardware stays
    /// the same in both modes. Needs the Ferric BMC (ipmi_sim drops the EFI bit).
    Both,
}

impl Firmware {
    /// Whether the node may boot UEFI (and so has an NVRAM).
    pub fn has_uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Both)
    }
}

/// The emulated BMC in front of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcKind {
    /// OpenIPMI's `ipmi_sim`: IPMI cipher suite 3, a SEL, `/dev/ipmi0` inside the machine
    /// (KCS); it keeps only the device of the boot flags.
    #[default]
    Openipmi,
    /// Ferric's own (`ferric lab bmc`, on ferric-ipmi): cipher suites 17 and 3, boot flags
    /// kept whole and honoured (the EFI bit picks a `both` node's firmware); no SEL, no
    /// sensors, no in-band interface.
    Ferric,
    /// Ferric's Redfish BMC (`ferric lab bmc`, on ferric-redfish): HTTPS on port 443 with its
    /// own certificate, sessions and basic authentication; power, boot override, virtual
    /// media through QEMU's monitor, an event log of what it did.
    Redfish,
}

/// The bus of a node's disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk.
    #[default]
    Virtio,
    /// An NVMe controller.
    Nvme,
    /// SATA (AHCI on q35, IDE on the BIOS machine): 512-byte sectors only.
    Sata,
}

/// Which network boot a UEFI node's firmware offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetBoot {
    /// PXE (DHCP, then TFTP), with UEFI HTTP boot after it.
    #[default]
    Pxe,
    /// UEFI HTTP boot only (the firmware's PXE is turned off).
    Http,
}

macro_rules! names {
    ($t:ty, $what:literal, $($v:ident = $s:literal),+) => {
        impl $t {
            /// The name on the command line and in `rack.json`.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s { $($s => Ok(<$t>::$v),)+ _ => Err(format!(concat!("`{}` is not a ", $what, " (", $($s, " "),+, ")"), s)) }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
names!(
    Firmware,
    "firmware",
    Bios = "bios",
    Uefi = "uefi",
    Both = "both"
);
names!(
    BmcKind,
    "lab BMC",
    Openipmi = "openipmi",
    Ferric = "ferric",
    Redfish = "redfish"
);
names!(
    DiskBus,
    "disk bus",
    Virtio = "virtio",
    Nvme = "nvme",
    Sata = "sata"
);
names!(NetBoot, "network boot", Pxe = "pxe", Http = "http");

/// A node of a rack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// `<rack>-n<i>`.
    pub name: String,
    /// Index in the rack, from 0.
    pub index: u32,
    /// NIC MAC address.
    pub mac: String,
    /// BMC address (in the rack's management network).
    pub bmc_ip: String,
    /// Port of the BMC's VM interface (inside the namespace).
    pub vm_port: u16,
    /// Tap device on the provisioning bridge.
    pub tap: String,
    /// Its firmware (racks made before firmware was chosen are BIOS).
    #[serde(default)]
    pub firmware: Firmware,
    /// Its disk's bus.
    #[serde(default)]
    pub disk_bus: DiskBus,
    /// Its disk's logical (and physical) sector size, bytes: 512 or 4096.
    #[serde(default = "default_sector")]
    pub sector_size: u32,
    /// Which network boot its firmware offers (UEFI nodes).
    #[serde(default)]
    pub netboot: NetBoot,
    /// Its BMC (racks made before the choice have ipmi_sim).
    #[serde(default)]
    pub bmc: BmcKind,
}

fn default_sector() -> u32 {
    512
}

/// A rack as built (`rack.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rack {
    /// Name (1 to 10 lowercase letters, digits, hyphens).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Network namespace.
    pub netns: String,
    /// Third octet of its subnets.
    pub subnet: u8,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// Disk per node, bytes.
    pub disk_bytes: u64,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The BMCs' administrator password (the rack file is readable by root only).
    pub bmc_password: String,
    /// The `ferric` binary ipmi_sim calls for chassis control.
    pub ferric: PathBuf,
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl Rack {
    /// Host-side address of the management link.
    pub fn mgmt_host_ip(&self) -> String {
        format!("10.247.{}.1", self.subnet)
    }
    /// Host-side address of the provisioning link.
    pub fn prov_host_ip(&self) -> String {
        format!("10.248.{}.1", self.subnet)
    }
    /// Host-side veth of the management link.
    pub fn mgmt_veth(&self) -> String {
        format!("flm-{}", self.name)
    }
    /// Host-side veth of the provisioning link.
    pub fn prov_veth(&self) -> String {
        format!("flp-{}", self.name)
    }
    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::UnknownNode {
                rack: self.name.clone(),
                node: name.to_owned(),
            })
    }
    /// A node's directory.
    pub fn node_dir(&self, n: &Node) -> PathBuf {
        self.dir.join(&n.name)
    }
    /// Where the rack's UEFI variables live: beside its directory, not in it, so that they
    /// outlast `ferric lab down` as a machine's NVRAM outlasts a reinstall.
    pub fn nvram_dir(&self) -> PathBuf {
        let mut d = self.dir.clone().into_os_string();
        d.push(".nvram");
        PathBuf::from(d)
    }
    /// A UEFI node's NVRAM (a copy of OVMF's variable store template).
    pub fn nvram(&self, n: &Node) -> PathBuf {
        self.nvram_dir().join(format!("{}.fd", n.name))
    }
    /// Loads `DIR/rack.json`.
    pub fn load(dir: &Path) -> Result<Rack> {
        let file = dir.join("rack.json");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(source) => {
                return Err(LabError::NoRack {
                    dir: dir.to_owned(),
                    file,
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| LabError::BadRackFile { file, source })
    }
    /// Writes `rack.json` (mode 0600: it holds the BMC password).
    pub(crate) fn save(&self) -> Result<()> {
        let p = self.dir.join("rack.json");
        serde_json::to_string_pretty(self)
            .map_err(std::io::Error::from)
            .and_then(|text| write_private(&p, text.as_bytes()))
            .or_lab(|| format!("cannot write {}", p.display()))
    }
}

/// Writes `path` readable by its owner only (also when it existed with another mode).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::io::Write::write_all(&mut f, bytes)
}
