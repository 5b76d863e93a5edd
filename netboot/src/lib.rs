//! # ferric-netboot
//!
//! What network boot needs on both ends of the provisioning network, without the coordinator:
//!
//! * [`dhcp`]: the DHCP server's logic (full or proxy, leases by MAC, boot file by client
//!   kind) as a pure function of a datagram;
//! * [`client`]: the DHCP client of the deploy ramdisk;
//! * [`tftp`]: a read-only TFTP server for iPXE (sans-IO, with a small async driver), with its
//!   packet codec.
//!
//! The coordinator runs the servers on its provisioning interface; the decoders of untrusted
//! bytes here are fuzzed.
#![forbid(unsafe_code)]

pub mod client;
pub mod dhcp;
pub mod tftp;

/// A UDP socket on `port` of every address, bound to interface `iface` (`SO_BINDTODEVICE`),
/// allowed to broadcast and to share the port: what DHCP needs on a link whose addresses may
/// not be configured yet.
pub fn udp_on_interface(iface: &str, port: u16) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}
