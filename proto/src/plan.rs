//! The plan model: an ordered list of steps for one node.
//!
//! Steps are small and named for what they achieve. `Ensure*` steps reconcile desired state and
//! are idempotent. Every step carries an idempotency key and a timeout.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifier of a plan, assigned by the coordinator's store.
pub type PlanId = u64;

/// A plan for one node, as pushed to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Store-assigned id, unique per coordinator store.
    pub id: PlanId,
    /// Node the plan is for (the agent's enrolled identity).
    pub node: String,
    /// Steps, executed in order; the plan stops at the first failure.
    pub steps: Vec<PlanStep>,
}

/// One step with its idempotency key and deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanStep {
    /// Idempotency key: the same key is never executed to completion twice by one agent.
    pub key: String,
    /// Deadline for the step, in seconds.
    pub timeout_secs: u32,
    /// What the step achieves.
    pub step: Step,
}

/// What a step achieves. The set grows with the drivers; unknown steps are refused at decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Step {
    /// A Linux bridge exists and is up (optionally with a VLAN sub-interface on an uplink).
    EnsureBridge {
        /// Bridge name.
        name: String,
        /// Uplink interface to enslave, if any.
        #[serde(default)]
        uplink: Option<String>,
        /// VLAN id for a sub-interface on the uplink.
        #[serde(default)]
        vlan: Option<u16>,
    },
    /// A bridge is gone.
    DeleteBridge {
        /// Bridge name.
        name: String,
    },
    /// A volume exists in a pool with at least this size.
    EnsureVolume {
        /// Storage pool.
        pool: String,
        /// Volume name.
        name: String,
        /// Size in bytes.
        size_bytes: u64,
        /// On-disk format.
        #[serde(default)]
        format: VolumeFormat,
        /// Image to clone the volume from (written once, when the volume is made; the volume
        /// is then raw).
        #[serde(default)]
        image: Option<VolumeImage>,
    },
    /// A volume is gone.
    DeleteVolume {
        /// Storage pool.
        pool: String,
        /// Volume name.
        name: String,
    },
    /// A guest is defined as specified.
    EnsureGuest(GuestSpec),
    /// A volume is attached to a guest (hot-plugged when it runs).
    AttachVolume {
        /// Guest name.
        guest: String,
        /// Storage pool.
        pool: String,
        /// Volume name.
        volume: String,
        /// Device name inside the guest, `vdb` … `vdz`.
        target: String,
    },
    /// A volume is detached from a guest.
    DetachVolume {
        /// Guest name.
        guest: String,
        /// Storage pool.
        pool: String,
        /// Volume name.
        volume: String,
    },
    /// A guest is in the given power state.
    GuestPower {
        /// Guest name.
        name: String,
        /// Desired action.
        action: GuestPowerAction,
    },
    /// A guest is gone.
    DeleteGuest {
        /// Guest name.
        name: String,
    },
    /// Power control through a BMC the agent can reach.
    BmcPower {
        /// BMC reference (as enrolled on the coordinator).
        bmc: String,
        /// Desired action.
        action: PowerAction,
    },
    /// Next boot device through a BMC.
    BmcBootDevice {
        /// BMC reference.
        bmc: String,
        /// Device.
        device: BootDevice,
        /// Keep for all future boots rather than the next one.
        #[serde(default)]
        persistent: bool,
        /// UEFI rather than legacy boot.
        #[serde(default)]
        uefi: bool,
    },
    /// Reads every sensor of a BMC (SDR walk and readings); the readings are the step's output.
    BmcSensors {
        /// BMC reference.
        bmc: String,
    },
    /// Reads a BMC's System Event Log (the entries are the step's output), and clears it
    /// afterwards when asked. Protocol version 3.
    BmcSel {
        /// BMC reference.
        bmc: String,
        /// Clear the log once it has been read.
        #[serde(default)]
        clear: bool,
    },
    /// Reads what a BMC knows of its machine without booting it (processors, memory, drives,
    /// NICs with their MACs, the system's identity); the inventory is the step's output.
    /// Redfish BMCs only. Protocol 9.
    BmcInventory {
        /// BMC reference.
        bmc: String,
    },
    /// Inserts an ISO image into a BMC's virtual CD (the BMC fetches it from `image`, an
    /// http(s) URL), or ejects the CD when `image` is `None`. Redfish BMCs only. Protocol 9.
    BmcMedia {
        /// BMC reference.
        bmc: String,
        /// The image's URL; `None`: eject.
        #[serde(default)]
        image: Option<String>,
    },
    /// Reads the machine's hardware (CPUs, memory, disks, NICs, DMI, the BMC's LAN address
    /// in-band); the inventory is the step's output. Run by a deploy ramdisk. Protocol 4.
    Inspect {},
    /// Erases every disk of the machine, disks in parallel. Run by a deploy ramdisk.
    /// Protocol 5 (as are the disk and reboot steps below).
    EraseDisks {
        /// How thoroughly.
        #[serde(default)]
        mode: EraseMode,
    },
    /// Streams an image onto the root disk (chosen by `root`), checking its digest in flight.
    WriteImage {
        /// The image: its URL (the coordinator's store), digest and declared format.
        image: VolumeImage,
        /// Which disk is the root disk.
        #[serde(default)]
        root: RootHint,
    },
    /// Adds a config drive to the root disk: a small FAT partition labelled `cidata`
    /// (cloud-init NoCloud) or `config-2` (OpenStack), holding `files` — on a GPT disk in the
    /// gap before the first partition when it fits (the root file system can then grow to the
    /// disk's end), else at the disk's end; on an MBR disk in its last free space.
    WriteConfigDrive {
        /// Which disk is the root disk.
        #[serde(default)]
        root: RootHint,
        /// Filesystem label: `cidata` or `config-2`.
        label: String,
        /// The files, by path relative to the drive's root.
        files: Vec<ConfigFile>,
    },
    /// Next boot device, set in-band through the machine's own BMC device.
    SetBootDevice {
        /// Device.
        device: BootDevice,
        /// Keep for all future boots rather than the next one.
        #[serde(default)]
        persistent: bool,
    },
    /// Reboots the machine (the step is reported done just before).
    Reboot {},
    /// On a machine booted by UEFI: one boot entry (`Ferric deployed OS`) for the loader on
    /// the root disk's EFI system partition, made or updated, and first in the boot order;
    /// entries an earlier deploy left for that disk are reused, not piled up. Protocol 8.
    UefiBootEntry {
        /// Which disk is the root disk.
        #[serde(default)]
        root: RootHint,
    },
}

