//! The write pipeline: an image (raw, qcow2, or raw inside gzip/zstd/xz) from a file or URL,
//! decoded to guest blocks and written to a file or block device.
//!
//! A reader and a few writers over a few fixed buffers: the reader fetches (and hashes, and
//! decompresses, and decodes) the image into [`CHUNK`]-sized buffers; [`WRITERS`] writer
//! threads take them in turn, write their non-zero blocks and hand the buffers back. The
//! pieces are disjoint ranges of the disk, so that several writes are in flight at once (the
//! queue depth a device needs to reach its rate, as `qemu-img convert -W -m N` gives it).
//! Memory is bounded by the buffers, whatever the image size.
//! Zero blocks are holes in a file; on a device they are zeroed with `fallocate(ZERO_RANGE)`
//! (the kernel's zero-out or discard), since a device keeps its old contents.

pub use crate::chunk::CHUNK;
use crate::chunk::{ALIGN, Chunk};
use crate::inspect::{Format, ImageError, Inspection, Wrapper, inspect, inspect_as};
use crate::qcow2::{Qcow2, Run};
pub use crate::source::Algo;
use crate::source::{Hashed, ImageSource, Source, SourceReader};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Zero detection granularity: a block of zeros this size is not written.
pub const BLOCK: usize = 64 << 10;
/// Writer threads at most, each with one write (or zeroing) in flight; as many as there are
/// cores, and at least two (one can write while the other scans its buffer for zeros).
pub const WRITERS: usize = 4;

fn writers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, WRITERS))
}
/// Buffers in flight between the reader and the writers (memory: `DEPTH + 1` × [`CHUNK`]):
/// one per writer, one being filled, one spare.
const DEPTH: usize = WRITERS + 2;

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
    /// Digest of the image as supplied, when one was expected (and matched).
    pub digest: Option<String>,
    /// Bytes of the image as supplied.
    pub source_bytes: u64,
    /// Times a broken transfer was resumed.
    pub resumes: u32,
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

/// How to write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The format the user declared; content that differs is refused.
    pub declared: Option<Format>,
    /// Expected digest of the image as supplied (hex); checked before success.
    pub expected: Option<(Algo, String)>,
    /// Write with `O_DIRECT` (aligned writes bypass the page cache). `None` chooses: direct
    /// on a block device (faster there, and a deploy ramdisk's RAM is not filled with page
    /// cache), buffered on a file.
    pub direct: Option<bool>,
}

/// Where a write is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Bytes of the disk handled (written or skipped as zero).
    pub done: u64,
    /// Size of the disk (0 while unknown: a compressed raw image).
    pub total: u64,
    /// Time since the write started.
    pub elapsed: std::time::Duration,
}

impl Progress {
    /// Throughput so far, bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }

    /// Estimated time left at the rate so far (`Duration::MAX` while unknown).
    pub fn eta(&self) -> std::time::Duration {
        let rate = self.bytes_per_sec();
        if rate <= 0.0 || self.total == 0 {
            return std::time::Duration::MAX;
        }
        std::time::Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate)
    }
}

