//! UEFI boot entries through efivarfs: the deployed disk's loader as one `Boot####` variable
//! (an `EFI_LOAD_OPTION`, UEFI 2.10 §3.1.3: a hard-drive media path naming the ESP by its
//! partition GUID, then the loader's file path) made first in `BootOrder`.
//!
//! Ferric's entry is known by its description ([`DESCRIPTION`]): a deploy reuses the one an
//! earlier deploy made and removes any other of that description, so that entries do not pile
//! up over deploys. Other entries (the firmware's own, an operator's) are kept, after it.
//! Written by hand: the load option is a few dozen bytes whose layout the specification fixes,
//! and the Rust crates for EFI variables drag in Windows APIs or leave efivarfs's semantics
//! out. `Boot####` and `BootOrder` are variables Linux's efivarfs leaves mutable, so no
//! `chattr` is needed.

use super::gpt::Esp;
use std::io;
use std::path::Path;

/// The description of Ferric's boot entry.
pub const DESCRIPTION: &str = "Ferric deployed OS";
/// The EFI global variable GUID, as efivarfs names its variables.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot-service and runtime access.
const ATTRIBUTES: u32 = 0x7;
/// `LOAD_OPTION_ACTIVE`.
const ACTIVE: u32 = 0x1;

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The load option that starts `loader` (`\EFI\debian\shimx64.efi`) from `esp`.
pub fn load_option(esp: &Esp, loader: &str) -> Vec<u8> {
    let mut path = Vec::new();
    // Hard drive media path: partition number, start and size in LBAs, GPT partition GUID.
    path.extend([0x04, 0x01, 42, 0]);
    path.extend(esp.number.to_le_bytes());
    path.extend(esp.start.to_le_bytes());
    path.extend(esp.sectors.to_le_bytes());
    path.extend(esp.guid);
    path.extend([0x02, 0x02]); // GPT, GUID signature
    // File path media path.
    let file = ucs2(loader);
    path.extend([0x04, 0x04]);
    path.extend(((4 + file.len()) as u16).to_le_bytes());
    path.extend(file);
    // End of the device path.
    path.extend([0x7f, 0xff, 0x04, 0x00]);
    let mut out = Vec::new();
    out.extend(ACTIVE.to_le_bytes());
    out.extend((path.len() as u16).to_le_bytes());
    out.extend(ucs2(DESCRIPTION));
    out.extend(path);
    out
}

/// A load option's description, if the bytes are one.
pub fn description(option: &[u8]) -> Option<String> {
    let rest = option.get(6..)?;
    let units: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    // No terminator within the variable: not a load option.
    if units.len() * 2 + 2 > rest.len() {
        return None;
    }
    String::from_utf16(&units).ok()
}

fn var(vars: &Path, name: &str) -> std::path::PathBuf {
    vars.join(format!("{name}-{GLOBAL}"))
}

fn read_var(vars: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(var(vars, name)) {
        // The first four bytes are the variable's attributes.
        Ok(b) => Ok(Some(b.get(4..).unwrap_or_default().to_vec())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_var(vars: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    // efivarfs takes a variable in one write: attributes, then the data.
    let mut buf = ATTRIBUTES.to_le_bytes().to_vec();
    buf.extend(data);
    std::fs::write(var(vars, name), buf)
}

/// What [`set_first`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySet {
    /// The entry's number (`Boot####`).
    pub number: u16,
    /// Whether an earlier deploy's entry was reused.
    pub reused: bool,
    /// Ferric entries beyond the first, removed.
    pub removed: Vec<u16>,
    /// The boot order written.
    pub order: Vec<u16>,
}

/// The numbers of every `Boot####` variable in `vars`, and of those that are Ferric's.
fn entries(vars: &Path) -> io::Result<(Vec<u16>, Vec<u16>)> {
    let mut numbers: Vec<u16> = std::fs::read_dir(vars)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let hex = name
                .strip_prefix("Boot")?
                .strip_suffix(&format!("-{GLOBAL}"))?;
            (hex.len() == 4)
                .then(|| u16::from_str_radix(hex, 16).ok())
                .flatten()
        })
        .collect();
    numbers.sort_unstable();
    let mut ours = Vec::new();
    for &n in &numbers {
        if let Some(b) = read_var(vars, &format!("Boot{n:04X}"))?
            && description(&b).as_deref() == Some(DESCRIPTION)
        {
            ours.push(n);
        }
    }
    Ok((numbers, ours))
}

