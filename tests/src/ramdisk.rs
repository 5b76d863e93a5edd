//! The deploy ramdisk as the tests boot it: `ferric-ramdisk build` of this workspace's binary
//! with Debian's generic kernel, cached under `target/ramdisk/<tag>` (the tag follows the
//! binary, so a rebuilt binary gets a new ramdisk).

use crate::hv::target_dir;
use anyhow::Result;
use std::path::PathBuf;

/// The directory holding `vmlinuz` and `initramfs`.
pub fn image() -> Result<PathBuf> {
    let binary = crate::bin("ferric-ramdisk")?;
    let meta = std::fs::metadata(&binary)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let root = target_dir()?.join("ramdisk");
    std::fs::create_dir_all(&root)?;
    // Tests run side by side: one builds, the others wait.
    let lock = std::fs::File::create(root.join(".lock"))?;
    lock.lock()?;
    let out = root.join(format!("{mtime:x}-{:x}", meta.len()));
    if out.join("initramfs").exists() && out.join("vmlinuz").exists() {
        return Ok(out);
    }
    let kernel = crate::node::generic_kernel_package()?;
    ferric_ramdisk::build::build(&ferric_ramdisk::build::BuildOptions {
        binary,
        kernel,
        out: out.clone(),
        level: 3,
    })?;
    Ok(out)
}
