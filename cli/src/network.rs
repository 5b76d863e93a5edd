//! `ferric node network` and `ferric node port`: the network a deploy's config drive gives a
//! bare-metal node's OS.

use super::Client;
use super::output::print_item;
use anyhow::{Context, Result, bail};
use clap::Args;
use ferric_api::network::{Bond, NodeNetwork, Port, Route, Vlan};
use std::path::PathBuf;

/// `ferric node port`: one port's part of a node's network, read, changed and written back.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Node name.
    pub name: String,
    /// The port's MAC address (enrolled, or seen by inspection).
    pub mac: String,
    /// A static address `ADDRESS/PREFIX` on the port (on its bond with --bond; repeat for
    /// several). Replaces the addresses it had.
    #[arg(long = "address", value_name = "CIDR")]
    pub addresses: Vec<String>,
    /// A VLAN `ID` or `ID=ADDRESS/PREFIX` on the port (on its bond with --bond; repeat).
    /// Replaces the VLANs it had.
    #[arg(long = "vlan", value_name = "ID[=CIDR]")]
    pub vlans: Vec<String>,
    /// Make the port a member of this bond (created when new); its addresses, VLANs and MTU
    /// are then the bond's.
    #[arg(long)]
    pub bond: Option<String>,
    /// The bond's mode, when --bond creates it.
    #[arg(long, default_value = "active-backup", value_parser = clap::builder::PossibleValuesParser::new(ferric_api::network::BOND_MODES))]
    pub bond_mode: String,
    /// MTU, bytes.
    #[arg(long)]
    pub mtu: Option<u32>,
    /// The node's default gateway (replaces the default route of its address family).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// A name server (repeat; replaces the node's name servers).
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// A DNS search domain (repeat; replaces the node's search domains).
    #[arg(long = "search", value_name = "DOMAIN")]
    pub search: Vec<String>,
    /// Remove the port from the node's network (it stays unconfigured).
    #[arg(long, conflicts_with_all = ["addresses", "vlans", "bond", "mtu"])]
    pub remove: bool,
}

/// Shows `name`'s network, or replaces it with the JSON document in `file`.
pub(super) async fn network(
    client: &Client,
    name: &str,
    file: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let path = format!("/v1/nodes/{name}/network");
    let net: NodeNetwork = match file {
        None => client.get(&path).await?,
        Some(f) => {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read the network file {}", f.display()))?;
            let doc: NodeNetwork = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a node network document", f.display()))?;
            client.put(&path, &doc).await?
        }
    };
    print_item(json, &net, |n| describe(name, n))
}

/// Changes one port of a node's network as `a` says and writes the whole back.
pub(super) async fn port(client: &Client, a: PortArgs, json: bool) -> Result<()> {
    let path = format!("/v1/nodes/{}/network", a.name);
    let mut net: NodeNetwork = client.get(&path).await?;
    change(&mut net, &a)?;
    let net: NodeNetwork = client.put(&path, &net).await?;
    print_item(json, &net, |n| describe(&a.name, n))
}

