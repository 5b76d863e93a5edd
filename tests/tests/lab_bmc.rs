//! Tier 4: the lab's own BMC (`ferric lab up --bmc ferric`) on a node with both firmwares.
//! ipmitool — which nobody here wrote — opens sessions with cipher suites 17 and 3 through
//! the rack's BMC network and sets boot flags whose EFI bit picks the firmware the node's
//! QEMU starts with (OVMF or SeaBIOS), which ipmi_sim cannot do. Then Ferric drives it: a
//! node enrolled for BIOS is inspected in BIOS mode, switched to UEFI (`ferric node boot`)
//! and inspected again in UEFI mode — the boot mode Ferric asks of the BMC is the one the
//! machine boots and the ramdisk sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_lab::{BmcKind, Firmware, Rack, UpOptions};
use ferric_tests::cli_ok;
use ferric_tests::rack::RackGuard;
use std::process::Command;
use std::time::Duration;

const MEMORY_MIB: u64 = 512;
const DISK: u64 = 96 << 20;

fn rack(tmp: &std::path::Path, prefix: &str) -> RackGuard {
    let name = format!("{prefix}{}", std::process::id() % 100_000);
    RackGuard(
        ferric_lab::up(&UpOptions {
            name: name.clone(),
            dir: tmp.join(&name),
            nodes: 1,
            memory_mib: MEMORY_MIB,
            disk_bytes: DISK,
            accel: "tcg".into(),
            ferric: ferric_tests::bin("ferric").unwrap(),
            firmware: vec![Firmware::Both],
            disk_bus: Vec::new(),
            sector_size: Vec::new(),
            netboot: Vec::new(),
            bmc: vec![BmcKind::Ferric],
        })
        .unwrap(),
    )
}

/// `ipmitool -I lanplus -C suite` against the node's BMC address: (success, output).
fn ipmitool(rack: &Rack, suite: u8, password: &str, args: &[&str]) -> (bool, String) {
    let n = &rack.nodes[0];
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", &n.bmc_ip, "-U", ferric_lab::BMC_USER])
        .args([
            "-P",
            password,
            "-C",
            &suite.to_string(),
            "-N",
            "2",
            "-R",
            "2",
        ])
        .args(args)
        .output()
        .expect("ipmitool runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(rack: &Rack, suite: u8, args: &[&str]) -> String {
    let (good, out) = ipmitool(rack, suite, &rack.bmc_password, args);
    assert!(good, "ipmitool -C {suite} {args:?}: {out}");
    out
}

/// The running QEMU's command line, arguments joined by spaces.
fn qemu_cmdline(rack: &Rack) -> String {
    let pid = ferric_lab::qemu_pid(rack, &rack.nodes[0]).expect("the node runs");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ipmitool_with_suite_17_and_3_and_the_efi_bit_picks_the_firmware() {
    let tmp = tempfile::tempdir().unwrap();
    let r = rack(tmp.path(), "b");
    let rack = &r.0;
    for suite in [17, 3] {
        let out = ok(rack, suite, &["chassis", "power", "status"]);
        assert!(out.contains("Chassis Power is off"), "{out}");
    }
    let (good, out) = ipmitool(
        rack,
        17,
        "not-the-password",
        &["chassis", "power", "status"],
    );
    assert!(!good, "a wrong password was let in: {out}");

    // UEFI network boot: OVMF starts.
    ok(rack, 17, &["chassis", "bootdev", "pxe", "options=efiboot"]);
    let out = ok(rack, 17, &["chassis", "bootparam", "get", "5"]);
    assert!(
        out.contains("BIOS EFI boot") && out.contains("Force PXE"),
        "{out}"
    );
    ok(rack, 17, &["chassis", "power", "on"]);
    let cmd = qemu_cmdline(rack);
    assert!(cmd.contains(ferric_lab::OVMF_CODE), "{cmd}");
    assert!(cmd.contains("bootindex=1"), "network first: {cmd}");
    // Next-boot-only flags are spent by the boot.
    let out = ok(rack, 3, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("Boot Flag Invalid"), "{out}");

    // Legacy network boot: SeaBIOS on the same machine and NIC.
    ok(rack, 3, &["chassis", "power", "off"]);
    ok(rack, 3, &["chassis", "bootdev", "pxe"]);
    ok(rack, 3, &["chassis", "power", "on"]);
    let cmd = qemu_cmdline(rack);
    assert!(!cmd.contains("OVMF"), "{cmd}");
    assert!(
        cmd.contains("order=n") && cmd.contains("efi-e1000.rom"),
        "{cmd}"
    );
    let status = ferric_lab::status(rack);
    assert_eq!(status[0].power, "on");
    assert_eq!(status[0].boot, "pxe");
    ok(rack, 17, &["chassis", "power", "off"]);
    assert!(ferric_lab::qemu_pid(rack, &rack.nodes[0]).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_boots_a_node_in_the_mode_it_was_told_and_inspection_sees_it() {
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let r = rack(tmp.path(), "e");
    let rack = &r.0;
    let n = &rack.nodes[0];
    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    ferric_tests::enroll_lab_node(api, rack, n).await.unwrap();
    cli_ok(api, &["node", "boot", &n.name, "--mode", "bios"]).await;
    cli_ok(api, &["node", "manage", &n.name]).await;
    ferric_tests::rack::wait_state(api, rack, &[n.name.as_str()], "manageable")
        .await
        .unwrap();
    let c = ferric_tests::client(api);
    for mode in ["bios", "uefi"] {
        cli_ok(api, &["node", "boot", &n.name, "--mode", mode]).await;
        // Powered off, the ramdisk is gone: the inspection boots the node anew.
        cli_ok(api, &["node", "power", "off", &n.name]).await;
        cli_ok(api, &["node", "inspect", &n.name]).await;
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let d: serde_json::Value = ferric_tests::wait_for(
            Duration::from_secs(300),
            "the ramdisk's inspection",
            || async {
                let d: serde_json::Value = c.get(&format!("/v1/nodes/{}", n.name)).await?;
                *last.lock().unwrap() = d.clone();
                Ok((d["lifecycle"]["state"] == "manageable"
                    && d["inspection"]["boot_mode"] == mode)
                    .then_some(d))
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{mode}: {e}\nthe node: {:#}\nconsole:\n{}",
                last.lock().unwrap(),
                ferric_tests::rack::console(rack, n)
            )
        });
        assert_eq!(d["bmc"]["boot_mode"], mode, "{d}");
        let cmd = qemu_cmdline(rack);
        assert_eq!(cmd.contains(ferric_lab::OVMF_CODE), mode == "uefi", "{cmd}");
    }
    cli_ok(api, &["node", "power", "off", &n.name]).await;
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
