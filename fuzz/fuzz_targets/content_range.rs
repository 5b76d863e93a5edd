//! `Content-Range` as an image server sends it (any bytes a header value can hold): no panic,
//! a range is only ever one that can be read (start ≤ end < total), and one parsed range
//! prints back to itself.
#![no_main]

use ferric_images::source::parse_content_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = parse_content_range(v) {
        assert!(r.start <= r.end && r.end < r.total, "{v:?} gave {r:?}");
        let printed = format!("bytes {}-{}/{}", r.start, r.end, r.total);
        assert_eq!(parse_content_range(&printed), Some(r));
    }
});
