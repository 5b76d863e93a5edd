//! Tier 4: the lab's Redfish BMC (`ferric lab up --bmc redfish`). Ferric's client drives it
//! over HTTPS through the rack's BMC network with its certificate pinned — power, the boot
//! override the node's QEMU then boots with, a virtual CD put into the running QEMU through
//! its monitor, the event log — and DMTF's Redfish Service Validator, which nobody here
//! wrote, checks every resource it serves against DMTF's schemas with no error and no
//! warning. Then a rack of Redfish BMCs goes through inspect → provide → deploy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_lab::{BmcKind, Firmware, Rack, UpOptions};
use ferric_proto::Secret;
use ferric_proto::plan::{BootDevice, PowerAction};
use ferric_redfish::{Client, ErrorKind, Options, Target};
use ferric_tests::rack::RackGuard;
use ferric_tests::{Proc, cli_ok};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::{Duration, Instant};

const MEMORY_MIB: u64 = 256;
const DISK: u64 = 64 << 20;

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
            firmware: vec![Firmware::Uefi],
            disk_bus: Vec::new(),
            sector_size: Vec::new(),
            netboot: Vec::new(),
            bmc: vec![BmcKind::Redfish],
        })
        .unwrap(),
    )
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

/// QEMU's own account of its block devices (QMP `query-block`).
fn query_block(rack: &Rack) -> String {
    let sock = rack.node_dir(&rack.nodes[0]).join("qmp.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    s.write_all(b"{\"execute\":\"query-block\"}\n").unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.contains("\"return\"") {
            return line;
        }
    }
}

/// An HTTP server for `dir` on `ip` (Python's, as a web server of the site's).
fn http_server(dir: &std::path::Path, ip: &str) -> (Proc, u16) {
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-m", "http.server", "--bind", ip])
        .arg(port.to_string())
        .arg("--directory")
        .arg(dir);
    let p = Proc::spawn_command(cmd, &dir.with_extension("log")).unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (p, port)
}

