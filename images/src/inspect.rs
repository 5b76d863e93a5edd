//! Identify an image by its content and refuse it when it is unsafe.
//!
//! Only the bytes decide: a file's name or the format a user declares never do. The checks
//! follow what image services learned the hard way: an image must not make the host read other
//! files (qcow2 backing files and external data files, vmdk extents, vhd parents), and its
//! header must not lie (sizes that do not add up, tables outside the file).

use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};

/// How many bytes of the start are read for identification.
pub const HEAD_LEN: usize = 64 * 1024;
/// Largest virtual size accepted (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Plain bytes.
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
    /// VMware sparse (monolithic or stream-optimized).
    Vmdk,
    /// Virtual PC / Hyper-V (legacy).
    Vhd,
    /// Hyper-V.
    Vhdx,
    /// VirtualBox.
    Vdi,
    /// ISO 9660.
    Iso,
}

impl Format {
    /// Parses a format name (qemu-img's spelling; `vhd` for `vpc` too); the error lists the
    /// names known.
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        Ok(match s {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vpc" | "vhd" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            "vdi" => Format::Vdi,
            "iso" => Format::Iso,
            _ => return Err(FormatError::Unknown(s.to_owned())),
        })
    }

    /// [`Format::parse`] of a format the user may or may not have declared.
    pub fn parse_declared(s: Option<&str>) -> Result<Option<Format>, FormatError> {
        s.map(Format::parse).transpose()
    }

    /// Name as qemu-img spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
        }
    }
}

/// A format name Ferric does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// None of qemu-img's names that Ferric reads (the message lists them).
    #[error("unknown image format `{0}` (raw, qcow2, vmdk, vpc, vhdx, vdi, iso)")]
    Unknown(String),
}

/// Compression wrappers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wrapper {
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
    /// xz.
    Xz,
}

/// What an image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// Format of the (decompressed) content.
    pub format: Format,
    /// Compression around it, if any.
    pub wrapper: Option<Wrapper>,
    /// Size of the disk it describes, when the header says (raw: the file size).
    pub virtual_size: Option<u64>,
    /// Bytes the file takes (compressed size for wrapped images).
    pub actual_size: u64,
    /// Format details (`version=3`, `cluster_size=65536`, …).
    pub details: Vec<String>,
}

/// Why an image was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image would make the host read other files, or its header lies.
    #[error("unsafe {format} image: {reason}")]
    Unsafe {
        /// Format detected.
        format: &'static str,
        /// What makes it unsafe.
        reason: String,
    },
    /// The content is not the declared format.
    #[error("image was declared {declared} but its content is {detected}")]
    FormatMismatch {
        /// Declared.
        declared: &'static str,
        /// Detected.
        detected: &'static str,
    },
    /// A feature Ferric does not handle.
    #[error("unsupported {format} image: {reason}")]
    Unsupported {
        /// Format detected.
        format: &'static str,
        /// Which feature.
        reason: String,
    },
    /// The image ends before its header does.
    #[error("{format} image is truncated: {reason}")]
    Truncated {
        /// Format detected.
        format: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The image is not the one expected: its digest differs.
    #[error("{algo} of the image is {actual}, expected {expected}")]
    ChecksumMismatch {
        /// Algorithm.
        algo: &'static str,
        /// Expected digest (hex).
        expected: String,
        /// Digest of what was read (hex).
        actual: String,
    },
    /// The image does not fit the target device.
    #[error(
        "the image is larger than the target: {} but the target holds {target} bytes",
        match image { Some(i) => format!("it is {i} bytes"), None => format!("it goes on past byte {passed}") }
    )]
    TooLarge {
        /// The image's size, when known before writing (a compressed one's is not).
        image: Option<u64>,
        /// Where writing passed the target's end (its size when known up front).
        passed: u64,
        /// The target's size.
        target: u64,
    },
    /// Reading failed.
    #[error("cannot read the image: {0}")]
    Io(#[from] std::io::Error),
}

