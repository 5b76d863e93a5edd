//! Guests and volumes through libvirt.
//!
//! Guests Ferric defines carry `<ferric:guest spec="…"/>` metadata with a hash of their spec:
//! an `EnsureGuest` with the same spec changes nothing, a different one redefines the guest, and
//! a guest of that name without the metadata is someone else's and is refused. Volumes live in
//! directory pools that the agent is configured with (created on first use).

use super::xml_escape;
use crate::driver::{Compute, DriverError, DriverResult, Storage};
use crate::telemetry::GuestStats;
use async_trait::async_trait;
use ferric_proto::msg::GuestSample;
use ferric_proto::plan::{
    ErrorKind, GuestBoot, GuestPowerAction, GuestSpec, VolumeFormat, VolumeImage,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;

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
    /// `volume-images/`.
    pub state_dir: PathBuf,
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
        }
    }
}

/// The libvirt driver.
#[derive(Debug, Clone)]
pub struct Libvirt {
    cfg: LibvirtConfig,
    /// Previous CPU time per guest, for CPU percentages.
    cpu: std::sync::Arc<std::sync::Mutex<BTreeMap<String, (u64, Instant)>>>,
}

/// For each `<tag …>…</tag>` block of `xml`, the first attribute value that follows `prefix`
/// (e.g. `<target dev='` → `vda`).
fn block_values(xml: &str, tag: &str, prefix: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag} "), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        let block = &rest[start..start + len];
        if let Some(v) = block
            .split(prefix)
            .nth(1)
            .and_then(|t| t.split('\'').next())
        {
            out.push(v.to_owned());
        }
        rest = &rest[start + len..];
    }
    out
}

/// `dev='…'` of the `<target>` in each `<tag>` block (disks, interfaces).
fn target_devs(xml: &str, tag: &str) -> Vec<String> {
    block_values(xml, tag, "<target dev='")
}

/// Sources of the `<disk>` elements: files (dir pools) and block devices (LVM pools).
fn disk_sources(xml: &str) -> Vec<String> {
    let mut out = block_values(xml, "disk", "<source file='");
    out.extend(block_values(xml, "disk", "<source dev='"));
    out
}

