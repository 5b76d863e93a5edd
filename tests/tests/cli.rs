//! Tier 2: the `ferric` command line as a program reads it, against an in-process coordinator
//! with a hypervisor agent: every `-o json` output is the API's document and validates against
//! the schema the OpenAPI document gives its operation's answer; `-o yaml` carries the same
//! value; the completion scripts generate for bash, zsh and fish; and the exit status is the
//! one `ferric --help` documents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_tests::{bin, cli, cli_ok};
use serde_json::Value;
use std::time::Duration;

/// The schema of `method path`'s success (its one 2xx answer), with the document's
/// components beside it so that its `$ref`s resolve.
fn answer_schema(doc: &Value, method: &str, path: &str) -> Value {
    let op = &doc["paths"][path][method];
    let ok: Vec<&Value> = op["responses"]
        .as_object()
        .map(|r| {
            r.iter()
                .filter(|(k, _)| k.starts_with('2'))
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ok.len(), 1, "{method} {path} documents one success: {op}");
    let schema = ok[0]["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {path} documents no JSON answer: {op}"
    );
    let mut root = serde_json::json!({ "components": doc["components"].clone() });
    for (k, v) in schema.as_object().unwrap() {
        root[k] = v.clone();
    }
    root
}

fn validate(doc: &Value, method: &str, path: &str, what: &str, v: &Value) {
    let schema = answer_schema(doc, method, path);
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("the schema of {method} {path} compiles: {e}"));
    let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "`ferric {what} -o json` is not what {method} {path} documents: {errors:?}\n{v:#}"
    );
}

/// Whether the schema of `method path`'s success refuses `v`.
fn refuses(doc: &Value, method: &str, path: &str, v: &Value) -> bool {
    let schema = answer_schema(doc, method, path);
    !jsonschema::validator_for(&schema).unwrap().is_valid(v)
}

fn json(out: &str, what: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("`{what}` printed no JSON ({e}): {out}"))
}

