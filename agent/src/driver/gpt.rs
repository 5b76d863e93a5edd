//! GPT disks after an image is written: the image's partition table fitted to the disk it
//! landed on, a config drive added where the root file system can still grow, and the EFI
//! system partition found for the UEFI boot entry.
//!
//! * **Fitting.** An image's GPT describes the image: its backup header sits at the image's
//!   end, in the middle of a larger disk, and its LBAs count the image's sectors (512 bytes
//!   for every cloud image). [`fit_to_disk`] moves the backup header (and the last usable
//!   sector) to the disk's end and, on a disk of other sectors (a 4Kn NVMe or SAS disk),
//!   rewrites the table in the disk's sectors — the partitions' bytes stay where they are,
//!   so each must start on a boundary of both sizes (every 1 MiB-aligned image does); an end
//!   off one loses the part sector (the last partition of a cloud image ends at its last
//!   512-byte sector; its file system's 4 KiB blocks never reach into it).
//!   The stale headers are cleared, the protective MBR sized to the disk (its boot flag kept).
//! * **The config drive** ([`add_config_drive`]) is a FAT file system as small as its files
//!   allow, in the disk's own sectors. It goes in the gap between the partition array and the
//!   first partition when it fits there (about 1 MiB on 1 MiB-aligned images, more than the
//!   512 KiB a plan's config drive may hold): the root file system, usually last, then keeps
//!   all the space after it and grows to fill the disk. Where the gap is too small it goes at
//!   the disk's end, as Ironic puts it, and the root file system grows up to it. The table is
//!   written last, after the file system: a failure leaves the table as it was, and no room at
//!   all is refused before anything is written.

use super::disks::{DiskError, Placed, Region, io_err, make_fat, write_mbr_config_drive};
use ferric_proto::plan::ConfigFile;
use gptman::{GPT, GPTPartitionEntry};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The EFI system partition's type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), as stored.
pub const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// "Microsoft basic data" (EBD0A0A2-B9E5-4433-87C0-68B6B72699C7), a FAT data partition's type.
pub const BASIC_DATA_TYPE: [u8; 16] = [
    0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7,
];

fn table_err(dev: &Path, what: &str) -> impl FnOnce(gptman::Error) -> DiskError {
    let dev = dev.display().to_string();
    let what = what.to_owned();
    move |e| DiskError::PartitionTable(format!("{what} on {dev}: {e}"))
}

/// Whether `f` holds a GPT header at LBA 1 of `sector`-byte sectors.
pub fn has_gpt(f: &mut File, sector: u64) -> io::Result<bool> {
    let mut sig = [0u8; 8];
    f.seek(SeekFrom::Start(sector))?;
    match f.read_exact(&mut sig) {
        Ok(()) => Ok(&sig == b"EFI PART"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// What [`fit_to_disk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// The sector size the image's table was written for.
    pub image_sector: u64,
    /// The disk's.
    pub sector: u64,
    /// Whether the backup header moved (the image is smaller than the disk, or converted).
    pub backup_moved: bool,
}

/// Fits the GPT of the image just written to `dev` (logical sectors of `sector` bytes) to the
/// disk: backup header at its end, and the table in its sectors. `None`: the image has no GPT.
pub fn fit_to_disk(dev: &Path, sector: u64) -> Result<Option<Fitted>, DiskError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io_err("cannot open", dev))?;
    let read = io_err("cannot read", dev);
    let image_sector = if has_gpt(&mut f, 512).map_err(read)? {
        512
    } else if has_gpt(&mut f, 4096).map_err(io_err("cannot read", dev))? {
        4096
    } else {
        return Ok(None);
    };
    let image = GPT::read_from(&mut f, image_sector)
        .map_err(table_err(dev, "the image's partition table cannot be read"))?;
    let disk_len = f
        .seek(SeekFrom::End(0))
        .map_err(io_err("cannot size", dev))?;
    let mut fitted = if image_sector == sector {
        let mut g = image.clone();
        g.header
            .update_from(&mut f, sector)
            .map_err(table_err(dev, "the partition table cannot be fitted"))?;
        g
    } else {
        convert(&mut f, dev, &image, sector)?
    };
    let old_primary = image.header.primary_lba * image_sector;
    let old_backup = image.header.backup_lba * image_sector;
    let backup_moved = old_backup != fitted.header.backup_lba * sector;
    // The image's own headers go before the new table is written (with other sectors, the
    // old primary header may lie inside the new partition array).
    let mut clear = |at: u64| -> io::Result<()> {
        if at + image_sector <= disk_len {
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&vec![0u8; image_sector as usize])?;
        }
        Ok(())
    };
    if image_sector != sector {
        clear(old_primary).map_err(io_err("cannot write", dev))?;
    }
    if backup_moved {
        clear(old_backup).map_err(io_err("cannot write", dev))?;
    }
    // The protective MBR covers the whole disk now; a BIOS image's boot flag stays.
    let mut flag = [0u8; 1];
    f.seek(SeekFrom::Start(446))
        .and_then(|_| f.read_exact(&mut flag))
        .map_err(io_err("cannot read", dev))?;
    let pmbr = if flag[0] == 0x80 {
        GPT::write_bootable_protective_mbr_into(&mut f, sector)
    } else {
        GPT::write_protective_mbr_into(&mut f, sector)
    };
    pmbr.map_err(table_err(dev, "the protective MBR cannot be written"))?;
    fitted
        .write_into(&mut f)
        .map_err(table_err(dev, "the partition table cannot be written"))?;
    f.sync_all().map_err(io_err("cannot flush", dev))?;
    Ok(Some(Fitted {
        image_sector,
        sector,
        backup_moved,
    }))
}

