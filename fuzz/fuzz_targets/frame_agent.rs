//! The coordinator decodes agent frames from the network: any bytes, in any split, must give a
//! message or an error, never a panic, and a decoded message must survive re-encoding: its
//! frame decodes and encodes to the same bytes. (Bytes, not messages, are compared: sensor
//! readings are floats, and a NaN is not equal to itself.)
#![no_main]
use ferric_proto::frame::{FrameDecoder, to_frame};
use ferric_proto::msg::AgentMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut dec = FrameDecoder::new(64 * 1024);
    for chunk in data.chunks(split) {
        dec.extend(chunk);
        loop {
            match dec.next_msg::<AgentMsg>() {
                Ok(Some(msg)) => {
                    let again = to_frame(&msg, 64 * 1024).expect("re-encode");
                    let mut d2 = FrameDecoder::new(64 * 1024);
                    d2.extend(&again);
                    let msg2 = d2
                        .next_msg::<AgentMsg>()
                        .expect("decode again")
                        .expect("a whole frame");
                    assert_eq!(to_frame(&msg2, 64 * 1024).expect("encode again"), again);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
