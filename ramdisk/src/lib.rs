//! # ferric-ramdisk
//!
//! The deploy ramdisk of Ferric:
//!
//! * as PID 1 of a PXE-booted bare-metal node ([`init`]): it mounts what a userland needs,
//!   loads its kernel modules, brings the boot NIC up by DHCP ([`net`]), enrolls with the
//!   per-boot token and the CA fingerprint from its kernel command line ([`cmdline`]) and runs
//!   as an agent with the ramdisk role ([`agent`]): the machine is inspected when it connects;
//! * the builder of the kernel and initramfs that the coordinator's boot services hand out
//!   ([`build`], `ferric-ramdisk build`);
//! * in-band BMC commands on the node (`ferric-ramdisk bmc info|bootdev`), built on
//!   [`ferric_agent::bmc::inband`].
#![forbid(unsafe_code)]

pub mod agent;
pub mod build;
pub mod cmdline;
pub mod init;
pub mod net;

use ferric_agent::bmc::inband::{Inband, LanSettings};
use ferric_agent::bmc::ipmi::{BootSetting, DeviceId};
use serde::Serialize;

/// What the ramdisk reports of the node's BMC (hardware inspection).
#[derive(Debug, Clone, Serialize)]
pub struct BmcInfo {
    /// Get Device ID.
    pub device: DeviceId,
    /// The LAN channel's settings: the address to enroll the node's BMC by.
    pub lan: Option<LanSettings>,
    /// Why the LAN settings could not be read.
    pub lan_error: Option<String>,
    /// The next boot device.
    pub boot: BootSetting,
}

/// Reads the BMC's identity, LAN settings and next boot device in-band.
pub fn bmc_info(dev: &mut Inband) -> Result<BmcInfo, ferric_agent::bmc::BmcError> {
    let device = dev.device_id()?;
    let (lan, lan_error) = match dev.lan() {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let boot = dev.boot_device()?;
    Ok(BmcInfo {
        device,
        lan,
        lan_error,
        boot,
    })
}
