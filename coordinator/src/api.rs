//! The coordinator's HTTP API (JSON), used by the CLI and, later, the dashboard.
//!
//! It listens on loopback by default; user authentication arrives with the API issue.

use crate::Shared;
use crate::hub::TelemetryRecord;
use crate::store::{EventRow, NodeRow, PlanRow, StoreError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferric_proto::plan::{Plan, PlanStep, Step};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Default step timeout when a plan file names none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest bootstrap token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A step as written in a plan file: the step, and optionally its key and timeout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSpec {
    /// The step (`ensure_bridge: {name: br0}` and so on).
    #[serde(flatten)]
    pub step: Step,
    /// Idempotency key; `<index>-<kind>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Deadline such as `30s` or `5m`; 5 minutes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A plan file (YAML or JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// Steps in order.
    pub steps: Vec<StepSpec>,
}

impl PlanFile {
    /// Turns the file into validated plan steps.
    pub fn to_steps(&self) -> Result<Vec<PlanStep>, String> {
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let timeout = match &s.timeout {
                    None => DEFAULT_STEP_TIMEOUT,
                    Some(t) => humantime::parse_duration(t)
                        .map_err(|e| format!("step {i}: field `timeout` `{t}`: {e}"))?,
                };
                Ok(PlanStep {
                    key: s
                        .key
                        .clone()
                        .unwrap_or_else(|| format!("{i}-{}", s.step.kind())),
                    timeout_secs: u32::try_from(timeout.as_secs().max(1))
                        .map_err(|_| format!("step {i}: field `timeout` is too long"))?,
                    step: s.step.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Plan {
            id: 0,
            node: String::new(),
            steps: steps.clone(),
        }
        .validate()
        .map_err(|e| e.to_string())?;
        Ok(steps)
    }
}

/// Body of `POST /v1/plans`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlans {
    /// Nodes to receive the plan (one plan each).
    pub nodes: Vec<String>,
    /// The plan.
    pub plan: PlanFile,
}

/// One created plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedPlan {
    /// Plan id.
    pub id: u64,
    /// Node.
    pub node: String,
    /// Whether it was handed to a connected agent at once.
    pub pushed: bool,
}

/// A node with its link state.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Enrolled at, ms since the epoch.
    pub enrolled_at_ms: i64,
    /// When the agent last sent anything (a message, a telemetry sample), ms since the epoch:
    /// live while it is connected, from the store once it is not.
    pub last_seen_ms: Option<i64>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Connected now.
    pub connected: bool,
    /// Bare-metal nodes: power state last read (`on`/`off`).
    #[serde(default)]
    pub power: Option<String>,
    /// Bare-metal nodes: what changed behind Ferric's back.
    #[serde(default)]
    pub flag: Option<String>,
}

/// `GET /v1/nodes/{name}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeDetail {
    /// The node.
    pub node: NodeView,
    /// Recent plans, newest first.
    pub plans: Vec<serde_json::Value>,
    /// Newest telemetry sample.
    pub telemetry: Option<serde_json::Value>,
    /// Bare-metal nodes: the BMC.
    #[serde(default)]
    pub bmc: Option<crate::bmcs::BmcView>,
}

/// `GET /v1/plans/{id}`.
#[derive(Debug, Serialize)]
pub struct PlanStatus {
    /// The plan.
    pub plan: PlanRow,
    /// Its events in order.
    pub events: Vec<EventRow>,
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

/// A created bootstrap token. The secret is shown once and only its hash is stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `ID.SECRET`.
    pub token: String,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
    /// CA fingerprint to pin.
    pub ca_hash: String,
}

