//! Console log bytes from a machine's serial port (anything a booting or hostile machine
//! prints): `console_text` never panics, keeps at most `CONSOLE_LINE_MAX` characters, and
//! leaves no control character (ESC included) for a terminal or a page to interpret.
#![no_main]
use ferric_proto::msg::{CONSOLE_LINE_MAX, console_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = console_text(data);
    assert!(text.chars().count() <= CONSOLE_LINE_MAX);
    assert!(
        !text.chars().any(|c| c.is_control()),
        "control character in {text:?}"
    );
    assert!(!text.contains('\u{1b}'));
});