/// Applies `a` to `net` (the coordinator checks the result whole).
fn change(net: &mut NodeNetwork, a: &PortArgs) -> Result<()> {
    let mac = a.mac.to_ascii_lowercase();
    let at = net
        .ports
        .iter()
        .position(|p| p.mac.eq_ignore_ascii_case(&mac));
    if a.remove {
        let Some(i) = at else {
            bail!("port {mac} is not in node {}'s network", a.name);
        };
        net.ports.remove(i);
    } else {
        let vlans = a
            .vlans
            .iter()
            .map(|v| vlan(v))
            .collect::<Result<Vec<_>>>()?;
        let i = at.unwrap_or_else(|| {
            net.ports.push(Port {
                mac: mac.clone(),
                ..Port::default()
            });
            net.ports.len() - 1
        });
        let port = &mut net.ports[i];
        match &a.bond {
            None => {
                port.bond = None;
                port.addresses = a.addresses.clone();
                port.vlans = vlans;
                port.mtu = a.mtu;
            }
            Some(b) => {
                port.bond = Some(b.clone());
                port.addresses.clear();
                port.vlans.clear();
                port.mtu = None;
                let bond = match net.bonds.iter_mut().position(|x| &x.name == b) {
                    Some(j) => &mut net.bonds[j],
                    None => {
                        net.bonds.push(Bond {
                            name: b.clone(),
                            mode: a.bond_mode.clone(),
                            ..Bond::default()
                        });
                        net.bonds.last_mut().expect("just pushed")
                    }
                };
                // A second member given nothing leaves the bond's settings as they are.
                if !a.addresses.is_empty() {
                    bond.addresses = a.addresses.clone();
                }
                if !vlans.is_empty() {
                    bond.vlans = vlans;
                }
                if a.mtu.is_some() {
                    bond.mtu = a.mtu;
                }
            }
        }
    }
    // Bonds no port is a member of any more go with their last member.
    let members: Vec<String> = net.ports.iter().filter_map(|p| p.bond.clone()).collect();
    net.bonds.retain(|b| members.contains(&b.name));
    if let Some(gw) = &a.gateway {
        let v6 = gw.contains(':');
        net.routes
            .retain(|r| !(r.to == "default" && r.via.contains(':') == v6));
        net.routes.push(Route {
            to: "default".into(),
            via: gw.clone(),
        });
    }
    if !a.dns.is_empty() {
        net.dns.servers = a.dns.clone();
    }
    if !a.search.is_empty() {
        net.dns.search = a.search.clone();
    }
    Ok(())
}

/// `ID` or `ID=CIDR`.
fn vlan(s: &str) -> Result<Vlan> {
    let (id, addr) = match s.split_once('=') {
        Some((i, a)) => (i, Some(a)),
        None => (s, None),
    };
    let id: u16 = id
        .parse()
        .ok()
        .filter(|i| (1..=4094).contains(i))
        .with_context(|| format!("`{s}`: a VLAN id is 1 to 4094"))?;
    Ok(Vlan {
        id,
        addresses: addr.map(|a| vec![a.to_owned()]).unwrap_or_default(),
    })
}

