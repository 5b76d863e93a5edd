//! A streaming qcow2 reader: walks the L1 and L2 tables in guest order and hands out the
//! disk as runs of data and runs of zeros, reading the file mostly forward (so that it works
//! as well over HTTP `Range` requests as on a local file) with bounded memory: one L2 table
//! and one chunk at a time.
//!
//! Written for Ferric because the write pipeline needs what qcow2 libraries do not offer
//! together: any [`Source`] (not only a local file), zstd- as well as zlib-compressed
//! clusters, and host-contiguous clusters coalesced into large reads. Only reading is needed;
//! images that need more than the file itself (backing files, external data files) were
//! refused by inspection and are refused here again.

use crate::chunk::Chunk;
use crate::inspect::ImageError;
use crate::source::Source;

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;
/// qemu's own limit on the L1 table.
const MAX_L1_BYTES: u64 = 32 << 20;

fn bad(reason: impl Into<String>) -> ImageError {
    ImageError::Unsafe {
        format: "qcow2",
        reason: reason.into(),
    }
}

fn unsupported(reason: impl Into<String>) -> ImageError {
    ImageError::Unsupported {
        format: "qcow2",
        reason: reason.into(),
    }
}

fn read_err(what: &str, e: std::io::Error) -> ImageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ImageError::Truncated {
            format: "qcow2",
            reason: format!("{what} lies past the end of the file"),
        }
    } else {
        ImageError::Io(std::io::Error::new(e.kind(), format!("read {what}: {e}")))
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Cluster compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Zlib,
    Zstd,
}

/// An opened qcow2 image.
#[derive(Debug)]
pub(crate) struct Qcow2 {
    cluster_bits: u32,
    /// Virtual size.
    pub size: u64,
    l1: Vec<u64>,
    compression: Compression,
    file_len: u64,
}

/// A stretch of the disk, in guest order.
#[derive(Debug)]
pub(crate) enum Run {
    /// Bytes `offset..offset+len` of the disk are in `buf[..len]`.
    Data { offset: u64, len: usize },
    /// Bytes `offset..offset+len` read as zeros.
    Zero { offset: u64, len: u64 },
}

