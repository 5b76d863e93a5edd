//! The stand-in for a capability an agent does not have.

use super::{BmcControl, Compute, DriverError, DriverResult, Machine, Network, StepDone, Storage};
use async_trait::async_trait;
use ferric_proto::msg::{BmcCredential, BmcState, SensorReading};
use ferric_proto::plan::{
    BootDevice, ErrorKind, GuestPowerAction, GuestSpec, PowerAction, VolumeFormat, VolumeImage,
};

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

#[async_trait]
impl Machine for Unsupported {
    fn available(&self) -> bool {
        false
    }
    async fn inspect(&self) -> Result<ferric_proto::msg::Inspection, DriverError> {
        Err(self.on("machine", "inspect"))
    }
    async fn erase_disks(&self, _: ferric_proto::plan::EraseMode, _: super::Meter) -> DriverResult {
        Err(self.on("machine", "erase disks"))
    }
    async fn write_image(
        &self,
        _: &ferric_proto::plan::VolumeImage,
        _: &ferric_proto::plan::RootHint,
        _: super::Meter,
    ) -> DriverResult {
        Err(self.on("machine", "write an image"))
    }
    async fn write_config_drive(
        &self,
        _: &ferric_proto::plan::RootHint,
        _: &str,
        _: &[ferric_proto::plan::ConfigFile],
    ) -> DriverResult {
        Err(self.on("machine", "write a config drive"))
    }
    async fn set_boot_device(&self, _: ferric_proto::plan::BootDevice, _: bool) -> DriverResult {
        Err(self.on("machine", "set the boot device in-band"))
    }
    async fn reboot(&self, _: super::Delivered) -> DriverResult {
        Err(self.on("machine", "reboot"))
    }
    async fn uefi_boot_entry(&self, _: &ferric_proto::plan::RootHint) -> DriverResult {
        Err(self.on("machine", "write a UEFI boot entry"))
    }
}
