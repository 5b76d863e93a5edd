//! Nodes, bootstrap tokens, telemetry, health.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::nodes::{
    self as conductor, CreateToken, CreatedToken, NodeDetail, NodeTelemetry, NodeView,
};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
pub use ferric_api::nodes::CaHash;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(ca))
        .routes(routes!(create_token))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(telemetry))
}

#[utoipa::path(
    get,
    path = "/live",
    tag = "health",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain")),
    security(())
)]
async fn live() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "The store answers", body = String, content_type = "text/plain")),
    security(())
)]
async fn ready(State(s): State<Arc<Shared>>) -> Result<&'static str, ApiError> {
    s.store.nodes().await?;
    Ok("ready")
}

/// `GET /metrics`: the series the caller's token may see, Prometheus text format 0.0.4.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
async fn metrics(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let body = crate::conductor::metrics::render(&s, &c).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/ca",
    tag = "nodes",
    responses((status = 200, description = "The hash of the coordinator's CA certificate, which agents pin", body = CaHash))
)]
async fn ca(State(s): State<Arc<Shared>>) -> Json<CaHash> {
    Json(CaHash {
        ca_hash: s.pki.ca_hash(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "nodes",
    request_body = CreateToken,
    responses((status = 200, description = "A one-time bootstrap token for enrolling an agent", body = CreatedToken))
)]
async fn create_token(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateToken>,
) -> ApiResult<CreatedToken> {
    Ok(Json(conductor::create_token(&s, &c.project, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    responses((status = 200, body = Vec<NodeView>))
)]
async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<NodeView>> {
    Ok(Json(conductor::list(&s, &c).await?))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeDetail))
)]
async fn show(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<NodeDetail> {
    Ok(Json(conductor::show(&s, &c, &name).await?))
}

/// Query of `GET /v1/nodes/{name}/telemetry`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TelemetryQuery {
    /// Only samples received after this time (ms since the epoch).
    #[serde(default)]
    after_ms: i64,
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/telemetry",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name"), TelemetryQuery),
    responses((status = 200, body = NodeTelemetry))
)]
async fn telemetry(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> ApiResult<NodeTelemetry> {
    Ok(Json(conductor::telemetry(&s, &name, q.after_ms).await?))
}
