//! Storage pools and volumes: directory pools made on first use, LVM pools defined over an
//! existing volume group, and volumes made, grown (never shrunk) and deleted.

use super::clone::{CloneRecord, CloneState, clone_image};
use super::xml::{lvm_pool_xml, xml_escape};
use super::{Libvirt, LibvirtConfig, err, is, virt_err};
use crate::driver::{DriverError, DriverResult, Storage};
use async_trait::async_trait;
use ferric_proto::plan::{ErrorKind, VolumeFormat, VolumeImage};
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

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

/// Whether the kernel has device-mapper (LVM needs it).
fn device_mapper() -> bool {
    std::fs::read_to_string("/proc/devices").is_ok_and(|d| d.contains("device-mapper"))
}

pub(super) fn vol_format(vol: &StorageVol) -> String {
    let xml = vol.get_xml_desc(0).unwrap_or_default();
    xml.split("<format type='")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or("raw")
        .to_owned()
}

impl Libvirt {
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

    /// Volume `pool/name` for a guest: Ferric's, or one the operator listed.
    pub(super) fn guest_volume(
        conn: &Connect,
        cfg: &LibvirtConfig,
        pool: &str,
        name: &str,
    ) -> Result<StorageVol, DriverError> {
        let vol = Self::volume(conn, cfg, pool, name)?;
        let owned = cfg.owned();
        if !owned.has_volume(pool, name) && !CloneRecord::new(cfg, pool, name).made() {
            return Err(owned.foreign_volume(pool, name, "attach to a guest"));
        }
        Ok(vol)
    }

    pub(super) fn volume(
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
            let owned = cfg.owned();
            match StorageVol::lookup_by_name(&p, &name) {
                Ok(vol) => {
                    if !owned.has_volume(&pool, &name) && !record.made() {
                        return Err(owned.foreign_volume(&pool, &name, "use or grow"));
                    }
                    if let Some(img) = &image {
                        match record.state(&img.checksum) {
                            CloneState::Done => {}
                            CloneState::Interrupted => {
                                // A clone cut short (agent stopped, link broke): write it again.
                                let path = vol.get_path().map_err(|e| virt_err("volume path", &e))?;
                                clone_image(&path, img, size_bytes, &record, &cfg.state_dir)?;
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
                    owned.making_volume(&pool, &name)?;
                    let vol = StorageVol::create_xml(&p, &xml, 0).map_err(|e| {
                        if blank_lv {
                            let _ = std::fs::remove_file(&record.zeroing);
                        }
                        owned.forget_volume(&pool, &name);
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
                        if let Err(e) = clone_image(&path, img, size_bytes, &record, &cfg.state_dir) {
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
            let owned = cfg.owned();
            let record = CloneRecord::new(cfg, &pool, &name);
            match Self::volume(conn, cfg, &pool, &name) {
                Ok(vol) => {
                    if !owned.made_volume(&pool, &name) && !record.made() {
                        return Err(owned.foreign_volume(&pool, &name, "delete"));
                    }
                    vol.delete(0)
                        .map_err(|e| virt_err(&format!("delete volume `{pool}/{name}`"), &e))?;
                    record.clear();
                    owned.forget_volume(&pool, &name);
                    Ok(true)
                }
                Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }
}
