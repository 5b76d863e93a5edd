//! Real hypervisor parts for tier-4 tests: a running libvirtd (started here when it is not
//! running) and a small guest — Debian's cloud kernel and a busybox initramfs that prints
//! `FERRIC-GUEST-UP`, then `FERRIC-DISKS <block devices>` and `FERRIC-VDA <the first bytes of
//! its first disk>` every second on its serial console.

use crate::initramfs::{Initramfs, VIRTIO_MODULES, WithBusybox};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// libvirt URI the tests use.
pub const URI: &str = "qemu:///system";

/// `target/` of this workspace.
pub fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .context("cannot locate the target directory")
}

fn virsh_ok() -> bool {
    Command::new("virsh")
        .args(["-c", URI, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `virsh -c URI args…` and returns its stdout.
pub fn virsh(args: &[&str]) -> Result<String> {
    Ok(run(Command::new("virsh").args(["-c", URI]).args(args))?)
}

/// Makes sure libvirtd answers, starting virtlogd and libvirtd (without systemd) if needed.
pub fn ensure_libvirtd() -> Result<()> {
    if virsh_ok() {
        return Ok(());
    }
    for tool in ["libvirtd", "virtlogd", "virsh"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!(
                "`{tool}` is not installed: run `cargo xtask test`, which installs libvirt-daemon, libvirt-clients and qemu-system-x86"
            );
        }
    }
    // Without systemd: the user the packages expect, and QEMU running as root unconfined.
    if Command::new("id")
        .arg("libvirt-qemu")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ])
            .status()?;
        if !st.success() {
            bail!("cannot create the libvirt-qemu user");
        }
    }
    let conf = Path::new("/etc/libvirt/qemu.conf");
    if !conf.exists() {
        std::fs::create_dir_all("/etc/libvirt")?;
        std::fs::write(
            conf,
            "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\n",
        )?;
    }
    let logs = target_dir()?.join("libvirt-logs");
    std::fs::create_dir_all(&logs)?;
    for daemon in ["virtlogd", "libvirtd"] {
        let log = std::fs::File::create(logs.join(format!("{daemon}.log")))?;
        Command::new(daemon)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {daemon}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !virsh_ok() {
        if Instant::now() > deadline {
            bail!(
                "libvirtd did not answer within 60 s; see {}",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Kernel and initramfs of the test guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
}

/// Modules the guest loads after virtio's, in dependency order.
const MODULES: &[&str] = &[
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  /bin/busybox insmod /lib/modules/$m.ko 2>/dev/null
done
echo FERRIC-GUEST-UP
while true; do
  echo "FERRIC-DISKS $(/bin/busybox ls /sys/block | /bin/busybox tr '\n' ' ')"
  [ -b /dev/vda ] && echo "FERRIC-VDA $(/bin/busybox head -c 32 /dev/vda | /bin/busybox tr -cd 'A-Za-z0-9-')"
  /bin/busybox sleep 1
done
"#;

pub use ferric_lab::run;

/// Writes a sparse disk image of `len` bytes at `path` holding `parts` (offset, bytes).
pub fn marker_disk(path: &Path, len: u64, parts: &[(u64, &[u8])]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(len)?;
    for (offset, bytes) in parts {
        f.write_all_at(bytes, *offset)?;
    }
    Ok(())
}

/// Converts the raw image `raw` to a compressed qcow2 beside it (`qemu-img convert -c`).
pub fn compressed_qcow2(raw: &Path) -> Result<PathBuf> {
    let qcow = raw.with_extension("qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2"])
        .arg(raw)
        .arg(&qcow))?;
    Ok(qcow)
}

/// Downloads (into `dir`, once) the kernel package that Debian's meta-package `meta` names and
/// unpacks it: the kernel image and the `lib/modules/<version>/kernel` directory.
pub fn debian_kernel(meta: &str, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let k = ferric_ramdisk::build::debian_kernel(meta, dir)?;
    Ok((k.vmlinuz.clone(), k.tree()))
}

/// Builds (once, cached under `target/guest`) the guest kernel and initramfs.
pub fn guest_image() -> Result<GuestImage> {
    let dir = target_dir()?.join("guest");
    let kernel = dir.join("vmlinuz");
    // Named by what goes into it, so that a change to the init script or module list rebuilds it.
    let modules = [VIRTIO_MODULES, MODULES].concat();
    let recipe = format!("{INIT}{}", modules.join(","));
    let tag: u32 = recipe.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let initrd = dir.join(format!("initrd-{tag:08x}.cpio"));
    if kernel.exists() && initrd.exists() {
        return Ok(GuestImage { kernel, initrd });
    }
    std::fs::create_dir_all(&dir)?;
    let (vmlinuz, mods) = debian_kernel("linux-image-cloud-amd64", &dir)?;
    let mut ir = Initramfs::new();
    for d in ["proc", "sys", "dev"] {
        ir.dir(d);
    }
    ir.file("init", 0o755, INIT.as_bytes().to_vec());
    ir.busybox()?;
    ir.modules(&mods, &modules)?;
    ir.write(&initrd)?;
    std::fs::copy(&vmlinuz, &kernel)?;
    Ok(GuestImage { kernel, initrd })
}

/// Waits until `log` holds a line containing every one of `needles`; returns that line.
pub fn wait_serial(log: &Path, needles: &[&str], limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .rev()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Ok(l.to_owned());
        }
        if Instant::now() > deadline {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "no line with {needles:?} on the serial console within {limit:?}; last lines: {tail:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
