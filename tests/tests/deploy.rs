//! Tier 4: the bare-metal lifecycle end to end on a lab rack of three QEMU nodes behind
//! ipmi_sim BMCs. Enrolled with `ferric lab enroll`, they are managed, inspected (one network
//! boot into the ramdisk), provided (cleaned by the ramdisk that stayed: fast track) and
//! deployed all at once with a small real OS image that boots from each node's own disk and
//! prints a marker and the host name from its config drive on the serial console; then
//! undeployed (network boot, clean) back to available. Then the failures: an image whose
//! bytes are not the ones stored (deploy-failed naming both digests, recovered by manage and
//! provide), a boot device that does not change (caught when set), and a node that never
//! calls back (deploy-failed at the deadline, with why).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_lab::Rack;
use ferric_tests::{cli, cli_ok};
use std::path::Path;
use std::time::Duration;

const MEMORY_MIB: u64 = 512;
const DISK: u64 = 256 << 20;
const MARKER: &str = "deploy-marker-7f3a";

fn console(rack: &Rack, n: &ferric_lab::Node) -> String {
    ferric_tests::rack::console(rack, n)
}

async fn wait_state(api: std::net::SocketAddr, rack: &Rack, names: &[&str], state: &str) -> String {
    ferric_tests::rack::wait_state(api, rack, names, state)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_lab_nodes_are_inspected_cleaned_deployed_and_taken_back() {
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build(MARKER).unwrap();
    let name = format!("d{}", std::process::id() % 100_000);
    let lab_root = tmp.path().join("lab");
    let r = ferric_tests::rack::up(&lab_root, &name, 3, MEMORY_MIB, DISK).unwrap();
    let rack = &r.0;

    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    cfg.lifecycle.callback = Duration::from_secs(90);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();

    // Enrolled as a new user would: `ferric lab enroll`.
    let root = lab_root.to_str().unwrap();
    let enrolled = cli_ok(api, &["lab", "--name", &name, "--root", root, "enroll"]).await;
    let names: Vec<&str> = rack.nodes.iter().map(|n| n.name.as_str()).collect();
    for n in &names {
        assert!(enrolled.contains(n), "{enrolled}");
    }
    let up = cli_ok(
        api,
        &["image", "upload", image.to_str().unwrap(), "--name", "os"],
    )
    .await;
    assert!(up.contains("qcow2"), "{up}");

    // A verb that does not apply is refused with what would.
    let (ok, _, err) = cli(api, &["node", "deploy", names[0], "--image", "os"], &[]).await;
    assert!(!ok && err.contains("manage it first"), "{err}");

    let mut all = vec!["node", "manage"];
    all.extend(&names);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "manageable").await;

    let mut all = vec!["node", "inspect"];
    all.extend(&names);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "manageable").await;
    let c = ferric_tests::client(api);
    for n in &names {
        let d: serde_json::Value = c.get(&format!("/v1/nodes/{n}")).await.unwrap();
        let disks = d["inspection"]["inventory"]["disks"].as_array().unwrap();
        assert!(
            disks
                .iter()
                .any(|x| x["name"] == "vda" && x["size_bytes"] == DISK),
            "{d}"
        );
        assert_eq!(
            d["node"]["connected"], true,
            "the ramdisk stays (fast track): {d}"
        );
    }

    // Fast track: the ramdisks that inspected clean, with no second network boot.
    let boots_before = ferric_tests::rack::count_in_consoles(rack, "FERRIC-RAMDISK-NET");
    let mut all = vec!["node", "provide"];
    all.extend(&names);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "available").await;

    let mut all = vec!["node", "deploy"];
    all.extend(&names);
    all.extend(["--image", "os"]);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "active").await;
    assert_eq!(
        ferric_tests::rack::count_in_consoles(rack, "FERRIC-RAMDISK-NET"),
        boots_before,
        "inspect → clean → deploy took one network boot per node"
    );
    for n in &rack.nodes {
        let text = ferric_tests::wait_for(
            Duration::from_secs(120),
            "the deployed OS on the console",
            || async {
                let t = console(rack, n);
                Ok(t.contains(&format!("FERRIC-OS-HOSTNAME {}", n.name))
                    .then_some(t))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", console(rack, n)));
        assert!(text.contains(&format!("FERRIC-OS {MARKER}")), "{text}");
    }
    let shown = cli_ok(api, &["node", "show", names[0]]).await;
    assert!(
        shown.contains("state:        active") && shown.contains("image:        os"),
        "{shown}"
    );
    assert!(
        shown.contains("deploying") && shown.contains("verb deploy"),
        "{shown}"
    );

    let mut all = vec!["node", "undeploy"];
    all.extend(&names);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "available").await;

    // Every plan of the lifecycle succeeded, each of its steps reported exactly once.
    for n in names.iter().chain(["mgmt"].iter()) {
        ferric_tests::rack::every_step_once(&c, n).await.unwrap();
    }

    failures(api, rack, &c, &coord, &names).await;
    from_a_url(api, rack, &image, tmp.path()).await;

    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// An image the ramdisk fetches from a URL (an HTTP server on the provisioning network, not
/// the store): with a checksum it does not have, the deploy fails naming both digests; with
/// its own, the node boots it.
async fn from_a_url(api: std::net::SocketAddr, rack: &Rack, image: &Path, tmp: &Path) {
    let n = &rack.nodes[0];
    let dir = tmp.join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(image, dir.join("os.qcow2")).unwrap();
    let host = format!("10.248.{}.1", rack.subnet);
    let free_port = || {
        std::net::TcpListener::bind((host.as_str(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    // Plain HTTP: Python's http.server.
    let port = free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            &host,
            "--directory",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // HTTPS with a certificate from the operator's own CA, which the ramdisk trusts because
    // it was built with `--ca` (and no public bundle holds).
    let (cert, key) = ferric_tests::ramdisk::image_server_cert(host.parse().unwrap()).unwrap();
    std::fs::write(tmp.join("www.pem"), cert).unwrap();
    std::fs::write(tmp.join("www.key"), key).unwrap();
    let tls_port = free_port();
    let mut tls_server = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/https_server.py"))
        .args([&host, &tls_port.to_string()])
        .arg(&dir)
        .arg(tmp.join("www.pem"))
        .arg(tmp.join("www.key"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{host}:{port}/os.qcow2");
    let tls_url = format!("https://{host}:{tls_port}/os.qcow2");
    for p in [port, tls_port] {
        ferric_tests::wait_for(
            Duration::from_secs(10),
            "the image's HTTP servers",
            || async {
                Ok(tokio::net::TcpStream::connect((host.as_str(), p))
                    .await
                    .ok())
            },
        )
        .await
        .unwrap();
    }
    // The server is Python's, checked with curl against the same CA before a node uses it.
    let ca = ferric_tests::hv::target_dir()
        .unwrap()
        .join("ramdisk/image-ca.pem");
    let curl = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(&tls_url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let sha = {
        let o = std::process::Command::new("sha256sum")
            .arg(image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let wrong = "0".repeat(64);
    let deploy = |url: String, checksum: String| async move {
        cli_ok(
            api,
            &[
                "node",
                "deploy",
                &n.name,
                "--image-url",
                &url,
                "--checksum",
                &checksum,
            ],
        )
        .await
    };
    deploy(url.clone(), format!("sha256:{wrong}")).await;
    let wait = [
        "node",
        "wait",
        &n.name,
        "--state",
        "active",
        "--timeout",
        "6m",
    ];
    let (ok, out, err) = cli(api, &wait, &[]).await;
    assert!(
        !ok,
        "deployed with a checksum the image does not have:\n{out}"
    );
    assert!(
        err.contains("deploy-failed") && err.contains(&wrong) && err.contains(&sha),
        "both digests are named: {err}"
    );
    cli_ok(api, &["node", "manage", &n.name]).await;
    cli_ok(api, &["node", "provide", &n.name]).await;
    wait_state(api, rack, &[n.name.as_str()], "available").await;
    let booted = console(rack, n)
        .matches(&format!("FERRIC-OS-HOSTNAME {}", n.name))
        .count();
    deploy(tls_url.clone(), format!("sha256:{sha}")).await;
    wait_state(api, rack, &[n.name.as_str()], "active").await;
    ferric_tests::wait_for(
        Duration::from_secs(120),
        "the image from the https URL booted",
        || async {
            let t = console(rack, n);
            Ok(
                (t.matches(&format!("FERRIC-OS-HOSTNAME {}", n.name)).count() > booted)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", console(rack, n)));
    let shown = cli_ok(api, &["node", "show", &n.name]).await;
    assert!(shown.contains(&tls_url), "{shown}");
    for s in [&mut server, &mut tls_server] {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// A corrupted image and a node that never calls back.
async fn failures(
    api: std::net::SocketAddr,
    rack: &Rack,
    c: &ferric_coordinator::client::Client,
    coord: &ferric_coordinator::Running,
    names: &[&str],
) {
    // The stored bytes of the image change behind the store's back.
    let img: serde_json::Value = c.get("/v1/images/os").await.unwrap();
    let sha = img["sha256"].as_str().unwrap().to_owned();
    let blob = coord.shared.images.blob(&sha);
    let middle = std::fs::metadata(&blob).unwrap().len() / 2;
    flip_a_byte(&blob, middle);
    let err = deploy_fails(api, names[0]).await;
    assert!(err.contains("deploy-failed") && err.contains(&sha), "{err}");
    assert!(err.contains("expected"), "both digests are named: {err}");
    flip_a_byte(&blob, middle);
    // Recoverable: manage, provide.
    cli_ok(api, &["node", "manage", names[0]]).await;
    cli_ok(api, &["node", "provide", names[0]]).await;
    wait_state(api, rack, &names[..1], "available").await;

    // A boot device that does not change is caught when it is set, and named.
    let n = &rack.nodes[1];
    assert_eq!(n.name, names[1]);
    // Powered off, its ramdisk is gone: the deploy boots it anew.
    cli_ok(api, &["node", "power", "off", &n.name]).await;
    ferric_lab::fault(rack, &n.name, &ferric_lab::Fault::BootStuck).unwrap();
    let err = deploy_fails(api, &n.name).await;
    assert!(
        err.contains("deploy-failed") && err.contains("asked for boot device Pxe"),
        "{err}"
    );
    ferric_lab::fault(rack, &n.name, &ferric_lab::Fault::Clear).unwrap();
    cli_ok(api, &["node", "manage", &n.name]).await;
    cli_ok(api, &["node", "provide", &n.name]).await;
    wait_state(api, rack, &names[1..2], "available").await;

    // A node that boots but never calls back (its provisioning link is down) fails at the
    // callback deadline, saying so, and does not hang.
    let n = &rack.nodes[2];
    cli_ok(api, &["node", "power", "off", &n.name]).await;
    ferric_lab::fault(rack, &n.name, &ferric_lab::Fault::NetDown).unwrap();
    let started = std::time::Instant::now();
    let err = deploy_fails(api, &n.name).await;
    assert!(
        err.contains("deploy-failed") && err.contains("no ramdisk called back within 1m 30s"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "no hang: {:?}",
        started.elapsed()
    );
    ferric_lab::fault(rack, &n.name, &ferric_lab::Fault::Clear).unwrap();
    let shown = cli_ok(api, &["node", "show", &n.name]).await;
    assert!(
        shown.contains("last error:   no ramdisk called back"),
        "{shown}"
    );
    assert!(shown.contains("deadline passed"), "{shown}");
}

/// Deploys `node` with the image `os` and waits for it to be active, which must fail; returns
/// what `ferric node wait` said.
async fn deploy_fails(api: std::net::SocketAddr, node: &str) -> String {
    cli_ok(api, &["node", "deploy", node, "--image", "os"]).await;
    let wait = ["node", "wait", node, "--state", "active", "--timeout", "6m"];
    let (ok, out, err) = cli(api, &wait, &[]).await;
    assert!(!ok, "{node} was deployed, but must not have been:\n{out}");
    err
}

fn flip_a_byte(p: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x5a;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

/// The deploy tests' OS image boots from its own disk (SYSLINUX from its MBR) and says it has
/// no config drive when it has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_os_image_boots_from_its_own_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build(MARKER).unwrap();
    let console = tmp.path().join("console.log");
    let mut args = ferric_lab::qemu::machine_args("tcg", 256);
    args.extend(
        [
            "-drive",
            &format!(
                "file={},format=qcow2,if=virtio,snapshot=on",
                image.display()
            ),
            "-boot",
            "order=c",
            "-vga",
            "none",
            "-serial",
            &format!("file:{}", console.display()),
        ]
        .map(String::from),
    );
    let _qemu = ferric_tests::node::spawn_qemu(&args, tmp.path()).unwrap();
    ferric_tests::wait_for(
        Duration::from_secs(120),
        "the OS on the console",
        || async {
            let t = std::fs::read_to_string(&console).unwrap_or_default();
            Ok((t.contains(&format!("FERRIC-OS {MARKER}"))
                && t.contains("FERRIC-OS-NO-CONFIG-DRIVE"))
            .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    });
}