impl Qcow2 {
    /// Reads and checks the header and the L1 table.
    pub fn open(src: &mut dyn Source) -> Result<Qcow2, ImageError> {
        let file_len = src.len();
        let mut h = vec![0u8; 112.min(file_len as usize)];
        src.read_at(&mut h, 0).map_err(|e| read_err("header", e))?;
        if h.len() < 72 || &h[..4] != b"QFI\xfb" {
            return Err(ImageError::Truncated {
                format: "qcow2",
                reason: "the header is incomplete".into(),
            });
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(unsupported(format!("version {version}")));
        }
        if be64(&h, 8) != 0 {
            return Err(bad("it names a backing file"));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("cluster_bits {cluster_bits} is out of range")));
        }
        let size = be64(&h, 24);
        if size > crate::inspect::MAX_VIRTUAL_SIZE {
            return Err(bad(format!("virtual size {size} is out of range")));
        }
        if be32(&h, 32) != 0 {
            return Err(unsupported("encrypted images"));
        }
        let l1_size = be32(&h, 36) as u64;
        let l1_offset = be64(&h, 40);
        let mut compression = Compression::Zlib;
        if version == 3 {
            if h.len() < 104 {
                return Err(ImageError::Truncated {
                    format: "qcow2",
                    reason: "the v3 header is incomplete".into(),
                });
            }
            let incompatible = be64(&h, 72);
            if incompatible & 2 != 0 {
                return Err(bad("it is marked corrupt"));
            }
            if incompatible & 4 != 0 {
                return Err(bad("it uses an external data file"));
            }
            if incompatible & 16 != 0 {
                return Err(unsupported("extended L2 entries (subclusters)"));
            }
            if incompatible & !0x1f != 0 {
                return Err(unsupported(format!(
                    "unknown incompatible features {incompatible:#x}"
                )));
            }
            let header_len = be32(&h, 100) as usize;
            if incompatible & 8 != 0 {
                if header_len <= 104 || h.len() <= 104 {
                    return Err(bad("the compression type is flagged but missing"));
                }
                compression = match h[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => return Err(unsupported(format!("compression type {t}"))),
                };
            }
        }
        let cluster = 1u64 << cluster_bits;
        let per_l2 = cluster / 8;
        let needed = size.div_ceil(cluster).div_ceil(per_l2);
        if l1_size < needed {
            return Err(bad(format!(
                "its L1 table has {l1_size} entries, a disk of {size} bytes needs {needed}"
            )));
        }
        // Only the entries the disk needs are read (the table may be longer).
        let l1_bytes = needed * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad(format!(
                "its L1 table of {l1_bytes} bytes is too large"
            )));
        }
        if !l1_offset.is_multiple_of(cluster) || l1_offset.saturating_add(l1_bytes) > file_len {
            return Err(bad(format!(
                "its L1 table at {l1_offset} lies outside the file of {file_len} bytes"
            )));
        }
        let mut raw = vec![0u8; l1_bytes as usize];
        src.read_at(&mut raw, l1_offset)
            .map_err(|e| read_err("the L1 table", e))?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(Qcow2 {
            cluster_bits,
            size,
            l1,
            compression,
            file_len,
        })
    }

    fn cluster(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Walks the disk in guest order. `buf` (a multiple of the cluster size) receives data;
    /// `emit` gets each run with the buffer holding it, and may swap that buffer for another.
    pub fn walk(
        &self,
        src: &mut dyn Source,
        buf: &mut Chunk,
        emit: &mut dyn FnMut(Run, &mut Chunk) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let cs = self.cluster();
        let per_l2 = cs / 8;
        let mut l2 = vec![0u8; cs as usize];
        let mut w = Walker {
            data_start: 0,
            data_len: 0,
            read: None,
            zero: None,
            cs: cs as usize,
            compression: self.compression,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            arena: Vec::new(),
            jobs: Vec::new(),
        };
        for (i, entry) in self.l1.iter().enumerate() {
            let table_guest = i as u64 * per_l2 * cs;
            let table_len = (per_l2 * cs).min(self.size - table_guest);
            let l2_offset = entry & L1_OFFSET_MASK;
            if l2_offset == 0 {
                w.zero(table_guest, table_len, src, buf, emit)?;
                continue;
            }
            if !l2_offset.is_multiple_of(cs) || l2_offset.saturating_add(cs) > self.file_len {
                return Err(bad(format!(
                    "L2 table {i} at {l2_offset} lies outside the file or is misaligned"
                )));
            }
            src.read_at(&mut l2, l2_offset)
                .map_err(|e| read_err("an L2 table", e))?;
            for j in 0..per_l2 {
                let guest = table_guest + j * cs;
                if guest >= self.size {
                    break;
                }
                let len = cs.min(self.size - guest);
                let e = be64(&l2, j as usize * 8);
                if e & COMPRESSED != 0 {
                    let x = 62 - (self.cluster_bits - 8);
                    let host = e & ((1u64 << x) - 1);
                    let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
                    if host >= self.file_len {
                        return Err(bad(format!(
                            "compressed cluster at {host} lies outside the file"
                        )));
                    }
                    let csize = (sectors * 512 - (host & 511)).min(self.file_len - host);
                    // Read now, inflated with the rest of the chunk (in parallel) before
                    // the chunk is handed on.
                    let at = w.slot(guest, len, src, buf, emit)?;
                    let start = w.arena.len();
                    w.arena.resize(start + csize as usize, 0);
                    src.read_at(&mut w.arena[start..], host)
                        .map_err(|e| read_err("a compressed cluster", e))?;
                    w.jobs.push(Job {
                        at,
                        start,
                        len: csize as usize,
                        guest,
                    });
                } else if e & ZERO_FLAG != 0 || e & L2_OFFSET_MASK == 0 {
                    w.zero(guest, len, src, buf, emit)?;
                } else {
                    let host = e & L2_OFFSET_MASK;
                    if !host.is_multiple_of(cs) || host.saturating_add(len) > self.file_len {
                        return Err(bad(format!(
                            "data cluster at {host} lies outside the file or is misaligned"
                        )));
                    }
                    let at = w.slot(guest, len, src, buf, emit)?;
                    w.read_later(at, host, len, src, buf)?;
                }
            }
        }
        w.flush_data(src, buf, emit)?;
        w.flush_zero(buf, emit)
    }
}

