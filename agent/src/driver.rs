//! Hardware behind small traits. The executor holds `Arc<dyn Trait>` and never names libvirt,
//! netlink or IPMI; real backends arrive with their issues. [`FakeDriver`] implements every
//! trait for the in-process tiers: it records calls and can inject delays and failures.

use crate::lock;
use async_trait::async_trait;
use ferric_proto::msg::{BmcCredential, BmcState, SensorReading};
use ferric_proto::plan::{
    BootDevice, ErrorKind, GuestPowerAction, GuestSpec, PowerAction, SelEntry, Step, StepOutput,
    VolumeFormat, VolumeImage,
};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Drivers {
    /// Every trait served by one fake.
    pub fn fake(f: Arc<FakeDriver>) -> Self {
        Self {
            network: f.clone(),
            storage: f.clone(),
            compute: f.clone(),
            bmc: f,
        }
    }

    /// Runs one step through the driver that owns it.
    pub async fn run(&self, step: &Step) -> Result<StepDone, DriverError> {
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
        ]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| name.to_owned())
        .collect()
    }
}

/// A driver for capabilities this agent does not have: every call fails with `unsupported`
/// and the reason given.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported(pub &'static str);

impl Unsupported {
    fn on(&self, what: &str, name: &str) -> DriverError {
        DriverError::new(
            ErrorKind::Unsupported,
            format!("{what} `{name}`: {}", self.0),
        )
    }
    fn err(&self, bmc: &str) -> DriverError {
        self.on("bmc", bmc)
    }
}

#[async_trait]
impl Network for Unsupported {
    fn available(&self) -> bool {
        false
    }
    async fn ensure_bridge(&self, name: &str, _: Option<&str>, _: Option<u16>) -> DriverResult {
        Err(self.on("bridge", name))
    }
    async fn delete_bridge(&self, name: &str) -> DriverResult {
        Err(self.on("bridge", name))
    }
}

#[async_trait]
impl Storage for Unsupported {
    fn available(&self) -> bool {
        false
    }
    async fn ensure_volume(
        &self,
        pool: &str,
        name: &str,
        _: u64,
        _: VolumeFormat,
        _: Option<&VolumeImage>,
    ) -> DriverResult {
        Err(self.on("volume", &format!("{pool}/{name}")))
    }
    async fn delete_volume(&self, pool: &str, name: &str) -> DriverResult {
        Err(self.on("volume", &format!("{pool}/{name}")))
    }
}

#[async_trait]
impl Compute for Unsupported {
    fn available(&self) -> bool {
        false
    }
    async fn ensure_guest(&self, spec: &GuestSpec) -> DriverResult {
        Err(self.on("guest", &spec.name))
    }
    async fn guest_power(&self, name: &str, _: GuestPowerAction) -> DriverResult {
        Err(self.on("guest", name))
    }
    async fn delete_guest(&self, name: &str) -> DriverResult {
        Err(self.on("guest", name))
    }
    async fn attach_volume(&self, guest: &str, _: &str, _: &str, _: &str) -> DriverResult {
        Err(self.on("guest", guest))
    }
    async fn detach_volume(&self, guest: &str, _: &str, _: &str) -> DriverResult {
        Err(self.on("guest", guest))
    }
}

#[async_trait]
impl BmcControl for Unsupported {
    fn available(&self) -> bool {
        false
    }
    async fn power(&self, bmc: &str, _action: PowerAction) -> Result<StepDone, DriverError> {
        Err(self.err(bmc))
    }
    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError> {
        Err(self.err(bmc))
    }
    async fn sel(&self, bmc: &str, _clear: bool) -> Result<StepDone, DriverError> {
        Err(self.err(bmc))
    }
    fn set_bmcs(&self, _bmcs: Vec<BmcCredential>) {}
    async fn poll(&self, _sensors: bool) -> Vec<BmcState> {
        vec![]
    }
    async fn boot_device(
        &self,
        bmc: &str,
        _device: BootDevice,
        _persistent: bool,
        _uefi: bool,
    ) -> DriverResult {
        Err(self.err(bmc))
    }
}

