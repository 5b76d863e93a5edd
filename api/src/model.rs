//! The coordinator's vocabulary: the states and kinds its rules compare, as enums. They are
//! stored and shown by their stable snake_case names and parsed at the edge (store rows, API
//! requests), where a name outside the vocabulary is an error that says which word and which
//! vocabulary.

use serde::{Deserialize, Serialize};

/// A name that is not in a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (one of: {known})")]
pub struct UnknownName {
    /// The vocabulary (`plan state`, `node role`, …).
    pub what: &'static str,
    /// The name found.
    pub value: String,
    /// The names it knows.
    pub known: String,
}

/// Declares a vocabulary: an enum with stable names, `as_str`, `ALL`, `Display` and
/// `FromStr` (with [`UnknownName`]), and serde by the same names.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The stable name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        // By hand: the derive cannot read serde names that come through a macro.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!("A ", $what, ".")))
                    .enum_values(Some(Self::ALL.iter().map(|k| k.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        value: s.to_owned(),
                        known: Self::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

vocabulary!(
    /// Where a plan is in its life.
    PlanState, "plan state" {
        /// Stored, not yet journaled by the agent.
        Pending = "pending",
        /// The agent journaled it.
        Accepted = "accepted",
        /// A step started.
        Running = "running",
        /// All steps done.
        Succeeded = "succeeded",
        /// A step failed.
        Failed = "failed",
    }
);

impl PlanState {
    /// Succeeded or failed: nothing more will happen to the plan.
    pub fn is_finished(self) -> bool {
        matches!(self, PlanState::Succeeded | PlanState::Failed)
    }
}

vocabulary!(
    /// What an enrolled node is: an agent of some role, or a bare-metal machine reached
    /// through its BMC.
    NodeRole, "node role" {
        /// An agent on a hypervisor host.
        Hypervisor = "hypervisor",
        /// An agent on a management host that reaches BMCs.
        Management = "management",
        /// An agent inside a deploy ramdisk.
        Ramdisk = "ramdisk",
        /// A bare-metal machine, driven through its BMC by an agent.
        Baremetal = "baremetal",
    }
);

impl NodeRole {
    /// Whether the node runs an agent of its own (a bare-metal node is reached through its
    /// BMC instead).
    pub fn has_agent(self) -> bool {
        self != NodeRole::Baremetal
    }
}

impl From<ferric_proto::msg::Role> for NodeRole {
    fn from(r: ferric_proto::msg::Role) -> Self {
        match r {
            ferric_proto::msg::Role::Hypervisor => NodeRole::Hypervisor,
            ferric_proto::msg::Role::Management => NodeRole::Management,
            ferric_proto::msg::Role::Ramdisk => NodeRole::Ramdisk,
        }
    }
}

vocabulary!(
    /// The state a guest is meant to be in.
    GuestDesired, "guest state" {
        /// Defined and running.
        Running = "running",
        /// Defined, not running.
        Stopped = "stopped",
        /// Being removed with its volume.
        Deleted = "deleted",
    }
);

vocabulary!(
    /// What a guest's host last reported of it.
    GuestObserved, "observed guest state" {
        /// Running.
        Running = "running",
        /// Defined, not running.
        Stopped = "stopped",
        /// The host reports no such guest.
        Missing = "missing",
        /// No telemetry from the host.
        Unknown = "unknown",
    }
);

vocabulary!(
    /// Where a bare-metal node is in its life (the states operators of Ironic know).
    ProvisionState, "provision state" {
        /// Known to Ferric, not yet verified (enrolled by its BMC, or found by network boot).
        Enroll = "enroll",
        /// Its BMC is being checked.
        Verifying = "verifying",
        /// Under Ferric's management, not in use.
        Manageable = "manageable",
        /// Booted into the ramdisk to be inspected.
        Inspecting = "inspecting",
        /// Inspection failed.
        InspectFailed = "inspect-failed",
        /// Its disks are being erased.
        Cleaning = "cleaning",
        /// Cleaning failed.
        CleanFailed = "clean-failed",
        /// Clean and ready for a deploy.
        Available = "available",
        /// An image is being written.
        Deploying = "deploying",
        /// Waiting for its ramdisk to call back.
        WaitCallback = "wait-callback",
        /// The deploy failed.
        DeployFailed = "deploy-failed",
        /// Running its deployed image.
        Active = "active",
        /// Being taken back (then cleaned).
        Undeploying = "undeploying",
        /// Something went wrong that needs an operator.
        Error = "error",
    }
);

vocabulary!(
    /// What a node in a provision state is doing right now.
    Phase, "provision step" {
        /// Its BMC is asked for its power (verification, or confirming power after a deploy).
        ReadPower = "read-power",
        /// The management agent powers it off, sets network boot, powers it on.
        BootRamdisk = "boot-ramdisk",
        /// It network-boots; the coordinator waits for its ramdisk to call back.
        WaitCallback = "wait-callback",
        /// Its ramdisk reads the hardware.
        Inspect = "inspect",
        /// Its ramdisk erases the disks.
        Erase = "erase",
        /// Its ramdisk writes the image, the config drive, sets disk boot and reboots.
        Write = "write",
    }
);

impl Phase {
    /// What the phase is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::ReadPower => "reading power through the BMC",
            Phase::BootRamdisk => "power-cycling into the network boot",
            Phase::WaitCallback => "waiting for the ramdisk to call back",
            Phase::Inspect => "inspecting the hardware",
            Phase::Erase => "erasing the disks",
            Phase::Write => "writing the image",
        }
    }
}

vocabulary!(
    /// What an operator asks of a bare-metal node.
    Verb, "provision verb" {
        /// Take it under management (verify its BMC), or recover it from a failure.
        Manage = "manage",
        /// Read its hardware.
        Inspect = "inspect",
        /// Clean it and make it available.
        Provide = "provide",
        /// Write an image and boot it.
        Deploy = "deploy",
        /// Take its image away (then clean it).
        Undeploy = "undeploy",
        /// Write its image again.
        Rebuild = "rebuild",
        /// Stop what it is doing; it lands in the failed state of what it did.
        Abort = "abort",
    }
);

impl Verb {
    /// The state the verb ends in when it succeeds (`None`: abort, which ends in a failed
    /// state): what `--wait` waits for.
    pub fn ends_in(self) -> Option<ProvisionState> {
        match self {
            Verb::Manage | Verb::Inspect => Some(ProvisionState::Manageable),
            Verb::Provide | Verb::Undeploy => Some(ProvisionState::Available),
            Verb::Deploy | Verb::Rebuild => Some(ProvisionState::Active),
            Verb::Abort => None,
        }
    }
}

vocabulary!(
    /// Which iPXE a bare-metal node's UEFI firmware network-boots.
    EfiLoader, "UEFI loader" {
        /// `snponly.efi`: iPXE on the firmware's own NIC driver (works where the firmware's
        /// PXE does).
        SnpOnly = "snponly",
        /// `ipxe.efi`: iPXE with its own NIC drivers (for firmware whose network driver fails
        /// iPXE).
        Ipxe = "ipxe",
    }
);

vocabulary!(
    /// How a bare-metal node boots its deploy ramdisk.
    BootVia, "ramdisk boot" {
        /// From the network: PXE or UEFI HTTP, Ferric's DHCP and iPXE.
        Network = "network",
        /// From its BMC's virtual media (Redfish): an ISO of the ramdisk the coordinator
        /// makes for each boot, for networks without DHCP or PXE (its address then comes from
        /// the node's network document).
        Media = "media",
    }
);

vocabulary!(
    /// What a bare-metal node's network boot has reached, as the boot services see it.
    BootStage, "boot stage" {
        /// Its PXE ROM or iPXE was answered by Ferric's DHCP.
        Dhcp = "dhcp",
        /// Its iPXE fetched its script.
        Script = "script",
        /// The ramdisk's kernel was sent.
        Kernel = "kernel",
        /// The ramdisk's initramfs was sent.
        Initramfs = "initramfs",
        /// Its ramdisk enrolled with the per-boot token.
        Enrolled = "enrolled",
        /// Its ramdisk's link is up.
        Connected = "connected",
        /// Its ramdisk reported the inspection.
        Inspected = "inspected",
        /// The machine left its ramdisk: rebooted into its deployed image, or its power was
        /// cut or cycled through the BMC (the ramdisk's link is history).
        Rebooted = "rebooted",
    }
);

vocabulary!(
    /// What an API token may do within its scope (a project, or the whole fleet): each role
    /// may do what the ones before it may.
    ApiRole, "API role" {
        /// Read: lists, details, telemetry, metrics.
        Reader = "reader",
        /// Also act: power, provision, guests, plans, images.
        Member = "member",
        /// Also govern: enroll nodes and agents, revoke them, manage tokens, read the audit log.
        Admin = "admin",
    }
);

impl ApiRole {
    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: ApiRole) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(self) -> u8 {
        match self {
            ApiRole::Reader => 0,
            ApiRole::Member => 1,
            ApiRole::Admin => 2,
        }
    }
}