/// How [`Step::EraseDisks`] erases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EraseMode {
    /// Partition tables and filesystem signatures at both ends of each disk.
    #[default]
    Metadata,
    /// Metadata, then discard every block (BLKDISCARD) where the disk supports it, zeroing
    /// where it does not.
    Discard,
    /// Metadata, then zeros over the whole disk.
    Zero,
}

impl EraseMode {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EraseMode::Metadata => "metadata",
            EraseMode::Discard => "discard",
            EraseMode::Zero => "zero",
        }
    }
}

impl std::str::FromStr for EraseMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [EraseMode::Metadata, EraseMode::Discard, EraseMode::Zero]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown erase mode `{s}` (metadata, discard, zero)"))
    }
}

/// Which disk is the root disk: the smallest disk that matches every given field (the
/// smallest disk of all when none is given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RootHint {
    /// Kernel name (`sda`, `vda`, `nvme0n1`).
    #[serde(default)]
    pub name: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// World wide name.
    #[serde(default)]
    pub wwn: Option<String>,
    /// Smallest acceptable size.
    #[serde(default)]
    pub min_size_bytes: Option<u64>,
}

/// A file of a config drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigFile {
    /// Path inside the drive, `/`-separated, relative (`meta-data`, `openstack/latest/…`).
    pub path: String,
    /// Content.
    pub content: String,
}

/// Largest config drive content accepted (the sum of its files): within a plan's budget.
pub const MAX_CONFIG_DRIVE_BYTES: usize = 512 << 10;

/// The most a plan's steps may take encoded (postcard): a plan travels in one frame of the
/// link, whose limit is [`crate::frame::DEFAULT_MAX_FRAME`], with room for the rest of the
/// message. A larger plan could never be delivered; it is refused when submitted.
pub const MAX_PLAN_BYTES: usize = 768 << 10;