fn unsafe_(format: Format, reason: impl Into<String>) -> ImageError {
    ImageError::Unsafe {
        format: format.as_str(),
        reason: reason.into(),
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn read_head<R: Read>(r: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(max);
    r.take(max as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Inspects an image file (or any seekable reader) and refuses it when unsafe.
pub fn inspect<R: Read + Seek>(r: &mut R) -> Result<Inspection, ImageError> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let head = read_head(r, HEAD_LEN)?;
    if let Some(w) = wrapper_of(&head) {
        // The header of what is inside: decompress the start only. Table bounds need the
        // decompressed length; the write pipeline checks them as it streams.
        r.seek(SeekFrom::Start(0))?;
        let inner = decompress_head(w, r)?;
        let mut i = inspect_bytes(&inner, None)?;
        i.wrapper = Some(w);
        i.actual_size = len;
        return Ok(i);
    }
    let tail = if len >= 512 {
        r.seek(SeekFrom::Start(len - 512))?;
        let mut t = vec![0u8; 512];
        r.read_exact(&mut t)?;
        Some(t)
    } else {
        None
    };
    let mut i = inspect_bytes(&head, Some((len, tail.as_deref())))?;
    i.actual_size = len;
    Ok(i)
}

/// Inspects and checks the content against the format the user declared.
pub fn inspect_as<R: Read + Seek>(r: &mut R, declared: Format) -> Result<Inspection, ImageError> {
    let i = inspect(r)?;
    if i.format != declared {
        return Err(ImageError::FormatMismatch {
            declared: declared.as_str(),
            detected: i.format.as_str(),
        });
    }
    Ok(i)
}

fn wrapper_of(head: &[u8]) -> Option<Wrapper> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Wrapper::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Wrapper::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Wrapper::Xz)
    } else {
        None
    }
}

fn decompress_head<R: Read>(w: Wrapper, r: &mut R) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let res = match w {
        Wrapper::Gzip => flate2::read::GzDecoder::new(r)
            .take(HEAD_LEN as u64)
            .read_to_end(&mut out)
            .map(|_| ()),
        Wrapper::Zstd => zstd::stream::read::Decoder::new(r)
            .and_then(|d| d.take(HEAD_LEN as u64).read_to_end(&mut out).map(|_| ())),
        Wrapper::Xz => {
            // lzma-rs writes into a sink; stop it once the head is filled.
            let mut sink = Limited {
                buf: &mut out,
                max: HEAD_LEN,
            };
            let mut br = std::io::BufReader::new(r);
            match lzma_rs::xz_decompress(&mut br, &mut sink) {
                Ok(()) => Ok(()),
                Err(_) if sink.buf.len() >= HEAD_LEN => Ok(()),
                Err(e) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                )),
            }
        }
    };
    match res {
        Ok(()) => Ok(out),
        // A stream cut short still has a readable head.
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(ImageError::Truncated {
            format: "compressed",
            reason: format!("cannot decompress the start: {e}"),
        }),
    }
}

struct Limited<'a> {
    buf: &'a mut Vec<u8>,
    max: usize,
}