/// [`write_to_file`] with options and a progress callback (called after every step).
pub fn write_to_file_with(
    src: &Path,
    dst: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteReport, ImageError> {
    write_image(&ImageSource::File(src.to_path_buf()), dst, opts, progress)
}

/// Writes the image from `src` (a file or a URL) to `dst` (a file, created or truncated, or
/// a block device).
pub fn write_image(
    src: &ImageSource,
    dst: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteReport, ImageError> {
    let mut source = src.open()?;
    write_from(&mut *source, dst, opts, progress)
}

/// How the reader turns the source into disk blocks.
enum Decode {
    Raw,
    Qcow2(Qcow2),
    Wrapped(Wrapper),
}

/// What moves from the reader to the writer.
enum Piece {
    Data {
        offset: u64,
        len: usize,
        chunk: Chunk,
    },
    Zero {
        offset: u64,
        len: u64,
    },
}

/// The reader stopped because the writer did (its error is the one to report).
fn writer_gone() -> ImageError {
    ImageError::Io(std::io::Error::other("the writer stopped"))
}

/// [`write_image`] from an opened source.
pub fn write_from(
    source: &mut dyn Source,
    dst: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteReport, ImageError> {
    let inspection = {
        let mut r = SourceReader::new(source);
        match opts.declared {
            Some(d) => inspect_as(&mut r, d)?,
            None => inspect(&mut r)?,
        }
    };
    if !matches!(inspection.format, Format::Raw | Format::Iso | Format::Qcow2) {
        return Err(ImageError::Unsupported {
            format: inspection.format.as_str(),
            reason: "only raw and qcow2 images are written".into(),
        });
    }
    if let Some(w) = inspection.wrapper
        && inspection.format == Format::Qcow2
    {
        return Err(ImageError::Unsupported {
            format: "qcow2",
            reason: format!(
                "a qcow2 inside {w:?} compression needs random access; decompress it first \
                 (qcow2 compresses its own clusters)"
            ),
        });
    }
    let algo = opts.expected.as_ref().map(|(a, _)| *a);
    let source_bytes = source.len();
    let mut hashed = Hashed::new(source, algo);
    let decode = match (inspection.format, inspection.wrapper) {
        (_, Some(w)) => Decode::Wrapped(w),
        (Format::Qcow2, None) => Decode::Qcow2(Qcow2::open(&mut hashed)?),
        _ => Decode::Raw,
    };
    let size = match &decode {
        Decode::Raw => Some(source_bytes),
        Decode::Qcow2(q) => Some(q.size),
        Decode::Wrapped(_) => None,
    };
    let target = Target::open(dst, opts.direct)?;
    let device = target.device;
    let res = pump(hashed, decode, size, target, opts, inspection, progress);
    if res.is_err() && !device {
        // A file that does not hold the image must not look like one.
        let _ = std::fs::remove_file(dst);
    }
    res
}

/// Runs the reader and the writer.
fn pump(
    mut hashed: Hashed<'_>,
    decode: Decode,
    size: Option<u64>,
    target: Target,
    opts: &WriteOptions,
    inspection: Inspection,
    progress: &mut dyn FnMut(Progress),
) -> Result<WriteReport, ImageError> {
    let source_bytes = hashed.len();
    if let Some(size) = size {
        target.prepare(size)?;
    }
    let started = std::time::Instant::now();
    let (free_tx, free_rx) = sync_channel::<Chunk>(DEPTH + 1);
    for _ in 0..DEPTH {
        let _ = free_tx.send(Chunk::new());
    }
    let (tx, rx) = sync_channel::<Piece>(DEPTH);
    let mut report = WriteReport {
        inspection: inspection.clone(),
        virtual_size: size.unwrap_or(0),
        written: 0,
        zeros_skipped: 0,
        digest: None,
        source_bytes,
        resumes: 0,
    };
    let counts = Counts::default();
    let failed = AtomicBool::new(false);
    let rx = Mutex::new(rx);
    let (read, written) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let end = produce(&mut hashed, &decode, &tx, &free_rx)?;
            drop(tx);
            let resumes = hashed.resumes();
            let digest = hashed
                .finish()
                .map_err(io_at("read the image for its checksum"))?;
            Ok::<_, ImageError>((end, digest, resumes))
        });
        let total = size.unwrap_or(0);
        let (rx, counts, failed, target) = (&rx, &counts, &failed, &target);
        let others: Vec<_> = (1..writers())
            .map(|_| {
                let free = free_tx.clone();
                scope.spawn(move || consume(rx, &free, target, counts, failed, &mut |_| {}))
            })
            .collect();
        // This thread writes too, and reports progress.
        let mut written = consume(rx, &free_tx, target, counts, failed, &mut |done| {
            progress(Progress {
                done,
                total,
                elapsed: started.elapsed(),
            })
        });
        for w in others {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(ImageError::Io(std::io::Error::other("writer panicked"))));
            if written.is_ok() {
                written = r;
            }
        }
        if written.is_ok() {
            progress(Progress {
                done: counts.done.load(Ordering::Relaxed),
                total,
                elapsed: started.elapsed(),
            });
        }
        // Unblock a reader waiting on either channel (the writers are gone: no buffer comes
        // back, and none is taken).
        drop(free_tx);
        drop(std::mem::replace(
            &mut *rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            sync_channel(0).1,
        ));
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(ImageError::Io(std::io::Error::other("reader panicked"))));
        (read, written)
    });
    report.written = counts.written.load(Ordering::Relaxed);
    report.zeros_skipped = counts.zeros.load(Ordering::Relaxed);
    written?;
    let (end, digest, resumes) = read?;
    report.resumes = resumes;
    if size.is_none() {
        report.virtual_size = end;
        if !target.device {
            target
                .buffered
                .set_len(end)
                .map_err(io_at("size the target"))?;
        }
    }
    if let (Some(actual), Some((algo, expected))) = (digest, &opts.expected) {
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(ImageError::ChecksumMismatch {
                algo: algo.name(),
                expected: expected.trim().to_lowercase(),
                actual,
            });
        }
        report.digest = Some(actual);
    }
    target.sync()?;
    Ok(report)
}