impl GuestStats for Libvirt {
    fn guests(&self) -> Vec<GuestSample> {
        let Ok(mut conn) = Connect::open(Some(&self.cfg.uri)) else {
            return Vec::new();
        };
        let domains = conn.list_all_domains(0).unwrap_or_default();
        let now = Instant::now();
        let mut prev = crate::lock(&self.cpu);
        let mut out = Vec::new();
        for d in domains {
            let Ok(xml) = d.get_xml_desc(0) else { continue };
            if !xml.contains(METADATA_NS) {
                continue;
            }
            let Ok(name) = d.get_name() else { continue };
            let Ok(info) = d.get_info() else { continue };
            let running = d.is_active().unwrap_or(false);
            let cpu_percent = match prev.insert(name.clone(), (info.cpu_time, now)) {
                Some((t0, i0)) if running && info.cpu_time >= t0 => {
                    let wall = now.duration_since(i0).as_nanos().max(1) as f64;
                    ((info.cpu_time - t0) as f64 / wall * 100.0) as f32
                }
                _ => 0.0,
            };
            let mut s = GuestSample {
                name,
                running,
                vcpus: info.nr_virt_cpu,
                memory_mib: info.max_mem / 1024,
                cpu_percent,
                mem_bytes: info.memory * 1024,
                block_rd_bytes: 0,
                block_wr_bytes: 0,
                net_rx_bytes: 0,
                net_tx_bytes: 0,
                missing_disks: Vec::new(),
                disk_sizes: Vec::new(),
            };
            for path in disk_sources(&xml) {
                if !std::path::Path::new(&path).exists() {
                    s.missing_disks.push(path);
                } else if let Ok(b) = d.get_block_info(&path, 0) {
                    s.disk_sizes.push((path, b.capacity));
                }
            }
            if running {
                for dev in target_devs(&xml, "disk") {
                    if let Ok(b) = d.get_block_stats(&dev) {
                        s.block_rd_bytes += b.rd_bytes.max(0) as u64;
                        s.block_wr_bytes += b.wr_bytes.max(0) as u64;
                    }
                }
                for dev in target_devs(&xml, "interface") {
                    if let Ok(n) = d.interface_stats(&dev) {
                        s.net_rx_bytes += n.rx_bytes.max(0) as u64;
                        s.net_tx_bytes += n.tx_bytes.max(0) as u64;
                    }
                }
            }
            out.push(s);
        }
        let _ = conn.close();
        out
    }
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

/// A deterministic locally administered MAC for NIC `index` of `guest`.
pub fn default_mac(guest: &str, index: usize) -> String {
    let h = Sha256::digest(format!("{guest}/{index}").as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// Hash of a guest spec, stored in the domain's metadata.
pub fn spec_hash(spec: &GuestSpec, accel: Accel) -> String {
    let json = serde_json::to_vec(&(spec, accel.domain_type())).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..12])
}

/// The domain XML for a spec. `disks` are the volumes' (path, format) in order.
pub fn domain_xml(spec: &GuestSpec, accel: Accel, disks: &[(String, String)]) -> String {
    let mut x = String::new();
    let e = xml_escape;
    let _ = writeln!(x, "<domain type='{}'>", accel.domain_type());
    let _ = writeln!(x, "  <name>{}</name>", e(&spec.name));
    let _ = writeln!(
        x,
        "  <metadata><ferric:guest xmlns:ferric='{METADATA_NS}' spec='{}'/></metadata>",
        spec_hash(spec, accel)
    );
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", spec.vcpus);
    let _ = writeln!(x, "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>");
    match &spec.boot {
        GuestBoot::Disk => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
        }
        GuestBoot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", e(kernel));
            let _ = writeln!(x, "    <initrd>{}</initrd>", e(initrd));
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", e(cmdline));
        }
    }
    let _ = writeln!(x, "  </os>");
    // QEMU 10 rejects the `-no-acpi` libvirt 9 passes without this.
    let _ = writeln!(x, "  <features><acpi/></features>");
    let _ = writeln!(
        x,
        "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>"
    );
    let _ = writeln!(x, "  <devices>");
    for (i, (path, format)) in disks.iter().enumerate() {
        let dev = format!("vd{}", (b'a' + i as u8) as char);
        let _ = writeln!(x, "    {}", disk_xml(path, format, &dev));
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        let mac = nic
            .mac
            .clone()
            .unwrap_or_else(|| default_mac(&spec.name, i));
        let _ = writeln!(
            x,
            "    <interface type='bridge'><source bridge='{}'/><mac address='{}'/><model type='virtio'/></interface>",
            e(&nic.bridge),
            e(&mac)
        );
    }
    match &spec.serial_log {
        Some(log) => {
            let _ = writeln!(
                x,
                "    <serial type='file'><source path='{}' append='on'/><target port='0'/></serial>",
                e(log)
            );
        }
        None => {
            let _ = writeln!(x, "    <serial type='pty'><target port='0'/></serial>");
        }
    }
    let _ = writeln!(x, "    <memballoon model='none'/>");
    let _ = writeln!(x, "  </devices>\n</domain>");
    x
}

/// The `<disk>…</disk>` element of `domain_xml` whose source is `path`, if any.
fn disk_element<'a>(domain_xml: &'a str, path: &str) -> Option<&'a str> {
    let mut rest = domain_xml;
    while let Some(start) = rest.find("<disk ") {
        let end = rest[start..].find("</disk>")? + start + "</disk>".len();
        let el = &rest[start..end];
        let matches = |attr: &str| {
            el.contains(&format!("{attr}='{path}'")) || el.contains(&format!("{attr}=\"{path}\""))
        };
        // A file (dir pools) or a block device (LVM pools).
        if matches("file") || matches("dev") && el.contains("type='block'") {
            return Some(el);
        }
        rest = &rest[end..];
    }
    None
}

/// A guest disk: a block device (an LVM volume) or a file.
fn disk_xml(path: &str, format: &str, dev: &str) -> String {
    let e = xml_escape;
    if path.starts_with("/dev/") {
        format!(
            "<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/><source dev='{}'/><target dev='{}' bus='virtio'/></disk>",
            e(path),
            e(dev)
        )
    } else {
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='{}'/><source file='{}'/><target dev='{}' bus='virtio'/></disk>",
            e(format),
            e(path),
            e(dev)
        )
    }
}

/// Libvirt's definition of an LVM pool over an existing volume group.
pub fn lvm_pool_xml(name: &str, vg: &str) -> String {
    format!(
        "<pool type='logical'><name>{}</name><source><name>{}</name><format type='lvm2'/></source><target><path>/dev/{}</path></target></pool>",
        xml_escape(name),
        xml_escape(vg),
        xml_escape(vg)
    )
}

/// Whether `pool` is an LVM (`logical`) pool.
fn is_logical(pool: &StoragePool) -> bool {
    pool.get_xml_desc(0)
        .is_ok_and(|x| x.contains("type='logical'"))
}

