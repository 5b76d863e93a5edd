//! A real cloud image, as an operator deploys one: Debian 12 with cloud-init, OpenSSH and
//! netplan, on a GPT disk laid out as Debian's own cloud images are — a BIOS boot partition
//! (14, 1–4 MiB), an EFI system partition (15, 4–128 MiB) and the ext4 root (1, from 128 MiB to
//! the image's end, so that cloud-init's growpart grows it to the disk's). GRUB boots it by
//! either firmware: its core in the BIOS boot partition behind the MBR's boot code, and as
//! `\EFI\BOOT\BOOTX64.EFI` (and `\EFI\debian\grubx64.efi`) on the ESP; both find the root by its
//! file system's UUID and read one `grub.cfg` that puts the console on the serial port.
//!
//! Built from the Debian archive with `mmdebstrap` (about a minute), cached under
//! `target/cloud-image` by its recipe. The ESP is FAT with 4096-byte sectors, which Linux and
//! OVMF read on disks of 512 and of 4096-byte sectors alike. Nothing is mounted (this host's
//! kernel has no vfat): the root file system is made from the tree by `mke2fs -d`, the ESP is
//! filled with mtools, and GRUB's BIOS boot sector is set as `grub-bios-setup` sets it (it
//! insists on a mounted device for its directory).

use crate::hv::target_dir;
use anyhow::{Context, Result, bail};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The image's size: its root file system is a little under 2 GiB until growpart grows it.
pub const IMAGE_MIB: u64 = 2048;
/// The default user cloud-init gives the deploy's SSH keys to (Debian's).
pub const USER: &str = "debian";
/// Where the BIOS boot partition starts (512-byte sectors).
const BIOS_BOOT_LBA: u64 = 2048;

/// The packages beside the `apt` variant's.
const PACKAGES: &[&str] = &[
    // The generic kernel: a server's NIC (the lab's BIOS nodes' e1000 too) needs drivers
    // the cloud flavour leaves out.
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "netplan.io",
    "systemd-resolved",
    "sudo",
    "cloud-guest-utils",
    "gdisk",
    "e2fsprogs",
    "iproute2",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub2-common",
    "dosfstools",
    "mtools",
    "ca-certificates",
];

/// Stage one: the root tree from the archive (`$1` the tree, `$2` the apt sources).
const TREE: &str = r#"set -euo pipefail
root=$1; sources=$2; packages=$3
rm -rf "$root"
mmdebstrap --variant=apt --mode=root --format=directory --include="$packages" \
  --aptopt='Apt::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$root" "$sources" </dev/null
"#;

/// Stage two: the system's settings, GRUB, the partitioned disk with its ESP and root file
/// system (`$1` the tree, `$2` the raw image, `$3` its MiB, `$4` a work directory). Leaves
/// GRUB's BIOS `boot.img` and `core.img` in the work directory for [`bios_boot`].
const DISK: &str = r#"set -euo pipefail
root=$1; out=$2; size_mib=$3; work=$4
ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
ESP_ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ' | tr a-f A-F)
ESP_UUID="${ESP_ID:0:4}-${ESP_ID:4:4}"
kver=$(ls "$root/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$kver" ] || { echo "no kernel in $root/boot" >&2; exit 1; }
cat > "$root/etc/fstab" <<F
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
UUID=$ESP_UUID /boot/efi vfat umask=0077,nofail 0 2
F
mkdir -p "$root/boot/efi"
cat > "$root/etc/cloud/cloud.cfg.d/90-ferric.cfg" <<F
datasource_list: [NoCloud, ConfigDrive, None]
locale: C.UTF-8
F
# Each node its own identity: machine id, SSH host keys (cloud-init makes them), host name.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_* "$root/etc/hostname"
mkdir -p "$root/boot/grub"
rm -rf "$root/boot/grub/i386-pc" "$root/boot/grub/x86_64-efi"
cp -r "$root/usr/lib/grub/i386-pc" "$root/usr/lib/grub/x86_64-efi" "$root/boot/grub/"
cat > "$root/boot/grub/grub.cfg" <<F
set timeout=1
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --fs-uuid --set=root $ROOT_UUID
menuentry 'Debian GNU/Linux 12' {
  linux /boot/vmlinuz-$kver root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200n8
  initrd /boot/initrd.img-$kver
}
F
cat > "$root/tmp/early.cfg" <<F
search --no-floppy --fs-uuid --set=root $ROOT_UUID
set prefix=(\$root)/boot/grub
configfile \$prefix/grub.cfg
F
mods="part_gpt part_msdos ext2 fat search search_fs_uuid normal configfile linux echo test serial terminal gzio ls cat"
chroot "$root" grub-mkimage -O i386-pc -o /tmp/core.img -p /boot/grub -c /tmp/early.cfg biosdisk $mods
chroot "$root" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p /boot/grub -c /tmp/early.cfg all_video efi_gop $mods
# The disk, partitioned as Debian's cloud images are.
rm -f "$root/tmp/disk.raw"
truncate -s "${size_mib}M" "$root/tmp/disk.raw"
chroot "$root" sgdisk -n 14:2048:8191 -t 14:EF02 -c 14:bios \
  -n 15:8192:262143 -t 15:EF00 -c 15:esp \
  -n 1:262144:0 -t 1:8300 -c 1:root /tmp/disk.raw >/dev/null
