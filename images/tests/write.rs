//! Images made by qemu-img in the test are written by Ferric and compared byte for byte with
//! `qemu-img convert -O raw` of the same image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{qemu_img, qemu_img_to_raw, run};
use ferric_images::inspect::Format;
use ferric_images::write::write_to_file;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

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

/// A temporary directory with the source disk (`source`) and its qcow2, converted with `opts`.
fn source_and_qcow2(opts: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let img = to_qcow2(d.path(), &raw, "img.qcow2", opts);
    (d, raw, img)
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
        (
            "zstd.qcow2",
            vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        ),
        (
            "tiny-zstd-clusters.qcow2",
            vec![
                "-c",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=512,compression_type=zstd",
            ],
        ),
        (
            "big-clusters.qcow2",
            vec!["-O", "qcow2", "-o", "cluster_size=2M"],
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
        qemu_img_to_raw(&img, &theirs);
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

/// A disk whose size is not a multiple of the cluster size, with data in its last cluster.
#[test]
fn a_partial_last_cluster_is_written_exactly() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("odd.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    let size = (3 << 20) + 3 * 512;
    f.set_len(size).unwrap();
    f.seek(SeekFrom::Start(size - 700)).unwrap();
    f.write_all(&[0x5a; 700]).unwrap();
    drop(f);
    for (name, opts) in [
        ("odd.qcow2", vec![]),
        ("odd-zlib.qcow2", vec!["-c"]),
        ("odd-zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
    ] {
        let img = to_qcow2(d.path(), &raw, name, &opts);
        let out = d.path().join("out.raw");
        let report = write_to_file(&img, Some(Format::Qcow2), &out).unwrap();
        assert_eq!(report.virtual_size, size, "{name}");
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&raw).unwrap(),
            "{name}: written disk differs from the source"
        );
    }
}

/// Raw images inside gzip, zstd and xz are decompressed as they stream to the target.
#[test]
fn wrapped_raw_images_are_decompressed_on_the_way() {
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let bytes = std::fs::read(&raw).unwrap();
    let gz = d.path().join("img.raw.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap();
    let zst = d.path().join("img.raw.zst");
    std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    let xz = d.path().join("img.raw.xz");
    let mut xz_bytes = Vec::new();
    lzma_rs::xz_compress(&mut &bytes[..], &mut xz_bytes).unwrap();
    std::fs::write(&xz, xz_bytes).unwrap();
    for img in [gz, zst, xz] {
        let out = d.path().join("out.raw");
        let report = write_to_file(&img, Some(Format::Raw), &out)
            .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        assert_eq!(report.virtual_size, bytes.len() as u64);
        assert!(report.inspection.wrapper.is_some());
        assert!(
            std::fs::read(&out).unwrap() == bytes,
            "{}: written disk differs from the source",
            img.display()
        );
        assert!(report.zeros_skipped >= 10 << 20, "{report:?}");
    }
    // A qcow2 inside a wrapper would need random access: refused, and said why.
    let q = to_qcow2(d.path(), &raw, "w.qcow2", &[]);
    let qz = d.path().join("w.qcow2.zst");
    std::fs::write(
        &qz,
        zstd::encode_all(&std::fs::read(&q).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    let err = write_to_file(&qz, None, &d.path().join("no.raw")).unwrap_err();
    assert!(err.to_string().contains("decompress it first"), "{err}");
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
    let (d, _, img) = source_and_qcow2(&[]);
    let bytes = std::fs::read(&img).unwrap();
    let target = d.path().join("t.raw");

    let good = hex_digest::<sha2::Sha256>(&bytes);
    let opts = WriteOptions {
        declared: Some(Format::Qcow2),
        expected: Some((Algo::Sha256, good.to_uppercase())),
        ..WriteOptions::default()
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
        ..WriteOptions::default()
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
        ..WriteOptions::default()
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
    let (d, raw, img) = source_and_qcow2(&["-c"]);
    // The device starts full of old data: every zero range of the image must be zeroed on it.
    let backing = d.path().join("device.img");
    std::fs::write(&backing, vec![0xaa; 16 << 20]).unwrap();
    let dev = Loop(
        run("losetup", &["-f", "--show", backing.to_str().unwrap()])
            .trim()
            .to_owned(),
    );

    let report = write_to_file(&img, Some(Format::Qcow2), Path::new(&dev.0)).unwrap();
    assert!(report.zeros_skipped >= 10 << 20, "{report:?}");
    let theirs = d.path().join("theirs.raw");
    qemu_img_to_raw(&img, &theirs);
    let on_device = std::fs::read(&dev.0).unwrap();
    assert!(
        on_device == std::fs::read(&theirs).unwrap(),
        "device content differs from qemu-img convert"
    );
    assert!(backing.exists(), "a device target is never removed");

    // Every kind of image, through the page cache and with O_DIRECT, each over old contents.
    let mut images = vec![raw.clone()];
    for (name, opts) in [
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
        ("v3.qcow2", vec![]),
        ("zlib.qcow2", vec!["-c"]),
        ("zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
    ] {
        images.push(to_qcow2(d.path(), &raw, name, &opts));
    }
    let wrapped = d.path().join("img.raw.zst");
    std::fs::write(
        &wrapped,
        zstd::encode_all(&std::fs::read(&raw).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    images.push(wrapped);
    for img in images {
        for direct in [false, true] {
            std::fs::write(&dev.0, vec![0x55; 16 << 20]).unwrap();
            let opts = ferric_images::write::WriteOptions {
                direct: Some(direct),
                ..Default::default()
            };
            ferric_images::write::write_to_file_with(&img, Path::new(&dev.0), &opts, &mut |_| {})
                .unwrap_or_else(|e| panic!("{}: {e}", img.display()));
            assert!(
                std::fs::read(&dev.0).unwrap() == std::fs::read(&theirs).unwrap(),
                "{} (direct: {direct}): device content differs from qemu-img convert",
                img.display()
            );
        }
    }
}

/// A minimal HTTP/1.1 file server for the tests: `Range: bytes=N-`, an `ETag` (with
/// `If-Range`), and connections cut after `cut_after` bytes for the first `cuts` responses
/// longer than that.
struct FlakyServer {
    url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FlakyServer {
    fn start(file: std::path::PathBuf, cuts: usize, cut_after: usize) -> FlakyServer {
        Self::start_with(file, cuts, cut_after, Box::new(|_| {}))
    }

    /// `before(n)` runs before the n-th request (from 0) is answered.
    fn start_with(
        file: std::path::PathBuf,
        cuts: usize,
        cut_after: usize,
        before: Box<dyn Fn(usize) + Send + Sync>,
    ) -> FlakyServer {
        use std::io::{BufRead, BufReader};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/img", l.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        let before = std::sync::Arc::new(before);
        let cut = std::sync::Arc::new(AtomicUsize::new(0));
        let n = std::sync::Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (file, before, cut, n, log) = (
                    file.clone(),
                    before.clone(),
                    cut.clone(),
                    n.clone(),
                    log.clone(),
                );
                // A thread per connection, as a client may open a second one while its
                // first idles in its pool.
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut head = Vec::new();
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                break;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push(line.trim_end().to_string());
                        }
                        if head.is_empty() {
                            break;
                        }
                        before(n.fetch_add(1, Ordering::SeqCst));
                        let bytes = std::fs::read(&file).unwrap();
                        let etag = format!("\"{}\"", bytes.len() ^ bytes[bytes.len() / 2] as usize);
                        let header = |name: &str| {
                            head.iter().find_map(|h| {
                                let (k, v) = h.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                            })
                        };
                        let start = header("range")
                            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                            .filter(|_| header("if-range").is_none_or(|v| v == etag));
                        log.lock().unwrap().push(format!(
                            "{} {}",
                            head[0],
                            header("range").unwrap_or_default()
                        ));
                        let (status, from) = match start {
                            Some(s) => ("206 Partial Content", s),
                            None => ("200 OK", 0usize),
                        };
                        let body = &bytes[from..];
                        let mut resp = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: {etag}\r\n",
                            body.len()
                        );
                        if start.is_some() {
                            resp += &format!(
                                "Content-Range: bytes {from}-{}/{}\r\n",
                                bytes.len() - 1,
                                bytes.len()
                            );
                        }
                        resp += "\r\n";
                        if conn.write_all(resp.as_bytes()).is_err() {
                            break;
                        }
                        if body.len() > cut_after
                            && cut
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                                    (c < cuts).then_some(c + 1)
                                })
                                .is_ok()
                        {
                            let _ = conn.write_all(&body[..cut_after]);
                            let _ = conn.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        if conn.write_all(body).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FlakyServer { url, requests }
    }
}

#[test]
fn an_image_over_http_is_read_in_place_and_a_broken_transfer_resumes() {
    use ferric_images::source::ImageSource;
    use ferric_images::write::{Algo, WriteOptions, write_image};
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let raw_bytes = std::fs::read(&raw).unwrap();
    for (name, opts) in [("plain.qcow2", vec![]), ("zlib.qcow2", vec!["-c"])] {
        let img = to_qcow2(d.path(), &raw, name, &opts);
        let digest = hex_digest::<sha2::Sha256>(&std::fs::read(&img).unwrap());
        // Two responses are cut after 300 KiB: the reader must pick up where it was.
        let server = FlakyServer::start(img.clone(), 2, 300 << 10);
        let out = d.path().join("out.raw");
        let opts = WriteOptions {
            declared: Some(Format::Qcow2),
            expected: Some((Algo::Sha256, digest.clone())),
            ..WriteOptions::default()
        };
        let report = write_image(
            &ImageSource::Url(server.url.clone()),
            &out,
            &opts,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.digest.as_deref(), Some(digest.as_str()), "{name}");
        assert!(report.resumes >= 1, "{name}: {report:?}");
        assert!(
            std::fs::read(&out).unwrap() == raw_bytes,
            "{name}: written disk differs from the source"
        );
        let requests = server.requests.lock().unwrap().clone();
        assert!(
            requests.iter().all(|r| r.contains("bytes=")),
            "{name}: every request is a Range request: {requests:?}"
        );
    }
}

#[test]
fn an_image_that_changes_on_the_server_mid_transfer_is_refused() {
    use ferric_images::source::ImageSource;
    use ferric_images::write::{WriteOptions, write_image};
    let d = tempfile::tempdir().unwrap();
    let raw = source(d.path());
    let served = d.path().join("served.raw");
    std::fs::copy(&raw, &served).unwrap();
    // Cut every response after 1 MiB; before the fifth request the file is replaced.
    let mut other = std::fs::read(&raw).unwrap();
    other[8 << 20] ^= 0xff;
    let path = served.clone();
    let server = FlakyServer::start_with(
        served.clone(),
        usize::MAX,
        1 << 20,
        Box::new(move |n| {
            if n == 4 {
                std::fs::write(&path, &other).unwrap();
            }
        }),
    );
    let out = d.path().join("out.raw");
    let err = write_image(
        &ImageSource::Url(server.url.clone()),
        &out,
        &WriteOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("changed on the server"), "{err}");
}

#[test]
fn truncated_or_corrupt_qcow2_fails_naming_the_problem_and_leaves_no_target() {
    let (d, _, img) = source_and_qcow2(&[]);
    let bytes = std::fs::read(&img).unwrap();
    let target = d.path().join("t.raw");

    // Cut off the last data clusters: the tables now point past the end.
    let cut = d.path().join("cut.qcow2");
    std::fs::write(&cut, &bytes[..bytes.len() - 200_000]).unwrap();
    let err = write_to_file(&cut, None, &target).unwrap_err().to_string();
    assert!(err.contains("outside the file"), "{err}");
    assert!(!target.exists(), "a failed write leaves no target file");

    // Mark every allocated cluster compressed: the data is not deflate.
    let l1_offset = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let l2_offset = (u64::from_be_bytes(bytes[l1_offset..l1_offset + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    let mut bad = bytes.clone();
    for e in bad[l2_offset..l2_offset + 65536].chunks_exact_mut(8) {
        let v = u64::from_be_bytes(e.try_into().unwrap());
        if v != 0 {
            // Host offset in the low bits, one extra sector.
            let host = v & 0x00ff_ffff_ffff_fe00;
            let x = 62 - (16 - 8);
            e.copy_from_slice(&((1u64 << 62) | (1u64 << x) | host).to_be_bytes());
        }
    }
    let corrupt = d.path().join("corrupt.qcow2");
    std::fs::write(&corrupt, &bad).unwrap();
    let err = write_to_file(&corrupt, None, &target)
        .unwrap_err()
        .to_string();
    assert!(err.contains("compressed cluster at disk offset 0"), "{err}");
    assert!(!target.exists());
}

/// An HTTPS file server for the tests (rustls, a certificate from a CA made here): `Range:
/// bytes=N-`, and the first response longer than `cut_after` cut off.
fn tls_server(file: std::path::PathBuf, cut_after: usize) -> (String, Vec<u8>) {
    use std::io::Read;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://localhost:{}/img", l.local_addr().unwrap().port());
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn(move || {
        for tcp in l.incoming() {
            let Ok(tcp) = tcp else { continue };
            let (config, file, cut) = (config.clone(), file.clone(), cut.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let from: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("range: bytes="))
                        .and_then(|r| r.trim().strip_suffix('-')?.parse().ok())
                        .unwrap_or(0);
                    let bytes = std::fs::read(&file).unwrap();
                    let body = &bytes[from..];
                    let resp = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nETag: \"fixed\"\r\n\r\n",
                        body.len(),
                        bytes.len() - 1,
                        bytes.len()
                    );
                    if tls.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                    if body.len() > cut_after
                        && !cut.swap(true, std::sync::atomic::Ordering::SeqCst)
                    {
                        let _ = tls.write_all(&body[..cut_after]);
                        let _ = tls.flush();
                        let _ = tls.sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if tls.write_all(body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, ca.der().to_vec())
}

#[test]
fn an_image_over_https_is_verified_and_resumed() {
    use ferric_images::source::HttpSource;
    use ferric_images::write::{Algo, WriteOptions, write_from};
    let (d, raw, img) = source_and_qcow2(&["-c"]);
    let digest = hex_digest::<sha2::Sha256>(&std::fs::read(&img).unwrap());
    let (url, ca) = tls_server(img.clone(), 200 << 10);

    // Without trusting the server's CA, the certificate is refused.
    let err = HttpSource::open(&url).unwrap_err().to_string();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    let mut src = HttpSource::open_trusting(&url, &[ca]).unwrap();
    let out = d.path().join("out.raw");
    let opts = WriteOptions {
        expected: Some((Algo::Sha256, digest.clone())),
        ..WriteOptions::default()
    };
    let report = write_from(&mut src, &out, &opts, &mut |_| {}).unwrap();
    assert_eq!(report.digest.as_deref(), Some(digest.as_str()));
    assert!(report.resumes >= 1, "{report:?}");
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&raw).unwrap());
}