/// Grows the logical volume at `path` to at least `size_bytes` (LVM rounds up to whole
/// extents).
fn lvextend(path: &str, size_bytes: u64) -> Result<(), DriverError> {
    let out = std::process::Command::new("lvextend")
        .args(["--size", &format!("{size_bytes}b"), path])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            err(
                ErrorKind::Unsupported,
                format!("grow LVM volume {path}: cannot run lvextend (Debian package lvm2): {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(err(
            ErrorKind::Io,
            format!(
                "grow LVM volume {path}: lvextend failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

fn is_block_device(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Clears a block device from `offset` on: an LVM volume is carved from extents that may hold
/// a deleted volume's data, which no guest may read.
fn zero_from(path: &str, offset: u64) -> Result<(), DriverError> {
    ferric_images::write::zero_device_from(std::path::Path::new(path), offset)
        .map(|_| ())
        .map_err(|e| err(ErrorKind::Io, format!("clear {path}: {e}")))
}

/// Whether the kernel has device-mapper (LVM needs it).
fn device_mapper() -> bool {
    std::fs::read_to_string("/proc/devices").is_ok_and(|d| d.contains("device-mapper"))
}

fn vol_format(vol: &StorageVol) -> String {
    let xml = vol.get_xml_desc(0).unwrap_or_default();
    xml.split("<format type='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or("raw")
        .to_owned()
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

    fn pool(
        conn: &Connect,
        cfg: &LibvirtConfig,
        name: &str,
        create: bool,
    ) -> Result<StoragePool, DriverError> {
        let pool = match StoragePool::lookup_by_name(conn, name) {
            Ok(p) => p,
            Err(e)
                if is(&e, ErrorNumber::NoStoragePool)
                    && create
                    && cfg.lvm_pools.contains_key(name) =>
            {
                let vg = &cfg.lvm_pools[name];
                if !device_mapper() {
                    return Err(err(
                        ErrorKind::Unsupported,
                        format!(
                            "storage pool `{name}` is LVM volume group `{vg}`, but this kernel has no device-mapper"
                        ),
                    ));
                }
                let p = StoragePool::define_xml(conn, &lvm_pool_xml(name, vg), 0).map_err(|e| {
                    virt_err(
                        &format!("define LVM pool `{name}` on volume group `{vg}`"),
                        &e,
                    )
                })?;
                let _ = p.set_autostart(true);
                p
            }
            Err(e) if is(&e, ErrorNumber::NoStoragePool) => {
                let Some(dir) = cfg.pools.get(name).filter(|_| create) else {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!("storage pool `{name}` does not exist on this host"),
                    ));
                };
                std::fs::create_dir_all(dir).map_err(|e| {
                    err(
                        ErrorKind::Io,
                        format!("cannot create pool directory {}: {e}", dir.display()),
                    )
                })?;
                let xml = format!(
                    "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
                    xml_escape(name),
                    xml_escape(&dir.display().to_string())
                );
                let p = StoragePool::define_xml(conn, &xml, 0)
                    .map_err(|e| virt_err(&format!("define pool `{name}`"), &e))?;
                let _ = p.set_autostart(true);
                p
            }
            Err(e) => return Err(virt_err(&format!("look up pool `{name}`"), &e)),
        };
        if !pool.is_active().map_err(|e| virt_err("pool state", &e))? {
            pool.create(0)
                .map_err(|e| virt_err(&format!("start pool `{name}`"), &e))?;
        }
        Ok(pool)
    }

    fn volume(
        conn: &Connect,
        cfg: &LibvirtConfig,
        pool: &str,
        name: &str,
    ) -> Result<StorageVol, DriverError> {
        let p = Self::pool(conn, cfg, pool, false)?;
        let _ = p.refresh(0);
        StorageVol::lookup_by_name(&p, name).map_err(|e| {
            if is(&e, ErrorNumber::NoStorageVolume) {
                err(
                    ErrorKind::NotFound,
                    format!("volume `{pool}/{name}` does not exist"),
                )
            } else {
                virt_err(&format!("look up volume `{pool}/{name}`"), &e)
            }
        })
    }

    fn domain(conn: &Connect, name: &str) -> Result<Option<Domain>, DriverError> {
        match Domain::lookup_by_name(conn, name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(virt_err(&format!("look up guest `{name}`"), &e)),
        }
    }

    fn host_memory_mib(cfg: &LibvirtConfig) -> Option<u64> {
        let text = std::fs::read_to_string(&cfg.meminfo).ok()?;
        let kib: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024)
    }

    /// Everything that can be checked before touching libvirt; names the field.
    fn precheck(
        conn: &Connect,
        cfg: &LibvirtConfig,
        spec: &GuestSpec,
    ) -> Result<Vec<(String, String)>, DriverError> {
        if let Some(host) = Self::host_memory_mib(cfg)
            && spec.memory_mib > host
        {
            return Err(err(
                ErrorKind::InvalidSpec,
                format!(
                    "guest `{}`: field `memory_mib` asks for {} MiB but the host has {host} MiB",
                    spec.name, spec.memory_mib
                ),
            ));
        }
        for nic in &spec.nics {
            if !cfg.sys_class_net.join(&nic.bridge).join("bridge").is_dir() {
                return Err(err(
                    ErrorKind::NotFound,
                    format!(
                        "guest `{}`: field `nics.bridge`: bridge `{}` does not exist on this host",
                        spec.name, nic.bridge
                    ),
                ));
            }
        }
        if let GuestBoot::Kernel { kernel, initrd, .. } = &spec.boot {
            for (field, path) in [("boot.kernel", kernel), ("boot.initrd", initrd)] {
                if !std::path::Path::new(path).is_file() {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!(
                            "guest `{}`: field `{field}`: {path} does not exist",
                            spec.name
                        ),
                    ));
                }
            }
        }
        let mut disks = Vec::with_capacity(spec.volumes.len());
        for v in &spec.volumes {
            let vol = Self::volume(conn, cfg, &v.pool, &v.name).map_err(|e| {
                err(
                    e.kind,
                    format!("guest `{}`: field `volumes`: {}", spec.name, e.message),
                )
            })?;
            let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
            disks.push((path, vol_format(&vol)));
        }
        Ok(disks)
    }
}

/// What the agent knows of a volume cloned from an image: `<name>.writing` while the clone
/// runs, `<name>` holding the image's checksum once it is complete; and of an LVM volume being
/// cleared: `<name>.zeroing`, holding the offset from which it is, until it is done.
struct CloneRecord {
    done: PathBuf,
    writing: PathBuf,
    zeroing: PathBuf,
}

enum CloneState {
    /// Cloned from this image.
    Done,
    /// A clone started and did not finish.
    Interrupted,
    /// Not cloned by Ferric (or from another image).
    None,
}

impl CloneRecord {
    fn new(cfg: &LibvirtConfig, pool: &str, name: &str) -> CloneRecord {
        let dir = cfg.state_dir.join("volume-images").join(pool);
        CloneRecord {
            done: dir.join(name),
            writing: dir.join(format!("{name}.writing")),
            zeroing: dir.join(format!("{name}.zeroing")),
        }
    }

    /// Notes, before the volume is made or grown, that it must be cleared from `offset`: an
    /// agent stopped (or a step timed out) halfway clears it again on the next run, instead of
    /// handing out old data.
    fn zeroing_from(&self, offset: u64) -> Result<(), DriverError> {
        let io = |e: std::io::Error| {
            err(
                ErrorKind::Io,
                format!("write {}: {e}", self.zeroing.display()),
            )
        };
        if let Some(dir) = self.zeroing.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&self.zeroing, offset.to_string()).map_err(io)
    }

    /// Where an unfinished clearing started, if one is noted.
    fn pending_zero(&self) -> Option<u64> {
        std::fs::read_to_string(&self.zeroing)
            .ok()
            .map(|s| s.trim().parse().unwrap_or(0))
    }

    /// Clears the device at `path` from `offset`, then forgets the note.
    fn zero(&self, path: &str, offset: u64) -> Result<(), DriverError> {
        zero_from(path, offset)?;
        let _ = std::fs::remove_file(&self.zeroing);
        Ok(())
    }

    fn state(&self, checksum: &str) -> CloneState {
        if std::fs::read_to_string(&self.done).is_ok_and(|c| c.trim() == checksum) {
            CloneState::Done
        } else if self.writing.exists() {
            CloneState::Interrupted
        } else {
            CloneState::None
        }
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.done);
        let _ = std::fs::remove_file(&self.writing);
        let _ = std::fs::remove_file(&self.zeroing);
    }
}