impl Step {
    /// The objects the step changes (`Write`) or only needs (`Read`): `guest:NAME`,
    /// `volume:POOL/NAME`, `bridge:NAME`, `bmc:NAME`. A plan waits for older unfinished plans
    /// that change what it touches or that need what it changes; plans that only share what
    /// they read (ten guests on one bridge) run side by side.
    pub fn objects(&self) -> Vec<(String, Access)> {
        use Access::{Read, Write};
        let vol = |pool: &str, name: &str| format!("volume:{pool}/{name}");
        match self {
            Step::EnsureBridge { name, .. } | Step::DeleteBridge { name } => {
                vec![(format!("bridge:{name}"), Write)]
            }
            Step::EnsureVolume { pool, name, .. } | Step::DeleteVolume { pool, name } => {
                vec![(vol(pool, name), Write)]
            }
            Step::EnsureGuest(g) => std::iter::once((format!("guest:{}", g.name), Write))
                .chain(g.volumes.iter().map(|v| (vol(&v.pool, &v.name), Read)))
                .chain(
                    g.nics
                        .iter()
                        .map(|n| (format!("bridge:{}", n.bridge), Read)),
                )
                .collect(),
            Step::GuestPower { name, .. } | Step::DeleteGuest { name } => {
                vec![(format!("guest:{name}"), Write)]
            }
            Step::AttachVolume {
                guest,
                pool,
                volume,
                ..
            }
            | Step::DetachVolume {
                guest,
                pool,
                volume,
            } => {
                vec![(format!("guest:{guest}"), Write), (vol(pool, volume), Read)]
            }
            Step::BmcPower {
                bmc,
                action: PowerAction::Status,
            }
            | Step::BmcSensors { bmc }
            | Step::BmcInventory { bmc }
            | Step::BmcSel { bmc, clear: false } => vec![(format!("bmc:{bmc}"), Read)],
            Step::BmcPower { bmc, .. }
            | Step::BmcBootDevice { bmc, .. }
            | Step::BmcMedia { bmc, .. }
            | Step::BmcSel { bmc, clear: true } => {
                vec![(format!("bmc:{bmc}"), Write)]
            }
            Step::Inspect {} => vec![("machine".to_owned(), Read)],
            Step::EraseDisks { .. }
            | Step::WriteImage { .. }
            | Step::WriteConfigDrive { .. }
            | Step::SetBootDevice { .. }
            | Step::Reboot {}
            | Step::UefiBootEntry { .. } => vec![("machine".to_owned(), Write)],
        }
    }

    /// The oldest protocol version whose agents can decode this step: steps (and actions)
    /// added later are not pushed to older agents, which would take them for a malformed
    /// frame.
    pub fn min_protocol(&self) -> u16 {
        match self {
            Step::BmcInventory { .. }
            | Step::BmcMedia { .. }
            | Step::BmcBootDevice {
                device: BootDevice::UefiHttp,
                ..
            }
            | Step::SetBootDevice {
                device: BootDevice::UefiHttp,
                ..
            } => 9,
            Step::UefiBootEntry { .. } => 8,
            Step::EraseDisks { .. }
            | Step::WriteImage { .. }
            | Step::WriteConfigDrive { .. }
            | Step::SetBootDevice { .. }
            | Step::Reboot {} => 5,
            Step::Inspect { .. } => 4,
            Step::BmcSel { .. } => 3,
            Step::BmcSensors { .. }
            | Step::BmcPower {
                action: PowerAction::Status,
                ..
            } => 2,
            _ => 1,
        }
    }

    /// Short stable name of the step kind, for logs, events and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::EnsureBridge { .. } => "ensure_bridge",
            Step::DeleteBridge { .. } => "delete_bridge",
            Step::AttachVolume { .. } => "attach_volume",
            Step::DetachVolume { .. } => "detach_volume",
            Step::EnsureVolume { .. } => "ensure_volume",
            Step::DeleteVolume { .. } => "delete_volume",
            Step::EnsureGuest { .. } => "ensure_guest",
            Step::GuestPower { .. } => "guest_power",
            Step::DeleteGuest { .. } => "delete_guest",
            Step::BmcPower { .. } => "bmc_power",
            Step::BmcBootDevice { .. } => "bmc_boot_device",
            Step::BmcSensors { .. } => "bmc_sensors",
            Step::BmcSel { .. } => "bmc_sel",
            Step::BmcInventory { .. } => "bmc_inventory",
            Step::BmcMedia { .. } => "bmc_media",
            Step::Inspect { .. } => "inspect",
            Step::EraseDisks { .. } => "erase_disks",
            Step::WriteImage { .. } => "write_image",
            Step::WriteConfigDrive { .. } => "write_config_drive",
            Step::SetBootDevice { .. } => "set_boot_device",
            Step::Reboot {} => "reboot",
            Step::UefiBootEntry { .. } => "uefi_boot_entry",
        }
    }
}

