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

/// How a machine's firmware boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BootMode {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Uefi,
}

impl BootMode {
    /// `bios` or `uefi`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
        }
    }
}

impl std::fmt::Display for BootMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BootMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bios" => Ok(BootMode::Bios),
            "uefi" => Ok(BootMode::Uefi),
            other => Err(format!("`{other}` is not a boot mode (bios, uefi)")),
        }
    }
}

/// What an `inspect` step reports: the hardware, the firmware it runs on, and the BMC's LAN
/// settings read in-band.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inspection {
    /// The hardware.
    pub inventory: Inventory,
    /// The BMC's LAN address and MAC, when the machine has a BMC the ramdisk could read.
    pub bmc: Option<BmcLan>,
    /// Why the BMC could not be read, when it could not.
    pub bmc_error: Option<String>,
    /// How the firmware booted the ramdisk (UEFI when the kernel was started by UEFI);
    /// `None` from ramdisks older than protocol 8.
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
}

/// What an `inspect` step of protocol 4 to 7 reports ([`Inspection`] without the boot mode),
/// kept so that those ramdisks' reports still decode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InspectionV4 {
    /// The hardware.
    pub inventory: Inventory,
    /// The BMC's LAN address and MAC.
    pub bmc: Option<BmcLan>,
    /// Why the BMC could not be read.
    pub bmc_error: Option<String>,
}

impl From<InspectionV4> for Inspection {
    fn from(i: InspectionV4) -> Self {
        Inspection {
            inventory: i.inventory,
            bmc: i.bmc,
            bmc_error: i.bmc_error,
            boot_mode: None,
        }
    }
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
