//! Tier 3/4: the coordinator's boot services on real sockets — per-boot tokens through the
//! boot HTTP server and real QUIC enrollment, a ramdisk agent that connects and is inspected,
//! TFTP read with curl, and a burst of a hundred DHCP DISCOVERs across a veth pair in a
//! network namespace made by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::enroll::{EnrollError, EnrollOptions, enroll};
use ferric_agent::tls::CaPin;
use ferric_coordinator::boot::BootConfig;
use ferric_proto::msg::{EnrollRefusal, Role};
use ferric_tests::{cli, free_port};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A coordinator with boot services on `iface`, its API and link addresses, and the boot HTTP
/// address.
async fn coordinator(
    dir: &std::path::Path,
    iface: &str,
    ttl: Duration,
) -> (ferric_coordinator::Running, SocketAddr) {
    let mut cfg = ferric_tests::coordinator_config(&dir.join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(iface, dir.join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    boot.tftp_port = free_port().unwrap();
    boot.token_ttl = ttl;
    cfg.boot = Some(boot);
    let c = ferric_tests::start(cfg).await.unwrap();
    let http = c.boot.as_ref().unwrap().http;
    (c, http)
}

/// `(token, ca)` from a node's boot script.
async fn script(http: SocketAddr, mac: &str) -> (String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::get(format!(
        "http://{http}/boot/node/{}.ipxe",
        mac.replace(':', "-")
    ))
    .await
    .unwrap()
    .error_for_status()
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(text.starts_with("#!ipxe\n"), "{text}");
    let word = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_owned()
    };
    assert!(word("ferric.mac=") == mac);
    (word("ferric.token="), word("ferric.ca="))
}

async fn ramdisk_enroll(
    link: SocketAddr,
    node: &str,
    token: &str,
    ca: &str,
) -> Result<ferric_agent::tls::Identity, EnrollError> {
    enroll(&EnrollOptions {
        coordinator: link.to_string(),
        token: token.to_owned(),
        ca_pin: ca.parse::<CaPin>().unwrap(),
        node: node.to_owned(),
        role: Role::Ramdisk,
        timeout: Duration::from_secs(20),
    })
    .await
}

fn refused(r: Result<ferric_agent::tls::Identity, EnrollError>) -> EnrollRefusal {
    match r {
        Err(EnrollError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_boot_token_enrolls_its_node_once_and_dies_with_its_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, http) = coordinator(dir.path(), "lo", Duration::from_secs(2)).await;
    let link = SocketAddr::from(([127, 0, 0, 1], coord.listen.port()));
    ferric_tests::enroll_in_process(coord.api, link, "mgmt", &dir.path().join("mgmt"))
        .await
        .unwrap();
    for (node, mac) in [("bm1", "52:54:00:aa:00:01"), ("bm2", "52:54:00:aa:00:02")] {
        let (ok, _, err) = cli(
            coord.api,
            &[
                "node",
                "enroll",
                node,
                "--bmc",
                "ipmi://admin@127.0.0.1:1",
                "--password-env",
                "PW",
                "--mac",
                mac,
            ],
            &[("PW", "x")],
        )
        .await;
        assert!(ok, "{err}");
    }
    // A MAC no node has gets no script.
    let none = reqwest::get(format!("http://{http}/boot/node/52-54-00-ff-ff-ff.ipxe"))
        .await
        .unwrap();
    assert_eq!(none.status(), 404);

    // bm1's token does not enroll bm2, and a hypervisor cannot use it.
    let (t1, ca) = script(http, "52:54:00:aa:00:01").await;
    assert_eq!(
        refused(ramdisk_enroll(link, "bm2", &t1, &ca).await),
        EnrollRefusal::InvalidToken
    );
    let as_host = enroll(&EnrollOptions {
        coordinator: link.to_string(),
        token: t1.clone(),
        ca_pin: ca.parse().unwrap(),
        node: "bm1".into(),
        role: Role::Hypervisor,
        timeout: Duration::from_secs(20),
    })
    .await;
    assert_eq!(refused(as_host), EnrollRefusal::InvalidToken);
    // It enrolls bm1, once.
    let id = ramdisk_enroll(link, "bm1", &t1, &ca).await.unwrap();
    assert_eq!(
        refused(ramdisk_enroll(link, "bm1", &t1, &ca).await),
        EnrollRefusal::TokenUsed
    );

    // The next boot's script kills the token of the boot before; an unused token expires.
    let (t2a, _) = script(http, "52:54:00:aa:00:02").await;
    let (t2b, _) = script(http, "52:54:00:aa:00:02").await;
    assert_eq!(
        refused(ramdisk_enroll(link, "bm2", &t2a, &ca).await),
        EnrollRefusal::TokenExpired
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        refused(ramdisk_enroll(link, "bm2", &t2b, &ca).await),
        EnrollRefusal::TokenExpired
    );

    // bm1's ramdisk (an agent with the ramdisk role, here with the fake machine) connects and
    // is inspected: the inspection is stored on the node.
    let state = dir.path().join("ramdisk-bm1");
    id.save(&state).unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let agent = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    let c = ferric_tests::client(coord.api);
    let d: serde_json::Value =
        ferric_tests::wait_for(Duration::from_secs(20), "an inspection", || async {
            let d: serde_json::Value = c.get("/v1/nodes/bm1").await?;
            Ok((!d["inspection"].is_null()).then_some(d))
        })
        .await
        .unwrap();
    assert!(agent.fake.calls().contains(&"inspect machine".to_owned()));
    let here = ferric_agent::inventory::read(&ferric_agent::inventory::Root::default());
    assert_eq!(
        d["inspection"]["inventory"]["cpu"]["count"], here.cpu.count,
        "{d}"
    );
    assert_eq!(d["node"]["connected"], true);
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_serves_ipxe_as_debian_ships_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    let mut boot = BootConfig::new("lo", dir.path().join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    let tftp = free_port().unwrap();
    boot.tftp_port = tftp;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let out = dir.path().join("undionly.kpxe");
    let st = tokio::process::Command::new("curl")
        .args(["-sS", "--tftp-blksize", "1428", "-o"])
        .arg(&out)
        .arg(format!("tftp://127.0.0.1:{tftp}/undionly.kpxe"))
        .status()
        .await
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read("/usr/lib/ipxe/undionly.kpxe").unwrap()
    );
    let missing = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("tftp://127.0.0.1:{tftp}/etc/passwd"))
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    coord.shutdown().await;
}

/// A network namespace with a veth pair to the host; removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}h", self.0)])
            .status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_hundred_discovers_on_a_real_link_is_answered_without_running_out() {
    let name = format!("fb{}", std::process::id() % 100_000);
    let ns = Netns(name.clone());
    let (host, peer) = (format!("{name}h"), format!("{name}p"));
    ip(&["netns", "add", &name]);
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "netns", &name]);
    ip(&["addr", "add", "10.251.7.1/24", "dev", &host]);
    ip(&["link", "set", &host, "up"]);
    ip(&["-n", &name, "link", "set", &peer, "up"]);
    ip(&["-n", &name, "link", "set", "lo", "up"]);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    let mut boot = BootConfig::new(&host, dir.path().join("ramdisk"));
    boot.http_port = 0;
    boot.discovery = true;
    boot.tftp_port = free_port().unwrap();
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();

    // The client side: a hundred PXE ROMs' DISCOVERs broadcast at once from the namespace,
    // and every OFFER counted, each with an address of its own.
    let out = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(ferric_tests::bin("ferric-dhcp-burst").unwrap())
        .args([&peer, "100", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offers: Vec<&str> = text.lines().filter(|l| l.starts_with("offer ")).collect();
    assert_eq!(offers.len(), 100, "{text}");
    let distinct: std::collections::HashSet<&str> = offers
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(distinct.len(), 100, "{text}");
    coord.shutdown().await;
    drop(ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_discovery_a_machine_no_node_has_boots_and_appears_as_enroll_with_its_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new("lo", dir.path().join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    boot.tftp_port = free_port().unwrap();
    boot.discovery = true;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let http = coord.boot.as_ref().unwrap().http;
    let link = SocketAddr::from(([127, 0, 0, 1], coord.listen.port()));
    let mac = "52:54:00:de:ad:01";
    let (token, ca) = script(http, mac).await;
    // The same machine booting again is the same node.
    let (token2, _) = script(http, mac).await;
    assert_ne!(token, token2);
    let node = "disc-525400dead01";
    let id = ramdisk_enroll(link, node, &token2, &ca).await.unwrap();
    let state = dir.path().join("ramdisk");
    id.save(&state).unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let agent = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    let c = ferric_tests::client(coord.api);
    ferric_tests::wait_for(Duration::from_secs(20), "an inspection", || async {
        let d: serde_json::Value = c.get(&format!("/v1/nodes/{node}")).await?;
        Ok((!d["inspection"].is_null()).then_some(()))
    })
    .await
    .unwrap();
    let list = ferric_tests::cli_ok(coord.api, &["node", "list"]).await;
    let row = list
        .lines()
        .find(|l| l.starts_with(node))
        .unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["baremetal", "ramdisk"], "{list}");
    assert!(row.trim_end().ends_with("enroll"), "{list}");
    let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await.unwrap();
    assert_eq!(nodes.len(), 1, "one machine, one node: {nodes:?}");
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
