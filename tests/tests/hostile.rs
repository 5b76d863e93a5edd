//! Tier 3: what a host on the provisioning network, or a member's token, could do to a live
//! coordinator — each finding of the review done again against a real coordinator (real
//! sockets; machines on loopback addresses of their own, see `ferric_tests::netboot`) and the
//! fixed behaviour asserted. Finding 1 (per-boot tokens minted by anyone) is
//! `boot_services::a_per_boot_token_is_made_only_for_a_boot_ferric_started…`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_coordinator::boot_services::BootConfig;
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

/// A guest step whose kernel command line is `bytes` long: a plan of about that size.
fn big_plan(bytes: usize) -> serde_json::Value {
    serde_json::json!({ "steps": [ { "ensure_guest": {
        "name": "g1", "vcpus": 1, "memory_mib": 64,
        "boot": { "kernel": { "kernel": "/var/lib/libvirt/boot/k", "initrd": "/var/lib/libvirt/boot/i",
                  "cmdline": "x".repeat(bytes) } }
    } } ] })
}

async fn post_raw(
    api: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let token = ferric_tests::admin_token(api).unwrap();
    let r = ferric_tests::http_client(api)
        .post(format!("{}{path}", ferric_tests::base_url(api)))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Finding 3: a plan larger than a frame was accepted, then closed its agent's link at every
/// reconnect (75 times in 18 minutes), and no plan could be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_too_large_is_refused_one_that_cannot_be_delivered_fails_alone_and_plans_cancel() {
    ferric_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let coord = ferric_tests::start_coordinator(&dir.path().join("coord"))
        .await
        .unwrap();
    let api = coord.api;
    let state = ferric_tests::enroll_node(&coord, dir.path(), "h1")
        .await
        .unwrap();

    // Refused at the API, naming the limit.
    let (status, problem) = post_raw(
        api,
        "/v1/plans",
        &serde_json::json!({ "nodes": ["h1"], "plan": big_plan(1_100_000) }),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "plan_too_large", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&ferric_proto::plan::MAX_PLAN_BYTES.to_string()),
        "{detail}"
    );

    // One stored before budgets existed (written to the store as an older coordinator would
    // have) fails by itself when it would be delivered; the link stays up for the next plans.
    let steps: ferric_coordinator::conductor::plans::PlanFile =
        serde_json::from_value(big_plan(1_100_000)).unwrap();
    let steps: Vec<ferric_proto::plan::PlanStep> = steps
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| ferric_proto::plan::PlanStep {
            key: format!("{i}"),
            timeout_secs: 60,
            step: s.step,
        })
        .collect();
    let stuck = coord
        .shared
        .store
        .create_plan("h1", &steps, 1)
        .await
        .unwrap()
        .id;
    // And one for the offline agent, cancelled before it is ever delivered.
    let small = serde_json::json!({ "steps": [ { "ensure_bridge": { "name": "br-t1" } } ] });
    let (status, created) = post_raw(
        api,
        "/v1/plans",
        &serde_json::json!({ "nodes": ["h1"], "plan": small }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let queued = created[0]["id"].as_u64().unwrap();
    let out = cli_ok(api, &["plan", "cancel", &queued.to_string()]).await;
    assert!(out.contains("ended before it was delivered"), "{out}");

    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    fake.set_delay(Duration::from_secs(30));
    let agent = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    let c = ferric_tests::client(api);
    let s = ferric_tests::wait_plan_finished(&c, stuck, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "failed", "{s}");
    let ev = &s["events"][0];
    assert_eq!(ev["kind"]["failed"]["kind"], "invalid_spec", "{s}");
    assert!(
        ev["kind"]["failed"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be delivered"),
        "{s}"
    );
    let s = c.plan(queued).await.unwrap();
    assert_eq!(s["plan"]["state"], "failed", "{s}");
    assert_eq!(s["events"][0]["kind"]["failed"]["kind"], "cancelled", "{s}");

    // A plan the agent runs (its step takes 30 s) is cancelled: the agent abandons the step
    // at once and the plan fails as cancelled; the link carries on.
    let slow = serde_json::json!({ "steps": [ { "ensure_bridge": { "name": "br-t2" } },
                                              { "ensure_bridge": { "name": "br-t3" } } ] });
    let (_, created) = post_raw(
        api,
        "/v1/plans",
        &serde_json::json!({ "nodes": ["h1"], "plan": slow }),
    )
    .await;
    let running = created[0]["id"].as_u64().unwrap();
    ferric_tests::wait_for(Duration::from_secs(20), "the slow plan running", || async {
        let s = c.plan(running).await?;
        Ok((s["plan"]["state"] == "running").then_some(()))
    })
    .await
    .unwrap();
    let asked = std::time::Instant::now();
    let (status, answer) = post_raw(
        api,
        &format!("/v1/plans/{running}/cancel"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["agent_told"], true, "{answer}");
    let s = ferric_tests::wait_plan_finished(&c, running, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the step was not abandoned"
    );
    assert_eq!(s["plan"]["state"], "failed", "{s}");
    let last = s["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"]["failed"]["kind"], "cancelled", "{s}");
    assert_eq!(last["step"], 0, "stopped in its first step: {s}");
    // An ended plan has nothing to cancel.
    let (status, problem) = post_raw(
        api,
        &format!("/v1/plans/{running}/cancel"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    // The agent still runs what comes next.
    agent.fake.set_delay(Duration::ZERO);
    let next = serde_json::json!({ "steps": [ { "ensure_bridge": { "name": "br-t4" } } ] });
    let (_, created) = post_raw(
        api,
        "/v1/plans",
        &serde_json::json!({ "nodes": ["h1"], "plan": next }),
    )
    .await;
    let s = ferric_tests::wait_plan_finished(
        &c,
        created[0]["id"].as_u64().unwrap(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s}");
    let d: serde_json::Value = c.get("/v1/nodes/h1").await.unwrap();
    assert_eq!(d["node"]["connected"], true);
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// A coordinator with full DHCP on `lo` over `first..=last`, with discovery on; its DHCP
/// address.
async fn dhcp_coordinator(
    data: &std::path::Path,
    dhcp_port: u16,
    first: Ipv4Addr,
    last: Ipv4Addr,
) -> ferric_coordinator::Running {
    let mut cfg = ferric_tests::coordinator_config(data);
    let mut boot = BootConfig::new("lo", data.join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = dhcp_port;
    boot.tftp_port = free_port().unwrap();
    boot.discovery = true;
    boot.dhcp = ferric_coordinator::boot_services::DhcpMode::Full {
        range: Some((first, last)),
        router: None,
    };
    cfg.boot = Some(boot);
    ferric_tests::start(cfg).await.unwrap()
}

/// Finding 6: a spoofed MAC sending DECLINEs emptied the pool for good, RELEASEs could be
/// spoofed, and a restart offered addresses still in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcp_cannot_be_run_dry_by_declines_or_spoofed_releases_and_keeps_its_leases_over_a_restart()
 {
    use ferric_tests::netboot::{RelayClient, dhcp_release};
    ferric_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let port = free_port().unwrap();
    let dhcp = SocketAddr::from(([127, 0, 0, 1], port));
    let (first, last) = (
        Ipv4Addr::new(127, 128, 4, 10),
        Ipv4Addr::new(127, 128, 4, 29),
    );
    let coord = dhcp_coordinator(&data, port, first, last).await;
    let _mgmt = ferric_tests::enrolled_agent(&coord, dir.path(), "mgmt")
        .await
        .unwrap();
    let known = "52:54:00:cc:00:01";
    enroll_bm(coord.api, "bm1", known).await;
    let c = RelayClient::new(Ipv4Addr::new(127, 0, 4, 1), dhcp).unwrap();
    // The known MAC, once the server has read it (every 2 s), holds an address.
    let ip_known = ferric_tests::wait_for(Duration::from_secs(10), "a lease for bm1", || async {
        c.lease(known)
    })
    .await
    .unwrap();

    // A spoofer's lease, and DECLINEs that do not come from its holder for its address.
    let x = "02:00:00:00:00:01";
    let ip_x = c
        .lease(x)
        .unwrap()
        .expect("a lease for the spoofer (discovery is on)");
    c.decline(x, ip_x, Ipv4Addr::new(127, 0, 0, 99)).unwrap(); // another server's
    c.decline(x, ip_known, Ipv4Addr::LOCALHOST).unwrap(); // not its address
    c.decline("02:00:00:00:00:99", ip_x, Ipv4Addr::LOCALHOST)
        .unwrap(); // no lease at all
    assert!(c.request(x, ip_x).unwrap(), "its lease stands");
    assert!(c.request(known, ip_known).unwrap(), "bm1's lease stands");

    // Thirty machines each take an address and decline it: a bounded quarantine, not a pool
    // lost address by address.
    for i in 0..30u8 {
        let mac = format!("02:00:00:00:01:{i:02x}");
        if let Some(ip) = c.lease(&mac).unwrap() {
            c.decline(&mac, ip, Ipv4Addr::LOCALHOST).unwrap();
        }
    }
    // Known nodes still get addresses, and so do new machines.
    assert!(c.request(known, ip_known).unwrap());
    let fresh = c.lease("02:00:00:00:02:01").unwrap();
    assert!(fresh.is_some(), "the pool ran dry");

    // A RELEASE of bm1's address from elsewhere is ignored: its address is not offered to
    // another machine, and bm1 keeps it.
    dhcp_release(dhcp, known, ip_known, Ipv4Addr::new(127, 0, 0, 9)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let y = c.discover("02:00:00:00:02:02").unwrap().expect("an offer");
    assert_ne!(y, ip_known);
    assert!(c.request(known, ip_known).unwrap());

    // A restart: the leases are read back; nobody is offered an address in use.
    coord.shutdown().await;
    let coord = dhcp_coordinator(&data, port, first, last).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let z = c
        .discover("02:00:00:00:03:01")
        .unwrap()
        .expect("an offer after the restart");
    assert!(![ip_known, ip_x].contains(&z), "{z} is in use");
    assert!(c.request(x, ip_x).unwrap(), "the spoofer's lease was kept");
    ferric_tests::wait_for(
        Duration::from_secs(10),
        "bm1's address after the restart",
        || async { Ok(c.request(known, ip_known)?.then_some(())) },
    )
    .await
    .unwrap();
    coord.shutdown().await;
}

/// Finding 7: every stale ACK re-sent a block, and 1100 read requests took the coordinator
/// to its open-file limit with transfers that could last 25 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_ignores_stale_acks_and_bounds_transfers_per_client_and_in_all() {
    use ferric_netboot::tftp::Packet;
    ferric_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
    let mut boot = BootConfig::new("lo", dir.path().join("ramdisk"));
    boot.http_port = 0;
    boot.dhcp_port = free_port().unwrap();
    let port = free_port().unwrap();
    boot.tftp_port = port;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let rrq = |opts: Vec<(&str, &str)>| {
        Packet::Read {
            file: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: opts
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
        .encode()
    };
    let recv = |s: &std::net::UdpSocket| -> Option<(Packet, SocketAddr)> {
        let mut buf = [0u8; 2048];
        s.recv_from(&mut buf)
            .ok()
            .and_then(|(n, from)| Some((Packet::decode(&buf[..n]).ok()?, from)))
    };

    // A transfer, then a thousand stale ACKs: not one block is sent again for them.
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    c.send_to(&rrq(vec![("blksize", "1024"), ("timeout", "255")]), server)
        .unwrap();
    let (oack, tid) = recv(&c).expect("an option acknowledgement");
    let Packet::OptionAck { options } = oack else {
        panic!("{oack:?}")
    };
    assert!(
        options.iter().all(|(k, _)| k != "timeout"),
        "a 255 s timeout is not taken: {options:?}"
    );
    c.send_to(&Packet::Ack { block: 0 }.encode(), tid).unwrap();
    assert!(matches!(recv(&c), Some((Packet::Data { block: 1, .. }, _))));
    for _ in 0..1000 {
        c.send_to(&Packet::Ack { block: 0 }.encode(), tid).unwrap();
    }
    c.set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    let mut resent = 0;
    while let Some((p, _)) = recv(&c) {
        if matches!(p, Packet::Data { .. }) {
            resent += 1;
        }
    }
    // At most the retransmission of block 1 when its timer fired while we sent.
    assert!(resent <= 1, "{resent} blocks sent for 1000 stale ACKs");
    c.send_to(&Packet::Ack { block: 1 }.encode(), tid).unwrap();
    assert!(
        matches!(recv(&c), Some((Packet::Data { block: 2, .. }, _))),
        "the transfer goes on"
    );

    // 1100 read requests from one address: a handful of transfers, the rest refused, and the
    // coordinator's descriptors barely move.
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let clients: Vec<std::net::UdpSocket> = (0..1100)
        .map(|_| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(&rrq(vec![("blksize", "1024")]), server).unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut started, mut refused) = (0, 0);
    for s in &clients {
        s.set_nonblocking(true).unwrap();
        if let Some((p, _)) = recv(s) {
            match p {
                Packet::OptionAck { .. } | Packet::Data { .. } => started += 1,
                Packet::Error { .. } => refused += 1,
                _ => {}
            }
        }
    }
    let during = fds();
    // The rest were refused with an error, or dropped by the kernel's socket buffer in the
    // burst: none got a transfer.
    assert!(started <= 4, "{started} transfers for one client");
    assert!(refused >= 500, "{refused} refused");
    assert!(
        during - before <= 1100 + 16,
        "{} descriptors beyond the clients'",
        during - before - 1100
    );
    drop(clients);
    // Another machine is served meanwhile.
    let other = std::net::UdpSocket::bind("127.0.0.7:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    other
        .send_to(&rrq(vec![("blksize", "1024")]), server)
        .unwrap();
    assert!(matches!(recv(&other), Some((Packet::OptionAck { .. }, _))));
    coord.shutdown().await;
}

/// Finding 8: 1100 idle connections to the boot HTTP port (or the API's) made the API time
/// out; nothing ever closed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_are_capped_and_closed_and_the_api_answers_meanwhile() {
    use tokio::io::AsyncReadExt;
    ferric_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (coord, http, _dhcp, _link) = coordinator(dir.path()).await;
    let mut idle = Vec::new();
    for target in [http, coord.api] {
        for _ in 0..1100 {
            if let Ok(s) = tokio::net::TcpStream::connect(target).await {
                idle.push(s);
            }
        }
    }
    // The API answers at once, to a client of another address, with the store behind it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = std::time::Instant::now();
    let c = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 5]))
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(
                &std::fs::read(ferric_tests::ca_file(coord.api).unwrap()).unwrap(),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = c
        .get(format!("{}/v1/nodes", ferric_tests::base_url(coord.api)))
        .bearer_auth(ferric_tests::admin_token(coord.api).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let boot = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 5]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = boot
        .get(format!("http://{http}/boot/node/52-54-00-00-00-99.ipxe"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_client_error(),
        "the boot server answered: {}",
        r.status()
    );
    // Connections over the caps were closed at once, the others once their header did not
    // come in time: every one is closed within the header timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    for s in &mut idle {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => panic!("an idle connection is still open after the header timeout"),
        }
    }
    coord.shutdown().await;
}

/// Finding 5: a node enrolled in another project with a MAC already enrolled was accepted, and
/// the boot script went to whichever name sorted first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_belongs_to_one_node_in_the_whole_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, http, dhcp, _link) = coordinator(dir.path()).await;
    let api = coord.api;
    let _mgmt = ferric_tests::enrolled_agent(&coord, dir.path(), "mgmt")
        .await
        .unwrap();
    let mac = "52:54:00:dd:00:01";
    enroll_bm(api, "bm1", mac).await;
    let (status, p) = post_raw(api, "/v1/projects", &serde_json::json!({ "name": "red" })).await;
    assert!(status < 300, "{p}");
    let mut link = coord.listen;
    link.set_ip(Ipv4Addr::LOCALHOST.into());
    ferric_tests::enroll_in_project(
        api,
        link,
        "red-mgmt",
        &dir.path().join("red-mgmt"),
        Some("red"),
    )
    .await
    .unwrap();
    let node = |name: &str, via: &str, mac: &str| {
        serde_json::json!({ "name": name, "bmc": "ipmi://admin@127.0.0.1:1", "password": "x",
                            "via": via, "macs": [mac] })
    };
    // Another project: refused, without its holder's name.
    let (status, p) = post_raw(
        api,
        "/v1/nodes?project=red",
        &node("aaa", "red-mgmt", &mac.to_uppercase()),
    )
    .await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(p["code"], "mac_taken", "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("another project") && !detail.contains("bm1"),
        "{detail}"
    );
    // The same project: refused, naming it.
    let (status, p) = post_raw(api, "/v1/nodes", &node("aab", "mgmt", mac)).await;
    assert_eq!(status, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("`bm1`"), "{p}");
    // The machine's script is bm1's.
    cli_ok(api, &["node", "bootdev", "bm1", "pxe"]).await;
    let m = Machine::new(mac, Ipv4Addr::new(127, 128, 5, 1));
    let (status, script) = m.lease_and_fetch(dhcp, http).await.unwrap();
    assert_eq!(status, 200, "{script}");
    assert!(script.contains("ferric.node=bm1 "), "{script}");
    coord.shutdown().await;
}

/// Finding 9: 3289 POSTs without a token, with 8 KB paths, added 26 MB of audit rows in 2.5 s,
/// and nothing ever pruned the audit table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_cannot_fill_the_disk_and_the_audit_log_is_kept_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let mut cfg = ferric_tests::coordinator_config(&data);
    cfg.audit_max_rows = 5;
    let coord = ferric_tests::start(cfg.clone()).await.unwrap();
    let api = coord.api;
    let http = ferric_tests::http_client(api);
    let base = ferric_tests::base_url(api);
    let long = format!("/v1/nodes/{}/power", "x".repeat(8000));
    for _ in 0..2000 {
        let r = http
            .post(format!("{base}{long}"))
            .json(&serde_json::json!({ "action": "off" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // A reader's refused call is written, its path cut.
    let (_, t) = post_raw(
        api,
        "/v1/api-tokens",
        &serde_json::json!({ "role": "reader", "fleet": true }),
    )
    .await;
    let reader = t["token"].as_str().unwrap();
    let r = http
        .post(format!("{base}{long}"))
        .bearer_auth(reader)
        .json(&serde_json::json!({ "action": "off" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let log: Vec<serde_json::Value> = ferric_tests::client(api)
        .get("/v1/audit?limit=100")
        .await
        .unwrap();
    assert!(log.len() <= 5, "{} entries for 2002 calls", log.len());
    let summary = log
        .iter()
        .find(|r| r["code"] == "unauthenticated_calls")
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        summary["path"]
            .as_str()
            .unwrap()
            .starts_with("(2000 calls refused"),
        "{summary}"
    );
    let forbidden = log
        .iter()
        .find(|r| r["status"] == 403)
        .unwrap_or_else(|| panic!("{log:?}"));
    let path = forbidden["path"].as_str().unwrap();
    assert!(path.chars().count() <= 256 && path.ends_with('…'), "{path}");
    let metrics = ferric_tests::client(api)
        .get_text("/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("ferric_api_unauthenticated_calls_total{code=\"unauthenticated\"} 2000"),
        "{metrics}"
    );

    // At most `--audit-max-rows` (5 here) are kept: twenty more entries, a restart, five left.
    for i in 0..20 {
        let (status, _) = post_raw(
            api,
            "/v1/projects",
            &serde_json::json!({ "name": format!("p{i}") }),
        )
        .await;
        assert!(status < 300);
    }
    coord.shutdown().await;
    let coord = ferric_tests::start(cfg).await.unwrap();
    let n = ferric_tests::wait_for(Duration::from_secs(10), "the audit log pruned", || async {
        let n = coord.shared.store.audit_rows().await?;
        Ok((n <= 5).then_some(n))
    })
    .await
    .unwrap();
    assert!(n >= 1, "the newest stay");
    coord.shutdown().await;
}

/// Finding 10: a bare-metal node whose script was fetched, or that was inspected or ran a
/// plan, could not be deleted (HTTP 500, a foreign key); nor could agents, so a revoked
/// agent's name was gone for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_deletes_with_what_belongs_to_it_and_its_certificates_stay_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (coord, http, dhcp, link) = coordinator(dir.path()).await;
    let api = coord.api;
    let mgmt = ferric_tests::enrolled_agent(&coord, dir.path(), "mgmt")
        .await
        .unwrap();
    let m = Machine::new("52:54:00:ee:00:01", Ipv4Addr::new(127, 128, 6, 1));
    enroll_bm(api, "bm1", &m.mac).await;
    // Its boot, its script, its ramdisk's enrollment and inspection, a plan.
    cli_ok(api, &["node", "bootdev", "bm1", "pxe"]).await;
    let (status, script) = m.lease_and_fetch(dhcp, http).await.unwrap();
    let (token, ca) = token_and_ca(status, &script).unwrap();
    let id = ramdisk_enroll(link, "bm1", &token, &ca, m.ip)
        .await
        .unwrap();
    let state = dir.path().join("ramdisk-bm1");
    id.save(&state).unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let ramdisk = ferric_tests::spawn_agent(ferric_tests::agent_config(&state, fake.clone()), fake);
    let c = ferric_tests::client(api);
    ferric_tests::wait_for(Duration::from_secs(20), "bm1 inspected", || async {
        let d: serde_json::Value = c.get("/v1/nodes/bm1").await?;
        Ok((!d["inspection"].is_null()).then_some(()))
    })
    .await
    .unwrap();

    // The agent that drives its BMC is not deleted under it: the refusal names the node.
    let (ok, _, err) = ferric_tests::cli(api, &["node", "delete", "mgmt"], &[]).await;
    assert!(!ok && err.contains("bm1"), "{err}");

    let out = cli_ok(api, &["node", "delete", "bm1"]).await;
    assert!(out.contains("node bm1 deleted"), "{out}");
    // Gone, and its ramdisk (which keeps trying) does not bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r: Result<serde_json::Value, _> = c.get("/v1/nodes/bm1").await;
    assert!(r.is_err(), "{r:?}");
    ramdisk.stop().await.unwrap();
    // The agent goes too, and its certificate with it: not even the same name enrolled again
    // takes the old one back.
    let out = cli_ok(api, &["node", "delete", "mgmt"]).await;
    assert!(out.contains("node mgmt deleted"), "{out}");
    mgmt.stop().await.unwrap();
    let fresh = dir.path().join("mgmt-again");
    ferric_tests::enroll_in_process(api, link, "mgmt", &fresh)
        .await
        .unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let old = ferric_tests::spawn_agent(
        ferric_tests::agent_config(&dir.path().join("mgmt"), fake.clone()),
        fake,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d: serde_json::Value = c.get("/v1/nodes/mgmt").await.unwrap();
    assert_eq!(
        d["node"]["connected"], false,
        "the old certificate was let in: {d}"
    );
    old.stop().await.unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let new = ferric_tests::spawn_agent(ferric_tests::agent_config(&fresh, fake.clone()), fake);
    ferric_tests::wait_for(
        Duration::from_secs(20),
        "the new mgmt connected",
        || async {
            let d: serde_json::Value = c.get("/v1/nodes/mgmt").await?;
            Ok((d["node"]["connected"] == true).then_some(()))
        },
    )
    .await
    .unwrap();
    new.stop().await.unwrap();
    coord.shutdown().await;
}

/// Found in reading: two agents with one identity (a copied state directory) replaced each
/// other forever; readers saw the files of plans' config drives (user-data, keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_of_one_identity_settle_and_readers_do_not_see_config_drive_files() {
    let dir = tempfile::tempdir().unwrap();
    let coord = ferric_tests::start_coordinator(&dir.path().join("coord"))
        .await
        .unwrap();
    let api = coord.api;
    let state = ferric_tests::enroll_node(&coord, dir.path(), "h1")
        .await
        .unwrap();
    let copy = dir.path().join("h1-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["node.key", "node.pem", "ca.pem", "identity.json"] {
        if state.join(f).exists() {
            std::fs::copy(state.join(f), copy.join(f)).unwrap();
        }
    }
    let start = |s: &std::path::Path| {
        let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
        ferric_tests::spawn_agent(ferric_tests::agent_config(s, fake.clone()), fake)
    };
    let mut a = start(&state);
    let mut b = start(&copy);
    // Within seconds one of them is refused and stops, naming the cause; the other stays.
    let first = tokio::select! {
        r = &mut a.task => Ok(r),
        r = &mut b.task => Err(r),
        _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("they still replace each other"),
    };
    let (done, other) = match first {
        Ok(r) => (r, b),
        Err(r) => (r, a),
    };
    let err = done.unwrap().expect_err("the second agent is refused");
    assert!(
        ferric_coordinator::error_chain(&err).contains("two agents share one identity"),
        "{}",
        ferric_coordinator::error_chain(&err)
    );
    let c = ferric_tests::client(api);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d: serde_json::Value = c.get("/v1/nodes/h1").await.unwrap();
    assert_eq!(d["node"]["connected"], true, "{d}");

    // A plan with a config drive: its files are the members', not the readers'.
    let plan = serde_json::json!({ "steps": [ { "write_config_drive": {
        "label": "cidata",
        "files": [ { "path": "user-data", "content": "#cloud-config\npassword: hunter2\n" } ]
    } } ] });
    let (status, created) = post_raw(
        api,
        "/v1/plans",
        &serde_json::json!({ "nodes": ["h1"], "plan": plan }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created[0]["id"].as_u64().unwrap();
    let (_, t) = post_raw(
        api,
        "/v1/api-tokens",
        &serde_json::json!({ "role": "reader", "fleet": true }),
    )
    .await;
    let reader = ferric_tests::client_with(api, t["token"].as_str().unwrap());
    for path in [
        format!("/v1/plans/{id}"),
        "/v1/plans".into(),
        "/v1/nodes/h1".into(),
    ] {
        let seen = reader.get_text(&path).await.unwrap();
        assert!(!seen.contains("hunter2"), "{path}: {seen}");
        assert!(seen.contains("not shown to readers"), "{path}: {seen}");
        let admin = c.get_text(&path).await.unwrap();
        assert!(admin.contains("hunter2"), "{path}: {admin}");
    }
    other.stop().await.unwrap();
    coord.shutdown().await;
}
