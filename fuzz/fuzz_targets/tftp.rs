//! TFTP packets from anyone on the provisioning network: decoded or refused, never a panic,
//! and what decodes encodes back to a packet that decodes the same.
#![no_main]
use ferric_netboot::tftp::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }
});
