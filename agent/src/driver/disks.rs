//! A deploy ramdisk's disk work: choosing the root disk by a hint, erasing disks (metadata,
//! discard or zeros), and adding a config drive (a FAT partition labelled `cidata` or
//! `config-2`, which cloud-init reads: on a GPT disk placed by [`super::gpt`], on an MBR disk
//! at its end). Writing the image itself is the images pipeline's ([`ferric_images::write`]).
//!
//! Everything here works on a device path; [`super::machine::LocalMachine`] decides which
//! devices, and only a ramdisk lets it touch them. The kernel keeps its view of a disk's
//! partitions until the next boot (re-reading them takes an ioctl, and this crate has no
//! unsafe code); nothing here needs it, as the config drive is written by offset.

use ferric_proto::hardware::DiskInfo;
use ferric_proto::plan::{ConfigFile, EraseMode, RootHint};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Bytes erased at each end of a disk and at the start of each partition: partition tables
/// (MBR, both GPT copies), and the signatures of filesystems, LVM, RAID and swap.
pub const METADATA_BYTES: u64 = 2 << 20;

/// Size of a config drive partition.
pub const CONFIG_DRIVE_BYTES: u64 = 64 << 20;

/// How far a long disk operation is: bytes done, bytes in all.
pub type Meter<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// Why a disk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// No disk matches the root hint.
    #[error("no disk matches the root hint {hint} (disks: {disks})")]
    NoRootDisk {
        /// The hint, as given.
        hint: String,
        /// The disks there are.
        disks: String,
    },
    /// The machine has no disk at all.
    #[error("this machine has no disk")]
    NoDisks,
    /// The root disk has no partition table a config drive can join.
    #[error("{0}")]
    PartitionTable(String),
    /// The config drive's filesystem could not be made.
    #[error("config drive: {0}")]
    ConfigDrive(String),
    /// Reading or writing the device failed.
    #[error("{what} {dev}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The device.
        dev: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    dev: &'a Path,
) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        what,
        dev: dev.display().to_string(),
        source,
    }
}

