//! The config drive a deploy writes when it asks for one by what it should say
//! ([`InstanceConfig`]) rather than by its files: the instance's id and host name, SSH keys,
//! user data, and the node's network ([`NodeNetwork`]) — as cloud-init's NoCloud layout
//! (`meta-data`, `user-data`, `network-config` version 2; label `cidata`) or OpenStack's
//! (`openstack/latest/meta_data.json`, `user_data`, `network_data.json`; label `config-2`,
//! which cloud-init and Glean read). Every document is JSON, which YAML readers take as it is.
//!
//! Pure: the lifecycle stores the drive it builds with the deploy, so a rebuild writes the
//! same one.

use ferric_api::lifecycle::{ConfigDrive, ConfigDriveFormat, InstanceConfig, USER_DATA_MAX};
use ferric_api::network::{BOND_MODES, NodeNetwork, Vlan};
use ferric_proto::plan::ConfigFile;
use serde_json::{Value, json};
use std::net::IpAddr;

/// Most ports, bonds, routes and DNS entries a network may name.
const MAX_ENTRIES: usize = 64;

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// `ADDRESS/PREFIX`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` in `{s}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{p}` in `{s}` is not a prefix length (0 to {max})"))?;
        Ok(Cidr { addr, prefix })
    }

    fn bits(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        }
    }

    /// Whether `ip` is in this address's network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        // Both families sit in the top bits: an IPv4 address in the top 32.
        let prefix = u32::from(self.prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        Cidr::bits(self.addr) & mask == Cidr::bits(ip) & mask
    }

    /// The netmask, dotted (IPv4) or colon-separated (IPv6).
    pub fn netmask(&self) -> String {
        match self.addr {
            IpAddr::V4(_) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                std::net::Ipv4Addr::from(m).to_string()
            }
            IpAddr::V6(_) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                std::net::Ipv6Addr::from(m).to_string()
            }
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, from either separator and case; `None` when it is none.
pub fn canonical_mac(m: &str) -> Option<String> {
    let parts: Vec<&str> = m.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_lowercase())
}

