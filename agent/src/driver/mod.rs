//! Hardware behind small traits. The executor holds `Arc<dyn Trait>` and never names libvirt,
//! netlink or IPMI. The backends: guests, volumes and bridges in `hypervisor` (libvirt,
//! netlink; cargo feature `libvirt`), BMCs in [`crate::bmc::control`] (IPMI over LAN);
//! [`Unsupported`] stands in for what an agent does not drive, and [`FakeDriver`] implements
//! every trait for the in-process tiers: it records calls and can inject delays and failures.

#[cfg(feature = "disks")]
pub mod disks;
#[cfg(feature = "disks")]
pub mod efi;
mod fake;
#[cfg(feature = "disks")]
pub mod gpt;
pub mod local;
mod unsupported;

pub use fake::FakeDriver;
#[cfg(test)]
pub(crate) use fake::fake_sel_entry;
pub use unsupported::Unsupported;

use async_trait::async_trait;
use ferric_proto::hardware::Inventory;
use ferric_proto::msg::{BmcCredential, BmcState, Inspection, SensorReading};
use ferric_proto::plan::{
    BootDevice, ConfigFile, EraseMode, ErrorKind, GuestPowerAction, GuestSpec, PowerAction,
    RootHint, Step, StepOutput, VolumeFormat, VolumeImage,
};
use std::sync::Arc;

/// A driver failure with a stable kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    /// Stable kind.
    pub kind: ErrorKind,
    /// What went wrong, naming the object.
    pub message: String,
}

impl DriverError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// `Ok(changed)`: whether the step changed anything.
pub type DriverResult = Result<bool, DriverError>;

/// What a step achieved: whether it changed anything, and what it found.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDone {
    /// Whether the step changed anything.
    pub changed: bool,
    /// What it found (sent as an `output` event before `done`).
    pub output: Option<StepOutput>,
}

impl From<bool> for StepDone {
    fn from(changed: bool) -> Self {
        StepDone {
            changed,
            output: None,
        }
    }
}

/// Where a long step reports how far it is (`done`, `total` units), shown as telemetry.
pub type Meter = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Whether the running step's end has reached the coordinator (stored and acknowledged): a
/// step that ends the agent (a reboot) waits for it, so that its report survives it.
pub type Delivered = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the executor gives a step besides its arguments.
#[derive(Clone)]
pub struct StepContext {
    /// Where a long step reports its progress.
    pub meter: Meter,
    /// Whether the step's end was delivered.
    pub delivered: Delivered,
}

impl Default for StepContext {
    /// No progress kept; the end counts as delivered at once (no link to deliver it over).
    fn default() -> Self {
        StepContext {
            meter: Arc::new(|_, _| {}),
            delivered: Arc::new(|| true),
        }
    }
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext").finish_non_exhaustive()
    }
}

/// Linux bridges and VLANs.
#[async_trait]
pub trait Network: Send + Sync + std::fmt::Debug {
    /// A bridge exists and is up (with the uplink, or its VLAN sub-interface, enslaved).
    async fn ensure_bridge(
        &self,
        name: &str,
        uplink: Option<&str>,
        vlan: Option<u16>,
    ) -> DriverResult;
    /// A bridge (and the VLAN sub-interface made for it) is gone.
    async fn delete_bridge(&self, name: &str) -> DriverResult;
    /// Whether this is a working driver (announced as a capability), not a stand-in that
    /// refuses every call.
    fn available(&self) -> bool {
        true
    }
}

/// Volumes in storage pools.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A volume exists with at least `size_bytes` (cloned from `image` when it is made).
    async fn ensure_volume(
        &self,
        pool: &str,
        name: &str,
        size_bytes: u64,
        format: VolumeFormat,
        image: Option<&VolumeImage>,
    ) -> DriverResult;
    /// A volume is gone.
    async fn delete_volume(&self, pool: &str, name: &str) -> DriverResult;
    /// Whether this is a working driver (announced as a capability), not a stand-in that
    /// refuses every call.
    fn available(&self) -> bool {
        true
    }
}

/// Guests.
#[async_trait]
pub trait Compute: Send + Sync + std::fmt::Debug {
    /// A guest is defined as specified.
    async fn ensure_guest(&self, spec: &GuestSpec) -> DriverResult;
    /// A guest's power state.
    async fn guest_power(&self, name: &str, action: GuestPowerAction) -> DriverResult;
    /// A guest is gone.
    async fn delete_guest(&self, name: &str) -> DriverResult;
    /// A volume is attached to a guest as `target`.
    async fn attach_volume(
        &self,
        guest: &str,
        pool: &str,
        volume: &str,
        target: &str,
    ) -> DriverResult;
    /// A volume is detached from a guest.
    async fn detach_volume(&self, guest: &str, pool: &str, volume: &str) -> DriverResult;
    /// Whether this is a working driver (announced as a capability), not a stand-in that
    /// refuses every call.
    fn available(&self) -> bool {
        true
    }
}