/// An image a volume is cloned from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeImage {
    /// `http://` or `https://` URL (the coordinator's image store serves
    /// `/images/sha256/<hex>`).
    pub url: String,
    /// `sha256:HEX` or `sha512:HEX` of the image file, checked before the volume is used.
    pub checksum: String,
    /// Declared format (`raw`, `qcow2`); content that differs is refused.
    #[serde(default)]
    pub format: Option<String>,
}

/// Format of a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VolumeFormat {
    /// QEMU copy-on-write, sparse.
    #[default]
    Qcow2,
    /// Raw bytes.
    Raw,
}

impl VolumeFormat {
    /// Name as libvirt and qemu-img spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Qcow2 => "qcow2",
            VolumeFormat::Raw => "raw",
        }
    }
}

/// A guest's desired definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestSpec {
    /// Guest name.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Volumes, attached as `vda`, `vdb`, … in this order.
    #[serde(default)]
    pub volumes: Vec<VolumeRef>,
    /// NICs, each on a bridge.
    #[serde(default)]
    pub nics: Vec<GuestNic>,
    /// What the guest boots.
    #[serde(default)]
    pub boot: GuestBoot,
    /// File the serial console is written to (absolute path on the host).
    #[serde(default)]
    pub serial_log: Option<String>,
}

/// A volume in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeRef {
    /// Storage pool.
    pub pool: String,
    /// Volume name.
    pub name: String,
}

/// A guest NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestNic {
    /// Bridge it plugs into.
    pub bridge: String,
    /// MAC address (`52:54:00:…`); derived from the guest name and index when absent.
    #[serde(default)]
    pub mac: Option<String>,
}

/// What a guest boots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GuestBoot {
    /// Its first volume.
    #[default]
    Disk,
    /// A kernel and initrd on the host, with a command line (direct kernel boot).
    Kernel {
        /// Kernel image path.
        kernel: String,
        /// Initrd path.
        initrd: String,
        /// Kernel command line.
        #[serde(default)]
        cmdline: String,
    },
}

/// How a step uses an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Needs it to exist and stay.
    Read,
    /// Creates, changes or removes it.
    Write,
}

/// Guest power actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GuestPowerAction {
    /// Start the guest.
    Start,
    /// ACPI shutdown, then destroy after the step's timeout.
    Shutdown,
    /// Reboot.
    Reboot,
    /// Hard stop.
    Destroy,
}

/// BMC power actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PowerAction {
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Off then on.
    Cycle,
    /// Hard reset.
    Reset,
    /// ACPI soft power off.
    Soft,
    /// Change nothing; read and report the power state.
    Status,
}

impl PowerAction {
    /// Every action.
    pub const ALL: &[PowerAction] = &[
        PowerAction::On,
        PowerAction::Off,
        PowerAction::Cycle,
        PowerAction::Reset,
        PowerAction::Soft,
        PowerAction::Status,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
            PowerAction::Soft => "soft",
            PowerAction::Status => "status",
        }
    }

    /// The power state the action leaves (`Some(true)`: on), when it decides one.
    pub fn leaves_on(self) -> Option<bool> {
        match self {
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => Some(true),
            PowerAction::Off | PowerAction::Soft => Some(false),
            PowerAction::Status => None,
        }
    }
}

/// Boot devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BootDevice {
    /// Network boot.
    Pxe,
    /// Local disk.
    Disk,
    /// Firmware setup.
    Bios,
    /// Optical media (a Redfish BMC's virtual media among them).
    Cdrom,
    /// UEFI HTTP boot (Redfish only; IPMI has no code for it).
    UefiHttp,
}

impl BootDevice {
    /// Every device.
    pub const ALL: &[BootDevice] = &[
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Bios,
        BootDevice::Cdrom,
        BootDevice::UefiHttp,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Bios => "bios",
            BootDevice::Cdrom => "cdrom",
            BootDevice::UefiHttp => "uefi_http",
        }
    }
}

