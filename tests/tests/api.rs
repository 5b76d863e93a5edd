//! The API as a contract, over real sockets: schemathesis (from PyPI, pinned) runs the
//! coordinator's own `/v1/openapi.json` against it and finds no server error and no answer
//! off the document; every mutating operation the document lists refuses no token, a bad,
//! revoked or expired one, a reader and another project's member, each refusal audited and
//! nothing changed; a revoked agent certificate is refused in the TLS handshake (the link's
//! and the API's); image blobs take an agent's certificate or a token, the certificate
//! nothing else; the API is HTTPS with the coordinator's CA, which the CLI pins, and plain
//! HTTP only on loopback; `/metrics` parses with Prometheus' own text-format parser and
//! carries the documented series.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::tls::Identity;
use ferric_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The API test tools' virtual environment (made by `cargo xtask setup`).
fn api_venv() -> PathBuf {
    let v = ferric_tests::hv::target_dir().unwrap().join("api-venv");
    assert!(
        v.join("bin/st").exists(),
        "schemathesis is not installed at {} — `cargo xtask test` (or `cargo xtask setup`) \
         installs it from tests/python/api-requirements.txt",
        v.display()
    );
    v
}

/// The HTTPS client of the raw calls, trusting only the fleet coordinator's CA (one fleet per
/// test process).
static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();

fn http() -> &'static reqwest::Client {
    HTTP.get().expect("the fleet is up")
}

/// A raw call: status and body (JSON when it is JSON).
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A fleet admin's call that must succeed; its answer.
async fn admin(base: &str, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, v) = call(
        method.clone(),
        &format!("{base}{path}"),
        Some(token),
        Some(body),
    )
    .await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

/// A new API token of `role` in `project` (the whole fleet when `None`); its `ID.SECRET`.
async fn token(
    base: &str,
    admin_token: &str,
    role: &str,
    project: Option<&str>,
    ttl: Option<u64>,
) -> String {
    let mut body = json!({ "role": role, "description": format!("{role} for the test") });
    match project {
        Some(p) => body["project"] = json!(p),
        None => body["fleet"] = json!(true),
    }
    if let Some(t) = ttl {
        body["ttl_secs"] = json!(t);
    }
    let v = admin(
        base,
        admin_token,
        reqwest::Method::POST,
        "/v1/api-tokens",
        body,
    )
    .await;
    v["token"].as_str().unwrap().to_owned()
}

/// A fleet: projects `red` and `blue`, an agent host and a bare-metal node behind it in red,
/// an image and a finished plan of red's.
struct Fleet {
    _dir: tempfile::TempDir,
    coord: ferric_coordinator::Running,
    base: String,
    admin: String,
    host: InProcessAgent,
    host_state: PathBuf,
    plan: u64,
}

async fn fleet() -> Fleet {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let base = ferric_tests::base_url(coord.api);
    let _ = HTTP.set(ferric_tests::http_client(coord.api));
    let admin_t = admin_token(coord.api).unwrap();
    for p in ["red", "blue"] {
        admin(
            &base,
            &admin_t,
            reqwest::Method::POST,
            "/v1/projects",
            json!({ "name": p }),
        )
        .await;
    }
    let host_state = dir.path().join("red-host");
    enroll_in_project(
        coord.api,
        coord.listen,
        "red-host",
        &host_state,
        Some("red"),
    )
    .await
    .unwrap();
    let fake = std::sync::Arc::new(ferric_agent::driver::FakeDriver::new());
    let host = spawn_agent(agent_config(&host_state, fake.clone()), fake);
    let c = client(coord.api).in_project(Some("red".into()));
    wait_for(Duration::from_secs(20), "red-host connected", || async {
        let n: Value = c.get("/v1/nodes/red-host").await?;
        Ok((n["node"]["connected"] == true).then_some(()))
    })
    .await
    .unwrap();
    admin(
        &base,
        &admin_t,
        reqwest::Method::POST,
        "/v1/nodes?project=red",
        json!({
            "name": "red-bm",
            "bmc": "ipmi://admin@127.0.0.1:1623",
            "password": "Matrix-bmc-pw-7",
            "via": "red-host",
        }),
    )
    .await;
    // Its power known: a power action through the (fake) BMC of red-host.
    let on = admin(
        &base,
        &admin_t,
        reqwest::Method::POST,
        "/v1/nodes/red-bm/power?project=red",
        json!({ "action": "on" }),
    )
    .await;
    let done = wait_plan_finished(&c, on["plan"].as_u64().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done["plan"]["state"], "succeeded", "{done}");
    let img = dir.path().join("red.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    c.upload_image(&img, "red-img", Some("raw"), None, |_, _| {})
        .await
        .unwrap();
    let plan = admin(
        &base,
        &admin_t,
        reqwest::Method::POST,
        "/v1/plans?project=red",
        json!({
            "nodes": ["red-host"],
            "plan": { "steps": [{ "ensure_volume": { "pool": "default", "name": "v0", "size_bytes": 1048576 } }] },
        }),
    )
    .await;
    let plan = plan[0]["id"].as_u64().unwrap();
    let done = wait_plan_finished(&c, plan, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done["plan"]["state"], "succeeded", "{done}");
    Fleet {
        _dir: dir,
        coord,
        base,
        admin: admin_t,
        host,
        host_state,
        plan,
    }
}

/// Who calls, with which token, in which project (`?project=`), and the statuses and codes
/// the refusal may have.
type Case<'a> = (&'a str, Option<&'a str>, &'a str, Vec<u16>, &'a [&'a str]);

