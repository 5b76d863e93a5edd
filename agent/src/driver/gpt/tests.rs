use super::*;

const MIB: u64 = 1 << 20;

/// A file of `disk` bytes holding, at its start, a 512-byte-sector GPT image of `image` bytes
/// with the given partitions (first and last LBA, type), as image tools write them.
fn disk_with_image(
    disk: u64,
    image: u64,
    parts: &[(u64, u64, [u8; 16])],
) -> tempfile::NamedTempFile {
    disk_with_image_at(512, disk, image, parts)
}

/// The same, for `sector`-byte sectors.
fn disk_with_image_at(
    sector: u64,
    disk: u64,
    image: u64,
    parts: &[(u64, u64, [u8; 16])],
) -> tempfile::NamedTempFile {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut f = tmp.reopen().unwrap();
    // The image alone first (its backup header at its own end), then the disk around it.
    f.set_len(image).unwrap();
    let mut g = GPT::new_from(&mut f, sector, [7; 16]).unwrap();
    for (i, &(start, end, ty)) in parts.iter().enumerate() {
        g[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: ty,
            unique_partition_guid: [i as u8 + 1; 16],
            starting_lba: start,
            ending_lba: end,
            attribute_bits: 0,
            partition_name: format!("p{i}").as_str().into(),
        };
    }
    GPT::write_protective_mbr_into(&mut f, sector).unwrap();
    g.write_into(&mut f).unwrap();
    f.set_len(disk).unwrap();
    tmp
}

const LINUX: [u8; 16] = [0xaf; 16];

/// A cloud image's layout: BIOS boot at 1 MiB, an ESP, root to the image's end.
fn cloud_image(disk: u64, image: u64) -> tempfile::NamedTempFile {
    let end = image / 512 - 34;
    disk_with_image(
        disk,
        image,
        &[
            (2048, 4095, LINUX),
            (4096, 4096 + 16383, ESP_TYPE),
            (20480, end, LINUX),
        ],
    )
}

fn files() -> Vec<ConfigFile> {
    vec![
        ConfigFile {
            path: "meta-data".into(),
            content: "instance-id: n1\nlocal-hostname: web-1\n".into(),
        },
        ConfigFile {
            path: "openstack/latest/network_data.json".into(),
            content: "{\"links\": []}".into(),
        },
    ]
}

fn open(tmp: &tempfile::NamedTempFile) -> File {
    tmp.reopen().unwrap()
}

#[test]
fn an_image_smaller_than_its_disk_has_its_backup_header_moved_to_the_end() {
    let tmp = cloud_image(256 * MIB, 64 * MIB);
    let fitted = fit_to_disk(tmp.path(), 512).unwrap().unwrap();
    assert_eq!(
        fitted,
        Fitted {
            image_sector: 512,
            sector: 512,
            backup_moved: true
        }
    );
    let mut f = open(&tmp);
    let g = GPT::read_from(&mut f, 512).unwrap();
    let sectors = 256 * MIB / 512;
    assert_eq!(g.header.backup_lba, sectors - 1);
    assert_eq!(g.header.last_usable_lba, sectors - 34);
    assert_eq!(g[3].starting_lba, 20480, "partitions stay where they are");
    // The image's own backup header, mid-disk, is gone.
    let mut sig = [0u8; 8];
    f.seek(SeekFrom::Start(64 * MIB - 512)).unwrap();
    f.read_exact(&mut sig).unwrap();
    assert_ne!(&sig, b"EFI PART");
    // The backup copy is a valid table on its own.
    f.seek(SeekFrom::Start(256 * MIB - 512)).unwrap();
    f.read_exact(&mut sig).unwrap();
    assert_eq!(&sig, b"EFI PART");
    // An image without a GPT is left alone.
    let raw = tempfile::NamedTempFile::new().unwrap();
    raw.as_file().set_len(MIB).unwrap();
    assert_eq!(fit_to_disk(raw.path(), 512).unwrap(), None);
}

