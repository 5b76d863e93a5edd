//! A bare-metal node's network as its deployed OS configures it: its ports (NICs, by MAC)
//! with what an operator attaches to them — addresses, VLANs, bond membership — and the bonds,
//! routes and DNS. The coordinator writes it into the config drive as NoCloud's
//! `network-config` (version 2) or OpenStack's `network_data.json`, so that cloud-init and
//! Glean both read it.

use serde::{Deserialize, Serialize};

/// `GET`/`PUT /v1/nodes/{name}/network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeNetwork {
    /// The node's ports that carry something (the others stay unconfigured).
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Bonds of ports.
    #[serde(default)]
    pub bonds: Vec<Bond>,
    /// Routes; `to: default` is the default route.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Name servers.
    #[serde(default)]
    pub dns: Dns,
}

/// A port: one of the node's NICs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Its MAC address (as inspection or enrollment knows it).
    pub mac: String,
    /// Static addresses, `ADDRESS/PREFIX` (IPv4 or IPv6), on the untagged port.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// VLANs on the port.
    #[serde(default)]
    pub vlans: Vec<Vlan>,
    /// The bond it belongs to (then its addresses and VLANs are the bond's, not its own).
    #[serde(default)]
    pub bond: Option<String>,
    /// MTU, bytes.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A bond of ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    /// Its name (`bond0`).
    pub name: String,
    /// Its mode: `active-backup`, `802.3ad`, `balance-rr`, `balance-xor`, `broadcast`,
    /// `balance-tlb` or `balance-alb`.
    #[serde(default = "active_backup")]
    pub mode: String,
    /// Static addresses on the bond.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// VLANs on the bond.
    #[serde(default)]
    pub vlans: Vec<Vlan>,
    /// MTU, bytes.
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn active_backup() -> String {
    "active-backup".into()
}

/// A VLAN on a port or bond.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    /// The VLAN id, 1 to 4094.
    pub id: u16,
    /// Static addresses on it.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The destination, `NETWORK/PREFIX` or `default`.
    pub to: String,
    /// The gateway; the interface whose addresses hold it carries the route.
    pub via: String,
}

/// Name servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Server addresses.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

/// Bond modes Linux knows.
pub const BOND_MODES: &[&str] = &[
    "active-backup",
    "802.3ad",
    "balance-rr",
    "balance-xor",
    "broadcast",
    "balance-tlb",
    "balance-alb",
];
