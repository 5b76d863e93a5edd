//! `ferric lab bmc` for a `--bmc redfish` node: ferric-redfish's service over HTTPS on the
//! node's BMC address, port 443, with a certificate of its own made when the rack was built
//! (its fingerprint is in the node's BMC address, `?pin=`), driving the node's QEMU: power,
//! the boot override (device and, for a node with both firmwares, the mode), and a virtual CD
//! through QEMU's monitor.

use crate::bmc::{self, BMC_USER, REDFISH_PORT};
use crate::error::{IoContext, LabError, Result};
use crate::fault::has_fault;
use crate::layout::{Firmware, Node, Rack};
use crate::qemu::{
    acpi_shutdown, boot_mode, change_media, next_boot, power_off, power_on, qemu_pid,
};
use ferric_proto::hardware::{CpuInfo, DmiInfo, Inventory, NicInfo};
use ferric_redfish::service::{Boot, Machine, Service, ServiceConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The node's BMC certificate (DER) and key (PKCS#8 DER), in its directory.
fn cert_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("bmc-cert.der"), dir.join("bmc-key.der"))
}

/// Makes a node's BMC certificate — self-signed for its BMC address, as BMCs ship — unless
/// it has one.
pub(crate) fn make_certificate(rack: &Rack, n: &Node) -> Result<()> {
    let (cert, key) = cert_files(&rack.node_dir(n));
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let k = rcgen::KeyPair::generate().map_err(|e| LabError::Certificate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![n.bmc_ip.clone(), n.name.clone()])
        .map_err(|e| LabError::Certificate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{} BMC", n.name));
    let c = params
        .self_signed(&k)
        .map_err(|e| LabError::Certificate(e.to_string()))?;
    crate::layout::write_private(&key, &k.serialize_der())
        .or_lab(|| format!("cannot write {}", key.display()))?;
    std::fs::write(&cert, c.der()).or_lab(|| format!("cannot write {}", cert.display()))
}

/// The SHA-256 of a node's BMC certificate, when it has one.
pub fn fingerprint(rack: &Rack, n: &Node) -> Option<[u8; 32]> {
    let der = std::fs::read(cert_files(&rack.node_dir(n)).0).ok()?;
    Some(ferric_redfish::trust::fingerprint(&der))
}

/// A rack node as the machine behind a Redfish service.
#[derive(Debug)]
struct NodeMachine {
    rack: Rack,
    node: Node,
}

impl NodeMachine {
    fn dir(&self) -> PathBuf {
        self.rack.node_dir(&self.node)
    }

    /// Writes what the override says of the next boot: the device (`boot`) and, for a node
    /// with both firmwares, the mode (`mode`), which it takes at its next power-on.
    fn apply(&self, b: &Boot) -> Result<()> {
        if has_fault(&self.dir(), "boot-stuck") {
            return Ok(());
        }
        let device = if b.enabled == "Disabled" {
            "default"
        } else {
            match b.target.as_str() {
                "Pxe" | "UefiHttp" => "pxe",
                "Hdd" => "disk",
                "Cd" => "cdrom",
                "BiosSetup" => "bios",
                _ => "default",
            }
        };
        let boot = self.dir().join("boot");
        std::fs::write(&boot, device).or_lab(|| format!("cannot write {}", boot.display()))?;
        if self.node.firmware == Firmware::Both && qemu_pid(&self.rack, &self.node).is_none() {
            let mode = self.dir().join("mode");
            let m = if b.mode == "UEFI" { "uefi" } else { "bios" };
            std::fs::write(&mode, m).or_lab(|| format!("cannot write {}", mode.display()))?;
        }
        Ok(())
    }
}

impl Machine for NodeMachine {
    fn power_on(&self) -> bool {
        qemu_pid(&self.rack, &self.node).is_some()
    }

    fn reset(&self, reset: &str, boot: &Boot) -> std::result::Result<(), String> {
        if has_fault(&self.dir(), "power-stuck") {
            // The machine ignores its BMC, as a stuck power relay does; the BMC says yes.
            return Ok(());
        }
        let (rack, n) = (&self.rack, &self.node);
        let on = qemu_pid(rack, n).is_some();
        let r = match reset {
            "ForceOff" => {
                power_off(rack, n);
                Ok(())
            }
            "GracefulShutdown" if on => acpi_shutdown(rack, n),
            "GracefulShutdown" => Ok(()),
            "On" if on => Ok(()),
            _ => {
                power_off(rack, n);
                self.apply(boot).and_then(|()| power_on(rack, n))
            }
        };
        r.map_err(|e| {
            eprintln!("{}: {reset}: {e}", n.name);
            e.to_string()
        })
    }

    fn boot_changed(&self, boot: &Boot) -> std::result::Result<(), String> {
        let pxe = boot.enabled != "Disabled" && matches!(boot.target.as_str(), "Pxe" | "UefiHttp");
        self.apply(boot)
            .and_then(|()| next_boot(&self.rack, &self.node, pxe))
            .map_err(|e| e.to_string())
    }

    fn insert_media(&self, url: &str) -> std::result::Result<(), String> {
        let iso = self.dir().join("media.iso");
        fetch(url, &iso)?;
        change_media(&self.rack, &self.node, Some(&iso)).map_err(|e| e.to_string())
    }

    fn eject_media(&self) -> std::result::Result<(), String> {
        change_media(&self.rack, &self.node, None).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(self.dir().join("media.iso"));
        Ok(())
    }

    fn inventory(&self) -> Inventory {
        Inventory {
            cpu: CpuInfo {
                model: "QEMU Virtual CPU".into(),
                count: 1,
            },
            memory_bytes: self.rack.memory_mib << 20,
            disks: vec![],
            nics: vec![NicInfo {
                name: "nic0".into(),
                mac: self.node.mac.clone(),
                link_up: !has_fault(&self.dir(), "net-down"),
                speed_mbps: None,
            }],
            dmi: DmiInfo {
                vendor: "QEMU".into(),
                product: match boot_mode(&self.rack, &self.node) {
                    Firmware::Bios => "Standard PC (i440FX + PIIX, 1996)".into(),
                    _ => "Standard PC (Q35 + ICH9, 2009)".into(),
                },
                serial: self.node.name.clone(),
                uuid: String::new(),
            },
        }
    }
}

/// Fetches an ISO over plain HTTP into `to` (the lab's BMCs reach only the host's side of the
/// rack's networks, where the coordinator serves images without TLS).
fn fetch(url: &str, to: &Path) -> std::result::Result<(), String> {
    if !url.starts_with("http://") {
        return Err(format!(
            "{url}: the lab's BMC fetches virtual media over http:// only"
        ));
    }
    let mut resp = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .and_then(|c| c.get(url).send())
        .and_then(reqwest::blocking::Response::error_for_status)
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    let tmp = to.with_extension("part");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    resp.copy_to(&mut f)
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
}

/// Serves a node's Redfish BMC until killed.
pub fn serve(rack: Rack, node: Node) -> Result<()> {
    let dir = rack.node_dir(&node);
    let (cert, key) = cert_files(&dir);
    let read = |p: &Path| std::fs::read(p).or_lab(|| format!("cannot read {}", p.display()));
    let tls = ferric_redfish::service::tls_config(read(&cert)?, read(&key)?)
        .map_err(|e| LabError::Certificate(e.to_string()))?;
    let mut cfg = ServiceConfig::new(BMC_USER, &rack.bmc_password);
    cfg.uuid = uuid_of(&node.mac);
    cfg.max_sessions = usize::from(bmc::SESSIONS_PER_USER) * 4;
    let name = node.name.clone();
    let addr = (node.bmc_ip.clone(), REDFISH_PORT);
    eprintln!(
        "{name}: Ferric Redfish BMC on https://{}:{REDFISH_PORT}, certificate {}",
        node.bmc_ip,
        fingerprint(&rack, &node)
            .map(|f| ferric_proto::msg::fingerprint_text(&f))
            .unwrap_or_default()
    );
    let svc = Service::new(cfg, Arc::new(NodeMachine { rack, node }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .or_lab(|| "cannot start the BMC's runtime".to_owned())?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(&addr).await?;
        ferric_redfish::service::serve(l, Some(tls), svc.router()).await
    })
    .or_lab(|| format!("the Redfish BMC of {name} stopped"))
}

/// A UUID from a MAC address: the node's, stable.
fn uuid_of(mac: &str) -> String {
    let hex: String = mac.chars().filter(char::is_ascii_hexdigit).collect();
    format!(
        "4665726d-6963-4000-8000-{:0>12}",
        &hex[hex.len().saturating_sub(12)..]
    )
}
