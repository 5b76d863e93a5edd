//! # ferric-proto
//!
//! The wire protocol between the Ferric coordinator and its agents, without any I/O.
//!
//! * [`plan`]: the plan model — a plan is an ordered list of small, named steps for one node;
//! * [`hardware`]: what is known of a machine (inventory, inspection, sensor readings);
//! * [`msg`]: the versioned messages carried on the control stream and in datagrams;
//! * [`frame`]: length-prefixed binary framing with a size limit; decoders never panic;
//! * [`secret`]: secrets that never show in logs;
//! * [`session`]: the session logic of both ends as sans-IO state machines
//!   (`handle_*(now, …)` in, `poll_*` out), tested in memory with simulated time.
//!
//! Transport (QUIC, mutual TLS, ALPN [`ALPN`]) lives in the coordinator and agent crates; this
//! crate only decides what is said and when.
#![forbid(unsafe_code)]

pub mod frame;
pub mod hardware;
pub mod msg;
pub mod plan;
pub mod secret;
pub mod session;

pub use secret::Secret;

/// ALPN protocol id of an enrolled agent's link (mutual TLS).
pub const ALPN: &[u8] = b"ferric/1";
/// ALPN protocol id of an enrollment connection: server-authenticated TLS, the client proves
/// itself with a single-use bootstrap token and leaves with a certificate.
pub const ALPN_ENROLL: &[u8] = b"ferric-enroll/1";
/// TLS server name every agent verifies on the coordinator's certificate. Agents trust the
/// coordinator through the pinned CA, not through DNS, so one fixed name suffices.
pub const COORDINATOR_SERVER_NAME: &str = "coordinator.ferric.internal";

/// Protocol version this build speaks.
///
/// * 1 — hello/welcome, plans, step events, telemetry datagrams;
/// * 2 — BMC credentials pushed to the agent (`CoordMsg::Bmcs`), BMC states reported
///   (`AgentMsg::BmcStates`), step outputs (`StepEventKind::Output`);
/// * 3 — the System Event Log step (`Step::BmcSel`) and its output (`StepOutput::Sel`);
/// * 4 — the inspect step (`Step::Inspect`) and its output (`StepOutput::Inspection`);
/// * 5 — the deploy steps: `EraseDisks`, `WriteImage`, `WriteConfigDrive`, `SetBootDevice`,
///   `Reboot`;
/// * 6 — serial console logs the agent tails for the coordinator (`CoordMsg::Consoles`,
///   `AgentMsg::Console`);
/// * 7 — cancelling a plan the agent holds (`CoordMsg::Cancel`, `ErrorKind::Cancelled`);
/// * 8 — the firmware's boot mode in an inspection (`StepOutput::Inspected`) and the UEFI
///   boot entry step (`Step::UefiBootEntry`);
/// * 9 — Redfish: the BMC inventory and virtual media steps (`Step::BmcInventory`,
///   `Step::BmcMedia`, their outputs), and the UEFI HTTP boot device.
///
/// A plan is pushed only to an agent whose version knows all its steps
/// ([`plan::Plan::min_protocol`]); otherwise the coordinator fails it, naming the step.
pub const PROTOCOL_VERSION: u16 = 9;
/// Oldest agent protocol version the coordinator still serves (rolling upgrades).
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// QUIC application close codes, shared by both ends so that each can name why a link ended.
pub mod close {
    /// Orderly shutdown of either end.
    pub const SHUTDOWN: u32 = 0;
    /// The agent presented no client certificate on the `ferric/1` ALPN.
    pub const CERT_REQUIRED: u32 = 1;
    /// Bytes on the control stream were not a valid frame or message.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// The session was refused (the `Refused` message says why).
    pub const REFUSED: u32 = 3;
    /// A newer connection of the same node replaced this one.
    pub const REPLACED: u32 = 4;
    /// The peer did not complete the handshake in time.
    pub const HANDSHAKE_TIMEOUT: u32 = 5;
    /// The coordinator's store failed; the agent should retry later.
    pub const STORE_ERROR: u32 = 6;
    /// Enrollment finished (successfully or not).
    pub const ENROLL_DONE: u32 = 7;
}