/// The root disk: the smallest disk that matches every field of the hint.
pub fn choose_root<'a>(disks: &'a [DiskInfo], hint: &RootHint) -> Result<&'a DiskInfo, DiskError> {
    if disks.is_empty() {
        return Err(DiskError::NoDisks);
    }
    disks
        .iter()
        .filter(|d| hint.name.as_ref().is_none_or(|n| *n == d.name))
        .filter(|d| hint.serial.as_ref().is_none_or(|s| *s == d.serial))
        .filter(|d| {
            hint.wwn
                .as_ref()
                .is_none_or(|w| d.wwn.eq_ignore_ascii_case(w))
        })
        .filter(|d| hint.min_size_bytes.is_none_or(|m| d.size_bytes >= m))
        .min_by_key(|d| (d.size_bytes, d.name.clone()))
        .ok_or_else(|| DiskError::NoRootDisk {
            hint: serde_json::to_string(hint).unwrap_or_default(),
            disks: disks
                .iter()
                .map(|d| format!("{} {} B serial `{}`", d.name, d.size_bytes, d.serial))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Asks the kernel to zero (`zero`) or discard (`!zero`, which reads back as zeros) a range
/// of a block device or file with `fallocate`; false when the device cannot.
fn kernel_clear(f: &File, start: u64, len: u64, zero: bool) -> bool {
    use nix::fcntl::{FallocateFlags as F, fallocate};
    let flags = if zero {
        F::FALLOC_FL_ZERO_RANGE
    } else {
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE
    };
    let (Ok(at), Ok(n)) = (i64::try_from(start), i64::try_from(len)) else {
        return false;
    };
    fallocate(f, flags, at, n).is_ok()
}

fn is_block(f: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    f.metadata().is_ok_and(|m| m.file_type().is_block_device())
}

fn size_of(f: &mut File, dev: &Path) -> Result<u64, DiskError> {
    f.seek(SeekFrom::End(0))
        .map_err(io_err("cannot find the size of", dev))
}

fn zero_range(
    f: &mut File,
    dev: &Path,
    start: u64,
    len: u64,
    meter: Meter<'_>,
) -> Result<(), DiskError> {
    // The kernel zeroes fastest (and thin devices stay thin); chunks keep progress flowing.
    const CHUNK: u64 = 64 << 20;
    let total = len;
    let mut done = 0;
    let block = is_block(f);
    let buf = vec![0u8; 1 << 20];
    while done < len {
        let n = CHUNK.min(len - done);
        let at = start + done;
        let kernel = block && kernel_clear(f, at, n, true);
        if !kernel {
            f.seek(SeekFrom::Start(at))
                .map_err(io_err("cannot seek on", dev))?;
            let mut left = n;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                f.write_all(&buf[..k])
                    .map_err(io_err("cannot write zeros to", dev))?;
                left -= k as u64;
            }
        }
        done += n;
        meter(done, total);
    }
    Ok(())
}

/// Erases one disk (or file): its metadata at both ends and at the start of each of the
/// `partitions` (`(start, len)` in bytes, as the kernel lists them), then, for `discard`,
/// every block discarded (zeroed where the disk cannot discard), for `zero`, every block
/// zeroed. Returns what was done, for the log.
pub fn erase(
    dev: &Path,
    mode: EraseMode,
    partitions: &[(u64, u64)],
    meter: Meter<'_>,
) -> Result<String, DiskError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io_err("cannot open", dev))?;
    let size = size_of(&mut f, dev)?;
    let quiet = |_: u64, _: u64| {};
    let head = METADATA_BYTES.min(size);
    zero_range(&mut f, dev, 0, head, &quiet)?;
    let tail = METADATA_BYTES.min(size);
    zero_range(&mut f, dev, size - tail, tail, &quiet)?;
    for &(start, len) in partitions {
        if start < size {
            let n = METADATA_BYTES.min(len).min(size - start);
            zero_range(&mut f, dev, start, n, &quiet)?;
        }
    }
    let how = match mode {
        EraseMode::Metadata => "metadata".to_owned(),
        EraseMode::Discard => {
            let discarded = is_block(&f) && kernel_clear(&f, 0, size, false);
            if discarded {
                meter(size, size);
                "metadata, every block discarded".to_owned()
            } else {
                zero_range(&mut f, dev, 0, size, meter)?;
                "metadata, zeroed (the disk cannot discard)".to_owned()
            }
        }
        EraseMode::Zero => {
            zero_range(&mut f, dev, 0, size, meter)?;
            "zeroed".to_owned()
        }
    };
    f.sync_all().map_err(io_err("cannot flush", dev))?;
    Ok(how)
}

/// A byte range of a file, as a file of its own (a partition).
pub(crate) struct Region<'a> {
    pub(crate) file: &'a mut File,
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) pos: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let k = self.file.read(&mut buf[..n])?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the end of the partition",
            ));
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let k = self.file.write(&buf[..n])?;
        self.pos += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let next = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match next {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition",
            )),
        }
    }
}

/// MBR type of a FAT32 (LBA) partition.
const FAT32_LBA: u8 = 0x0c;
/// MBR type of a FAT16 (LBA) partition.
const FAT16_LBA: u8 = 0x0e;
/// MBR type of the protective entry of a GPT disk.
const GPT_PROTECTIVE: u8 = 0xee;

/// Where a config drive went: its partition's number and its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Partition number (from 1).
    pub number: usize,
    /// First byte on the disk.
    pub start: u64,
    /// Bytes.
    pub len: u64,
}