/// Stable kind of a step failure, so that the coordinator can branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorKind {
    /// The step's specification is invalid for this node (names the field in the message).
    InvalidSpec,
    /// Something the step refers to does not exist.
    NotFound,
    /// The desired state conflicts with existing state.
    Conflict,
    /// The step did not finish before its deadline.
    Timeout,
    /// A device or service the step needs did not answer.
    Unreachable,
    /// Credentials were refused.
    AuthFailed,
    /// This node or driver cannot do the step.
    Unsupported,
    /// An I/O error on the node.
    Io,
    /// The agent stopped while the step ran and could not resume it.
    Interrupted,
    /// A bug or an unexpected state.
    Internal,
    /// The credentials were accepted but do not allow the operation (protocol version 2;
    /// new kinds go last so that older peers decode the ones they know).
    InsufficientPrivilege,
    /// The plan was cancelled (protocol version 7): by the agent on the coordinator's word,
    /// or by the coordinator before the agent had it.
    Cancelled,
}

impl ErrorKind {
    /// Every kind, for parsing and listing.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidSpec,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Timeout,
        ErrorKind::Unreachable,
        ErrorKind::AuthFailed,
        ErrorKind::InsufficientPrivilege,
        ErrorKind::Unsupported,
        ErrorKind::Io,
        ErrorKind::Interrupted,
        ErrorKind::Internal,
        ErrorKind::Cancelled,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidSpec => "invalid_spec",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::InsufficientPrivilege => "insufficient_privilege",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "io",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Internal => "internal",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

/// A name that is no [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind `{0}`")]
pub struct UnknownErrorKind(pub String);

impl std::str::FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, UnknownErrorKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepEventKind {
    /// The agent started the step (again, after a restart, if the step did not finish).
    Started,
    /// Progress of a long step.
    Progress {
        /// Units done.
        done: u64,
        /// Units in all, when known.
        total: Option<u64>,
    },
    /// The step achieved its goal; `changed` is false when nothing needed doing.
    Done {
        /// Whether the step changed anything.
        changed: bool,
    },
    /// The step failed; the plan stops here and can be retried.
    Failed {
        /// Stable kind.
        kind: ErrorKind,
        /// Human message naming the problem.
        message: String,
    },
    /// What the step found (power state, sensor readings), sent before `Done`
    /// (protocol version 2; new kinds go last so that older peers decode the ones they know).
    Output(StepOutput),
}

/// What a step found, for the steps that read something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepOutput {
    /// Power state read from a BMC after the step.
    Power {
        /// System power is on.
        on: bool,
    },
    /// Sensor readings from a BMC.
    Sensors(Vec<crate::hardware::SensorReading>),
    /// A BMC's System Event Log, oldest entry first (protocol version 3).
    Sel(Vec<SelEntry>),
    /// What an `inspect` step of a protocol 4 to 7 agent found.
    Inspection(Box<crate::hardware::InspectionV4>),
    /// What an `inspect` step found, with the firmware's boot mode (protocol version 8).
    Inspected(Box<crate::hardware::Inspection>),
    /// What a BMC knows of its machine (protocol version 9).
    BmcInventory(Box<crate::hardware::Inventory>),
    /// A BMC's virtual CD after the step: the inserted image's URL (protocol version 9).
    Media {
        /// The image inserted; `None`: empty.
        image: Option<String>,
    },
}

impl StepOutput {
    /// An inspection's findings, of either protocol.
    pub fn inspection(&self) -> Option<crate::hardware::Inspection> {
        match self {
            StepOutput::Inspection(i) => Some((**i).clone().into()),
            StepOutput::Inspected(i) => Some((**i).clone()),
            _ => None,
        }
    }
}

/// One System Event Log entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SelEntry {
    /// Record ID.
    pub id: u16,
    /// When the BMC logged it, seconds since the Unix epoch; `None` for records without a
    /// time stamp and for BMC-relative times (before the BMC's clock was set).
    pub at_s: Option<u32>,
    /// Sensor type (`Temperature`), or `OEM record 0xNN`.
    pub sensor: String,
    /// Sensor number (0 for OEM records).
    pub sensor_number: u8,
    /// What happened (`Upper Critical - going high`); `event type 0xNN offset N` where the
    /// code has no description.
    pub event: String,
    /// Asserted (false: deasserted).
    pub asserted: bool,
    /// The 16 bytes as stored, hex.
    pub raw: String,
}

