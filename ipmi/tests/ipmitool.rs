//! The BMC side against ipmitool (`-I lanplus`), which nobody here wrote: sessions with cipher
//! suite 17 and 3, a BMC that offers only one of them, a wrong password, power and boot
//! parameter 5 with its persistent and EFI bits read back as ipmitool decodes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_ipmi::bmc::{Bmc, BmcConfig, Control, MemoryChassis, serve};
use ferric_ipmi::suite::Suite;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

struct Running {
    port: u16,
    bmc: Arc<Mutex<Bmc<MemoryChassis>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn start(suites: &[Suite]) -> Running {
    start_with(suites, std::time::Duration::from_secs(60))
}

fn start_with(suites: &[Suite], idle: std::time::Duration) -> Running {
    let mut cfg = BmcConfig::new("admin", "lab-secret-1");
    cfg.suites = suites.to_vec();
    cfg.idle = idle;
    let bmc = Arc::new(Mutex::new(Bmc::new(cfg, MemoryChassis::default())));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let (b, s) = (bmc.clone(), stop.clone());
    std::thread::spawn(move || serve(&sock, &b, &s).unwrap());
    Running { port, bmc, stop }
}

/// `ipmitool -I lanplus -C suite … args`: (success, stdout, stderr).
fn ipmitool(port: u16, suite: u8, password: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "admin", "-P", password, "-C"])
        .arg(suite.to_string())
        // One try, a short wait: a refusal shows at once.
        .args(["-R", "1", "-N", "2"])
        .args(args)
        .output()
        .expect("ipmitool (Debian package ipmitool) runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(port: u16, suite: u8, args: &[&str]) -> String {
    let (ok, out, err) = ipmitool(port, suite, "lab-secret-1", args);
    assert!(ok, "ipmitool -C {suite} {args:?}: {out}{err}");
    out
}

#[test]
fn ipmitool_opens_sessions_with_suite_17_and_3() {
    let bmc = start(&Suite::ALL);
    for suite in [17, 3] {
        let out = ok(bmc.port, suite, &["chassis", "power", "status"]);
        assert!(out.contains("Chassis Power is off"), "{out}");
        ok(bmc.port, suite, &["chassis", "power", "on"]);
        let out = ok(bmc.port, suite, &["chassis", "power", "status"]);
        assert!(out.contains("Chassis Power is on"), "{out}");
        ok(bmc.port, suite, &["chassis", "power", "off"]);
        let out = ok(bmc.port, suite, &["mc", "info"]);
        assert!(out.contains("IPMI Version") && out.contains("2.0"), "{out}");
    }
    // Every session ipmitool opened was closed by it.
    assert_eq!(bmc.bmc.lock().unwrap().sessions(), 0);
}

#[test]
fn a_bmc_with_one_suite_refuses_the_other() {
    for (offered, other) in [(Suite::S17, 3), (Suite::S3, 17)] {
        let bmc = start(&[offered]);
        ok(bmc.port, offered.id(), &["chassis", "power", "status"]);
        let (good, out, err) = ipmitool(
            bmc.port,
            other,
            "lab-secret-1",
            &["chassis", "power", "status"],
        );
        assert!(
            !good,
            "suite {other} was accepted by a BMC offering {offered:?}: {out}"
        );
        assert!(
            err.contains("no matching cipher suite") || err.contains("cipher suite"),
            "{err}"
        );
        let list = ok(
            bmc.port,
            offered.id(),
            &["channel", "getciphers", "ipmi", "1"],
        );
        let ids: Vec<&str> = list
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(ids, [offered.id().to_string().as_str()], "{list}");
    }
}

#[test]
fn a_wrong_password_is_refused_and_leaves_no_session() {
    // Setups are dropped after a tenth of the idle time: 300 ms here.
    let bmc = start_with(&Suite::ALL, std::time::Duration::from_secs(3));
    for suite in [17, 3] {
        let (good, out, err) = ipmitool(
            bmc.port,
            suite,
            "not-the-password",
            &["chassis", "power", "status"],
        );
        assert!(!good, "{out}");
        // ipmitool finds RAKP 2's code wrong (computed with the password it was given) and
        // tells the BMC so in RAKP 3, which ends the session there.
        assert!(
            err.contains("Unable to establish IPMI v2 / RMCP+ session"),
            "ipmitool -C {suite}: {err}"
        );
    }
    // ipmitool left without a word: its two setups wait for RAKP 3 until they time out.
    assert_eq!(bmc.bmc.lock().unwrap().sessions(), 2);
    std::thread::sleep(std::time::Duration::from_millis(400));
    ok(bmc.port, 17, &["chassis", "power", "status"]);
    assert_eq!(bmc.bmc.lock().unwrap().sessions(), 0);
}

#[test]
fn boot_flags_keep_their_persistent_and_efi_bits() {
    let bmc = start(&Suite::ALL);
    ok(
        bmc.port,
        17,
        &["chassis", "bootdev", "pxe", "options=efiboot"],
    );
    let flags = bmc.bmc.lock().unwrap().boot_flags();
    assert!(
        flags.valid() && flags.efi() && !flags.persistent(),
        "{flags:?}"
    );
    assert_eq!(flags.device(), 1, "PXE");
    let out = ok(bmc.port, 17, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("BIOS EFI boot"), "{out}");
    assert!(out.contains("Force PXE"), "{out}");
    assert!(out.contains("Options apply to only next boot"), "{out}");

    // The boot that uses next-boot-only flags spends them.
    ok(bmc.port, 17, &["chassis", "power", "on"]);
    let m = bmc.bmc.lock().unwrap();
    let (op, used) = *m.chassis.controls.last().unwrap();
    assert_eq!(op, Control::On);
    assert!(used.efi() && used.device() == 1, "{used:?}");
    assert!(!m.boot_flags().valid(), "{:?}", m.boot_flags());
    drop(m);

    ok(
        bmc.port,
        3,
        &["chassis", "bootdev", "disk", "options=persistent"],
    );
    let out = ok(bmc.port, 3, &["chassis", "bootparam", "get", "5"]);
    assert!(out.contains("Options apply to all future boots"), "{out}");
    assert!(out.contains("BIOS PC Compatible (legacy) boot"), "{out}");
    assert!(out.contains("Force Boot from default Hard-Drive"), "{out}");
    ok(bmc.port, 3, &["chassis", "power", "cycle"]);
    assert!(
        bmc.bmc.lock().unwrap().boot_flags().valid(),
        "persistent flags stay"
    );
}
