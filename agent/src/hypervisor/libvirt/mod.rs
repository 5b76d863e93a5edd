//! Guests and volumes through libvirt.
//!
//! Guests Ferric defines carry `<ferric:guest spec="…"/>` metadata with a hash of their spec:
//! an `EnsureGuest` with the same spec changes nothing, a different one redefines the guest, and
//! a guest of that name without the metadata is someone else's and is refused. Volumes live in
//! the pools the agent is configured with: directories (created on first use) and existing LVM
//! volume groups (defined as pools on first use); a volume can be cloned from an image.
//!
//! Here: the configuration, the connection and error mapping every call shares. `guests.rs`
//! serves [`Compute`](crate::driver::Compute), `volumes.rs` [`Storage`](crate::driver::Storage)
//! with `clone.rs` for clones and clearing, `stats.rs` the guests' telemetry, and `xml.rs` the
//! XML written for libvirt and read back.

mod clone;
mod guests;
mod stats;
mod volumes;
mod xml;

pub use xml::{default_mac, domain_xml, lvm_pool_xml, spec_hash};

use crate::driver::DriverError;
use ferric_proto::plan::ErrorKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;

/// Namespace of Ferric's domain metadata.
pub const METADATA_NS: &str = "urn:ferric:guest:1";

/// Which accelerator guests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's TCG emulation.
    Tcg,
}

impl Accel {
    fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

/// Chooses the accelerator. `/dev/kvm` alone is no proof that KVM runs a stock guest kernel:
/// some hosts expose a paravirtual KVM (`kvm_pvm`) under which firmware runs but a Linux guest
/// hangs. KVM is chosen when `/dev/kvm` exists and a hardware KVM module (`kvm_intel` or
/// `kvm_amd`) is loaded; TCG otherwise.
pub fn probe_accel(dev_kvm: &std::path::Path, sys_module: &std::path::Path) -> Accel {
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| sys_module.join(m).exists());
    if dev_kvm.exists() && hardware {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Configuration of the libvirt driver.
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    /// Connection URI.
    pub uri: String,
    /// Directory pools the agent may create: name → directory.
    pub pools: BTreeMap<String, PathBuf>,
    /// LVM pools the agent may define: name → an existing volume group (needs device-mapper).
    pub lvm_pools: BTreeMap<String, String>,
    /// Accelerator for guests.
    pub accel: Accel,
    /// How long an ACPI shutdown may take before the guest is destroyed.
    pub shutdown_grace: Duration,
    /// `/proc/meminfo` (injected for tests).
    pub meminfo: PathBuf,
    /// `/sys/class/net` (injected for tests).
    pub sys_class_net: PathBuf,
    /// Where the agent keeps its state: records of volumes cloned from images live under
    /// `volume-images/`, of the volumes and bridges Ferric made under `owned/`.
    pub state_dir: PathBuf,
    /// Bridges guests may be attached to although Ferric did not make them (`--bridge`).
    pub bridges: Vec<String>,
    /// Volumes (`POOL/NAME`) plans may use although Ferric did not make them (`--volume`).
    pub volumes: Vec<String>,
}

impl LibvirtConfig {
    /// Defaults for the local system libvirtd.
    pub fn system(accel: Accel) -> Self {
        Self {
            uri: "qemu:///system".into(),
            pools: BTreeMap::new(),
            lvm_pools: BTreeMap::new(),
            accel,
            shutdown_grace: Duration::from_secs(60),
            meminfo: "/proc/meminfo".into(),
            sys_class_net: "/sys/class/net".into(),
            state_dir: "/var/lib/ferric-agent".into(),
            bridges: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// What plans may touch: what Ferric made here, and what the operator listed.
    pub fn owned(&self) -> super::owned::Owned {
        super::owned::Owned::new(
            &self.state_dir,
            self.bridges.iter().cloned(),
            self.volumes.iter().cloned(),
            std::iter::empty(),
        )
    }
}

/// The libvirt driver.
#[derive(Debug, Clone)]
pub struct Libvirt {
    cfg: LibvirtConfig,
    /// Previous CPU time per guest, for CPU percentages.
    cpu: std::sync::Arc<std::sync::Mutex<BTreeMap<String, (u64, Instant)>>>,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> DriverError {
    DriverError::new(kind, msg)
}

fn virt_err(what: &str, e: &virt::error::Error) -> DriverError {
    let kind = match e.code() {
        ErrorNumber::NoDomain | ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume => {
            ErrorKind::NotFound
        }
        ErrorNumber::OperationInvalid => ErrorKind::Conflict,
        _ => ErrorKind::Io,
    };
    err(kind, format!("{what}: {}", e.message()))
}

fn is(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code() == code
}

impl Libvirt {
    /// A driver with this configuration.
    pub fn new(cfg: LibvirtConfig) -> Self {
        virt::error::clear_error_callback();
        Self {
            cfg,
            cpu: Default::default(),
        }
    }

    async fn blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Connect, &LibvirtConfig) -> Result<T, DriverError> + Send + 'static,
    {
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connect::open(Some(&cfg.uri)).map_err(|e| {
                err(
                    ErrorKind::Unreachable,
                    format!("cannot connect to libvirt at {}: {}", cfg.uri, e.message()),
                )
            })?;
            let r = f(&conn, &cfg);
            let _ = conn.close();
            r
        })
        .await
        .map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("{what}: libvirt task failed: {e}"),
            )
        })?
    }

    fn domain(conn: &Connect, name: &str) -> Result<Option<Domain>, DriverError> {
        match Domain::lookup_by_name(conn, name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(virt_err(&format!("look up guest `{name}`"), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_probe_wants_a_hardware_kvm_module() {
        let d = tempfile::tempdir().unwrap();
        let kvm = d.path().join("kvm");
        let modules = d.path().join("module");
        std::fs::create_dir_all(modules.join("kvm_pvm")).unwrap();
        assert_eq!(probe_accel(&kvm, &modules), Accel::Tcg, "no /dev/kvm");
        std::fs::write(&kvm, "").unwrap();
        assert_eq!(
            probe_accel(&kvm, &modules),
            Accel::Tcg,
            "paravirtual KVM only"
        );
        std::fs::create_dir_all(modules.join("kvm_intel")).unwrap();
        assert_eq!(probe_accel(&kvm, &modules), Accel::Kvm);
    }
}