/// Out-of-band BMC control. BMCs are named as the coordinator enrolled them; their addresses
/// and credentials arrive over the link ([`BmcControl::set_bmcs`]) and stay in memory.
#[async_trait]
pub trait BmcControl: Send + Sync + std::fmt::Debug {
    /// Power action; the output is the power state read after it.
    async fn power(&self, bmc: &str, action: PowerAction) -> Result<StepDone, DriverError>;
    /// Next boot device.
    async fn boot_device(
        &self,
        bmc: &str,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> DriverResult;
    /// Every sensor's reading (a fresh SDR walk).
    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError>;
    /// The System Event Log, oldest first (the output); cleared afterwards when `clear`
    /// (changed: something was cleared).
    async fn sel(&self, bmc: &str, clear: bool) -> Result<StepDone, DriverError>;
    /// What the BMC knows of its machine without booting it (Redfish).
    async fn inventory(&self, bmc: &str) -> Result<Inventory, DriverError> {
        Err(DriverError::new(
            ErrorKind::Unsupported,
            format!("bmc `{bmc}`: an out-of-band inventory needs a Redfish BMC"),
        ))
    }
    /// Inserts `image` into the BMC's virtual CD, or ejects it when `None` (Redfish); the
    /// output is the CD's image after the step.
    async fn media(&self, bmc: &str, image: Option<&str>) -> Result<StepDone, DriverError> {
        let _ = image;
        Err(DriverError::new(
            ErrorKind::Unsupported,
            format!("bmc `{bmc}`: virtual media needs a Redfish BMC"),
        ))
    }
    /// Replaces the set of BMCs this agent drives.
    fn set_bmcs(&self, bmcs: Vec<BmcCredential>);
    /// Reads power (and, when `sensors`, sensor readings) of every BMC it drives.
    async fn poll(&self, sensors: bool) -> Vec<BmcState>;
    /// Ends whatever sessions it holds (the agent is stopping).
    async fn close(&self) {}
    /// Whether this is a working driver (announced as a capability), not a stand-in that
    /// refuses every call.
    fn available(&self) -> bool {
        true
    }
}

/// The machine the agent runs on (a bare-metal node under the deploy ramdisk).
#[async_trait]
pub trait Machine: Send + Sync + std::fmt::Debug {
    /// Reads the hardware and, where there is one, the BMC's LAN settings in-band.
    async fn inspect(&self) -> Result<Inspection, DriverError>;
    /// Erases every disk, disks in parallel.
    async fn erase_disks(&self, mode: EraseMode, meter: Meter) -> DriverResult;
    /// Streams an image onto the root disk, its digest checked in flight.
    async fn write_image(&self, image: &VolumeImage, root: &RootHint, meter: Meter)
    -> DriverResult;
    /// Adds a config drive to the root disk.
    async fn write_config_drive(
        &self,
        root: &RootHint,
        label: &str,
        files: &[ConfigFile],
    ) -> DriverResult;
    /// Sets the next boot device in-band.
    async fn set_boot_device(&self, device: BootDevice, persistent: bool) -> DriverResult;
    /// On a machine booted by UEFI, makes Ferric's boot entry start the root disk's loader,
    /// first in the boot order.
    async fn uefi_boot_entry(&self, root: &RootHint) -> DriverResult;
    /// Reboots the machine once `delivered` says the step's report reached the coordinator
    /// (or a bounded wait for it passed).
    async fn reboot(&self, delivered: Delivered) -> DriverResult;
    /// Whether this is a working driver (announced as a capability), not a stand-in that
    /// refuses every call.
    fn available(&self) -> bool {
        true
    }
}

/// The drivers an agent has.
#[derive(Debug, Clone)]
pub struct Drivers {
    /// Bridges.
    pub network: Arc<dyn Network>,
    /// Volumes.
    pub storage: Arc<dyn Storage>,
    /// Guests.
    pub compute: Arc<dyn Compute>,
    /// BMCs.
    pub bmc: Arc<dyn BmcControl>,
    /// The machine itself (ramdisk steps).
    pub machine: Arc<dyn Machine>,
}

impl Drivers {
    /// Every trait served by one fake.
    pub fn fake(f: Arc<FakeDriver>) -> Self {
        Self {
            network: f.clone(),
            storage: f.clone(),
            compute: f.clone(),
            bmc: f.clone(),
            machine: f,
        }
    }

