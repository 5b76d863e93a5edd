//! What is known of a machine: its hardware inventory and what an inspection found, and
//! readings of its BMC's sensors — reported by agents in step outputs and BMC states.

use serde::{Deserialize, Serialize};

/// One sensor reading from a BMC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensorReading {
    /// Sensor name from its SDR (`CPU Temp`).
    pub name: String,
    /// Sensor type (`temperature`, `voltage`, `fan`, `current`, …, or `type 0xNN`).
    pub kind: String,
    /// Converted reading, when the sensor has one and it is available.
    pub value: Option<f64>,
    /// Unit (`degrees C`, `volts`, `RPM`, …); empty when unknown.
    pub unit: String,
}

/// What an `inspect` step reports: the hardware, and the BMC's LAN settings read in-band.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inspection {
    /// The hardware.
    pub inventory: Inventory,
    /// The BMC's LAN address and MAC, when the machine has a BMC the ramdisk could read.
    pub bmc: Option<BmcLan>,
    /// Why the BMC could not be read, when it could not.
    pub bmc_error: Option<String>,
}

/// A BMC's LAN settings as read in-band.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BmcLan {
    /// IPv4 address.
    pub ip: String,
    /// MAC address.
    pub mac: String,
}

/// A machine's hardware as an agent reads it (the ramdisk's `inspect` step reports it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    /// Processors.
    pub cpu: CpuInfo,
    /// Memory the kernel sees, bytes.
    pub memory_bytes: u64,
    /// Whole disks, by kernel name.
    pub disks: Vec<DiskInfo>,
    /// Physical NICs, by kernel name.
    pub nics: Vec<NicInfo>,
    /// The firmware's identity of the machine.
    pub dmi: DmiInfo,
}

/// Processors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuInfo {
    /// Model name.
    pub model: String,
    /// Logical CPUs.
    pub count: u32,
}

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskInfo {
    /// Kernel name (`sda`, `nvme0n1`, `vda`).
    pub name: String,
    /// Size, bytes.
    pub size_bytes: u64,
    /// Model, when the device says.
    pub model: String,
    /// Serial number, when the device says.
    pub serial: String,
    /// World wide name, when the device has one.
    pub wwn: String,
    /// Spinning (rotational) rather than solid-state.
    pub rotational: bool,
}

/// A physical NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NicInfo {
    /// Kernel name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Carrier seen.
    pub link_up: bool,
    /// Link speed, when known.
    pub speed_mbps: Option<u64>,
}

/// DMI (SMBIOS) system identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmiInfo {
    /// System vendor.
    pub vendor: String,
    /// Product name.
    pub product: String,
    /// Serial number.
    pub serial: String,
    /// System UUID.
    pub uuid: String,
}
