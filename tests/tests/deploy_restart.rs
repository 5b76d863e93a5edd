//! Tier 4: the coordinator, a real process with boot services on a lab rack's provisioning
//! link, killed with SIGKILL mid-deploy and started again on the same store and ports. Twice:
//! while the ramdisk streams the image from it (the transfer resumes over `Range` from the
//! new process, the ramdisk holds its reboot until its report is stored), and while a rebuild
//! waits for the node's network boot to call back. Each time the deploy finishes, the node
//! boots its image from its own disk, and every plan's every step is reported exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_tests::rack::{console, every_step_once, wait_state};
use ferric_tests::{Proc, bin, cli_ok, free_port, wait_for};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MARKER: &str = "restart-marker-41c2";

/// How the coordinator is started, each time the same.
struct Coordinator {
    data: PathBuf,
    iface: String,
    ramdisk: PathBuf,
    quic: u16,
    api: u16,
    http: u16,
}

impl Coordinator {
    fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api))
    }

    /// Starts it, logging to `log`, and waits for its API.
    async fn start(&self, log: &Path) -> Proc {
        let (listen, api, http) = (
            format!("0.0.0.0:{}", self.quic),
            self.api().to_string(),
            self.http.to_string(),
        );
        let proc = Proc::spawn(
            &bin("ferric").unwrap(),
            &[
                "coordinator",
                "--data-dir",
                self.data.to_str().unwrap(),
                "--listen",
                &listen,
                "--api-listen",
                &api,
                "--boot-services",
                &self.iface,
                "--boot-http-port",
                &http,
                "--ramdisk-dir",
                self.ramdisk.to_str().unwrap(),
                "--drain-grace",
                "2s",
            ],
            log,
        )
        .unwrap();
        ferric_tests::wait_admitted(&self.data, self.api(), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", proc.log_text()));
        proc
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The moves of `node`'s lifecycle after `since_ms`, as `from → to (step) cause`; none of
/// them a failure, and the last one into `active`: the restarted coordinator finished it.
async fn finished_after(
    c: &ferric_coordinator::client::Client,
    node: &str,
    since_ms: i64,
) -> Vec<String> {
    let d: serde_json::Value = c.get(&format!("/v1/nodes/{node}")).await.unwrap();
    let after: Vec<&serde_json::Value> = d["lifecycle"]["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["at_ms"].as_i64().unwrap() > since_ms)
        .collect();
    assert!(
        after.iter().all(|t| t["error"].is_null()),
        "no failure after the restart: {after:?}"
    );
    assert_eq!(
        after.last().map(|t| t["to"].clone()),
        Some(serde_json::json!("active")),
        "the restarted coordinator moved the node to active: {after:?}"
    );
    after
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
            format!(
                "{} → {} ({}): {}",
                s("from"),
                s("to"),
                s("step"),
                s("cause")
            )
        })
        .collect()
}

/// Waits until `node`'s lifecycle is at `step` (one of `steps`), 3 minutes at most.
async fn wait_step(c: &ferric_coordinator::client::Client, node: &str, steps: &[&str]) -> String {
    wait_for(Duration::from_secs(180), "the step", || async {
        let d: serde_json::Value = c.get(&format!("/v1/nodes/{node}")).await?;
        let step = d["lifecycle"]["step"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(steps.contains(&step.as_str()).then_some(step))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_deploy_starts_again_and_the_deploy_finishes() {
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build(MARKER).unwrap();
    let name = format!("r{}", std::process::id() % 100_000);
    let lab_root = tmp.path().join("lab");
    let r = ferric_tests::rack::up(&lab_root, &name, 1, 512, 256 << 20).unwrap();
    let rack = &r.0;
    let node = rack.nodes[0].name.clone();

    let coordinator = Coordinator {
        data: tmp.path().join("coord"),
        iface: rack.prov_veth(),
        ramdisk: ferric_tests::ramdisk::image().unwrap(),
        quic: free_port().unwrap(),
        api: free_port().unwrap(),
        http: free_port().unwrap(),
    };
    let mut coord = coordinator.start(&tmp.path().join("coord-1.log")).await;
    let api = coordinator.api();
    let c = ferric_tests::client(api);
    let mgmt = tmp.path().join("mgmt");
    let quic = SocketAddr::from(([127, 0, 0, 1], coordinator.quic));
    ferric_tests::enroll_in_process(api, quic, "mgmt", &mgmt)
        .await
        .unwrap();
    let agent = ferric_tests::bmc_agent(&mgmt, IpmiClient::default(), None, &[]);

    let root = lab_root.to_str().unwrap();
    cli_ok(api, &["lab", "--name", &name, "--root", root, "enroll"]).await;
    cli_ok(
        api,
        &["image", "upload", image.to_str().unwrap(), "--name", "os"],
    )
    .await;
    for (verb, state) in [
        ("manage", "manageable"),
        ("inspect", "manageable"),
        ("provide", "available"),
    ] {
        cli_ok(api, &["node", verb, &node]).await;
        wait_state(api, rack, &[&node], state).await.unwrap();
    }

    // Killed while the resident ramdisk writes the image it streams from the coordinator.
    cli_ok(api, &["node", "deploy", &node, "--image", "os"]).await;
    // (Or, on a slow day, in the power read after it: a kill mid-deploy all the same.)
    let at = wait_step(&c, &node, &["write", "read-power"]).await;
    coord.kill();
    let killed = now_ms();
    coord = coordinator.start(&tmp.path().join("coord-2.log")).await;
    wait_state(api, rack, &[&node], "active").await.unwrap();
    let moves = finished_after(&c, &node, killed).await;
    eprintln!("after the kill in {at}: {moves:#?}");
    let booted = |n: usize| {
        let (rack, node) = (rack, &rack.nodes[0]);
        async move {
            wait_for(Duration::from_secs(120), "the deployed OS", || async {
                let t = console(rack, node);
                let want = format!("FERRIC-OS-HOSTNAME {}", node.name);
                Ok((t.matches(&want).count() >= n).then_some(t))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", console(rack, node)))
        }
    };
    let text = booted(1).await;
    assert!(text.contains(&format!("FERRIC-OS {MARKER}")), "{text}");
    every_step_once(&c, &node).await.unwrap();
    every_step_once(&c, "mgmt").await.unwrap();

    // Killed while a rebuild waits for the network-booted node's ramdisk to call back.
    cli_ok(api, &["node", "rebuild", &node]).await;
    let at = wait_step(&c, &node, &["wait-callback", "write", "read-power"]).await;
    coord.kill();
    let killed = now_ms();
    coord = coordinator.start(&tmp.path().join("coord-3.log")).await;
    wait_state(api, rack, &[&node], "active").await.unwrap();
    let moves = finished_after(&c, &node, killed).await;
    eprintln!("after the kill in {at}: {moves:#?}");
    booted(2).await;
    every_step_once(&c, &node).await.unwrap();
    every_step_once(&c, "mgmt").await.unwrap();
    let shown = cli_ok(api, &["node", "show", &node]).await;
    assert!(shown.contains("state:        active"), "{shown}");
    assert!(
        !shown.contains("last error"),
        "the restarts left no failure behind (killed at {at}): {shown}"
    );

    agent.stop().await.unwrap();
    let status = coord.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "coordinator exit status {status}");
}
