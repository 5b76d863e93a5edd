//! Tier 4: Ferric's IPMI-over-LAN client against a real emulated BMC (OpenIPMI's `ipmi_sim`),
//! each change read back with `ipmitool -I lanplus` from the same BMC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::{IpmiClient, IpmiOptions};
use ferric_agent::bmc::{BmcErrorKind, BmcTarget, Secret};
use ferric_proto::plan::{BootDevice, PowerAction};
use ferric_tests::bmc::{ADMIN, SENSORS, SimBmc};
use std::time::{Duration, Instant};

fn target(bmc: &SimBmc, user: &str, password: &str) -> BmcTarget {
    BmcTarget::parse(
        &format!("ipmi://{user}@127.0.0.1:{}", bmc.port),
        Secret::new(password),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_boot_device_identity_and_sel_agree_with_ipmitool() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = SimBmc::start(dir.path()).unwrap();
    let t = target(&bmc, ADMIN.0, ADMIN.1);
    let c = IpmiClient::new(IpmiOptions::default());

    assert!(!c.chassis_status(&t).await.unwrap().power_on);
    assert!(bmc.power_status().unwrap().contains("is off"));
    c.power(&t, PowerAction::On).await.unwrap();
    assert!(c.chassis_status(&t).await.unwrap().power_on);
    assert!(bmc.power_status().unwrap().contains("is on"));
    c.power(&t, PowerAction::Off).await.unwrap();
    assert!(bmc.power_status().unwrap().contains("is off"));
    // A cycle of a running chassis: off, then (ipmi_sim waits about a second) on again.
    c.power(&t, PowerAction::On).await.unwrap();
    c.power(&t, PowerAction::Cycle).await.unwrap();
    assert_eq!(
        bmc.chassis("power").as_deref(),
        Some("0"),
        "the cycle powered off"
    );
    let started = Instant::now();
    while !c.chassis_status(&t).await.unwrap().power_on {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cycle never powered on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bmc.power_status().unwrap().contains("is on"));
    c.power(&t, PowerAction::Reset).await.unwrap();
    assert_eq!(
        bmc.chassis("resets").as_deref(),
        Some("1"),
        "the chassis saw the reset"
    );
    c.power(&t, PowerAction::On).await.unwrap();
    c.power(&t, PowerAction::Soft).await.unwrap();
    assert!(bmc.power_status().unwrap().contains("is off"));

    for (device, ipmitool_says, chassis_says) in [
        (BootDevice::Pxe, "Force PXE", "pxe"),
        (
            BootDevice::Disk,
            "Force Boot from default Hard-Drive",
            "default",
        ),
        (BootDevice::Cdrom, "Force Boot from CD/DVD", "cdrom"),
        (BootDevice::Bios, "Force Boot into BIOS Setup", "bios"),
    ] {
        c.set_boot_device(&t, device, false, false).await.unwrap();
        let shown = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
        assert!(shown.contains(ipmitool_says), "{device:?}: {shown}");
        assert_eq!(bmc.chassis("boot").as_deref(), Some(chassis_says));
        assert_eq!(c.boot_device(&t).await.unwrap().device, Some(device));
    }

    let id = c.device_id(&t).await.unwrap();
    let info = bmc.ipmitool(&["mc", "info"]).unwrap();
    assert_eq!(id.ipmi_version, "2.0");
    assert!(
        info.contains(&format!("Manufacturer ID           : {}", id.manufacturer)),
        "{info}"
    );
    assert!(
        info.contains(&format!("Firmware Revision         : {}", id.firmware)),
        "{id:?} {info}"
    );

    // SEL: an entry added through ipmitool (Add SEL Entry, raw) is read by Ferric, then
    // cleared by Ferric.
    bmc.ipmitool(&[
        "raw", "0x0a", "0x44", "0x00", "0x00", "0x02", "0x00", "0x00", "0x00", "0x00", "0x20",
        "0x00", "0x04", "0x01", "0x01", "0x6f", "0x01", "0xff", "0xff",
    ])
    .unwrap();
    let sel = c.sel_info(&t).await.unwrap();
    assert!(sel.entries >= 1, "{sel:?}");
    assert_eq!(c.sel_entries(&t).await.unwrap().len(), sel.entries as usize);
    c.sel_clear(&t).await.unwrap();
    assert_eq!(c.sel_info(&t).await.unwrap().entries, 0);
    assert!(
        bmc.ipmitool(&["sel", "info"])
            .unwrap()
            .contains("Entries          : 0")
    );
    // Ferric's session is handed back with Close Session (ipmitool counts its own, too).
    let active = || -> u32 {
        let info = bmc.ipmitool(&["session", "info", "all"]).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("active sessions"))
            .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse().ok())
            .unwrap_or_else(|| panic!("{info}"))
    };
    let before = active();
    c.close_all().await;
    assert_eq!(active(), before - 1, "Ferric's session is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_low_privilege_and_a_silent_bmc_give_errors_that_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut bmc = SimBmc::start(dir.path()).unwrap();
    let c = IpmiClient::new(IpmiOptions {
        deadline: Duration::from_secs(8),
        ..IpmiOptions::default()
    });

    let wrong = target(&bmc, ADMIN.0, "not-the-password");
    let started = Instant::now();
    let e = c.chassis_status(&wrong).await.unwrap_err();
    assert_eq!(e.kind, BmcErrorKind::AuthFailed, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not retried"
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("127.0.0.1:{}", bmc.port)),
        "{shown}"
    );
    assert!(!shown.contains("not-the-password") && !format!("{e:?}").contains("not-the-password"));
    let e = c
        .chassis_status(&target(&bmc, "nobody", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, BmcErrorKind::AuthFailed, "{e}");

    // A user-level account cannot open the administrator session Ferric needs; ipmi_sim
    // refuses it the way it refuses a wrong password, and the message says both.
    let viewer = target(&bmc, "viewer", "viewer-secret");
    let e = c.power(&viewer, PowerAction::On).await.unwrap_err();
    assert_eq!(e.kind, BmcErrorKind::AuthFailed, "{e}");
    assert!(
        e.to_string().contains("login as `viewer` was refused")
            && e.to_string().contains("administrator rights"),
        "{e}"
    );
    assert_ne!(
        bmc.chassis("power").as_deref(),
        Some("1"),
        "nothing changed"
    );

    // The BMC goes silent: unreachable within the deadline, then back when it returns.
    let t = target(&bmc, ADMIN.0, ADMIN.1);
    c.chassis_status(&t).await.unwrap();
    let port = bmc.port;
    bmc.stop();
    let started = Instant::now();
    let e = c.chassis_status(&t).await.unwrap_err();
    assert_eq!(e.kind, BmcErrorKind::Unreachable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(
        e.to_string()
            .starts_with(&format!("BMC 127.0.0.1:{port}: no answer")),
        "{e}"
    );
    let _back = SimBmc::start_on(&dir.path().join("again"), port).unwrap();
    assert!(
        !c.chassis_status(&t).await.unwrap().power_on,
        "a new session after the outage"
    );
}

/// Datagrams lost on the path, each way.
const LOSS: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_succeed_across_a_path_that_loses_30_percent_of_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = SimBmc::start(dir.path()).unwrap();
    let relay = ferric_tests::bmc::LossyRelay::start(bmc.port, LOSS).unwrap();

    let t = BmcTarget::parse(
        &format!("ipmi://{}@127.0.0.1:{}", ADMIN.0, relay.port),
        Secret::new(ADMIN.1),
    )
    .unwrap();
    let c = IpmiClient::new(IpmiOptions::default());
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        let round_started = Instant::now();
        c.power(&t, PowerAction::On).await.unwrap();
        assert!(
            c.chassis_status(&t).await.unwrap().power_on,
            "round {round}"
        );
        c.set_boot_device(&t, BootDevice::Pxe, false, false)
            .await
            .unwrap();
        c.power(&t, PowerAction::Off).await.unwrap();
        assert!(
            !c.chassis_status(&t).await.unwrap().power_on,
            "round {round}"
        );
        slowest = slowest.max(round_started.elapsed());
    }
    eprintln!(
        "25 operations at {LOSS}% loss: {:?} (slowest round of 5 operations: {slowest:?})",
        started.elapsed()
    );
    assert!(bmc.power_status().unwrap().contains("is off"));
    assert_eq!(bmc.chassis("boot").as_deref(), Some("pxe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_from_the_sdr_walk_agree_with_ipmitool() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = SimBmc::start(dir.path()).unwrap();
    let t = target(&bmc, ADMIN.0, ADMIN.1);
    let c = IpmiClient::new(IpmiOptions::default());
    let defs = c.sdr_sensors(&t).await.unwrap();
    assert_eq!(
        defs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        SENSORS.iter().map(|s| s.name).collect::<Vec<_>>()
    );
    for (d, s) in defs.iter().zip(SENSORS) {
        let v = c.sensor_reading(&t, d).await.unwrap().unwrap();
        assert!((v - s.value).abs() < 1e-6, "{}: {v} != {}", s.name, s.value);
        // ipmitool decodes the same SDR and reading.
        let shown = bmc.ipmitool(&["sensor", "reading", s.name]).unwrap();
        let theirs: f64 = shown
            .rsplit('|')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ipmitool said {shown:?}"));
        assert!(
            (theirs - v).abs() < 1e-6,
            "{}: ipmitool {theirs}, Ferric {v}",
            s.name
        );
    }
    assert_eq!(defs[0].kind, "temperature");
    assert_eq!(defs[1].unit, "rpm");
    assert_eq!(defs[0].unit, "°C");
    c.close_all().await;
}

use ferric_tests::{cli as ferric, cli_enroll_bmc, cli_ok as ok, cli_power};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_bmc_through_coordinator_and_agent_and_flags_power_changed_behind_its_back()
 {
    let dir = tempfile::tempdir().unwrap();
    let bmc = SimBmc::start(&dir.path().join("bmc")).unwrap();
    let coord = ferric_tests::start_coordinator(&dir.path().join("coord"))
        .await
        .unwrap();
    let api = coord.api;
    let poll = Some(Duration::from_millis(500));
    let agent = ferric_tests::management_agent(&coord, dir.path(), IpmiClient::default(), poll)
        .await
        .unwrap();

    // Enroll with the password from an environment variable (a prompt and a file work too).
    let address = bmc.address();
    let (success, out, err) = cli_enroll_bmc(api, "bm1", &address, ADMIN.1).await;
    assert!(success, "{err}");
    assert!(
        out.contains("bm1 enrolled") && out.contains("`mgmt`"),
        "{out}"
    );
    // A password in the URL is refused before anything is stored.
    let (success, _, err) = cli_enroll_bmc(api, "bm9", "ipmi://admin:pw@127.0.0.1", "x").await;
    assert!(!success && err.contains("holds a password"), "{err}");

    // A console log must be an absolute path on the agent's host…
    let enroll = |name: &'static str, log: String| {
        let address = address.clone();
        async move {
            let args = [
                "node",
                "enroll",
                name,
                "--bmc",
                &address,
                "--password-env",
                "BMC_PW",
                "--console-log",
                &log,
            ];
            ferric_tests::cli(api, &args, &[("BMC_PW", ADMIN.1)]).await
        }
    };
    let (success, _, err) = enroll("bm8", "logs/bm8.log".into()).await;
    assert!(!success && err.contains("not an absolute path"), "{err}");
    // …and the agent does not read one outside its console directories: the console says
    // why.
    let outside = dir.path().join("bm7-console.log");
    std::fs::write(&outside, "a line the agent must not read\n").unwrap();
    let (success, _, err) = enroll("bm7", outside.display().to_string()).await;
    assert!(success, "{err}");
    let started = Instant::now();
    loop {
        let (success, out, err) = ferric_tests::cli(api, &["node", "console", "bm7"], &[]).await;
        assert!(success, "{err}");
        assert!(!out.contains("must not read"), "{out}");
        if err.contains("outside the agent's console directories") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no refusal reported: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ok(api, &["node", "delete", "bm7"]).await;
    let (success, _, err) = ferric_tests::cli(api, &["node", "console", "bm1"], &[]).await;
    assert!(!success && err.contains("has no console log"), "{err}");

    // Power, each change read back with ipmitool from the same BMC (a status read changes
    // nothing).
    for (action, power, chassis) in [
        ("status", "off", None),
        ("on", "on", Some("is on")),
        ("status", "on", None),
        ("cycle", "on", Some("is on")),
        ("off", "off", Some("is off")),
    ] {
        assert_eq!(
            cli_power(api, action, "bm1").await,
            format!("node bm1: power {power}")
        );
        if let Some(chassis) = chassis {
            assert!(bmc.power_status().unwrap().contains(chassis));
        }
        if action == "on" {
            // The agent's poll sees it on too (the telemetry below shows it), before the
            // next changes, which can all fit between two polls.
            let c = ferric_tests::client(api);
            ferric_tests::wait_for(Duration::from_secs(10), "a poll that reads on", || async {
                let reads: Vec<serde_json::Value> = c.get("/v1/nodes/bm1/telemetry").await?;
                Ok(reads
                    .iter()
                    .any(|r| r["bmc"]["power_on"] == true)
                    .then_some(()))
            })
            .await
            .unwrap();
        }
    }

    // Boot device.
    ok(api, &["node", "bootdev", "bm1", "pxe"]).await;
    let shown = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(shown.contains("Force PXE"), "{shown}");
    ok(api, &["node", "bootdev", "bm1", "disk", "--persistent"]).await;
    let shown = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(
        shown.contains("Force Boot from default Hard-Drive"),
        "{shown}"
    );

    // Sensors, as a plan's output and in the node's view from the poll.
    let readings: serde_json::Value =
        serde_json::from_str(&ok(api, &["-o", "json", "node", "sensors", "bm1"]).await).unwrap();
    for s in SENSORS {
        let r = readings
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == s.name)
            .unwrap_or_else(|| panic!("no {} in {readings}", s.name));
        assert!((r["value"].as_f64().unwrap() - s.value).abs() < 1e-6, "{r}");
    }
    let c = ferric_tests::client(api);
    ferric_tests::wait_for(
        Duration::from_secs(20),
        "sensors in the node view",
        || async {
            let d: serde_json::Value = c.get("/v1/nodes/bm1").await?;
            Ok((d["bmc"]["sensors"].as_array().map_or(0, Vec::len) == SENSORS.len()).then_some(()))
        },
    )
    .await
    .unwrap();
    // Sensors are read every third poll; the polls between keep the last readings in view.
    for _ in 0..12 {
        let d: serde_json::Value = c.get("/v1/nodes/bm1").await.unwrap();
        assert_eq!(
            d["bmc"]["sensors"].as_array().map_or(0, Vec::len),
            SENSORS.len(),
            "{d}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The node's telemetry is its BMC reads: power each poll, sensors when read. The whole
    // history since enrollment (how many reads that is depends on how fast the steps above
    // ran: the agent polls every half second).
    let reads: Vec<serde_json::Value> = c.get("/v1/nodes/bm1/telemetry").await.unwrap();
    let count = reads.len().to_string();
    let watched = ok(api, &["telemetry", "watch", "bm1", "--count", &count]).await;
    let lines: Vec<&str> = watched.lines().skip(1).collect();
    assert_eq!(lines.len(), reads.len(), "{watched}");
    // The history since enrollment: on while the tests above powered it, off now.
    assert!(lines.iter().all(|l| l.contains("bm1")), "{watched}");
    assert!(lines.iter().any(|l| l.contains(" on ")), "{watched}");
    let with_sensors = lines
        .iter()
        .filter(|l| {
            SENSORS
                .iter()
                .all(|s| l.contains(&format!("{} {:.2}", s.name, s.value)))
        })
        .count();
    assert!(with_sensors >= 1, "{watched}");
    let reads: Vec<serde_json::Value> = c.get("/v1/nodes/bm1/telemetry").await.unwrap();
    assert!(reads.iter().all(|r| r["bmc"]["name"] == "bm1"), "{reads:?}");
    assert_eq!(reads.last().unwrap()["bmc"]["power_on"], false, "{reads:?}");

    // The System Event Log: two events logged through ipmitool (Add SEL Entry, raw) — a
    // temperature over its upper critical threshold, and a processor thermal trip going away —
    // read by Ferric as ipmitool lists them, then cleared.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let stamp: Vec<String> = now
        .to_le_bytes()
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect();
    // The BMC stamps entries with its own clock: set it (Set SEL Time), as a BIOS does.
    let mut set_time = vec!["raw", "0x0a", "0x49"];
    set_time.extend(stamp.iter().map(String::as_str));
    bmc.ipmitool(&set_time).unwrap();
    for event in [
        ["0x01", "0x01", "0x01", "0x59", "0x5a", "0x50"],
        ["0x07", "0x02", "0xef", "0x01", "0xff", "0xff"],
    ] {
        let mut args = vec!["raw", "0x0a", "0x44", "0x00", "0x00", "0x02"];
        args.extend(stamp.iter().map(String::as_str));
        args.extend(["0x20", "0x00", "0x04"]);
        args.extend(event);
        bmc.ipmitool(&args).unwrap();
    }
    let listed = bmc.ipmitool(&["sel", "list"]).unwrap();
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&ok(api, &["-o", "json", "node", "sel", "bm1"]).await).unwrap();
    let norm = |s: &str| {
        s.to_lowercase()
            .replace('-', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lines: Vec<&str> = listed.lines().filter(|l| l.contains('|')).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (line, e) in lines.iter().zip(&entries) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(
            u64::from_str_radix(cols[0], 16).unwrap(),
            e["id"].as_u64().unwrap(),
            "{line} / {e}"
        );
        assert_eq!(
            cols[3],
            format!(
                "{} #0x{:02x}",
                e["sensor"].as_str().unwrap(),
                e["sensor_number"].as_u64().unwrap()
            ),
            "{line} / {e}"
        );
        assert_eq!(
            norm(cols[4]),
            norm(e["event"].as_str().unwrap()),
            "{line} / {e}"
        );
        assert_eq!(cols[5] == "Asserted", e["asserted"] == true, "{line} / {e}");
        let at = e["at_s"].as_u64().unwrap();
        assert!(at.abs_diff(u64::from(now)) < 60, "{e}");
    }
    assert_eq!(entries[0]["event"], "Upper Critical - going high");
    assert_eq!(entries[1]["sensor"], "Processor");
    assert_eq!(entries[1]["asserted"], false);
    let cleared = ok(api, &["node", "sel", "bm1", "--clear"]).await;
    assert!(
        cleared.contains("Thermal Trip")
            && cleared.contains("node bm1: event log cleared (2 entries read)"),
        "{cleared}"
    );
    assert!(
        bmc.ipmitool(&["sel", "info"])
            .unwrap()
            .contains("Entries          : 0")
    );
    // The entries were stored (read by the first step) before the second step erased them.
    let plans: Vec<serde_json::Value> = c.get("/v1/plans").await.unwrap();
    let newest = plans
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .max()
        .unwrap();
    let status = c.plan(newest).await.unwrap();
    let outputs: Vec<(u64, usize)> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let sel = e["kind"]["output"]["sel"].as_array()?;
            Some((e["step"].as_u64().unwrap(), sel.len()))
        })
        .collect();
    assert_eq!(outputs, [(0, 2), (1, 2)], "{status:#}");
    assert_eq!(
        status["events"].as_array().unwrap().last().unwrap()["kind"]["done"]["changed"],
        true,
        "{status:#}"
    );
    let empty: Vec<serde_json::Value> =
        serde_json::from_str(&ok(api, &["-o", "json", "node", "sel", "bm1"]).await).unwrap();
    assert!(empty.is_empty(), "{empty:?}");

    // Power changed behind Ferric's back: flagged by the periodic sync, cleared by an action.
    bmc.ipmitool(&["chassis", "power", "on"]).unwrap();
    let flag = ferric_tests::wait_for(
        Duration::from_secs(20),
        "the node to be flagged",
        || async {
            let d: serde_json::Value = c.get("/v1/nodes/bm1").await?;
            Ok(d["bmc"]["flag"].as_str().map(str::to_owned))
        },
    )
    .await
    .unwrap();
    assert!(
        flag.contains("behind Ferric's back") && flag.contains("reports on"),
        "{flag}"
    );
    let list = ok(api, &["node", "list"]).await;
    assert!(list.contains("on (flagged)"), "{list}");
    ok(api, &["node", "power", "off", "bm1"]).await;
    let d: serde_json::Value = c.get("/v1/nodes/bm1").await.unwrap();
    assert!(d["bmc"]["flag"].is_null(), "{d}");

    // Wrong password: the plan fails as auth_failed, naming the node and the BMC.
    let (success, _, err) = cli_enroll_bmc(api, "bm2", &address, "not-the-password").await;
    assert!(success, "{err}");
    let (success, _, err) = ferric(api, &["node", "power", "status", "bm2"], &[]).await;
    assert!(!success, "a wrong password must fail");
    assert!(
        err.contains("auth_failed")
            && err.contains("bm2")
            && err.contains(&format!("127.0.0.1:{}", bmc.port)),
        "{err}"
    );

    // The password shows nowhere the API answers: nodes, plans, events.
    let mut seen = String::new();
    for path in ["/v1/nodes", "/v1/nodes/bm1", "/v1/nodes/bm2", "/v1/plans"] {
        let v: serde_json::Value = c.get(path).await.unwrap();
        seen.push_str(&v.to_string());
    }
    let plans: Vec<serde_json::Value> = c.get("/v1/plans").await.unwrap();
    for p in &plans {
        seen.push_str(&c.plan(p["id"].as_u64().unwrap()).await.unwrap().to_string());
    }
    assert!(seen.contains("bm1"));
    assert!(!seen.contains(ADMIN.1) && !seen.contains("not-the-password"));

    // Removing a node stops the agent driving its BMC.
    ok(api, &["node", "delete", "bm2"]).await;
    let (success, _, err) = ferric(api, &["node", "power", "status", "bm2"], &[]).await;
    assert!(!success && err.contains("not enrolled"), "{err}");

    agent.stop().await.unwrap();
    coord.shutdown().await;
}