/// The operations of the served document: (method, path template).
async fn operations(base: &str) -> Vec<(reqwest::Method, String)> {
    let (status, doc) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "the document is public");
    assert_eq!(
        doc["openapi"].as_str().map(|v| &v[..2]),
        Some("3."),
        "{doc}"
    );
    let mut ops = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if let Ok(m) = method.to_uppercase().parse::<reqwest::Method>()
                && ["GET", "PUT", "POST", "DELETE", "PATCH"].contains(&m.as_str())
            {
                ops.push((m, path.clone()));
            }
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_operation_refuses_whoever_may_not_call_it_and_audits_the_refusal() {
    let f = fleet().await;
    let (base, adm) = (f.base.as_str(), f.admin.as_str());
    let red_reader = token(base, adm, "reader", Some("red"), None).await;
    let red_member = token(base, adm, "member", Some("red"), None).await;
    let blue_member = token(base, adm, "member", Some("blue"), None).await;
    let blue_admin = token(base, adm, "admin", Some("blue"), None).await;
    let revoked = token(base, adm, "admin", Some("red"), None).await;
    let revoked_id = revoked.split('.').next().unwrap().to_owned();
    admin(
        base,
        adm,
        reqwest::Method::DELETE,
        &format!("/v1/api-tokens/{revoked_id}"),
        json!({}),
    )
    .await;
    let expired = token(base, adm, "admin", Some("red"), Some(1)).await;
    let red_member_id = red_member.split('.').next().unwrap().to_owned();
    let bogus = format!("{}.{}", red_member_id, "0".repeat(48));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let ops = operations(base).await;
    let mutating: Vec<_> = ops
        .iter()
        .filter(|(m, _)| !matches!(m.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(mutating.len() >= 19, "{mutating:?}");

    // Red's objects, named in each path; a plausible body for each operation (the gate
    // answers before a body is read; where the handler answers, the body is well-formed).
    let fill = |path: &str| {
        path.replace(
            "{name}",
            if path.starts_with("/v1/images") {
                "red-img"
            } else if path.starts_with("/v1/guests") {
                "red-g"
            } else {
                "red-bm"
            },
        )
        .replace(
            "{id}",
            &if path.starts_with("/v1/plans") {
                f.plan.to_string()
            } else {
                red_member_id.clone()
            },
        )
    };
    let body = |path: &str| -> Value {
        match path {
            "/v1/nodes" => {
                json!({ "name": "intruder", "bmc": "ipmi://a@127.0.0.1:1", "password": "x", "via": "red-host" })
            }
            "/v1/plans" => json!({ "nodes": ["red-host"], "plan": { "steps": [] } }),
            "/v1/guests" => {
                json!({ "name": "intruder", "vcpus": 1, "memory_mib": 64, "disk_bytes": 1048576 })
            }
            "/v1/projects" => json!({ "name": "intruder" }),
            "/v1/api-tokens" => json!({ "role": "admin", "project": "red" }),
            "/v1/tokens" => json!({ "ttl_secs": 60 }),
            p if p.ends_with("/power") => json!({ "action": "off" }),
            p if p.ends_with("/bootdev") => json!({ "device": "pxe" }),
            p if p.ends_with("/sel") => json!({}),
            p if p.ends_with("/provision") => json!({ "verb": "manage" }),
            _ => json!({}),
        }
    };
    let public = ["/live", "/ready", "/v1/openapi.json"];
    let mut attempts = 0usize;
    let mut unauthenticated = 0usize;
    for (m, template) in &mutating {
        assert!(
            !public.contains(&template.as_str()),
            "{m} {template} is public"
        );
        let path = fill(template);
        let admin_only = matches!(
            (m.as_str(), template.as_str()),
            (
                "POST",
                "/v1/tokens"
                    | "/v1/api-tokens"
                    | "/v1/projects"
                    | "/v1/nodes"
                    | "/v1/nodes/{name}/revoke"
            ) | ("DELETE", "/v1/nodes/{name}")
        );
        // A path that names one of red's objects: to an outsider it is unknown.
        let names_object = template.contains('{');
        let unknown: &[&str] = &[
            "unknown_node",
            "unknown_guest",
            "unknown_image",
            "unknown_token",
            "unknown_plan",
        ];
        let mut cases: Vec<Case> = vec![
            ("no token", None, "", vec![401], &["unauthenticated"]),
            (
                "a bogus token",
                Some(bogus.as_str()),
                "",
                vec![401],
                &["invalid_token"],
            ),
            (
                "a revoked token",
                Some(revoked.as_str()),
                "",
                vec![401],
                &["token_revoked"],
            ),
            (
                "an expired token",
                Some(expired.as_str()),
                "",
                vec![401],
                &["token_expired"],
            ),
            // A reader may revoke only itself; another's token is unknown to it.
            (
                "red's reader",
                Some(red_reader.as_str()),
                "",
                if template == "/v1/api-tokens/{id}" {
                    vec![404]
                } else {
                    vec![403]
                },
                if template == "/v1/api-tokens/{id}" {
                    &["unknown_token"]
                } else {
                    &["forbidden"]
                },
            ),
            (
                "blue's member acting in red",
                Some(blue_member.as_str()),
                "?project=red",
                vec![404],
                &["unknown_project"],
            ),
        ];
        // Acting in blue, blue's member may create in blue: it is refused red's objects, and
        // what only an admin may do.
        if admin_only {
            cases.push((
                "blue's member",
                Some(blue_member.as_str()),
                "",
                vec![403],
                &["forbidden"],
            ));
        } else if names_object {
            cases.push((
                "blue's member",
                Some(blue_member.as_str()),
                "",
                vec![404],
                unknown,
            ));
        }
        if names_object {
            let codes: &[&str] = if template == "/v1/api-tokens/{id}" {
                &["unknown_token", "forbidden"]
            } else {
                unknown
            };
            cases.push((
                "blue's admin",
                Some(blue_admin.as_str()),
                "",
                vec![403, 404],
                codes,
            ));
        }
        for (who, tok, query, statuses, codes) in cases {
            let url = format!("{base}{path}{query}");
            let (status, v) = call(m.clone(), &url, tok, Some(body(template))).await;
            attempts += 1;
            if status == 401 {
                unauthenticated += 1;
            }
            assert!(
                statuses.contains(&status),
                "{m} {path}{query} by {who}: expected {statuses:?}, got {status} {v}"
            );
            let code = v["code"].as_str().unwrap_or_default();
            assert!(
                codes.contains(&code),
                "{m} {path}{query} by {who}: code `{code}` not in {codes:?}: {v}"
            );
            assert_eq!(v["status"], status, "a problem document: {v}");
        }
    }
    assert!(attempts >= mutating.len() * 6, "{attempts} refusals tried");

    // Every refusal was audited with its status — those without a valid token counted and
    // summed up in one entry, not each written (a flood of them filled the disk); the audit
    // log is the fleet admin's.
    let (s, log) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/audit?limit=10000"),
        Some(adm),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let refused: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["status"]
                .as_i64()
                .is_some_and(|s| (400..500).contains(&s))
        })
        .collect();
    let each = refused
        .iter()
        .filter(|r| r["code"] != "unauthenticated_calls")
        .count();
    assert!(
        each >= attempts - unauthenticated,
        "{each} audited of {} with a valid token",
        attempts - unauthenticated
    );
    let summed: usize = refused
        .iter()
        .filter(|r| r["code"] == "unauthenticated_calls" && r["status"] == 401)
        .filter_map(|r| {
            r["path"]
                .as_str()?
                .strip_prefix('(')?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(
        summed >= unauthenticated,
        "{summed} of {unauthenticated} refusals without a valid token summed up: {refused:?}"
    );
    assert!(
        !refused
            .iter()
            .any(|r| r["status"] == 401 && r["code"] != "unauthenticated_calls"),
        "no refusal without a valid token is written on its own"
    );
    assert!(refused.iter().any(|r| r["status"] == 403
        && r["code"] == "forbidden"
        && r["role"] == "reader"
        && r["project"] == "red"));
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/audit"),
        Some(&red_reader),
        None,
    )
    .await;
    assert_eq!(s, 403, "a reader does not read the audit log");

    // Nothing changed: red's objects and tokens are as they were.
    let c = client(f.coord.api).in_project(Some("red".into()));
    let node: Value = c.get("/v1/nodes/red-bm").await.unwrap();
    assert_eq!(node["node"]["name"], "red-bm", "{node}");
    assert_eq!(
        node["node"]["power"], "on",
        "no power action got through: {node}"
    );
    let img: Value = c.get("/v1/images/red-img").await.unwrap();
    assert_eq!(img["name"], "red-img");
    let nodes: Vec<Value> = client(f.coord.api).get("/v1/nodes").await.unwrap();
    assert!(!nodes.iter().any(|n| n["name"] == "intruder"), "{nodes:?}");
    let (s, who) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/whoami"),
        Some(&red_member),
        None,
    )
    .await;
    assert_eq!(
        (s, who["role"].as_str()),
        (200, Some("member")),
        "red's member token still works"
    );
    // The control: the same kind of call by red's member goes through the gate.
    let (s, v) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/plans"),
        Some(&red_member),
        Some(json!({ "nodes": ["red-host"], "plan": { "steps": [{ "ensure_volume": { "pool": "default", "name": "v1", "size_bytes": 1048576 } }] } })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // User data over the config drive's limit is refused with the limit named, and the node
    // is left as it was.
    let (s, v) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/nodes/red-bm/provision?project=red"),
        Some(&red_member),
        Some(json!({ "verb": "deploy", "image": "red-img",
            "instance": { "user_data": "#".repeat(64 * 1024 + 1) } })),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("user_data_too_large")),
        "{v}"
    );
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("65537 bytes") && detail.contains("at most 65536 (64 KiB)"),
        "{v}"
    );
    // A collection call naming red's node in its body: blue's member is told it is unknown.
    let (s, v) = call(
        reqwest::Method::POST,
        &format!("{base}/v1/plans"),
        Some(&blue_member),
        Some(json!({ "nodes": ["red-host"], "plan": { "steps": [{ "reboot": {} }] } })),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("unknown_node")), "{v}");
    // And blue sees none of red's.
    let (s, v) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/plans/{}", f.plan),
        Some(&blue_member),
        None,
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("unknown_plan")), "{v}");
    let (s, v) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/nodes"),
        Some(&blue_member),
        None,
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    f.host.stop().await.unwrap();
    f.coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_ends_with_unauthorized_when_its_token_is_revoked() {
    let f = fleet().await;
    let base = &f.base;
    let t = token(base, &f.admin, "reader", None, None).await;
    let id = t.split('.').next().unwrap().to_owned();
    let mut resp = http()
        .get(format!("{base}/v1/watch"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Reads the stream until `want` shows up in it (or it ends: `None`).
    async fn until(resp: &mut reqwest::Response, want: &str, seen: &mut String) -> Option<()> {
        while !seen.contains(want) {
            let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
                .await
                .expect("the stream answers within 20 s")
                .unwrap()?;
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        Some(())
    }
    let mut seen = String::new();
    until(&mut resp, "event: fleet", &mut seen)
        .await
        .expect("the fleet comes first");
    assert!(seen.contains("red-bm"), "{seen}");
    admin(
        base,
        &f.admin,
        reqwest::Method::DELETE,
        &format!("/v1/api-tokens/{id}"),
        json!({}),
    )
    .await;
    until(&mut resp, "event: unauthorized", &mut seen)
        .await
        .unwrap_or_else(|| panic!("the stream ended without saying why: {seen}"));
    until(&mut resp, "\n\n", &mut seen).await;
    let why = seen.rsplit("event: unauthorized").next().unwrap();
    assert!(why.contains("token_revoked") && why.contains(&id), "{why}");
    // And it ends there.
    let mut rest = String::new();
    assert!(
        until(&mut resp, "event:", &mut rest).await.is_none(),
        "nothing after: {rest}"
    );
    f.host.stop().await.unwrap();
    f.coord.shutdown().await;
}

/// Dials the coordinator with `id`'s certificate and sends a byte on a stream: how the
/// connection ended (`None`: still open after two seconds).
async fn dial(coord: std::net::SocketAddr, id: &Identity) -> Option<quinn::ConnectionError> {
    let cfg =
        ferric_agent::tls::link_client_config(id, Duration::from_secs(5), Duration::from_secs(10))
            .unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let r = async {
        let conn = match ep
            .connect_with(cfg, coord, ferric_proto::COORDINATOR_SERVER_NAME)
            .unwrap()
            .await
        {
            Ok(c) => c,
            Err(e) => return Some(e),
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        let _ = send.write_all(&[0]).await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(2), recv.read(&mut buf)).await;
        conn.close_reason()
    }
    .await;
    ep.close(0u32.into(), b"");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_certificate_is_refused_in_the_handshake() {
    let f = fleet().await;
    let id = Identity::load(&f.host_state).unwrap();
    let quic = f.coord.listen;
    // The control: before its revocation the certificate passes TLS (the coordinator may
    // close the stray connection itself, at the application level).
    match dial(quic, &id).await {
        None | Some(quinn::ConnectionError::ApplicationClosed(_)) => {}
        Some(e) => panic!("the certificate is refused before its revocation: {e}"),
    }
    let (ok, out, err) = cli(
        f.coord.api,
        &["--project", "red", "node", "revoke", "red-host"],
        &[],
    )
    .await;
    assert!(ok, "{out}{err}");
    let c = client(f.coord.api).in_project(Some("red".into()));
    wait_for(Duration::from_secs(10), "red-host disconnected", || async {
        let n: Vec<Value> = c.get("/v1/nodes").await?;
        Ok(n.iter()
            .any(|n| n["name"] == "red-host" && n["connected"] == false)
            .then_some(()))
    })
    .await
    .unwrap();
    let refused = dial(quic, &id)
        .await
        .expect("a revoked certificate is refused")
        .to_string();
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
    // The running agent keeps being refused: it does not come back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n: Value = c.get("/v1/nodes/red-host").await.unwrap();
    assert_eq!(n["node"]["connected"], false, "{n}");
    // Revoking is audited.
    let log: Vec<Value> = client(f.coord.api).get("/v1/audit").await.unwrap();
    assert!(
        log.iter()
            .any(|r| r["path"] == "/v1/nodes/red-host/revoke" && r["status"] == 200),
        "{log:?}"
    );
    f.host.shutdown.cancel();
    f.coord.shutdown().await;
}

/// A client of the coordinator's HTTPS API showing `id`'s agent certificate.
fn agent_http(id: &Identity) -> reqwest::Client {
    let ca = reqwest::Certificate::from_der(&id.ca_der).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&id.client_pem()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_blobs_take_an_agent_certificate_or_a_token_and_the_certificate_nothing_else() {
    let f = fleet().await;
    let red = client(f.coord.api).in_project(Some("red".into()));
    let img: Value = red.get("/v1/images/red-img").await.unwrap();
    let red_blob = format!(
        "{}/images/sha256/{}",
        f.base,
        img["sha256"].as_str().unwrap()
    );
    // Blue has an image of other content.
    let blue_file = f._dir.path().join("blue.img");
    std::fs::write(&blue_file, vec![7u8; 1 << 20]).unwrap();
    let blue_view = client(f.coord.api)
        .in_project(Some("blue".into()))
        .upload_image(&blue_file, "blue-img", Some("raw"), None, |_, _| {})
        .await
        .unwrap();
    let blue_blob = format!("{}{}", f.base, blue_view.path);

    // Neither a token nor a certificate: refused, and the answer says what would do.
    let (st, v) = call(reqwest::Method::GET, &red_blob, None, None).await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["code"], "unauthenticated", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("client certificate"),
        "{v}"
    );
    // A red reader's token reads red's blob, a blue member's answers as unknown.
    let red_reader = token(&f.base, &f.admin, "reader", Some("red"), None).await;
    let blue_member = token(&f.base, &f.admin, "member", Some("blue"), None).await;
    let (st, _) = call(reqwest::Method::GET, &red_blob, Some(&red_reader), None).await;
    assert_eq!(st, 200);
    let (st, v) = call(reqwest::Method::GET, &red_blob, Some(&blue_member), None).await;
    assert_eq!(
        (st, v["code"].clone()),
        (404, json!("unknown_image")),
        "{v}"
    );

    // red-host's certificate reads its project's blob, in full and by range …
    let id = Identity::load(&f.host_state).unwrap();
    let agent = agent_http(&id);
    let resp = agent.get(&red_blob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 1 << 20);
    let resp = agent
        .get(&red_blob)
        .header(reqwest::header::RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().len(), 100);
    // … and through the images pipeline's own HTTP source, as the libvirt driver opens it.
    let opts = ferric_images::source::HttpOptions {
        roots: vec![id.ca_der.to_vec()],
        identity_pem: Some(id.client_pem()),
        ..Default::default()
    };
    let url = red_blob.clone();
    let len = tokio::task::spawn_blocking(move || {
        use ferric_images::source::Source;
        ferric_images::source::HttpSource::open_with(&url, &opts).map(|s| s.len())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(len, 1 << 20);
    // Another project's blob answers as unknown; the rest of the API does not take it.
    let resp = agent.get(&blue_blob).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    for path in ["/v1/nodes", "/v1/whoami", "/metrics", "/v1/images"] {
        let resp = agent.get(format!("{}{path}", f.base)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} took an agent certificate");
    }
    let resp = agent
        .post(format!("{}/v1/plans", f.base))
        .json(&json!({ "nodes": ["red-host"], "plan": { "steps": [] } }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a plan pushed with an agent certificate"
    );

    // Revoked, the certificate is refused in the API's TLS handshake too.
    let (ok, out, err) = cli(
        f.coord.api,
        &["--project", "red", "node", "revoke", "red-host"],
        &[],
    )
    .await;
    assert!(ok, "{out}{err}");
    let refused = agent_http(&id)
        .get(&red_blob)
        .send()
        .await
        .expect_err("a revoked certificate is refused");
    let chain = ferric_coordinator::error_chain(&refused);
    assert!(chain.to_lowercase().contains("revoked"), "{chain}");
    f.host.shutdown.cancel();
    f.coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_https_with_the_coordinator_ca_and_plain_http_only_on_loopback() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let api = coord.api;
    // HTTPS: a plain-HTTP request gets no answer from the API.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plain = reqwest::Client::new()
        .get(format!("http://{api}/live"))
        .send()
        .await;
    assert!(
        plain
            .as_ref()
            .map(|r| !r.status().is_success())
            .unwrap_or(true),
        "plain HTTP answered: {plain:?}"
    );
    // The first admin's config names the HTTPS endpoint and the CA to pin.
    let conf = std::fs::read_to_string(dir.path().join("coord/admin.conf")).unwrap();
    assert!(conf.contains(&format!("api = \"https://{api}\"")), "{conf}");
    assert!(conf.contains("ca = \""), "{conf}");
    // The CLI with that config file alone (no flags, no environment) works …
    let out = tokio::process::Command::new(bin("ferric").unwrap())
        .env_remove("FERRIC_TOKEN")
        .env_remove("FERRIC_CA")
        .env_remove("FERRIC_API")
        .env("FERRIC_CONFIG", dir.path().join("coord/admin.conf"))
        .args(["api-token", "list"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // … and pinned to another coordinator's CA, it refuses this one.
    let other = start_coordinator(&dir.path().join("other")).await.unwrap();
    let other_ca = dir.path().join("other/ca.pem");
    let (ok, _, err) = cli(
        api,
        &["node", "list"],
        &[("FERRIC_CA", other_ca.to_str().unwrap())],
    )
    .await;
    assert!(!ok, "a coordinator outside the pinned CA was trusted");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    other.shutdown().await;
    coord.shutdown().await;

    // Plain HTTP is refused on an address other hosts reach …
    let mut cfg = coordinator_config(&dir.path().join("plain"));
    cfg.api_plain_http = true;
    cfg.api_listen = "0.0.0.0:0".parse().unwrap();
    let e = ferric_coordinator::start(cfg.clone())
        .await
        .expect_err("plain HTTP on 0.0.0.0");
    assert!(e.to_string().contains("loopback only"), "{e}");
    // … and served when asked for on loopback, where blobs still need a credential.
    cfg.api_listen = "127.0.0.1:0".parse().unwrap();
    let coord = ferric_coordinator::start(cfg).await.unwrap();
    let conf = std::fs::read_to_string(dir.path().join("plain/admin.conf")).unwrap();
    assert!(
        conf.contains(&format!("api = \"http://{}\"", coord.api)),
        "{conf}"
    );
    let resp = reqwest::Client::new()
        .get(format!("http://{}/ready", coord.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/images/sha256/{}",
            coord.api,
            "0".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    coord.shutdown().await;
}

/// Runs schemathesis on the served document; panics with its report unless it passes. A run
/// whose only errors are the tool's own ("Runtime Error": hypothesis calling its own generator
/// flaky, once in four full runs) and that found no failure is run once more; a failed check
/// is never run again.
fn schemathesis(dir: &Path, base: &str, ca: &Path, token: &str, extra: &[&str]) {
    let (ok, report) = schemathesis_once(dir, base, ca, token, extra);
    if !ok
        && report.contains("Runtime Error")
        && !report.contains("FAILURES")
        && !report.contains("Failures:")
    {
        println!("schemathesis failed in itself, not on a check: running it again");
        let (ok, _) = schemathesis_once(dir, base, ca, token, extra);
        assert!(ok, "schemathesis found failures (above)");
        return;
    }
    assert!(ok, "schemathesis found failures (above)");
}

/// One schemathesis run: (success with cases run, its report).
fn schemathesis_once(
    dir: &Path,
    base: &str,
    ca: &Path,
    token: &str,
    extra: &[&str],
) -> (bool, String) {
    let out = std::process::Command::new(api_venv().join("bin/st"))
        .current_dir(dir)
        .args(["run", &format!("{base}/v1/openapi.json")])
        .args(["--tls-verify", &ca.display().to_string()])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "40",
            "--workers",
            "2",
            "--seed",
            "20261204",
            "--generation-database",
            "none",
            "--no-color",
            "--request-timeout",
            "20",
            // The server closes a keep-alive connection idle for its header deadline; a request
            // sent on one just as it closes is lost in transit, and the client does not resend a
            // POST by itself. One resend tells that race from a server that drops a request: a
            // drop answers the resend the same way and is still reported.
            "--request-retries",
            "1",
        ])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("passed"), "schemathesis ran cases");
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let f = fleet().await;
    let dir = tempfile::tempdir().unwrap();
    // Names that exist, so that calls reach past "unknown" into the handlers.
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        "[[operations]]\ninclude-path-regex = \"^/v1/nodes/\"\nparameters = { \"path.name\" = \"red-bm\" }\n\n\
         [[operations]]\ninclude-path-regex = \"^/v1/images/\"\nparameters = { \"path.name\" = \"red-img\" }\n\n\
         [[operations]]\ninclude-path-regex = \"^/v1/plans/\"\nparameters = { \"path.id\" = 1 }\n",
    )
    .unwrap();
    // A red admin: the fleet's projects and the red objects are in its reach. Revoking tokens
    // would revoke its own in the stateful phase: that operation runs alone afterwards.
    let red_admin = token(&f.base, &f.admin, "admin", Some("red"), None).await;
    let ca = ferric_tests::ca_file(f.coord.api).unwrap();
    schemathesis(
        dir.path(),
        &f.base,
        &ca,
        &red_admin,
        // The live streams never end by themselves: each case would wait out the timeout.
        &[
            "--exclude-operation-id",
            "revoke_token",
            "--exclude-operation-id",
            "watch_node",
            "--exclude-operation-id",
            "watch_fleet",
        ],
    );
    let fleet_admin = token(&f.base, &f.admin, "admin", None, None).await;
    schemathesis(
        dir.path(),
        &f.base,
        &ca,
        &fleet_admin,
        &[
            "--include-operation-id",
            "revoke_token",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    );
    // The coordinator still serves.
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{}/ready", f.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    f.host.stop().await.unwrap();
    f.coord.shutdown().await;
}

/// `/metrics` read by prometheus_client's parser: family name → (type, samples as
/// (name, labels, value)).
fn parse_metrics(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = std::process::Command::new(api_venv().join("bin/python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find_map(|s| {
            let l = &s[1];
            (s[0] == name && labels.iter().all(|(k, v)| l[*k] == *v))
                .then(|| s[2].as_f64().unwrap())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_carry_the_documented_series() {
    let f = fleet().await;
    let scrape = |token: String| {
        let base = f.base.clone();
        async move {
            let resp = http()
                .get(format!("{base}/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            resp.text().await.unwrap()
        }
    };
    // Telemetry has arrived from red-host.
    let c = client(f.coord.api).in_project(Some("red".into()));
    wait_for(Duration::from_secs(10), "red-host's telemetry", || async {
        let t: Vec<Value> = c.get("/v1/nodes/red-host/telemetry").await?;
        Ok((!t.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let text = scrape(f.admin.clone()).await;
    let fam = parse_metrics(&text);
    for series in ferric_coordinator::conductor::metrics::SERIES {
        assert!(
            text.contains(&format!("# TYPE {series} ")),
            "{series} is not exposed:\n{text}"
        );
    }
    let red = [("project", "red")];
    assert_eq!(fam["ferric_plan_duration_seconds"]["type"], "histogram");
    assert_eq!(fam["ferric_node_provision_state"]["type"], "gauge");
    assert_eq!(
        sample(
            &fam,
            "ferric_agents_connected",
            "ferric_agents_connected",
            &[]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &fam,
            "ferric_node_connected",
            "ferric_node_connected",
            &[("node", "red-host"), red[0]]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &fam,
            "ferric_nodes_enrolled",
            "ferric_nodes_enrolled",
            &[("role", "baremetal")]
        ),
        Some(1.0)
    );
    // Powered on through its BMC.
    assert_eq!(
        sample(
            &fam,
            "ferric_node_power_on",
            "ferric_node_power_on",
            &[("node", "red-bm"), red[0]]
        ),
        Some(1.0),
        "{text}"
    );
    // The bare-metal node is in exactly one provision state.
    let states: Vec<f64> = fam["ferric_node_provision_state"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[1]["node"] == "red-bm")
        .map(|s| s[2].as_f64().unwrap())
        .collect();
    assert_eq!(
        states.len(),
        ferric_coordinator::model::ProvisionState::ALL.len()
    );
    assert_eq!(states.iter().sum::<f64>(), 1.0, "{text}");
    // Telemetry freshness: a sample under a few seconds old, stamped now.
    let age = sample(
        &fam,
        "ferric_node_telemetry_age_seconds",
        "ferric_node_telemetry_age_seconds",
        &[("node", "red-host")],
    )
    .unwrap();
    assert!((0.0..10.0).contains(&age), "{age}");
    let at = sample(
        &fam,
        "ferric_node_telemetry_last_sample_timestamp_seconds",
        "ferric_node_telemetry_last_sample_timestamp_seconds",
        &[("node", "red-host")],
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 10.0, "{at} vs {now}");
    // Plans: the two that succeeded (power on, a volume) are counted, their durations
    // observed.
    assert_eq!(
        sample(
            &fam,
            "ferric_plans",
            "ferric_plans",
            &[("state", "succeeded"), red[0]]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &fam,
            "ferric_plans",
            "ferric_plans",
            &[("state", "failed"), red[0]]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &fam,
            "ferric_plan_duration_seconds",
            "ferric_plan_duration_seconds_count",
            &[("state", "succeeded"), red[0]]
        ),
        Some(2.0)
    );
    let took = sample(
        &fam,
        "ferric_plan_duration_seconds",
        "ferric_plan_duration_seconds_sum",
        &[("state", "succeeded")],
    )
    .unwrap();
    assert!(took > 0.0 && took < 20.0, "{took}");
    // A token of another project sees none of red's series; none at all reads nothing.
    let blue_reader = token(&f.base, &f.admin, "reader", Some("blue"), None).await;
    let blue = scrape(blue_reader).await;
    parse_metrics(&blue);
    assert!(
        !blue.contains("red-host") && !blue.contains("project=\"red\""),
        "{blue}"
    );
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{}/metrics", f.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);
    f.host.stop().await.unwrap();
    f.coord.shutdown().await;
}
