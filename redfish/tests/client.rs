//! Ferric's Redfish client against Ferric's Redfish service, in process over real sockets:
//! HTTPS with a pinned or CA-signed certificate, sessions, and the operations; then what a
//! hostile or failing BMC does to the client (wrong certificate, wrong password, 503s, a task
//! that never ends).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use ferric_proto::Secret;
use ferric_proto::hardware::{CpuInfo, DmiInfo, Inventory, NicInfo};
use ferric_proto::msg::fingerprint_text;
use ferric_proto::plan::{BootDevice, PowerAction};
use ferric_redfish::service::{MemoryMachine, Service, ServiceConfig, serve, tls_config};
use ferric_redfish::{Client, ErrorKind, Options, Target};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn inventory() -> Inventory {
    Inventory {
        cpu: CpuInfo {
            model: "QEMU Virtual CPU".into(),
            count: 2,
        },
        memory_bytes: 2 << 30,
        disks: vec![],
        nics: vec![NicInfo {
            name: "eth0".into(),
            mac: "52:54:00:12:34:56".into(),
            link_up: true,
            speed_mbps: None,
        }],
        dmi: DmiInfo {
            vendor: "QEMU".into(),
            product: "Standard PC".into(),
            serial: "lab-1".into(),
            uuid: String::new(),
        },
    }
}

struct Bmc {
    svc: Arc<Service>,
    machine: Arc<MemoryMachine>,
    port: u16,
    fingerprint: [u8; 32],
}

