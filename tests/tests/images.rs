//! The image store through a real coordinator: `ferric image` as a user runs it, inspection
//! and refusal on the server, content addressing, and the write pipeline streaming an image
//! from the store to a real loop device across a connection that breaks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_images::source::ImageSource;
use ferric_images::write::{Algo, WriteOptions, write_from};
use ferric_tests::hv::{compressed_qcow2, run};
use ferric_tests::{admin_token, cli, cli_ok, start_coordinator};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(program: &str, args: &[&str]) -> String {
    run(Command::new(program).args(args)).unwrap()
}

fn sha256_of(p: &Path) -> String {
    sh("sha256sum", &[p.to_str().unwrap()])[..64].to_owned()
}

/// 24 MiB with data runs between zeros, and its qcow2 forms.
fn make_images(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(24 << 20).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (off, len) in [(0u64, 1usize << 20), (7 << 20, 3 << 20), (20 << 20, 12_345)] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &data, off).unwrap();
    }
    drop(f);
    let q = compressed_qcow2(&raw).unwrap();
    let backed = dir.join("backed.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            q.to_str().unwrap(),
            "-F",
            "qcow2",
            backed.to_str().unwrap(),
        ],
    );
    (raw, q, backed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_uploaded_inspected_stored_by_content_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let api = coord.api;
    let (raw, q, backed) = make_images(dir.path());
    let blobs = dir.path().join("coord/images/sha256");

    let q_path = q.to_str().unwrap();
    cli_ok(api, &["image", "upload", q_path, "--name", "deb"]).await;
    let out = cli_ok(api, &["-o", "json", "image", "show", "deb"]).await;
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["format"], "qcow2");
    assert_eq!(shown["virtual_size"], 24 << 20);
    assert_eq!(shown["sha256"], sha256_of(&q));
    assert!(
        blobs.join(sha256_of(&q)).exists(),
        "stored under its sha256"
    );

    // The same content under a second name shares the blob.
    cli_ok(api, &["image", "upload", q_path, "--name", "deb-copy"]).await;
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1);
    let list = cli_ok(api, &["image", "list"]).await;
    assert!(
        list.contains("deb ") && list.contains("deb-copy") && list.contains("qcow2"),
        "{list}"
    );

    // Refused by the CLI before sending, and by the server when sent anyway.
    let (success, _, err) = cli(
        api,
        &["image", "upload", backed.to_str().unwrap(), "--name", "bad"],
        &[],
    )
    .await;
    assert!(!success);
    assert!(err.contains("backing file"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = ferric_tests::http_client(api);
    // `PUT /v1/images/{to}` of the file `from`, bypassing the CLI's checks.
    let put = |to: &str, from: &Path| {
        http.put(format!("https://{api}/v1/images/{to}"))
            .bearer_auth(admin_token(api).unwrap())
            .body(std::fs::read(from).unwrap())
            .send()
    };
    let resp = put("bad", &backed).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("backing file"));
    let wrong = "0".repeat(64);
    let resp = put(&format!("lying?checksum=sha256:{wrong}"), &q)
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let msg = resp.text().await.unwrap();
    assert!(
        msg.contains(&format!("expected {wrong}")) && msg.contains(&sha256_of(&q)),
        "{msg}"
    );
    // A taken name is refused, and the client hears why even while it is still sending.
    let resp = put("deb", &raw).await.unwrap();
    assert_eq!(resp.status(), 409, "a taken name is refused");
    let (success, _, err) = cli(api, &["image", "upload", q_path, "--name", "deb"], &[]).await;
    assert!(!success);
    assert!(err.contains("an image named `deb` exists"));
    let out = cli_ok(api, &["-o", "json", "image", "list"]).await;
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(all.len(), 2, "refused uploads leave no record: {all:?}");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1, "and no blob");
    let incoming = dir.path().join("coord/images/incoming");
    assert_eq!(
        std::fs::read_dir(&incoming).unwrap().count(),
        0,
        "nor partial files"
    );

    // Deleting one name keeps the shared blob; deleting the last removes it.
    cli_ok(api, &["image", "delete", "deb"]).await;
    assert!(blobs.join(sha256_of(&q)).exists());
    cli_ok(api, &["image", "delete", "deb-copy"]).await;
    assert!(!blobs.join(sha256_of(&q)).exists());
    let (success, _, err) = cli(api, &["image", "show", "deb"], &[]).await;
    assert!(!success);
    assert!(err.contains("no image named `deb`"));
    coord.shutdown().await;
}