fn image_err(img: &VolumeImage, e: ferric_images::inspect::ImageError) -> DriverError {
    use ferric_images::inspect::ImageError as E;
    let kind = match e {
        E::Io(_) => ErrorKind::Io,
        _ => ErrorKind::InvalidSpec,
    };
    err(kind, format!("image {}: {e}", img.url))
}

/// Writes `img` into the volume file at `path` (the disk, then grown to `size_bytes`), checked
/// against its checksum before the volume counts as cloned.
fn clone_image(
    path: &str,
    img: &VolumeImage,
    size_bytes: u64,
    record: &CloneRecord,
) -> Result<(), DriverError> {
    use ferric_images::source::{Algo, ImageSource, SourceReader};
    let io = |what: &str, e: std::io::Error| err(ErrorKind::Io, format!("{what}: {e}"));
    if let Some(dir) = record.writing.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
    }
    let declared = ferric_images::inspect::Format::parse_declared(img.format.as_deref())
        .map_err(|e| err(ErrorKind::InvalidSpec, format!("field `image.format`: {e}")))?;
    let expected = Algo::parse_checksum(&img.checksum).map_err(|e| {
        err(
            ErrorKind::InvalidSpec,
            format!("field `image.checksum`: {e}"),
        )
    })?;
    std::fs::write(&record.writing, &img.checksum)
        .map_err(|e| io(&format!("write {}", record.writing.display()), e))?;
    let _ = std::fs::remove_file(&record.done);
    let mut source = ImageSource::parse(&img.url).open().map_err(|e| {
        err(
            ErrorKind::Unreachable,
            format!("image {}: cannot be fetched: {e}", img.url),
        )
    })?;
    // The disk must fit the volume before a byte is written.
    let inspection = ferric_images::inspect::inspect(&mut SourceReader::new(&mut *source))
        .map_err(|e| image_err(img, e))?;
    if let Some(v) = inspection.virtual_size
        && v > size_bytes
    {
        return Err(err(
            ErrorKind::InvalidSpec,
            format!(
                "field `size_bytes`: the volume would be {size_bytes} bytes but the disk in {} is {v}",
                img.url
            ),
        ));
    }
    let opts = ferric_images::write::WriteOptions {
        declared,
        expected: Some(expected),
        direct: None,
    };
    let report = ferric_images::write::write_from(
        &mut *source,
        std::path::Path::new(path),
        &opts,
        &mut |_| {},
    )
    .map_err(|e| image_err(img, e))?;
    if report.virtual_size > size_bytes {
        return Err(err(
            ErrorKind::InvalidSpec,
            format!(
                "field `size_bytes`: the volume is {size_bytes} bytes but the disk in {} is {}",
                img.url, report.virtual_size
            ),
        ));
    }
    if is_block_device(path) {
        // The device keeps its size; past the disk it keeps old bytes, which are cleared.
        zero_from(path, report.virtual_size)?;
    } else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io(&format!("open {path}"), e))?;
        f.set_len(size_bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&format!("grow {path}"), e))?;
    }
    std::fs::write(&record.done, &img.checksum)
        .map_err(|e| io(&format!("write {}", record.done.display()), e))?;
    let _ = std::fs::remove_file(&record.writing);
    tracing::info!(volume = %path, image = %img.url, written = report.written, resumes = report.resumes, "volume cloned from image");
    Ok(())
}

