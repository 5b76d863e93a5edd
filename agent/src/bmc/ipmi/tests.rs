use super::{IpmiClient, IpmiOptions};
use crate::bmc::sim::{SimBmc, SimOptions};
use crate::bmc::{BmcErrorKind, BmcTarget, Secret};
use ferric_proto::plan::PowerAction;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn target(sim: &SimBmc, user: &str, password: &str) -> BmcTarget {
    BmcTarget::parse(
        &format!("ipmi://{user}@{}", sim.addr),
        Secret::new(password),
    )
    .unwrap()
}

fn client() -> IpmiClient {
    IpmiClient::new(IpmiOptions {
        deadline: Duration::from_secs(10),
        ..IpmiOptions::default()
    })
}

#[tokio::test]
async fn a_bmc_that_never_answers_the_presence_ping_gets_a_session_as_from_ipmitool() {
    let opts = SimOptions::default();
    let sim = SimBmc::start(opts.clone());
    let t = target(&sim, &opts.user, &opts.password);
    let c = client();
    let started = Instant::now();
    assert!(!c.chassis_status(&t).await.unwrap().power_on);
    // No retries were needed: the first login went through.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    c.power(&t, PowerAction::On).await.unwrap();
    assert!(sim.power_on.load(Ordering::Relaxed));
    assert!(c.chassis_status(&t).await.unwrap().power_on);
    // No ASF reached the BMC; its first datagram was Get Channel Authentication
    // Capabilities, then, inside the session, Set Session Privilege Level, Chassis Status,
    // Chassis Control and Chassis Status.
    assert_eq!(sim.asf_seen.load(Ordering::Relaxed), 0);
    let commands = sim.commands.lock().unwrap().clone();
    assert_eq!(
        commands[..5],
        [
            (0x06, 0x38),
            (0x06, 0x3b),
            (0x00, 0x01),
            (0x00, 0x02),
            (0x00, 0x01)
        ],
        "{commands:x?}"
    );
    // A BMC without an SDR repository has no sensors: not an error.
    assert_eq!(c.sdr_sensors(&t).await.unwrap(), vec![]);
    // Close Session reaches the BMC.
    c.close_all().await;
    assert_eq!(
        sim.commands.lock().unwrap().last().copied(),
        Some((0x06, 0x3c))
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_by_name_and_quickly() {
    let opts = SimOptions::default();
    let sim = SimBmc::start(opts.clone());
    let started = Instant::now();
    let e = client()
        .chassis_status(&target(&sim, &opts.user, "not-the-password"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, BmcErrorKind::AuthFailed, "{e}");
    assert!(e.message.contains("`admin`"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sessions_without_rmcp_plus_or_without_cipher_suite_3_are_refused() {
    for (opts, says) in [
        (
            SimOptions {
                ipmi2: false,
                ..SimOptions::default()
            },
            "only IPMI 1.5",
        ),
        (
            SimOptions {
                integrity: 0,
                ..SimOptions::default()
            },
            "cipher suite 3",
        ),
        (
            SimOptions {
                confidentiality: 0,
                ..SimOptions::default()
            },
            "cipher suite 3",
        ),
    ] {
        let sim = SimBmc::start(opts.clone());
        let started = Instant::now();
        let e = client()
            .chassis_status(&target(&sim, &opts.user, &opts.password))
            .await
            .unwrap_err();
        assert_eq!(e.kind, BmcErrorKind::Unsupported, "{e}");
        assert!(e.message.contains(says), "{e}");
        // Final at once, not retried until the deadline.
        assert!(started.elapsed() < Duration::from_secs(3), "{e}");
        // Nothing was sent inside a session.
        let commands = sim.commands.lock().unwrap().clone();
        assert!(commands.iter().all(|c| *c == (0x06, 0x38)), "{commands:x?}");
    }
}

#[tokio::test]
async fn a_bmc_that_does_answer_the_ping_never_sees_it_either() {
    let opts = SimOptions {
        answer_ping: true,
        ..SimOptions::default()
    };
    let sim = SimBmc::start(opts.clone());
    let t = target(&sim, &opts.user, &opts.password);
    assert!(!client().chassis_status(&t).await.unwrap().power_on);
    assert_eq!(sim.asf_seen.load(Ordering::Relaxed), 0);
}

/// A BMC of ferric-ipmi offering `suites`, on loopback; stops when the flag is set.
fn suite_bmc(
    suites: &[ferric_ipmi::suite::Suite],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use ferric_ipmi::bmc::{Bmc, BmcConfig, MemoryChassis};
    let mut cfg = BmcConfig::new("admin", "suite-secret");
    cfg.suites = suites.to_vec();
    let bmc = std::sync::Arc::new(std::sync::Mutex::new(Bmc::new(
        cfg,
        MemoryChassis::default(),
    )));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || ferric_ipmi::bmc::serve(&sock, &bmc, &s));
    (addr, stop)
}

#[tokio::test]
async fn bmcs_offering_suite_17_only_3_only_or_both_are_driven_and_a_named_suite_is_kept_to() {
    use ferric_ipmi::suite::Suite;
    for offered in [vec![Suite::S17], vec![Suite::S3], Suite::ALL.to_vec()] {
        let (addr, stop) = suite_bmc(&offered);
        let t =
            BmcTarget::parse(&format!("ipmi://admin@{addr}"), Secret::new("suite-secret")).unwrap();
        let c = client();
        c.power(&t, PowerAction::On).await.unwrap();
        assert!(c.chassis_status(&t).await.unwrap().power_on, "{offered:?}");
        c.close_all().await;
        for named in [17u8, 3] {
            let t = BmcTarget::parse(
                &format!("ipmi://admin@{addr}?suite={named}"),
                Secret::new("suite-secret"),
            )
            .unwrap();
            let r = client().chassis_status(&t).await;
            if offered.iter().any(|s| s.id() == named) {
                assert!(r.unwrap().power_on);
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.kind, BmcErrorKind::Unsupported, "{e}");
                assert!(e.message.contains(&format!("cipher suite {named}")), "{e}");
            }
        }
        stop.store(true, Ordering::Relaxed);
    }
}
