//! A DHCPv4 client for the deploy ramdisk: DISCOVER, the first OFFER, REQUEST, ACK — on a
//! UDP socket bound to the interface (the interface has no address yet), with the broadcast
//! flag set so that servers broadcast their answers. It identifies itself by the NIC's MAC
//! alone (no client identifier), so that Ferric's server — which leases by MAC — gives it the
//! address the machine's PXE ROM and iPXE had.

use crate::dhcp::{Mac, decode};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// Default gateway, when the server names one.
    pub router: Option<Ipv4Addr>,
    /// The server that answered.
    pub server: Ipv4Addr,
    /// Lease time.
    pub lease: Duration,
}

/// Why no address was obtained.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be set up.
    #[error("cannot open a DHCP socket on `{iface}`: {source}")]
    Socket {
        /// Interface.
        iface: String,
        /// Cause.
        source: std::io::Error,
    },
    /// No server answered in time.
    #[error("no DHCP server answered on `{iface}` within {secs} s")]
    NoAnswer {
        /// Interface.
        iface: String,
        /// How long it tried.
        secs: u64,
    },
    /// The server refused the request.
    #[error("the DHCP server {0} refused the request (NAK)")]
    Refused(Ipv4Addr),
}

/// A request of `kind` from `mac` (transaction `xid`), asking for `ip` from `server` when
/// given (REQUEST).
pub fn request(
    mac: &Mac,
    xid: u32,
    kind: MessageType,
    offered: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_chaddr(mac)
        .set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::AddressLeaseTime,
    ]));
    opts.insert(DhcpOption::ClassIdentifier(b"ferric-ramdisk".to_vec()));
    if let Some((ip, server)) = offered {
        opts.insert(DhcpOption::RequestedIpAddress(ip));
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    let mut out = Vec::with_capacity(300);
    // Encoding a message built here cannot fail.
    let _ = m.encode(&mut Encoder::new(&mut out));
    out
}

/// What an answer to transaction `xid` says: its type, the address offered, and the lease.
pub fn answer(bytes: &[u8], xid: u32, mac: &Mac) -> Option<(MessageType, Lease)> {
    let m = decode_reply(bytes)?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6)? != mac {
        return None;
    }
    let opts = m.opts();
    let kind = opts.msg_type()?;
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    let mask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => *m,
        _ => Ipv4Addr::new(255, 255, 255, 0),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let lease = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Duration::from_secs(u64::from(*t)),
        _ => Duration::from_secs(3600),
    };
    Some((
        kind,
        Lease {
            ip: m.yiaddr(),
            prefix: u32::from(mask).leading_ones() as u8,
            router,
            server,
            lease,
        },
    ))
}

/// What the client waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaiting {
    /// An OFFER of an address, from any server.
    Offer,
    /// The answer to the REQUEST of this offer, from the server that made it.
    Ack(Lease),
}

/// An answer the client takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// An address offered.
    Offer(Lease),
    /// The requested address acknowledged: the client's now.
    Ack(Lease),
    /// The server of the offer refused the request.
    Nak(Ipv4Addr),
}

/// Whether the datagram `bytes` answers this client (`mac`, transaction `xid`) with what it
/// is `awaiting`: an OFFER of a unicast address from a server that names itself; then an ACK
/// of the offered address, or a NAK, from the server of that offer. Anything else (another
/// transaction, another MAC, a proxy DHCP answer without an address, another server's
/// answer) is `None`.
pub fn accept(bytes: &[u8], xid: u32, mac: &Mac, awaiting: &Awaiting) -> Option<Accepted> {
    let (kind, lease) = answer(bytes, xid, mac)?;
    match (awaiting, kind) {
        (Awaiting::Offer, MessageType::Offer)
            if usable(lease.ip) && !lease.server.is_unspecified() =>
        {
            Some(Accepted::Offer(lease))
        }
        (Awaiting::Ack(offer), MessageType::Ack)
            if lease.server == offer.server && lease.ip == offer.ip =>
        {
            Some(Accepted::Ack(lease))
        }
        (Awaiting::Ack(offer), MessageType::Nak) if lease.server == offer.server => {
            Some(Accepted::Nak(lease.server))
        }
        _ => None,
    }
}

/// Whether `ip` can be a host's own address.
fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// Replies are decoded like requests (the same option filter), with the options a client
/// reads added.
fn decode_reply(bytes: &[u8]) -> Option<Message> {
    decode(bytes)
}

/// Obtains an address for `mac` on interface `iface`, trying for up to `limit`.
pub async fn acquire(iface: &str, mac: &Mac, limit: Duration) -> Result<Lease, ClientError> {
    let sock_err = |source| ClientError::Socket {
        iface: iface.to_owned(),
        source,
    };
    let sock = socket(iface).map_err(sock_err)?;
    let started = Instant::now();
    let to: SocketAddr = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67).into();
    let mut buf = vec![0u8; 1500];
    let mut attempt = 0u32;
    while started.elapsed() < limit {
        let xid: u32 = rand_xid(mac, attempt);
        attempt += 1;
        sock.send_to(&request(mac, xid, MessageType::Discover, None), to)
            .await
            .map_err(sock_err)?;
        // Answers within a second and a half, then ask again.
        let wait = Duration::from_millis(1500).min(limit.saturating_sub(started.elapsed()));
        let Some(Accepted::Offer(offer)) =
            recv(&sock, &mut buf, xid, mac, &Awaiting::Offer, wait).await
        else {
            continue;
        };
        sock.send_to(
            &request(
                mac,
                xid,
                MessageType::Request,
                Some((offer.ip, offer.server)),
            ),
            to,
        )
        .await
        .map_err(sock_err)?;
        let awaiting = Awaiting::Ack(offer);
        match recv(&sock, &mut buf, xid, mac, &awaiting, Duration::from_secs(3)).await {
            Some(Accepted::Ack(lease)) => return Ok(lease),
            Some(Accepted::Nak(server)) => return Err(ClientError::Refused(server)),
            _ => {}
        }
    }
    Err(ClientError::NoAnswer {
        iface: iface.to_owned(),
        secs: limit.as_secs(),
    })
}