#[async_trait]
impl Storage for Libvirt {
    async fn ensure_volume(
        &self,
        pool: &str,
        name: &str,
        size_bytes: u64,
        format: VolumeFormat,
        image: Option<&VolumeImage>,
    ) -> DriverResult {
        let (pool, name, image) = (pool.to_owned(), name.to_owned(), image.cloned());
        self.blocking("ensure_volume", move |conn, cfg| {
            let p = Self::pool(conn, cfg, &pool, true)?;
            let _ = p.refresh(0);
            let record = CloneRecord::new(cfg, &pool, &name);
            match StorageVol::lookup_by_name(&p, &name) {
                Ok(vol) => {
                    if let Some(img) = &image {
                        match record.state(&img.checksum) {
                            CloneState::Done => {}
                            CloneState::Interrupted => {
                                // A clone cut short (agent stopped, link broke): write it again.
                                let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                                clone_image(&path, img, size_bytes, &record)?;
                                return Ok(true);
                            }
                            CloneState::None => {
                                return Err(err(
                                    ErrorKind::Conflict,
                                    format!(
                                        "volume `{pool}/{name}` exists and was not cloned from {}; delete it first",
                                        img.url
                                    ),
                                ));
                            }
                        }
                    }
                    // A clearing cut short (agent stopped, step timed out) is done again before
                    // the volume counts as made.
                    let mut changed = false;
                    if let Some(from) = record.pending_zero() {
                        let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                        record.zero(&path, from)?;
                        changed = true;
                    }
                    let info = vol.get_info().map_err(|e| virt_err("volume info", &e))?;
                    if info.capacity >= size_bytes {
                        return Ok(changed);
                    }
                    let logical = is_logical(&p);
                    if logical {
                        record.zeroing_from(info.capacity)?;
                    }
                    let grown = match vol.resize(size_bytes, 0) {
                        Ok(_) => Ok(()),
                        // libvirt's logical backend (before 10.x) cannot resize: LVM can.
                        Err(e) if is(&e, ErrorNumber::NoSupport) && logical => {
                            let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                            lvextend(&path, size_bytes).inspect(|()| {
                                let _ = p.refresh(0);
                            })
                        }
                        Err(e) => Err(virt_err(&format!("grow volume `{pool}/{name}`"), &e)),
                    };
                    if let Err(e) = grown {
                        // Nothing grew: nothing to clear.
                        if logical {
                            let _ = std::fs::remove_file(&record.zeroing);
                        }
                        return Err(e);
                    }
                    if logical {
                        let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                        record.zero(&path, info.capacity)?;
                    }
                    Ok(true)
                }
                Err(e) if is(&e, ErrorNumber::NoStorageVolume) => {
                    // A clone is written as raw disk bytes: its volume is raw. An LVM volume is
                    // a raw block device whatever was asked.
                    let logical = is_logical(&p);
                    let format = if image.is_some() || logical { VolumeFormat::Raw } else { format };
                    let xml = if logical {
                        format!(
                            "<volume><name>{}</name><capacity unit='bytes'>{size_bytes}</capacity></volume>",
                            xml_escape(&name)
                        )
                    } else {
                        format!(
                            "<volume><name>{}</name><capacity unit='bytes'>{size_bytes}</capacity><target><format type='{}'/></target></volume>",
                            xml_escape(&name),
                            format.as_str()
                        )
                    };
                    let blank_lv = logical && image.is_none();
                    if blank_lv {
                        record.zeroing_from(0)?;
                    }
                    let vol = StorageVol::create_xml(&p, &xml, 0).map_err(|e| {
                        if blank_lv {
                            let _ = std::fs::remove_file(&record.zeroing);
                        }
                        virt_err(&format!("create volume `{pool}/{name}`"), &e)
                    })?;
                    if blank_lv {
                        let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                        if let Err(e) = record.zero(&path, 0) {
                            let _ = vol.delete(0);
                            record.clear();
                            return Err(e);
                        }
                    }
                    if let Some(img) = &image {
                        let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                        if let Err(e) = clone_image(&path, img, size_bytes, &record) {
                            // Nothing half-made stays behind; a retry starts afresh.
                            let _ = vol.delete(0);
                            record.clear();
                            return Err(e);
                        }
                    }
                    Ok(true)
                }
                Err(e) => Err(virt_err(&format!("look up volume `{pool}/{name}`"), &e)),
            }
        })
        .await
    }

