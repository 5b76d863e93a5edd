//! Tier 4: Ferric's Redfish client against a Redfish BMC that no one on the project wrote —
//! sushy-tools' emulator (the BMC Ironic's CI uses) with its libvirt driver, in front of a
//! real libvirt domain, over HTTPS with its certificate pinned. Each change is read back from
//! libvirt: the domain runs or not, the boot device its definition holds, the CD it was given
//! and, from its firmware's log, that it booted that CD. Then the same BMC through the
//! coordinator and an agent, as an operator drives it with the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_proto::Secret;
use ferric_proto::plan::{BootDevice, PowerAction};
use ferric_redfish::{Client, ErrorKind, Options, Target};
use ferric_tests::sushy::{ADMIN, Sushy};
use ferric_tests::{Proc, cli_enroll_bmc, cli_ok, cli_power};
use std::process::Command;
use std::time::{Duration, Instant};

fn target(s: &Sushy) -> Target {
    Target::parse(&s.address(), Secret::new(ADMIN.1)).unwrap()
}

/// Waits until libvirt says the domain is (or is not) running.
async fn wait_running(s: &Sushy, want: bool) {
    let started = Instant::now();
    while s.running().unwrap() != want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "domain {} never became {}",
            s.domain,
            if want { "running" } else { "shut off" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP server for `dir` on a loopback port (Python's, as a web server of the site's).
fn http_server(dir: &std::path::Path) -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(dir);
    let p = Proc::spawn_command(cmd, &dir.join("http.log")).unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (p, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redfish_client_drives_sushy_and_libvirt_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sushy::start(dir.path(), &format!("ferric-sushy-{}", std::process::id())).unwrap();
    let t = target(&s);
    let c = Client::new(Options {
        power_settle: Duration::from_secs(30),
        ..Options::default()
    });

    assert!(!c.power_on(&t).await.unwrap(), "{}", s.log_text());
    // Boot override, read back through the emulator and from libvirt's definition.
    c.set_boot_override(&t, BootDevice::Pxe, true, false)
        .await
        .unwrap();
    assert_eq!(
        c.boot_override(&t).await.unwrap().device(),
        Some(BootDevice::Pxe)
    );
    let xml = s.xml().unwrap();
    let iface = xml.split("<interface").nth(1).unwrap();
    assert!(iface.contains("<boot order='1'/>"), "{xml}");
    c.set_boot_override(&t, BootDevice::Disk, true, false)
        .await
        .unwrap();
    assert_eq!(
        c.boot_override(&t).await.unwrap().device(),
        Some(BootDevice::Disk)
    );

    // Out-of-band inventory: the domain's NIC, with its MAC, before anything booted.
    let inv = c.inventory(&t).await.unwrap();
    let mac = xml
        .split("<mac address='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    assert!(inv.nics.iter().any(|n| n.mac == mac), "{inv:?} vs {mac}");

    // Sensors: the emulator's chassis' Thermal resource (its fixed readings).
    let sensors = c.sensors(&t).await.unwrap();
    let intake = sensors
        .iter()
        .find(|r| r.name == "Chassis Intake Temp")
        .unwrap_or_else(|| panic!("{sensors:?}"));
    assert_eq!(
        (intake.kind.as_str(), intake.value, intake.unit.as_str()),
        ("temperature", Some(25.0), "degrees C")
    );

    // Virtual media: a bootable ISO (Debian's iPXE) from a web server, inserted, booted.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy("/usr/lib/ipxe/ipxe.iso", www.join("boot.iso")).unwrap();
    let (_web, port) = http_server(&www);
    let url = format!("http://127.0.0.1:{port}/boot.iso");
    let slot = c.insert_media(&t, &url).await.unwrap();
    assert!(
        slot.inserted && slot.image.as_deref() == Some(url.as_str()),
        "{slot:?}"
    );
    let xml = s.xml().unwrap();
    assert!(xml.contains("device='cdrom'"), "{xml}");
    c.set_boot_override(&t, BootDevice::Cdrom, false, false)
        .await
        .unwrap();
    assert_eq!(
        c.boot_override(&t).await.unwrap().device(),
        Some(BootDevice::Cdrom)
    );
    let (sent, on) = c.power(&t, PowerAction::On).await.unwrap();
    assert!(sent && on);
    wait_running(&s, true).await;
    let booted = ferric_tests::wait_for(
        Duration::from_secs(60),
        "the domain booting the virtual CD",
        || async {
            let log = std::fs::read_to_string(&s.firmware_log).unwrap_or_default();
            Ok(log.contains("Booting from DVD/CD").then_some(log))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(&s.firmware_log).unwrap_or_default()
        )
    });
    assert!(!booted.contains("Boot failed"), "{booted}");

    // Power: reset, then off; libvirt agrees each time.
    c.power(&t, PowerAction::Reset).await.unwrap();
    wait_running(&s, true).await;
    let (_, on) = c.power(&t, PowerAction::Off).await.unwrap();
    assert!(!on);
    wait_running(&s, false).await;
    assert!(c.eject_media(&t).await.unwrap());
    assert!(!s.xml().unwrap().contains("device='cdrom'"));

    // A wrong password: one refusal, then the client holds off.
    let wrong = Target::new(t.address.clone(), Secret::new("not-the-password"));
    let e = c.power_on(&wrong).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AuthFailed, "{e}");
    let e = c.power_on(&wrong).await.unwrap_err();
    assert!(e.message.contains("not trying again"), "{e}");
    // The emulator's certificate, not the one pinned: refused before any password is sent.
    let other = format!(
        "redfish://{}@127.0.0.1:{}?pin=sha256:{}",
        ADMIN.0,
        s.port,
        "00".repeat(32)
    );
    let e = c
        .power_on(&Target::parse(&other, Secret::new(ADMIN.1)).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Untrusted, "{e}");
    assert!(
        e.message
            .contains(&ferric_proto::msg::fingerprint_text(&s.fingerprint)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_sushy_through_coordinator_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sushy::start(
        dir.path(),
        &format!("ferric-sushy-cli-{}", std::process::id()),
    )
    .unwrap();
    let coord = ferric_tests::start(ferric_tests::coordinator_config(&dir.path().join("coord")))
        .await
        .unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(
        &coord,
        dir.path(),
        ferric_agent::bmc::ipmi::IpmiClient::default(),
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let (ok, _, err) = cli_enroll_bmc(api, "snode", &s.address(), ADMIN.1).await;
    assert!(ok, "{err}");
    assert_eq!(cli_power(api, "on", "snode").await, "node snode: power on");
    wait_running(&s, true).await;
    cli_ok(api, &["node", "bootdev", "snode", "pxe"]).await;
    let xml = s.xml().unwrap();
    assert!(
        xml.split("<interface")
            .nth(1)
            .unwrap()
            .contains("<boot order='1'/>"),
        "{xml}"
    );
    assert_eq!(
        cli_power(api, "off", "snode").await,
        "node snode: power off"
    );
    wait_running(&s, false).await;
    // The agent's poll reads power over Redfish too.
    let c = ferric_tests::client(api);
    let d: serde_json::Value = ferric_tests::wait_for(
        Duration::from_secs(20),
        "the poll's power reading",
        || async {
            let d: serde_json::Value = c.get("/v1/nodes/snode").await?;
            Ok((d["bmc"]["power_observed"] == "off").then_some(d))
        },
    )
    .await
    .unwrap();
    assert!(
        d["bmc"]["failing"] == false || d["bmc"]["failing"].is_null(),
        "{d}"
    );
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