/// Why a node name is not one (a node name is a DNS label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// Empty or longer than 63 characters.
    #[error("must be 1 to 63 characters")]
    Length,
    /// Other characters than lowercase letters, digits and inner hyphens.
    #[error("may hold only lowercase letters, digits and inner hyphens (a DNS label)")]
    Characters,
}

/// Checks a node name (a DNS label).
pub fn check_node_name(name: &str) -> Result<(), NodeNameError> {
    if name.is_empty() || name.len() > 63 {
        return Err(NodeNameError::Length);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(NodeNameError::Characters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_known() {
        for s in PlanState::ALL {
            assert_eq!(s.as_str().parse::<PlanState>(), Ok(*s));
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        let e = "bogus".parse::<NodeRole>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`bogus` is not a node role (one of: hypervisor, management, ramdisk, baremetal)"
        );
        assert_eq!(
            serde_json::from_str::<GuestDesired>("\"stopped\"").unwrap(),
            GuestDesired::Stopped
        );
        assert!(PlanState::Failed.is_finished() && !PlanState::Running.is_finished());
        assert!(!NodeRole::Baremetal.has_agent());
    }

    #[test]
    fn node_names_are_dns_labels() {
        assert_eq!(check_node_name("rack1-n0"), Ok(()));
        assert_eq!(check_node_name(""), Err(NodeNameError::Length));
        assert_eq!(check_node_name(&"a".repeat(64)), Err(NodeNameError::Length));
        for bad in ["Host", "-a", "a-", "a_b", "a.b"] {
            assert_eq!(
                check_node_name(bad),
                Err(NodeNameError::Characters),
                "{bad}"
            );
        }
    }
}