/// Adds a config drive to the MBR disk `dev`, whose logical sectors are `sector` bytes: a
/// [`CONFIG_DRIVE_BYTES`] FAT partition labelled `label` holding `files`, in the last free
/// space. Nothing of the partition table changes when it fails. (Any disk, GPT or MBR:
/// [`super::gpt::write_config_drive`].)
pub fn write_mbr_config_drive(
    dev: &Path,
    label: &str,
    files: &[ConfigFile],
    sector: u64,
) -> Result<Placed, DiskError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io_err("cannot open", dev))?;
    let mut mbr = mbrman::MBR::read_from(&mut f, sector as u32).map_err(|e| {
        DiskError::PartitionTable(format!(
            "the root disk {} has no MBR or GPT partition table after the image was written \
             ({e}); a config drive joins the image's partitions",
            dev.display()
        ))
    })?;
    if mbr
        .iter()
        .any(|(_, p)| p.is_used() && p.sys == GPT_PROTECTIVE)
    {
        return Err(DiskError::PartitionTable(format!(
            "the image on {} has a protective MBR but no GPT at {sector}-byte sectors",
            dev.display()
        )));
    }
    let Some((slot, _)) = mbr.iter().find(|(_, p)| p.is_unused()) else {
        return Err(DiskError::PartitionTable(format!(
            "the image on {} uses all four primary partitions; none is left for a config drive",
            dev.display()
        )));
    };
    // 1 MiB alignment, in sectors.
    mbr.align = (1 << 20) / sector as u32;
    let sectors = (CONFIG_DRIVE_BYTES / sector) as u32;
    let end_used = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(_, p)| p.starting_lba + p.sectors)
        .max()
        .unwrap_or(1);
    let Some(start) = mbr.find_last_place(sectors).filter(|s| *s >= end_used) else {
        return Err(DiskError::PartitionTable(format!(
            "{} has no {} MiB left after the image's partitions for a config drive",
            dev.display(),
            CONFIG_DRIVE_BYTES >> 20
        )));
    };
    let start_bytes = u64::from(start) * sector;
    let fat = make_fat(
        &mut f,
        start_bytes,
        CONFIG_DRIVE_BYTES,
        sector,
        label,
        files,
    )?;
    mbr[slot] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_INACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: if fat == fatfs::FatType::Fat32 {
            FAT32_LBA
        } else {
            FAT16_LBA
        },
        last_chs: mbrman::CHS::empty(),
        starting_lba: start,
        sectors,
    };
    // The table last: a drive half made is not listed.
    mbr.write_into(&mut f)
        .map_err(|e| DiskError::PartitionTable(format!("cannot write the partition table: {e}")))?;
    f.sync_all().map_err(io_err("cannot flush", dev))?;
    Ok(Placed {
        number: slot,
        start: start_bytes,
        len: CONFIG_DRIVE_BYTES,
    })
}