/// `BootOrder` in `vars` (empty when there is none).
fn boot_order(vars: &Path) -> io::Result<Vec<u16>> {
    Ok(read_var(vars, "BootOrder")?
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect())
}

fn set_boot_order(vars: &Path, order: &[u16]) -> io::Result<()> {
    let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    write_var(vars, "BootOrder", &bytes)
}

/// Makes `option` Ferric's boot entry in the efivarfs directory `vars` and puts it first in
/// `BootOrder`.
pub fn set_first(vars: &Path, option: &[u8]) -> io::Result<EntrySet> {
    let (numbers, ours) = entries(vars)?;
    let (number, reused) = match ours.first() {
        Some(&n) => (n, true),
        None => {
            let free = (0..=u16::MAX)
                .find(|n| !numbers.contains(n))
                .ok_or_else(|| io::Error::other("every Boot#### variable is taken"))?;
            (free, false)
        }
    };
    let removed: Vec<u16> = ours.iter().skip(1).copied().collect();
    for n in &removed {
        std::fs::remove_file(var(vars, &format!("Boot{n:04X}")))?;
    }
    write_var(vars, &format!("Boot{number:04X}"), option)?;
    let order: Vec<u16> = std::iter::once(number)
        .chain(
            boot_order(vars)?
                .into_iter()
                .filter(|n| *n != number && !removed.contains(n)),
        )
        .collect();
    set_boot_order(vars, &order)?;
    Ok(EntrySet {
        number,
        reused,
        removed,
        order,
    })
}

