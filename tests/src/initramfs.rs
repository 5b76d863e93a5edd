//! A newc cpio archive for the small Linux machines the tests boot (guests, virtual nodes, the
//! hypervisor host in a VM): files with their parent directories, busybox, kernel modules.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

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

/// An initramfs being assembled.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<(String, u32, Vec<u8>)>,
    dirs: BTreeSet<String>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, name: &str) {
        let mut missing = Vec::new();
        let mut p = Some(Path::new(name));
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            let s = d.to_string_lossy().into_owned();
            if !self.dirs.insert(s.clone()) {
                break;
            }
            missing.push(s);
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            self.entries.push((d, 0o040755, Vec::new()));
        }
    }

    /// A regular file with permission bits `perm` (its parent directories are added).
    pub fn file(&mut self, name: &str, perm: u32, bytes: Vec<u8>) {
        if let Some(parent) = Path::new(name).parent() {
            self.dir(&parent.to_string_lossy());
        }
        self.entries.push((name.to_owned(), 0o100000 | perm, bytes));
    }

    /// `bin/busybox`.
    pub fn busybox(&mut self) -> Result<()> {
        self.file("bin/busybox", 0o755, std::fs::read(busybox()?)?);
        Ok(())
    }

    /// Each of `modules` (paths under the kernel's module tree `tree`) as
    /// `lib/modules/<file name>`.
    pub fn modules(&mut self, tree: &Path, modules: &[&str]) -> Result<()> {
        for m in modules {
            let name = Path::new(m)
                .file_name()
                .context("module name")?
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(tree.join(m))
                .with_context(|| format!("module {m} missing from {}", tree.display()))?;
            self.file(&format!("lib/modules/{name}"), 0o644, bytes);
        }
        Ok(())
    }

    /// Writes the archive to `out` (through a temporary file, so `out` is whole or absent).
    pub fn write(self, out: &Path) -> Result<()> {
        let entries = self
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, (name, mode, bytes))| {
                (
                    cpio::NewcBuilder::new(&name)
                        .mode(mode)
                        .ino(i as u32 + 1)
                        .nlink(1),
                    Cursor::new(bytes),
                )
            });
        let tmp = out.with_extension("tmp");
        cpio::write_cpio(entries, std::fs::File::create(&tmp)?)?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }
}

/// The stem of a module path (`drivers/md/dm-mod.ko` → `dm-mod`), as `insmod` is given it.
pub fn module_stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file)
}