    /// Runs one step through the driver that owns it.
    pub async fn run(&self, step: &Step) -> Result<StepDone, DriverError> {
        self.run_with(step, StepContext::default()).await
    }

    /// [`Drivers::run`], with long steps reporting their progress to the context's meter and
    /// a reboot waiting for its report's delivery.
    pub async fn run_with(&self, step: &Step, ctx: StepContext) -> Result<StepDone, DriverError> {
        let StepContext { meter, delivered } = ctx;
        Ok(match step {
            Step::EnsureBridge { name, uplink, vlan } => {
                self.network
                    .ensure_bridge(name, uplink.as_deref(), *vlan)
                    .await
            }
            Step::DeleteBridge { name } => self.network.delete_bridge(name).await,
            Step::EnsureVolume {
                pool,
                name,
                size_bytes,
                format,
                image,
            } => {
                self.storage
                    .ensure_volume(pool, name, *size_bytes, *format, image.as_ref())
                    .await
            }
            Step::DeleteVolume { pool, name } => self.storage.delete_volume(pool, name).await,
            Step::EnsureGuest(spec) => self.compute.ensure_guest(spec).await,
            Step::GuestPower { name, action } => self.compute.guest_power(name, *action).await,
            Step::DeleteGuest { name } => self.compute.delete_guest(name).await,
            Step::AttachVolume {
                guest,
                pool,
                volume,
                target,
            } => {
                self.compute
                    .attach_volume(guest, pool, volume, target)
                    .await
            }
            Step::DetachVolume {
                guest,
                pool,
                volume,
            } => self.compute.detach_volume(guest, pool, volume).await,
            Step::BmcPower { bmc, action } => return self.bmc.power(bmc, *action).await,
            Step::BmcBootDevice {
                bmc,
                device,
                persistent,
                uefi,
            } => self.bmc.boot_device(bmc, *device, *persistent, *uefi).await,
            Step::BmcSensors { bmc } => {
                let readings = self.bmc.sensors(bmc).await?;
                return Ok(StepDone {
                    changed: false,
                    output: Some(StepOutput::Sensors(readings)),
                });
            }
            Step::BmcSel { bmc, clear } => return self.bmc.sel(bmc, *clear).await,
            Step::BmcInventory { bmc } => {
                let inventory = self.bmc.inventory(bmc).await?;
                return Ok(StepDone {
                    changed: false,
                    output: Some(StepOutput::BmcInventory(Box::new(inventory))),
                });
            }
            Step::BmcMedia { bmc, image } => return self.bmc.media(bmc, image.as_deref()).await,
            Step::Inspect {} => {
                let found = self.machine.inspect().await?;
                return Ok(StepDone {
                    changed: false,
                    output: Some(StepOutput::Inspected(Box::new(found))),
                });
            }
            Step::EraseDisks { mode } => self.machine.erase_disks(*mode, meter).await,
            Step::WriteImage { image, root } => self.machine.write_image(image, root, meter).await,
            Step::WriteConfigDrive { root, label, files } => {
                self.machine.write_config_drive(root, label, files).await
            }
            Step::SetBootDevice { device, persistent } => {
                self.machine.set_boot_device(*device, *persistent).await
            }
            Step::Reboot {} => self.machine.reboot(delivered).await,
            Step::UefiBootEntry { root } => self.machine.uefi_boot_entry(root).await,
        }?
        .into())
    }

    /// Capability names for `Hello`: those of the working drivers (placement puts guests only
    /// on agents that announce `compute` and `storage`).
    pub fn capabilities(&self) -> Vec<String> {
        [
            ("network", self.network.available()),
            ("storage", self.storage.available()),
            ("compute", self.compute.available()),
            ("bmc", self.bmc.available()),
            ("machine", self.machine.available()),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_owned())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_those_of_the_working_drivers() {
        let fake = Arc::new(FakeDriver::new());
        assert_eq!(
            Drivers::fake(fake.clone()).capabilities(),
            ["network", "storage", "compute", "bmc", "machine"]
        );
        let none = Arc::new(Unsupported("this agent drives BMCs only"));
        let bmc_only = Drivers {
            network: none.clone(),
            storage: none.clone(),
            compute: none.clone(),
            bmc: fake,
            machine: none,
        };
        assert_eq!(bmc_only.capabilities(), ["bmc"]);
    }
}
