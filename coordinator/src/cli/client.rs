//! The API's HTTP client.

use super::output::{describe_event, human_bytes};
use crate::conductor::nodes::{CreateToken, CreatedToken};
use crate::conductor::plans::{CreatePlans, CreatedPlan, PlanFile};
use crate::model::PlanState;
use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// HTTP client of the API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        // reqwest is built without a TLS provider of its own: Ferric uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request and decodes its JSON answer.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator API at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the API response")?;
        if !status.is_success() {
            // A problem document names the cause and its stable code; anything else is shown
            // as it came.
            match serde_json::from_slice::<crate::api::Problem>(&body) {
                Ok(p) => bail!("{} ({}, HTTP {status})", p.detail, p.code),
                Err(_) => bail!("{} (HTTP {status})", String::from_utf8_lossy(&body).trim()),
            }
        }
        serde_json::from_slice(&body).context("decoding the API response")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    /// POST JSON, decode JSON.
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// DELETE, decode JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Creates a bootstrap token.
    pub async fn create_token(&self, ttl: Duration) -> Result<CreatedToken> {
        self.post(
            "/v1/tokens",
            &CreateToken {
                ttl_secs: ttl.as_secs(),
            },
        )
        .await
    }

    /// Applies a plan to nodes.
    pub async fn apply(&self, nodes: Vec<String>, plan: PlanFile) -> Result<Vec<CreatedPlan>> {
        self.post("/v1/plans", &CreatePlans { nodes, plan }).await
    }

    /// A plan's status as JSON.
    pub async fn plan(&self, id: u64) -> Result<serde_json::Value> {
        self.get(&format!("/v1/plans/{id}")).await
    }

    /// Streams an image file to the store, showing progress on a terminal.
    pub async fn upload_image(
        &self,
        file: &std::path::Path,
        name: &str,
        format: Option<&str>,
        checksum: Option<&str>,
    ) -> Result<crate::conductor::images::ImageView> {
        use futures_util::StreamExt;
        use std::io::IsTerminal;
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("cannot open {}", file.display()))?;
        let total = f.metadata().await?.len();
        let started = std::time::Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut sent = 0u64;
        let mut shown = std::time::Instant::now();
        let label = file.display().to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                if tty && (shown.elapsed().as_millis() >= 200 || sent == total) {
                    shown = std::time::Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    let rate = sent as f64 / secs;
                    let eta = (total.saturating_sub(sent)) as f64 / rate.max(1.0);
                    eprint!(
                        "\r{label}: {} / {} ({:.0}%), {}/s, ETA {:.0}s   ",
                        human_bytes(sent),
                        human_bytes(total),
                        sent as f64 * 100.0 / (total.max(1) as f64),
                        human_bytes(rate as u64),
                        eta
                    );
                    if sent == total {
                        eprintln!();
                    }
                }
            }
            chunk
        });
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(f) = format {
            query.push(("format", f));
        }
        if let Some(c) = checksum {
            query.push(("checksum", c));
        }
        let req = self
            .http
            .put(self.url(&format!("/v1/images/{name}")))
            .query(&query)
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(stream));
        self.send(req).await
    }
}

/// The state of a plan as the API shows it (`GET /v1/plans/{id}`).
pub(super) fn plan_state(status: &serde_json::Value) -> Option<PlanState> {
    status["plan"]["state"].as_str()?.parse().ok()
}

/// Waits for a plan to finish; returns its status, or fails with the step's error.
pub(super) async fn wait_plan(
    client: &Client,
    id: u64,
    wait: Duration,
) -> Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = client.plan(id).await?;
        match plan_state(&s) {
            Some(PlanState::Succeeded) => return Ok(s),
            Some(PlanState::Failed) => {
                let why = s["events"]
                    .as_array()
                    .and_then(|e| e.iter().rev().find(|e| e["kind"].get("failed").is_some()))
                    .map(describe_event)
                    .unwrap_or_else(|| "failed".into());
                bail!("plan {id} {why}");
            }
            st if tokio::time::Instant::now() >= deadline => bail!(
                "plan {id} is still `{}` after {}; follow it with `ferric plan status {id} --wait 5m`",
                st.map_or("unknown", PlanState::as_str),
                humantime::format_duration(wait)
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The `output` of a finished plan's events.
pub(super) fn plan_output(status: &serde_json::Value) -> Option<serde_json::Value> {
    status["events"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e["kind"].get("output").cloned())
}