/// The image's table in the disk's sectors.
fn convert(f: &mut File, dev: &Path, image: &GPT, sector: u64) -> Result<GPT, DiskError> {
    let from = image.sector_size;
    let mut g = GPT::new_from(f, sector, image.header.disk_guid)
        .map_err(table_err(dev, "a partition table cannot be made"))?;
    let slots = g.header.number_of_partition_entries;
    for (i, p) in image.iter().filter(|(_, p)| p.is_used()) {
        let (start, end) = (p.starting_lba * from, (p.ending_lba + 1) * from);
        // An end off the boundary loses its last bytes: image tools end the last partition at
        // the image's last usable 512-byte sector, and file systems (ext4's 4 KiB blocks)
        // never use a part block.
        let end = end / sector * sector;
        if start % sector != 0 || end <= start {
            return Err(DiskError::PartitionTable(format!(
                "partition {i} of the image (from byte {start}) does not start on a \
                 {sector}-byte boundary: the image cannot be placed on {}, a disk of \
                 {sector}-byte sectors",
                dev.display()
            )));
        }
        if i > slots {
            return Err(DiskError::PartitionTable(format!(
                "the image uses partition entry {i}; a table has {slots}"
            )));
        }
        g[i] = GPTPartitionEntry {
            starting_lba: start / sector,
            ending_lba: end / sector - 1,
            ..p.clone()
        };
    }
    Ok(g)
}

/// Bytes of a FAT file system that holds `files` with `sector`-byte sectors: every file and
/// directory a cluster or more, the tables, the root directory, and room to spare.
pub fn config_drive_bytes(files: &[ConfigFile], sector: u64) -> u64 {
    let cluster = sector.max(4096);
    let round = |n: u64| n.div_ceil(cluster) * cluster;
    let dirs: std::collections::BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.rsplit_once('/').map(|(d, _)| d))
        .collect();
    let data: u64 = files
        .iter()
        .map(|f| round(f.content.len() as u64).max(cluster))
        .sum::<u64>()
        + cluster * dirs.len() as u64 * 2;
    // Boot sector, two FATs, a root directory of 512 entries, and a quarter to spare.
    let bytes = 64 * 1024 + data + data / 4;
    bytes.div_ceil(64 * 1024) * 64 * 1024
}

/// Adds the config drive to the GPT of `f` (`dev`, `sector`-byte sectors), where the root file
/// system can still grow (see the module's notes); returns where it went.
pub fn add_config_drive(
    f: &mut File,
    dev: &Path,
    sector: u64,
    label: &str,
    files: &[ConfigFile],
) -> Result<Placed, DiskError> {
    let mut gpt =
        GPT::read_from(f, sector).map_err(table_err(dev, "the partition table cannot be read"))?;
    let len = config_drive_bytes(files, sector);
    let sectors = len.div_ceil(sector);
    let used: Vec<(u32, &GPTPartitionEntry)> = gpt.iter().filter(|(_, p)| p.is_used()).collect();
    let first_used = used.iter().map(|(_, p)| p.starting_lba).min();
    let last_used = used.iter().map(|(_, p)| p.ending_lba).max().unwrap_or(0);
    // Where: the gap before the first partition (4 KiB-aligned), else the disk's end
    // (1 MiB-aligned), past every partition.
    let align_4k = (4096 / sector).max(1);
    let gap_start = gpt.header.first_usable_lba.div_ceil(align_4k) * align_4k;
    let in_gap = first_used
        .filter(|&first| gap_start + sectors <= first)
        .map(|_| gap_start);
    let at_end = || {
        let align = ((1 << 20) / sector).max(1);
        let end = gpt.header.last_usable_lba + 1;
        end.checked_sub(sectors)
            .map(|s| s / align * align)
            .filter(|&s| s > last_used && s >= gpt.header.first_usable_lba)
    };
    let Some(start) = in_gap.or_else(at_end) else {
        return Err(DiskError::PartitionTable(format!(
            "{} has no room for a config drive of {} KiB: neither before the image's first \
             partition nor after its last (the image fills the disk)",
            dev.display(),
            len >> 10
        )));
    };
    let Some(number) = gpt.iter().find(|(_, p)| p.is_unused()).map(|(i, _)| i) else {
        return Err(DiskError::PartitionTable(format!(
            "the image on {} uses every entry of its partition table",
            dev.display()
        )));
    };
    make_fat(f, start * sector, sectors * sector, sector, label, files)?;
    let mut guid: [u8; 16] = rand::random();
    // A random (version 4, RFC 4122 variant) GUID, in GPT's mixed-endian layout.
    guid[7] = (guid[7] & 0x0f) | 0x40;
    guid[8] = (guid[8] & 0x3f) | 0x80;
    gpt[number] = GPTPartitionEntry {
        partition_type_guid: BASIC_DATA_TYPE,
        unique_partition_guid: guid,
        starting_lba: start,
        ending_lba: start + sectors - 1,
        attribute_bits: 0,
        partition_name: label.into(),
    };
    // The table last: a drive half made is not listed.
    gpt.write_into(f)
        .map_err(table_err(dev, "the partition table cannot be written"))?;
    Ok(Placed {
        number: number as usize,
        start: start * sector,
        len: sectors * sector,
    })
}