/// A TCP relay that cuts each of its first `cuts` connections after `after` bytes from the
/// server.
fn cutting_relay(target: std::net::SocketAddr, cuts: usize, after: usize) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, client) in l.incoming().enumerate() {
            let Ok(mut client) = client else { continue };
            let mut server = std::net::TcpStream::connect(target).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            std::thread::spawn(move || {
                let limit = if n < cuts { after } else { usize::MAX };
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(k) = server.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let k = k.min(limit - sent);
                    if client.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    sent += k;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_streams_from_the_store_to_a_loop_device_through_a_breaking_link() {
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let (raw, q, _) = make_images(dir.path());
    let view = ferric_tests::client(coord.api)
        .upload_image(&q, "deb", Some("qcow2"), None, |_, _| {})
        .await
        .unwrap();

    // The device starts full of old data.
    let backing = dir.path().join("dev.img");
    std::fs::write(&backing, vec![0xa5; 32 << 20]).unwrap();
    let dev = Loop(
        sh("losetup", &["-f", "--show", backing.to_str().unwrap()])
            .trim()
            .to_owned(),
    );

    // Every connection but the last few is cut after 100 KiB.
    let relay = cutting_relay(coord.api, 3, 100 << 10);
    // TLS end to end through the relay: its address is 127.0.0.1, a name the certificate has.
    let url = format!("https://{relay}{}", view.path);
    let device = PathBuf::from(&dev.0);
    let opts = WriteOptions {
        declared: Some(ferric_images::inspect::Format::Qcow2),
        expected: Some((Algo::Sha256, view.sha256.clone())),
        direct: Some(true),
    };
    let http = ferric_tests::blob_options(coord.api);
    let report = tokio::task::spawn_blocking(move || {
        let mut source = ImageSource::Url(url).open_with(&http)?;
        write_from(&mut *source, &device, &opts, &mut |_| {})
    })
    .await
    .unwrap()
    .unwrap();
    assert!(report.resumes >= 1, "{report:?}");
    assert_eq!(report.digest.as_deref(), Some(view.sha256.as_str()));

    let on_device = std::fs::read(&dev.0).unwrap();
    let want = std::fs::read(&raw).unwrap();
    assert!(
        on_device[..want.len()] == want[..],
        "the disk matches the source"
    );
    assert!(
        on_device[want.len()..].iter().all(|b| *b == 0xa5),
        "nothing past the disk is touched"
    );
    coord.shutdown().await;
}

/// Every file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_size_limit_is_refused_and_leaves_the_disk_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    cfg.max_image_bytes = 4 << 20;
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let small = dir.path().join("small.raw");
    std::fs::write(&small, vec![7u8; 1 << 20]).unwrap();
    cli_ok(
        api,
        &["image", "upload", small.to_str().unwrap(), "--name", "ok"],
    )
    .await;
    let images = dir.path().join("coord/images");
    let before = files_under(&images);
    assert_eq!(before.len(), 1, "{before:?}");

    // Announced too large (Content-Length), through the CLI.
    let big = dir.path().join("big.raw");
    std::fs::write(&big, vec![9u8; 6 << 20]).unwrap();
    let (ok, _, err) = cli(
        api,
        &["image", "upload", big.to_str().unwrap(), "--name", "big"],
        &[],
    )
    .await;
    assert!(!ok, "a 6 MiB image was taken with a 4 MiB limit");
    assert!(
        err.contains("image_too_large") || err.contains("larger than this coordinator takes"),
        "{err}"
    );
    assert_eq!(files_under(&images), before);

    // Sent without a length (chunked): refused once past the limit, the partial file gone.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![5u8; 1 << 20])).collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = ferric_tests::http_client(api)
        .put(format!("https://{api}/v1/images/chunked"))
        .bearer_auth(admin_token(api).unwrap())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status(), 413, "{:?}", r.text().await);
    }
    assert_eq!(files_under(&images), before);
    let list = cli_ok(api, &["image", "list"]).await;
    assert!(
        list.contains("ok") && !list.contains("big") && !list.contains("chunked"),
        "{list}"
    );
    coord.shutdown().await;
}

/// Finding 11 of the provisioning network's review: a gzip image larger than the disk (8 GiB
/// of zeros, 36 MiB compressed) wrote for five minutes, then failed with "zero … on the
/// device: EINVAL". Now: a raw image larger than the device is refused before a byte is
/// written, and a compressed one as soon as it passes the end — each naming both sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_larger_than_the_device_fails_at_its_end_naming_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let backing = dir.path().join("dev.img");
    std::fs::write(&backing, vec![0xa5; 32 << 20]).unwrap();
    let dev = Loop(
        sh("losetup", &["-f", "--show", backing.to_str().unwrap()])
            .trim()
            .to_owned(),
    );
    // 40 MiB: zeros, then data past the device's end.
    let raw = dir.path().join("big.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(40 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 4096], 36 << 20).unwrap();
    drop(f);
    let gz = dir.path().join("big.raw.gz");
    sh(
        "sh",
        &[
            "-c",
            &format!("gzip -c {} > {}", raw.display(), gz.display()),
        ],
    );
    let c = ferric_tests::client(coord.api);
    let http = ferric_tests::blob_options(coord.api);
    for (file, name, known) in [(&raw, "big-raw", true), (&gz, "big-gz", false)] {
        let view = c
            .upload_image(file, name, None, None, |_, _| {})
            .await
            .unwrap();
        let url = format!("{}{}", ferric_tests::base_url(coord.api), view.path);
        let device = PathBuf::from(&dev.0);
        let opts = WriteOptions {
            declared: None,
            expected: Some((Algo::Sha256, view.sha256.clone())),
            direct: Some(true),
        };
        let http = http.clone();
        let err = tokio::task::spawn_blocking(move || {
            let mut source = ImageSource::Url(url).open_with(&http)?;
            write_from(&mut *source, &device, &opts, &mut |_| {})
        })
        .await
        .unwrap()
        .expect_err("the image does not fit");
        let msg = err.to_string();
        assert!(
            msg.contains("larger than the target") && msg.contains(&(32u64 << 20).to_string()),
            "{msg}"
        );
        match err {
            ferric_images::inspect::ImageError::TooLarge {
                image,
                passed,
                target,
            } => {
                assert_eq!(target, 32 << 20);
                assert_eq!(passed, 32 << 20);
                if known {
                    assert_eq!(image, Some(40 << 20));
                    assert!(msg.contains(&(40u64 << 20).to_string()), "{msg}");
                    // Refused before anything was written.
                    let on_device = std::fs::read(&dev.0).unwrap();
                    assert!(on_device.iter().all(|b| *b == 0xa5));
                } else {
                    assert_eq!(
                        image, None,
                        "a compressed image's size is not known up front"
                    );
                }
            }
            other => panic!("{other:?}"),
        }
    }
    coord.shutdown().await;
}