/// Inflates one compressed cluster into `out` (a whole cluster).
fn inflate(
    compression: Compression,
    input: &[u8],
    out: &mut [u8],
    guest: u64,
) -> Result<(), ImageError> {
    let fail = |why: String| bad(format!("compressed cluster at disk offset {guest}: {why}"));
    match compression {
        Compression::Zlib => {
            let mut d = flate2::Decompress::new(false);
            d.decompress(input, out, flate2::FlushDecompress::Finish)
                .map_err(|e| fail(e.to_string()))?;
            if (d.total_out() as usize) < out.len() {
                return Err(fail(format!(
                    "inflates to {} bytes, not {}",
                    d.total_out(),
                    out.len()
                )));
            }
        }
        Compression::Zstd => {
            use std::io::Read;
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| fail(e.to_string()))?
                .single_frame();
            d.read_exact(out).map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(())
}

/// A compressed cluster waiting to be inflated into the chunk.
#[derive(Debug)]
struct Job {
    /// Position in the chunk (a multiple of the cluster size).
    at: usize,
    /// Its compressed bytes in the arena.
    start: usize,
    len: usize,
    guest: u64,
}

/// Coalesces clusters into runs: guest-contiguous data into one buffer, host-contiguous
/// reads into one read, zero clusters into one zero run; compressed clusters of a chunk are
/// inflated together, on several threads.
struct Walker {
    cs: usize,
    compression: Compression,
    threads: usize,
    /// Compressed bytes of the pending jobs.
    arena: Vec<u8>,
    jobs: Vec<Job>,
    /// Guest offset of `buf[0]`.
    data_start: u64,
    data_len: usize,
    /// Pending read: (position in buf, host offset, length).
    read: Option<(usize, u64, u64)>,
    /// Pending zero run: (guest offset, length).
    zero: Option<(u64, u64)>,
}

type Emit<'a> = &'a mut dyn FnMut(Run, &mut Chunk) -> Result<(), ImageError>;

impl Walker {
    fn zero(
        &mut self,
        guest: u64,
        len: u64,
        src: &mut dyn Source,
        buf: &mut Chunk,
        emit: Emit<'_>,
    ) -> Result<(), ImageError> {
        self.flush_data(src, buf, emit)?;
        match &mut self.zero {
            Some((start, l)) if *start + *l == guest => *l += len,
            _ => {
                self.flush_zero(buf, emit)?;
                self.zero = Some((guest, len));
            }
        }
        Ok(())
    }

    /// Room in `buf` for `len` bytes of the disk at `guest`; returns their position.
    fn slot(
        &mut self,
        guest: u64,
        len: u64,
        src: &mut dyn Source,
        buf: &mut Chunk,
        emit: Emit<'_>,
    ) -> Result<usize, ImageError> {
        self.flush_zero(buf, emit)?;
        let cs_room = buf.len();
        let contiguous = self.data_len > 0 && self.data_start + self.data_len as u64 == guest;
        if !contiguous || self.data_len + len as usize > cs_room {
            self.flush_data(src, buf, emit)?;
        }
        if self.data_len == 0 {
            self.data_start = guest;
        }
        let at = self.data_len;
        self.data_len += len as usize;
        Ok(at)
    }

    fn read_later(
        &mut self,
        at: usize,
        host: u64,
        len: u64,
        src: &mut dyn Source,
        buf: &mut Chunk,
    ) -> Result<(), ImageError> {
        match &mut self.read {
            Some((pos, h, l)) if *pos + *l as usize == at && *h + *l == host => *l += len,
            _ => {
                self.do_read(src, buf)?;
                self.read = Some((at, host, len));
            }
        }
        Ok(())
    }

    fn inflate_jobs(&mut self, buf: &mut [u8]) -> Result<(), ImageError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let (cs, compression, arena) = (self.cs, self.compression, &self.arena);
        let mut outs: Vec<(&mut [u8], &Job)> = Vec::with_capacity(self.jobs.len());
        let mut pending = self.jobs.iter().peekable();
        for (k, cluster) in buf.chunks_mut(cs).enumerate() {
            match pending.peek() {
                Some(j) if j.at == k * cs => {
                    outs.push((cluster, j));
                    pending.next();
                }
                Some(_) => {}
                None => break,
            }
        }
        let run = |group: &mut [(&mut [u8], &Job)]| -> Result<(), ImageError> {
            for (out, j) in group.iter_mut() {
                inflate(compression, &arena[j.start..j.start + j.len], out, j.guest)?;
            }
            Ok(())
        };
        let threads = self.threads.min(outs.len()).max(1);
        if threads == 1 {
            run(&mut outs)?;
        } else {
            let per = outs.len().div_ceil(threads);
            let results: Vec<Result<(), ImageError>> = std::thread::scope(|s| {
                let handles: Vec<_> = outs
                    .chunks_mut(per)
                    .map(|group| s.spawn(move || run(group)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(bad("a decompression thread panicked")))
                    })
                    .collect()
            });
            results.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        self.jobs.clear();
        self.arena.clear();
        Ok(())
    }

    fn do_read(&mut self, src: &mut dyn Source, buf: &mut Chunk) -> Result<(), ImageError> {
        if let Some((pos, host, len)) = self.read.take() {
            src.read_at(&mut buf[pos..pos + len as usize], host)
                .map_err(|e| read_err("a data cluster", e))?;
        }
        Ok(())
    }

    fn flush_data(
        &mut self,
        src: &mut dyn Source,
        buf: &mut Chunk,
        emit: Emit<'_>,
    ) -> Result<(), ImageError> {
        self.do_read(src, buf)?;
        self.inflate_jobs(buf)?;
        if self.data_len > 0 {
            let run = Run::Data {
                offset: self.data_start,
                len: self.data_len,
            };
            self.data_len = 0;
            emit(run, buf)?;
        }
        Ok(())
    }

    fn flush_zero(&mut self, buf: &mut Chunk, emit: Emit<'_>) -> Result<(), ImageError> {
        if let Some((offset, len)) = self.zero.take() {
            emit(Run::Zero { offset, len }, buf)?;
        }
        Ok(())
    }
}