/// The reader: source → buffers. Returns the size of the disk produced.
fn produce(
    src: &mut Hashed<'_>,
    decode: &Decode,
    tx: &SyncSender<Piece>,
    free: &Receiver<Chunk>,
) -> Result<u64, ImageError> {
    let take = || free.recv().map_err(|_| writer_gone());
    let send = |p: Piece| tx.send(p).map_err(|_| writer_gone());
    match decode {
        Decode::Raw => {
            let size = src.len();
            let mut off = 0u64;
            while off < size {
                // A hole of a sparse source file is zeros without reading it (whole 4 KiB
                // blocks, which a device can zero).
                if let Some(data) = src.data_from(off) {
                    let hole = (data.min(size).saturating_sub(off)) & !4095;
                    if hole > 0 && off.is_multiple_of(4096) {
                        send(Piece::Zero {
                            offset: off,
                            len: hole,
                        })?;
                        off += hole;
                        continue;
                    }
                }
                let mut chunk = take()?;
                let n = (size - off).min(CHUNK as u64) as usize;
                src.read_at(&mut chunk[..n], off)
                    .map_err(io_at("read the image"))?;
                send(Piece::Data {
                    offset: off,
                    len: n,
                    chunk,
                })?;
                off += n as u64;
            }
            Ok(size)
        }
        Decode::Qcow2(q) => {
            let mut buf = take()?;
            q.walk(src, &mut buf, &mut |run, buf| match run {
                Run::Data { offset, len } => {
                    let fresh = take()?;
                    let chunk = std::mem::replace(buf, fresh);
                    send(Piece::Data { offset, len, chunk })
                }
                Run::Zero { offset, len } => send(Piece::Zero { offset, len }),
            })?;
            Ok(q.size)
        }
        Decode::Wrapped(w) => {
            let reader = std::io::BufReader::with_capacity(1 << 20, SourceReader::new(src));
            let mut sink = ChunkSink {
                chunk: None,
                fill: 0,
                offset: 0,
                take: &take,
                send: &send,
            };
            let res = match w {
                Wrapper::Gzip => {
                    std::io::copy(&mut flate2::bufread::MultiGzDecoder::new(reader), &mut sink)
                }
                Wrapper::Zstd => zstd::stream::read::Decoder::with_buffer(reader)
                    .and_then(|mut d| std::io::copy(&mut d, &mut sink)),
                Wrapper::Xz => {
                    let mut reader = reader;
                    lzma_rs::xz_decompress(&mut reader, &mut sink)
                        .map(|_| 0)
                        .map_err(|e| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                        })
                }
            };
            res.map_err(|e| ImageError::Truncated {
                format: "compressed",
                reason: format!("the {w:?} stream cannot be decompressed: {e}"),
            })?;
            sink.flush_chunk()
                .map_err(io_at("hand over the last chunk"))?;
            Ok(sink.offset)
        }
    }
}

/// Decompressed bytes into chunks.
struct ChunkSink<'a> {
    chunk: Option<Chunk>,
    fill: usize,
    /// Disk offset of the current chunk's start.
    offset: u64,
    take: &'a dyn Fn() -> Result<Chunk, ImageError>,
    send: &'a dyn Fn(Piece) -> Result<(), ImageError>,
}

impl ChunkSink<'_> {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if let Some(chunk) = self.chunk.take() {
            let len = self.fill;
            (self.send)(Piece::Data {
                offset: self.offset,
                len,
                chunk,
            })
            .map_err(std::io::Error::other)?;
            self.offset += len as u64;
            self.fill = 0;
        }
        Ok(())
    }
}

