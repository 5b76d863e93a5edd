//! Enrollment messages: the coordinator decodes requests from unauthenticated peers, the agent
//! decodes responses before it trusts anything.
#![no_main]
use ferric_proto::frame::decode_payload;
use ferric_proto::msg::{EnrollRequest, EnrollResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload::<EnrollRequest>(data);
    let _ = decode_payload::<EnrollResponse>(data);
});
