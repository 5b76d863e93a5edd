//! Redfish as Ferric speaks it, on both ends.
//!
//! * [`client`]: what an agent drives a BMC with — the system found from
//!   `/redfish/v1/Systems`, a session kept and renewed (basic authentication where the BMC has
//!   no session service), the BMC's certificate checked against a CA bundle or a pinned
//!   fingerprint and never silently accepted ([`trust`]), 500/503 answers retried with
//!   backoff, tasks followed to a deadline, and a refused password not tried again for a
//!   while (BMCs lock accounts out). Power, boot override, sensors, the event log, the
//!   out-of-band inventory and virtual media.
//! * [`vendor`]: where BMCs differ, as a table, not an SDK.
//! * [`service`]: a BMC's side — the resources a provisioning system uses, over HTTPS with
//!   sessions and basic authentication — with the machine itself behind
//!   [`service::Machine`]. The lab's Redfish BMCs run it in front of their QEMU nodes.
//!
//! The client is checked against sushy-tools' emulator and the service against DMTF's
//! Redfish service validator, which nobody here wrote.

pub mod client;
pub mod service;
pub mod trust;
pub mod vendor;

pub use client::{Client, Error, ErrorKind, Options, Target};
