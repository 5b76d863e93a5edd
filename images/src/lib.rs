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
//! To come (the images issue): the one streaming write pipeline (source → decompress → decode
//! → sparse writer → device, checksums in flight, progress) and the coordinator's image store.
#![forbid(unsafe_code)]

pub mod inspect;
pub mod write;
