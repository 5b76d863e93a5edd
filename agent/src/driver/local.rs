//! The machine the agent runs on: its hardware read from `/proc` and `/sys`
//! ([`crate::inventory`]); with the `inband` feature, its BMC through the kernel's IPMI device
//! (LAN settings, next boot device); with the `disks` feature, its disks ([`super::disks`]:
//! erase, image, config drive) — written only by an agent that owns the machine, a deploy
//! ramdisk, never by an agent on a host whose disks hold its own system.

use super::{DriverError, DriverResult, Machine, Meter};
use crate::inventory::{Root, read};
use async_trait::async_trait;
use ferric_proto::msg::Inspection;
use ferric_proto::plan::{BootDevice, ConfigFile, EraseMode, ErrorKind, RootHint, VolumeImage};
use std::path::PathBuf;
use std::time::Duration;

/// This machine.
#[derive(Debug, Clone)]
pub struct LocalMachine {
    /// Where `/proc` and `/sys` are.
    pub root: Root,
    /// Where the disks' device nodes are (`/dev`).
    pub dev: PathBuf,
    /// The IPMI device (`/dev/ipmi0`).
    pub ipmi_device: PathBuf,
    /// Whether this agent owns the machine (a deploy ramdisk): only then does it erase and
    /// write disks or reboot.
    pub owns_machine: bool,
}

impl Default for LocalMachine {
    fn default() -> Self {
        LocalMachine {
            root: Root::default(),
            dev: PathBuf::from("/dev"),
            ipmi_device: PathBuf::from("/dev/ipmi0"),
            owns_machine: false,
        }
    }
}

/// How often a reboot looks whether its step's report was delivered.
const REBOOT_POLL: Duration = Duration::from_millis(100);

/// How long a reboot waits for the coordinator to acknowledge its step's report: a
/// coordinator restarting mid-deploy is back well within it; one gone for longer finds the
/// node at its deadline (the report is lost with the ramdisk's memory).
pub const REBOOT_WAIT: Duration = Duration::from_secs(600);