impl std::io::Write for Limited<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.max.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(std::io::Error::other("head is full"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Inspects the head of an image. `file` is `(length, last 512 bytes)` when the whole file is
/// at hand; then sizes and table bounds are checked against it.
pub fn inspect_bytes(
    head: &[u8],
    file: Option<(u64, Option<&[u8]>)>,
) -> Result<Inspection, ImageError> {
    let len = file.map(|f| f.0);
    let base = |format, virtual_size, details| Inspection {
        format,
        wrapper: None,
        virtual_size,
        actual_size: len.unwrap_or(head.len() as u64),
        details,
    };
    if head.starts_with(b"QFI\xfb") {
        return qcow2(head, len).map(|(v, d)| base(Format::Qcow2, Some(v), d));
    }
    if head.starts_with(b"KDMV") {
        return vmdk_sparse(head).map(|(v, d)| base(Format::Vmdk, Some(v), d));
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return Err(unsafe_(
            Format::Vmdk,
            "a vmdk descriptor file refers to other files (its extents)",
        ));
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(base(Format::Vhdx, None, vec![]));
    }
    if le32(head, 0x40) == Some(0xbeda_107f) {
        let v = le64(head, 0x170);
        return Ok(base(Format::Vdi, v, vec![]));
    }
    let footer = head
        .get(..512)
        .filter(|h| h.starts_with(b"conectix"))
        .or_else(|| {
            file.and_then(|(_, t)| t)
                .filter(|t| t.starts_with(b"conectix"))
        });
    if let Some(f) = footer {
        return vhd(f, len).map(|(v, d)| base(Format::Vhd, Some(v), d));
    }
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        return Ok(base(Format::Iso, len, vec![]));
    }
    Ok(base(Format::Raw, len, vec![]))
}

const QCOW2_INCOMPAT_DIRTY: u64 = 1 << 0;
const QCOW2_INCOMPAT_CORRUPT: u64 = 1 << 1;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;
const QCOW2_INCOMPAT_COMPRESSION: u64 = 1 << 3;
const QCOW2_INCOMPAT_EXTL2: u64 = 1 << 4;
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;

fn qcow2(h: &[u8], len: Option<u64>) -> Result<(u64, Vec<String>), ImageError> {
    let f = Format::Qcow2;
    let trunc = |what: &str| ImageError::Truncated {
        format: f.as_str(),
        reason: format!("header ends before {what}"),
    };
    let version = be32(h, 4).ok_or_else(|| trunc("the version"))?;
    if version != 2 && version != 3 {
        return Err(ImageError::Unsupported {
            format: f.as_str(),
            reason: format!("version {version}"),
        });
    }
    let backing_offset = be64(h, 8).ok_or_else(|| trunc("the backing file offset"))?;
    if backing_offset != 0 {
        return Err(unsafe_(
            f,
            "it has a backing file (it would make the host read another file)",
        ));
    }
    let cluster_bits = be32(h, 20).ok_or_else(|| trunc("the cluster size"))?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(unsafe_(
            f,
            format!("cluster_bits {cluster_bits} is outside 9..=21"),
        ));
    }
    let cluster = 1u64 << cluster_bits;
    let size = be64(h, 24).ok_or_else(|| trunc("the virtual size"))?;
    if size > MAX_VIRTUAL_SIZE {
        return Err(unsafe_(
            f,
            format!(
                "virtual size {size} exceeds the {} TiB limit",
                MAX_VIRTUAL_SIZE >> 40
            ),
        ));
    }
    if be32(h, 32).ok_or_else(|| trunc("the encryption method"))? != 0 {
        return Err(ImageError::Unsupported {
            format: f.as_str(),
            reason: "encrypted".into(),
        });
    }
    let l1_size = u64::from(be32(h, 36).ok_or_else(|| trunc("the L1 size"))?);
    let l1_offset = be64(h, 40).ok_or_else(|| trunc("the L1 offset"))?;
    let rt_offset = be64(h, 48).ok_or_else(|| trunc("the refcount table offset"))?;
    let rt_clusters = u64::from(be32(h, 56).ok_or_else(|| trunc("the refcount table size"))?);
    let nb_snapshots = be32(h, 60).ok_or_else(|| trunc("the snapshot count"))?;
    let mut details = vec![
        format!("version={version}"),
        format!("cluster_size={cluster}"),
    ];
    let mut header_len = 72u64;
    let mut l2_entry = 8u64;
    if version == 3 {
        let incompat = be64(h, 72).ok_or_else(|| trunc("the feature bits"))?;
        if incompat & QCOW2_INCOMPAT_DATA_FILE != 0 {
            return Err(unsafe_(
                f,
                "it uses an external data file (it would make the host read another file)",
            ));
        }
        if incompat & QCOW2_INCOMPAT_CORRUPT != 0 {
            return Err(unsafe_(f, "it is marked corrupt"));
        }
        let known = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2;
        if incompat & !known & !QCOW2_INCOMPAT_DATA_FILE & !QCOW2_INCOMPAT_CORRUPT != 0 {
            return Err(ImageError::Unsupported {
                format: f.as_str(),
                reason: format!("incompatible features {incompat:#x}"),
            });
        }
        if incompat & QCOW2_INCOMPAT_EXTL2 != 0 {
            l2_entry = 16;
            details.push("extended_l2".into());
        }
        header_len = u64::from(be32(h, 100).ok_or_else(|| trunc("the header length"))?);
        if header_len < 104 || header_len > cluster {
            return Err(unsafe_(
                f,
                format!("header length {header_len} is impossible"),
            ));
        }
        if incompat & QCOW2_INCOMPAT_COMPRESSION != 0 {
            let ct = h
                .get(104)
                .copied()
                .ok_or_else(|| trunc("the compression type"))?;
            details.push(format!(
                "compression={}",
                if ct == 1 { "zstd" } else { "zlib" }
            ));
        }
    }
    // Header extensions follow the header, within the first cluster.
    let mut at = header_len as usize;
    let end = (cluster as usize).min(h.len());
    while at + 8 <= end {
        let (Some(kind), Some(elen)) = (be32(h, at), be32(h, at + 4)) else {
            break;
        };
        if kind == 0 {
            break;
        }
        if kind == QCOW2_EXT_DATA_FILE {
            return Err(unsafe_(
                f,
                "it names an external data file (it would make the host read another file)",
            ));
        }
        at = at
            .saturating_add(8)
            .saturating_add((elen as usize).div_ceil(8) * 8);
    }
    // The L1 table must cover the virtual size.
    let per_l2 = cluster * cluster / l2_entry;
    let needed = size.div_ceil(per_l2);
    if l1_size < needed {
        return Err(unsafe_(
            f,
            format!(
                "its L1 table has {l1_size} entries but the virtual size needs {needed} (the header lies about the size)"
            ),
        ));
    }
    for (what, off) in [("L1 table", l1_offset), ("refcount table", rt_offset)] {
        if off == 0 || off % cluster != 0 {
            return Err(unsafe_(
                f,
                format!("its {what} offset {off} is not cluster-aligned"),
            ));
        }
    }
    if let Some(len) = len {
        let l1_end = l1_offset
            .checked_add(l1_size * 8)
            .ok_or_else(|| unsafe_(f, "L1 table end overflows"))?;
        if l1_end > len {
            return Err(unsafe_(
                f,
                format!(
                    "its L1 table ({l1_offset}..{l1_end}) points outside the file ({len} bytes)"
                ),
            ));
        }
        let rt_end = rt_offset
            .checked_add(rt_clusters.saturating_mul(cluster))
            .ok_or_else(|| unsafe_(f, "refcount table end overflows"))?;
        if rt_end > len {
            return Err(unsafe_(
                f,
                format!(
                    "its refcount table ({rt_offset}..{rt_end}) points outside the file ({len} bytes)"
                ),
            ));
        }
    }
    if nb_snapshots > 0 {
        details.push(format!("snapshots={nb_snapshots}"));
    }
    Ok((size, details))
}