    async fn delete_volume(&self, pool: &str, name: &str) -> DriverResult {
        let (pool, name) = (pool.to_owned(), name.to_owned());
        self.blocking("delete_volume", move |conn, cfg| {
            match Self::volume(conn, cfg, &pool, &name) {
                Ok(vol) => {
                    vol.delete(0)
                        .map_err(|e| virt_err(&format!("delete volume `{pool}/{name}`"), &e))?;
                    CloneRecord::new(cfg, &pool, &name).clear();
                    Ok(true)
                }
                Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

#[async_trait]
impl Compute for Libvirt {
    async fn ensure_guest(&self, spec: &GuestSpec) -> DriverResult {
        let spec = spec.clone();
        self.blocking("ensure_guest", move |conn, cfg| {
            let disks = Self::precheck(conn, cfg, &spec)?;
            let hash = spec_hash(&spec, cfg.accel);
            if let Some(d) = Self::domain(conn, &spec.name)? {
                let xml = d
                    .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                    .map_err(|e| virt_err("guest XML", &e))?;
                if !xml.contains(METADATA_NS) {
                    return Err(err(
                        ErrorKind::Conflict,
                        format!("guest `{}` exists and is not managed by Ferric", spec.name),
                    ));
                }
                if xml.contains(&format!("spec='{hash}'"))
                    || xml.contains(&format!("spec=\"{hash}\""))
                {
                    return Ok(false);
                }
            }
            if let Some(parent) = spec
                .serial_log
                .as_deref()
                .and_then(|l| std::path::Path::new(l).parent())
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    err(
                        ErrorKind::Io,
                        format!("cannot create {}: {e}", parent.display()),
                    )
                })?;
            }
            Domain::define_xml(conn, &domain_xml(&spec, cfg.accel, &disks))
                .map_err(|e| virt_err(&format!("define guest `{}`", spec.name), &e))?;
            Ok(true)
        })
        .await
    }

    async fn guest_power(&self, name: &str, action: GuestPowerAction) -> DriverResult {
        let name = name.to_owned();
        self.blocking("guest_power", move |conn, cfg| {
            let d = Self::domain(conn, &name)?
                .ok_or_else(|| err(ErrorKind::NotFound, format!("guest `{name}` does not exist")))?;
            let active = d.is_active().map_err(|e| virt_err("guest state", &e))?;
            match action {
                GuestPowerAction::Start if active => Ok(false),
                GuestPowerAction::Start => {
                    d.create().map_err(|e| virt_err(&format!("start guest `{name}`"), &e))?;
                    Ok(true)
                }
                GuestPowerAction::Destroy | GuestPowerAction::Shutdown if !active => Ok(false),
                GuestPowerAction::Destroy => {
                    d.destroy().map_err(|e| virt_err(&format!("destroy guest `{name}`"), &e))?;
                    Ok(true)
                }
                GuestPowerAction::Shutdown => {
                    let _ = d.shutdown();
                    let deadline = Instant::now() + cfg.shutdown_grace;
                    while Instant::now() < deadline {
                        if !d.is_active().unwrap_or(true) {
                            return Ok(true);
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    tracing::info!(guest = %name, grace = ?cfg.shutdown_grace, "guest ignored the ACPI shutdown; destroying it");
                    match d.destroy() {
                        Ok(()) => Ok(true),
                        Err(e) if is(&e, ErrorNumber::OperationInvalid) => Ok(true), // stopped meanwhile
                        Err(e) => Err(virt_err(&format!("destroy guest `{name}`"), &e)),
                    }
                }
                GuestPowerAction::Reboot => {
                    if !active {
                        return Err(err(ErrorKind::Conflict, format!("guest `{name}` is not running")));
                    }
                    d.reboot(0).map_err(|e| virt_err(&format!("reboot guest `{name}`"), &e))?;
                    Ok(true)
                }
            }
        })
        .await
    }

    async fn delete_guest(&self, name: &str) -> DriverResult {
        let name = name.to_owned();
        self.blocking("delete_guest", move |conn, _| {
            let Some(d) = Self::domain(conn, &name)? else {
                return Ok(false);
            };
            let xml = d
                .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                .map_err(|e| virt_err("guest XML", &e))?;
            if !xml.contains(METADATA_NS) {
                return Err(err(
                    ErrorKind::Conflict,
                    format!("guest `{name}` is not managed by Ferric; not deleting it"),
                ));
            }
            if d.is_active().unwrap_or(false) {
                let _ = d.destroy();
            }
            d.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_NVRAM)
                .map_err(|e| virt_err(&format!("undefine guest `{name}`"), &e))?;
            Ok(true)
        })
        .await
    }

    async fn attach_volume(
        &self,
        guest: &str,
        pool: &str,
        volume: &str,
        target: &str,
    ) -> DriverResult {
        let (guest, pool, volume, target) = (
            guest.to_owned(),
            pool.to_owned(),
            volume.to_owned(),
            target.to_owned(),
        );
        self.blocking("attach_volume", move |conn, cfg| {
            let d = Self::domain(conn, &guest)?.ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("guest `{guest}` does not exist"),
                )
            })?;
            let vol = Self::volume(conn, cfg, &pool, &volume)?;
            let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
            let xml = d.get_xml_desc(0).map_err(|e| virt_err("guest XML", &e))?;
            if disk_element(&xml, &path).is_some() {
                return Ok(false);
            }
            if xml.contains(&format!("dev='{target}'")) {
                return Err(err(
                    ErrorKind::Conflict,
                    format!("guest `{guest}` already has a disk `{target}`"),
                ));
            }
            let disk = disk_xml(&path, &vol_format(&vol), &target);
            let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
            if d.is_active().unwrap_or(false) {
                flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
            }
            d.attach_device_flags(&disk, flags)
                .map_err(|e| virt_err(&format!("attach `{pool}/{volume}` to `{guest}`"), &e))?;
            Ok(true)
        })
        .await
    }

