//! Tier 3/4: the coordinator's boot services on real sockets — per-boot tokens through the
//! boot HTTP server and real QUIC enrollment, a ramdisk agent that connects and is inspected,
//! TFTP read with curl, and a burst of a hundred DHCP DISCOVERs across a veth pair in a
//! network namespace made by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::enroll::{EnrollError, EnrollOptions, enroll};
use ferric_coordinator::boot_services::BootConfig;
use ferric_proto::msg::{EnrollRefusal, Role};
use ferric_tests::netboot::{Machine, ramdisk_enroll, token_and_ca};
use ferric_tests::{cli, cli_ok, free_port};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// A coordinator with boot services on `iface`, and its boot HTTP and DHCP addresses.
async fn coordinator(
    dir: &std::path::Path,
    iface: &str,
    ttl: Duration,
) -> (ferric_coordinator::Running, SocketAddr, SocketAddr) {
    let mut cfg = ferric_tests::coordinator_config(&dir.join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(iface, dir.join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    boot.tftp_port = free_port().unwrap();
    boot.boot_ttl = ttl;
    let dhcp = SocketAddr::from(([127, 0, 0, 1], boot.dhcp_port));
    cfg.boot = Some(boot);
    let c = ferric_tests::start(cfg).await.unwrap();
    let http = c.boot.as_ref().unwrap().http;
    (c, http, dhcp)
}

fn refused(r: Result<ferric_agent::tls::Identity, EnrollError>) -> EnrollRefusal {
    match r {
        Err(EnrollError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn enroll_bm(api: SocketAddr, node: &str, mac: &str) {
    let (ok, _, err) = cli(
        api,
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

/// Finding 1 of the provisioning network's review: a plain GET of a node's script minted a
/// fresh per-boot token for any enrolled MAC, no boot pending, and killed the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_boot_token_is_made_only_for_a_boot_ferric_started_for_the_machines_address_and_used_once()
 {
    let dir = tempfile::tempdir().unwrap();
    let (coord, http, dhcp) = coordinator(dir.path(), "lo", Duration::from_secs(3)).await;
    let link = SocketAddr::from(([127, 0, 0, 1], coord.listen.port()));
    let _mgmt = ferric_tests::enrolled_agent(&coord, dir.path(), "mgmt")
        .await
        .unwrap();
    let bm1 = Machine::new("52:54:00:aa:00:01", Ipv4Addr::new(127, 128, 0, 11));
    let bm2 = Machine::new("52:54:00:aa:00:02", Ipv4Addr::new(127, 128, 0, 12));
    enroll_bm(coord.api, "bm1", &bm1.mac).await;
    enroll_bm(coord.api, "bm2", &bm2.mac).await;
    // A MAC no node has gets no script.
    let stranger = Machine::new("52:54:00:ff:ff:ff", Ipv4Addr::new(127, 128, 0, 99));
    stranger.dhcp_request(dhcp).unwrap();
    assert_ne!(stranger.fetch_script(http, None).await.unwrap().0, 200);

    // No boot Ferric started: no script, no token, from the machine's own address either.
    let (status, body) = bm1.lease_and_fetch(dhcp, http).await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no network boot Ferric started"), "{body}");

    // The operator boots it: its script goes to the address DHCP gave its MAC, and only there.
    cli_ok(coord.api, &["node", "bootdev", "bm1", "pxe"]).await;
    let (status, body) = bm1
        .fetch_script(http, Some(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    assert_eq!(status, 403, "another address: {body}");
    let (status, script) = bm1.fetch_script(http, None).await.unwrap();
    let (t1, ca) = token_and_ca(status, &script).unwrap();
    // Asked again, the same script: a second request never kills the token a machine holds.
    let (status, again) = bm1.fetch_script(http, None).await.unwrap();
    assert_eq!(token_and_ca(status, &again).unwrap().0, t1);

    // bm1's token does not enroll bm2, nor a hypervisor, nor bm1 from another address.
    assert_eq!(
        refused(ramdisk_enroll(link, "bm2", &t1, &ca, bm1.ip).await),
        EnrollRefusal::InvalidToken
    );
    let as_host = enroll(&EnrollOptions {
        coordinator: link.to_string(),
        token: t1.clone(),
        ca_pin: ca.parse().unwrap(),
        node: "bm1".into(),
        role: Role::Hypervisor,
        timeout: Duration::from_secs(20),
        local: Some(bm1.ip.into()),
    })
    .await;
    assert_eq!(refused(as_host), EnrollRefusal::InvalidToken);
    match refused(ramdisk_enroll(link, "bm1", &t1, &ca, Ipv4Addr::new(127, 0, 0, 1)).await) {
        EnrollRefusal::NotBooting(why) => assert!(why.contains("came from 127.0.0.1"), "{why}"),
        other => panic!("{other:?}"),
    }
    // From its address, it enrolls bm1, once; after that the boot hands out no script.
    let id = ramdisk_enroll(link, "bm1", &t1, &ca, bm1.ip).await.unwrap();
    assert_eq!(
        refused(ramdisk_enroll(link, "bm1", &t1, &ca, bm1.ip).await),
        EnrollRefusal::TokenUsed
    );
    assert_eq!(bm1.fetch_script(http, None).await.unwrap().0, 410);

    // A boot whose ramdisk does not enroll in time is over: its token with it.
    cli_ok(coord.api, &["node", "bootdev", "bm2", "pxe"]).await;
    let (status, script) = bm2.lease_and_fetch(dhcp, http).await.unwrap();
    let (t2, _) = token_and_ca(status, &script).unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        refused(ramdisk_enroll(link, "bm2", &t2, &ca, bm2.ip).await),
        EnrollRefusal::TokenExpired
    );
    assert_eq!(bm2.fetch_script(http, None).await.unwrap().0, 404);

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
    // A whole rack found by discovery: machines no node has may take the whole pool (by
    // default they hold at most half of it, so that enrolled nodes always find an address).
    boot.dhcp_limits.discovery_share = 100;
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

/// With discovery on, a machine no node has boots the ramdisk: it becomes a node in `enroll`
/// and is inspected. Discovery is bounded (finding 10: 200 GETs of random MACs made 200
/// nodes that could not be deleted): only a machine DHCP gave an address, asking from it; at
/// most so many waiting in `enroll`, at most so many a minute; and discovered nodes delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_discovery_a_machine_no_node_has_boots_and_appears_as_enroll_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new("lo", dir.path().join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    boot.tftp_port = free_port().unwrap();
    boot.discovery = true;
    boot.discovery_limits = ferric_coordinator::conductor::network_boot::DiscoveryLimits {
        per_minute: 3,
        max_waiting: 2,
    };
    let dhcp = SocketAddr::from(([127, 0, 0, 1], boot.dhcp_port));
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let http = coord.boot.as_ref().unwrap().http;
    let link = SocketAddr::from(([127, 0, 0, 1], coord.listen.port()));
    let m1 = Machine::new("52:54:00:de:ad:01", Ipv4Addr::new(127, 128, 1, 1));
    // Asking for it from an address DHCP did not give it discovers nothing.
    m1.dhcp_request(dhcp).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = m1
        .fetch_script(http, Some(Ipv4Addr::new(127, 128, 1, 9)))
        .await
        .unwrap();
    assert_eq!(status, 403);
    let c = ferric_tests::client(coord.api);
    let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await.unwrap();
    assert!(nodes.is_empty(), "{nodes:?}");

    let (status, script) = m1.lease_and_fetch(dhcp, http).await.unwrap();
    let (token, ca) = token_and_ca(status, &script).unwrap();
    // The same machine asking again is the same boot of the same node.
    let (status, again) = m1.fetch_script(http, None).await.unwrap();
    assert_eq!(token_and_ca(status, &again).unwrap().0, token);
    let node = "disc-525400dead01";
    let id = ramdisk_enroll(link, node, &token, &ca, m1.ip)
        .await
        .unwrap();
    let state = dir.path().join("ramdisk");
    id.save(&state).unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let agent = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
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

    // Bounds: two wait in `enroll` at most; a third machine is refused until one is dealt
    // with (deleted: a discovered node deletes like any other).
    let m2 = Machine::new("52:54:00:de:ad:02", Ipv4Addr::new(127, 128, 1, 2));
    let m3 = Machine::new("52:54:00:de:ad:03", Ipv4Addr::new(127, 128, 1, 3));
    let m4 = Machine::new("52:54:00:de:ad:04", Ipv4Addr::new(127, 128, 1, 4));
    assert_eq!(m2.lease_and_fetch(dhcp, http).await.unwrap().0, 200);
    let (status, body) = m3.lease_and_fetch(dhcp, http).await.unwrap();
    assert_eq!(status, 429, "{body}");
    let out = ferric_tests::cli_ok(coord.api, &["node", "delete", node]).await;
    assert!(out.contains(&format!("node {node} deleted")), "{out}");
    let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(m3.fetch_script(http, None).await.unwrap().0, 200);
    // Three a minute: the fourth (room in `enroll` made again) waits for the rate.
    ferric_tests::cli_ok(coord.api, &["node", "delete", "disc-525400dead02"]).await;
    let (status, body) = m4.lease_and_fetch(dhcp, http).await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("discovery is at its limit"), "{body}");
    coord.shutdown().await;
}
