//! Tier 3: guests as desired state through the real coordinator API, placed across three
//! in-process hypervisor agents (fake drivers) whose telemetry gives their size and bridges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::FakeDriver;
use ferric_agent::telemetry::FixedSampler;
use ferric_coordinator::conductor::guests::{CreateGuest, GuestAction, GuestView};
use ferric_coordinator::conductor::placement::HostView;
use ferric_proto::msg::{DiskSample, NicSample, TelemetrySample};
use ferric_proto::plan::GuestBoot;
use ferric_tests::*;
use std::sync::Arc;
use std::time::Duration;

fn sample(cpus: u32, mem_gib: u64, disk_gib: u64, nics: &[&str]) -> FixedSampler {
    FixedSampler(TelemetrySample {
        seq: 0,
        at_ms: 0,
        cpu_percent: 3.0,
        cpus,
        mem_used_bytes: 1 << 30,
        mem_total_bytes: mem_gib << 30,
        load1: 0.2,
        disks: vec![DiskSample {
            mount: "/".into(),
            total_bytes: disk_gib << 31,
            available_bytes: disk_gib << 30,
        }],
        nics: nics
            .iter()
            .map(|n| NicSample {
                name: n.to_string(),
                rx_bytes: 0,
                tx_bytes: 0,
            })
            .collect(),
        progress: None,
        guests: vec![],
    })
}

fn guest(name: &str, vcpus: u32, memory_mib: u64, nets: &[&str]) -> CreateGuest {
    CreateGuest {
        name: name.into(),
        vcpus,
        memory_mib,
        disk_bytes: 10 << 30,
        nets: nets.iter().map(|n| n.to_string()).collect(),
        boot: GuestBoot::Disk,
        pool: "fast".into(),
        image: None,
    }
}

/// The error of a guest creation the coordinator refuses.
async fn refusal(c: &ferric_coordinator::client::Client, g: &CreateGuest) -> String {
    c.post::<_, GuestAction>("/v1/guests", g)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_are_placed_by_filters_and_weight_and_follow_their_desired_state() {
    let (dir, coord, c) = coordinator_in_tempdir().await;
    let mut agents = Vec::new();
    for (name, s) in [
        ("big", sample(8, 32, 100, &["lo", "br0"])),
        ("small", sample(2, 4, 20, &["lo", "br0"])),
        ("nobridge", sample(16, 64, 500, &["lo"])),
    ] {
        let state = dir.path().join(name);
        enroll_in_process(coord.api, coord.listen, name, &state)
            .await
            .unwrap();
        let fake = Arc::new(FakeDriver::new());
        let mut cfg = agent_config(&state, fake.clone());
        cfg.sampler = Arc::new(s);
        agents.push((name, spawn_agent(cfg, fake)));
    }
    let hosts: Vec<HostView> = wait_for(
        Duration::from_secs(20),
        "telemetry from three hosts",
        || async {
            let hosts: Vec<HostView> = c.get("/v1/hosts").await?;
            Ok(
                (hosts.len() == 3 && hosts.iter().all(|h| h.connected && h.cpus > 0))
                    .then_some(hosts),
            )
        },
    )
    .await
    .unwrap();
    let big = hosts.iter().find(|h| h.name == "big").unwrap();
    assert_eq!(
        (big.cpus, big.mem_total_mib, big.disk_free_bytes),
        (8, 32 << 10, 100 << 30)
    );

    // A guest on br0 goes to the least loaded host that has br0.
    let g1: GuestAction = c
        .post("/v1/guests", &guest("g1", 2, 2048, &["br0"]))
        .await
        .unwrap();
    assert_eq!(g1.host, "big");
    let s = wait_plan_finished(&c, g1.plan, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded");
    let big_agent = &agents.iter().find(|(n, _)| *n == "big").unwrap().1;
    assert_eq!(
        big_agent.fake.calls(),
        vec![
            "ensure_volume volume/fast/g1-root",
            "ensure_guest guest/g1",
            "guest_power guest/g1/Start"
        ]
    );

    // Without a bridge requirement the emptiest host wins.
    let g2: GuestAction = c
        .post("/v1/guests", &guest("g2", 1, 1024, &[]))
        .await
        .unwrap();
    assert_eq!(g2.host, "nobridge");

    // Nothing fits: the error names every host and why.
    let err = refusal(&c, &guest("huge", 2, 40 << 10, &["br0"])).await;
    assert!(
        err.contains("no host fits the guest: big: needs 40960 MiB memory, 30720 MiB free; nobridge: has no bridge `br0`; small: needs 40960 MiB memory, 4096 MiB free"),
        "{err}"
    );
    assert!(err.contains("409"), "{err}");
    let err = refusal(&c, &guest("g1", 1, 64, &[])).await;
    assert!(err.contains("guest `g1` already exists"), "{err}");
    let err = refusal(&c, &guest("bad name", 1, 64, &[])).await;
    assert!(err.contains("field `name`"), "{err}");

    let hosts: Vec<HostView> = c.get("/v1/hosts").await.unwrap();
    let big = hosts.iter().find(|h| h.name == "big").unwrap();
    assert_eq!((big.vcpus_used, big.mem_used_mib, big.guests), (2, 2048, 1));

    // Stop, then delete: the deletion plan's success removes it from the inventory.
    let stop: GuestAction = c
        .post("/v1/guests/g1/stop", &serde_json::json!({}))
        .await
        .unwrap();
    wait_plan_finished(&c, stop.plan, Duration::from_secs(20))
        .await
        .unwrap();
    let v: GuestView = c.get("/v1/guests/g1").await.unwrap();
    assert_eq!(v.desired.as_str(), "stopped");
    let del: GuestAction = c.delete("/v1/guests/g1").await.unwrap();
    let s = wait_plan_finished(&c, del.plan, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded");
    let guests: Vec<GuestView> = c.get("/v1/guests").await.unwrap();
    assert_eq!(
        guests.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        vec!["g2"]
    );
    let hosts: Vec<HostView> = c.get("/v1/hosts").await.unwrap();
    assert_eq!(
        hosts.iter().find(|h| h.name == "big").unwrap().mem_used_mib,
        0
    );
    assert!(big_agent.fake.calls().ends_with(&[
        "guest_power guest/g1/Shutdown".to_owned(),
        "delete_guest guest/g1".to_owned(),
        "delete_volume volume/fast/g1-root".to_owned()
    ]));

    for (_, a) in agents {
        a.stop().await.unwrap();
    }
    coord.shutdown().await;
}