/// A driver for tests and the demo: keeps desired state in memory, records each call (and,
/// optionally, appends `begin …`/`end …` lines to a file that survives a killed process),
/// sleeps a configurable time per call, and fails steps of chosen kinds.
#[derive(Debug, Default)]
pub struct FakeDriver {
    calls: Mutex<Vec<String>>,
    present: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
    fail: Mutex<HashMap<String, ErrorKind>>,
    record: Option<Mutex<std::fs::File>>,
    bmcs: Mutex<Vec<String>>,
}

impl FakeDriver {
    /// A fake that answers at once and never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake that also appends its calls to `path`.
    pub fn recording(path: &Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            record: Some(Mutex::new(f)),
            ..Self::default()
        })
    }

    /// Whether the fake BMC `bmc` has power (after `BmcPower` steps).
    pub fn fake_power(&self, bmc: &str) -> bool {
        lock(&self.present).contains(&format!("power/{bmc}"))
    }

    /// Each call takes this long.
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.delay) = d;
    }

    /// Steps of `kind` (e.g. `ensure_volume`) fail with `err`.
    pub fn fail_kind(&self, kind: &str, err: ErrorKind) {
        lock(&self.fail).insert(kind.to_owned(), err);
    }

    /// Stops injecting failures.
    pub fn clear_failures(&self) {
        lock(&self.fail).clear();
    }

    /// Calls so far, as `kind object` strings.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn note(&self, line: &str) {
        if let Some(f) = &self.record {
            let mut f = lock(f);
            let _ = writeln!(f, "{line}");
            let _ = f.sync_data();
        }
    }

    async fn call(&self, kind: &str, object: String, ensure: Option<bool>) -> DriverResult {
        let what = format!("{kind} {object}");
        self.note(&format!("begin {what}"));
        lock(&self.calls).push(what.clone());
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(err) = lock(&self.fail).get(kind).copied() {
            self.note(&format!("fail {what}"));
            return Err(DriverError::new(err, format!("injected failure: {what}")));
        }
        let changed = match ensure {
            Some(true) => lock(&self.present).insert(object),
            Some(false) => lock(&self.present).remove(&object),
            None => true,
        };
        self.note(&format!("end {what}"));
        Ok(changed)
    }
}

#[async_trait]
impl Network for FakeDriver {
    async fn ensure_bridge(
        &self,
        name: &str,
        _uplink: Option<&str>,
        _vlan: Option<u16>,
    ) -> DriverResult {
        self.call("ensure_bridge", format!("bridge/{name}"), Some(true))
            .await
    }
    async fn delete_bridge(&self, name: &str) -> DriverResult {
        self.call("delete_bridge", format!("bridge/{name}"), Some(false))
            .await
    }
}

#[async_trait]
impl Storage for FakeDriver {
    async fn ensure_volume(
        &self,
        pool: &str,
        name: &str,
        _size: u64,
        _format: VolumeFormat,
        _image: Option<&VolumeImage>,
    ) -> DriverResult {
        self.call("ensure_volume", format!("volume/{pool}/{name}"), Some(true))
            .await
    }
    async fn delete_volume(&self, pool: &str, name: &str) -> DriverResult {
        self.call(
            "delete_volume",
            format!("volume/{pool}/{name}"),
            Some(false),
        )
        .await
    }
}