/// An API error: status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self(status, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownNode(n) => {
                ApiError(StatusCode::NOT_FOUND, format!("node `{n}` is not enrolled"))
            }
            other => {
                tracing::error!(error = %other, "store error in API");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("store error: {other}"),
                )
            }
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/ca", get(ca))
        .route("/v1/tokens", post(create_token))
        .route("/v1/nodes", get(list_nodes).post(crate::bmcs::enroll))
        .route(
            "/v1/nodes/{name}",
            get(show_node).delete(crate::bmcs::delete),
        )
        .route("/v1/nodes/{name}/bmc", get(crate::bmcs::show))
        .route("/v1/nodes/{name}/power", post(crate::bmcs::power))
        .route("/v1/nodes/{name}/bootdev", post(crate::bmcs::bootdev))
        .route("/v1/nodes/{name}/sensors", post(crate::bmcs::sensors))
        .route("/v1/nodes/{name}/sel", post(crate::bmcs::sel))
        .route("/v1/nodes/{name}/telemetry", get(telemetry))
        .route("/v1/plans", post(create_plans).get(list_plans))
        .route("/v1/plans/{id}", get(show_plan))
        .merge(crate::guests::routes())
        .merge(crate::images::routes())
        .with_state(shared)
}

async fn ready(State(s): State<Arc<Shared>>) -> Result<&'static str, ApiError> {
    s.store.nodes().await?;
    Ok("ready")
}

async fn metrics(State(s): State<Arc<Shared>>) -> Result<String, ApiError> {
    let nodes = s.store.nodes().await?.len();
    Ok(format!(
        "# HELP ferric_agents_connected Agents with a live session.\n# TYPE ferric_agents_connected gauge\nferric_agents_connected {}\n\
         # HELP ferric_nodes_enrolled Enrolled nodes.\n# TYPE ferric_nodes_enrolled gauge\nferric_nodes_enrolled {}\n",
        s.hub.connected(),
        nodes
    ))
}

async fn ca(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ca_hash": s.pki.ca_hash() }))
}

async fn create_token(
    State(s): State<Arc<Shared>>,
    Json(req): Json<CreateToken>,
) -> ApiResult<CreatedToken> {
    let ttl = Duration::from_secs(req.ttl_secs);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "ttl must be between 1s and {}",
                humantime::format_duration(MAX_TOKEN_TTL)
            ),
        ));
    }
    let (id, secret) = {
        let mut rng = rand::rng();
        let id: String = (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let mut secret = [0u8; 16];
        rng.fill(&mut secret);
        (id, hex::encode(secret))
    };
    let now = crate::now_ms();
    let expires = now + ttl.as_millis() as i64;
    s.store
        .create_token(&id, &crate::link::token_secret_hash(&secret), now, expires)
        .await?;
    tracing::info!(token_id = %id, expires_at_ms = expires, "bootstrap token created");
    Ok(Json(CreatedToken {
        token: format!("{id}.{secret}"),
        expires_at_ms: expires,
        ca_hash: s.pki.ca_hash(),
    }))
}

fn view(s: &Shared, n: NodeRow, bmc: Option<&crate::store::BmcRow>) -> NodeView {
    let heard = s.hub.last_heard(&n.name);
    NodeView {
        connected: s.hub.connected_since(&n.name).is_some(),
        power: bmc.and_then(crate::bmcs::power_shown),
        flag: bmc.and_then(|b| b.flag.clone()),
        name: n.name,
        role: n.role,
        enrolled_at_ms: n.enrolled_at_ms,
        last_seen_ms: heard.or(n.last_seen_ms),
        capabilities: n.capabilities,
    }
}

async fn list_nodes(State(s): State<Arc<Shared>>) -> ApiResult<Vec<NodeView>> {
    let nodes = s.store.nodes().await?;
    let bmcs: std::collections::HashMap<String, crate::store::BmcRow> = s
        .store
        .bmcs(None)
        .await?
        .into_iter()
        .map(|b| (b.node.clone(), b))
        .collect();
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| {
                let b = bmcs.get(&n.name);
                view(&s, n, b)
            })
            .collect(),
    ))
}

async fn show_node(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<NodeDetail> {
    let Some(n) = s.store.node(&name).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("node `{name}` is not enrolled"),
        ));
    };
    let plans = s.store.plans(Some(&name), 10).await?;
    let bmc = s.store.bmc(&name).await?;
    Ok(Json(NodeDetail {
        node: view(&s, n, bmc.as_ref()),
        bmc: bmc.map(|b| crate::bmcs::view(&s, b)),
        plans: plans
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
        telemetry: s
            .hub
            .latest_telemetry(&name)
            .and_then(|t| serde_json::to_value(t).ok()),
    }))
}

