//! The agent's journal reader on arbitrary file contents (what a crash, a full disk or a
//! stray write can leave): no panic; a file it accepts is read up to a line boundary, and the
//! events it returns count up from 0.
#![no_main]

use ferric_agent::journal::record::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match replay(data) {
        Ok(r) => {
            assert!(r.good_len <= data.len());
            assert!(r.good_len == 0 || data[r.good_len - 1] == b'\n');
            assert!(r.plan.is_some() || (r.events.is_empty() && r.acked.is_none()));
            for (i, e) in r.events.iter().enumerate() {
                assert_eq!(e.seq as usize, i);
            }
            // What a restarted agent keeps (the file cut to `good_len`) reads the same.
            let again = replay(&data[..r.good_len]).expect("the kept part is valid");
            assert!(!again.torn && again.good_len == r.good_len);
            assert_eq!(again.events.len(), r.events.len());
        }
        Err(line) => assert!(line >= 1),
    }
});
