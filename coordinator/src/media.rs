//! The deploy ramdisk as a bootable ISO, for a node that boots it from its BMC's virtual
//! media instead of the network: the ramdisk's kernel and initramfs and a GRUB whose one
//! entry starts them with the command line the iPXE script would give (the coordinator's
//! address, the CA pin, the boot's single-use token, the node; and, where the node's network
//! has no DHCP, its static address). One image boots both ways — BIOS through El Torito and
//! UEFI through the EFI system partition inside it — made by GRUB's `grub-mkrescue` (Debian's
//! `grub-common`, `grub-pc-bin`, `grub-efi-amd64-bin`, `xorriso` and `mtools`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an ISO could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `grub-mkrescue` is not installed.
    #[error(
        "grub-mkrescue is not installed: virtual-media boot needs Debian's grub-common, grub-pc-bin, grub-efi-amd64-bin, xorriso and mtools"
    )]
    NoTool,
    /// `grub-mkrescue` failed.
    #[error("grub-mkrescue failed: {0}")]
    Failed(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MediaError + 'a {
    move |source| MediaError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// GRUB's configuration: serial and screen consoles, no menu wait, one entry.
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set timeout=0\n\
         menuentry \"Ferric deploy ramdisk\" {{\n  \
           echo \"Ferric: booting the deploy ramdisk from virtual media\"\n  \
           linux /ferric/vmlinuz {cmdline}\n  \
           initrd /ferric/initramfs\n\
         }}\n"
    )
}

/// Makes `out`: the ramdisk in `ramdisk_dir` (`vmlinuz`, `initramfs`) booted with
/// `cmdline`, from a staging directory `work` (emptied first). Blocking: run it off the async
/// runtime.
pub fn build_iso(
    ramdisk_dir: &Path,
    cmdline: &str,
    work: &Path,
    out: &Path,
) -> Result<(), MediaError> {
    let _ = std::fs::remove_dir_all(work);
    let tree = work.join("tree");
    let dirs = [tree.join("ferric"), tree.join("boot/grub")];
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(io("cannot create", d))?;
    }
    for f in ["vmlinuz", "initramfs"] {
        let from = ramdisk_dir.join(f);
        let to = tree.join("ferric").join(f);
        // A hard link where the file system allows (the initramfs is tens of MB).
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(io("cannot copy", &from))?;
        }
    }
    let cfg = tree.join("boot/grub/grub.cfg");
    std::fs::write(&cfg, grub_cfg(cmdline)).map_err(io("cannot write", &cfg))?;
    let tmp = out.with_extension("part");
    let r = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&tmp)
        .arg(&tree)
        .args(["--", "-volid", "FERRIC_RAMDISK"])
        .output();
    let _ = std::fs::remove_dir_all(work);
    let o = match r {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MediaError::NoTool),
        Err(e) => return Err(MediaError::Failed(e.to_string())),
    };
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(MediaError::Failed(
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ));
    }
    std::fs::rename(&tmp, out).map_err(io("cannot move", &tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_starts_the_ramdisk_with_the_command_line_on_the_serial_console() {
        let c = grub_cfg("ferric.node=n0 console=ttyS0");
        assert!(
            c.contains("linux /ferric/vmlinuz ferric.node=n0 console=ttyS0\n"),
            "{c}"
        );
        assert!(c.contains("initrd /ferric/initramfs\n"), "{c}");
        assert!(c.contains("set timeout=0"), "{c}");
        assert!(c.contains("terminal_output serial console"), "{c}");
    }

    /// An ISO from a stand-in kernel and initramfs: it exists and carries an El Torito boot
    /// record and an EFI image (what makes it boot on BIOS and UEFI).
    #[test]
    fn the_iso_boots_both_ways() {
        if Command::new("grub-mkrescue")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("grub-mkrescue is not installed (cargo xtask test installs it)");
        }
        let dir = tempfile::tempdir().unwrap();
        let rd = dir.path().join("rd");
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::write(rd.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(rd.join("initramfs"), b"initramfs").unwrap();
        let out = dir.path().join("boot.iso");
        build_iso(&rd, "ferric.node=n0", &dir.path().join("work"), &out).unwrap();
        let iso = std::fs::read(&out).unwrap();
        let has = |needle: &[u8]| iso.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"EL TORITO SPECIFICATION"), "no El Torito boot record");
        // The EFI system partition's loader (a FAT directory entry, 8.3).
        assert!(has(b"BOOTX64 EFI"), "no UEFI loader");
        assert!(has(b"FERRIC_RAMDISK"), "no volume id");
        assert!(has(b"ferric.node=n0"), "no command line");
        assert!(!dir.path().join("work").exists());
    }
}
