//! The BMC relay's datagram classifier on arbitrary bytes (what anyone on the management
//! network can send the relay's back socket): no panic, no read past the datagram, and the
//! answers consistent with each other.
#![no_main]

use ferric_agent::bmc::datagram::{
    answer_kind, is_login, kind, opened_session, pong_for, refused_answer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let k = kind(data);
    let _ = answer_kind(k);
    if is_login(data) {
        assert!(matches!(k, 0x10 | 0x12 | 0x14));
    }
    if let Some(pong) = pong_for(data) {
        assert_eq!(k, 0x100, "only an ASF message is answered");
        assert_eq!(pong.len(), 28);
    }
    let _ = refused_answer(data);
    if opened_session(data).is_some() {
        assert_eq!(k, 0x11, "only an Open Session Response opens a session");
    }
});
