//! The initramfs of the small Linux machines the tests boot (guests, virtual nodes, the
//! hypervisor host in a VM): the ramdisk builder's newc archive, with busybox and a shell
//! `/init`.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// How every busybox `/init` of these machines begins: the applets linked into `/bin`, on
/// the PATH, and `/proc`, `/sys` and `/dev` mounted.
pub const BUSYBOX_INIT: &str = "#!/bin/busybox sh\n\
    /bin/busybox --install -s /bin\n\
    export PATH=/bin\n\
    mount -t proc proc /proc\n\
    mount -t sysfs sysfs /sys\n\
    mount -t devtmpfs devtmpfs /dev\n";

/// Virtio's core and PCI transport, in load order: the first modules of a machine on QEMU's
/// virtio devices (Debian builds them as modules).
pub const VIRTIO_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
];

/// Debian's statically linked busybox (package busybox-static).
pub fn busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox is not installed (Debian package busybox-static)")
}

pub use ferric_ramdisk::build::{Initramfs, module_stem};

/// Adds `bin/busybox` to an initramfs.
pub trait WithBusybox {
    /// `bin/busybox`, Debian's static one.
    fn busybox(&mut self) -> Result<()>;
}

impl WithBusybox for Initramfs {
    fn busybox(&mut self) -> Result<()> {
        self.file("bin/busybox", 0o755, std::fs::read(busybox()?)?);
        Ok(())
    }
}
