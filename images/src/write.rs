//! The write pipeline's first stage: a local image (raw or qcow2) decoded to guest blocks and
//! written to a file, sparse — zero blocks are not written — in chunks of bounded size.
//!
//! To come with the images issue: devices (discard for zero runs, O_DIRECT), HTTP sources
//! with Range requests, decompression wrappers, checksums in flight, progress for telemetry.

use crate::inspect::{Format, ImageError, Inspection, inspect, inspect_as};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes read and written per step (bounded memory whatever the image size).
pub const CHUNK: usize = 4 << 20;
/// Zero detection granularity: a block of zeros this size is not written.
pub const BLOCK: usize = 64 << 10;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// What the source was.
    pub inspection: Inspection,
    /// Size of the disk written.
    pub virtual_size: u64,
    /// Bytes actually written.
    pub written: u64,
    /// Bytes skipped because they are zero.
    pub zeros_skipped: u64,
}

fn io_at(what: &'static str) -> impl Fn(std::io::Error) -> ImageError {
    move |e| ImageError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Writes the image at `src` as a raw disk to the file `dst` (created or truncated), after
/// inspecting it (and checking it against `declared`, when given). Unsafe images are refused
/// before a byte is written.
pub fn write_to_file(
    src: &Path,
    declared: Option<Format>,
    dst: &Path,
) -> Result<WriteReport, ImageError> {
    let mut f = File::open(src)?;
    let inspection = match declared {
        Some(d) => inspect_as(&mut f, d)?,
        None => inspect(&mut f)?,
    };
    if inspection.wrapper.is_some() {
        return Err(ImageError::Unsupported {
            format: inspection.format.as_str(),
            reason: "compressed wrappers are not written yet".into(),
        });
    }
    if inspection.details.iter().any(|d| d == "compression=zstd") {
        // imago 0.2 decodes zlib-compressed clusters only.
        return Err(ImageError::Unsupported {
            format: "qcow2",
            reason: "zstd-compressed clusters are not decoded yet (zlib-compressed ones are)"
                .into(),
        });
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)?;
    let mut report = match inspection.format {
        Format::Raw | Format::Iso => copy_raw(&f, &out)?,
        Format::Qcow2 => copy_qcow2(src, &out)?,
        other => {
            return Err(ImageError::Unsupported {
                format: other.as_str(),
                reason: "only raw and qcow2 images are written yet".into(),
            });
        }
    };
    out.sync_all().map_err(io_at("fsync of the target"))?;
    report.inspection = inspection;
    Ok(report)
}

fn empty_report(virtual_size: u64) -> WriteReport {
    WriteReport {
        inspection: Inspection {
            format: Format::Raw,
            wrapper: None,
            virtual_size: Some(virtual_size),
            actual_size: 0,
            details: vec![],
        },
        virtual_size,
        written: 0,
        zeros_skipped: 0,
    }
}

/// Writes the non-zero blocks of `buf`, which belongs at `offset` of the target.
fn write_sparse(
    out: &File,
    buf: &[u8],
    offset: u64,
    report: &mut WriteReport,
) -> Result<(), ImageError> {
    let mut at = 0usize;
    while at < buf.len() {
        let end = (at + BLOCK).min(buf.len());
        let block = &buf[at..end];
        if block.iter().all(|b| *b == 0) {
            report.zeros_skipped += block.len() as u64;
        } else {
            // Coalesce the following non-zero blocks into one write.
            let mut stop = end;
            while stop < buf.len() {
                let next = (stop + BLOCK).min(buf.len());
                if buf[stop..next].iter().all(|b| *b == 0) {
                    break;
                }
                stop = next;
            }
            out.write_all_at(&buf[at..stop], offset + at as u64)
                .map_err(io_at("write to the target"))?;
            report.written += (stop - at) as u64;
            at = stop;
            continue;
        }
        at = end;
    }
    Ok(())
}

fn copy_raw(src: &File, out: &File) -> Result<WriteReport, ImageError> {
    let size = src.metadata()?.len();
    out.set_len(size).map_err(io_at("size the target"))?;
    let mut report = empty_report(size);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], off)
            .map_err(io_at("read the source"))?;
        write_sparse(out, &buf[..n], off, &mut report)?;
        off += n as u64;
    }
    Ok(report)
}

fn copy_qcow2(src: &Path, out: &File) -> Result<WriteReport, ImageError> {
    let qerr = |e: std::io::Error| ImageError::Unsafe {
        format: "qcow2",
        reason: format!("cannot be decoded: {e}"),
    };
    // Opened without its implicit dependencies: inspection refused backing and data files.
    let q = imago::qcow2::Qcow2::<imago::file::File>::open_path_sync(src, false).map_err(qerr)?;
    let disk = imago::SyncFormatAccess::new(q).map_err(qerr)?;
    let size = disk.size();
    out.set_len(size).map_err(io_at("size the target"))?;
    let mut report = empty_report(size);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(CHUNK as u64);
        let (mapping, len) = disk.get_mapping_sync(off, want).map_err(qerr)?;
        let len = len.clamp(1, want);
        let zero = matches!(
            mapping,
            imago::Mapping::Zero { .. } | imago::Mapping::Eof { .. }
        );
        if zero {
            report.zeros_skipped += len;
        } else {
            let n = len as usize;
            disk.read(&mut buf[..n], off).map_err(qerr)?;
            write_sparse(out, &buf[..n], off, &mut report)?;
        }
        off += len;
    }
    Ok(report)
}
