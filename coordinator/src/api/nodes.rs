//! Nodes, bootstrap tokens, telemetry, health.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::nodes::{
    self as conductor, CreateToken, CreatedToken, NodeDetail, NodeTelemetry, NodeView,
};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/ca", get(ca))
        .route("/v1/tokens", post(create_token))
        .route("/v1/nodes", get(list))
        .route("/v1/nodes/{name}", get(show))
        .route("/v1/nodes/{name}/telemetry", get(telemetry))
}

pub(super) async fn ready(State(s): State<Arc<Shared>>) -> Result<&'static str, ApiError> {
    s.store.nodes().await?;
    Ok("ready")
}

pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Result<String, ApiError> {
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
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateToken>,
) -> ApiResult<CreatedToken> {
    Ok(Json(conductor::create_token(&s, &c.project, req).await?))
}

async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<NodeView>> {
    Ok(Json(conductor::list(&s, &c).await?))
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<NodeDetail> {
    Ok(Json(conductor::show(&s, &name).await?))
}

/// Query of `GET /v1/nodes/{name}/telemetry`.
#[derive(Debug, Deserialize)]
struct TelemetryQuery {
    /// Only samples received after this time (ms since the epoch).
    #[serde(default)]
    after_ms: i64,
}

async fn telemetry(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> ApiResult<NodeTelemetry> {
    Ok(Json(conductor::telemetry(&s, &name, q.after_ms).await?))
}