fn vmdk_sparse(h: &[u8]) -> Result<(u64, Vec<String>), ImageError> {
    let f = Format::Vmdk;
    let trunc = |what: &str| ImageError::Truncated {
        format: f.as_str(),
        reason: format!("header ends before {what}"),
    };
    let capacity = le64(h, 12).ok_or_else(|| trunc("the capacity"))?;
    let desc_off = le64(h, 28).ok_or_else(|| trunc("the descriptor offset"))?;
    let desc_len = le64(h, 36).ok_or_else(|| trunc("the descriptor size"))?;
    let size = capacity
        .checked_mul(512)
        .filter(|s| *s <= MAX_VIRTUAL_SIZE)
        .ok_or_else(|| unsafe_(f, "capacity exceeds the size limit"))?;
    let start = usize::try_from(desc_off.saturating_mul(512)).unwrap_or(usize::MAX);
    let end =
        start.saturating_add(usize::try_from(desc_len.saturating_mul(512)).unwrap_or(usize::MAX));
    let Some(desc) = h.get(start..end.min(h.len())).filter(|d| !d.is_empty()) else {
        return Err(ImageError::Truncated {
            format: f.as_str(),
            reason: "the embedded descriptor is outside the header".into(),
        });
    };
    let text = String::from_utf8_lossy(desc);
    let create_type = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("createType="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    if create_type != "monolithicSparse" && create_type != "streamOptimized" {
        return Err(unsafe_(
            f,
            format!("createType \"{create_type}\" keeps data in other files"),
        ));
    }
    let extents = text
        .lines()
        .filter(|l| {
            ["RW ", "RDONLY ", "NOACCESS "]
                .iter()
                .any(|p| l.trim_start().starts_with(p))
        })
        .count();
    if extents != 1 {
        return Err(unsafe_(
            f,
            format!("it lists {extents} extents; a single-file vmdk has one"),
        ));
    }
    Ok((size, vec![format!("create_type={create_type}")]))
}

fn vhd(footer: &[u8], len: Option<u64>) -> Result<(u64, Vec<String>), ImageError> {
    let f = Format::Vhd;
    let size = be64(footer, 48).ok_or_else(|| ImageError::Truncated {
        format: f.as_str(),
        reason: "footer ends early".into(),
    })?;
    let disk_type = be32(footer, 60).unwrap_or(0);
    let kind = match disk_type {
        2 => "fixed",
        3 => "dynamic",
        4 => {
            return Err(unsafe_(
                f,
                "it is a differencing disk (it would make the host read its parent)",
            ));
        }
        t => {
            return Err(ImageError::Unsupported {
                format: f.as_str(),
                reason: format!("disk type {t}"),
            });
        }
    };
    if size > MAX_VIRTUAL_SIZE {
        return Err(unsafe_(f, "virtual size exceeds the size limit"));
    }
    if let (Some(len), "fixed") = (len, kind)
        && len < size.saturating_add(512)
    {
        return Err(unsafe_(
            f,
            format!(
                "a fixed disk of {size} bytes in a {len}-byte file (the header lies about the size)"
            ),
        ));
    }
    Ok((size, vec![format!("type={kind}")]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vhd_footer(disk_type: u32, size: u64) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        f
    }

    #[test]
    fn format_names_parse_and_an_unknown_one_lists_the_known() {
        assert_eq!(Format::parse("vhd"), Ok(Format::Vhd));
        assert_eq!(Format::parse("vpc"), Ok(Format::Vhd));
        let said = "unknown image format `img` (raw, qcow2, vmdk, vpc, vhdx, vdi, iso)";
        assert_eq!(Format::parse("img").unwrap_err().to_string(), said);
        assert_eq!(
            Format::parse_declared(Some("img")),
            Err(FormatError::Unknown("img".into()))
        );
        assert_eq!(Format::parse_declared(None), Ok(None));
    }

    #[test]
    fn differencing_vhd_is_refused_and_a_fixed_one_must_hold_its_size() {
        // qemu-img cannot make a differencing VHD, so the footer is built here.
        let diff = vhd_footer(4, 1 << 20);
        let err = inspect_bytes(&diff, Some((512, Some(&diff))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("differencing disk"), "{err}");
        let fixed = vhd_footer(2, 1 << 30);
        let err = inspect_bytes(&[0u8; 4096], Some((4096, Some(&fixed))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("header lies about the size"), "{err}");
        let ok = inspect_bytes(&[0u8; 4096], Some(((1 << 30) + 512, Some(&fixed)))).unwrap();
        assert_eq!((ok.format, ok.virtual_size), (Format::Vhd, Some(1 << 30)));
    }

    #[test]
    fn qcow2_header_extension_naming_a_data_file_is_refused() {
        let mut h = vec![0u8; 65536];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[36..40].copy_from_slice(&1u32.to_be_bytes());
        h[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        h[48..56].copy_from_slice(&(1u64 << 16).to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h[104..108].copy_from_slice(&QCOW2_EXT_DATA_FILE.to_be_bytes());
        h[108..112].copy_from_slice(&8u32.to_be_bytes());
        let err = inspect_bytes(&h, None).unwrap_err().to_string();
        assert!(err.contains("names an external data file"), "{err}");
    }
}
