//! Guests on hypervisor hosts, and the hosts.

use crate::model::{GuestDesired, GuestObserved};
use ferric_proto::msg::Capability;
use ferric_proto::plan::GuestBoot;
use serde::{Deserialize, Serialize};

fn default_pool() -> String {
    ROOT_POOL.to_owned()
}

/// Pool guests' root volumes go to on their host unless the request names one.
pub const ROOT_POOL: &str = "default";

/// Body of `POST /v1/guests`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGuest {
    /// Name.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Root disk, bytes.
    pub disk_bytes: u64,
    /// Bridges, one NIC each.
    #[serde(default)]
    pub nets: Vec<String>,
    /// What it boots.
    #[serde(default)]
    pub boot: GuestBoot,
    /// Storage pool of its root volume on the host.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Image in the store its root volume is cloned from.
    #[serde(default)]
    pub image: Option<String>,
}

/// Answer to a guest action.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestAction {
    /// Guest.
    pub guest: String,
    /// Its host.
    pub host: String,
    /// The plan pushed.
    pub plan: u64,
}

/// A guest with what its host last reported of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestView {
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// vCPUs.
    pub vcpus: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Root disk, bytes.
    pub disk_bytes: i64,
    /// Desired state.
    pub desired: GuestDesired,
    /// What its host last reported.
    pub observed: GuestObserved,
    /// State of the last plan.
    pub last_plan: Option<i64>,
    /// CPU percent from the last sample.
    pub cpu_percent: Option<f32>,
    /// What differs from the desired state although no plan is working on it (changed,
    /// stopped, started or deleted behind Ferric's back); empty when in line.
    #[serde(default)]
    pub drift: Vec<String>,
}

/// vCPUs a host may promise per logical CPU.
pub const CPU_ALLOCATION_RATIO: f64 = 4.0;

/// Memory is not overcommitted.
pub const RAM_ALLOCATION_RATIO: f64 = 1.0;

/// A hypervisor host as placement sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostView {
    /// Node name.
    pub name: String,
    /// Whether its agent is connected.
    pub connected: bool,
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in all, MiB.
    pub mem_total_mib: u64,
    /// Free bytes in the filesystem its volumes live on (largest disk seen).
    pub disk_free_bytes: u64,
    /// Bridges (and other interfaces) present.
    pub interfaces: Vec<String>,
    /// vCPUs promised to guests placed here.
    pub vcpus_used: u64,
    /// Memory promised to guests placed here, MiB.
    pub mem_used_mib: u64,
    /// Disk promised to guests placed here, bytes.
    pub disk_used_bytes: u64,
    /// Guests placed here.
    pub guests: u64,
    /// What its agent announced it can drive (`compute`, `storage`, `network`, `bmc`).
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

impl HostView {
    /// vCPUs still free under the allocation ratio.
    pub fn vcpus_free(&self) -> i64 {
        (f64::from(self.cpus) * CPU_ALLOCATION_RATIO) as i64 - self.vcpus_used as i64
    }

    /// Memory still free, MiB.
    pub fn mem_free_mib(&self) -> i64 {
        (self.mem_total_mib as f64 * RAM_ALLOCATION_RATIO) as i64 - self.mem_used_mib as i64
    }

    /// Disk still free, bytes.
    pub fn disk_free(&self) -> i64 {
        self.disk_free_bytes as i64 - self.disk_used_bytes as i64
    }
}
