//! Real processes: secrets at rest. The coordinator's data directory and database are its
//! owner's alone (another user is refused, checked as that user), a BMC password is sealed in
//! the database and appears in no database file, no log (at debug level) and no API answer,
//! yet reaches the agent that drives the BMC; a password an older version kept in clear is
//! sealed at the next start, leaving no clear copy in the database's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::FakeDriver;
use ferric_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "Sealed-bmc0-Q7xv2k";
const OLD_CLEAR: &str = "Clear-by-old-version-m3Zp";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Whether the user `nobody` can read `p` (`cat` as that user).
fn nobody_reads(p: &Path) -> bool {
    std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(p)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runuser (util-linux)")
        .success()
}

/// The bytes of the database and its journal files.
fn db_bytes(data: &Path) -> Vec<u8> {
    ["ferric.db", "ferric.db-wal", "ferric.db-shm"]
        .iter()
        .filter_map(|f| std::fs::read(data.join(f)).ok())
        .flatten()
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn start(data: &Path, quic: u16, api: u16, log: &Path) -> Proc {
    let mut cmd = std::process::Command::new(bin("ferric").unwrap());
    cmd.args(["coordinator", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{quic}")])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--drain-grace", "2s"])
        .env(
            "RUST_LOG",
            "debug,quinn=info,quinn_proto=info,h2=info,hyper=info",
        );
    Proc::spawn_command(cmd, log).unwrap()
}

async fn wait_api(data: &Path, api: std::net::SocketAddr) {
    ferric_tests::wait_admitted(data, api, Duration::from_secs(20))
        .await
        .unwrap();
}

async fn wait_password(fake: &FakeDriver, password: &str) {
    wait_for(
        Duration::from_secs(20),
        "the agent's BMC credentials",
        || async {
            Ok(fake
                .bmc_credentials()
                .iter()
                .any(|c| c.name == "bm0" && c.password == password)
                .then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_the_data_is_its_owners_alone() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    // Others may enter the parent: only the data directory's own mode keeps them out.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let control = tmp.path().join("readable");
    std::fs::write(&control, "anyone").unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        nobody_reads(&control),
        "the check itself: nobody reads a 0644 file here"
    );

    let data = tmp.path().join("coord");
    let (qp, ap) = (free_port().unwrap(), free_port().unwrap());
    let api: std::net::SocketAddr = format!("127.0.0.1:{ap}").parse().unwrap();
    let quic: std::net::SocketAddr = format!("127.0.0.1:{qp}").parse().unwrap();
    let logs = [
        tmp.path().join("coord-1.log"),
        tmp.path().join("coord-2.log"),
    ];
    let mut coord = start(&data, qp, ap, &logs[0]);
    wait_api(&data, api).await;

    let mgmt = tmp.path().join("mgmt");
    enroll_in_process(api, quic, "mgmt", &mgmt).await.unwrap();
    let fake = Arc::new(FakeDriver::new());
    let agent = spawn_agent(agent_config(&mgmt, fake.clone()), fake.clone());
    let (ok, _, err) = cli(
        api,
        &[
            "node",
            "enroll",
            "bm0",
            "--bmc",
            "ipmi://admin@127.0.0.1:6230",
            "--via",
            "mgmt",
            "--password-env",
            "BMC_PW",
        ],
        &[("BMC_PW", PASSWORD)],
    )
    .await;
    assert!(ok, "{err}");
    // The agent that drives the BMC has the password: sealed, not lost.
    wait_password(&fake, PASSWORD).await;
    cli_ok(api, &["node", "power", "status", "bm0"]).await;

    // No API answer holds it.
    let c = client(api);
    let mut answers = String::new();
    for path in [
        "/v1/nodes",
        "/v1/nodes/bm0",
        "/v1/plans",
        "/v1/plans?node=mgmt",
    ] {
        let v: serde_json::Value = c.get(path).await.unwrap();
        answers.push_str(&v.to_string());
    }
    for args in [
        &["node", "show", "bm0"][..],
        &["node", "list"],
        &["--output", "json", "node", "show", "bm0"],
    ] {
        answers.push_str(&cli_ok(api, args).await);
    }
    assert!(answers.contains("bm0") && !answers.contains(PASSWORD));

    // The data directory and its secrets are the owner's alone.
    assert_eq!(mode(&data), 0o700);
    for f in ["ferric.db", "secrets.key", "admin.conf"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert!(!nobody_reads(&data.join("admin.conf")));
    assert!(!nobody_reads(&data.join("ferric.db")));
    assert!(!nobody_reads(&data.join("secrets.key")));
    let listing = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "ls"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!listing.status.success(), "nobody lists the data directory");
    // The database holds the password sealed, in none of its files in clear.
    let bytes = db_bytes(&data);
    assert!(contains(&bytes, "sealed:v1:"), "the sealed form is stored");
    assert!(
        !contains(&bytes, PASSWORD),
        "no clear password in ferric.db*"
    );

    // An older version kept the password in clear: sealed at the next start.
    let status = coord.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    {
        let store = ferric_coordinator::store::Store::open_sqlite(&data.join("ferric.db"))
            .await
            .unwrap();
        assert!(store.set_bmc_password("bm0", OLD_CLEAR).await.unwrap());
        store.close().await;
    }
    assert!(contains(&db_bytes(&data), OLD_CLEAR), "the check itself");
    coord = start(&data, qp, ap, &logs[1]);
    wait_api(&data, api).await;
    wait_password(&fake, OLD_CLEAR).await;
    assert!(
        coord
            .log_text()
            .contains("BMC passwords an older version kept in clear are sealed now"),
        "{}",
        coord.log_text()
    );
    assert!(
        !contains(&db_bytes(&data), OLD_CLEAR),
        "no clear copy left in ferric.db*"
    );

    // A data directory others may read is refused at start, saying how to fix it.
    agent.stop().await.unwrap();
    let status = coord.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("DEBUG"), "logged at debug level");
        assert!(
            !text.contains(PASSWORD) && !text.contains(OLD_CLEAR),
            "no password in {}",
            log.display()
        );
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(bin("ferric").unwrap())
        .args(["coordinator", "--data-dir"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a shared data directory");
    assert!(err.contains("chmod 700"), "{err}");
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
                found.push(p);
            }
        }
    }
    found
}

/// A BMC's password reaches the agent `--via` names and no other: two management agents, one
/// a real `ferric-agent --driver bmc` process logging at debug level that drives a real BMC
/// (ipmi_sim) with it, the other in-process recording every credential it is ever sent. The
/// other agent is sent its own BMC's credentials and never the first one's; neither agent's
/// state directory (identity, journal) nor any log holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_password_reaches_only_the_agent_via_names_and_no_log() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let bmc = ferric_tests::bmc::SimBmc::start(&tmp.path().join("bmc")).unwrap();
    let password = ferric_tests::bmc::ADMIN.1;
    const OTHER: &str = "Other-bmc1-Hk42sw";
    let data = tmp.path().join("coord");
    let (qp, ap) = (free_port().unwrap(), free_port().unwrap());
    let api: std::net::SocketAddr = format!("127.0.0.1:{ap}").parse().unwrap();
    let coord_log = tmp.path().join("coord.log");
    let mut coord = start(&data, qp, ap, &coord_log);
    wait_api(&data, api).await;
    let c = client(api);

    // Agent A: a real process, the BMC driver, debug logs.
    let state_a = tmp.path().join("mgmt-a");
    let agent_bin = bin("ferric-agent").unwrap();
    let t = c.create_token(Duration::from_secs(600)).await.unwrap();
    let out = std::process::Command::new(&agent_bin)
        .arg("--state-dir")
        .arg(&state_a)
        .args(["enroll", "--coordinator", &format!("127.0.0.1:{qp}")])
        .args([
            "--token",
            &t.token,
            "--ca-hash",
            &t.ca_hash,
            "--node",
            "mgmt-a",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log_a = tmp.path().join("mgmt-a.log");
    let mut cmd = std::process::Command::new(&agent_bin);
    cmd.arg("--state-dir")
        .arg(&state_a)
        .args(["run", "--driver", "bmc"])
        .env("RUST_LOG", "debug,quinn=info,quinn_proto=info");
    let mut agent_a = Proc::spawn_command(cmd, &log_a).unwrap();
    // Agent B: in-process, recording what it is sent.
    let state_b = tmp.path().join("mgmt-b");
    enroll_in_process(
        api,
        format!("127.0.0.1:{qp}").parse().unwrap(),
        "mgmt-b",
        &state_b,
    )
    .await
    .unwrap();
    let fake_b = Arc::new(FakeDriver::new());
    let agent_b = spawn_agent(agent_config(&state_b, fake_b.clone()), fake_b.clone());
    wait_for(Duration::from_secs(20), "both agents connected", || async {
        let nodes: Vec<serde_json::Value> = c.get("/v1/nodes").await?;
        Ok((nodes.iter().filter(|n| n["connected"] == true).count() == 2).then_some(()))
    })
    .await
    .unwrap();

    for (node, address, via, pw) in [
        ("bm0", bmc.address(), "mgmt-a", password),
        (
            "bm1",
            "ipmi://admin@127.0.0.1:9".to_owned(),
            "mgmt-b",
            OTHER,
        ),
    ] {
        let (ok, _, err) = cli(
            api,
            &[
                "node",
                "enroll",
                node,
                "--bmc",
                &address,
                "--via",
                via,
                "--password-env",
                "PW",
            ],
            &[("PW", pw)],
        )
        .await;
        assert!(ok, "{err}");
    }
    // A drives bm0 with its password: the password reached it.
    assert_eq!(
        cli_ok(api, &["node", "power", "status", "bm0"])
            .await
            .trim(),
        "node bm0: power off"
    );
    // B is sent its own BMC's credentials (so it does hear of BMCs), never bm0's.
    wait_for(Duration::from_secs(20), "B's credentials", || async {
        Ok(fake_b
            .bmc_credentials()
            .iter()
            .any(|b| b.name == "bm1" && b.password == OTHER)
            .then_some(()))
    })
    .await
    .unwrap();
    let seen = fake_b.bmc_credentials_seen();
    assert!(!seen.is_empty(), "the check itself: B was sent credentials");
    assert!(
        seen.iter()
            .all(|b| b.name != "bm0" && b.password != password),
        "B was sent bm0's credentials: {seen:?}"
    );

    agent_b.stop().await.unwrap();
    assert!(
        agent_a
            .terminate(Duration::from_secs(10))
            .unwrap()
            .success()
    );
    assert!(coord.terminate(Duration::from_secs(10)).unwrap().success());
    // No state directory holds a password: agents keep credentials in memory only.
    for (dir, pw) in [
        (&state_a, password),
        (&state_b, password),
        (&state_b, OTHER),
    ] {
        let holding = files_holding(dir, pw);
        assert!(holding.is_empty(), "a password in {holding:?}");
    }
    for log in [&coord_log, &log_a] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("DEBUG"),
            "{} logged at debug level",
            log.display()
        );
        assert!(
            !text.contains(password) && !text.contains(OTHER),
            "a password in {}",
            log.display()
        );
    }
}
