//! A rack's network namespace: its management link (one address per BMC), its provisioning
//! bridge with one tap per node, and the veth pairs that join both to the host.

use crate::error::Result;
use crate::layout::Rack;
use crate::process::run;
use std::path::Path;
use std::process::Command;

/// `ip ARGS…` on the host.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip ARGS…` inside namespace `ns`.
fn ns_ip(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "ip"])
        .args(args))
}

/// Whether the namespace `ns` exists.
pub(crate) fn exists(ns: &str) -> bool {
    Path::new("/var/run/netns").join(ns).exists()
}

/// The UDP sockets listening inside namespace `ns` (`ss -lun`); empty when it cannot say.
pub(crate) fn udp_listening(ns: &str) -> String {
    run(Command::new("ip").args(["netns", "exec", ns, "ss", "-lun"])).unwrap_or_default()
}

/// The TCP sockets listening inside namespace `ns` (`ss -ltn`); empty when it cannot say.
pub(crate) fn tcp_listening(ns: &str) -> String {
    run(Command::new("ip").args(["netns", "exec", ns, "ss", "-ltn"])).unwrap_or_default()
}

/// Makes the rack's namespace with its links, bridge and taps.
pub(crate) fn create(rack: &Rack) -> Result<()> {
    let ns = rack.netns.as_str();
    ip(&["netns", "add", ns])?;
    ns_ip(ns, &["link", "set", "lo", "up"])?;
    // Management link: the host reaches every BMC through it.
    veth_to_host(ns, &rack.mgmt_veth(), "mgmt0", &rack.mgmt_host_ip())?;
    ns_ip(ns, &["link", "set", "mgmt0", "up"])?;
    for n in &rack.nodes {
        ns_ip(
            ns,
            &["addr", "add", &format!("{}/24", n.bmc_ip), "dev", "mgmt0"],
        )?;
    }
    // The BMCs reach the host's services (the coordinator's boot server, which serves virtual
    // media) through the host's end of the management link, as a BMC network is routed.
    ns_ip(
        ns,
        &["route", "add", "default", "via", &rack.mgmt_host_ip()],
    )?;
    // Provisioning bridge, joined to the host.
    ns_ip(ns, &["link", "add", "prov0", "type", "bridge"])?;
    ns_ip(ns, &["link", "set", "prov0", "up"])?;
    veth_to_host(ns, &rack.prov_veth(), "uplink0", &rack.prov_host_ip())?;
    ns_ip(ns, &["link", "set", "uplink0", "master", "prov0", "up"])?;
    for n in &rack.nodes {
        ns_ip(ns, &["tuntap", "add", "dev", &n.tap, "mode", "tap"])?;
        ns_ip(ns, &["link", "set", &n.tap, "master", "prov0", "up"])?;
    }
    Ok(())
}

/// A veth pair from the host (`host`, up, with `addr/24`) into namespace `ns` (`peer`, left
/// down).
fn veth_to_host(ns: &str, host: &str, peer: &str, addr: &str) -> Result<()> {
    ip(&[
        "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns,
    ])?;
    ip(&["addr", "add", &format!("{addr}/24"), "dev", host])?;
    ip(&["link", "set", host, "up"])?;
    Ok(())
}

/// Deletes the rack's namespace, which removes the bridge, the taps and the namespace ends of
/// the veth pairs, and with them the host ends; a host end left behind is deleted too.
pub(crate) fn remove(rack: &Rack) -> Result<()> {
    if exists(&rack.netns) {
        ip(&["netns", "del", &rack.netns])?;
    }
    for v in [rack.mgmt_veth(), rack.prov_veth()] {
        if Path::new("/sys/class/net").join(&v).exists() {
            let _ = ip(&["link", "del", &v]);
        }
    }
    Ok(())
}
