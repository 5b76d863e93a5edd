//! Tier 4: Ferric's IPMI client against a BMC that no one on the project wrote — VirtualBMC
//! (pyghmi) in front of a real libvirt domain, which drops every datagram that is not IPMI
//! (no ASF Presence Pong) and has no SDR repository. Each change is read back from libvirt
//! (the domain runs or not, its boot device) and with `ipmitool -I lanplus`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::{IpmiClient, IpmiOptions};
use ferric_agent::bmc::{BmcTarget, Secret};
use ferric_proto::plan::{BootDevice, PowerAction};
use ferric_tests::vbmc::{ADMIN, BootFlagsBmc, VirtualBmc};
use ferric_tests::{cli_enroll_bmc, cli_ok, cli_power};
use std::time::{Duration, Instant};

fn target(v: &VirtualBmc) -> BmcTarget {
    BmcTarget::parse(&v.address(), Secret::new(ADMIN.1)).unwrap()
}

/// Waits until libvirt says the domain is (or is not) running.
async fn wait_running(v: &VirtualBmc, want: bool) {
    let started = Instant::now();
    while v.running().unwrap() != want {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "domain {} never became {}",
            v.domain,
            if want { "running" } else { "shut off" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ipmi_client_drives_virtualbmc_and_libvirt_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let v = VirtualBmc::start(dir.path(), "ferric-vbmc-client").unwrap();
    let t = target(&v);
    let c = IpmiClient::new(IpmiOptions::default());

    assert!(!c.chassis_status(&t).await.unwrap().power_on);
    c.power(&t, PowerAction::On).await.unwrap();
    wait_running(&v, true).await;
    assert!(c.chassis_status(&t).await.unwrap().power_on);
    assert!(v.power_status().unwrap().contains("is on"));
    c.power(&t, PowerAction::Off).await.unwrap();
    wait_running(&v, false).await;
    assert!(!c.chassis_status(&t).await.unwrap().power_on);

    for (device, libvirt, ipmitool) in [
        (BootDevice::Pxe, "network", "Force PXE"),
        (BootDevice::Disk, "hd", "Force Boot from default Hard-Drive"),
    ] {
        c.set_boot_device(&t, device, false, false).await.unwrap();
        assert_eq!(v.boot_dev().unwrap().as_deref(), Some(libvirt));
        assert_eq!(c.boot_device(&t).await.unwrap().device, Some(device));
        let shown = v.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
        assert!(shown.contains(ipmitool), "{device:?}: {shown}");
    }

    // No SDR repository: no sensors, and no error.
    assert!(c.sdr_sensors(&t).await.unwrap().is_empty());
    c.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_virtualbmc_through_coordinator_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let v = VirtualBmc::start(&dir.path().join("vbmc"), "ferric-vbmc-cli").unwrap();
    let coord = ferric_tests::start_coordinator(&dir.path().join("coord"))
        .await
        .unwrap();
    let api = coord.api;
    // A short deadline, so that the BMC that never answers (below) is reported soon.
    let client = IpmiClient::new(IpmiOptions {
        deadline: Duration::from_secs(4),
        ..IpmiOptions::default()
    });
    let poll = Some(Duration::from_millis(500));
    let agent = ferric_tests::management_agent(&coord, dir.path(), client, poll)
        .await
        .unwrap();

    let (success, _, err) = cli_enroll_bmc(api, "vnode", &v.address(), ADMIN.1).await;
    assert!(success, "{err}");

    assert_eq!(
        cli_power(api, "status", "vnode").await,
        "node vnode: power off"
    );
    assert_eq!(cli_power(api, "on", "vnode").await, "node vnode: power on");
    assert!(v.running().unwrap(), "the domain runs after power on");
    // VirtualBMC refuses Power Cycle: the agent powers off, then on — a new QEMU process.
    let before = ferric_tests::hv::virsh(&["domid", &v.domain]).unwrap();
    assert_eq!(
        cli_power(api, "cycle", "vnode").await,
        "node vnode: power on"
    );
    assert!(v.running().unwrap());
    let after = ferric_tests::hv::virsh(&["domid", &v.domain]).unwrap();
    assert_ne!(
        before.trim(),
        after.trim(),
        "the cycle restarted the domain"
    );
    assert_eq!(
        cli_power(api, "off", "vnode").await,
        "node vnode: power off"
    );
    assert!(!v.running().unwrap(), "the domain is off after power off");

    cli_ok(api, &["node", "bootdev", "vnode", "pxe"]).await;
    assert_eq!(v.boot_dev().unwrap().as_deref(), Some("network"));
    assert!(
        v.ipmitool(&["chassis", "bootparam", "get", "5"])
            .unwrap()
            .contains("Force PXE")
    );
    cli_ok(api, &["node", "bootdev", "vnode", "disk"]).await;
    assert_eq!(v.boot_dev().unwrap().as_deref(), Some("hd"));

    let sensors = cli_ok(api, &["node", "sensors", "vnode"]).await;
    assert_eq!(sensors.trim(), "node vnode: the BMC reports no sensors");
    let json = cli_ok(api, &["-o", "json", "node", "sensors", "vnode"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        serde_json::json!([])
    );

    // The power sync reads VirtualBMC too: the node list shows the power it reads.
    let c = ferric_tests::client(api);
    ferric_tests::wait_for(Duration::from_secs(20), "a power read", || async {
        let d: serde_json::Value = c.get("/v1/nodes/vnode").await?;
        Ok((d["bmc"]["power_observed"] == "off" && d["bmc"]["failing"] == false).then_some(()))
    })
    .await
    .unwrap();
    let list = cli_ok(api, &["node", "list"]).await;
    let row = list.lines().find(|l| l.starts_with("vnode")).unwrap();
    assert!(row.trim_end().ends_with("off"), "{list}");

    // A BMC that never answers: POWER says so, `node show` has the error and when.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = format!("ipmi://admin@{}", silent.local_addr().unwrap());
    let (success, _, err) = cli_enroll_bmc(api, "gone", &address, "x").await;
    assert!(success, "{err}");
    ferric_tests::wait_for(
        Duration::from_secs(30),
        "the silent BMC's failure",
        || async {
            let d: serde_json::Value = c.get("/v1/nodes/gone").await?;
            Ok((d["bmc"]["failing"] == true).then_some(()))
        },
    )
    .await
    .unwrap();
    let list = cli_ok(api, &["node", "list"]).await;
    let row = list.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(row.trim_end().ends_with("unreachable"), "{list}");
    let shown = cli_ok(api, &["node", "show", "gone"]).await;
    assert!(
        shown.contains("power:        unknown — the BMC's reads fail (never read)"),
        "{shown}"
    );
    let error = shown
        .lines()
        .find(|l| l.starts_with("last error:"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        error.contains("unreachable — bmc `gone`")
            && error.contains("no answer")
            && error.ends_with("s ago)"),
        "{error}"
    );

    // The management agent's link is alive: last seen moves on with what it sends.
    let seen = || async {
        let d: serde_json::Value = c.get("/v1/nodes/mgmt").await.unwrap();
        d["node"]["last_seen_ms"].as_i64().unwrap()
    };
    let first = seen().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = seen().await;
    assert!(second > first, "{first} → {second}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(now - second < 2000, "last seen {} ms ago", now - second);

    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// CLI arguments, what ipmitool must say, what it must not, the stored first two bytes.
type Case = (
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);

/// `bootdev --persistent` and `--uefi` set those bits of boot parameter 5, through coordinator
/// and agent, as ipmitool decodes them from a BMC that keeps what it is sent; a plain
/// `bootdev` clears them again (next boot only, legacy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootdev_persistent_and_uefi_set_the_flags_ipmitool_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = BootFlagsBmc::start(&dir.path().join("bmc")).unwrap();
    let coord = ferric_tests::start_coordinator(&dir.path().join("coord"))
        .await
        .unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, dir.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    let (success, _, err) = cli_enroll_bmc(api, "flags", &bmc.address(), ADMIN.1).await;
    assert!(success, "{err}");
    let before = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(before.contains("Boot Flag Invalid"), "{before}");

    let cases: [Case; 4] = [
        (
            &["pxe", "--persistent", "--uefi"],
            &[
                "Boot Flag Valid",
                "Options apply to all future boots",
                "BIOS EFI boot",
                "Force PXE",
            ],
            &["only next boot", "legacy"],
            "e004",
        ),
        (
            &["disk"],
            &[
                "Boot Flag Valid",
                "Options apply to only next boot",
                "BIOS PC Compatible (legacy) boot",
                "Force Boot from default Hard-Drive",
            ],
            &["all future boots", "EFI"],
            "8008",
        ),
        (
            &["pxe", "--uefi"],
            &[
                "Options apply to only next boot",
                "BIOS EFI boot",
                "Force PXE",
            ],
            &["all future boots", "legacy"],
            "a004",
        ),
        (
            &["disk", "--persistent"],
            &[
                "Options apply to all future boots",
                "BIOS PC Compatible (legacy) boot",
                "Force Boot from default Hard-Drive",
            ],
            &["only next boot", "EFI"],
            "c008",
        ),
    ];
    for (i, (args, says, never, stored)) in cases.into_iter().enumerate() {
        let mut cmd = vec!["node", "bootdev", "flags"];
        cmd.extend_from_slice(args);
        let out = cli_ok(api, &cmd).await;
        assert!(out.starts_with("node flags: next boot from"), "{out}");
        let shown = bmc.ipmitool(&["chassis", "bootparam", "get", "5"]).unwrap();
        for s in says {
            assert!(
                shown.contains(s),
                "{args:?}: ipmitool lacks {s:?}:\n{shown}"
            );
        }
        for s in never {
            assert!(
                !shown.contains(s),
                "{args:?}: ipmitool says {s:?}:\n{shown}"
            );
        }
        let chassis = bmc.chassis().unwrap();
        let flags = chassis["boot_flags"].as_str().unwrap();
        assert_eq!(&flags[..4], stored, "{args:?}: chassis state {chassis}");
        assert_eq!(chassis["sets"], i + 1, "one set per command: {chassis}");
    }
    agent.stop().await.unwrap();
}