#[test]
fn on_a_disk_of_4096_byte_sectors_the_table_is_rewritten_in_its_sectors() {
    let tmp = cloud_image(256 * MIB, 64 * MIB);
    let fitted = fit_to_disk(tmp.path(), 4096).unwrap().unwrap();
    assert_eq!((fitted.image_sector, fitted.sector), (512, 4096));
    let mut f = open(&tmp);
    assert!(
        !has_gpt(&mut f, 512).unwrap(),
        "the 512-byte header is cleared"
    );
    assert!(has_gpt(&mut f, 4096).unwrap());
    let g = GPT::read_from(&mut f, 4096).unwrap();
    assert_eq!(g.header.backup_lba, 256 * MIB / 4096 - 1);
    // Same bytes, counted in 4096-byte sectors.
    assert_eq!((g[1].starting_lba, g[1].ending_lba), (256, 511));
    assert_eq!((g[2].starting_lba, g[2].ending_lba), (512, 2559));
    assert_eq!(g[3].starting_lba, 2560);
    assert_eq!(g[2].partition_type_guid, ESP_TYPE);
    assert_eq!(g[2].unique_partition_guid, [2; 16]);
    // A partition off a 4 KiB boundary cannot be placed, and the error says which.
    let odd = disk_with_image(
        64 * MIB,
        32 * MIB,
        &[(34, 2047, LINUX), (2048, 8191, LINUX)],
    );
    let e = fit_to_disk(odd.path(), 4096).unwrap_err().to_string();
    assert!(e.contains("partition 1") && e.contains("4096-byte"), "{e}");
    // The root partition ended at the image's last usable 512-byte sector: its part sector
    // is dropped.
    let root_end_bytes = (64 * MIB / 512 - 34 + 1) * 512;
    assert_eq!(g[3].ending_lba, root_end_bytes / 4096 - 1);
}

fn config_drive_is_readable(f: &mut File, placed: Placed, sector: u64, label: &str) {
    let mut region = Region {
        file: f,
        start: placed.start,
        len: placed.len,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(&mut region, fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_label().trim(), label);
    let mut s = String::new();
    fs.root_dir()
        .open_file("openstack/latest/network_data.json")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "{\"links\": []}");
    let _ = sector;
}

#[test]
fn a_config_drive_goes_before_the_first_partition_so_root_grows_to_the_end() {
    for sector in [512u64, 4096] {
        let tmp = cloud_image(256 * MIB, 64 * MIB);
        fit_to_disk(tmp.path(), sector).unwrap();
        let mut f = open(&tmp);
        let placed = add_config_drive(&mut f, tmp.path(), sector, "cidata", &files()).unwrap();
        assert!(placed.start + placed.len <= MIB, "{placed:?} at {sector}");
        assert_eq!(placed.start % 4096, 0);
        let g = GPT::read_from(&mut f, sector).unwrap();
        let drive = &g[placed.number as u32];
        assert_eq!(drive.partition_type_guid, BASIC_DATA_TYPE);
        assert_eq!(drive.partition_name.as_str(), "cidata");
        // Everything after the root partition is free: it can grow to the disk's end.
        let root_end = g[3].ending_lba;
        assert!(
            g.iter()
                .filter(|(_, p)| p.is_used())
                .all(|(_, p)| p.starting_lba <= root_end),
            "nothing after root"
        );
        config_drive_is_readable(&mut f, placed, sector, "cidata");
    }
}

