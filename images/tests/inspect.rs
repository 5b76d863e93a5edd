//! Inspection of images made by `qemu-img` in the test: every format is identified by content
//! with its virtual size, and every hostile case is refused with a reason that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::qemu_img;
use ferric_images::inspect::{Format, ImageError, Wrapper, inspect, inspect_as};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SIZE: u64 = 8 << 20;

fn create(dir: &Path, name: &str, fmt: &str, opts: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-f", fmt];
    args.extend_from_slice(opts);
    let ps = p.to_str().unwrap().to_owned();
    args.push(&ps);
    let size = SIZE.to_string();
    args.push(&size);
    qemu_img(&args);
    p
}

fn inspect_file(p: &Path) -> Result<ferric_images::inspect::Inspection, ImageError> {
    inspect(&mut std::fs::File::open(p).unwrap())
}

#[test]
fn formats_are_identified_by_content_with_their_size() {
    let d = tempfile::tempdir().unwrap();
    let cases: Vec<(PathBuf, Format, Option<u64>)> = vec![
        (
            create(d.path(), "a.img", "raw", &[]),
            Format::Raw,
            Some(SIZE),
        ),
        (
            create(d.path(), "v2.img", "qcow2", &["-o", "compat=0.10"]),
            Format::Qcow2,
            Some(SIZE),
        ),
        (
            create(d.path(), "v3.img", "qcow2", &[]),
            Format::Qcow2,
            Some(SIZE),
        ),
        (
            create(
                d.path(),
                "zstd.img",
                "qcow2",
                &["-o", "compression_type=zstd"],
            ),
            Format::Qcow2,
            Some(SIZE),
        ),
        (
            create(d.path(), "sparse.img", "vmdk", &[]),
            Format::Vmdk,
            Some(SIZE),
        ),
        (
            create(
                d.path(),
                "stream.img",
                "vmdk",
                &["-o", "subformat=streamOptimized"],
            ),
            Format::Vmdk,
            Some(SIZE),
        ),
        (create(d.path(), "dyn.img", "vpc", &[]), Format::Vhd, None),
        (
            create(d.path(), "fixed.img", "vpc", &["-o", "subformat=fixed"]),
            Format::Vhd,
            None,
        ),
        (create(d.path(), "x.img", "vhdx", &[]), Format::Vhdx, None),
        (
            create(d.path(), "box.img", "vdi", &[]),
            Format::Vdi,
            Some(SIZE),
        ),
    ];
    for (p, format, size) in cases {
        let i = inspect_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(i.format, format, "{}", p.display());
        if size.is_some() {
            assert_eq!(i.virtual_size, size, "{}", p.display());
        }
        // File names play no part: every file is called .img.
        assert!(p.extension().unwrap() == "img");
    }
    let v2 = inspect_file(&d.path().join("v2.img")).unwrap();
    assert!(v2.details.contains(&"version=2".to_owned()));
    let z = inspect_file(&d.path().join("zstd.img")).unwrap();
    assert!(
        z.details.contains(&"compression=zstd".to_owned()),
        "{:?}",
        z.details
    );
    // VHD sizes are rounded to a geometry by qemu-img: at least the requested size.
    assert!(
        inspect_file(&d.path().join("dyn.img"))
            .unwrap()
            .virtual_size
            .unwrap()
            >= SIZE - (1 << 20)
    );
}