impl std::io::Write for ChunkSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.chunk.is_none() {
            self.chunk = Some((self.take)().map_err(std::io::Error::other)?);
        }
        let Some(chunk) = self.chunk.as_mut() else {
            return Ok(0);
        };
        let n = data.len().min(CHUNK - self.fill);
        chunk[self.fill..self.fill + n].copy_from_slice(&data[..n]);
        self.fill += n;
        if self.fill == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the writers did, summed across them.
#[derive(Default)]
struct Counts {
    written: AtomicU64,
    zeros: AtomicU64,
    /// Bytes of the disk handled (written or zeroed).
    done: AtomicU64,
}

/// A writer: buffers → target, until the reader is done. After one writer fails the others
/// only hand buffers back (so that the reader never waits for one), and the first error is
/// the one reported.
fn consume(
    rx: &Mutex<Receiver<Piece>>,
    free: &SyncSender<Chunk>,
    target: &Target,
    counts: &Counts,
    failed: &AtomicBool,
    tick: &mut dyn FnMut(u64),
) -> Result<(), ImageError> {
    loop {
        let piece = {
            let Ok(rx) = rx.lock() else {
                return Ok(());
            };
            match rx.recv() {
                Ok(p) => p,
                Err(_) => return Ok(()),
            }
        };
        let res = match piece {
            Piece::Data { chunk, .. } if failed.load(Ordering::Relaxed) => {
                let _ = free.send(chunk);
                continue;
            }
            Piece::Zero { .. } if failed.load(Ordering::Relaxed) => continue,
            Piece::Data { offset, len, chunk } => {
                let r = target
                    .fits(offset, len as u64)
                    .and_then(|()| write_sparse(target, &chunk[..len], offset, counts));
                let _ = free.send(chunk);
                r.map(|()| len as u64)
            }
            Piece::Zero { offset, len } => target
                .fits(offset, len)
                .and_then(|()| target.zero(offset, len))
                .map(|()| {
                    counts.zeros.fetch_add(len, Ordering::Relaxed);
                    len
                }),
        };
        match res {
            Ok(n) => tick(counts.done.fetch_add(n, Ordering::Relaxed) + n),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// Where the disk goes: a regular file (zeros become holes) or a block device (zeros are
/// zeroed with `fallocate(ZERO_RANGE)`, which the kernel turns into a zero-out or discard).
struct Target {
    buffered: File,
    /// The same target opened with `O_DIRECT`, for aligned writes.
    direct: Option<File>,
    device: bool,
    /// A device's size: nothing is written past it (a file grows instead).
    capacity: Option<u64>,
}

impl Target {
    fn open(dst: &Path, direct: Option<bool>) -> Result<Target, ImageError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let device = std::fs::metadata(dst).is_ok_and(|m| m.file_type().is_block_device());
        let direct = direct.unwrap_or(device);
        let open = |flags: i32| {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).custom_flags(flags);
            if !device {
                // A device keeps its size and contents; a file is made anew.
                o.create(true).truncate(flags == 0);
            }
            o.open(dst)
        };
        let buffered = open(0).map_err(|e| {
            ImageError::Io(std::io::Error::new(
                e.kind(),
                format!("open {}: {e}", dst.display()),
            ))
        })?;
        let direct = if direct {
            Some(open(nix::fcntl::OFlag::O_DIRECT.bits()).map_err(|e| {
                ImageError::Io(std::io::Error::new(
                    e.kind(),
                    format!("open {} with O_DIRECT: {e}", dst.display()),
                ))
            })?)
        } else {
            None
        };
        let capacity = if device {
            Some(device_size(&buffered)?)
        } else {
            None
        };
        Ok(Target {
            buffered,
            direct,
            device,
            capacity,
        })
    }

    /// Refuses a write of `len` bytes at `offset` that would pass the device's end: an image
    /// larger than the disk fails as soon as it gets there (one of unknown size, compressed,
    /// only when it does), naming both sizes.
    fn fits(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        match self.capacity {
            Some(cap) if offset.saturating_add(len) > cap => Err(ImageError::TooLarge {
                image: None,
                passed: cap,
                target: cap,
            }),
            _ => Ok(()),
        }
    }

    /// Makes the target `size` bytes long (a device must already be at least that large).
    fn prepare(&self, size: u64) -> Result<(), ImageError> {
        if !self.device {
            return self
                .buffered
                .set_len(size)
                .map_err(io_at("size the target"));
        }
        let dev_size = match self.capacity {
            Some(c) => c,
            None => device_size(&self.buffered)?,
        };
        if dev_size < size {
            return Err(ImageError::TooLarge {
                image: Some(size),
                passed: dev_size,
                target: dev_size,
            });
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<(), ImageError> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && data.len().is_multiple_of(ALIGN)
            && data.as_ptr().align_offset(ALIGN) == 0;
        let f = match &self.direct {
            Some(d) if aligned => d,
            _ => &self.buffered,
        };
        f.write_all_at(data, offset).map_err(|e| {
            ImageError::Io(std::io::Error::new(
                e.kind(),
                format!("write {} bytes at {offset} to the target: {e}", data.len()),
            ))
        })
    }

    /// Makes `len` bytes at `offset` read as zeros.
    fn zero(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        if !self.device || len == 0 {
            return Ok(());
        }
        use nix::fcntl::{FallocateFlags, fallocate};
        fallocate(
            &self.buffered,
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

    fn sync(&self) -> Result<(), ImageError> {
        self.buffered
            .sync_all()
            .map_err(io_at("fsync of the target"))
    }
}

/// Makes the bytes of block device `dev` from `offset` to its end read as zeros (the kernel's
/// zero-out: a write-zeroes command or discard where the device has one, written zeros
/// otherwise), and flushes. A device handed out anew (an LVM volume on reused extents) keeps
/// whatever was there before; this is how it is cleared. Returns how many bytes were zeroed.
pub fn zero_device_from(dev: &Path, offset: u64) -> Result<u64, ImageError> {
    let target = Target::open(dev, Some(false))?;
    if !target.device {
        return Err(ImageError::Io(std::io::Error::other(format!(
            "{} is not a block device",
            dev.display()
        ))));
    }
    let end = device_size(&target.buffered)?;
    if offset >= end {
        return Ok(0);
    }
    // A device takes fallocate only in whole logical blocks (EINVAL otherwise): the partial
    // blocks at either end are written as zeros.
    const BLOCK: u64 = 4096;
    let start = offset.next_multiple_of(BLOCK).min(end);
    let stop = (end / BLOCK * BLOCK).max(start);
    for (from, to) in [(offset, start), (stop, end)] {
        if to > from {
            target.write_at(&vec![0u8; (to - from) as usize], from)?;
        }
    }
    target.zero(start, stop - start)?;
    target.sync()?;
    Ok(end - offset)
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

/// True when every byte is zero (in 64-byte steps the compiler vectorises).
fn is_zero(b: &[u8]) -> bool {
    let mut it = b.chunks_exact(64);
    let whole = it.all(|c| c.iter().fold(0u8, |a, x| a | x) == 0);
    whole && it.remainder().iter().all(|x| *x == 0)
}

/// Writes the non-zero blocks of `buf`, which belongs at `offset` of the target.
fn write_sparse(out: &Target, buf: &[u8], offset: u64, counts: &Counts) -> Result<(), ImageError> {
    let mut at = 0usize;
    while at < buf.len() {
        let end = (at + BLOCK).min(buf.len());
        if is_zero(&buf[at..end]) {
            // Coalesce the following zero blocks into one zeroing.
            let mut stop = end;
            while stop < buf.len() {
                let next = (stop + BLOCK).min(buf.len());
                if !is_zero(&buf[stop..next]) {
                    break;
                }
                stop = next;
            }
            out.zero(offset + at as u64, (stop - at) as u64)?;
            counts
                .zeros
                .fetch_add((stop - at) as u64, Ordering::Relaxed);
            at = stop;
        } else {
            // Coalesce the following non-zero blocks into one write.
            let mut stop = end;
            while stop < buf.len() {
                let next = (stop + BLOCK).min(buf.len());
                if is_zero(&buf[stop..next]) {
                    break;
                }
                stop = next;
            }
            out.write_at(&buf[at..stop], offset + at as u64)?;
            counts
                .written
                .fetch_add((stop - at) as u64, Ordering::Relaxed);
            at = stop;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_set_byte_anywhere() {
        let mut b = vec![0u8; BLOCK + 7];
        assert!(is_zero(&b));
        for at in [0, 63, 64, 4095, BLOCK - 1, BLOCK + 6] {
            b[at] = 1;
            assert!(!is_zero(&b), "byte {at}");
            b[at] = 0;
        }
    }
}