/// Waits until `delivered` or `limit` passed; true when delivered.
async fn until_delivered(delivered: &super::Delivered, limit: Duration) -> bool {
    let start = tokio::time::Instant::now();
    loop {
        // The step's end is journaled after the driver returns: look after a poll first.
        tokio::time::sleep(REBOOT_POLL).await;
        if delivered() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> DriverError {
    DriverError::new(ErrorKind::Internal, format!("disk task failed: {e}"))
}

#[async_trait]
impl Machine for LocalMachine {
    async fn inspect(&self) -> Result<Inspection, DriverError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let inventory = read(&me.root);
            let (bmc, bmc_error) = me.bmc_lan();
            Inspection {
                inventory,
                bmc,
                bmc_error,
                boot_mode: Some(crate::inventory::boot_mode(&me.root)),
            }
        })
        .await
        .map_err(|e| {
            DriverError::new(
                ferric_proto::plan::ErrorKind::Internal,
                format!("inspection task failed: {e}"),
            )
        })
    }

    #[cfg(feature = "disks")]
    async fn erase_disks(&self, mode: EraseMode, meter: Meter) -> DriverResult {
        self.owned("erase disks")?;
        let disks: Vec<_> = read(&self.root)
            .disks
            .into_iter()
            .filter(|d| !self.read_only(&d.name))
            .collect();
        if disks.is_empty() {
            return Err(DriverError::new(
                ErrorKind::NotFound,
                "this machine has no writable disk",
            ));
        }
        // Progress is the sum over the disks, which are erased side by side.
        let total: u64 = disks.iter().map(|d| d.size_bytes).sum();
        let done = std::sync::Arc::new(std::sync::Mutex::new(vec![0u64; disks.len()]));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, d) in disks.into_iter().enumerate() {
            let dev = self.dev.join(&d.name);
            let parts = self.partitions(&d.name);
            let (done, meter) = (done.clone(), meter.clone());
            tasks.spawn_blocking(move || {
                let each = |n: u64, _: u64| {
                    let mut v = crate::lock(&done);
                    v[i] = n;
                    meter(v.iter().sum(), total);
                };
                let r = super::disks::erase(&dev, mode, &parts, &each);
                (d.name, r)
            });
        }
        let mut failed = vec![];
        while let Some(r) = tasks.join_next().await {
            match r.map_err(blocking_failed)? {
                (name, Ok(how)) => tracing::info!(disk = %name, %how, "disk erased"),
                (name, Err(e)) => failed.push(format!("{name}: {e}")),
            }
        }
        if !failed.is_empty() {
            return Err(DriverError::new(
                ErrorKind::Io,
                format!("erasing failed on {}", failed.join("; ")),
            ));
        }
        // The erased disks boot nothing: Ferric's UEFI boot entry goes, and what the firmware
        // had after it (network boot, on a server set up for provisioning) is first again.
        // Firmware that keeps it only falls through to the next entry: a warning, not a failure.
        if crate::inventory::boot_mode(&self.root) == ferric_proto::hardware::BootMode::Uefi {
            let vars = self.root.path("/sys/firmware/efi/efivars");
            match tokio::task::spawn_blocking(move || super::efi::remove_ours(&vars))
                .await
                .map_err(blocking_failed)?
            {
                Ok(gone) if gone.is_empty() => {}
                Ok(gone) => tracing::info!(entries = ?gone, "Ferric's UEFI boot entry removed"),
                Err(e) => {
                    tracing::warn!(error = %e, "Ferric's UEFI boot entry could not be removed")
                }
            }
        }
        Ok(true)
    }

    #[cfg(feature = "disks")]
    async fn write_image(
        &self,
        image: &VolumeImage,
        root: &RootHint,
        meter: Meter,
    ) -> DriverResult {
        use ferric_images::inspect::{Format, ImageError};
        use ferric_images::source::{ImageSource, SourceReader, parse_checksum};
        self.owned("write an image")?;
        let (disk, size) = self.root_disk(root)?;
        let dev = self.dev.join(&disk);
        let sector = self.sector_size(&disk);
        let invalid = |m: String| DriverError::new(ErrorKind::InvalidSpec, m);
        let declared = Format::parse_declared(image.format.as_deref())
            .map_err(|e| invalid(format!("field `image.format`: {e}")))?;
        let expected = parse_checksum(&image.checksum)
            .map_err(|e| invalid(format!("field `image.checksum`: {e}")))?;
        let img = image.clone();
        tokio::task::spawn_blocking(move || {
            let image_err = |e: ImageError| {
                let kind = if matches!(e, ImageError::Io(_)) { ErrorKind::Io } else { ErrorKind::InvalidSpec };
                DriverError::new(kind, format!("image {}: {e}", img.url))
            };
            let mut source = ImageSource::parse(&img.url).open().map_err(|e| {
                DriverError::new(ErrorKind::Unreachable, format!("image {} cannot be fetched: {e}", img.url))
            })?;
            let found = ferric_images::inspect::inspect(&mut SourceReader::new(&mut *source)).map_err(image_err)?;
            if let Some(v) = found.virtual_size
                && v > size
            {
                return Err(invalid(format!(
                    "the disk in image {} is {v} bytes, more than the root disk {disk} ({size} bytes)",
                    img.url
                )));
            }
            let opts = ferric_images::write::WriteOptions { declared, expected: Some(expected), direct: None };
            let report = ferric_images::write::write_from(&mut *source, &dev, &opts, &mut |p| {
                meter(p.done, if p.total == 0 { size } else { p.total })
            })
            .map_err(image_err)?;
            tracing::info!(%disk, image = %img.url, written = report.written, zeros_skipped = report.zeros_skipped, resumes = report.resumes, "image written");
            // A GPT image's table, fitted to the disk: its backup header at the disk's end,
            // its LBAs in the disk's sectors.
            if let Some(fit) = super::gpt::fit_to_disk(&dev, sector)
                .map_err(|e| DriverError::new(ErrorKind::InvalidSpec, e.to_string()))?
            {
                tracing::info!(%disk, image_sector = fit.image_sector, sector, backup_moved = fit.backup_moved, "GPT fitted to the disk");
            }
            Ok(true)
        })
        .await
        .map_err(blocking_failed)?
    }

    #[cfg(feature = "disks")]
    async fn write_config_drive(
        &self,
        root: &RootHint,
        label: &str,
        files: &[ConfigFile],
    ) -> DriverResult {
        self.owned("write a config drive")?;
        let (disk, _) = self.root_disk(root)?;
        let dev = self.dev.join(&disk);
        let sector = self.sector_size(&disk);
        let (label, files) = (label.to_owned(), files.to_vec());
        tokio::task::spawn_blocking(move || {
            let placed = super::gpt::write_config_drive(&dev, &label, &files, sector)
                .map_err(|e| DriverError::new(ErrorKind::Io, e.to_string()))?;
            tracing::info!(%disk, partition = placed.number, start = placed.start, bytes = placed.len, %label, "config drive written");
            Ok(true)
        })
        .await
        .map_err(blocking_failed)?
    }

    #[cfg(feature = "disks")]
    async fn uefi_boot_entry(&self, root: &RootHint) -> DriverResult {
        self.owned("write a UEFI boot entry")?;
        let vars = self.root.path("/sys/firmware/efi/efivars");
        if crate::inventory::boot_mode(&self.root) != ferric_proto::hardware::BootMode::Uefi {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                "this machine's firmware booted the ramdisk in legacy BIOS mode, not by UEFI: it \
                 has no UEFI boot entries (its node's boot mode says uefi; `ferric node boot \
                 NODE --mode bios` if its firmware is BIOS)",
            ));
        }
        let (disk, _) = self.root_disk(root)?;
        let dev = self.dev.join(&disk);
        let sector = self.sector_size(&disk);
        tokio::task::spawn_blocking(move || {
            let fail = |e: super::disks::DiskError| DriverError::new(ErrorKind::InvalidSpec, e.to_string());
            let mut f = std::fs::File::open(&dev)
                .map_err(|e| DriverError::new(ErrorKind::Io, format!("cannot open {}: {e}", dev.display())))?;
            let esp = super::gpt::find_esp(&mut f, &dev, sector).map_err(fail)?;
            let loader = super::gpt::find_loader(&mut f, &dev, &esp).map_err(fail)?;
            let set = super::efi::set_first(&vars, &super::efi::load_option(&esp, &loader))
                .map_err(|e| {
                    DriverError::new(
                        ErrorKind::Io,
                        format!("cannot write the UEFI boot entry in {}: {e}", vars.display()),
                    )
                })?;
            tracing::info!(%disk, %loader, entry = %format!("Boot{:04X}", set.number), reused = set.reused, removed = ?set.removed, order = ?set.order, "UEFI boot entry first");
            Ok(true)
        })
        .await
        .map_err(blocking_failed)?
    }

    #[cfg(not(feature = "disks"))]
    async fn erase_disks(&self, _: EraseMode, _: Meter) -> DriverResult {
        Err(no_disks())
    }

    #[cfg(not(feature = "disks"))]
    async fn write_image(&self, _: &VolumeImage, _: &RootHint, _: Meter) -> DriverResult {
        Err(no_disks())
    }

    #[cfg(not(feature = "disks"))]
    async fn write_config_drive(&self, _: &RootHint, _: &str, _: &[ConfigFile]) -> DriverResult {
        Err(no_disks())
    }

    #[cfg(not(feature = "disks"))]
    async fn uefi_boot_entry(&self, _: &RootHint) -> DriverResult {
        Err(no_disks())
    }

    async fn set_boot_device(&self, device: BootDevice, persistent: bool) -> DriverResult {
        self.owned("set the boot device")?;
        self.inband_boot_device(device, persistent).await
    }

    async fn reboot(&self, delivered: super::Delivered) -> DriverResult {
        self.owned("reboot")?;
        tokio::spawn(async move {
            if until_delivered(&delivered, REBOOT_WAIT).await {
                tracing::info!("rebooting: the coordinator has the reboot's report");
            } else {
                tracing::warn!(
                    waited_secs = REBOOT_WAIT.as_secs(),
                    "rebooting without the coordinator's acknowledgement of the reboot's report"
                );
            }
            nix::unistd::sync();
            let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
            tracing::error!(error = %e, "reboot failed");
        });
        Ok(true)
    }
}