/// DMTF's validator against the BMC: (exit success, its output).
fn validator(rack: &Rack, logs: &std::path::Path) -> (bool, String) {
    let venv = ferric_tests::hv::target_dir()
        .unwrap()
        .join("validator-venv");
    let exe = venv.join("bin/rf_service_validator");
    assert!(
        exe.exists(),
        "DMTF's validator is not installed at {} — `cargo xtask test` installs it (pip, from \
         tests/python/validator-requirements.txt)",
        exe.display()
    );
    let out = Command::new(exe)
        .args([
            "--rhost",
            &format!("https://{}:443", rack.nodes[0].bmc_ip),
            "--user",
            ferric_lab::BMC_USER,
            "--password",
            &rack.bmc_password,
            "--authtype",
            "Session",
            // DMTF's schemas from the crate that carries them, not from dmtf.org.
            "--skipschema",
            "--schema_directory",
            nv_redfish_schema::REDFISH_CSDL_DIR,
            "--logdir",
        ])
        .arg(logs)
        .current_dir(logs.parent().unwrap())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The totals row of the validator's summary: (pass, warn, fail).
fn totals(out: &str) -> (u32, u32, u32) {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.contains("PASS") || !l.contains("FAIL"));
    lines.next();
    let row = lines.find(|l| l.contains('|') && l.chars().any(|c| c.is_ascii_digit()));
    let n: Vec<u32> = row
        .unwrap_or_else(|| panic!("no totals in the validator's output:\n{out}"))
        .split('|')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferric_drives_the_lab_redfish_bmc_and_dmtf_validator_passes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let r = rack(tmp.path(), "r");
    let rack = &r.0;
    let n = &rack.nodes[0];
    let address = ferric_lab::bmc_address(rack, n);
    assert!(address.contains("?pin=sha256:"), "{address}");
    let t = Target::parse(&address, Secret::new(rack.bmc_password.clone())).unwrap();
    let c = Client::new(Options {
        power_settle: Duration::from_secs(30),
        ..Options::default()
    });

    // Another pin: refused before any password went out, naming both fingerprints.
    let pin = address.split("pin=").nth(1).unwrap();
    let other = address.replace(pin, &format!("sha256:{}", "ab".repeat(32)));
    let e = c
        .power_on(&Target::parse(&other, Secret::new(rack.bmc_password.clone())).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Untrusted, "{e}");
    assert!(
        e.message.contains(pin) && e.message.contains(&"ab".repeat(32)),
        "{e}"
    );

    // Network boot once, in UEFI mode: the node's QEMU starts with the NIC first, and the
    // override is spent by that boot.
    assert!(!c.power_on(&t).await.unwrap());
    c.set_boot_override(&t, BootDevice::Pxe, false, true)
        .await
        .unwrap();
    let b = c.boot_override(&t).await.unwrap();
    assert_eq!(
        (b.device(), b.persistent(), b.uefi()),
        (Some(BootDevice::Pxe), false, true)
    );
    assert_eq!(c.power(&t, PowerAction::On).await.unwrap(), (true, true));
    let cmd = qemu_cmdline(rack);
    assert!(cmd.contains(ferric_lab::OVMF_CODE), "{cmd}");
    assert!(cmd.contains("id=nic0,bootindex=1"), "network first: {cmd}");
    assert_eq!(c.boot_override(&t).await.unwrap().device(), None);
    assert_eq!(ferric_lab::status(rack)[0].power, "on");

    // A virtual CD: the BMC fetches the ISO from a web server on the host's side of the
    // management network and puts it into the running QEMU.
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy("/usr/lib/ipxe/ipxe.iso", www.join("boot.iso")).unwrap();
    let (_web, port) = http_server(&www, &rack.mgmt_host_ip());
    let url = format!("http://{}:{port}/boot.iso", rack.mgmt_host_ip());
    let slot = c.insert_media(&t, &url).await.unwrap();
    assert_eq!(slot.image.as_deref(), Some(url.as_str()));
    let blocks = query_block(rack);
    assert!(
        blocks.contains("media.iso") && blocks.contains("\"tray_open\": false"),
        "{blocks}"
    );

    // DMTF's validator, with every kind of resource present (a session, log entries, an
    // inserted medium): no failure, no warning.
    let logs = tmp.path().join("validator");
    std::fs::create_dir_all(&logs).unwrap();
    let (ok, out) = validator(rack, &logs);
    let (pass, warn, fail) = totals(&out);
    assert!(
        ok && fail == 0 && warn == 0,
        "validator: {pass} pass, {warn} warn, {fail} fail\n{out}"
    );
    assert!(
        pass >= 200,
        "too little was checked ({pass}): are the schemas there?\n{out}"
    );
    for uri in [
        "/redfish/v1/Systems/1/VirtualMedia/Cd",
        "/redfish/v1/Managers/bmc/LogServices/Sel/Entries",
        "/redfish/v1/Systems/1/EthernetInterfaces/NIC1",
        "/redfish/v1/SessionService/Sessions",
    ] {
        assert!(
            out.contains(&format!("Validating {uri}")),
            "{uri} not validated:\n{out}"
        );
    }

    // The event log holds what the BMC did; the inventory the node's MAC.
    let (log, _) = c.event_log(&t, false).await.unwrap();
    let events: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    assert!(events.contains(&"Reset On"), "{events:?}");
    assert!(events.iter().any(|e| e.contains("boot.iso")), "{events:?}");
    assert_eq!(c.inventory(&t).await.unwrap().nics[0].mac, n.mac);

    assert!(c.eject_media(&t).await.unwrap());
    assert!(
        query_block(rack).contains("\"tray_open\": true")
            || !query_block(rack).contains("media.iso")
    );
    assert_eq!(c.power(&t, PowerAction::Off).await.unwrap(), (true, false));
    assert!(ferric_lab::qemu_pid(rack, n).is_none());
    assert_eq!(c.logins(&t).await, 1, "one session for all of it");
    c.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_of_redfish_bmcs_is_inspected_provided_and_deployed() {
    const MARKER: &str = "redfish-marker-51c2";
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build(MARKER).unwrap();
    let name = format!("f{}", std::process::id() % 100_000);
    let lab_root = tmp.path().join("lab");
    let r =
        ferric_tests::rack::up_with(&lab_root, &name, 2, 512, 256 << 20, vec![BmcKind::Redfish])
            .unwrap();
    let rack = &r.0;
    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    cfg.lifecycle.callback = Duration::from_secs(90);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    let root = lab_root.to_str().unwrap();
    let enrolled = cli_ok(api, &["lab", "--name", &name, "--root", root, "enroll"]).await;
    assert!(enrolled.contains("redfish://"), "{enrolled}");
    cli_ok(
        api,
        &["image", "upload", image.to_str().unwrap(), "--name", "os"],
    )
    .await;
    let names: Vec<&str> = rack.nodes.iter().map(|n| n.name.as_str()).collect();
    // Checked before it ever boots: the BMC's own account of the machine.
    let inv = cli_ok(api, &["node", "inventory", names[0]]).await;
    assert!(inv.contains(&rack.nodes[0].mac), "{inv}");
    assert!(inv.contains("QEMU"), "{inv}");
    for verb in ["manage", "inspect"] {
        let mut all = vec!["node", verb];
        all.extend(&names);
        cli_ok(api, &all).await;
        ferric_tests::rack::wait_state(api, rack, &names, "manageable")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The BMC's event log holds what it did, entry by entry.
    let sel = cli_ok(api, &["node", "sel", names[0]]).await;
    let boot = sel
        .find("Boot override Pxe Once")
        .unwrap_or_else(|| panic!("{sel}"));
    let on = sel.find("Reset On").unwrap_or_else(|| panic!("{sel}"));
    assert!(
        boot < on,
        "the override, then the power-on, each once:\n{sel}"
    );
    let mut all = vec!["node", "provide"];
    all.extend(&names);
    cli_ok(api, &all).await;
    ferric_tests::rack::wait_state(api, rack, &names, "available")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut all = vec!["node", "deploy"];
    all.extend(&names);
    all.extend(["--image", "os"]);
    cli_ok(api, &all).await;
    ferric_tests::rack::wait_state(api, rack, &names, "active")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for n in &rack.nodes {
        let text = ferric_tests::wait_for(
            Duration::from_secs(120),
            "the deployed OS on the console",
            || async {
                let t = ferric_tests::rack::console(rack, n);
                Ok(t.contains(&format!("FERRIC-OS-HOSTNAME {}", n.name))
                    .then_some(t))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", ferric_tests::rack::console(rack, n)));
        assert!(text.contains(&format!("FERRIC-OS {MARKER}")), "{text}");
    }
    // The BMCs were read over Redfish all along: power observed, no error.
    let c = ferric_tests::client(api);
    for n in &names {
        let d: serde_json::Value = c.get(&format!("/v1/nodes/{n}")).await.unwrap();
        assert!(
            d["bmc"]["address"]
                .as_str()
                .unwrap()
                .starts_with("redfish://"),
            "{d}"
        );
        assert_eq!(d["bmc"]["power_observed"], "on", "{d}");
        ferric_tests::rack::every_step_once(&c, n).await.unwrap();
    }
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// A node whose network has no DHCP (its MAC is not Ferric's DHCP's to answer; its address is
/// the one its network document gives its port) is inspected and deployed from virtual media:
/// its BMC fetches the ramdisk's ISO the coordinator makes for the boot, boots its CD once, and
/// the ramdisk comes up on the static address with the boot's token. A UEFI node boots the
/// same ISO through its EFI loader and is inspected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_dhcp_are_inspected_and_deployed_from_virtual_media() {
    const MARKER: &str = "vmedia-marker-0d4e";
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let image = ferric_tests::os_image::build(MARKER).unwrap();
    let name = format!("v{}", std::process::id() % 100_000);
    let r = RackGuard(
        ferric_lab::up(&UpOptions {
            name: name.clone(),
            dir: tmp.path().join("lab").join(&name),
            nodes: 2,
            memory_mib: 512,
            disk_bytes: 256 << 20,
            accel: "tcg".into(),
            ferric: ferric_tests::bin("ferric").unwrap(),
            // The small MBR test image boots with SYSLINUX: the deployed node is BIOS.
            firmware: vec![Firmware::Bios, Firmware::Uefi],
            disk_bus: Vec::new(),
            sector_size: Vec::new(),
            netboot: Vec::new(),
            bmc: vec![BmcKind::Redfish],
        })
        .unwrap(),
    );
    let rack = &r.0;
    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    cfg.lifecycle.callback = Duration::from_secs(120);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    let prov = rack.prov_host_ip();
    let subnet = prov.trim_end_matches(".1");
    for (i, n) in rack.nodes.iter().enumerate() {
        let (ok, _, err) = ferric_tests::cli(
            api,
            &[
                "node",
                "enroll",
                &n.name,
                "--bmc",
                &ferric_lab::bmc_address(rack, n),
                "--password-env",
                "PW",
                "--mac",
                &n.mac,
                "--boot-mode",
                n.firmware.as_str(),
                "--boot-via",
                "media",
            ],
            &[("PW", rack.bmc_password.as_str())],
        )
        .await;
        assert!(ok, "{err}");
        cli_ok(
            api,
            &[
                "node",
                "port",
                &n.name,
                &n.mac,
                "--address",
                &format!("{subnet}.{}/24", 200 + i),
            ],
        )
        .await;
    }
    cli_ok(
        api,
        &["image", "upload", image.to_str().unwrap(), "--name", "os"],
    )
    .await;
    let names: Vec<&str> = rack.nodes.iter().map(|n| n.name.as_str()).collect();
    for verb in ["manage", "inspect"] {
        let mut all = vec!["node", verb];
        all.extend(&names);
        cli_ok(api, &all).await;
        ferric_tests::rack::wait_state(api, rack, &names, "manageable")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let c = ferric_tests::client(api);
    for (i, n) in rack.nodes.iter().enumerate() {
        let d: serde_json::Value = c.get(&format!("/v1/nodes/{}", n.name)).await.unwrap();
        assert_eq!(d["bmc"]["boot_via"], "media", "{d}");
        assert_eq!(
            d["inspection"]["boot_mode"],
            n.firmware.as_str(),
            "booted the ISO in its firmware's mode: {d}"
        );
        let console = ferric_tests::rack::console(rack, n);
        assert!(
            console.contains("booting the deploy ramdisk from virtual media"),
            "{console}"
        );
        assert!(
            console.contains(&format!(
                "FERRIC-RAMDISK-NET {} {subnet}.{}/24",
                n.name,
                200 + i
            )) && console.contains("from the command line (no DHCP)"),
            "{console}"
        );
        // Its boot went from the ISO to enrollment, Ferric's DHCP never answering it.
        let stages: Vec<&str> = d["boot"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["stage"].as_str())
            .collect();
        assert!(
            stages.contains(&"enrolled") && !stages.contains(&"dhcp"),
            "{stages:?}"
        );
    }
    let deployed = &rack.nodes[0];
    cli_ok(api, &["node", "provide", &deployed.name]).await;
    ferric_tests::rack::wait_state(api, rack, &[deployed.name.as_str()], "available")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cli_ok(api, &["node", "deploy", &deployed.name, "--image", "os"]).await;
    ferric_tests::rack::wait_state(api, rack, &[deployed.name.as_str()], "active")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = ferric_tests::wait_for(
        Duration::from_secs(120),
        "the deployed OS on the console",
        || async {
            let t = ferric_tests::rack::console(rack, deployed);
            Ok(t.contains(&format!("FERRIC-OS-HOSTNAME {}", deployed.name))
                .then_some(t))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", ferric_tests::rack::console(rack, deployed)));
    assert!(text.contains(&format!("FERRIC-OS {MARKER}")), "{text}");
    for n in &names {
        ferric_tests::rack::every_step_once(&c, n).await.unwrap();
    }
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