/// Query of `GET /v1/nodes/{name}/telemetry`.
#[derive(Debug, Deserialize)]
pub struct TelemetryQuery {
    /// Only samples received after this time (ms since the epoch).
    #[serde(default)]
    pub after_ms: i64,
}

/// `GET /v1/nodes/{name}/telemetry`: an agent's host samples, or a bare-metal node's BMC reads.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum NodeTelemetry {
    /// Samples of an agent's host (`sample`).
    Host(Vec<TelemetryRecord>),
    /// Reads of a bare-metal node's BMC (`bmc`).
    Bmc(Vec<crate::hub::BmcRecord>),
}

async fn telemetry(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> ApiResult<NodeTelemetry> {
    let Some(node) = s.store.node(&name).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("node `{name}` is not enrolled"),
        ));
    };
    Ok(Json(if node.role == "baremetal" {
        NodeTelemetry::Bmc(s.hub.bmc_since(&name, q.after_ms))
    } else {
        NodeTelemetry::Host(s.hub.telemetry_since(&name, q.after_ms))
    }))
}

async fn create_plans(
    State(s): State<Arc<Shared>>,
    Json(req): Json<CreatePlans>,
) -> ApiResult<Vec<CreatedPlan>> {
    if req.nodes.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "field `nodes` is empty: name at least one node".into(),
        ));
    }
    let steps = req
        .plan
        .to_steps()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    // All or nothing: every node must exist before any plan is stored.
    for n in &req.nodes {
        if s.store.node(n).await?.is_none() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("node `{n}` is not enrolled"),
            ));
        }
    }
    let mut out = Vec::with_capacity(req.nodes.len());
    for n in &req.nodes {
        let plan = s.store.create_plan(n, &steps, crate::now_us()).await?;
        let id = plan.id;
        let pushed = s.hub.push(plan);
        out.push(CreatedPlan {
            id,
            node: n.clone(),
            pushed,
        });
    }
    Ok(Json(out))
}

/// Query of `GET /v1/plans`.
#[derive(Debug, Deserialize)]
pub struct PlansQuery {
    /// Only this node's plans.
    pub node: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

async fn list_plans(
    State(s): State<Arc<Shared>>,
    Query(q): Query<PlansQuery>,
) -> ApiResult<Vec<PlanRow>> {
    Ok(Json(
        s.store
            .plans(q.node.as_deref(), q.limit.unwrap_or(50).clamp(1, 10_000))
            .await?,
    ))
}

async fn show_plan(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> ApiResult<PlanStatus> {
    let Some(plan) = s.store.plan(id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("plan {id} does not exist"),
        ));
    };
    let events = s.store.events(id).await?;
    Ok(Json(PlanStatus { plan, events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_plan_example_is_a_valid_plan() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("README has a yaml block");
        let f: PlanFile = serde_yaml_ng::from_str(block).expect("README plan parses");
        let steps = f.to_steps().expect("README plan validates");
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[2].timeout_secs, 60);
    }

    #[test]
    fn plan_file_parses_yaml_and_names_bad_fields() {
        let yaml = "steps:\n  - ensure_bridge: { name: br0 }\n    timeout: 30s\n  - ensure_volume: { pool: default, name: v1, size_bytes: 1048576 }\n";
        let f: PlanFile = serde_yaml_ng::from_str(yaml).unwrap();
        let steps = f.to_steps().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].timeout_secs, 30);
        assert_eq!(steps[1].key, "1-ensure_volume");
        assert_eq!(steps[1].timeout_secs, 300);

        let bad: PlanFile = serde_yaml_ng::from_str(
            "steps:\n  - ensure_guest: { name: g, vcpus: 0, memory_mib: 5 }\n",
        )
        .unwrap();
        assert_eq!(
            bad.to_steps().unwrap_err(),
            "step 0 (ensure_guest): field `vcpus` must be at least 1"
        );
        let typo =
            serde_yaml_ng::from_str::<PlanFile>("steps:\n  - ensure_bridge: { nmae: br0 }\n");
        assert!(typo.unwrap_err().to_string().contains("nmae"));
    }
}