/// A service with a self-signed certificate for `localhost` (or one `ca` signed), on a
/// loopback port.
async fn start(
    cfg: ServiceConfig,
    ca: Option<(&rcgen::CertificateParams, &rcgen::KeyPair)>,
) -> Bmc {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = match ca {
        Some((p, k)) => params
            .signed_by(&key, &rcgen::Issuer::from_params(p, k))
            .unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    let fingerprint = ferric_redfish::trust::fingerprint(cert.der());
    let tls = tls_config(cert.der().to_vec(), key.serialize_der()).unwrap();
    let machine = Arc::new(MemoryMachine::new(inventory()));
    let svc = Service::new(cfg, machine.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(l, Some(tls), svc.router()));
    Bmc {
        svc,
        machine,
        port,
        fingerprint,
    }
}

fn target(url: &str, password: &str) -> Target {
    Target::parse(url, Secret::new(password)).unwrap()
}

fn quick() -> Options {
    Options {
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        power_settle: Duration::from_secs(5),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_pinned_bmc_is_driven_through_one_session() {
    let bmc = start(ServiceConfig::new("admin", "pw"), None).await;
    let t = target(
        &format!(
            "redfish://admin@localhost:{}?pin={}",
            bmc.port,
            fingerprint_text(&bmc.fingerprint)
        ),
        "pw",
    );
    let c = Client::new(quick());
    assert!(!c.power_on(&t).await.unwrap());
    // Boot override once, UEFI, read back through the service.
    assert!(
        c.set_boot_override(&t, BootDevice::Pxe, false, true)
            .await
            .unwrap()
    );
    let b = c.boot_override(&t).await.unwrap();
    assert_eq!(
        (b.device(), b.persistent(), b.uefi()),
        (Some(BootDevice::Pxe), false, true)
    );
    assert!(
        !c.set_boot_override(&t, BootDevice::Pxe, false, true)
            .await
            .unwrap(),
        "the same override again changes nothing"
    );
    // Power on boots with the override, which is then spent.
    assert_eq!(c.power(&t, PowerAction::On).await.unwrap(), (true, true));
    let m = bmc.machine.state();
    assert_eq!(m.resets, ["On"]);
    assert_eq!(m.booted_with.unwrap().target, "Pxe");
    assert_eq!(c.boot_override(&t).await.unwrap().device(), None);
    assert_eq!(c.power(&t, PowerAction::On).await.unwrap(), (false, true));
    c.power(&t, PowerAction::Cycle).await.unwrap();
    c.power(&t, PowerAction::Off).await.unwrap();
    assert_eq!(bmc.machine.state().resets, ["On", "PowerCycle", "ForceOff"]);
    // A continuous legacy override for the disk.
    c.set_boot_override(&t, BootDevice::Disk, true, false)
        .await
        .unwrap();
    let b = c.boot_override(&t).await.unwrap();
    assert_eq!(
        (b.device(), b.persistent(), b.uefi()),
        (Some(BootDevice::Disk), true, false)
    );
    // Out-of-band inventory, before the machine ever booted an OS.
    let inv = c.inventory(&t).await.unwrap();
    assert_eq!(inv.nics[0].mac, "52:54:00:12:34:56");
    assert_eq!((inv.cpu.count, inv.memory_bytes), (2, 2 << 30));
    assert_eq!(inv.dmi.serial, "lab-1");
    // Virtual media.
    let slot = c
        .insert_media(&t, "http://192.0.2.1/ramdisk.iso")
        .await
        .unwrap();
    assert!(slot.inserted);
    assert_eq!(
        bmc.machine.state().media.as_deref(),
        Some("http://192.0.2.1/ramdisk.iso")
    );
    assert_eq!(
        c.virtual_media(&t).await.unwrap()[0].media_types,
        ["CD", "DVD"]
    );
    assert!(c.eject_media(&t).await.unwrap());
    assert!(!c.eject_media(&t).await.unwrap());
    assert_eq!(bmc.machine.state().media, None);
    // The event log recorded all of it, and is cleared.
    let (log, cleared) = c.event_log(&t, true).await.unwrap();
    assert!(cleared);
    let text: Vec<&str> = log.iter().map(|e| e.event.as_str()).collect();
    assert!(text.contains(&"Reset PowerCycle"), "{text:?}");
    assert!(
        text.iter().any(|e| e.starts_with("Virtual media inserted")),
        "{text:?}"
    );
    assert!(log.iter().all(|e| e.at_s.is_some()));
    assert!(c.event_log(&t, false).await.unwrap().0.is_empty());
    // The whole of it on one session.
    assert_eq!(c.logins(&t).await, 1);
    assert_eq!(bmc.svc.sessions(), 1);
    c.close_all().await;
    assert_eq!(bmc.svc.sessions(), 0, "closing logs out");
}

#[tokio::test]
async fn an_expired_session_is_renewed_once() {
    let mut cfg = ServiceConfig::new("admin", "pw");
    cfg.session_timeout = Duration::from_millis(300);
    let bmc = start(cfg, None).await;
    let t = target(
        &format!(
            "redfish://admin@localhost:{}?pin={}",
            bmc.port,
            fingerprint_text(&bmc.fingerprint)
        ),
        "pw",
    );
    let c = Client::new(quick());
    c.power_on(&t).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.power_on(&t).await.unwrap();
    assert_eq!(c.logins(&t).await, 2);
}

#[tokio::test]
async fn certificates_are_checked_never_accepted_blindly() {
    let bmc = start(ServiceConfig::new("admin", "pw"), None).await;
    let c = Client::new(quick());
    // A pin that is not the BMC's: refused, naming both.
    let wrong = [7u8; 32];
    let t = target(
        &format!(
            "redfish://admin@localhost:{}?pin={}",
            bmc.port,
            fingerprint_text(&wrong)
        ),
        "pw",
    );
    let e = c.power_on(&t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Untrusted, "{e}");
    assert!(e.message.contains(&fingerprint_text(&wrong)), "{e}");
    assert!(
        e.message.contains(&fingerprint_text(&bmc.fingerprint)),
        "{e}"
    );
    // No pin and no CA bundle: refused, with the fingerprint to pin.
    let t = target(&format!("redfish://admin@localhost:{}", bmc.port), "pw");
    let e = c.power_on(&t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Untrusted, "{e}");
    assert!(
        e.message
            .contains(&format!("?pin={}", fingerprint_text(&bmc.fingerprint))),
        "{e}"
    );
    assert_eq!(bmc.svc.failed_logins(), 0);
    assert_eq!(
        bmc.svc.sessions(),
        0,
        "no password went to an unchecked BMC"
    );
    // Trust on first use is its own act, and gives the same fingerprint.
    let seen = ferric_redfish::trust::first_use("localhost", bmc.port)
        .await
        .unwrap();
    assert_eq!(seen, bmc.fingerprint);
}

#[tokio::test]
async fn a_ca_bundle_checks_the_bmc_name() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let bmc = start(
        ServiceConfig::new("admin", "pw"),
        Some((&ca_params, &ca_key)),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let c = Client::new(Options {
        ca_bundle: Some(Arc::new(roots)),
        ..quick()
    });
    let t = target(&format!("redfish://admin@localhost:{}", bmc.port), "pw");
    assert!(!c.power_on(&t).await.unwrap());
    // The same certificate reached by a name it was not issued for.
    let t = target(&format!("redfish://admin@127.0.0.1:{}", bmc.port), "pw");
    let e = c.power_on(&t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Untrusted, "{e}");
    assert!(e.message.contains("BMC CA bundle"), "{e}");
}

#[tokio::test]
async fn a_wrong_password_is_tried_once_not_until_the_account_locks() {
    let bmc = start(ServiceConfig::new("admin", "pw"), None).await;
    let t = target(
        &format!(
            "redfish://admin@localhost:{}?pin={}",
            bmc.port,
            fingerprint_text(&bmc.fingerprint)
        ),
        "not-the-password",
    );
    let c = Client::new(quick());
    for _ in 0..5 {
        let e = c.power_on(&t).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AuthFailed, "{e}");
        assert!(e.message.contains("user `admin`"), "{e}");
        assert!(!format!("{e:?}").contains("not-the-password"));
    }
    assert_eq!(
        bmc.svc.failed_logins(),
        1,
        "one failed login, then the client waits"
    );
    let e = c.power_on(&t).await.unwrap_err();
    assert!(e.message.contains("not trying again"), "{e}");
    // The right password is a new target: tried at once.
    let good = Target::new(t.address.clone(), Secret::new("pw"));
    assert!(!c.power_on(&good).await.unwrap());
}

/// A plain-HTTP BMC in front of a service whose answers `fault` may replace.
async fn faulty<F>(fault: F) -> (Arc<Service>, Target)
where
    F: Fn(&Request<Body>) -> Option<axum::response::Response> + Send + Sync + 'static,
{
    let machine = Arc::new(MemoryMachine::new(inventory()));
    let svc = Service::new(ServiceConfig::new("admin", "pw"), machine);
    let inner = svc.router();
    let fault = Arc::new(fault);
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let (inner, fault) = (inner.clone(), fault.clone());
        async move {
            if let Some(r) = fault(&req) {
                return r;
            }
            inner.oneshot(req).await.into_response()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(l, None, app));
    (
        svc,
        target(&format!("redfish+http://admin@127.0.0.1:{port}"), "pw"),
    )
}

#[tokio::test]
async fn busy_answers_are_retried_with_backoff_then_reported() {
    let busy = Arc::new(AtomicU32::new(0));
    let b = busy.clone();
    let (_svc, t) = faulty(move |req| {
        (req.uri().path() == "/redfish/v1/Systems/1" && b.fetch_add(1, Ordering::SeqCst) < 2).then(
            || {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("Retry-After", "0")],
                    "busy",
                )
                    .into_response()
            },
        )
    })
    .await;
    let c = Client::new(quick());
    assert!(!c.power_on(&t).await.unwrap(), "two 503s, then the answer");
    assert_eq!(busy.load(Ordering::SeqCst), 3);

    let (_svc, t) = faulty(|req| {
        (req.uri().path() == "/redfish/v1/Systems/1")
            .then(|| (StatusCode::INTERNAL_SERVER_ERROR, "the BMC is unwell").into_response())
    })
    .await;
    let started = Instant::now();
    let e = c.power_on(&t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("500"), "{e}");
    assert!(e.message.contains("gave up after 4 tries"), "{e}");
    assert!(e.message.contains("the BMC is unwell"), "{e}");
    // Backoffs of 50, 100 and 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_task_that_never_finishes_fails_at_its_deadline() {
    let (svc, t) = faulty(|req| {
        let p = req.uri().path();
        if p.ends_with("/Actions/ComputerSystem.Reset") {
            return Some(
                (
                    StatusCode::ACCEPTED,
                    [("Location", "/redfish/v1/TaskService/TaskMonitors/7")],
                    "",
                )
                    .into_response(),
            );
        }
        (p == "/redfish/v1/TaskService/TaskMonitors/7").then(|| {
            (
                StatusCode::ACCEPTED,
                axum::Json(serde_json::json!({"TaskState": "Running"})),
            )
                .into_response()
        })
    })
    .await;
    let c = Client::new(Options {
        task_deadline: Duration::from_secs(1),
        task_poll: Duration::from_millis(100),
        ..quick()
    });
    let started = Instant::now();
    let e = c.power(&t, PowerAction::On).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("TaskMonitors/7"), "{e}");
    assert!(e.message.contains("still Running"), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(svc);
}

