//! What a rack is made of, as recorded in `rack.json`: its nodes, names, subnets and the
//! interfaces on the host side. Every part of the lab reads it; building and removing a rack
//! is [`crate::rack`]'s.

use crate::error::{IoContext, LabError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
