//! Tier 4: the dashboard in a real browser (Debian's headless Chromium over WebDriver) against
//! a live coordinator with a management agent and a one-node lab rack behind an ipmi_sim BMC.
//! Signed in with the admin token it lists the nodes, the node page's CPU chart grows as the
//! resident ramdisk's samples arrive, and a deploy started with the page's button shows its
//! write's progress and ends `active`; signed in with a reader's token, the same pages show no
//! action. Screenshots of each step are kept in `target/artifacts/dashboard/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_tests::browser::Browser;
use ferric_tests::cli_ok;
use std::time::{Duration, Instant};

const MARKER: &str = "dashboard-marker-5d21";
/// Bytes that make the image's write last a few telemetry intervals under TCG.
const BALLAST: u64 = 20 << 20;

/// Signs in on the page with `token`.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.client.goto(&format!("{base}/")).await.unwrap();
    let input = b.wait_css("#token", Duration::from_secs(20)).await.unwrap();
    input.send_keys(token).await.unwrap();
    b.wait_css("#sign-in", Duration::from_secs(5))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_css("#nav:not([hidden])", Duration::from_secs(20))
        .await
        .unwrap();
}

/// The number of points the chart `id` draws now.
async fn points(b: &Browser, id: &str) -> usize {
    let Ok(e) = b
        .wait_css(&format!("svg[data-chart={id}]"), Duration::from_secs(20))
        .await
    else {
        return 0;
    };
    e.attr("data-points")
        .await
        .ok()
        .flatten()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_deploys_from_the_page_and_hides_actions_from_readers() {
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build_with(MARKER, BALLAST).unwrap();
    let name = format!("w{}", std::process::id() % 100_000);
    let lab_root = tmp.path().join("lab");
    let r = ferric_tests::rack::up(&lab_root, &name, 1, 512, 256 << 20).unwrap();
    let rack = &r.0;
    let node = rack.nodes[0].name.clone();

    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    cfg.lifecycle.callback = Duration::from_secs(120);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    // Allowed the rack's directory: it tails the node's serial console there.
    let agent = ferric_tests::management_agent_allowing(
        &coord,
        tmp.path(),
        IpmiClient::default(),
        &[&lab_root],
    )
    .await
    .unwrap();
    let root = lab_root.to_str().unwrap();
    cli_ok(api, &["lab", "--name", &name, "--root", root, "enroll"]).await;
    cli_ok(
        api,
        &["image", "upload", image.to_str().unwrap(), "--name", "os"],
    )
    .await;
    // To `available` with the CLI's own --wait, the states printed as they change.
    for verb in ["manage", "inspect"] {
        let out = cli_ok(api, &["node", verb, &node, "--wait", "--timeout", "6m"]).await;
        assert!(out.contains(&format!("{node}: ")), "{verb}: {out}");
    }
    // With -o json the output is one document: the end states, nothing printed before.
    let out = cli_ok(
        api,
        &[
            "-o",
            "json",
            "node",
            "provide",
            &node,
            "--wait",
            "--timeout",
            "6m",
        ],
    )
    .await;
    let ended: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("provide -o json --wait printed more than JSON ({e}): {out}"));
    assert_eq!(ended[0]["state"], "available", "{out}");
    let created = cli_ok(
        api,
        &["-o", "json", "api-token", "create", "--role", "reader"],
    )
    .await;
    let reader: serde_json::Value = serde_json::from_str(&created).unwrap();
    let reader = reader["token"].as_str().unwrap().to_owned();
    let admin = ferric_tests::admin_token(api).unwrap();

    let b = Browser::start("dashboard").await.unwrap();
    let base = ferric_tests::base_url(api);

    // The fleet: both nodes, the lab node available.
    sign_in(&b, &base, &admin).await;
    let row = b
        .wait_css(
            &format!("tr[data-node=\"{node}\"]"),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    b.wait_css("tr[data-node=\"mgmt\"]", Duration::from_secs(20))
        .await
        .unwrap();
    let text = row.text().await.unwrap();
    assert!(
        text.contains("available") && text.contains("baremetal"),
        "{text}"
    );
    let tiles = b.text("#tiles").await.unwrap();
    assert!(
        tiles.contains("2\nnodes") && tiles.contains("available"),
        "{tiles}"
    );
    b.rendered_text().await.unwrap();
    b.shot("fleet").await.unwrap();

    // The node page: its chart grows as samples of the resident ramdisk arrive.
    b.client
        .goto(&format!("{base}/#/nodes/{node}"))
        .await
        .unwrap();
    b.wait_css("#state", Duration::from_secs(20)).await.unwrap();
    let first = points(&b, "cpu").await;
    let started = Instant::now();
    let grown = loop {
        let now = points(&b, "cpu").await;
        if now >= first + 3 {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the CPU chart stayed at {now} points (from {first}) for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(grown > first, "{first} → {grown}");
    let page = b.rendered_text().await.unwrap();
    assert!(
        page.contains("QEMU Virtual CPU")
            && page.contains(&format!("ipmi://admin@{}", rack.nodes[0].bmc_ip)),
        "the inspection and the BMC are shown: {page}"
    );
    b.shot("node-telemetry").await.unwrap();
    assert!(
        b.text("#boot-mode")
            .await
            .unwrap_or_default()
            .starts_with("bios (seen by inspection)"),
        "the boot mode is shown, as inspection saw it: {page}"
    );

    // The deployed OS's network, set from the page: one port's address, VLAN and gateway.
    let address = format!("10.248.{}.30/24", rack.subnet);
    let mac = rack.nodes[0].mac.to_lowercase();
    b.wait_css("#port-mac", Duration::from_secs(10))
        .await
        .unwrap()
        .select_by_value(&mac)
        .await
        .unwrap();
    for (id, value) in [
        ("#port-address", address.clone()),
        ("#port-vlan", format!("100=10.249.{}.30/24", rack.subnet)),
        ("#port-gateway", format!("10.248.{}.1", rack.subnet)),
    ] {
        b.wait_css(id, Duration::from_secs(5))
            .await
            .unwrap()
            .send_keys(&value)
            .await
            .unwrap();
    }
    b.wait_css("button[data-port=set]", Duration::from_secs(5))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_css(
        &format!("#network tr[data-mac=\"{mac}\"]"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let shown = b.text("#network").await.unwrap_or_default();
    assert!(
        shown.contains(&address) && shown.contains("vlan 100"),
        "{shown}"
    );
    let net: serde_json::Value = ferric_tests::client(api)
        .get(&format!("/v1/nodes/{node}/network"))
        .await
        .unwrap();
    assert_eq!(net["ports"][0]["addresses"][0], address.as_str(), "{net}");
    assert_eq!(net["ports"][0]["vlans"][0]["id"], 100, "{net}");
    assert_eq!(net["routes"][0]["to"], "default", "{net}");

    // A deploy from the page: its progress shows, and it ends active.
    let pick = b
        .wait_css("#deploy-image", Duration::from_secs(10))
        .await
        .unwrap();
    pick.select_by_value("os").await.unwrap();
    b.wait_css("button[data-verb=deploy]", Duration::from_secs(5))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let started = Instant::now();
    let mut progress: Option<(u64, String)> = None;
    let mut states = vec![];
    loop {
        if let Some(state) = b.text("#state").await
            && states.last() != Some(&state)
        {
            states.push(state);
        }
        if let Ok(p) = b.client.find(fantoccini::Locator::Css("#progress")).await {
            let done: u64 = p
                .attr("data-done")
                .await
                .ok()
                .flatten()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            if done > 0 && progress.as_ref().is_none_or(|(d, _)| done > *d) {
                let text = p.text().await.unwrap_or_default();
                if progress.is_none() {
                    b.shot_of("deploy-progress", "#lifecycle").await.unwrap();
                }
                progress = Some((done, text));
            }
        }
        let doing = b.text("#doing").await.unwrap_or_default();
        if states.last().map(String::as_str) == Some("active") && doing == "nothing" {
            break;
        }
        assert!(
            states.last().map(String::as_str) != Some("deploy-failed"),
            "the deploy failed: {}",
            b.page_text().await
        );
        assert!(
            started.elapsed() < Duration::from_secs(360),
            "not active after 6 min; the page went through {states:?}: {}\n{}",
            b.page_text().await,
            ferric_tests::rack::console_tails(rack)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (done, text) = progress.unwrap_or_else(|| panic!("no progress shown; states {states:?}"));
    assert!(
        text.contains("Progress:") && text.contains(" of ") && done > 0,
        "{done}: {text}"
    );
    assert!(
        states.iter().any(|s| s == "deploying") && states.last().unwrap() == "active",
        "{states:?}"
    );
    let page = b.rendered_text().await.unwrap();
    assert!(page.contains("available → deploying"), "{page}");
    b.shot("node-active").await.unwrap();
    b.shot_of("node-active-history", "#history").await.unwrap();
    // The console tail: the deployed OS's own line comes through agent and coordinator, and
    // the host name it read from the config drive the page's deploy had written.
    let want = format!("FERRIC-OS {MARKER}");
    let named = format!("FERRIC-OS-HOSTNAME {node}");
    let started = Instant::now();
    loop {
        let shown = b.text("#console").await.unwrap_or_default();
        if shown.contains(&want) && shown.contains(&named) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the console tail never showed `{want}` and `{named}`: {shown}\n{}",
            ferric_tests::rack::console_tails(rack)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.shot_of("node-console", "#console-box").await.unwrap();
    let tail = cli_ok(api, &["node", "console", &node, "-n", "1000"]).await;
    assert!(tail.contains(&want), "ferric node console: {tail}");
    assert!(
        !tail.contains('\u{1b}'),
        "terminal escapes are removed: {tail:?}"
    );
    // The API agrees with what the page showed.
    let d: serde_json::Value = ferric_tests::client(api)
        .get(&format!("/v1/nodes/{node}"))
        .await
        .unwrap();
    assert_eq!(d["lifecycle"]["state"], "active", "{d}");

    // A reader sees the same pages, without a single action.
    b.wait_css("#logout", Duration::from_secs(5))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&b, &base, &reader).await;
    b.wait_css(
        &format!("tr[data-node=\"{node}\"]"),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    b.client
        .goto(&format!("{base}/#/nodes/{node}"))
        .await
        .unwrap();
    b.wait_css("#state", Duration::from_secs(20)).await.unwrap();
    b.wait_css("svg[data-chart=cpu]", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(b.page_text().await.contains("reader"));
    let buttons = b.all("button.action").await.unwrap();
    assert!(
        buttons.is_empty(),
        "a reader sees {} action buttons",
        buttons.len()
    );
    assert!(b.all("#actions").await.unwrap().is_empty());
    for page in ["guests", "images", "plans"] {
        b.client.goto(&format!("{base}/#/{page}")).await.unwrap();
        b.wait_css(
            &format!("#nav a.current[data-page={page}]"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            b.all("button.action").await.unwrap().is_empty(),
            "a reader sees actions on {page}"
        );
    }
    b.client
        .goto(&format!("{base}/#/nodes/{node}"))
        .await
        .unwrap();
    b.wait_css("#state", Duration::from_secs(20)).await.unwrap();
    b.rendered_text().await.unwrap();
    b.shot("reader-node").await.unwrap();

    b.close().await.unwrap();
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