/// An EFI system partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Esp {
    /// Partition number (from 1).
    pub number: u32,
    /// First LBA.
    pub start: u64,
    /// Sectors.
    pub sectors: u64,
    /// Its unique partition GUID, as stored.
    pub guid: [u8; 16],
    /// The disk's sector size.
    pub sector: u64,
}

/// The EFI system partition of the GPT on `f` (`sector`-byte sectors).
pub fn find_esp(f: &mut File, dev: &Path, sector: u64) -> Result<Esp, DiskError> {
    let gpt = GPT::read_from(f, sector).map_err(table_err(
        dev,
        "no GPT (a UEFI boot entry names a partition of one)",
    ))?;
    gpt.iter()
        .find(|(_, p)| p.is_used() && p.partition_type_guid == ESP_TYPE)
        .map(|(i, p)| Esp {
            number: i,
            start: p.starting_lba,
            sectors: p.ending_lba - p.starting_lba + 1,
            guid: p.unique_partition_guid,
            sector,
        })
        .ok_or_else(|| {
            DiskError::PartitionTable(format!(
                "the image on {} has no EFI system partition: it cannot boot by UEFI",
                dev.display()
            ))
        })
}

/// The loader a UEFI boot entry for this ESP should start: a distribution's shim, else its
/// GRUB, else the removable-media path `\EFI\BOOT\BOOTX64.EFI`. The path as UEFI writes it.
pub fn find_loader(f: &mut File, dev: &Path, esp: &Esp) -> Result<String, DiskError> {
    let mut region = Region {
        file: f,
        start: esp.start * esp.sector,
        len: esp.sectors * esp.sector,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(&mut region, fatfs::FsOptions::new()).map_err(|e| {
        DiskError::PartitionTable(format!(
            "the EFI system partition (partition {}) of {} is no FAT file system: {e}",
            esp.number,
            dev.display()
        ))
    })?;
    let root = fs.root_dir();
    let efi = root.open_dir("EFI").map_err(|_| {
        DiskError::PartitionTable(format!(
            "the EFI system partition of {} has no \\EFI directory",
            dev.display()
        ))
    })?;
    let mut vendors: Vec<String> = efi
        .iter()
        .flatten()
        .filter(|e| e.is_dir())
        .map(|e| e.file_name())
        .filter(|n| n != "." && n != ".." && !n.eq_ignore_ascii_case("BOOT"))
        .collect();
    vendors.sort();
    for want in ["shimx64.efi", "grubx64.efi"] {
        for v in &vendors {
            let Ok(dir) = efi.open_dir(v) else { continue };
            if let Some(name) = dir
                .iter()
                .flatten()
                .map(|e| e.file_name())
                .find(|n| n.eq_ignore_ascii_case(want))
            {
                return Ok(format!("\\EFI\\{v}\\{name}"));
            }
        }
    }
    if efi
        .open_dir("BOOT")
        .ok()
        .and_then(|d| d.open_file("BOOTX64.EFI").ok())
        .is_some()
    {
        return Ok("\\EFI\\BOOT\\BOOTX64.EFI".into());
    }
    Err(DiskError::PartitionTable(format!(
        "the EFI system partition of {} holds no loader (\\EFI\\*\\shimx64.efi, grubx64.efi, \
         or \\EFI\\BOOT\\BOOTX64.EFI)",
        dev.display()
    )))
}

#[cfg(test)]
mod tests;

/// Adds a config drive to the disk `dev`, whose logical sectors are `sector` bytes: a FAT
/// partition labelled `label` holding `files`. On a GPT disk it goes where the root file
/// system can still grow ([`add_config_drive`]); on an MBR disk it is the last free space's
/// ([`write_mbr_config_drive`]). Nothing of the partition table changes when it fails.
pub fn write_config_drive(
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
    if !has_gpt(&mut f, sector).map_err(io_err("cannot read", dev))? {
        drop(f);
        return write_mbr_config_drive(dev, label, files, sector);
    }
    let placed = add_config_drive(&mut f, dev, sector, label, files)?;
    f.sync_all().map_err(io_err("cannot flush", dev))?;
    Ok(placed)
}