#[cfg(not(feature = "disks"))]
fn no_disks() -> DriverError {
    DriverError::new(
        ErrorKind::Unsupported,
        "this agent was built without the disk steps (cargo feature `disks`)",
    )
}

impl LocalMachine {
    fn owned(&self, what: &str) -> Result<(), DriverError> {
        if self.owns_machine {
            Ok(())
        } else {
            Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "this agent does not own the machine it runs on and will not {what}; only a \
                     deploy ramdisk does"
                ),
            ))
        }
    }

    #[cfg(feature = "disks")]
    fn root_disk(&self, hint: &RootHint) -> Result<(String, u64), DriverError> {
        let disks: Vec<_> = read(&self.root)
            .disks
            .into_iter()
            .filter(|d| !self.read_only(&d.name))
            .collect();
        super::disks::choose_root(&disks, hint)
            .map(|d| (d.name.clone(), d.size_bytes))
            .map_err(|e| DriverError::new(ErrorKind::NotFound, e.to_string()))
    }

    /// A disk's logical sector size, bytes (512 when the kernel does not say).
    #[cfg(feature = "disks")]
    fn sector_size(&self, disk: &str) -> u64 {
        std::fs::read_to_string(
            self.root
                .path(&format!("/sys/block/{disk}/queue/logical_block_size")),
        )
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|s: &u64| s.is_power_of_two() && (512..=65536).contains(s))
        .unwrap_or(512)
    }

    #[cfg(feature = "disks")]
    fn read_only(&self, disk: &str) -> bool {
        std::fs::read_to_string(self.root.path(&format!("/sys/block/{disk}/ro")))
            .is_ok_and(|s| s.trim() == "1")
    }

    /// The partitions the kernel lists on `disk`, `(start, len)` in bytes.
    #[cfg(feature = "disks")]
    fn partitions(&self, disk: &str) -> Vec<(u64, u64)> {
        let dir = self.root.path(&format!("/sys/block/{disk}"));
        let num =
            |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(disk))
            .filter_map(|e| {
                Some((
                    num(e.path().join("start"))? * 512,
                    num(e.path().join("size"))? * 512,
                ))
            })
            .collect()
    }

    #[cfg(feature = "inband")]
    fn bmc_lan(&self) -> (Option<ferric_proto::msg::BmcLan>, Option<String>) {
        let lan = crate::bmc::inband::Inband::open(&self.ipmi_device).and_then(|mut d| d.lan());
        match lan {
            Ok(l) => (
                Some(ferric_proto::msg::BmcLan {
                    ip: l.ip,
                    mac: l.mac,
                }),
                None,
            ),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    #[cfg(feature = "inband")]
    async fn inband_boot_device(&self, device: BootDevice, persistent: bool) -> DriverResult {
        let path = self.ipmi_device.clone();
        // The firmware that started this kernel is the one to boot next.
        let uefi =
            crate::inventory::boot_mode(&self.root) == ferric_proto::hardware::BootMode::Uefi;
        tokio::task::spawn_blocking(move || {
            crate::bmc::inband::Inband::open(&path)
                .and_then(|mut d| d.set_boot_device(device, persistent, uefi))
                .map_err(|e| DriverError::new(ErrorKind::Io, format!("in-band boot device: {e}")))
        })
        .await
        .map_err(blocking_failed)??;
        Ok(true)
    }

    #[cfg(not(feature = "inband"))]
    async fn inband_boot_device(&self, _: BootDevice, _: bool) -> DriverResult {
        Err(DriverError::new(
            ErrorKind::Unsupported,
            "this agent was built without in-band IPMI (cargo feature `inband`)",
        ))
    }

    #[cfg(not(feature = "inband"))]
    fn bmc_lan(&self) -> (Option<ferric_proto::msg::BmcLan>, Option<String>) {
        (
            None,
            Some("this agent was built without in-band IPMI (cargo feature `inband`)".into()),
        )
    }
}
