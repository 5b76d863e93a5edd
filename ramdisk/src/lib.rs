//! # ferric-ramdisk
//!
//! The deploy ramdisk of Ferric. It will own two things:
//!
//! * the agent that runs from RAM on a PXE-booted bare-metal node: it dials the coordinator
//!   with the per-boot token and CA fingerprint from its kernel command line, inspects the
//!   hardware, erases disks, streams OS images to disk, sets the next boot device through
//!   in-band IPMI (`/dev/ipmi0`) and reboots;
//! * the builder of the kernel and initramfs that the coordinator's boot services hand to
//!   nodes over PXE.
//!
//! So far it has the in-band BMC commands (`ferric-ramdisk bmc info|bootdev`), built on
//! [`ferric_agent::bmc::inband`]; the bare-metal issues fill in the rest.
#![forbid(unsafe_code)]

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