#[tokio::test]
async fn a_bmc_without_sessions_gets_basic_authentication() {
    let (svc, t) = faulty(|req| {
        (req.uri().path() == "/redfish/v1/SessionService/Sessions"
            && req.method() == axum::http::Method::POST)
            .then(|| StatusCode::METHOD_NOT_ALLOWED.into_response())
    })
    .await;
    let c = Client::new(quick());
    assert!(!c.power_on(&t).await.unwrap());
    c.power(&t, PowerAction::On).await.unwrap();
    assert_eq!(svc.sessions(), 0);
    let wrong = Target::new(t.address.clone(), Secret::new("nope"));
    let e = c.power_on(&wrong).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AuthFailed, "{e}");
}

#[tokio::test]
async fn several_systems_need_a_name() {
    // Ferric's service has one system: naming another is an error that lists it.
    let (_svc, t) = faulty(|_| None).await;
    let named = target(&format!("{}?system=2", t.address), "pw");
    let c = Client::new(quick());
    let e = c.power_on(&named).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("no system `2`"), "{e}");
    assert!(e.message.contains("it has: 1"), "{e}");
    let one = target(&format!("{}?system=1", t.address), "pw");
    assert!(!c.power_on(&one).await.unwrap());
}

#[tokio::test]
async fn an_answer_without_end_is_cut_off_and_reported() {
    let (_svc, t) = faulty(|req| {
        (req.uri().path() == "/redfish/v1/Systems/1").then(|| {
            // 17 MiB of JSON-ish bytes, more than a BMC's answer may be.
            (StatusCode::OK, vec![b' '; 17 << 20]).into_response()
        })
    })
    .await;
    let c = Client::new(quick());
    let e = c.power_on(&t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("over 16 MiB"), "{e}");
}