fn valid_bond_name(n: &str) -> bool {
    (1..=10).contains(&n.len())
        && n.as_bytes()[0].is_ascii_lowercase()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

/// Checks a node's network against its known MACs (enrolled, or seen by inspection), and
/// returns it with its MACs in canonical spelling. The message names what is wrong.
pub fn check_network(net: &NodeNetwork, known_macs: &[String]) -> Result<NodeNetwork, String> {
    let mut net = net.clone();
    for (what, n) in [
        ("ports", net.ports.len()),
        ("bonds", net.bonds.len()),
        ("routes", net.routes.len()),
        ("DNS servers", net.dns.servers.len()),
        ("DNS search domains", net.dns.search.len()),
    ] {
        if n > MAX_ENTRIES {
            return Err(format!("{n} {what}: at most {MAX_ENTRIES}"));
        }
    }
    let known: Vec<String> = known_macs.iter().filter_map(|m| canonical_mac(m)).collect();
    let mut addressed: Vec<Cidr> = vec![];
    let check_addrs = |where_: &str, addrs: &[String], out: &mut Vec<Cidr>| {
        for a in addrs {
            out.push(Cidr::parse(a).map_err(|e| format!("{where_}: {e}"))?);
        }
        Ok::<(), String>(())
    };
    let check_vlans = |where_: &str, vlans: &[Vlan], out: &mut Vec<Cidr>| {
        let mut ids = vec![];
        for v in vlans {
            if !(1..=4094).contains(&v.id) {
                return Err(format!("{where_}: VLAN {} is not 1 to 4094", v.id));
            }
            if ids.contains(&v.id) {
                return Err(format!("{where_}: VLAN {} twice", v.id));
            }
            ids.push(v.id);
            check_addrs(&format!("{where_}, VLAN {}", v.id), &v.addresses, out)?;
        }
        Ok::<(), String>(())
    };
    let check_mtu = |where_: &str, mtu: Option<u32>| match mtu {
        Some(m) if !(576..=9216).contains(&m) => {
            Err(format!("{where_}: MTU {m} is not 576 to 9216"))
        }
        _ => Ok(()),
    };
    let mut bond_names = vec![];
    for b in &net.bonds {
        if !valid_bond_name(&b.name) {
            return Err(format!(
                "bond name `{}` must be 1 to 10 of a-z 0-9 _ -, starting with a letter",
                b.name
            ));
        }
        if bond_names.contains(&b.name) {
            return Err(format!("bond `{}` twice", b.name));
        }
        if !BOND_MODES.contains(&b.mode.as_str()) {
            return Err(format!(
                "bond `{}`: mode `{}` is not one of {}",
                b.name,
                b.mode,
                BOND_MODES.join(", ")
            ));
        }
        let w = format!("bond `{}`", b.name);
        check_addrs(&w, &b.addresses, &mut addressed)?;
        check_vlans(&w, &b.vlans, &mut addressed)?;
        check_mtu(&w, b.mtu)?;
        bond_names.push(b.name.clone());
    }
    let mut seen = vec![];
    for p in &mut net.ports {
        let mac =
            canonical_mac(&p.mac).ok_or_else(|| format!("`{}` is not a MAC address", p.mac))?;
        if !known.contains(&mac) {
            return Err(if known.is_empty() {
                format!(
                    "port {mac}: the node has no known NIC yet (inspect it, or enroll it with --mac)"
                )
            } else {
                format!(
                    "port {mac} is not one of the node's NICs ({})",
                    known.join(", ")
                )
            });
        }
        if seen.contains(&mac) {
            return Err(format!("port {mac} twice"));
        }
        seen.push(mac.clone());
        p.mac = mac.clone();
        let w = format!("port {mac}");
        if let Some(b) = &p.bond {
            if !bond_names.contains(b) {
                return Err(format!("{w}: no bond `{b}` is declared"));
            }
            if !p.addresses.is_empty() || !p.vlans.is_empty() {
                return Err(format!(
                    "{w} is a member of bond `{b}`: its addresses and VLANs go on the bond"
                ));
            }
        }
        check_addrs(&w, &p.addresses, &mut addressed)?;
        check_vlans(&w, &p.vlans, &mut addressed)?;
        check_mtu(&w, p.mtu)?;
    }
    for b in &net.bonds {
        if !net.ports.iter().any(|p| p.bond.as_ref() == Some(&b.name)) {
            return Err(format!("bond `{}` has no member port", b.name));
        }
    }
    for r in &net.routes {
        if r.to != "default" {
            Cidr::parse(&r.to).map_err(|e| format!("route to {}: {e}", r.to))?;
        }
        let via: IpAddr = r
            .via
            .parse()
            .map_err(|_| format!("route to {}: `{}` is not an IP address", r.to, r.via))?;
        if !addressed.iter().any(|c| c.contains(via)) {
            return Err(format!(
                "route to {} via {via}: no address of the node is in a network with {via}",
                r.to
            ));
        }
    }
    for s in &net.dns.servers {
        s.parse::<IpAddr>()
            .map_err(|_| format!("DNS server `{s}` is not an IP address"))?;
    }
    if let Some(d) = net
        .dns
        .search
        .iter()
        .find(|d| d.is_empty() || d.contains(' '))
    {
        return Err(format!("search domain `{d}` is not a domain"));
    }
    Ok(net)
}

/// An interface the deployed OS configures: a port, a bond or a VLAN, by its key in the
/// network documents.
struct Iface {
    key: String,
    addresses: Vec<Cidr>,
    mtu: Option<u32>,
    kind: Kind,
}

enum Kind {
    Port {
        mac: String,
    },
    Bond {
        mode: String,
        members: Vec<String>,
        mac: String,
    },
    Vlan {
        id: u16,
        link: String,
        mac: String,
    },
}

/// The network's interfaces in a stable order: ports, bonds, then VLANs.
fn interfaces(net: &NodeNetwork) -> Vec<Iface> {
    let cidrs = |a: &[String]| a.iter().filter_map(|s| Cidr::parse(s).ok()).collect();
    let mut out = vec![];
    let mut vlans = vec![];
    for (i, p) in net.ports.iter().enumerate() {
        let key = format!("port{i}");
        for v in &p.vlans {
            vlans.push((key.clone(), p.mac.clone(), v));
        }
        out.push(Iface {
            key,
            addresses: cidrs(&p.addresses),
            mtu: p.mtu,
            kind: Kind::Port { mac: p.mac.clone() },
        });
    }
    for b in &net.bonds {
        let members: Vec<(String, String)> = net
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.bond.as_ref() == Some(&b.name))
            .map(|(i, p)| (format!("port{i}"), p.mac.clone()))
            .collect();
        let mac = members.first().map(|m| m.1.clone()).unwrap_or_default();
        for v in &b.vlans {
            vlans.push((b.name.clone(), mac.clone(), v));
        }
        out.push(Iface {
            key: b.name.clone(),
            addresses: cidrs(&b.addresses),
            mtu: b.mtu,
            kind: Kind::Bond {
                mode: b.mode.clone(),
                members: members.into_iter().map(|m| m.0).collect(),
                mac,
            },
        });
    }
    for (link, mac, v) in vlans {
        out.push(Iface {
            key: format!("{link}.{}", v.id),
            addresses: cidrs(&v.addresses),
            mtu: None,
            kind: Kind::Vlan {
                id: v.id,
                link,
                mac,
            },
        });
    }
    out
}