    async fn detach_volume(&self, guest: &str, pool: &str, volume: &str) -> DriverResult {
        let (guest, pool, volume) = (guest.to_owned(), pool.to_owned(), volume.to_owned());
        self.blocking("detach_volume", move |conn, cfg| {
            let Some(d) = Self::domain(conn, &guest)? else {
                return Ok(false);
            };
            let path = match Self::volume(conn, cfg, &pool, &volume) {
                Ok(v) => v.get_path().map_err(|e| virt_err("volume path", &e))?,
                Err(e) if e.kind == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            let xml = d.get_xml_desc(0).map_err(|e| virt_err("guest XML", &e))?;
            let Some(el) = disk_element(&xml, &path) else {
                return Ok(false);
            };
            let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
            if d.is_active().unwrap_or(false) {
                flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
            }
            d.detach_device_flags(el, flags)
                .map_err(|e| virt_err(&format!("detach `{pool}/{volume}` from `{guest}`"), &e))?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn lvm_pools_and_block_disks_are_described_for_libvirt() {
        assert_eq!(
            lvm_pool_xml("fast", "vg0"),
            "<pool type='logical'><name>fast</name><source><name>vg0</name><format type='lvm2'/></source><target><path>/dev/vg0</path></target></pool>"
        );
        let block = disk_xml("/dev/vg0/web-root", "raw", "vda");
        assert!(block.starts_with("<disk type='block'"), "{block}");
        assert!(
            block.contains("<source dev='/dev/vg0/web-root'/>"),
            "{block}"
        );
        let file = disk_xml("/pools/a/web-root", "qcow2", "vdb");
        assert!(
            file.contains("type='qcow2'") && file.contains("<source file='/pools/a/web-root'/>")
        );
        // Detach finds either kind by its path.
        let dom = format!("<devices>{file}{block}</devices>");
        assert_eq!(
            disk_element(&dom, "/dev/vg0/web-root"),
            Some(block.as_str())
        );
        assert_eq!(disk_element(&dom, "/pools/a/web-root"), Some(file.as_str()));
    }
    use super::*;
    use ferric_proto::plan::{GuestNic, VolumeRef};

    fn spec() -> GuestSpec {
        GuestSpec {
            name: "web-1".into(),
            vcpus: 2,
            memory_mib: 512,
            volumes: vec![VolumeRef {
                pool: "p".into(),
                name: "root".into(),
            }],
            nics: vec![GuestNic {
                bridge: "br0".into(),
                mac: None,
            }],
            boot: GuestBoot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                cmdline: "console=ttyS0 a<b".into(),
            },
            serial_log: Some("/var/log/g.log".into()),
        }
    }

    #[test]
    fn domain_xml_carries_the_spec_and_escapes_text() {
        let x = domain_xml(
            &spec(),
            Accel::Tcg,
            &[("/pool/root".into(), "qcow2".into())],
        );
        assert!(x.starts_with("<domain type='qemu'>"));
        assert!(x.contains("<cmdline>console=ttyS0 a&lt;b</cmdline>"));
        assert!(x.contains("<source file='/pool/root'/><target dev='vda' bus='virtio'/>"));
        assert!(x.contains(&format!("<mac address='{}'/>", default_mac("web-1", 0))));
        assert!(x.contains(&format!("spec='{}'", spec_hash(&spec(), Accel::Tcg))));
        assert!(x.contains("<features><acpi/></features>"));
        assert_ne!(
            spec_hash(&spec(), Accel::Tcg),
            spec_hash(&spec(), Accel::Kvm)
        );
    }

    #[test]
    fn reads_target_devices_of_disks_and_interfaces() {
        let x = "<devices><disk type='file'><target dev='vda' bus='virtio'/></disk><disk type='file'><target dev='vdb' bus='virtio'/></disk><interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='vnet3'/></interface></devices>";
        assert_eq!(target_devs(x, "disk"), vec!["vda", "vdb"]);
        assert_eq!(target_devs(x, "interface"), vec!["vnet3"]);
        let y = "<disk type='file'><source file='/p/a'/></disk><disk type='file'><source file='/p/b'/></disk>";
        assert_eq!(disk_sources(y), vec!["/p/a", "/p/b"]);
    }

    #[test]
    fn finds_the_disk_element_of_a_path() {
        let x = "<domain><devices><disk type='file'><source file='/a'/></disk><disk type='file'><source file='/b'/><target dev='vdb'/></disk></devices></domain>";
        assert_eq!(
            disk_element(x, "/b"),
            Some("<disk type='file'><source file='/b'/><target dev='vdb'/></disk>")
        );
        assert_eq!(disk_element(x, "/c"), None);
    }

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

    #[test]
    fn default_macs_are_stable_unicast_and_distinct() {
        assert_eq!(default_mac("g", 0), default_mac("g", 0));
        assert_ne!(default_mac("g", 0), default_mac("g", 1));
        assert!(default_mac("g", 0).starts_with("52:54:00:"));
    }
}
