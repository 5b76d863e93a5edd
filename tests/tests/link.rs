//! Tier 3: the real coordinator and real agents in one process, on loopback QUIC with mutual
//! TLS and a real SQLite store; hardware is the fake driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::FakeDriver;
use ferric_agent::enroll::{EnrollError, EnrollOptions, enroll};
use ferric_agent::tls::{CaPin, Identity, link_client_config, link_client_config_from};
use ferric_coordinator::conductor::plans::{PlanFile, StepSpec};
use ferric_proto::close;
use ferric_proto::frame::to_frame;
use ferric_proto::msg::{AgentMsg, EnrollRefusal, Hello, RefuseReason, Role};
use ferric_proto::plan::Step;
use ferric_tests::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

fn volumes_plan(n: usize) -> PlanFile {
    PlanFile {
        steps: (0..n)
            .map(|i| StepSpec {
                step: Step::EnsureVolume {
                    pool: "default".into(),
                    name: format!("v{i}"),
                    size_bytes: 1 << 20,
                    format: Default::default(),
                    image: None,
                },
                key: None,
                timeout: Some("30s".into()),
            })
            .collect(),
    }
}

async fn connected(c: &ferric_coordinator::client::Client) -> usize {
    let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await.unwrap();
    nodes.iter().filter(|n| n["connected"] == true).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_enroll_run_a_plan_and_every_event_is_stored_once() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    const N: usize = 50;

    let mut enrolls = JoinSet::new();
    for i in 0..N {
        let state = dir.path().join(format!("agent-{i}"));
        let (api, quic) = (coord.api, coord.listen);
        enrolls.spawn(async move {
            enroll_in_process(api, quic, &format!("node-{i:02}"), &state).await
        });
    }
    while let Some(r) = enrolls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(coord.shared.store.nodes().await.unwrap().len(), N);
    assert_eq!(
        coord.shared.store.unused_tokens().await.unwrap(),
        0,
        "every token was used once"
    );

    let mut agents = Vec::new();
    for i in 0..N {
        let fake = Arc::new(FakeDriver::new());
        agents.push(spawn_agent(
            agent_config(&dir.path().join(format!("agent-{i}")), fake.clone()),
            fake,
        ));
    }
    wait_for(Duration::from_secs(30), "50 agents connected", || async {
        Ok((connected(&c).await == N).then_some(()))
    })
    .await
    .unwrap();

    // Each agent announced the digest of this machine's hardware.
    let here = hex::encode(ferric_agent::inventory::digest(
        &ferric_agent::inventory::read(&ferric_agent::inventory::Root::default()),
    ));
    wait_for(Duration::from_secs(20), "inventory digests", || async {
        let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await?;
        Ok(nodes
            .iter()
            .all(|n| n["inventory_sha256"] == here.as_str())
            .then_some(()))
    })
    .await
    .unwrap();
    let nodes: Vec<String> = (0..N).map(|i| format!("node-{i:02}")).collect();
    let created = c.apply(nodes, volumes_plan(3)).await.unwrap();
    assert_eq!(created.len(), N);
    assert!(
        created.iter().all(|p| p.pushed),
        "all agents were connected"
    );
    for p in &created {
        let status = wait_plan_finished(&c, p.id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            status["plan"]["state"], "succeeded",
            "plan {} on {}",
            p.id, p.node
        );
        assert_eq!(event_list(&status), clean_run(3), "plan {} events", p.id);
        assert_eq!(coord.shared.store.stored_events(p.id).await.unwrap(), 6);
    }
    for a in &agents {
        assert_eq!(
            a.fake.calls(),
            vec![
                "ensure_volume volume/default/v0",
                "ensure_volume volume/default/v1",
                "ensure_volume volume/default/v2"
            ]
        );
    }
    // Telemetry arrives as datagrams from every agent, every second.
    wait_for(
        Duration::from_secs(10),
        "telemetry from every agent",
        || async {
            let all = (0..N).all(|i| {
                coord
                    .shared
                    .hub
                    .telemetry
                    .since(&format!("node-{i:02}"), 0)
                    .len()
                    >= 2
            });
            Ok(all.then_some(()))
        },
    )
    .await
    .unwrap();
    let samples = coord.shared.hub.telemetry.since("node-00", 0);
    let gap = samples[1].received_at_ms - samples[0].received_at_ms;
    assert!((500..=1500).contains(&gap), "samples {gap} ms apart");

    for a in agents {
        a.stop().await.unwrap();
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_for_an_offline_agent_is_delivered_when_it_connects() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let state = enroll_node(&coord, dir.path(), "late").await.unwrap();
    let created = c.apply(vec!["late".into()], volumes_plan(2)).await.unwrap();
    assert!(!created[0].pushed);
    assert_eq!(
        c.plan(created[0].id).await.unwrap()["plan"]["state"],
        "pending"
    );

    let fake = Arc::new(FakeDriver::new());
    let agent = spawn_agent(agent_config(&state, fake.clone()), fake);
    let status = wait_plan_finished(&c, created[0].id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(event_list(&status), clean_run(2));
    assert!(status["plan"]["pushed_at_us"].as_i64().is_some());
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_newer_than_the_agents_protocol_fails_naming_the_step_and_the_link_stays() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let state = enroll_node(&coord, dir.path(), "old").await.unwrap();
    // A plan with a version-3 step, waiting for an agent that turns out to speak version 2:
    // it fails when the agent connects, as another one does when it is created afterwards.
    let sel: PlanFile = serde_yaml_ng::from_str(
        "steps:\n  - ensure_bridge: { name: br0 }\n  - bmc_sel: { bmc: bm1, clear: true }\n",
    )
    .unwrap();
    let waiting = c.apply(vec!["old".into()], sel.clone()).await.unwrap()[0].id;
    let fake = Arc::new(FakeDriver::new());
    let mut cfg = agent_config(&state, fake.clone());
    cfg.protocol_version = 2;
    let agent = spawn_agent(cfg, fake.clone());
    wait_for(Duration::from_secs(10), "the agent to connect", || async {
        Ok((connected(&c).await == 1).then_some(()))
    })
    .await
    .unwrap();
    let later = c.apply(vec!["old".into()], sel).await.unwrap()[0].id;
    for id in [waiting, later] {
        let s = wait_plan_finished(&c, id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(s["plan"]["state"], "failed", "{s:#}");
        let failed = &s["events"][0]["kind"]["failed"];
        assert_eq!(failed["kind"], "unsupported", "{s:#}");
        assert_eq!(
            failed["message"],
            "agent `old` speaks protocol version 2; step 1 (bmc_sel) needs version 3: upgrade the agent",
            "{s:#}"
        );
        assert_eq!(s["events"].as_array().unwrap().len(), 1, "{s:#}");
    }
    // Nothing of those plans ran, and the link still carries plans the agent knows.
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    let ok = c.apply(vec!["old".into()], volumes_plan(1)).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, ok, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(event_list(&s), clean_run(1));
    assert_eq!(connected(&c).await, 1);
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refusals_name_the_problem_and_change_nothing() {
    let (_dir, coord, c) = coordinator_in_tempdir().await;
    let store = &coord.shared.store;
    let opts = |token: &str, pin: CaPin, node: &str| EnrollOptions {
        coordinator: coord.listen.to_string(),
        token: token.into(),
        ca_pin: pin,
        node: node.into(),
        role: Role::Hypervisor,
        timeout: Duration::from_secs(10),
        local: None,
    };

    // A reused token.
    let t = c.create_token(Duration::from_secs(600)).await.unwrap();
    let pin: CaPin = t.ca_hash.parse().unwrap();
    enroll(&opts(&t.token, pin, "first")).await.unwrap();
    let err = enroll(&opts(&t.token, pin, "second")).await.unwrap_err();
    assert!(
        matches!(err, EnrollError::Refused(EnrollRefusal::TokenUsed)),
        "{err}"
    );
    assert!(err.to_string().contains("bootstrap token was already used"));

    // An expired token.
    let t2 = c.create_token(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = enroll(&opts(&t2.token, pin, "third")).await.unwrap_err();
    assert!(
        matches!(err, EnrollError::Refused(EnrollRefusal::TokenExpired)),
        "{err}"
    );

    // A forged secret.
    let (id, _) = t2.token.split_once('.').unwrap();
    let err = enroll(&opts(&format!("{id}.00ff"), pin, "fourth"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EnrollError::Refused(EnrollRefusal::InvalidToken)),
        "{err}"
    );

    // A wrong CA hash: the agent refuses the coordinator before sending the token.
    let t3 = c.create_token(Duration::from_secs(600)).await.unwrap();
    let wrong = CaPin([0x42; 32]);
    let err = enroll(&opts(&t3.token, wrong, "fifth")).await.unwrap_err();
    assert!(matches!(err, EnrollError::PinMismatch(_)), "{err}");
    assert!(
        err.to_string().contains("does not match the pinned hash"),
        "{err}"
    );

    // A bad node name.
    let err = enroll(&opts(&t3.token, pin, "Bad_Name")).await.unwrap_err();
    assert!(
        matches!(err, EnrollError::Refused(EnrollRefusal::BadNodeName(_))),
        "{err}"
    );

    // Nothing changed by any refusal: one node, and t3 is still usable.
    let names: Vec<_> = store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["first"]);
    assert_eq!(
        store.unused_tokens().await.unwrap(),
        2,
        "t2 (expired) and t3 stay unused"
    );
    enroll(&opts(&t3.token, pin, "fifth")).await.unwrap();
    coord.shutdown().await;
}

/// Connects with `cfg` on the agent ALPN, sends `bytes` on a control stream and returns how
/// the coordinator closed the connection.
async fn send_raw(
    coord: std::net::SocketAddr,
    cfg: quinn::ClientConfig,
    bytes: Vec<u8>,
) -> quinn::ConnectionError {
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let result = async {
        let conn = ep
            .connect_with(cfg, coord, ferric_proto::COORDINATOR_SERVER_NAME)
            .unwrap()
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let _ = send.write_all(&bytes).await;
        let mut buf = [0u8; 1024];
        while let Ok(Some(_)) = recv.read(&mut buf).await {}
        Err::<(), _>(conn.closed().await)
    }
    .await;
    ep.close(0u32.into(), b"");
    result.unwrap_err()
}

fn app_close(e: &quinn::ConnectionError) -> (u64, String) {
    match e {
        quinn::ConnectionError::ApplicationClosed(ac) => (
            ac.error_code.into_inner(),
            String::from_utf8_lossy(&ac.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_while_good_agents_keep_being_served() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let good = enrolled_agent(&coord, dir.path(), "good").await.unwrap();
    let bad_state = enroll_node(&coord, dir.path(), "bad").await.unwrap();
    let bad_id = Identity::load(&bad_state).unwrap();
    let mut served = 0;
    let mut still_serving = || {
        served += 1;
        let c = c.clone();
        async move {
            let p = c.apply(vec!["good".into()], volumes_plan(1)).await.unwrap();
            let s = wait_plan_finished(&c, p[0].id, Duration::from_secs(20))
                .await
                .unwrap();
            assert_eq!(s["plan"]["state"], "succeeded");
        }
    };
    still_serving().await;

    // No client certificate on the agent ALPN.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(bad_id.ca_der.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(ferric_agent::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ferric_proto::ALPN.to_vec()];
    let anon = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let (code, reason) = app_close(&send_raw(coord.listen, anon, vec![]).await);
    assert_eq!(code, u64::from(close::CERT_REQUIRED));
    assert!(reason.contains("client certificate required"), "{reason}");
    still_serving().await;

    // A client certificate from another CA (same node name): TLS refuses it.
    let rogue_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let rogue_ca = ca_params.self_signed(&rogue_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["bad.node.ferric.internal".into()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "bad");
    let issuer = rcgen::Issuer::from_params(&ca_params, &rogue_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let _ = rogue_ca;
    let rogue = link_client_config_from(
        bad_id.ca_der.clone(),
        vec![leaf_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap();
    let err = send_raw(coord.listen, rogue, vec![]).await;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_)
        ),
        "TLS must refuse a foreign client certificate, got {text}"
    );
    assert!(
        text.contains("crypto") || text.contains("certificate") || text.contains("unknown"),
        "{text}"
    );
    assert!(coord.shared.hub.links.connected_since("bad").is_none());
    still_serving().await;

    let cfg =
        || link_client_config(&bad_id, Duration::from_secs(5), Duration::from_secs(10)).unwrap();

    // An oversized frame.
    let mut huge = (4u32 << 20).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 64]);
    let (code, reason) = app_close(&send_raw(coord.listen, cfg(), huge).await);
    assert_eq!(code, u64::from(close::PROTOCOL_ERROR));
    assert!(reason.contains("exceeds the limit"), "{reason}");
    still_serving().await;

    // Garbage inside a well-sized frame.
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x13]);
    let (code, reason) = app_close(&send_raw(coord.listen, cfg(), garbage).await);
    assert_eq!(code, u64::from(close::PROTOCOL_ERROR));
    assert!(reason.contains("malformed agent message"), "{reason}");

    // An unknown message kind.
    let mut unknown = 2u32.to_be_bytes().to_vec();
    unknown.extend_from_slice(&[0x09, 0x00]);
    let (_, reason) = app_close(&send_raw(coord.listen, cfg(), unknown).await);
    assert!(reason.contains("unknown message kind 9"), "{reason}");

    // An unknown protocol version, through the real agent: it stops with the refusal.
    let hello = AgentMsg::Hello(Hello {
        version: 99,
        node: "bad".into(),
        role: Role::Hypervisor,
        capabilities: vec![],
        inventory_digest: [0; 32],
        plans: vec![],
    });
    let (code, reason) =
        app_close(&send_raw(coord.listen, cfg(), to_frame(&hello, 1 << 20).unwrap()).await);
    assert_eq!(code, u64::from(close::REFUSED));
    assert!(
        reason.contains("protocol version 99 is not supported"),
        "{reason}"
    );
    let fake = Arc::new(FakeDriver::new());
    let mut old_cfg = agent_config(&bad_state, fake.clone());
    old_cfg.protocol_version = 99;
    let old = spawn_agent(old_cfg, fake);
    let err = tokio::time::timeout(Duration::from_secs(10), old.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ferric_agent::AgentError::Link(ferric_agent::link::LinkError::Refused(
                RefuseReason::UnsupportedVersion { agent: 99, .. }
            ))
        ),
        "{err}"
    );
    still_serving().await;

    // None of it touched the store beyond the good agent's plans.
    assert_eq!(
        coord
            .shared
            .store
            .plans(Some("bad"), 10)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        coord
            .shared
            .store
            .plans(Some("good"), 100)
            .await
            .unwrap()
            .len(),
        served
    );
    assert!(coord.shared.hub.links.connected_since("good").is_some());
    good.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_slow_step_fails_the_plan_with_a_stable_kind_and_can_be_retried() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let agent = enrolled_agent(&coord, dir.path(), "flaky").await.unwrap();
    let fake = agent.fake.clone();

    // A driver failure stops the plan at that step, with the driver's kind and message.
    fake.fail_kind("ensure_volume", ferric_proto::plan::ErrorKind::Io);
    let id = c
        .apply(vec!["flaky".into()], volumes_plan(3))
        .await
        .unwrap()[0]
        .id;
    let s = wait_plan_finished(&c, id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "failed");
    let events = s["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        2,
        "the plan stops at the failing step: {events:?}"
    );
    assert_eq!(events[1]["kind"]["failed"]["kind"], "io");
    assert_eq!(
        events[1]["kind"]["failed"]["message"],
        "injected failure: ensure_volume volume/default/v0"
    );

    // The same plan again, once the fault is gone, succeeds.
    fake.clear_failures();
    let id = c
        .apply(vec!["flaky".into()], volumes_plan(3))
        .await
        .unwrap()[0]
        .id;
    let s = wait_plan_finished(&c, id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded");

    // A step slower than its deadline fails with `timeout`.
    fake.set_delay(Duration::from_secs(3));
    let mut slow = volumes_plan(1);
    slow.steps[0].timeout = Some("1s".into());
    let id = c.apply(vec!["flaky".into()], slow).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "failed");
    assert_eq!(s["events"][1]["kind"]["failed"]["kind"], "timeout");
    assert!(
        s["events"][1]["kind"]["failed"]["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s")
    );

    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_on_different_objects_overlap_and_plans_on_the_same_object_keep_their_order() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let agent = enrolled_agent(&coord, dir.path(), "para").await.unwrap();
    agent.fake.set_delay(Duration::from_millis(300));
    let guest = |name: &str| -> PlanFile {
        serde_yaml_ng::from_str(&format!(
            "steps:\n  - guest_power: {{ name: {name}, action: start }}\n  - guest_power: {{ name: {name}, action: reboot }}\n"
        ))
        .unwrap()
    };
    let a = c.apply(vec!["para".into()], guest("a")).await.unwrap()[0].id;
    let b = c.apply(vec!["para".into()], guest("b")).await.unwrap()[0].id;
    let a2 = c.apply(vec!["para".into()], guest("a")).await.unwrap()[0].id;
    let mut at = std::collections::HashMap::new();
    for id in [a, b, a2] {
        let s = wait_plan_finished(&c, id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(s["plan"]["state"], "succeeded");
        let ev = s["events"].as_array().unwrap();
        let first_start = ev[0]["agent_at_ms"].as_i64().unwrap();
        let last_done = ev[ev.len() - 1]["agent_at_ms"].as_i64().unwrap();
        at.insert(id, (first_start, last_done));
    }
    // b (guest b) started before a (guest a) finished: they ran side by side.
    assert!(at[&b].0 < at[&a].1, "{at:?}");
    // a2 (guest a again) started only after a finished.
    assert!(at[&a2].0 >= at[&a].1, "{at:?}");
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