/// Whether an interface is a bond's member (configured by its bond).
fn is_member(net: &NodeNetwork, key: &str) -> bool {
    net.ports
        .iter()
        .enumerate()
        .any(|(i, p)| format!("port{i}") == key && p.bond.is_some())
}

/// The routes each interface carries: those whose gateway is in one of its networks.
fn routes_of<'a>(net: &'a NodeNetwork, i: &Iface) -> Vec<(&'a str, IpAddr)> {
    net.routes
        .iter()
        .filter_map(|r| {
            let via: IpAddr = r.via.parse().ok()?;
            i.addresses
                .iter()
                .any(|c| c.contains(via))
                .then_some((r.to.as_str(), via))
        })
        .collect()
}

fn default_for(via: IpAddr) -> &'static str {
    if via.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
}

/// The interface that carries the name servers: the default route's, else the first with an
/// address.
fn dns_carrier<'a>(net: &NodeNetwork, ifaces: &'a [Iface]) -> Option<&'a Iface> {
    ifaces
        .iter()
        .find(|i| routes_of(net, i).iter().any(|(to, _)| *to == "default"))
        .or_else(|| ifaces.iter().find(|i| !i.addresses.is_empty()))
}

/// NoCloud's `network-config`, version 2 (netplan's schema).
pub fn network_config_v2(net: &NodeNetwork) -> Value {
    let ifaces = interfaces(net);
    let dns = dns_carrier(net, &ifaces).map(|i| i.key.clone());
    let (mut ethernets, mut bonds, mut vlans) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        serde_json::Map::new(),
    );
    for i in &ifaces {
        let mut v = serde_json::Map::new();
        match &i.kind {
            Kind::Port { mac } => {
                v.insert("match".into(), json!({ "macaddress": mac }));
            }
            Kind::Bond { mode, members, .. } => {
                v.insert("interfaces".into(), json!(members));
                v.insert("parameters".into(), json!({ "mode": mode }));
            }
            Kind::Vlan { id, link, .. } => {
                v.insert("id".into(), json!(id));
                v.insert("link".into(), json!(link));
            }
        }
        if is_member(net, &i.key) {
            v.insert("dhcp4".into(), json!(false));
            v.insert("dhcp6".into(), json!(false));
        } else if i.addresses.is_empty() {
            v.insert("dhcp4".into(), json!(true));
        } else {
            v.insert("dhcp4".into(), json!(false));
            v.insert("dhcp6".into(), json!(false));
            v.insert(
                "addresses".into(),
                json!(
                    i.addresses
                        .iter()
                        .map(|c| format!("{}/{}", c.addr, c.prefix))
                        .collect::<Vec<_>>()
                ),
            );
        }
        if let Some(m) = i.mtu {
            v.insert("mtu".into(), json!(m));
        }
        let routes: Vec<Value> = routes_of(net, i)
            .into_iter()
            .map(|(to, via)| {
                let to = if to == "default" {
                    default_for(via)
                } else {
                    to
                };
                json!({ "to": to, "via": via.to_string() })
            })
            .collect();
        if !routes.is_empty() {
            v.insert("routes".into(), json!(routes));
        }
        if dns.as_deref() == Some(i.key.as_str())
            && !(net.dns.servers.is_empty() && net.dns.search.is_empty())
        {
            v.insert(
                "nameservers".into(),
                json!({ "addresses": net.dns.servers, "search": net.dns.search }),
            );
        }
        let table = match i.kind {
            Kind::Port { .. } => &mut ethernets,
            Kind::Bond { .. } => &mut bonds,
            Kind::Vlan { .. } => &mut vlans,
        };
        table.insert(i.key.clone(), Value::Object(v));
    }
    let mut doc = serde_json::Map::new();
    doc.insert("version".into(), json!(2));
    for (k, t) in [("ethernets", ethernets), ("bonds", bonds), ("vlans", vlans)] {
        if !t.is_empty() {
            doc.insert(k.into(), Value::Object(t));
        }
    }
    Value::Object(doc)
}

