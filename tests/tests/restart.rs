//! Real processes killed and restarted: the coordinator with SIGKILL mid-plan, an agent with
//! SIGKILL mid-step, and both drained with SIGTERM. Nothing may be lost or stored twice. And the
//! server refusing, before it touches anything, options that are the client's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::FakeDriver;
use ferric_tests::*;
use std::sync::Arc;
use std::time::Duration;

const PLAN_YAML: &str = "steps:\n  - ensure_volume: { pool: default, name: v0, size_bytes: 1048576 }\n  - ensure_volume: { pool: default, name: v1, size_bytes: 1048576 }\n  - ensure_volume: { pool: default, name: v2, size_bytes: 1048576 }\n  - ensure_volume: { pool: default, name: v3, size_bytes: 1048576 }\n";

fn plan_file(n: usize) -> ferric_coordinator::conductor::plans::PlanFile {
    let steps: String = (0..n)
        .map(|i| {
            format!("  - ensure_volume: {{ pool: default, name: v{i}, size_bytes: 1048576 }}\n")
        })
        .collect();
    serde_yaml_from(&format!("steps:\n{steps}"))
}

fn serde_yaml_from(s: &str) -> ferric_coordinator::conductor::plans::PlanFile {
    serde_yaml_ng::from_str(s).unwrap()
}

struct CoordProc {
    proc: Proc,
    quic: String,
    api: String,
}

fn start_coordinator_proc(
    data: &std::path::Path,
    quic_port: u16,
    api_port: u16,
    log: &std::path::Path,
) -> CoordProc {
    let quic = format!("127.0.0.1:{quic_port}");
    let api = format!("127.0.0.1:{api_port}");
    let proc = Proc::spawn(
        &bin("ferric").unwrap(),
        &[
            "coordinator",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &quic,
            "--api-listen",
            &api,
            "--drain-grace",
            "2s",
        ],
        log,
    )
    .unwrap();
    CoordProc { proc, quic, api }
}