fn rand_xid(mac: &Mac, attempt: u32) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ t ^ attempt.rotate_left(16)
}

/// The first datagram on `sock` within `wait` that [`accept`] takes.
async fn recv(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
    xid: u32,
    mac: &Mac,
    awaiting: &Awaiting,
    wait: Duration,
) -> Option<Accepted> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (n, _) = tokio::time::timeout(left, sock.recv_from(buf))
            .await
            .ok()?
            .ok()?;
        if let Some(a) = accept(buf.get(..n)?, xid, mac, awaiting) {
            return Some(a);
        }
    }
}

/// A UDP socket on port 68 of `iface` that may broadcast.
fn socket(iface: &str) -> std::io::Result<tokio::net::UdpSocket> {
    crate::udp_on_interface(iface, 68)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::{Config, Dhcp, Mode};

    #[test]
    fn the_client_takes_the_servers_offer_and_ack() {
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let mut d = Dhcp::new(Config::new(
            Ipv4Addr::new(10, 248, 1, 1),
            8080,
            Mode::Full {
                first: Ipv4Addr::new(10, 248, 1, 100),
                last: Ipv4Addr::new(10, 248, 1, 110),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                router: Some(Ipv4Addr::new(10, 248, 1, 1)),
                lease: Duration::from_secs(600),
            },
            false,
        ));
        d.set_known([(mac, "n7".to_owned(), None)]);
        let from = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        let now = std::time::Instant::now();
        let offer = d
            .handle(&request(&mac, 9, MessageType::Discover, None), from, now)
            .unwrap();
        let (kind, lease) = answer(&offer.bytes, 9, &mac).unwrap();
        assert_eq!(kind, MessageType::Offer);
        assert_eq!(lease.ip, Ipv4Addr::new(10, 248, 1, 100));
        assert_eq!(answer(&offer.bytes, 10, &mac), None, "another transaction");
        // A hardware address length past `chaddr` (dhcproto would panic reading it).
        let mut long = offer.bytes.clone();
        long[2] = 255;
        assert_eq!(answer(&long, 9, &mac), None);
        let ack = d
            .handle(
                &request(
                    &mac,
                    9,
                    MessageType::Request,
                    Some((lease.ip, lease.server)),
                ),
                from,
                now,
            )
            .unwrap();
        let (kind, lease) = answer(&ack.bytes, 9, &mac).unwrap();
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(
            lease,
            Lease {
                ip: Ipv4Addr::new(10, 248, 1, 100),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 248, 1, 1)),
                server: Ipv4Addr::new(10, 248, 1, 1),
                lease: Duration::from_secs(600),
            }
        );
        let awaiting = Awaiting::Ack(lease.clone());
        assert_eq!(
            accept(&ack.bytes, 9, &mac, &awaiting),
            Some(Accepted::Ack(lease.clone()))
        );
        assert_eq!(accept(&ack.bytes, 9, &mac, &Awaiting::Offer), None);
        assert_eq!(accept(&ack.bytes, 9, &[2, 0, 0, 0, 0, 1], &awaiting), None);
        // Another server's answer, or an ACK of another address, is not the one awaited.
        let elsewhere = Awaiting::Ack(Lease {
            server: Ipv4Addr::new(10, 248, 1, 2),
            ..lease.clone()
        });
        assert_eq!(accept(&ack.bytes, 9, &mac, &elsewhere), None);
        let other_ip = Awaiting::Ack(Lease {
            ip: Ipv4Addr::new(10, 248, 1, 101),
            ..lease.clone()
        });
        assert_eq!(accept(&ack.bytes, 9, &mac, &other_ip), None);
        // A NAK from the server of the offer.
        let nak = d
            .handle(
                &request(
                    &mac,
                    9,
                    MessageType::Request,
                    Some((Ipv4Addr::new(10, 248, 1, 105), lease.server)),
                ),
                from,
                now,
            )
            .unwrap();
        assert_eq!(
            accept(&nak.bytes, 9, &mac, &awaiting),
            Some(Accepted::Nak(lease.server))
        );
    }

    #[test]
    fn an_offer_without_an_address_is_not_taken() {
        let mac = [0x52, 0x54, 0, 0, 0, 7];
        let mut d = Dhcp::new(Config::new(
            Ipv4Addr::new(10, 248, 1, 1),
            8080,
            Mode::Proxy,
            false,
        ));
        d.set_known([(mac, "n7".to_owned(), None)]);
        // A proxy DHCP offer (it answers network-boot clients only: a PXE class).
        let mut m = dhcproto::v4::Message::default();
        m.set_chaddr(&mac).set_xid(9);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        let offer = d
            .handle(
                &b,
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                Instant::now(),
            )
            .unwrap();
        assert!(answer(&offer.bytes, 9, &mac).is_some());
        assert_eq!(accept(&offer.bytes, 9, &mac, &Awaiting::Offer), None);
    }
}
