//! The operating system the deploy tests write to bare-metal nodes: a small real disk image
//! (qcow2) that boots on its own — an MBR with SYSLINUX's boot code, one FAT partition with
//! SYSLINUX, Debian's generic kernel and a busybox initramfs. Its `/init` prints
//! `FERRIC-OS <marker>` on the serial console, then finds the config drive (the partition
//! labelled `cidata`), and prints `FERRIC-OS-HOSTNAME <name>` with the host name it holds.

use crate::hv::{run, target_dir};
use crate::initramfs::{BUSYBOX_INIT, Initramfs, WithBusybox};
use anyhow::{Context, Result, bail};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the image's disk.
pub const DISK_BYTES: u64 = 48 << 20;
/// Start of its partition (1 MiB, sector 2048).
const PART_START: u64 = 1 << 20;

/// SYSLINUX's MBR boot code (Debian package syslinux-common).
const MBR_BIN: &str = "/usr/lib/syslinux/mbr/mbr.bin";

/// Builds the image (once per marker, cached under `target/os-image`); returns its path.
pub fn build(marker: &str) -> Result<PathBuf> {
    build_with(marker, 0)
}

/// The image with a file of `ballast` bytes that do not compress nor read as zeros
/// (`ballast.bin` on its partition): a write that lasts a few telemetry intervals, so that its
/// progress is seen while it runs.
pub fn build_with(marker: &str, ballast: u64) -> Result<PathBuf> {
    if ballast > DISK_BYTES / 2 {
        bail!("{ballast} bytes of ballast do not fit beside the OS on a {DISK_BYTES}-byte disk");
    }
    for (tool, pkg) in [
        ("syslinux", "syslinux"),
        ("mcopy", "mtools"),
        ("mkfs.fat", "dosfstools"),
        ("qemu-img", "qemu-utils"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} is missing (Debian package {pkg}); the deploy tests' image needs it");
        }
    }
    if !Path::new(MBR_BIN).exists() {
        bail!("{MBR_BIN} is missing (Debian package syslinux-common)");
    }
    let dir = target_dir()?.join("os-image");
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::File::create(dir.join(".lock"))?;
    lock.lock()?;
    let kernel = crate::node::generic_kernel_package()?;
    let dep = ferric_ramdisk::build::modules_dep(&kernel)?;
    let wanted = [
        "virtio_pci",
        "virtio_blk",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "nls_iso8859_1",
        "nls_utf8",
    ];
    let (mods, missing) = ferric_ramdisk::build::resolve_modules(&dep, &wanted);
    if missing.iter().any(|m| m == "virtio_blk" || m == "vfat") {
        bail!("the kernel lacks modules the image needs: {missing:?}");
    }
    let mods: Vec<&str> = mods.iter().map(String::as_str).collect();

    let mut ir = Initramfs::new();
    for d in ["proc", "sys", "dev", "tmp", "mnt"] {
        ir.dir(d);
    }
    let loads: String = mods
        .iter()
        .map(|m| {
            format!(
                "insmod /lib/modules/{}.ko\n",
                ferric_ramdisk::build::module_stem(m)
            )
        })
        .collect();
    let init = format!(
        "{BUSYBOX_INIT}\
         {loads}\
         echo FERRIC-OS {marker}\n\
         for i in $(seq 1 50); do dev=$(findfs LABEL=cidata 2>/dev/null) && break; sleep 0.2; done\n\
         if [ -n \"$dev\" ] && mount -t vfat -o ro \"$dev\" /mnt; then\n\
           h=$(sed -n 's/.*\"local-hostname\": *\"\\([^\"]*\\)\".*/\\1/p' /mnt/meta-data)\n\
           echo FERRIC-OS-HOSTNAME $h\n\
         else\n\
           echo FERRIC-OS-NO-CONFIG-DRIVE\n\
         fi\n\
         while true; do sleep 3600; done\n"
    );
    // Cached by what goes in: the marker, the init script, the kernel and its modules.
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&init, &mods, &kernel.vmlinuz, ballast).hash(&mut h);
        h.finish()
    };
    let out = dir.join(format!("{marker}-{key:016x}.qcow2"));
    if out.exists() {
        return Ok(out);
    }
    ir.file("init", 0o755, init.into_bytes());
    ir.busybox()?;
    ir.modules(&kernel.modules, &mods)?;
    let work = tempfile::tempdir_in(&dir)?;
    let initrd = work.path().join("initrd.img");
    ir.write(&initrd)?;

    // The FAT partition: SYSLINUX, its configuration, the kernel and the initramfs.
    let fat = work.path().join("fat.img");
    let fat_bytes = DISK_BYTES - PART_START;
    std::fs::File::create(&fat)?.set_len(fat_bytes)?;
    run(Command::new("mkfs.fat").args(["-n", "FERRICOS"]).arg(&fat))?;
    run(Command::new("syslinux").arg("--install").arg(&fat))?;
    let cfg = work.path().join("syslinux.cfg");
    std::fs::write(
        &cfg,
        "SERIAL 0 115200\nDEFAULT os\nPROMPT 0\nTIMEOUT 0\nLABEL os\n  LINUX vmlinuz\n  \
         APPEND initrd=initrd.img console=ttyS0 quiet panic=-1\n",
    )?;
    let vmlinuz = work.path().join("vmlinuz");
    std::fs::copy(&kernel.vmlinuz, &vmlinuz)?;
    let mut files = vec![cfg, vmlinuz, initrd];
    if ballast > 0 {
        // xorshift64: the same bytes each build, none of them a run a writer could skip.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..ballast.div_ceil(8))
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .take(ballast as usize)
            .collect();
        let f = work.path().join("ballast.bin");
        std::fs::write(&f, bytes)?;
        files.push(f);
    }
    for f in &files {
        run(Command::new("mcopy").arg("-i").arg(&fat).arg(f).arg("::/"))?;
    }

    // The disk: boot code, one active FAT (LBA) partition from 1 MiB, the FAT in it.
    let raw = work.path().join("disk.raw");
    {
        let mut d = std::fs::File::create(&raw)?;
        d.set_len(DISK_BYTES)?;
        let code = std::fs::read(MBR_BIN).with_context(|| format!("cannot read {MBR_BIN}"))?;
        let mut mbr = vec![0u8; 512];
        mbr[..code.len().min(440)].copy_from_slice(&code[..code.len().min(440)]);
        let entry = &mut mbr[446..462];
        entry[0] = 0x80; // active
        entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[4] = 0x0e; // FAT16 LBA (mkfs.fat's choice for this size)
        entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&((PART_START / 512) as u32).to_le_bytes());
        entry[12..16].copy_from_slice(&((fat_bytes / 512) as u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        d.write_all(&mbr)?;
        d.seek(SeekFrom::Start(PART_START))?;
        std::io::copy(&mut std::fs::File::open(&fat)?, &mut d)?;
        d.sync_all()?;
    }
    let part = work.path().join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&part))?;
    std::fs::rename(&part, &out)?;
    Ok(out)
}
