//! In-process system tier: a plan naming a host path outside the directories its agent may
//! use (a serial log over `/etc/shadow`, a kernel from anywhere) fails at that step with the
//! field, the path and the fix; no driver is called, and the plan's other steps do not run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::FakeDriver;
use ferric_tests::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_naming_a_path_outside_the_allowed_directories_is_refused() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let state = enroll_node(&coord, dir.path(), "hv").await.unwrap();
    let fake = Arc::new(FakeDriver::new());
    let allowed = dir.path().join("consoles");
    std::fs::create_dir(&allowed).unwrap();
    let mut cfg = agent_config(&state, fake.clone());
    cfg.paths = ferric_agent::paths::PathPolicy::new([allowed.clone()]);
    let agent = spawn_agent(cfg, fake.clone());

    let plan = |serial: &str| -> ferric_coordinator::conductor::plans::PlanFile {
        serde_yaml_ng::from_str(&format!(
            "steps:\n  - ensure_guest: {{ name: g, vcpus: 1, memory_mib: 64, volumes: [{{ pool: p, name: v }}], serial_log: {serial} }}\n  - guest_power: {{ name: g, action: start }}\n"
        ))
        .unwrap()
    };
    let refused = c
        .apply(vec!["hv".into()], plan("/etc/shadow"))
        .await
        .unwrap()[0]
        .id;
    let s = wait_plan_finished(&c, refused, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "failed", "{s}");
    let text = s.to_string();
    assert!(
        text.contains("serial_log `/etc/shadow` is outside the directories this agent may use")
            && text.contains("--allow-path")
            && text.contains("invalid_spec"),
        "{text}"
    );
    assert!(fake.calls().is_empty(), "no driver ran: {:?}", fake.calls());

    // Inside them, the same plan runs.
    let inside = allowed.join("g.log");
    let ok = c
        .apply(vec!["hv".into()], plan(inside.to_str().unwrap()))
        .await
        .unwrap()[0]
        .id;
    let s = wait_plan_finished(&c, ok, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s}");
    assert_eq!(fake.calls().len(), 2, "{:?}", fake.calls());
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// Finding 4 of the provisioning network's review: the agent's allowed paths included
/// `/var/lib/ferric`, the coordinator's default data directory, so a guest step read its CA
/// key or appended to its secrets key. State directories are refused wherever they are, even
/// inside an allowed directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_never_names_a_path_in_a_coordinators_or_its_agents_state_directory() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let state = enroll_node(&coord, dir.path(), "hv").await.unwrap();
    let fake = Arc::new(FakeDriver::new());
    let mut cfg = agent_config(&state, fake.clone());
    // Everything under the test's directory is allowed: the coordinator's data directory and
    // the agent's state directory are in it.
    cfg.paths = ferric_agent::paths::PathPolicy::new([dir.path().to_path_buf()]);
    let agent = spawn_agent(cfg, fake.clone());
    assert!(!ferric_agent::paths::DEFAULT_ALLOWED.contains(&"/var/lib/ferric"));
    let data = coord.shared.config.data_dir.clone();
    for (field, path) in [
        ("serial_log", data.join("secrets.key")),
        ("boot.kernel", data.join("ca.key")),
        ("serial_log", data.join("images/new.log")),
        ("serial_log", state.join("node.key")),
        ("serial_log", state.join("journal/x.log")),
    ] {
        let boot = if field == "boot.kernel" {
            format!(
                ", boot: {{ kernel: {{ kernel: {}, initrd: {}, cmdline: '' }} }}",
                path.display(),
                dir.path().join("initrd").display()
            )
        } else {
            String::new()
        };
        let serial = if field == "serial_log" {
            format!(", serial_log: {}", path.display())
        } else {
            String::new()
        };
        let plan: ferric_coordinator::conductor::plans::PlanFile = serde_yaml_ng::from_str(&format!(
            "steps:\n  - ensure_guest: {{ name: g, vcpus: 1, memory_mib: 64, volumes: [{{ pool: p, name: v }}]{serial}{boot} }}\n"
        ))
        .unwrap();
        let id = c.apply(vec!["hv".into()], plan).await.unwrap()[0].id;
        let s = wait_plan_finished(&c, id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(s["plan"]["state"], "failed", "{s}");
        let text = s.to_string();
        assert!(
            text.contains(&format!("{field} `{}`", path.display()))
                && text.contains("a Ferric state directory"),
            "{text}"
        );
    }
    assert!(fake.calls().is_empty(), "no driver ran: {:?}", fake.calls());
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
