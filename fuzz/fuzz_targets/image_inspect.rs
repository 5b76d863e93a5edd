//! Image inspection reads headers of files uploaded by users: any bytes, any claimed length,
//! give an inspection or an error, never a panic.
#![no_main]
use ferric_images::inspect::inspect_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64 + u64::from(data.first().copied().unwrap_or(0)) * 4096;
    let tail = data.get(data.len().saturating_sub(512)..);
    let _ = inspect_bytes(data, Some((len, tail)));
    let _ = inspect_bytes(data, None);
    let _ = ferric_images::inspect::inspect(&mut std::io::Cursor::new(data));
});