#[test]
fn without_room_before_the_first_partition_the_config_drive_goes_to_the_end() {
    for sector in [512u64, 4096] {
        // The first partition right after the partition array: no gap.
        let (first, array) = if sector == 512 { (34, 32) } else { (6, 4) };
        let image = 64 * MIB / sector;
        let tmp = disk_with_image_at(
            sector,
            256 * MIB,
            64 * MIB,
            &[(first, image - array - 2, LINUX)],
        );
        fit_to_disk(tmp.path(), sector).unwrap();
        let mut f = open(&tmp);
        let placed = add_config_drive(&mut f, tmp.path(), sector, "config-2", &files()).unwrap();
        assert!(placed.start >= 64 * MIB, "{placed:?} at {sector}");
        assert_eq!(placed.start % MIB, 0);
        assert!(placed.start + placed.len <= 256 * MIB - 33 * 512);
        config_drive_is_readable(&mut f, placed, sector, "config-2");
    }
}

#[test]
fn a_disk_without_room_is_refused_before_the_table_is_touched() {
    // The image's root partition runs to the disk's last usable sector.
    let tmp = disk_with_image(64 * MIB, 64 * MIB, &[(34, 64 * MIB / 512 - 34, LINUX)]);
    let before = std::fs::read(tmp.path()).unwrap();
    let mut f = open(&tmp);
    let e = add_config_drive(&mut f, tmp.path(), 512, "cidata", &files())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no room for a config drive"), "{e}");
    assert_eq!(
        std::fs::read(tmp.path()).unwrap(),
        before,
        "nothing written"
    );
}

#[test]
fn config_drives_are_as_small_as_their_files_allow() {
    let small = config_drive_bytes(&files(), 512);
    assert!(small <= 256 * 1024, "{small}");
    // The largest a plan carries (512 KiB of files) still fits a 1 MiB-aligned image's gap.
    let big = vec![ConfigFile {
        path: "user-data".into(),
        content: "x".repeat(512 * 1024),
    }];
    assert!(config_drive_bytes(&big, 4096) <= 1000 * 1024);
}

#[test]
fn the_esp_and_its_loader_are_found() {
    let tmp = cloud_image(128 * MIB, 64 * MIB);
    fit_to_disk(tmp.path(), 512).unwrap();
    let mut f = open(&tmp);
    let esp = find_esp(&mut f, tmp.path(), 512).unwrap();
    assert_eq!((esp.number, esp.start, esp.sectors), (2, 4096, 16384));
    // No file system yet.
    let e = find_loader(&mut f, tmp.path(), &esp)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no FAT"), "{e}");
    let fill = |paths: &[&str]| {
        let mut f = open(&tmp);
        let mut region = Region {
            file: &mut f,
            start: esp.start * 512,
            len: esp.sectors * 512,
            pos: 0,
        };
        fatfs::format_volume(&mut region, fatfs::FormatVolumeOptions::new()).unwrap();
        let fs = fatfs::FileSystem::new(&mut region, fatfs::FsOptions::new()).unwrap();
        for p in paths {
            let (dir, name) = p.rsplit_once('/').unwrap();
            let mut d = fs.root_dir();
            for part in dir.split('/') {
                d = d.open_dir(part).or_else(|_| d.create_dir(part)).unwrap();
            }
            d.create_file(name).unwrap().write_all(b"MZ").unwrap();
        }
    };
    fill(&[
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/debian/grubx64.efi",
        "EFI/debian/shimx64.efi",
    ]);
    assert_eq!(
        find_loader(&mut f, tmp.path(), &esp).unwrap(),
        "\\EFI\\debian\\shimx64.efi"
    );
    fill(&["EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi"]);
    assert_eq!(
        find_loader(&mut f, tmp.path(), &esp).unwrap(),
        "\\EFI\\debian\\grubx64.efi"
    );
    fill(&["EFI/BOOT/BOOTX64.EFI"]);
    assert_eq!(
        find_loader(&mut f, tmp.path(), &esp).unwrap(),
        "\\EFI\\BOOT\\BOOTX64.EFI"
    );
    // An image without an ESP cannot boot by UEFI, and the error says so.
    let bios = disk_with_image(64 * MIB, 64 * MIB, &[(2048, 4095, LINUX)]);
    let e = find_esp(&mut open(&bios), bios.path(), 512)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no EFI system partition"), "{e}");
}