/// A node's network as lines an operator reads.
fn describe(node: &str, n: &NodeNetwork) -> String {
    if n.ports.is_empty() {
        return format!("node {node}: no network set (its OS configures itself, DHCP)");
    }
    let mut out = vec![format!("node {node}:")];
    let carried = |addresses: &[String], vlans: &[Vlan], mtu: Option<u32>| {
        let mut s = addresses.join(" ");
        for v in vlans {
            s.push_str(&format!(" vlan {}", v.id));
            if !v.addresses.is_empty() {
                s.push_str(&format!(" ({})", v.addresses.join(" ")));
            }
        }
        if let Some(m) = mtu {
            s.push_str(&format!(" mtu {m}"));
        }
        s.trim().to_owned()
    };
    for p in &n.ports {
        match &p.bond {
            Some(b) => out.push(format!("  port {}  in {b}", p.mac)),
            None => out.push(format!(
                "  port {}  {}",
                p.mac,
                carried(&p.addresses, &p.vlans, p.mtu)
            )),
        }
    }
    for b in &n.bonds {
        out.push(format!(
            "  bond {} ({})  {}",
            b.name,
            b.mode,
            carried(&b.addresses, &b.vlans, b.mtu)
        ));
    }
    for r in &n.routes {
        out.push(format!("  route {} via {}", r.to, r.via));
    }
    if !n.dns.servers.is_empty() || !n.dns.search.is_empty() {
        out.push(format!(
            "  dns {}{}",
            n.dns.servers.join(" "),
            if n.dns.search.is_empty() {
                String::new()
            } else {
                format!(" (search {})", n.dns.search.join(" "))
            }
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        port: PortArgs,
    }

    fn args(a: &[&str]) -> PortArgs {
        Cli::parse_from(std::iter::once("port").chain(a.iter().copied())).port
    }

    #[test]
    fn a_port_is_set_replaced_bonded_and_removed_and_its_bond_goes_with_it() {
        let mut n = NodeNetwork::default();
        change(
            &mut n,
            &args(&[
                "n1",
                "52:54:00:AA:00:01",
                "--address",
                "10.0.0.5/24",
                "--vlan",
                "100=10.1.0.5/24",
                "--gateway",
                "10.0.0.1",
                "--dns",
                "10.0.0.1",
            ]),
        )
        .unwrap();
        assert_eq!(n.ports.len(), 1);
        assert_eq!(n.ports[0].mac, "52:54:00:aa:00:01");
        assert_eq!(n.ports[0].addresses, ["10.0.0.5/24"]);
        assert_eq!(n.ports[0].vlans[0].id, 100);
        assert_eq!(n.ports[0].vlans[0].addresses, ["10.1.0.5/24"]);
        assert_eq!(n.routes.len(), 1);
        assert_eq!(n.dns.servers, ["10.0.0.1"]);
        // The same port again replaces its settings; a second gateway of the same family
        // replaces the first, one of the other family joins it.
        change(
            &mut n,
            &args(&[
                "n1",
                "52:54:00:aa:00:01",
                "--address",
                "10.0.0.6/24",
                "--gateway",
                "10.0.0.254",
            ]),
        )
        .unwrap();
        change(
            &mut n,
            &args(&[
                "n1",
                "52:54:00:aa:00:01",
                "--address",
                "10.0.0.6/24",
                "--gateway",
                "fd00::1",
            ]),
        )
        .unwrap();
        assert_eq!(n.ports.len(), 1);
        assert_eq!(n.ports[0].addresses, ["10.0.0.6/24"]);
        assert!(n.ports[0].vlans.is_empty());
        let vias: Vec<_> = n.routes.iter().map(|r| r.via.as_str()).collect();
        assert_eq!(vias, ["10.0.0.254", "fd00::1"]);
        // Two ports in a bond: the addresses are the bond's, the second member keeps them.
        change(
            &mut n,
            &args(&[
                "n1",
                "52:54:00:aa:00:01",
                "--bond",
                "bond0",
                "--address",
                "10.0.0.7/24",
                "--bond-mode",
                "802.3ad",
            ]),
        )
        .unwrap();
        change(
            &mut n,
            &args(&["n1", "52:54:00:aa:00:02", "--bond", "bond0"]),
        )
        .unwrap();
        assert_eq!(n.bonds.len(), 1);
        assert_eq!(n.bonds[0].mode, "802.3ad");
        assert_eq!(n.bonds[0].addresses, ["10.0.0.7/24"]);
        assert!(
            n.ports
                .iter()
                .all(|p| p.bond.as_deref() == Some("bond0") && p.addresses.is_empty())
        );
        let text = describe("n1", &n);
        assert!(text.contains("bond bond0 (802.3ad)  10.0.0.7/24"), "{text}");
        // Removing both members removes the bond.
        change(&mut n, &args(&["n1", "52:54:00:aa:00:01", "--remove"])).unwrap();
        assert_eq!(n.bonds.len(), 1);
        change(&mut n, &args(&["n1", "52:54:00:aa:00:02", "--remove"])).unwrap();
        assert!(n.bonds.is_empty() && n.ports.is_empty());
        let e = change(&mut n, &args(&["n1", "52:54:00:aa:00:02", "--remove"])).unwrap_err();
        assert!(e.to_string().contains("not in node n1's network"), "{e}");
        let e = change(
            &mut n,
            &args(&["n1", "52:54:00:aa:00:02", "--vlan", "4095"]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("1 to 4094"), "{e}");
    }
}
