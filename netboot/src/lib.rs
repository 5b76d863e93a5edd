//! # ferric-netboot
//!
//! What network boot needs on both ends of the provisioning network, without the coordinator:
//!
//! * [`dhcp`]: the DHCP server's logic (full or proxy, leases by MAC, boot file by client
//!   kind) as a pure function of a datagram;
//! * [`tftp`]: a read-only TFTP server for iPXE, with its packet codec.
//!
//! The coordinator runs the servers on its provisioning interface; the decoders of untrusted
//! bytes here are fuzzed.
#![forbid(unsafe_code)]

pub mod dhcp;
pub mod tftp;