/// One event of a plan, numbered by the agent. `(plan, seq)` is unique: the coordinator stores
/// each exactly once however often it is re-sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Plan the event belongs to.
    pub plan: PlanId,
    /// Sequence number within the plan, from 0, without gaps.
    pub seq: u32,
    /// Index of the step in the plan.
    pub step: u32,
    /// Agent's wall clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: StepEventKind,
}

impl StepEvent {
    /// Whether this event ends the plan (the last step done, or any failure).
    pub fn ends_plan(&self, step_count: usize) -> bool {
        match self.kind {
            StepEventKind::Failed { .. } => true,
            StepEventKind::Done { .. } => self.step as usize + 1 >= step_count,
            _ => false,
        }
    }
}

/// Errors found when validating a plan before it is stored or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A plan must have at least one step.
    #[error("plan has no steps")]
    Empty,
    /// Too many steps for one plan.
    #[error("plan has {0} steps; at most {max} are allowed", max = MAX_STEPS)]
    TooManySteps(usize),
    /// A field is out of range or empty.
    #[error("step {index} ({kind}): field `{field}` {problem}")]
    Field {
        /// Step index.
        index: usize,
        /// Step kind.
        kind: &'static str,
        /// Field name.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The plan encodes to more than a plan may take on the link.
    #[error("plan encodes to {bytes} bytes; the limit is {max} bytes (one frame of the agent link)", max = MAX_PLAN_BYTES)]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// Two steps share an idempotency key.
    #[error("steps {first} and {second} share the idempotency key `{key}`")]
    DuplicateKey {
        /// First index.
        first: usize,
        /// Second index.
        second: usize,
        /// The key.
        key: String,
    },
}

/// Most steps one plan may hold.
pub const MAX_STEPS: usize = 256;

impl Plan {
    /// The oldest protocol version whose agents can run every step (see
    /// [`Step::min_protocol`]), with the first step that needs it.
    pub fn min_protocol(&self) -> (u16, Option<usize>) {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step.min_protocol(), Some(i)))
            .fold((1, None), |best, x| if x.0 > best.0 { x } else { best })
    }

    /// Checks the plan's shape: steps present, names non-empty, sizes sane, keys unique.
    pub fn validate(&self) -> Result<(), PlanError> {
        validate_steps(&self.steps)
    }
}