#[test]
fn compressed_qcow2_and_wrapped_images_are_identified() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("data.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    f.write_all(&vec![0x5a; 1 << 20]).unwrap();
    f.set_len(SIZE).unwrap();
    let comp = d.path().join("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        comp.to_str().unwrap(),
    ]);
    assert_eq!(inspect_file(&comp).unwrap().format, Format::Qcow2);

    let qcow = std::fs::read(&comp).unwrap();
    let wrap = |name: &str, bytes: Vec<u8>| {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        inspect_file(&p).unwrap()
    };
    let z = wrap("w.zst", zstd::encode_all(&qcow[..], 3).unwrap());
    assert_eq!(
        (z.format, z.wrapper, z.virtual_size),
        (Format::Qcow2, Some(Wrapper::Zstd), Some(SIZE))
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&qcow).unwrap();
    let g = wrap("w.gz", gz.finish().unwrap());
    assert_eq!((g.format, g.wrapper), (Format::Qcow2, Some(Wrapper::Gzip)));
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &qcow[..], &mut xz).unwrap();
    let x = wrap("w.xz", xz);
    assert_eq!((x.format, x.wrapper), (Format::Qcow2, Some(Wrapper::Xz)));
}

/// Asserts that `p` is refused with a reason that contains `reason`.
fn assert_refused(p: &Path, reason: &str) {
    match inspect_file(p) {
        Ok(i) => panic!("{} was accepted as {:?}", p.display(), i),
        Err(e) => assert!(e.to_string().contains(reason), "{}: {e}", p.display()),
    }
}

#[test]
fn hostile_images_are_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let base = create(d.path(), "base.qcow2", "qcow2", &[]);
    let backed = create(
        d.path(),
        "backed.img",
        "qcow2",
        &["-b", base.to_str().unwrap(), "-F", "qcow2"],
    );
    assert_refused(&backed, "backing file");
    let data_file = format!("data_file={}", d.path().join("data.raw").display());
    // Images whose data lives in other files.
    for (name, format, opts, reason) in [
        ("ext.img", "qcow2", ["-o", &data_file], "external data file"),
        (
            "flat.img",
            "vmdk",
            ["-o", "subformat=monolithicFlat"],
            "vmdk descriptor file refers to other files",
        ),
        (
            "split.img",
            "vmdk",
            ["-o", "subformat=twoGbMaxExtentSparse"],
            "refers to other files",
        ),
    ] {
        assert_refused(&create(d.path(), name, format, &opts), reason);
    }

    // Truncated tables: the L1 table lies beyond the end of the file.
    let trunc = d.path().join("trunc.img");
    std::fs::copy(&base, &trunc).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&trunc)
        .unwrap();
    f.set_len(128 * 1024).unwrap();
    assert_refused(&trunc, "points outside the file");

    // A header that lies: 1 TiB virtual size with the L1 table of an 8 MiB disk.
    let lying = d.path().join("lying.img");
    std::fs::copy(&base, &lying).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&lying)
        .unwrap();
    f.seek(SeekFrom::Start(24)).unwrap();
    f.write_all(&(1u64 << 40).to_be_bytes()).unwrap();
    drop(f);
    assert_refused(&lying, "header lies about the size");

    // A qcow2 declared as raw is refused as a mismatch, whatever its name says.
    let err = inspect_as(&mut std::fs::File::open(&base).unwrap(), Format::Raw).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::FormatMismatch {
                declared: "raw",
                detected: "qcow2"
            }
        ),
        "{err}"
    );
    // And a hostile qcow2 declared as raw is refused for what it is.
    let err = inspect_as(&mut std::fs::File::open(&backed).unwrap(), Format::Raw).unwrap_err();
    assert!(err.to_string().contains("backing file"), "{err}");
}

#[test]
fn garbage_and_tiny_files_do_not_panic() {
    let d = tempfile::tempdir().unwrap();
    for (i, bytes) in [
        &b""[..],
        b"QFI\xfb",
        b"KDMV\x01\0\0\0",
        b"\x1f\x8b\x08\0garbage",
        b"# Disk DescriptorFile\n",
    ]
    .iter()
    .enumerate()
    {
        let p = d.path().join(format!("g{i}"));
        std::fs::write(&p, bytes).unwrap();
        let _ = inspect_file(&p);
    }
    let p = d.path().join("qcow-head");
    std::fs::write(&p, b"QFI\xfb\0\0\0\x03").unwrap();
    assert!(matches!(
        inspect_file(&p),
        Err(ImageError::Truncated { .. })
    ));
}
