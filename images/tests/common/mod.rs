//! What the image suites share.

use std::path::Path;
use std::process::Command;

/// Runs `program ARGS` to its end and returns its stdout; panics with its error output when it
/// fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qemu-img ARGS` (Debian qemu-utils).
pub fn qemu_img(args: &[&str]) {
    run("qemu-img", args);
}

/// `qemu-img convert -O raw` of `img` to `raw`: the disk as qemu-img reads it.
#[allow(
    dead_code,
    reason = "the write suite compares with it; the inspect suite does not"
)]
pub fn qemu_img_to_raw(img: &Path, raw: &Path) {
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
}
