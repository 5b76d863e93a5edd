//! What the coordinator holds in memory of its agents, by concern: who is connected and how to
//! push to them ([`links`]), the stages of nodes' network boots ([`boot_stages`]), BMC reads
//! ([`bmc_reads`]), serial consoles ([`consoles`]) and telemetry samples ([`telemetry`]).
//! Each part bumps one change signal that the API's live streams wait on.

pub mod bmc_reads;
pub mod boot_stages;
pub mod consoles;
pub mod links;
mod rings;
pub mod telemetry;

pub use bmc_reads::{BMC_SENSORS_MAX, BmcReads, BmcRecord};
pub use boot_stages::{BootMark, BootStages};
pub use consoles::{CONSOLE_RING, ConsoleLine, ConsoleTail, Consoles, redact_boot_token};
pub use links::{DUPLICATE_ALIVE_MS, DUPLICATE_REPLACEMENTS, DUPLICATE_WINDOW_MS, Links, Push};
pub use rings::{TELEMETRY_RING, TELEMETRY_RING_BYTES};
pub use telemetry::{TELEMETRY_SAMPLE_MAX, Telemetry, TelemetryRecord};

/// The signal bumped whenever something a watcher shows arrived (a sample, a BMC read, a boot
/// stage, a connection come or gone, console lines).
#[derive(Debug, Clone)]
pub struct Changes(std::sync::Arc<tokio::sync::watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Self {
        Changes(std::sync::Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl Changes {
    /// Wakes the watchers.
    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees each change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The coordinator's memory of its agents, by concern.
#[derive(Debug)]
pub struct Hub {
    /// Connected agents and what to push to them.
    pub links: Links,
    /// Stages of nodes' network boots.
    pub boot_stages: BootStages,
    /// Bare-metal nodes' BMC reads.
    pub bmc: BmcReads,
    /// Serial console lines.
    pub consoles: Consoles,
    /// Agents' telemetry samples.
    pub telemetry: Telemetry,
    changes: Changes,
}

impl Default for Hub {
    fn default() -> Self {
        let changes = Changes::default();
        Hub {
            links: Links::new(changes.clone()),
            boot_stages: BootStages::new(changes.clone()),
            bmc: BmcReads::new(changes.clone()),
            consoles: Consoles::new(changes.clone()),
            telemetry: Telemetry::new(changes.clone()),
            changes,
        }
    }
}

impl Hub {
    /// A receiver that sees each change the hub records (telemetry, BMC reads, boot stages,
    /// connections, consoles): what the API's live streams wait on.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests;