/// Checks steps as a plan will hold them (see [`Plan::validate`]), before any plan exists.
pub fn validate_steps(steps: &[PlanStep]) -> Result<(), PlanError> {
    {
        if steps.is_empty() {
            return Err(PlanError::Empty);
        }
        if steps.len() > MAX_STEPS {
            return Err(PlanError::TooManySteps(steps.len()));
        }
        let mut seen = std::collections::HashMap::new();
        for (index, ps) in steps.iter().enumerate() {
            if let Some(first) = seen.insert(ps.key.as_str(), index) {
                return Err(PlanError::DuplicateKey {
                    first,
                    second: index,
                    key: ps.key.clone(),
                });
            }
            let kind = ps.step.kind();
            let field = |field, problem| PlanError::Field {
                index,
                kind,
                field,
                problem,
            };
            if ps.key.is_empty() {
                return Err(field("key", "is empty"));
            }
            if ps.timeout_secs == 0 {
                return Err(field("timeout_secs", "must be at least 1"));
            }
            match &ps.step {
                Step::EnsureBridge { name, uplink, .. } => {
                    check_ifname(name).map_err(|p| field("name", p))?;
                    if let Some(u) = uplink {
                        check_ifname(u).map_err(|p| field("uplink", p))?;
                    }
                }
                Step::DeleteBridge { name } => check_ifname(name).map_err(|p| field("name", p))?,
                Step::AttachVolume {
                    guest,
                    pool,
                    volume,
                    target,
                } => {
                    check_name(guest).map_err(|p| field("guest", p))?;
                    check_name(pool).map_err(|p| field("pool", p))?;
                    check_name(volume).map_err(|p| field("volume", p))?;
                    let b = target.as_bytes();
                    if !(b.len() == 3 && target.starts_with("vd") && (b'b'..=b'z').contains(&b[2]))
                    {
                        return Err(field(
                            "target",
                            "must be a virtio disk name from vdb to vdz",
                        ));
                    }
                }
                Step::DetachVolume {
                    guest,
                    pool,
                    volume,
                } => {
                    check_name(guest).map_err(|p| field("guest", p))?;
                    check_name(pool).map_err(|p| field("pool", p))?;
                    check_name(volume).map_err(|p| field("volume", p))?;
                }
                Step::EnsureVolume {
                    pool,
                    name,
                    size_bytes,
                    format,
                    image,
                } => {
                    check_name(pool).map_err(|p| field("pool", p))?;
                    check_name(name).map_err(|p| field("name", p))?;
                    if *size_bytes == 0 {
                        return Err(field("size_bytes", "must be greater than 0"));
                    }
                    if let Some(i) = image {
                        if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
                            return Err(field("image.url", "must be an http:// or https:// URL"));
                        }
                        if !check_checksum(&i.checksum) {
                            return Err(field(
                                "image.checksum",
                                "must be sha256:HEX (64 digits) or sha512:HEX (128 digits)",
                            ));
                        }
                        if *format != VolumeFormat::Raw {
                            return Err(field(
                                "format",
                                "must be raw for a volume cloned from an image",
                            ));
                        }
                    }
                }
                Step::DeleteVolume { pool, name } => {
                    check_name(pool).map_err(|p| field("pool", p))?;
                    check_name(name).map_err(|p| field("name", p))?;
                }
                Step::EnsureGuest(g) => {
                    check_name(&g.name).map_err(|p| field("name", p))?;
                    if g.vcpus == 0 {
                        return Err(field("vcpus", "must be at least 1"));
                    }
                    if g.memory_mib == 0 {
                        return Err(field("memory_mib", "must be at least 1"));
                    }
                    if g.volumes.len() > 25 {
                        return Err(field("volumes", "may hold at most 25 volumes (vda to vdy)"));
                    }
                    for v in &g.volumes {
                        check_name(&v.pool).map_err(|p| field("volumes.pool", p))?;
                        check_name(&v.name).map_err(|p| field("volumes.name", p))?;
                    }
                    for n in &g.nics {
                        check_ifname(&n.bridge).map_err(|p| field("nics.bridge", p))?;
                        if let Some(mac) = &n.mac {
                            check_mac(mac).map_err(|p| field("nics.mac", p))?;
                        }
                    }
                    if let GuestBoot::Kernel { kernel, initrd, .. } = &g.boot {
                        check_abs(kernel).map_err(|p| field("boot.kernel", p))?;
                        check_abs(initrd).map_err(|p| field("boot.initrd", p))?;
                    } else if g.volumes.is_empty() {
                        return Err(field("volumes", "is empty but the guest boots from disk"));
                    }
                    if let Some(log) = &g.serial_log {
                        check_abs(log).map_err(|p| field("serial_log", p))?;
                    }
                }
                Step::GuestPower { name, .. } | Step::DeleteGuest { name } => {
                    check_name(name).map_err(|p| field("name", p))?
                }
                Step::BmcPower { bmc, .. }
                | Step::BmcBootDevice { bmc, .. }
                | Step::BmcSensors { bmc }
                | Step::BmcInventory { bmc }
                | Step::BmcSel { bmc, .. } => check_name(bmc).map_err(|p| field("bmc", p))?,
                Step::BmcMedia { bmc, image } => {
                    check_name(bmc).map_err(|p| field("bmc", p))?;
                    if let Some(url) = image
                        && !(url.starts_with("http://") || url.starts_with("https://"))
                    {
                        return Err(field("image", "must be an http:// or https:// URL"));
                    }
                }
                Step::Inspect {} | Step::EraseDisks { .. } | Step::Reboot {} => {}
                Step::SetBootDevice { .. } => {}
                Step::UefiBootEntry { root } => check_root(root).map_err(|(f, p)| field(f, p))?,
                Step::WriteImage { image, root } => {
                    check_image(image).map_err(|(f, p)| field(f, p))?;
                    check_root(root).map_err(|(f, p)| field(f, p))?;
                }
                Step::WriteConfigDrive { root, label, files } => {
                    check_root(root).map_err(|(f, p)| field(f, p))?;
                    if label != "cidata" && label != "config-2" {
                        return Err(field("label", "is neither `cidata` nor `config-2`"));
                    }
                    if files.is_empty() {
                        return Err(field("files", "is empty"));
                    }
                    let total: usize = files.iter().map(|f| f.content.len()).sum();
                    if total > MAX_CONFIG_DRIVE_BYTES {
                        return Err(field("files", "hold more than 512 KiB"));
                    }
                    for f in files {
                        check_drive_path(&f.path).map_err(|p| field("files.path", p))?;
                    }
                }
            }
        }
        let bytes = postcard::to_allocvec(steps).map_or(usize::MAX, |v| v.len());
        if bytes > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge { bytes });
        }
        Ok(())
    }
}