/// Runs `ferric ARGS` and returns its exit status and stderr.
async fn status_of(api: std::net::SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(bin("ferric").unwrap());
    cmd.env_remove("FERRIC_TOKEN")
        .env("FERRIC_CONFIG", "/dev/null")
        .env("FERRIC_TOKEN", ferric_tests::admin_token(api).unwrap())
        .env("FERRIC_CA", ferric_tests::ca_file(api).unwrap())
        .arg("--api")
        .arg(ferric_tests::base_url(api))
        .args(args);
    let out = cmd.output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_validates_against_the_openapi_schemas_and_yaml_carries_the_same() {
    let (tmp, coord, client) = ferric_tests::coordinator_in_tempdir().await;
    let api = coord.api;
    let agent = ferric_tests::enrolled_agent(&coord, tmp.path(), "hv1")
        .await
        .unwrap();
    ferric_tests::wait_for(Duration::from_secs(20), "hv1 to connect", || async {
        let n: Value = client.get("/v1/nodes/hv1").await?;
        Ok((n["node"]["connected"] == true && n["telemetry"].is_object()).then_some(()))
    })
    .await
    .unwrap();
    let doc: Value = client.get("/v1/openapi.json").await.unwrap();

    let img = tmp.path().join("disk.raw");
    std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
    let up = cli_ok(
        api,
        &[
            "-o",
            "json",
            "image",
            "upload",
            img.to_str().unwrap(),
            "--name",
            "tiny",
        ],
    )
    .await;
    validate(
        &doc,
        "put",
        "/v1/images/{name}",
        "image upload",
        &json(&up, "image upload"),
    );

    let plan = tmp.path().join("plan.yaml");
    std::fs::write(&plan, "steps:\n  - ensure_bridge: { name: br0 }\n").unwrap();
    let applied = cli_ok(
        api,
        &[
            "-o",
            "json",
            "plan",
            "apply",
            "-f",
            plan.to_str().unwrap(),
            "--node",
            "hv1",
        ],
    )
    .await;
    let applied = json(&applied, "plan apply");
    validate(&doc, "post", "/v1/plans", "plan apply", &applied);
    let id = applied[0]["id"].as_u64().unwrap().to_string();

    let cases: &[(&[&str], &str, &str)] = &[
        (&["node", "list"], "get", "/v1/nodes"),
        (&["node", "show", "hv1"], "get", "/v1/nodes/{name}"),
        (&["host", "list"], "get", "/v1/hosts"),
        (&["guest", "list"], "get", "/v1/guests"),
        (&["image", "list"], "get", "/v1/images"),
        (&["image", "show", "tiny"], "get", "/v1/images/{name}"),
        (&["plan", "list"], "get", "/v1/plans"),
        (
            &["plan", "status", &id, "--wait", "30s"],
            "get",
            "/v1/plans/{id}",
        ),
        (&["whoami"], "get", "/v1/whoami"),
        (
            &["api-token", "create", "--role", "reader"],
            "post",
            "/v1/api-tokens",
        ),
        (&["api-token", "list"], "get", "/v1/api-tokens"),
        (&["project", "list"], "get", "/v1/projects"),
        (&["token", "create"], "post", "/v1/tokens"),
        (&["audit"], "get", "/v1/audit"),
    ];
    for (args, method, path) in cases {
        let mut all = vec!["-o", "json"];
        all.extend(args.iter());
        let out = cli_ok(api, &all).await;
        let what = args.join(" ");
        let v = json(&out, &what);
        validate(&doc, method, path, &what, &v);
    }
    // The schemas do check: a node's detail without its node, or with a role it cannot
    // have, is refused.
    let mut shown = json(
        &cli_ok(api, &["-o", "json", "node", "show", "hv1"]).await,
        "node show",
    );
    assert!(!refuses(&doc, "get", "/v1/nodes/{name}", &shown));
    let node = shown.as_object_mut().unwrap().remove("node").unwrap();
    assert!(refuses(&doc, "get", "/v1/nodes/{name}", &shown));
    let mut wrong = node.clone();
    wrong["role"] = "toaster".into();
    assert!(refuses(
        &doc,
        "get",
        "/v1/nodes",
        &Value::Array(vec![wrong])
    ));
    assert!(!refuses(
        &doc,
        "get",
        "/v1/nodes",
        &Value::Array(vec![node])
    ));
    // The lists the checks above read are not empty ones, which any array schema accepts.
    let nodes = json(
        &cli_ok(api, &["-o", "json", "node", "list"]).await,
        "node list",
    );
    assert!(!nodes.as_array().unwrap().is_empty());
    let hosts = json(
        &cli_ok(api, &["-o", "json", "host", "list"]).await,
        "host list",
    );
    assert_eq!(hosts[0]["name"], "hv1", "{hosts}");

    // Each streamed telemetry record is a document of the telemetry route's schema items.
    let lines = cli_ok(
        api,
        &["-o", "json", "telemetry", "watch", "hv1", "--count", "2"],
    )
    .await;
    let records: Vec<Value> = lines.lines().map(|l| json(l, "telemetry watch")).collect();
    assert_eq!(records.len(), 2, "{lines}");
    validate(
        &doc,
        "get",
        "/v1/nodes/{name}/telemetry",
        "telemetry watch",
        &Value::Array(records),
    );

    // YAML is the same value as JSON.
    for args in [
        &["image", "list"][..],
        &["whoami"],
        &["image", "show", "tiny"],
    ] {
        let j = json(
            &cli_ok(api, &[&["-o", "json"][..], args].concat()).await,
            &args.join(" "),
        );
        let y = cli_ok(api, &[&["-o", "yaml"][..], args].concat()).await;
        assert!(!y.trim_start().starts_with('{'), "YAML, not JSON: {y}");
        let y: Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(y, j, "`{}` in YAML and JSON", args.join(" "));
    }

    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_and_completions_are_as_documented() {
    // Completions need no coordinator.
    for (shell, marker) in [
        ("bash", "complete -F _ferric"),
        ("zsh", "#compdef ferric"),
        ("fish", "complete -c ferric"),
    ] {
        let out = std::process::Command::new(bin("ferric").unwrap())
            .env("FERRIC_CONFIG", "/dev/null")
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(script.contains(marker), "{shell}: {script:.300}");
        for word in ["deploy", "undeploy", "wait", "yaml"] {
            assert!(script.contains(word), "{shell} completes `{word}`");
        }
    }
    // bash reads its script without a syntax error.
    let bash = std::process::Command::new(bin("ferric").unwrap())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &bash.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(path.path())
        .status()
        .unwrap();
    assert!(check.success(), "bash -n on the bash completions");
    let help = std::process::Command::new(bin("ferric").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit status:") && help.contains("Examples:"),
        "{help}"
    );

    let (tmp, coord, _client) = ferric_tests::coordinator_in_tempdir().await;
    let api = coord.api;
    let agent = ferric_tests::enrolled_agent(&coord, tmp.path(), "hv1")
        .await
        .unwrap();
    // An offline node's plan stays pending: a short wait runs out (4).
    ferric_tests::enroll_node(&coord, tmp.path(), "off1")
        .await
        .unwrap();
    let plan = tmp.path().join("plan.yaml");
    std::fs::write(&plan, "steps:\n  - ensure_bridge: { name: br0 }\n").unwrap();
    let apply = |node: &'static str| {
        let plan = plan.clone();
        async move {
            let out = cli_ok(
                api,
                &[
                    "-o",
                    "json",
                    "plan",
                    "apply",
                    "-f",
                    plan.to_str().unwrap(),
                    "--node",
                    node,
                ],
            )
            .await;
            json(&out, "plan apply")[0]["id"]
                .as_u64()
                .unwrap()
                .to_string()
        }
    };
    let pending = apply("off1").await;
    let (code, err) = status_of(api, &["plan", "status", &pending, "--wait", "300ms"]).await;
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("still"), "{err}");

    // A plan whose step fails: 3, in table and JSON output alike.
    agent
        .fake
        .fail_kind("ensure_bridge", ferric_proto::plan::ErrorKind::Io);
    let failing = apply("hv1").await;
    for output in ["table", "json"] {
        let (code, err) = status_of(
            api,
            &["-o", output, "plan", "status", &failing, "--wait", "30s"],
        )
        .await;
        assert_eq!(code, Some(3), "{output}: {err}");
        assert!(err.contains(&format!("plan {failing} failed")), "{err}");
    }
    // An error (an unknown plan): 1; a command line ferric does not know: 2.
    let (code, err) = status_of(api, &["plan", "status", "999999"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("999999"), "{err}");
    let (code, err) = status_of(api, &["node", "frobnicate"]).await;
    assert_eq!(code, Some(2), "{err}");
    let (ok, _, err) = cli(api, &["node", "abort", "hv1", "--wait"], &[]).await;
    assert!(!ok && err.contains("unexpected argument"), "{err}");

    agent.stop().await.unwrap();
    coord.shutdown().await;
}
