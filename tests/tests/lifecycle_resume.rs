//! In-process system tier: the two moments of a lifecycle move that a kill cannot be aimed
//! at (they last microseconds), made on purpose in the store, then the coordinator stopped
//! and started again on it. A plan's end stored but not acted on, and a move into a step
//! stored but its work never pushed: after the start neither node is stuck.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_coordinator::conductor::bmcs::EnrollBmcNode;
use ferric_coordinator::model::{Phase, ProvisionState};
use ferric_proto::plan::{StepEvent, StepEventKind};
use ferric_tests::*;
use std::sync::Arc;
use std::time::Duration;

async fn lifecycle(c: &ferric_coordinator::client::Client, node: &str) -> serde_json::Value {
    let d: serde_json::Value = c.get(&format!("/v1/nodes/{node}")).await.unwrap();
    d["lifecycle"].clone()
}

async fn wait_manageable(c: &ferric_coordinator::client::Client, node: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(20), "manageable", || async {
        let l = lifecycle(c, node).await;
        Ok((l["state"] == "manageable").then_some(l))
    })
    .await
    .unwrap_or_else(|e| panic!("{node}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_moves_on_a_plan_that_ended_unseen_and_pushes_work_never_pushed() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let coord = start_coordinator(&data).await.unwrap();
    let mgmt = enroll_node(&coord, dir.path(), "mgmt").await.unwrap();
    for name in ["bm0", "bm1"] {
        ferric_coordinator::conductor::bmcs::enroll(
            &coord.shared,
            "default",
            EnrollBmcNode {
                name: name.into(),
                bmc: "ipmi://admin@127.0.0.1:6230".into(),
                password: "not-logged".into(),
                via: Some("mgmt".into()),
                macs: vec![],
                console_log: None,
                boot_mode: None,
                efi_loader: None,
                boot_via: None,
            },
        )
        .await
        .unwrap();
    }
    let store = &coord.shared.store;

    // bm0: managed while its management agent is away, it waits for its power read; the
    // read's end is then stored, but the coordinator stops before it acts on it.
    let c = client(coord.api);
    let _: serde_json::Value = c
        .post(
            "/v1/nodes/bm0/provision",
            &serde_json::json!({ "verb": "manage" }),
        )
        .await
        .unwrap();
    let row = store.lifecycle("bm0").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.step),
        (ProvisionState::Verifying, Some(Phase::ReadPower))
    );
    let plan = row.wait_plan.expect("the power read's plan is awaited");
    for (seq, kind) in [
        StepEventKind::Started,
        StepEventKind::Done { changed: false },
    ]
    .into_iter()
    .enumerate()
    {
        let ev = StepEvent {
            plan,
            seq: seq as u32,
            step: 0,
            at_ms: 1,
            kind,
        };
        assert!(store.insert_event("mgmt", &ev, 1).await.unwrap());
    }

    // bm1: moved into its power read, stopped before the read was pushed.
    let cur = store.lifecycle("bm1").await.unwrap().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let to = ferric_coordinator::store::LifecycleRow {
        state: ProvisionState::Verifying,
        step: Some(Phase::ReadPower),
        since_ms: now_ms,
        deadline_ms: Some(now_ms + 600_000),
        wait_plan: None,
        ..cur.clone()
    };
    assert!(
        store
            .move_lifecycle(&cur, &to, "stopped before the push")
            .await
            .unwrap()
    );
    assert_eq!(
        lifecycle(&c, "bm0").await["state"],
        "verifying",
        "stored, not acted on"
    );
    coord.shutdown().await;

    let coord = start_coordinator(&data).await.unwrap();
    let c = client(coord.api);
    // bm0 moves on at the start, with no agent connected.
    let l = wait_manageable(&c, "bm0").await;
    let causes: Vec<&str> = l["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap())
        .collect();
    assert!(
        causes.contains(&format!("plan {plan} succeeded (seen at start)").as_str()),
        "{causes:?}"
    );
    // bm1's read is pushed at the start; the management agent runs it when it connects.
    let pushed = wait_for(Duration::from_secs(20), "bm1's read pushed", || async {
        Ok(lifecycle(&c, "bm1").await["wait_plan"].as_u64())
    })
    .await
    .unwrap();
    let l = lifecycle(&c, "bm1").await;
    assert_eq!(
        (l["state"].as_str(), l["step"].as_str()),
        (Some("verifying"), Some("read-power")),
        "{l}"
    );
    let fake = Arc::new(ferric_agent::driver::FakeDriver::new());
    let mut cfg = agent_config(&mgmt, fake.clone());
    cfg.coordinator = Some(coord.listen.to_string());
    let agent = spawn_agent(cfg, fake.clone());
    wait_manageable(&c, "bm1").await;
    let s = wait_plan_finished(&c, pushed, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s}");
    assert_eq!(
        fake.calls(),
        vec!["bmc_power bmc/bm1/Status".to_owned()],
        "bm1's read ran once; bm0's ended plan was not run again"
    );
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
