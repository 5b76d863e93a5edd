//! The console side against the BMC side, in one process over loopback UDP: the suite
//! chosen, a BMC that offers one suite, wrong credentials, commands in a session, a session
//! closed, and a BMC that never answers. (The console side against BMCs nobody here wrote —
//! ipmi_sim, VirtualBMC — is in the agent's tier-4 tests; the BMC side against ipmitool in
//! `ipmitool.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_ipmi::bmc::{Bmc, BmcConfig, MemoryChassis, serve};
use ferric_ipmi::client::{ClientOptions, LoginError, Session, SuiteChoice};
use ferric_ipmi::suite::Suite;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

struct Running {
    addr: SocketAddr,
    bmc: Arc<Mutex<Bmc<MemoryChassis>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn start(suites: &[Suite]) -> Running {
    let mut cfg = BmcConfig::new("admin", "pw-of-twenty-bytes-x");
    cfg.suites = suites.to_vec();
    let bmc = Arc::new(Mutex::new(Bmc::new(cfg, MemoryChassis::default())));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (b, s) = (bmc.clone(), stop.clone());
    std::thread::spawn(move || serve(&sock, &b, &s).unwrap());
    Running { addr, bmc, stop }
}

fn login(r: &Running, user: &str, pw: &str, choice: SuiteChoice) -> Result<Session, LoginError> {
    Session::open(
        r.addr,
        user,
        pw.as_bytes(),
        choice,
        ClientOptions::default(),
    )
}

#[test]
fn the_strongest_common_suite_is_chosen_and_commands_run_in_it() {
    for (offered, want) in [
        (&Suite::ALL[..], Suite::S17),
        (&[Suite::S3][..], Suite::S3),
        (&[Suite::S17][..], Suite::S17),
    ] {
        let r = start(offered);
        let mut s = login(&r, "admin", "pw-of-twenty-bytes-x", SuiteChoice::Auto).unwrap();
        assert_eq!(s.suite(), want, "{offered:?}");
        assert_eq!(s.command(0x00, 0x01, &[]).unwrap(), (0, vec![0, 0, 0]));
        assert_eq!(s.command(0x00, 0x02, &[1]).unwrap().0, 0);
        assert!(r.bmc.lock().unwrap().chassis.on, "powered on");
        // Set System Boot Options parameter 5, read back.
        let flags = [0xa0, 0x04, 0, 0, 0];
        let mut set = vec![0x05];
        set.extend_from_slice(&flags);
        assert_eq!(s.command(0x00, 0x08, &set).unwrap().0, 0);
        let (cc, d) = s.command(0x00, 0x09, &[0x05, 0, 0]).unwrap();
        assert_eq!((cc, &d[2..]), (0, &flags[..]));
        // An unknown command is answered, not dropped.
        assert_eq!(s.command(0x06, 0x7f, &[]).unwrap().0, 0xc1);
        assert_eq!(r.bmc.lock().unwrap().sessions(), 1);
        s.close();
        assert_eq!(r.bmc.lock().unwrap().sessions(), 0);
    }
}

#[test]
fn one_suite_asked_for_is_the_only_one_tried() {
    let r = start(&[Suite::S3]);
    let e = login(
        &r,
        "admin",
        "pw-of-twenty-bytes-x",
        SuiteChoice::Only(Suite::S17),
    )
    .unwrap_err();
    assert!(
        matches!(&e, LoginError::Unsupported(m) if m.contains("cipher suite 17: refused (status 0x11)")),
        "{e:?}"
    );
    let s = login(
        &r,
        "admin",
        "pw-of-twenty-bytes-x",
        SuiteChoice::Only(Suite::S3),
    )
    .unwrap();
    assert_eq!(s.suite(), Suite::S3);
}

#[test]
fn wrong_credentials_are_refused_by_name() {
    let r = start(&Suite::ALL);
    let e = login(&r, "admin", "wrong", SuiteChoice::Auto).unwrap_err();
    assert!(
        matches!(&e, LoginError::Refused(m) if m.contains("wrong password")),
        "{e:?}"
    );
    let e = login(&r, "nobody", "pw-of-twenty-bytes-x", SuiteChoice::Auto).unwrap_err();
    assert!(
        matches!(&e, LoginError::Refused(m) if m.contains("login as `nobody` was refused")),
        "{e:?}"
    );
    let e = login(&r, "admin", &"x".repeat(21), SuiteChoice::Auto).unwrap_err();
    assert!(matches!(e, LoginError::Refused(_)), "{e:?}");
}

#[test]
fn a_silent_address_is_no_answer() {
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = Session::open(
        quiet.local_addr().unwrap(),
        "admin",
        b"pw",
        SuiteChoice::Auto,
        ClientOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, LoginError::NoAnswer(_)), "{e:?}");
}
