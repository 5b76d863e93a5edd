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
