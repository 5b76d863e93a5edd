//! Images made by qemu-img in the test are written by Ferric and compared byte for byte with
//! `qemu-img convert -O raw` of the same image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_images::inspect::Format;
use ferric_images::write::write_to_file;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is installed");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 16 MiB: data runs of several sizes separated by zero runs, ending in zeros.
fn source(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("src.raw");
    let mut f = std::fs::File::create(&p).unwrap();
    f.set_len(16 << 20).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (off, len) in [
        (0u64, 4096usize),
        (1 << 20, 300_000),
        (5 << 20, 2 << 20),
        ((9 << 20) + 512, 70_000),
        (12 << 20, 65_536),
    ] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8 | 1
            })
            .collect();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&data).unwrap();
    }
    p
}

/// `qemu-img convert` of `raw` to a qcow2 called `name`, with extra `opts`.
fn to_qcow2(dir: &Path, raw: &Path, name: &str, opts: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut args = vec!["convert", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(raw.to_str().unwrap());
    args.push(out.to_str().unwrap());
    qemu_img(&args);
    out
}

#[test]
fn written_disks_match_qemu_img_convert_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let s = raw.to_str().unwrap();
    let variants: Vec<(&str, Vec<&str>)> = vec![
        ("v2.qcow2", vec!["-O", "qcow2", "-o", "compat=0.10"]),
        ("v3.qcow2", vec!["-O", "qcow2"]),
        ("zlib.qcow2", vec!["-c", "-O", "qcow2"]),
        (
            "small-clusters.qcow2",
            vec!["-O", "qcow2", "-o", "cluster_size=4096"],
        ),
    ];
    let mut images = vec![(raw.clone(), Format::Raw)];
    for (name, args) in variants {
        let p = d.path().join(name);
        let mut a = vec!["convert"];
        a.extend(args);
        a.push(s);
        a.push(p.to_str().unwrap());
        qemu_img(&a);
        images.push((p, Format::Qcow2));
    }
    for (img, format) in images {
        let ours = d.path().join("ours.raw");
        let theirs = d.path().join("theirs.raw");
        let report = write_to_file(&img, Some(format), &ours)
            .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ]);
        let (a, b) = (
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{}", img.display());
        assert!(
            a == b,
            "{}: written disk differs from qemu-img convert",
            img.display()
        );
        assert_eq!(report.virtual_size, 16 << 20);
        assert!(
            report.zeros_skipped >= 10 << 20,
            "{}: zero runs are skipped, not written: {report:?}",
            img.display()
        );
        assert!(report.written < 4 << 20, "{report:?}");
    }
}

#[test]
fn zstd_compressed_clusters_are_refused_as_unsupported_for_now() {
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let z = to_qcow2(
        d.path(),
        &raw,
        "zstd.qcow2",
        &["-c", "-o", "compression_type=zstd"],
    );
    let target = d.path().join("t.raw");
    let err = write_to_file(&z, None, &target).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported qcow2 image: zstd-compressed clusters"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn unsafe_or_mislabelled_images_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    let backed = d.path().join("backed.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        backed.to_str().unwrap(),
    ]);
    let target = d.path().join("target.raw");
    let err = write_to_file(&backed, None, &target).unwrap_err();
    assert!(err.to_string().contains("backing file"), "{err}");
    assert!(!target.exists(), "nothing was written");
    let err = write_to_file(&base, Some(Format::Raw), &target).unwrap_err();
    assert!(
        err.to_string()
            .contains("declared raw but its content is qcow2"),
        "{err}"
    );
    assert!(!target.exists());
}

fn hex_digest<D: sha2::Digest>(bytes: &[u8]) -> String {
    hex::encode(D::digest(bytes))
}

#[test]
fn checksums_are_checked_in_flight_and_a_mismatch_fails_with_both_digests() {
    use ferric_images::write::{Algo, WriteOptions, write_to_file_with};
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let img = to_qcow2(d.path(), &raw, "img.qcow2", &[]);
    let bytes = std::fs::read(&img).unwrap();
    let target = d.path().join("t.raw");

    let good = hex_digest::<sha2::Sha256>(&bytes);
    let opts = WriteOptions {
        declared: Some(Format::Qcow2),
        expected: Some((Algo::Sha256, good.to_uppercase())),
    };
    let mut seen = Vec::new();
    let report = write_to_file_with(&img, &target, &opts, &mut |p| seen.push(p)).unwrap();
    assert_eq!(report.digest.as_deref(), Some(good.as_str()));
    // Progress rises to the disk's size.
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total), (16 << 20, 16 << 20));
    assert!(last.bytes_per_sec() > 0.0 && last.eta().is_zero());

    let sha512 = hex_digest::<sha2::Sha512>(&bytes);
    let opts = WriteOptions {
        declared: None,
        expected: Some((Algo::Sha512, sha512.clone())),
    };
    assert_eq!(
        write_to_file_with(&img, &target, &opts, &mut |_| {})
            .unwrap()
            .digest,
        Some(sha512)
    );

    let wrong = "0".repeat(64);
    let opts = WriteOptions {
        declared: None,
        expected: Some((Algo::Sha256, wrong.clone())),
    };
    let err = write_to_file_with(&img, &target, &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("sha256 of the image is {good}, expected {wrong}")
    );
    assert!(
        !target.exists(),
        "a target that does not hold the expected image is removed"
    );
}

/// A loop device over a file, detached when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn written_to_a_loop_device_old_contents_are_zeroed_and_the_disk_matches_qemu_img() {
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let img = to_qcow2(d.path(), &raw, "img.qcow2", &["-c"]);
    // The device starts full of old data: every zero range of the image must be zeroed on it.
    let backing = d.path().join("device.img");
    std::fs::write(&backing, vec![0xaa; 16 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show", backing.to_str().unwrap()])
        .output()
        .expect("losetup (util-linux)");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned());

    let report = write_to_file(&img, Some(Format::Qcow2), Path::new(&dev.0)).unwrap();
    assert!(report.zeros_skipped >= 10 << 20, "{report:?}");
    let theirs = d.path().join("theirs.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        img.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    let on_device = std::fs::read(&dev.0).unwrap();
    assert!(
        on_device == std::fs::read(&theirs).unwrap(),
        "device content differs from qemu-img convert"
    );
    assert!(backing.exists(), "a device target is never removed");
}