chroot "$root" mkfs.fat -C -S 4096 -F 16 -i "$ESP_ID" -n ESP /tmp/esp.img $(( (262144 - 8192) / 2 )) >/dev/null
chroot "$root" mmd -i /tmp/esp.img ::/EFI ::/EFI/BOOT ::/EFI/debian
chroot "$root" mcopy -i /tmp/esp.img /tmp/BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI
chroot "$root" mcopy -i /tmp/esp.img /tmp/BOOTX64.EFI ::/EFI/debian/grubx64.efi
dd if="$root/tmp/esp.img" of="$root/tmp/disk.raw" bs=1M seek=4 conv=notrunc,sparse status=none
cp "$root/usr/lib/grub/i386-pc/boot.img" "$root/tmp/core.img" "$work/"
mv "$root/tmp/disk.raw" "$out"
rm -rf "$root"/tmp/*
# The root file system, made from the tree, in partition 1 (to the table's last usable sector).
root_bytes=$(( (size_mib * 2048 - 34 - 262144) * 512 / 4096 * 4096 ))
mke2fs -q -t ext4 -L root -U "$ROOT_UUID" -d "$root" -E offset=$((262144 * 512)) "$out" "$(( root_bytes / 1024 ))k"
echo "root=UUID=$ROOT_UUID esp=$ESP_UUID kernel=$kver"
"#;

/// Builds the image (once per recipe, cached under `target/cloud-image`); returns its path
/// (qcow2).
pub fn build() -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        bail!("building the cloud image needs root (mmdebstrap --mode=root, chroot)");
    }
    for (tool, pkg) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mke2fs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} is missing (Debian package {pkg}); the cloud image needs it");
        }
    }
    let dir = target_dir()?.join("cloud-image");
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::File::create(dir.join(".lock"))?;
    lock.lock()?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (TREE, DISK, PACKAGES, IMAGE_MIB, BIOS_BOOT_LBA).hash(&mut h);
        h.finish()
    };
    let out = dir.join(format!("debian-12-{key:016x}.qcow2"));
    if out.exists() {
        return Ok(out);
    }
    let work = tempfile::tempdir_in(&dir)?;
    let tree = work.path().join("root");
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("http://deb.debian.org/debian");
    script(
        "the Debian tree (mmdebstrap)",
        TREE,
        &[tree.to_str().context("path")?, sources, &PACKAGES.join(",")],
    )?;
    let raw = work.path().join("disk.raw");
    let said = script(
        "the disk",
        DISK,
        &[
            tree.to_str().context("path")?,
            raw.to_str().context("path")?,
            &IMAGE_MIB.to_string(),
            work.path().to_str().context("path")?,
        ],
    )?;
    bios_boot(
        &raw,
        &std::fs::read(work.path().join("boot.img"))?,
        &std::fs::read(work.path().join("core.img"))?,
        BIOS_BOOT_LBA,
    )?;
    let part = dir.join(format!(".debian-12-{key:016x}.qcow2.part"));
    let o = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&part)
        .output()?;
    if !o.status.success() {
        bail!(
            "qemu-img convert failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    std::fs::rename(&part, &out)?;
    tracing::info!(image = %out.display(), built = %said.trim(), "cloud image built");
    Ok(out)
}

/// `ssh` to the image's user at `address` with the private key `key`, running `command`:
/// no password asked, the host's key neither checked nor kept (each deploy makes new ones),
/// giving up on a connection after 3 s.
pub fn ssh(key: &Path, address: &str, command: &str) -> tokio::process::Command {
    ssh_from(None, key, address, command)
}

/// [`ssh`] from inside the network namespace `netns` when given (`ip netns exec`).
pub fn ssh_from(
    netns: Option<&str>,
    key: &Path,
    address: &str,
    command: &str,
) -> tokio::process::Command {
    let mut c = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns, "ssh"]);
            c
        }
        None => tokio::process::Command::new("ssh"),
    };
    c.arg("-i").arg(key).args([
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "LogLevel=ERROR",
        &format!("{USER}@{address}"),
        command,
    ]);
    c
}

/// Runs a stage of the recipe; its output when it succeeds, its end and what it said when not.
fn script(what: &str, text: &str, args: &[&str]) -> Result<String> {
    let o = Command::new("bash")
        .arg("-c")
        .arg(text)
        .arg("stage")
        .args(args)
        .output()
        .with_context(|| format!("cannot run the stage that makes {what}"))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        bail!(
            "building {what} failed ({}):\n{}",
            o.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Makes the disk at `raw` boot GRUB by BIOS, as `grub-bios-setup` does for a GPT disk with a
/// BIOS boot partition at `lba`: GRUB's `core.img` in that partition, its first sector told
/// where the rest is; `boot.img` in the MBR, told where the core is, the disk's own partition
/// table (and BPB area) kept, and its check of the BIOS drive number skipped (it boots from a
/// hard disk whatever number the BIOS gives it).
pub fn bios_boot(raw: &Path, boot: &[u8], core: &[u8], lba: u64) -> Result<()> {
    // GRUB 2's i386-pc layout (grub/include/grub/i386/pc/boot.h).
    const BPB: std::ops::Range<usize> = 0x03..0x5a;
    const KERNEL_SECTOR: usize = 0x5c;
    const BOOT_DRIVE: usize = 0x64;
    const DRIVE_CHECK: usize = 0x66;
    const PARTITION_TABLE: std::ops::Range<usize> = 0x1b8..0x1fe;
    const BLOCKLIST: usize = 0x200 - 12;
    const KERNEL_SEGMENT: u16 = 0x820;
    if boot.len() != 512 {
        bail!("GRUB's boot.img is {} bytes, not one sector", boot.len());
    }
    let sectors = core.len().div_ceil(512) as u64;
    if core.len() < 512 || sectors > 3 << 11 {
        bail!("GRUB's core.img is {} bytes: no BIOS core", core.len());
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)?;
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr)?;
    if mbr[0x1fe..] != [0x55, 0xaa] {
        bail!(
            "{} has no MBR (a GPT disk has a protective one)",
            raw.display()
        );
    }
    let mut b = boot.to_vec();
    b[BPB].copy_from_slice(&mbr[BPB]);
    b[PARTITION_TABLE].copy_from_slice(&mbr[PARTITION_TABLE]);
    b[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&lba.to_le_bytes());
    b[BOOT_DRIVE] = 0xff;
    b[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    let mut c = core.to_vec();
    c[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(lba + 1).to_le_bytes());
    c[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
    c[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&KERNEL_SEGMENT.to_le_bytes());
    f.seek(SeekFrom::Start(lba * 512))?;
    f.write_all(&c)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&b)?;
    f.sync_all()?;
    Ok(())
}
