//! The coordinator decodes telemetry datagrams from agents.
#![no_main]
use ferric_proto::frame::decode_payload;
use ferric_proto::msg::TelemetrySample;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload::<TelemetrySample>(data);
});
