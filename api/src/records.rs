//! What the coordinator received from and about nodes, as it shows it: console lines, BMC
//! reads, telemetry samples, network boot stages.

use ferric_proto::msg::{BmcState, TelemetrySample};
use serde::{Deserialize, Serialize};

/// One line of a node's serial console, as the coordinator received it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleLine {
    /// Number of the line since the coordinator started (ask for those after it).
    pub seq: u64,
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// The text, without terminal escapes.
    pub text: String,
}

/// The console lines of a node the hub holds, and why its log was last not read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleTail {
    /// Oldest first.
    pub lines: Vec<ConsoleLine>,
    /// The agent's reason the log cannot be read, until a line arrives again.
    pub error: Option<String>,
    /// Number of the newest line held (what to ask for lines after, to get only new ones).
    pub last_seq: Option<u64>,
    /// Where line numbers count from (ms since the epoch; fixed for a coordinator's run): a
    /// reader that sees it change, the coordinator restarted, starts over.
    pub epoch_ms: i64,
}

/// A stage a node's network boot reached, and when (coordinator clock, ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BootMark {
    /// The stage.
    pub stage: crate::model::BootStage,
    /// When.
    pub at_ms: i64,
}

/// One read of a bare-metal node's BMC as received (its telemetry: the management agent polls
/// it every `--bmc-poll`, sensors every third time).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BmcRecord {
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// What the agent read (no sensors when it did not read them this time).
    pub bmc: BmcState,
}

/// A telemetry sample as received.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TelemetryRecord {
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// The sample.
    pub sample: TelemetrySample,
}