/// OpenStack's `network_data.json`: links, networks and services.
pub fn network_data(net: &NodeNetwork) -> Value {
    let ifaces = interfaces(net);
    let mut links = vec![];
    let mut networks = vec![];
    for i in &ifaces {
        let mut link = match &i.kind {
            Kind::Port { mac } => {
                json!({ "id": i.key, "type": "phy", "ethernet_mac_address": mac })
            }
            Kind::Bond { mode, members, mac } => json!({
                "id": i.key, "type": "bond", "bond_links": members, "bond_mode": mode,
                "ethernet_mac_address": mac,
            }),
            Kind::Vlan { id, link, mac } => json!({
                "id": i.key, "type": "vlan", "vlan_link": link, "vlan_id": id,
                "vlan_mac_address": mac,
            }),
        };
        if let Some(m) = i.mtu {
            link["mtu"] = json!(m);
        }
        links.push(link);
        if is_member(net, &i.key) {
            continue;
        }
        if i.addresses.is_empty() {
            networks.push(json!({
                "id": format!("network{}", networks.len()), "type": "ipv4_dhcp", "link": i.key,
            }));
        }
        let routes = routes_of(net, i);
        for c in &i.addresses {
            let family: Vec<Value> = routes
                .iter()
                .filter(|(_, via)| via.is_ipv4() == c.addr.is_ipv4())
                .map(|(to, via)| {
                    let dest = if *to == "default" {
                        Cidr {
                            addr: if via.is_ipv4() {
                                IpAddr::from([0u8; 4])
                            } else {
                                IpAddr::from([0u16; 8])
                            },
                            prefix: 0,
                        }
                    } else {
                        Cidr::parse(to).unwrap_or(Cidr {
                            addr: *via,
                            prefix: if via.is_ipv4() { 32 } else { 128 },
                        })
                    };
                    json!({
                        "network": dest.addr.to_string(), "netmask": dest.netmask(),
                        "gateway": via.to_string(),
                    })
                })
                .collect();
            networks.push(json!({
                "id": format!("network{}", networks.len()),
                "type": if c.addr.is_ipv4() { "ipv4" } else { "ipv6" },
                "link": i.key,
                "ip_address": c.addr.to_string(),
                "netmask": c.netmask(),
                "routes": family,
            }));
        }
    }
    let services: Vec<Value> = net
        .dns
        .servers
        .iter()
        .map(|s| json!({ "type": "dns", "address": s }))
        .collect();
    json!({ "links": links, "networks": networks, "services": services })
}

/// Why a config drive cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// The user data is over [`USER_DATA_MAX`].
    #[error(
        "the user data is {0} bytes; a config drive carries at most {max} ({kib} KiB)",
        max = USER_DATA_MAX,
        kib = USER_DATA_MAX / 1024
    )]
    UserDataTooLarge(usize),
    /// Something else in the request.
    #[error("{0}")]
    Invalid(String),
}

/// The config drive for a deploy of `node`, made at `now_ms` (its instance id).
pub fn build(
    node: &str,
    instance: &InstanceConfig,
    net: &NodeNetwork,
    now_ms: i64,
) -> Result<ConfigDrive, DriveError> {
    let user_data = instance.user_data.clone();
    if let Some(u) = &user_data
        && u.len() > USER_DATA_MAX
    {
        return Err(DriveError::UserDataTooLarge(u.len()));
    }
    let host = instance.hostname.clone().unwrap_or_else(|| node.to_owned());
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !host_ok {
        return Err(DriveError::Invalid(format!(
            "host name `{host}` is not a DNS name"
        )));
    }
    let keys: Vec<String> = instance
        .ssh_keys
        .iter()
        .map(|k| k.trim().to_owned())
        .collect();
    if let Some(k) = keys.iter().find(|k| k.is_empty() || k.contains('\n')) {
        return Err(DriveError::Invalid(format!(
            "SSH key `{k}` is not one key on one line"
        )));
    }
    let instance_id = format!("{node}-{now_ms}");
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let has_network = !net.ports.is_empty();
    let file = |path: &str, content: String| ConfigFile {
        path: path.into(),
        content,
    };
    let mut files = vec![];
    let label = match instance.format {
        ConfigDriveFormat::NoCloud => {
            files.push(file(
                "meta-data",
                pretty(&json!({
                    "instance-id": instance_id, "local-hostname": host, "public-keys": keys,
                })),
            ));
            files.push(file(
                "user-data",
                user_data.unwrap_or_else(|| "#cloud-config\n{}\n".into()),
            ));
            if has_network {
                files.push(file("network-config", pretty(&network_config_v2(net))));
            }
            "cidata"
        }
        ConfigDriveFormat::Config2 => {
            let public_keys: serde_json::Map<String, Value> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("key-{i}"), json!(k)))
                .collect();
            files.push(file(
                "openstack/latest/meta_data.json",
                pretty(&json!({
                    "uuid": instance_id, "hostname": host, "name": host,
                    "public_keys": public_keys, "launch_index": 0,
                })),
            ));
            if let Some(u) = user_data {
                files.push(file("openstack/latest/user_data", u));
            }
            if has_network {
                files.push(file(
                    "openstack/latest/network_data.json",
                    pretty(&network_data(net)),
                ));
            }
            "config-2"
        }
    };
    Ok(ConfigDrive {
        label: label.into(),
        files,
    })
}

#[cfg(test)]
mod tests;
