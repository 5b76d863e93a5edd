//! RMCP+ on arbitrary bytes, as the lab's BMC and Ferric's client receive them from anyone on
//! the management network: datagram framing, IPMI requests and responses, trailers checked
//! against keys, payloads decrypted, and a BMC fed the input as a run of datagrams (cut at
//! each 0xA5 byte) — no panic, no read past the bytes.
#![no_main]

use ferric_ipmi::bmc::{Bmc, BmcConfig, MemoryChassis};
use ferric_ipmi::packet::{Datagram, parse, parse_request, parse_response};
use ferric_ipmi::suite::{SessionKeys, Suite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Datagram::Plus(p)) = parse(data) {
        for suite in Suite::ALL {
            let keys = SessionKeys::derive(suite, &[0x42; 20]);
            let _ = p.verify(&keys);
            if let Some(plain) = keys.decrypt(p.payload) {
                assert!(plain.len() < p.payload.len());
            }
        }
    }
    let _ = parse_request(data);
    let _ = parse_response(data);
    let mut bmc = Bmc::new(BmcConfig::new("admin", "fuzz"), MemoryChassis::default());
    let now = std::time::Instant::now();
    for d in data.split(|b| *b == 0xa5) {
        if let Some(answer) = bmc.handle(d, now) {
            assert!(parse(&answer).is_ok(), "the BMC's own answers parse");
        }
    }
});
