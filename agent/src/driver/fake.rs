//! The fake driver of the in-process test tiers and the demo.

use super::{BmcControl, Compute, DriverError, DriverResult, Network, StepDone, Storage};
use crate::lock;
use async_trait::async_trait;
use ferric_proto::msg::{BmcCredential, BmcState, SensorReading};
use ferric_proto::plan::{
    BootDevice, ErrorKind, GuestPowerAction, GuestSpec, PowerAction, SelEntry, StepOutput,
    VolumeFormat, VolumeImage,
};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

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
    credentials: Mutex<Vec<BmcCredential>>,
    credentials_seen: Mutex<Vec<BmcCredential>>,
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

    /// The BMC credentials the coordinator sent last.
    pub fn bmc_credentials(&self) -> Vec<BmcCredential> {
        lock(&self.credentials).clone()
    }

    /// Every BMC credential the coordinator ever sent, in every set (a test that a secret
    /// never reached this agent reads this, not only the last set).
    pub fn bmc_credentials_seen(&self) -> Vec<BmcCredential> {
        lock(&self.credentials_seen).clone()
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
        *lock(&self.bmcs) = bmcs.iter().map(|b| b.name.clone()).collect();
        lock(&self.credentials_seen).extend(bmcs.iter().cloned());
        *lock(&self.credentials) = bmcs;
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

#[async_trait]
impl super::Machine for FakeDriver {
    /// The inventory of the machine the tests run on (read, never changed), without a BMC.
    async fn inspect(&self) -> Result<ferric_proto::msg::Inspection, DriverError> {
        self.call("inspect", "machine".into(), None).await?;
        Ok(ferric_proto::msg::Inspection {
            inventory: crate::inventory::read(&crate::inventory::Root::default()),
            bmc: None,
            bmc_error: Some("the fake machine has no BMC".into()),
            boot_mode: None,
        })
    }

    /// Reports progress in four quarters of a pretend 1 GiB, then succeeds.
    async fn erase_disks(
        &self,
        mode: ferric_proto::plan::EraseMode,
        meter: super::Meter,
    ) -> DriverResult {
        for q in 1..=4u64 {
            meter(q << 28, 1 << 30);
        }
        self.call("erase_disks", format!("machine/{}", mode.as_str()), None)
            .await
    }

    async fn write_image(
        &self,
        image: &ferric_proto::plan::VolumeImage,
        _root: &ferric_proto::plan::RootHint,
        meter: super::Meter,
    ) -> DriverResult {
        meter(1 << 30, 1 << 30);
        self.call("write_image", format!("machine/{}", image.checksum), None)
            .await
    }

    async fn write_config_drive(
        &self,
        _root: &ferric_proto::plan::RootHint,
        label: &str,
        _files: &[ferric_proto::plan::ConfigFile],
    ) -> DriverResult {
        self.call("write_config_drive", format!("machine/{label}"), None)
            .await
    }

    async fn set_boot_device(
        &self,
        device: ferric_proto::plan::BootDevice,
        _persistent: bool,
    ) -> DriverResult {
        self.call(
            "set_boot_device",
            format!("machine/{}", device.as_str()),
            None,
        )
        .await
    }

    async fn reboot(&self, _: super::Delivered) -> DriverResult {
        self.call("reboot", "machine".into(), None).await
    }

    async fn uefi_boot_entry(&self, _root: &ferric_proto::plan::RootHint) -> DriverResult {
        self.call("uefi_boot_entry", "machine".into(), None).await
    }
}