#[async_trait]
impl Compute for FakeDriver {
    async fn ensure_guest(&self, spec: &GuestSpec) -> DriverResult {
        self.call("ensure_guest", format!("guest/{}", spec.name), Some(true))
            .await
    }
    async fn attach_volume(
        &self,
        guest: &str,
        pool: &str,
        volume: &str,
        _target: &str,
    ) -> DriverResult {
        self.call(
            "attach_volume",
            format!("attach/{guest}/{pool}/{volume}"),
            Some(true),
        )
        .await
    }
    async fn detach_volume(&self, guest: &str, pool: &str, volume: &str) -> DriverResult {
        self.call(
            "detach_volume",
            format!("attach/{guest}/{pool}/{volume}"),
            Some(false),
        )
        .await
    }
    async fn guest_power(&self, name: &str, action: GuestPowerAction) -> DriverResult {
        self.call("guest_power", format!("guest/{name}/{action:?}"), None)
            .await
    }
    async fn delete_guest(&self, name: &str) -> DriverResult {
        self.call("delete_guest", format!("guest/{name}"), Some(false))
            .await
    }
}

/// The one entry of the fake event log, as a BMC's decoder gives it: temperature sensor 1,
/// "upper critical going high", asserted (the record's bytes are in `raw`).
pub(crate) fn fake_sel_entry() -> SelEntry {
    SelEntry {
        id: 1,
        at_s: Some(0x6000_0000),
        sensor: "Temperature".into(),
        sensor_number: 1,
        event: "Upper Critical - going high".into(),
        asserted: true,
        raw: "0100020000006020000401010159ffff".into(),
    }
}

#[async_trait]
impl BmcControl for FakeDriver {
    async fn power(&self, bmc: &str, action: PowerAction) -> Result<StepDone, DriverError> {
        self.call("bmc_power", format!("bmc/{bmc}/{action:?}"), None)
            .await?;
        let key = format!("power/{bmc}");
        let changed = match action.leaves_on() {
            Some(true) => lock(&self.present).insert(key),
            Some(false) => lock(&self.present).remove(&key),
            None => false,
        };
        Ok(StepDone {
            changed,
            output: Some(StepOutput::Power {
                on: self.fake_power(bmc),
            }),
        })
    }
    async fn sensors(&self, bmc: &str) -> Result<Vec<SensorReading>, DriverError> {
        self.call("bmc_sensors", format!("bmc/{bmc}/sensors"), None)
            .await?;
        Ok(vec![SensorReading {
            name: "Fake Temp".into(),
            kind: "temperature".into(),
            value: Some(40.0),
            unit: "°C".into(),
        }])
    }
    async fn sel(&self, bmc: &str, clear: bool) -> Result<StepDone, DriverError> {
        self.call("bmc_sel", format!("bmc/{bmc}/sel"), None).await?;
        // The fake log holds one entry (a temperature threshold event) until it is cleared.
        let cleared = format!("sel-cleared/{bmc}");
        let empty = lock(&self.present).contains(&cleared);
        let entries = if empty {
            vec![]
        } else {
            vec![fake_sel_entry()]
        };
        if clear {
            lock(&self.present).insert(cleared);
        }
        Ok(StepDone {
            changed: clear && !empty,
            output: Some(StepOutput::Sel(entries)),
        })
    }
    fn set_bmcs(&self, bmcs: Vec<BmcCredential>) {
        *lock(&self.bmcs) = bmcs.into_iter().map(|b| b.name).collect();
    }
    async fn poll(&self, _sensors: bool) -> Vec<BmcState> {
        let names = lock(&self.bmcs).clone();
        names
            .into_iter()
            .map(|name| BmcState {
                power_on: Some(self.fake_power(&name)),
                name,
                at_ms: crate::clock::now_ms(),
                sensors: vec![],
                error: None,
            })
            .collect()
    }
    async fn boot_device(
        &self,
        bmc: &str,
        device: BootDevice,
        persistent: bool,
        _uefi: bool,
    ) -> DriverResult {
        self.call(
            "bmc_boot_device",
            format!("bmc/{bmc}/{device:?}/{persistent}"),
            None,
        )
        .await
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
            ["network", "storage", "compute", "bmc"]
        );
        let none = Arc::new(Unsupported("this agent drives BMCs only"));
        let bmc_only = Drivers {
            network: none.clone(),
            storage: none.clone(),
            compute: none,
            bmc: fake,
        };
        assert_eq!(bmc_only.capabilities(), ["bmc"]);
    }
}
