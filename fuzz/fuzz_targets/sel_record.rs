//! System Event Log entries come from a BMC over the network: the agent decodes each 16-byte
//! record for the SEL step's output. Any bytes must decode to an entry — never a panic — and
//! the entry keeps the bytes as they were.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u8; 16]| {
    let e = ferric_agent::bmc::ipmi::decode_sel(&data);
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(e.raw, hex);
    assert_eq!(e.id, u16::from_le_bytes([data[0], data[1]]));
    assert!(!e.sensor.is_empty() && !e.event.is_empty());
});
