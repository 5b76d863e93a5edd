//! Ferric's encodings of the IPMI commands it sends (IPMI 2.0 specification), shared by the
//! LAN client and the in-band device: requests as raw netfn/command/data, answers parsed
//! into typed values, completion codes mapped to stable error kinds.

use crate::bmc::BmcErrorKind;
use ferric_proto::plan::BootDevice;
use ipmi_rs::connection::{CompletionErrorCode, IpmiCommand, Message, NetFn};

/// A raw IPMI request: netfn, command, data; the answer's data (after the completion code).
#[derive(Debug, Clone)]
pub struct Raw {
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
}

impl Raw {
    /// A request.
    pub fn new(netfn: NetFn, cmd: u8, data: Vec<u8>) -> Raw {
        Raw { netfn, cmd, data }
    }

    /// Its network function (the request's value), command and data.
    pub fn parts(&self) -> (u8, u8, &[u8]) {
        (self.netfn.request_value(), self.cmd, &self.data)
    }

    /// Get Device ID; the answer goes to [`parse_device_id`].
    pub fn get_device_id() -> Raw {
        Raw::new(NetFn::App, 0x01, vec![])
    }

    /// Get System Boot Options, parameter 5 (boot flags); the answer goes to
    /// [`parse_boot_flags`].
    pub fn get_boot_flags() -> Raw {
        Raw::new(NetFn::Chassis, 0x09, vec![0x05, 0x00, 0x00])
    }

    /// Set System Boot Options, parameter 5 (boot flags, see [`boot_flags_request`]);
    /// `None` for a device IPMI has no code for (UEFI HTTP boot).
    pub fn set_boot_flags(device: BootDevice, persistent: bool, uefi: bool) -> Option<Raw> {
        Some(Raw::new(
            NetFn::Chassis,
            0x08,
            boot_flags_request(device, persistent, uefi)?,
        ))
    }
}

impl From<Raw> for Message {
    fn from(r: Raw) -> Message {
        Message::new_request(r.netfn, r.cmd, r.data)
    }
}

impl IpmiCommand for Raw {
    type Output = Vec<u8>;
    type Error = std::convert::Infallible;

    fn parse_success_response(data: &[u8]) -> Result<Vec<u8>, Self::Error> {
        Ok(data.to_vec())
    }
}

/// What Get Device ID says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceId {
    /// Device id.
    pub device_id: u8,
    /// Device revision.
    pub revision: u8,
    /// Firmware `major.minor`.
    pub firmware: String,
    /// IPMI version, `2.0`.
    pub ipmi_version: String,
    /// IANA manufacturer id.
    pub manufacturer: u32,
    /// Product id.
    pub product: u16,
}

/// What Get Chassis Status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ChassisStatus {
    /// System power is on.
    pub power_on: bool,
    /// A power overload or fault.
    pub fault: bool,
}

/// The next boot device as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BootSetting {
    /// Device selected (None: no override).
    pub device: Option<BootDevice>,
    /// For all future boots.
    pub persistent: bool,
    /// UEFI.
    pub uefi: bool,
}

/// What Get SEL Info says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SelInfo {
    /// Entries in the log.
    pub entries: u16,
    /// Free bytes.
    pub free_bytes: u16,
}

/// Set System Boot Options, parameter 5 (boot flags): valid, persistent, UEFI, device; `None`
/// for a device the boot flags have no selector for (UEFI HTTP boot).
pub fn boot_flags_request(device: BootDevice, persistent: bool, uefi: bool) -> Option<Vec<u8>> {
    let mut b1 = 0x80; // valid
    if persistent {
        b1 |= 0x40;
    }
    if uefi {
        b1 |= 0x20;
    }
    let selector = match device {
        BootDevice::Pxe => 0x1,
        BootDevice::Disk => 0x2,
        BootDevice::Cdrom => 0x5,
        BootDevice::Bios => 0x6,
        BootDevice::UefiHttp => return None,
    };
    Some(vec![0x05, b1, selector << 2, 0, 0, 0])
}

/// The answer to Get System Boot Options, parameter 5.
pub fn parse_boot_flags(d: &[u8]) -> Option<BootSetting> {
    let (b1, b2) = (*d.get(2)?, *d.get(3)?);
    let device = match (b2 >> 2) & 0x0f {
        0x1 => Some(BootDevice::Pxe),
        0x2 => Some(BootDevice::Disk),
        0x5 => Some(BootDevice::Cdrom),
        0x6 => Some(BootDevice::Bios),
        _ => None,
    };
    Some(BootSetting {
        device,
        persistent: b1 & 0x40 != 0,
        uefi: b1 & 0x20 != 0,
    })
}

/// The answer to Get Device ID.
pub fn parse_device_id(d: &[u8]) -> Option<DeviceId> {
    if d.len() < 11 {
        return None;
    }
    Some(DeviceId {
        device_id: d[0],
        revision: d[1] & 0x0f,
        firmware: format!("{}.{:02x}", d[2] & 0x7f, d[3]),
        ipmi_version: format!("{}.{}", d[4] & 0x0f, d[4] >> 4),
        manufacturer: u32::from_le_bytes([d[6], d[7], d[8], 0]),
        product: u16::from_le_bytes([d[9], d[10]]),
    })
}

/// Maps a completion code to an error kind and message.
pub fn completion(cc: CompletionErrorCode) -> (BmcErrorKind, String) {
    match cc {
        CompletionErrorCode::InsufficientPrivilege => (
            BmcErrorKind::InsufficientPrivilege,
            "the user's privilege level does not allow this command".into(),
        ),
        CompletionErrorCode::InvalidCommand | CompletionErrorCode::InvalidCommandForLun => (
            BmcErrorKind::Unsupported,
            "the BMC does not support this command".into(),
        ),
        CompletionErrorCode::ParameterOutOfRange
        | CompletionErrorCode::InvalidDataFieldInRequest => (
            BmcErrorKind::Unsupported,
            format!("the BMC does not support this setting ({cc:?})"),
        ),
        CompletionErrorCode::RequestedDatapointNotPresent => (
            BmcErrorKind::NotPresent,
            "the requested record is not present".into(),
        ),
        other => (
            BmcErrorKind::Failed,
            format!("the BMC answered with completion code {other:?}"),
        ),
    }
}
