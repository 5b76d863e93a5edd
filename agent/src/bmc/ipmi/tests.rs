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
