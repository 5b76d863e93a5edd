//! Bare-metal nodes' BMCs: enrollment, power, boot device, sensors, event log.

use crate::model::{BootVia, EfiLoader};
use ferric_proto::hardware::BootMode;
use ferric_proto::msg::SensorReading;
use ferric_proto::plan::{BootDevice, PowerAction};
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/nodes`: a bare-metal node and its BMC.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBmcNode {
    /// Node name (a DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// `ipmi://USER@HOST[:PORT][?suite=17|3]`, or
    /// `redfish[+http]://USER@HOST[:PORT][?system=ID][&pin=sha256:HEX]`.
    #[schema(pattern = "^(ipmi|redfish|redfish\\+http)://[^@/]+@[^/]+$")]
    pub bmc: String,
    /// BMC password.
    pub password: String,
    /// Agent that reaches the BMC; the only enrolled agent when absent.
    #[serde(default)]
    pub via: Option<String>,
    /// MAC addresses of the node's NICs (for its boot services).
    #[serde(default)]
    pub macs: Vec<String>,
    /// Absolute path of the node's serial console log on the host of the agent that drives
    /// the BMC (where a console server, or the lab's QEMU, writes it): that agent tails it
    /// for `GET /v1/nodes/{name}/console` and the dashboard. It must lie in the agent's
    /// allowed paths (`ferric-agent run --allow-path`).
    #[serde(default)]
    pub console_log: Option<String>,
    /// How its firmware boots: every boot device asked of its BMC says it, and an
    /// inspection confirms (or corrects) it from the running firmware. Absent: `uefi`, what
    /// servers of today boot.
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
    /// The iPXE its UEFI firmware network-boots. Absent: `snponly`.
    #[serde(default)]
    pub efi_loader: Option<EfiLoader>,
    /// How it boots the deploy ramdisk. Absent: `network`.
    #[serde(default)]
    pub boot_via: Option<BootVia>,
}

impl std::fmt::Debug for EnrollBmcNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollBmcNode")
            .field("name", &self.name)
            .field("bmc", &self.bmc)
            .field("password", &"***")
            .field("via", &self.via)
            .field("macs", &self.macs)
            .field("console_log", &self.console_log)
            .field("boot_mode", &self.boot_mode)
            .field("efi_loader", &self.efi_loader)
            .field("boot_via", &self.boot_via)
            .finish()
    }
}

/// A node's BMC as the API shows it (never the password).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BmcView {
    /// The bare-metal node.
    pub node: String,
    /// `ipmi://USER@HOST:PORT`.
    pub address: String,
    /// Agent that drives it.
    pub via: String,
    /// The node's NIC MAC addresses.
    #[serde(default)]
    pub macs: Vec<String>,
    /// Power state Ferric last set.
    pub power_expected: Option<String>,
    /// Power state last read.
    pub power_observed: Option<String>,
    /// When it was read, ms since the epoch (agent clock).
    pub observed_at_ms: Option<i64>,
    /// What went wrong on the newest read that failed (`KIND — MESSAGE`).
    pub last_error: Option<String>,
    /// When that read was, ms since the epoch (agent clock).
    #[serde(default)]
    pub error_at_ms: Option<i64>,
    /// Whether the newest read failed (the BMC does not answer now, or refuses Ferric).
    #[serde(default)]
    pub failing: bool,
    /// What changed behind Ferric's back (cleared by the next power action).
    pub flag: Option<String>,
    /// Newest sensor readings.
    #[serde(default)]
    pub sensors: Vec<SensorReading>,
    /// The serial console log the driving agent tails, if any.
    #[serde(default)]
    pub console_log: Option<String>,
    /// How its firmware boots.
    pub boot_mode: BootMode,
    /// When an inspection saw that mode from the running firmware, ms since the epoch (agent
    /// clock); absent: as enrolled or set, not yet seen.
    #[serde(default)]
    pub boot_mode_seen_at_ms: Option<i64>,
    /// The iPXE its UEFI firmware network-boots.
    pub efi_loader: EfiLoader,
    /// How it boots the deploy ramdisk.
    #[serde(default = "network")]
    pub boot_via: BootVia,
}

fn network() -> BootVia {
    BootVia::Network
}

/// Body of `PATCH /v1/nodes/{name}/bmc`: what to change of how a node boots (absent fields
/// stay).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootSettings {
    /// How its firmware boots.
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
    /// The iPXE its UEFI firmware network-boots.
    #[serde(default)]
    pub efi_loader: Option<EfiLoader>,
    /// How it boots the deploy ramdisk.
    #[serde(default)]
    pub boot_via: Option<BootVia>,
}

/// Body of `POST /v1/nodes/{name}/power`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `on`, `off`, `cycle`, `reset`, `soft` or `status`.
    pub action: PowerAction,
}

/// Body of `POST /v1/nodes/{name}/bootdev`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootdevRequest {
    /// `pxe`, `disk`, `bios`, `cdrom`.
    pub device: BootDevice,
    /// For every boot rather than the next one.
    #[serde(default)]
    pub persistent: bool,
    /// UEFI rather than legacy boot.
    #[serde(default)]
    pub uefi: bool,
}

/// Answer to a BMC request: the plan pushed to the driving agent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BmcAction {
    /// The bare-metal node.
    pub node: String,
    /// Agent that runs it.
    pub via: String,
    /// Plan id (`ferric plan status ID`).
    pub plan: u64,
    /// Whether it was handed to a connected agent at once.
    pub pushed: bool,
}

/// Body of `POST /v1/nodes/{name}/sel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SelRequest {
    /// Clear the log once it has been read.
    #[serde(default)]
    pub clear: bool,
}