/// Removes Ferric's boot entries from `vars` and from `BootOrder` (the disk they started is
/// being erased): what the firmware had after them, network boot on a server set up for
/// provisioning, is first again. Returns the entries removed.
pub fn remove_ours(vars: &Path) -> io::Result<Vec<u16>> {
    let (_, ours) = entries(vars)?;
    if ours.is_empty() {
        return Ok(ours);
    }
    let order: Vec<u16> = boot_order(vars)?
        .into_iter()
        .filter(|n| !ours.contains(n))
        .collect();
    // The order first: an entry it still named would be a dangling reference.
    set_boot_order(vars, &order)?;
    for n in &ours {
        std::fs::remove_file(var(vars, &format!("Boot{n:04X}")))?;
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> Esp {
        Esp {
            number: 15,
            start: 8192,
            sectors: 217088,
            guid: [0x5a; 16],
            sector: 512,
        }
    }

    #[test]
    fn a_load_option_names_the_esp_by_its_guid_and_the_loader_by_its_path() {
        let o = load_option(&esp(), "\\EFI\\debian\\shimx64.efi");
        assert_eq!(&o[..4], &[1, 0, 0, 0], "active");
        assert_eq!(description(&o).unwrap(), DESCRIPTION);
        let path_len = u16::from_le_bytes([o[4], o[5]]) as usize;
        let path = &o[6 + (DESCRIPTION.len() + 1) * 2..];
        assert_eq!(path.len(), path_len);
        // Hard drive node: type, subtype, length 42, partition 15 at 8192 of 217088 sectors.
        assert_eq!(&path[..4], &[0x04, 0x01, 42, 0]);
        assert_eq!(u32::from_le_bytes(path[4..8].try_into().unwrap()), 15);
        assert_eq!(u64::from_le_bytes(path[8..16].try_into().unwrap()), 8192);
        assert_eq!(u64::from_le_bytes(path[16..24].try_into().unwrap()), 217088);
        assert_eq!(&path[24..40], &[0x5a; 16]);
        assert_eq!(&path[40..42], &[0x02, 0x02]);
        // File node, then the end node.
        assert_eq!(&path[42..44], &[0x04, 0x04]);
        let file: Vec<u16> = path[46..path.len() - 6]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&file).unwrap(),
            "\\EFI\\debian\\shimx64.efi"
        );
        assert_eq!(&path[path.len() - 4..], &[0x7f, 0xff, 0x04, 0x00]);
        assert_eq!(description(&[1, 0, 0, 0, 0, 0, b'x', 0]), None);
    }

    fn put(dir: &Path, name: &str, data: &[u8]) {
        write_var(dir, name, data).unwrap();
    }

    fn order(dir: &Path) -> Vec<u16> {
        read_var(dir, "BootOrder")
            .unwrap()
            .unwrap()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    fn firmware_entry(desc: &str) -> Vec<u8> {
        let mut o = 1u32.to_le_bytes().to_vec();
        o.extend(4u16.to_le_bytes());
        o.extend(ucs2(desc));
        o.extend([0x7f, 0xff, 0x04, 0x00]);
        o
    }

    #[test]
    fn deploys_reuse_one_entry_first_in_the_boot_order_and_keep_the_firmwares() {
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path();
        put(vars, "Boot0000", &firmware_entry("UiApp"));
        put(
            vars,
            "Boot0001",
            &firmware_entry("UEFI PXEv4 (MAC:525400000000)"),
        );
        put(vars, "BootOrder", &[1, 0, 0, 0]);
        // Not a boot entry, though it starts alike.
        put(vars, "BootCurrent", &[1, 0]);
        let first = set_first(vars, &load_option(&esp(), "\\EFI\\debian\\shimx64.efi")).unwrap();
        assert_eq!((first.number, first.reused), (2, false));
        assert_eq!(order(vars), [2, 1, 0]);
        // The attributes efivarfs wants come first.
        let raw = std::fs::read(var(vars, "Boot0002")).unwrap();
        assert_eq!(&raw[..4], &[7, 0, 0, 0]);
        // A network boot put PXE first again; the next deploy reuses entry 2.
        put(vars, "BootOrder", &[1, 0, 2, 0, 0, 0]);
        let again = set_first(vars, &load_option(&esp(), "\\EFI\\debian\\grubx64.efi")).unwrap();
        assert_eq!((again.number, again.reused), (2, true));
        assert_eq!(order(vars), [2, 1, 0]);
        let entries = std::fs::read_dir(vars)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("Boot0") || n.starts_with("Boot1")
            })
            .count();
        assert_eq!(entries, 3, "entries do not grow over deploys");
        // Duplicates another tool or an older version left are removed.
        put(
            vars,
            "Boot0007",
            &load_option(&esp(), "\\EFI\\old\\grubx64.efi"),
        );
        put(vars, "BootOrder", &[7, 0, 1, 0, 2, 0, 0, 0]);
        let tidy = set_first(vars, &load_option(&esp(), "\\EFI\\debian\\shimx64.efi")).unwrap();
        assert_eq!((tidy.number, tidy.removed.clone()), (2, vec![7]));
        assert_eq!(order(vars), [2, 1, 0]);
        assert!(!var(vars, "Boot0007").exists());
        // Cleaning removes Ferric's entry: network boot is first again, the firmware's stay,
        // and the next deploy makes one entry again.
        assert_eq!(remove_ours(vars).unwrap(), [2]);
        assert_eq!(order(vars), [1, 0]);
        assert!(!var(vars, "Boot0002").exists());
        assert!(var(vars, "Boot0000").exists() && var(vars, "Boot0001").exists());
        assert_eq!(
            remove_ours(vars).unwrap(),
            Vec::<u16>::new(),
            "nothing left to remove"
        );
        let next = set_first(vars, &load_option(&esp(), "\\EFI\\debian\\shimx64.efi")).unwrap();
        assert_eq!((next.number, next.reused), (2, false));
        assert_eq!(order(vars), [2, 1, 0]);
    }
}
