//! Guests: specs checked against the host, domains defined from them, power, deletion, and
//! volumes attached and detached.

use super::volumes::vol_format;
use super::xml::{disk_element, disk_xml, domain_xml, spec_hash};
use super::{Libvirt, LibvirtConfig, METADATA_NS, err, is, virt_err};
use crate::driver::{Compute, DriverError, DriverResult};
use async_trait::async_trait;
use ferric_proto::plan::{ErrorKind, GuestBoot, GuestPowerAction, GuestSpec};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

impl Libvirt {
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
        let owned = cfg.owned();
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
            if !owned.has_bridge(&nic.bridge) {
                let e = owned.foreign_bridge(&nic.bridge, "attach a guest to");
                return Err(err(
                    e.kind,
                    format!("guest `{}`: field `nics.bridge`: {}", spec.name, e.message),
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
            let vol = Self::guest_volume(conn, cfg, &v.pool, &v.name).map_err(|e| {
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

/// The defined (inactive) XML of a guest Ferric manages; a conflict, worded by `refused`, for
/// a domain without Ferric's metadata (someone else's).
fn ferric_xml(d: &Domain, refused: impl FnOnce() -> String) -> Result<String, DriverError> {
    let xml = d
        .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
        .map_err(|e| virt_err("guest XML", &e))?;
    if !xml.contains(METADATA_NS) {
        return Err(err(ErrorKind::Conflict, refused()));
    }
    Ok(xml)
}

#[async_trait]
impl Compute for Libvirt {
    async fn ensure_guest(&self, spec: &GuestSpec) -> DriverResult {
        let spec = spec.clone();
        self.blocking("ensure_guest", move |conn, cfg| {
            let disks = Self::precheck(conn, cfg, &spec)?;
            let hash = spec_hash(&spec, cfg.accel);
            if let Some(d) = Self::domain(conn, &spec.name)? {
                let xml = ferric_xml(&d, || {
                    format!("guest `{}` exists and is not managed by Ferric", spec.name)
                })?;
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
            ferric_xml(&d, || {
                format!("guest `{name}` is not managed by Ferric; not deleting it")
            })?;
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
            let vol = Self::guest_volume(conn, cfg, &pool, &volume)?;
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
