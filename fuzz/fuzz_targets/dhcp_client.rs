//! DHCP answers as the deploy ramdisk's client receives them, from anyone on the network:
//! `accept` never panics, and takes only answers to its own transaction and MAC, with a
//! usable address; an ACK or NAK only from the server of the offer, for the offered address.
#![no_main]
use ferric_netboot::client::{Accepted, Awaiting, Lease, accept};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::time::Duration;

const XID: u32 = 0x4600_0007;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 7];

fuzz_target!(|data: &[u8]| {
    let Some((flags, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    // Help the fuzzer past the fields a stranger's answer would not match.
    if flags & 1 != 0 {
        bytes.resize(bytes.len().max(240), 0);
        bytes[0] = 2;
        bytes[4..8].copy_from_slice(&XID.to_be_bytes());
        bytes[28..34].copy_from_slice(&MAC);
        bytes[236..240].copy_from_slice(&[99, 130, 83, 99]);
    }
    let offer = Lease {
        ip: Ipv4Addr::new(10, 0, 0, 10),
        prefix: 24,
        router: None,
        server: Ipv4Addr::new(10, 0, 0, 1),
        lease: Duration::from_secs(60),
    };
    let awaiting = if flags & 2 != 0 {
        Awaiting::Ack(offer.clone())
    } else {
        Awaiting::Offer
    };
    let Some(a) = accept(&bytes, XID, &MAC, &awaiting) else {
        return;
    };
    // Only its own transaction and MAC, in a BOOTREPLY.
    assert_eq!(bytes[0], 2);
    assert_eq!(bytes[4..8], XID.to_be_bytes());
    assert_eq!(bytes[28..34], MAC);
    match (a, awaiting) {
        (Accepted::Offer(l), Awaiting::Offer) => {
            assert!(!l.ip.is_unspecified() && !l.ip.is_broadcast() && !l.ip.is_multicast());
            assert!(!l.server.is_unspecified());
            assert!(l.prefix <= 32);
        }
        (Accepted::Ack(l), Awaiting::Ack(o)) => {
            assert_eq!((l.ip, l.server), (o.ip, o.server));
        }
        (Accepted::Nak(server), Awaiting::Ack(o)) => assert_eq!(server, o.server),
        (a, w) => panic!("{a:?} taken while awaiting {w:?}"),
    }
});
