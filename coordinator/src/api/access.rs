//! API tokens, projects, the audit log, revoking a node's certificates, and who the caller is.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::{
    self as conductor, Caller, CreateApiToken, CreateProject, CreatedApiToken, Revoked,
};
use crate::store::{ApiTokenRow, AuditRow, ProjectRow};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/api-tokens", post(create_token).get(list_tokens))
        .route("/v1/api-tokens/{id}", delete(revoke_token))
        .route("/v1/projects", post(create_project).get(list_projects))
        .route("/v1/audit", get(audit))
        .route("/v1/nodes/{name}/revoke", post(revoke_node))
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The token's id.
    pub token: String,
    /// Its role.
    pub role: crate::model::ApiRole,
    /// Its project; absent: the whole fleet.
    pub scope: Option<String>,
    /// The project this call acted in.
    pub project: String,
}

async fn whoami(Extension(c): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: c.token,
        role: c.role,
        scope: c.scope,
        project: c.project,
    })
}

async fn create_token(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateApiToken>,
) -> Result<(StatusCode, Json<CreatedApiToken>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(conductor::create_api_token(&s, &c, req).await?),
    ))
}

async fn list_tokens(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<ApiTokenRow>> {
    Ok(Json(conductor::list_api_tokens(&s, &c).await?))
}

async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<ApiTokenRow> {
    Ok(Json(conductor::revoke_api_token(&s, &c, &id).await?))
}

async fn create_project(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateProject>,
) -> Result<(StatusCode, Json<ProjectRow>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(conductor::create_project(&s, &c, req).await?),
    ))
}

async fn list_projects(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<ProjectRow>> {
    Ok(Json(conductor::list_projects(&s, &c).await?))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    /// At most this many, newest first (default 100).
    limit: Option<i64>,
}

async fn audit(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<AuditRow>> {
    Ok(Json(
        conductor::audit_log(&s, &c, q.limit.unwrap_or(100)).await?,
    ))
}

async fn revoke_node(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Revoked> {
    Ok(Json(conductor::revoke_node(&s, &c, &name).await?))
}