/// Makes a FAT file system of `len` bytes at `start` of `f`, with `sector`-byte logical
/// sectors (a disk's own: Linux mounts no FAT of smaller sectors than its device's),
/// labelled `label`, holding `files`. Returns its FAT type.
pub(crate) fn make_fat(
    f: &mut File,
    start: u64,
    len: u64,
    sector: u64,
    label: &str,
    files: &[ConfigFile],
) -> Result<fatfs::FatType, DiskError> {
    let mut label11 = [b' '; 11];
    for (d, s) in label11.iter_mut().zip(label.bytes()) {
        *d = s;
    }
    let mut region = Region {
        file: f,
        start,
        len,
        pos: 0,
    };
    fatfs::format_volume(
        &mut region,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label11)
            .bytes_per_sector(sector as u16),
    )
    .map_err(|e| DiskError::ConfigDrive(format!("cannot make the FAT filesystem: {e}")))?;
    let fs = fatfs::FileSystem::new(&mut region, fatfs::FsOptions::new())
        .map_err(|e| DiskError::ConfigDrive(format!("cannot open the new filesystem: {e}")))?;
    let fat = fs.fat_type();
    {
        let root = fs.root_dir();
        for file in files {
            let mut dir = root.clone();
            let parts: Vec<&str> = file.path.split('/').collect();
            let Some((name, dirs)) = parts.split_last() else {
                return Err(DiskError::ConfigDrive("a file has an empty path".into()));
            };
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir.create_dir(d).map_err(|e| {
                        DiskError::ConfigDrive(format!("cannot make directory {d}: {e}"))
                    })?,
                };
            }
            let mut out = dir
                .create_file(name)
                .map_err(|e| DiskError::ConfigDrive(format!("cannot create {}: {e}", file.path)))?;
            out.truncate()
                .and_then(|()| out.write_all(file.content.as_bytes()))
                .and_then(|()| out.flush())
                .map_err(|e| DiskError::ConfigDrive(format!("cannot write {}: {e}", file.path)))?;
        }
    }
    fs.unmount()
        .map_err(|e| DiskError::ConfigDrive(format!("cannot close the filesystem: {e}")))?;
    Ok(fat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, size: u64, serial: &str) -> DiskInfo {
        DiskInfo {
            name: name.into(),
            size_bytes: size,
            serial: serial.into(),
            ..DiskInfo::default()
        }
    }

    #[test]
    fn the_root_disk_is_the_smallest_that_matches_the_hint() {
        let disks = [
            disk("sda", 500 << 30, "A1"),
            disk("sdb", 100 << 30, "B2"),
            disk("nvme0n1", 200 << 30, "C3"),
        ];
        let pick = |h: RootHint| choose_root(&disks, &h).map(|d| d.name.clone());
        assert_eq!(pick(RootHint::default()).unwrap(), "sdb");
        let by_serial = RootHint {
            serial: Some("A1".into()),
            ..RootHint::default()
        };
        assert_eq!(pick(by_serial).unwrap(), "sda");
        let by_size = RootHint {
            min_size_bytes: Some(150 << 30),
            ..RootHint::default()
        };
        assert_eq!(pick(by_size).unwrap(), "nvme0n1");
        let none = RootHint {
            name: Some("sdz".into()),
            ..RootHint::default()
        };
        let e = pick(none).unwrap_err().to_string();
        assert!(e.contains("sdz") && e.contains("sda"), "{e}");
        assert!(matches!(
            choose_root(&[], &RootHint::default()),
            Err(DiskError::NoDisks)
        ));
    }

    fn file_disk(size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        (dir, p)
    }

    #[test]
    fn erasing_metadata_clears_both_ends_and_partition_starts_and_leaves_the_rest() {
        let (_d, p) = file_disk(64 << 20);
        std::fs::write(&p, vec![0xabu8; 64 << 20]).unwrap();
        let seen = std::sync::Mutex::new(0u64);
        let how = erase(&p, EraseMode::Metadata, &[(20 << 20, 10 << 20)], &|d, _| {
            *seen.lock().unwrap() = d
        })
        .unwrap();
        assert_eq!(how, "metadata");
        let b = std::fs::read(&p).unwrap();
        let m = METADATA_BYTES as usize;
        assert!(b[..m].iter().all(|&x| x == 0));
        assert!(b[b.len() - m..].iter().all(|&x| x == 0));
        assert!(b[20 << 20..(20 << 20) + m].iter().all(|&x| x == 0));
        assert_eq!(b[m], 0xab, "the middle is left alone");
        assert_eq!(b[(20 << 20) + m], 0xab);
    }

    #[test]
    fn zeroing_reports_progress_to_the_whole_size() {
        let (_d, p) = file_disk(8 << 20);
        std::fs::write(&p, vec![0x11u8; 8 << 20]).unwrap();
        let last = std::sync::Mutex::new((0u64, 0u64));
        erase(&p, EraseMode::Zero, &[], &|d, t| {
            *last.lock().unwrap() = (d, t)
        })
        .unwrap();
        assert_eq!(*last.lock().unwrap(), (8 << 20, 8 << 20));
        assert!(std::fs::read(&p).unwrap().iter().all(|&x| x == 0));
        // A file cannot be discarded: it is zeroed, and the result says so.
        std::fs::write(&p, vec![0x11u8; 8 << 20]).unwrap();
        let how = erase(&p, EraseMode::Discard, &[], &|_, _| {}).unwrap();
        assert!(how.contains("zeroed"), "{how}");
        assert!(std::fs::read(&p).unwrap().iter().all(|&x| x == 0));
    }

    fn with_mbr(p: &Path, parts: &[(u32, u32)]) {
        with_mbr_of(p, 512, parts)
    }

    fn with_mbr_of(p: &Path, sector: u32, parts: &[(u32, u32)]) {
        let mut f = OpenOptions::new().read(true).write(true).open(p).unwrap();
        let mut mbr = mbrman::MBR::new_from(&mut f, sector, [1, 2, 3, 4]).unwrap();
        for (i, &(start, sectors)) in parts.iter().enumerate() {
            mbr[i + 1] = mbrman::MBRPartitionEntry {
                boot: mbrman::BOOT_ACTIVE,
                first_chs: mbrman::CHS::empty(),
                sys: 0x83,
                last_chs: mbrman::CHS::empty(),
                starting_lba: start,
                sectors,
            };
        }
        mbr.write_into(&mut f).unwrap();
    }

    #[test]
    fn a_config_drive_is_a_labelled_fat_partition_after_the_image() {
        for sector in [512u32, 4096] {
            drive_after_an_mbr_image(sector);
        }
    }

    /// On an MBR disk of `sector`-byte sectors holding a 100 MiB partition from 1 MiB.
    fn drive_after_an_mbr_image(sector: u32) {
        let (_d, p) = file_disk(256 << 20);
        let per_mib = (1 << 20) / sector;
        with_mbr_of(&p, sector, &[(per_mib, 100 * per_mib)]);
        let files = vec![
            ConfigFile {
                path: "meta-data".into(),
                content: "instance-id: n1\nlocal-hostname: web-1\n".into(),
            },
            ConfigFile {
                path: "openstack/latest/meta_data.json".into(),
                content: "{\"hostname\": \"web-1\"}".into(),
            },
        ];
        let placed = write_mbr_config_drive(&p, "cidata", &files, u64::from(sector)).unwrap();
        let (slot, start) = (placed.number, placed.start);
        assert_eq!(slot, 2);
        assert!(start >= 101 << 20, "{sector}: after the image's partition");
        assert_eq!((start + CONFIG_DRIVE_BYTES) % (1 << 20), 0);
        let mut f = File::open(&p).unwrap();
        let mbr = mbrman::MBR::read_from(&mut f, sector).unwrap();
        assert_eq!(
            mbr[1].starting_lba, per_mib,
            "the image's partition is untouched"
        );
        assert!([FAT16_LBA, FAT32_LBA].contains(&mbr[2].sys));
        assert_eq!(
            u64::from(mbr[2].starting_lba) * u64::from(sector),
            start,
            "{sector}: the table counts the disk's own sectors"
        );
        let mut rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let region = Region {
            file: &mut rw,
            start,
            len: CONFIG_DRIVE_BYTES,
            pos: 0,
        };
        let fs = fatfs::FileSystem::new(region, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "cidata");
        let mut text = String::new();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("local-hostname: web-1"));
        text.clear();
        fs.root_dir()
            .open_file("openstack/latest/meta_data.json")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("web-1"));
    }

    #[test]
    fn a_config_drive_is_refused_where_it_cannot_go_and_names_why() {
        let files = vec![ConfigFile {
            path: "meta-data".into(),
            content: "x".into(),
        }];
        let (_d, p) = file_disk(64 << 20);
        let e = write_mbr_config_drive(&p, "cidata", &files, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no MBR or GPT partition table"), "{e}");
        with_mbr(&p, &[(2048, (60 << 11) - 2048)]);
        let e = write_mbr_config_drive(&p, "cidata", &files, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no 64 MiB left"), "{e}");
        let (_d2, g) = file_disk(256 << 20);
        {
            let mut f = OpenOptions::new().read(true).write(true).open(&g).unwrap();
            let mut mbr = mbrman::MBR::new_from(&mut f, 512, [1, 2, 3, 4]).unwrap();
            mbr[1] = mbrman::MBRPartitionEntry {
                boot: mbrman::BOOT_INACTIVE,
                first_chs: mbrman::CHS::empty(),
                sys: GPT_PROTECTIVE,
                last_chs: mbrman::CHS::empty(),
                starting_lba: 1,
                sectors: (256 << 11) - 1,
            };
            mbr.write_into(&mut f).unwrap();
        }
        let e = write_mbr_config_drive(&g, "cidata", &files, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPT"), "{e}");
    }
}
