//! # ferric-images
//!
//! Image handling for Ferric. It will own:
//!
//! * identification of disk images by content (raw, qcow2, vmdk, vhd/vhdx, vdi, iso, and
//!   gzip/zstd/xz wrappers) and refusal of unsafe ones (backing files, external data files,
//!   headers that lie about sizes or offsets);
//! * the one streaming write pipeline: source → decompress → decode → sparse writer →
//!   device, with checksums computed in flight and progress reported as it goes;
//! * the storage side of the coordinator's image store.
//!
//! Nothing is implemented here yet; the images issue fills it.
#![forbid(unsafe_code)]