fn check_image(i: &VolumeImage) -> Result<(), (&'static str, &'static str)> {
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        return Err(("image.url", "is not an http:// or https:// URL"));
    }
    if !check_checksum(&i.checksum) {
        return Err(("image.checksum", "is not sha256:HEX or sha512:HEX"));
    }
    Ok(())
}

fn check_root(r: &RootHint) -> Result<(), (&'static str, &'static str)> {
    if let Some(n) = &r.name
        && (n.is_empty() || n.contains('/') || n.len() > 32)
    {
        return Err(("root.name", "is not a disk's kernel name like sda or vda"));
    }
    Ok(())
}

/// A config drive path: relative, `/`-separated, no `..`, no empty parts, FAT-safe bytes.
fn check_drive_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() || p.len() > 200 {
        return Err("is empty or longer than 200 bytes");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("has an empty, `.` or `..` part");
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return Err("may hold only ASCII letters, digits and - _ . /");
    }
    Ok(())
}

fn check_checksum(c: &str) -> bool {
    let Some((algo, hex)) = c.split_once(':') else {
        return false;
    };
    let want = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == want && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 128 {
        return Err("is longer than 128 bytes");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
    {
        return Err("may hold only ASCII letters, digits and - _ . : @");
    }
    Ok(())
}

fn check_mac(s: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err("is not a MAC address like 52:54:00:12:34:56");
    }
    let first = u8::from_str_radix(parts[0], 16).map_err(|_| "is not a MAC address")?;
    if first & 1 == 1 {
        return Err("is a multicast address");
    }
    Ok(())
}

fn check_abs(s: &str) -> Result<(), &'static str> {
    if !s.starts_with('/') {
        return Err("must be an absolute path");
    }
    if s.split('/').any(|c| c == "..") {
        return Err("must not contain `..`");
    }
    Ok(())
}

fn check_ifname(s: &str) -> Result<(), &'static str> {
    check_name(s)?;
    // Linux IFNAMSIZ is 16 including the terminating NUL.
    if s.len() > 15 {
        return Err("is longer than 15 bytes (Linux interface name limit)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, step: Step) -> PlanStep {
        PlanStep {
            key: key.into(),
            timeout_secs: 10,
            step,
        }
    }

    #[test]
    fn validate_names_the_field() {
        let plan = Plan {
            id: 1,
            node: "n1".into(),
            steps: vec![step(
                "a",
                Step::EnsureBridge {
                    name: "a-very-long-bridge-name".into(),
                    uplink: None,
                    vlan: None,
                },
            )],
        };
        let err = plan.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "step 0 (ensure_bridge): field `name` is longer than 15 bytes (Linux interface name limit)"
        );
    }

    #[test]
    fn validate_refuses_duplicate_keys_and_empty_plans() {
        let g = Step::DeleteGuest { name: "g".into() };
        let plan = Plan {
            id: 1,
            node: "n".into(),
            steps: vec![step("k", g.clone()), step("k", g)],
        };
        assert!(matches!(
            plan.validate(),
            Err(PlanError::DuplicateKey {
                first: 0,
                second: 1,
                ..
            })
        ));
        let empty = Plan {
            id: 1,
            node: "n".into(),
            steps: vec![],
        };
        assert_eq!(empty.validate(), Err(PlanError::Empty));
    }

    #[test]
    fn error_kinds_roundtrip_through_their_names() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>(), Ok(k));
        }
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn ends_plan_on_last_done_or_any_failure() {
        let ev = |step, kind| StepEvent {
            plan: 1,
            seq: 0,
            step,
            at_ms: 0,
            kind,
        };
        assert!(!ev(0, StepEventKind::Done { changed: true }).ends_plan(2));
        assert!(ev(1, StepEventKind::Done { changed: true }).ends_plan(2));
        assert!(
            ev(
                0,
                StepEventKind::Failed {
                    kind: ErrorKind::Io,
                    message: "x".into()
                }
            )
            .ends_plan(2)
        );
        assert!(!ev(1, StepEventKind::Started).ends_plan(2));
    }
}
