//! The agent decodes coordinator frames: bad bytes give an error, never a panic.
#![no_main]
use ferric_proto::frame::FrameDecoder;
use ferric_proto::msg::CoordMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::new(64 * 1024);
    dec.extend(data);
    while let Ok(Some(_)) = dec.next_msg::<CoordMsg>() {}
});
