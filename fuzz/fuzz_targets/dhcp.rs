//! DHCP datagrams from anyone on the provisioning network: the server answers a well-formed
//! request or nothing, and never panics (dhcproto asserts on some option lengths).
#![no_main]
use ferric_netboot::dhcp::{Config, Dhcp, Mode};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut d = Dhcp::new(Config {
        server: Ipv4Addr::new(10, 0, 0, 1),
        http_port: 8080,
        mode: Mode::Full {
            first: Ipv4Addr::new(10, 0, 0, 10),
            last: Ipv4Addr::new(10, 0, 0, 20),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            lease: Duration::from_secs(60),
        },
        discovery: true,
    });
    if let Some(r) = d.handle(
        data,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        Instant::now(),
    ) {
        // What is sent decodes again.
        assert!(ferric_netboot::dhcp::decode(&r.bytes).is_some());
    }
});
