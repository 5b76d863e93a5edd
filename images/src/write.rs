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
    /// Digest of the image file, when one was expected (and matched).
    pub digest: Option<String>,
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
    let opts = WriteOptions {
        declared,
        ..WriteOptions::default()
    };
    write_to_file_with(src, dst, &opts, &mut |_| {})
}

/// Digest algorithms for image checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algo {
    fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
}

/// How to write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The format the user declared; content that differs is refused.
    pub declared: Option<Format>,
    /// Expected digest of the image file as supplied (hex); checked before success.
    pub expected: Option<(Algo, String)>,
}

/// Where a write is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes of the disk handled (written or skipped as zero).
    pub done: u64,
    /// Size of the disk.
    pub total: u64,
    /// Time since the write started.
    pub elapsed: std::time::Duration,
}

impl Progress {
    /// Throughput so far, bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }

    /// Estimated time left at the rate so far.
    pub fn eta(&self) -> std::time::Duration {
        let rate = self.bytes_per_sec();
        if rate <= 0.0 {
            return std::time::Duration::MAX;
        }
        std::time::Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate)
    }
}

/// Digest of a file, read sequentially (runs beside the decoder, so the write is not slowed
/// by a second pass afterwards).
fn digest_file(path: &Path, algo: Algo) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut h256 = sha2::Sha256::new();
    let mut h512 = sha2::Sha512::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        match algo {
            Algo::Sha256 => h256.update(&buf[..n]),
            Algo::Sha512 => h512.update(&buf[..n]),
        }
    }
    Ok(match algo {
        Algo::Sha256 => hex::encode(h256.finalize()),
        Algo::Sha512 => hex::encode(h512.finalize()),
    })
}

/// [`write_to_file`] with options and a progress callback (called after every step).
pub fn write_to_file_with(
    src: &Path,
    dst: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteReport, ImageError> {
    let declared = opts.declared;
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
    let device = std::fs::metadata(dst).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    let out = if device {
        // A device keeps its size and its old contents: zero ranges are zeroed, not skipped.
        std::fs::OpenOptions::new().write(true).open(dst)?
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(dst)?
    };
    let target = Target { file: &out, device };
    if !matches!(inspection.format, Format::Raw | Format::Iso | Format::Qcow2) {
        return Err(ImageError::Unsupported {
            format: inspection.format.as_str(),
            reason: "only raw and qcow2 images are written yet".into(),
        });
    }
    let started = std::time::Instant::now();
    let (copied, digest) = std::thread::scope(|scope| {
        let hasher = opts
            .expected
            .as_ref()
            .map(|(algo, _)| (*algo, scope.spawn(move || digest_file(src, *algo))));
        let mut tick = |done: u64, total: u64| {
            progress(Progress {
                done,
                total,
                elapsed: started.elapsed(),
            })
        };
        let copied = match inspection.format {
            Format::Qcow2 => copy_qcow2(src, &target, &mut tick),
            _ => copy_raw(&f, &target, &mut tick),
        };
        let digest = hasher.map(|(algo, h)| (algo, h.join()));
        (copied, digest)
    });
    let mut report = copied?;
    if let (Some((algo, joined)), Some((_, expected))) = (digest, &opts.expected) {
        let actual = joined
            .map_err(|_| ImageError::Io(std::io::Error::other("checksum thread panicked")))?
            .map_err(io_at("read the source for its checksum"))?;
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            drop(out);
            // A file that does not hold the expected image must not look like one.
            if !device {
                let _ = std::fs::remove_file(dst);
            }
            return Err(ImageError::ChecksumMismatch {
                algo: algo.name(),
                expected: expected.trim().to_lowercase(),
                actual,
            });
        }
        report.digest = Some(actual);
    }
    out.sync_all().map_err(io_at("fsync of the target"))?;
    report.inspection = inspection;
    Ok(report)
}

/// Where the disk goes: a regular file (zeros become holes) or a block device (zeros are
/// zeroed with `fallocate(ZERO_RANGE)`, which the kernel turns into a zero-out or discard).
struct Target<'a> {
    file: &'a File,
    device: bool,
}

impl Target<'_> {
    /// Makes the target `size` bytes long (a device must already be at least that large).
    fn prepare(&self, size: u64) -> Result<(), ImageError> {
        if !self.device {
            return self.file.set_len(size).map_err(io_at("size the target"));
        }
        let dev_size = device_size(self.file)?;
        if dev_size < size {
            return Err(ImageError::Io(std::io::Error::other(format!(
                "the device holds {dev_size} bytes but the disk is {size}"
            ))));
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros.
    fn zero(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        if !self.device || len == 0 {
            return Ok(());
        }
        use nix::fcntl::{FallocateFlags, fallocate};
        fallocate(
            self.file,
            FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
        .map_err(|e| {
            ImageError::Io(std::io::Error::other(format!(
                "zero {len} bytes at {offset} on the device: {e}"
            )))
        })
    }
}

fn device_size(f: &File) -> Result<u64, ImageError> {
    use std::io::Seek;
    let mut f = f;
    let end = f
        .seek(std::io::SeekFrom::End(0))
        .map_err(io_at("size of the device"))?;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(io_at("size of the device"))?;
    Ok(end)
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
        digest: None,
    }
}

/// Writes the non-zero blocks of `buf`, which belongs at `offset` of the target.
fn write_sparse(
    out: &Target<'_>,
    buf: &[u8],
    offset: u64,
    report: &mut WriteReport,
) -> Result<(), ImageError> {
    let mut at = 0usize;
    while at < buf.len() {
        let end = (at + BLOCK).min(buf.len());
        let block = &buf[at..end];
        if block.iter().all(|b| *b == 0) {
            out.zero(offset + at as u64, block.len() as u64)?;
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
            out.file
                .write_all_at(&buf[at..stop], offset + at as u64)
                .map_err(io_at("write to the target"))?;
            report.written += (stop - at) as u64;
            at = stop;
            continue;
        }
        at = end;
    }
    Ok(())
}

fn copy_raw(
    src: &File,
    out: &Target<'_>,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<WriteReport, ImageError> {
    let size = src.metadata()?.len();
    out.prepare(size)?;
    let mut report = empty_report(size);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], off)
            .map_err(io_at("read the source"))?;
        write_sparse(out, &buf[..n], off, &mut report)?;
        off += n as u64;
        tick(off, size);
    }
    Ok(report)
}

fn copy_qcow2(
    src: &Path,
    out: &Target<'_>,
    tick: &mut dyn FnMut(u64, u64),
) -> Result<WriteReport, ImageError> {
    let qerr = |e: std::io::Error| ImageError::Unsafe {
        format: "qcow2",
        reason: format!("cannot be decoded: {e}"),
    };
    // Opened without its implicit dependencies: inspection refused backing and data files.
    let q = imago::qcow2::Qcow2::<imago::file::File>::open_path_sync(src, false).map_err(qerr)?;
    let disk = imago::SyncFormatAccess::new(q).map_err(qerr)?;
    let size = disk.size();
    out.prepare(size)?;
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
            out.zero(off, len)?;
            report.zeros_skipped += len;
        } else {
            let n = len as usize;
            disk.read(&mut buf[..n], off).map_err(qerr)?;
            write_sparse(out, &buf[..n], off, &mut report)?;
        }
        off += len;
        tick(off, size);
    }
    Ok(report)
}
