//! Tier 3: what a host on the provisioning network, or a member's token, could do to a live
//! coordinator — each finding of the review done again against a real coordinator (real
//! sockets; machines on loopback addresses of their own, see `ferric_tests::netboot`) and the
//! fixed behaviour asserted. Finding 1 (per-boot tokens minted by anyone) is
//! `boot_services::a_per_boot_token_is_made_only_for_a_boot_ferric_started…`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_coordinator::boot::BootConfig;
use ferric_proto::msg::EnrollRefusal;
use ferric_tests::netboot::{Machine, ramdisk_enroll, token_and_ca};
use ferric_tests::{cli_ok, free_port};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A coordinator with boot services on `lo`; its boot HTTP and DHCP addresses and its link.
async fn coordinator(
    dir: &std::path::Path,
) -> (
    ferric_coordinator::Running,
    SocketAddr,
    SocketAddr,
    SocketAddr,
) {
    let mut cfg = ferric_tests::coordinator_config(&dir.join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new("lo", dir.join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    boot.tftp_port = free_port().unwrap();
    let dhcp = SocketAddr::from(([127, 0, 0, 1], boot.dhcp_port));
    cfg.boot = Some(boot);
    let c = ferric_tests::start(cfg).await.unwrap();
    let http = c.boot.as_ref().unwrap().http;
    let link = SocketAddr::from(([127, 0, 0, 1], c.listen.port()));
    (c, http, dhcp, link)
}

async fn enroll_bm(api: SocketAddr, node: &str, mac: &str) {
    let (ok, _, err) = ferric_tests::cli(
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
            "--via",
            "mgmt",
        ],
        &[("PW", "x")],
    )
    .await;
    assert!(ok, "{err}");
}

async fn lifecycle(c: &ferric_coordinator::client::Client, node: &str) -> serde_json::Value {
    let d: serde_json::Value = c.get(&format!("/v1/nodes/{node}")).await.unwrap();
    d["lifecycle"].clone()
}

async fn wait_step(
    c: &ferric_coordinator::client::Client,
    node: &str,
    state: &str,
    step: Option<&str>,
) {
    let r = ferric_tests::wait_for(
        Duration::from_secs(30),
        &format!("{node} {state} {step:?}"),
        || async {
            let l = lifecycle(c, node).await;
            Ok((l["state"] == state && l["step"].as_str() == step).then_some(()))
        },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}: {}", lifecycle(c, node).await);
    }
}

/// Finding 2: a process holding a ramdisk certificate was taken for the node's resident
/// ramdisk; the whole lifecycle ran on it, and the real machine was never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_on_the_provisioning_network_cannot_become_a_nodes_ramdisk() {
    ferric_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (coord, http, dhcp, link) = coordinator(dir.path()).await;
    let mgmt = ferric_tests::enrolled_agent(&coord, dir.path(), "mgmt")
        .await
        .unwrap();
    let real = Machine::new("52:54:00:bb:00:01", Ipv4Addr::new(127, 128, 2, 1));
    enroll_bm(coord.api, "bm1", &real.mac).await;
    let c = ferric_tests::client(coord.api);
    cli_ok(coord.api, &["node", "manage", "bm1", "--wait"]).await;

    // The machine holds its lease; the rogue, spoofing its MAC, asks for an address of its
    // own (refused: the MAC's lease is the machine's) and for the script from there and
    // from its own address.
    let (status, _) = real.lease_and_fetch(dhcp, http).await.unwrap();
    assert_eq!(
        status, 404,
        "no boot under way yet: no script even for the machine"
    );
    let rogue = Machine::new(&real.mac, Ipv4Addr::new(127, 128, 2, 66));
    rogue.dhcp_request(dhcp).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Inspection: the lifecycle boots the machine (the fake BMC) and waits for its ramdisk.
    cli_ok(coord.api, &["node", "inspect", "bm1"]).await;
    wait_step(&c, "bm1", "inspecting", Some("wait-callback")).await;
    for from in [rogue.ip, Ipv4Addr::LOCALHOST] {
        let (status, body) = rogue.fetch_script(http, Some(from)).await.unwrap();
        assert_eq!(status, 403, "from {from}: {body}");
    }
    // Even with the machine's own token (sniffed off the wire), the rogue cannot enroll from
    // its address.
    let (status, script) = real.fetch_script(http, None).await.unwrap();
    let (token, ca) = token_and_ca(status, &script).unwrap();
    match ramdisk_enroll(link, "bm1", &token, &ca, rogue.ip).await {
        Err(ferric_agent::enroll::EnrollError::Refused(EnrollRefusal::NotBooting(why))) => {
            assert!(why.contains("127.128.2.66"), "{why}")
        }
        other => panic!("the rogue enrolled: {other:?}"),
    }
    // The machine's ramdisk enrolls from its address and is inspected; it stays resident.
    let id = ramdisk_enroll(link, "bm1", &token, &ca, real.ip)
        .await
        .unwrap();
    let state = dir.path().join("ramdisk-bm1");
    id.save(&state).unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let ramdisk = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    wait_step(&c, "bm1", "manageable", None).await;
    assert!(ramdisk.fake.calls().contains(&"inspect machine".to_owned()));

    // Its machine powered off, that ramdisk's boot is over: reconnecting, it is refused (a
    // process that kept the certificate is no ramdisk of this node any more).
    cli_ok(coord.api, &["node", "power", "off", "bm1"]).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), ramdisk.task)
        .await
        .expect("the refused ramdisk stops")
        .unwrap();
    let err = ended.expect_err("refused");
    assert!(
        ferric_coordinator::error_chain(&err).contains("has ended"),
        "{}",
        ferric_coordinator::error_chain(&err)
    );
    // `provide` does not take it for a resident ramdisk: it network-boots the machine again
    // and waits for a ramdisk of that boot.
    cli_ok(coord.api, &["node", "provide", "bm1"]).await;
    wait_step(&c, "bm1", "cleaning", Some("wait-callback")).await;
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let again = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    let ended = tokio::time::timeout(Duration::from_secs(20), again.task)
        .await
        .expect("refused again")
        .unwrap();
    assert!(ended.is_err());
    assert!(again.fake.calls().is_empty(), "{:?}", again.fake.calls());
    let l = lifecycle(&c, "bm1").await;
    assert_eq!(
        (l["state"].as_str(), l["step"].as_str()),
        (Some("cleaning"), Some("wait-callback")),
        "{l}"
    );
    mgmt.stop().await.unwrap();
    coord.shutdown().await;
}
