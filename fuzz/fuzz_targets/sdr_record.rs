//! Sensor data records come from a BMC over the network: the agent parses them during the SDR
//! walk. Any bytes must give a sensor, nothing, or an error — never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferric_agent::bmc::ipmi::parse_sdr(data);
});