async fn wait_api(data: &std::path::Path, api: &str) {
    ferric_tests::wait_admitted(data, api.parse().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_plan_restarts_and_no_event_is_lost_or_duplicated() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");
    let (qp, ap) = (free_port().unwrap(), free_port().unwrap());
    let mut coord = start_coordinator_proc(&data, qp, ap, &dir.path().join("coord-1.log"));
    wait_api(&data, &coord.api).await;
    let c = ferric_tests::client(coord.api.parse().unwrap());
    let quic: std::net::SocketAddr = coord.quic.parse().unwrap();
    let api: std::net::SocketAddr = coord.api.parse().unwrap();

    const N: usize = 5;
    const STEPS: usize = 8;
    let mut agents = Vec::new();
    for i in 0..N {
        let state = dir.path().join(format!("agent-{i}"));
        enroll_in_process(api, quic, &format!("n{i}"), &state)
            .await
            .unwrap();
        let fake = Arc::new(FakeDriver::new());
        fake.set_delay(Duration::from_millis(250));
        agents.push(spawn_agent(agent_config(&state, fake.clone()), fake));
    }
    wait_for(Duration::from_secs(20), "agents connected", || async {
        let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await?;
        Ok((nodes.iter().filter(|n| n["connected"] == true).count() == N).then_some(()))
    })
    .await
    .unwrap();
    let created = c
        .apply((0..N).map(|i| format!("n{i}")).collect(), plan_file(STEPS))
        .await
        .unwrap();

    // Kill the coordinator once the plans are under way (a few events stored, most not).
    wait_for(Duration::from_secs(20), "plans under way", || async {
        let s = c.plan(created[0].id).await?;
        Ok((event_list(&s).len() >= 3).then_some(()))
    })
    .await
    .unwrap();
    coord.proc.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut coord = start_coordinator_proc(&data, qp, ap, &dir.path().join("coord-2.log"));
    wait_api(&data, &coord.api).await;

    for p in &created {
        let s = wait_plan_finished(&c, p.id, Duration::from_secs(40))
            .await
            .unwrap();
        assert_eq!(s["plan"]["state"], "succeeded", "plan {}", p.id);
        assert_eq!(
            event_list(&s),
            clean_run(STEPS as u64),
            "plan {} on {}: every event exactly once",
            p.id,
            p.node
        );
    }
    // The agents kept working while the coordinator was down: each step ran exactly once.
    for a in &agents {
        assert_eq!(a.fake.calls().len(), STEPS);
    }
    assert!(coord.proc.log_text().contains("agent session established"));

    for a in agents {
        a.stop().await.unwrap();
    }
    // SIGTERM drains and exits cleanly.
    let status = coord.proc.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "coordinator exit status {status}");
    assert!(coord.proc.log_text().contains("coordinator stopped"));
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

/// Waits (20 s at most) until the fake driver's record holds `line`.
async fn wait_recorded(record: &std::path::Path, line: &str, what: &str) {
    wait_for(Duration::from_secs(20), what, || async {
        let text = std::fs::read_to_string(record).unwrap_or_default();
        Ok(text.contains(line).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_step_resumes_from_its_journal() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let state = dir.path().join("agent");
    let record = dir.path().join("calls.log");
    let agent_bin = bin("ferric-agent").unwrap();
    let state_s = state.to_str().unwrap().to_owned();
    let quic = coord.listen.to_string();

    // Enroll through the real command line.
    let t = c.create_token(Duration::from_secs(600)).await.unwrap();
    let out = std::process::Command::new(&agent_bin)
        .args([
            "--state-dir",
            &state_s,
            "enroll",
            "--coordinator",
            &quic,
            "--token",
            &t.token,
            "--ca-hash",
            &t.ca_hash,
            "--node",
            "worker",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run_args = [
        "--state-dir",
        &state_s,
        "run",
        "--fake-step-delay",
        "700ms",
        "--fake-record",
        record.to_str().unwrap(),
        "--backoff-max",
        "500ms",
    ];
    let mut agent = Proc::spawn(&agent_bin, &run_args, &dir.path().join("agent-1.log")).unwrap();
    let plan: ferric_coordinator::conductor::plans::PlanFile = serde_yaml_from(PLAN_YAML);
    wait_for(Duration::from_secs(20), "agent connected", || async {
        Ok(coord.shared.hub.links.connected_since("worker").map(|_| ()))
    })
    .await
    .unwrap();
    let id = c.apply(vec!["worker".into()], plan).await.unwrap()[0].id;

    // Kill it in the middle of step 1.
    let step1 = "begin ensure_volume volume/default/v1";
    wait_recorded(&record, step1, "step 1 running").await;
    agent.kill();
    let mut agent = Proc::spawn(&agent_bin, &run_args, &dir.path().join("agent-2.log")).unwrap();
    let s = wait_plan_finished(&c, id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded");
    assert!(
        agent
            .log_text()
            .contains("resuming a step that was running when the agent stopped"),
        "{}",
        agent.log_text()
    );

    // Step 0 ran once; step 1 started twice (killed, then resumed) and finished once.
    let mut want = clean_run(4);
    want.insert(2, (2, 1, "started".into()));
    for (i, e) in want.iter_mut().enumerate() {
        e.0 = i as u64;
    }
    assert_eq!(event_list(&s), want);
    let rec = std::fs::read_to_string(&record).unwrap();
    for (v, begun) in [("v0", 1), ("v1", 2), ("v2", 1), ("v3", 1)] {
        assert_eq!(
            count(&rec, &format!("begin ensure_volume volume/default/{v}")),
            begun,
            "{rec}"
        );
        assert_eq!(
            count(&rec, &format!("end ensure_volume volume/default/{v}")),
            1,
            "{rec}"
        );
    }

    // SIGTERM in the middle of a step: the step finishes, its events are stored, exit 0.
    std::fs::write(&record, "").unwrap();
    let id2 = c.apply(vec!["worker".into()], plan_file(3)).await.unwrap()[0].id;
    let step0 = "begin ensure_volume volume/default/v0";
    wait_recorded(&record, step0, "step 0 of the second plan running").await;
    let status = agent.terminate(Duration::from_secs(10)).unwrap();
    assert!(
        status.success(),
        "agent exit status {status}: {}",
        agent.log_text()
    );
    let s = c.plan(id2).await.unwrap();
    assert_eq!(
        event_list(&s),
        clean_run(3)[..2].to_vec(),
        "the running step finished and was reported before exit"
    );
    let rec = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        count(&rec, "end ensure_volume volume/default/v0"),
        1,
        "{rec}"
    );
    assert!(
        !rec.contains("volume/default/v1"),
        "no new step starts during a drain: {rec}"
    );

    // Restarted, it carries on from step 1.
    let _agent = Proc::spawn(&agent_bin, &run_args, &dir.path().join("agent-3.log")).unwrap();
    let s = wait_plan_finished(&c, id2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(event_list(&s), clean_run(3));
    coord.shutdown().await;
}

#[test]
fn the_server_refuses_client_options_instead_of_ignoring_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().into_owned();
    for (args, says) in [
        (
            vec!["coordinator", "--api", "http://127.0.0.1:17180"],
            "`--api` is a client option",
        ),
        (
            vec!["--api", "http://127.0.0.1:17180", "coordinator"],
            "--api-listen",
        ),
        (
            vec!["coordinator", "-o", "json"],
            "`--output` is a client option",
        ),
    ] {
        let out = std::process::Command::new(ferric_tests::bin("ferric").unwrap())
            .args(&args)
            .args([
                "--data-dir",
                &data,
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .env_remove("FERRIC_API")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} touched the data directory"
        );
    }
}
