//! RMCP+ — IPMI 2.0 over LAN — as Ferric speaks it, on both ends.
//!
//! * [`suite`]: the cipher suites (3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128; 17:
//!   RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128), the RAKP exchange's codes and the
//!   session keys derived from it (IPMI 2.0 rev 1.1, 13.28–13.32).
//! * [`packet`]: RMCP+ datagrams and the IPMI messages inside them, read from bytes anyone on
//!   the management network can send (fuzzed: `fuzz/fuzz_targets/rmcp_packet.rs`).
//! * [`bmc`]: a BMC's side of the LAN channel — session setup for the suites it offers, the
//!   sessions, and the App and Chassis commands a provisioning system uses, with the chassis
//!   itself behind [`bmc::Chassis`]. The lab's BMCs run it in front of their QEMU machines.
//!
//! No Rust library implements suite 17 (ipmi-rs 0.6 leaves SHA-256 `todo!()`): OpenBMC
//! offers only it by default, so Ferric has its own. Both ends are checked against ipmitool
//! (`-I lanplus -C 3` and `-C 17`), which nobody here wrote.

pub mod bmc;
pub mod client;
pub mod packet;
pub mod suite;
