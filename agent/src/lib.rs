//! # ferric-agent
//!
//! The agent on a hypervisor or management host: it enrolls once with a bootstrap token
//! ([`enroll`]), then keeps a mutual-TLS QUIC link to the coordinator ([`link`]), journals
//! the plans it is given ([`journal`]), runs their steps through small hardware traits
//! ([`driver`], [`executor`]) and streams host telemetry ([`telemetry`]).
//!
//! Cargo features choose what is compiled:
//!
//! * `agent` (default): all of the above, the fake driver, BMCs over IPMI-over-LAN
//!   (`bmc::control`, `bmc::ipmi::IpmiClient`) and the `ferric-agent` binary;
//! * `libvirt` (default, needs `agent`): the hypervisor drivers (`hypervisor`: libvirt and
//!   netlink);
//! * `inband`: IPMI through the kernel's device (`bmc::inband`), for the deploy ramdisk.
//!
//! Without features only [`bmc`]'s errors and targets and [`bmc::ipmi`]'s command encodings
//! and decoders remain: what the fuzz targets use, without QUIC, TLS or the LAN client. The
//! deploy ramdisk runs the agent with `agent` and `inband`, without `libvirt`.
#![forbid(unsafe_code)]

pub mod bmc;
#[cfg(feature = "agent")]
pub mod clock;
#[cfg(feature = "agent")]
pub mod console;
#[cfg(feature = "agent")]
pub mod driver;
#[cfg(feature = "agent")]
pub mod enroll;
#[cfg(feature = "agent")]
pub mod executor;
#[cfg(feature = "libvirt")]
pub mod hypervisor;
#[cfg(feature = "agent")]
pub mod inventory;
pub mod journal;
#[cfg(feature = "agent")]
pub mod link;
#[cfg(feature = "agent")]
pub mod paths;
#[cfg(feature = "agent")]
mod run;
#[cfg(feature = "agent")]
pub mod telemetry;
#[cfg(feature = "agent")]
pub mod tls;

#[cfg(feature = "agent")]
pub use run::{AgentError, Config, SENSOR_POLL_EVERY, run};

/// Locks a mutex whose data stays consistent even if a holder panicked: a poisoned lock is
/// taken as it is, not turned into a second panic.
#[cfg(feature = "agent")]
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
