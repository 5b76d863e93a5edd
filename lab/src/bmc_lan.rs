//! A rack's relay (`ferric lab relay`, one process per rack inside its namespace): it serves
//! every BMC's LAN address and forwards to the node's ipmi_sim, losing datagrams on purpose
//! for the `bmc-loss` fault, and sends IPv6 router advertisements on the provisioning bridge.

use crate::BMC_PORT;
use crate::bmc::backend_port;
use crate::error::{IoContext, LabError, Result};
use crate::fault::bmc_loss;
use crate::layout::{Node, Rack};
use crate::netns;
use crate::process::spawn_detached;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the rack's relay in its namespace, detached, and waits until it serves every BMC
/// address.
pub(crate) fn start(rack: &Rack) -> Result<()> {
    let log_path = rack.dir.join("relay.log");
    let log = std::fs::File::create(&log_path)
        .and_then(|l| Ok((l.try_clone()?, l)))
        .or_lab(|| format!("cannot create {}", log_path.display()))?;
    let pid = spawn_detached(
        Command::new("ip")
            .args(["netns", "exec", &rack.netns])
            .arg(&rack.ferric)
            .args(["lab", "relay", "--dir"])
            .arg(&rack.dir)
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1),
    )?;
    let pid_file = rack.dir.join("relay.pid");
    std::fs::write(&pid_file, pid.to_string())
        .or_lab(|| format!("cannot write {}", pid_file.display()))?;
    let started = Instant::now();
    loop {
        let out = netns::udp_listening(&rack.netns);
        if rack
            .nodes
            .iter()
            .all(|n| out.contains(&format!("{}:{BMC_PORT}", n.bmc_ip)))
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(LabError::RelayNotUp {
                log: std::fs::read_to_string(&log_path).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rack's IPv6 prefix on the provisioning bridge, `fd00:fe:0:K::/64` (unique local).
pub fn ra_prefix(subnet: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xfe, 0, u16::from(subnet), 0, 0, 0, 0)
}

/// A Router Advertisement (RFC 4861, 4.2) that is not a default router and carries one
/// on-link, autonomous prefix: enough for a node's IPv6 autoconfiguration to finish at once
/// (iPXE otherwise waits about 16 s for a router before it goes on).
pub fn router_advertisement(prefix: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![
        134, 0, 0, 0, // type, code, checksum (the kernel fills it in)
        64, 0, // current hop limit, flags
        0, 0, // router lifetime 0: not a default router
        0, 0, 0, 0, // reachable time
        0, 0, 0, 0, // retrans timer
        3, 4, 64, 0xc0, // prefix information: length 4 (32 bytes), /64, on-link + autonomous
    ];
    p.extend_from_slice(&86400u32.to_be_bytes()); // valid lifetime
    p.extend_from_slice(&14400u32.to_be_bytes()); // preferred lifetime
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&prefix.octets());
    p
}

/// Sends router advertisements on `ifname` every three seconds (inside the rack's namespace).
fn advertise(ifname: &str, subnet: u8) {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, sendto, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::IcmpV6,
    ) else {
        eprintln!("no raw ICMPv6 socket: router advertisements are off");
        return;
    };
    // Neighbor discovery messages must arrive with hop limit 255.
    let _ = setsockopt(&fd, sockopt::Ipv6MulticastHops, &255);
    let ra = router_advertisement(ra_prefix(subnet));
    loop {
        if let Ok(index) = nix::net::if_::if_nametoindex(ifname) {
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                0,
                0,
                index,
            ));
            // Fails while the bridge's link-local address is still tentative: next round.
            if let Err(e) = sendto(fd.as_raw_fd(), &ra, &to, MsgFlags::empty()) {
                eprintln!("router advertisement on {ifname} not sent: {e}");
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// One relayed UDP address: each datagram that reaches the front socket goes on to
/// `127.0.0.1:target` from a socket of its client's own (so that answers find their way back),
/// and each answer goes back to that client; either way, a datagram the caller's `lose` picks
/// is dropped. A lab rack's relay serves its BMCs' addresses with these; the end-to-end tests
/// stand in for a lossy management network with one.
#[derive(Debug)]
pub struct UdpRelay {
    front: UdpSocket,
    target: u16,
    /// One socket toward the target per client.
    backs: Vec<(SocketAddr, UdpSocket)>,
}

impl UdpRelay {
    /// Relays what reaches `front` to `127.0.0.1:target`. `front` must be non-blocking or have
    /// a short read timeout: [`UdpRelay::pump`] reads it until a read fails.
    pub fn new(front: UdpSocket, target: u16) -> UdpRelay {
        UdpRelay {
            front,
            target,
            backs: Vec::new(),
        }
    }

    /// Its sockets (the front one first), to wait on before [`UdpRelay::pump`].
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        std::iter::once(&self.front).chain(self.backs.iter().map(|(_, b)| b))
    }

    /// Forwards what is waiting: the clients' datagrams (until a read of the front socket
    /// fails), then the target's answers; `lose()` is asked once for each datagram and drops it
    /// when it says so. Fails only when no socket toward the target can be opened for a new
    /// client.
    pub fn pump(&mut self, buf: &mut [u8], lose: &mut impl FnMut() -> bool) -> io::Result<()> {
        while let Ok((n, from)) = self.front.recv_from(buf) {
            if lose() {
                continue;
            }
            let back = match self.backs.iter().position(|(a, _)| *a == from) {
                Some(i) => &self.backs[i].1,
                None => {
                    let b = UdpSocket::bind("127.0.0.1:0")?;
                    b.connect(("127.0.0.1", self.target))?;
                    b.set_nonblocking(true)?;
                    self.backs.push((from, b));
                    &self.backs[self.backs.len() - 1].1
                }
            };
            let _ = back.send(&buf[..n]);
        }
        for (client, b) in &self.backs {
            while let Ok(n) = b.recv(buf) {
                if !lose() {
                    let _ = self.front.send_to(&buf[..n], client);
                }
            }
        }
        Ok(())
    }
}

/// `ferric lab relay`: serves every BMC's LAN address of the rack (inside its namespace) and
/// forwards to the node's ipmi_sim, dropping the share of datagrams each way that the node's
/// `bmc-loss` fault names (re-read every half second); and sends IPv6 router advertisements
/// on the provisioning bridge.
pub fn relay(dir: &Path) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let rack = Rack::load(dir)?;
    struct Front {
        relay: UdpRelay,
        node: Node,
        loss: u32,
    }
    let mut fronts: Vec<Front> = rack
        .nodes
        .iter()
        .map(|n| {
            let sock = UdpSocket::bind((n.bmc_ip.as_str(), BMC_PORT))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .or_lab(|| format!("cannot bind {}:{BMC_PORT}", n.bmc_ip))?;
            Ok(Front {
                relay: UdpRelay::new(sock, backend_port(n)),
                node: n.clone(),
                loss: 0,
            })
        })
        .collect::<Result<_>>()?;
    let subnet = rack.subnet;
    std::thread::Builder::new()
        .name("ferric-lab-ra".into())
        .spawn(move || advertise("prov0", subnet))
        .or_lab(|| "cannot start the router advertisement thread".into())?;
    let mut reread = Instant::now() - Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    loop {
        if reread.elapsed() >= Duration::from_millis(500) {
            reread = Instant::now();
            if !dir.join("rack.json").exists() {
                return Ok(()); // the rack is gone
            }
            for f in &mut fronts {
                f.loss = bmc_loss(&rack.node_dir(&f.node));
            }
        }
        let mut fds: Vec<PollFd> = Vec::new();
        for f in &fronts {
            fds.extend(
                f.relay
                    .sockets()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
            );
        }
        let _ = poll(&mut fds, PollTimeout::from(200u16));
        drop(fds);
        for f in &mut fronts {
            let pct = f.loss;
            f.relay
                .pump(&mut buf, &mut || {
                    pct > 0 && rand::random::<u32>() % 100 < pct
                })
                .or_lab(|| format!("cannot relay to the BMC of {}", f.node.name))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_advertisement_carries_the_racks_unique_local_prefix() {
        assert_eq!(ra_prefix(37).to_string(), "fd00:fe:0:25::");
        let ra = router_advertisement(ra_prefix(37));
        assert_eq!(ra.len(), 16 + 32);
        assert_eq!(ra[0], 134);
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&ra[16..20], &[3, 4, 64, 0xc0]);
        assert_eq!(&ra[32..48], &ra_prefix(37).octets());
    }

    #[test]
    fn a_relay_carries_each_clients_datagrams_both_ways_and_drops_what_it_is_told_to() {
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        target
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front.set_nonblocking(true).unwrap();
        let front_addr = front.local_addr().unwrap();
        let mut relay = UdpRelay::new(front, target.local_addr().unwrap().port());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        let pump = |relay: &mut UdpRelay, buf: &mut [u8], lose: bool| {
            std::thread::sleep(Duration::from_millis(50));
            relay.pump(buf, &mut || lose).unwrap();
        };

        client.send_to(b"lost", front_addr).unwrap();
        pump(&mut relay, &mut buf, true);
        assert_eq!(relay.sockets().count(), 1, "no socket for a lost datagram");
        client.send_to(b"ping", front_addr).unwrap();
        pump(&mut relay, &mut buf, false);
        let mut got = [0u8; 64];
        let (n, from) = target.recv_from(&mut got).unwrap();
        assert_eq!(&got[..n], b"ping");
        target.send_to(b"pong", from).unwrap();
        pump(&mut relay, &mut buf, false);
        let (n, back) = client.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], back), (&b"pong"[..], front_addr));
        assert_eq!(relay.sockets().count(), 2);
    }
}
