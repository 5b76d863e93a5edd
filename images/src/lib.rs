//! # ferric-images
//!
//! Image handling for Ferric.
//!
//! * [`inspect`]: identification of disk images by content (raw, qcow2, vmdk, vhd, vhdx, vdi,
//!   iso, and gzip/zstd/xz wrappers around them) and refusal of unsafe ones — a qcow2 backing
//!   file or external data file, a vmdk descriptor that refers to other files, headers that lie
//!   about sizes, tables that point outside the file, a format other than the one declared —
//!   as OpenStack learned from its format-inspector CVEs.
//!
//! * [`source`]: where an image's bytes come from — a file, or HTTP(S) read with `Range`
//!   requests that resume a broken transfer — and its digest computed as it is read.
//! * [`write`]: the one streaming write pipeline (source → decompress → decode → sparse writer
//!   → file or device, checksums in flight, progress), on its own qcow2 reader.
#![forbid(unsafe_code)]

mod chunk;
pub mod inspect;
mod qcow2;
pub mod source;
pub mod write;
