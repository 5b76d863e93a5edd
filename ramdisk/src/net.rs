//! Bringing the boot NIC up: links up, the NIC the node booted from (or the first with a
//! carrier), an address by DHCP, configured through netlink.

use ferric_netboot::client::{Lease, acquire};
use ferric_netboot::dhcp::{Mac, parse_mac};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the network did not come up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No NIC at all.
    #[error(
        "no network interface with a device was found (are its driver modules in the initramfs?)"
    )]
    NoNic,
    /// No carrier on any NIC.
    #[error("no network interface has a link (checked: {0})")]
    NoLink(String),
    /// DHCP failed.
    #[error(transparent)]
    Dhcp(#[from] ferric_netboot::client::ClientError),
    /// Netlink refused a change.
    #[error("netlink: {0}")]
    Netlink(String),
}

/// A NIC: name, index, MAC.
#[derive(Debug, Clone)]
struct Nic {
    name: String,
    index: u32,
    mac: Mac,
}

fn nics() -> Vec<Nic> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return vec![];
    };
    let mut out: Vec<Nic> = dir
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if !p.join("device").exists() {
                return None;
            }
            let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
            Some(Nic {
                name: e.file_name().to_string_lossy().into_owned(),
                index: read("ifindex")?.trim().parse().ok()?,
                mac: parse_mac(read("address")?.trim())?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn carrier(name: &str) -> bool {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("carrier"))
        .is_ok_and(|s| s.trim() == "1")
}

async fn handle() -> Result<rtnetlink::Handle, NetError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Brings every NIC up, picks the boot NIC (`mac`, else the first with a carrier), and
/// configures the address DHCP gives it — or `fixed`, on a network without DHCP (a boot from
/// virtual media). Returns the NIC's name and the lease (for a fixed address, one that says
/// so: its server is the unspecified address).
pub async fn up(
    mac: Option<&str>,
    fixed: Option<crate::cmdline::StaticNet>,
    limit: Duration,
) -> Result<(String, Lease), NetError> {
    let h = handle().await?;
    let all = nics();
    if all.is_empty() {
        return Err(NetError::NoNic);
    }
    for n in &all {
        h.link()
            .set(rtnetlink::LinkUnspec::new_with_index(n.index).up().build())
            .execute()
            .await
            .map_err(|e| NetError::Netlink(format!("cannot bring {} up: {e}", n.name)))?;
    }
    let wanted = mac.and_then(parse_mac);
    let started = Instant::now();
    let nic = loop {
        let with_link: Vec<&Nic> = all.iter().filter(|n| carrier(&n.name)).collect();
        if let Some(n) = with_link
            .iter()
            .find(|n| Some(n.mac) == wanted)
            .or(with_link.first())
        {
            break (*n).clone();
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(NetError::NoLink(
                all.iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lease = match fixed {
        Some(f) => Lease {
            ip: f.ip,
            prefix: f.prefix,
            router: f.gateway,
            server: std::net::Ipv4Addr::UNSPECIFIED,
            lease: Duration::MAX,
        },
        None => acquire(&nic.name, &nic.mac, limit).await?,
    };
    h.address()
        .add(nic.index, IpAddr::V4(lease.ip), lease.prefix)
        .execute()
        .await
        .or_else(exists)
        .map_err(|e| NetError::Netlink(format!("cannot add {} to {}: {e}", lease.ip, nic.name)))?;
    if let Some(gw) = lease.router {
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(nic.index)
            .build();
        h.route()
            .add(route)
            .execute()
            .await
            .or_else(exists)
            .map_err(|e| {
                NetError::Netlink(format!("cannot add the default route via {gw}: {e}"))
            })?;
    }
    Ok((nic.name, lease))
}

/// An address or route that is there already (a second try after a failure later on) is
/// what was wanted.
fn exists(e: rtnetlink::Error) -> Result<(), rtnetlink::Error> {
    match &e {
        rtnetlink::Error::NetlinkError(m)
            if m.code.map(|c| c.get()) == Some(-(nix::errno::Errno::EEXIST as i32)) =>
        {
            Ok(())
        }
        _ => Err(e),
    }
}
