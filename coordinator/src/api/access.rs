//! API tokens, projects, the audit log, revoking a node's certificates, and who the caller is.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::{
    self as conductor, Caller, CreateApiToken, CreateProject, CreatedApiToken, Revoked,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
pub use ferric_api::access::WhoAmI;
use ferric_api::access::{ApiToken, AuditEntry, Project};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(create_project, list_projects))
        .routes(routes!(audit))
        .routes(routes!(revoke_node))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "access",
    responses((status = 200, body = WhoAmI))
)]
async fn whoami(Extension(c): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: c.token,
        role: c.role,
        scope: c.scope,
        project: c.project,
    })
}

#[utoipa::path(
    post,
    path = "/v1/api-tokens",
    tag = "access",
    request_body = CreateApiToken,
    responses((status = 201, description = "The token; its secret is shown only here", body = CreatedApiToken))
)]
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

#[utoipa::path(
    get,
    path = "/v1/api-tokens",
    tag = "access",
    responses((status = 200, body = Vec<ApiToken>))
)]
async fn list_tokens(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<ApiToken>> {
    Ok(Json(conductor::list_api_tokens(&s, &c).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/api-tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 200, body = ApiToken))
)]
async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<ApiToken> {
    Ok(Json(conductor::revoke_api_token(&s, &c, &id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/projects",
    tag = "access",
    request_body = CreateProject,
    responses((status = 201, body = Project))
)]
async fn create_project(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(conductor::create_project(&s, &c, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/projects",
    tag = "access",
    responses((status = 200, body = Vec<Project>))
)]
async fn list_projects(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<Project>> {
    Ok(Json(conductor::list_projects(&s, &c).await?))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// At most this many, newest first (default 100).
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "access",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>))
)]
async fn audit(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<AuditEntry>> {
    Ok(Json(
        conductor::audit_log(&s, &c, q.limit.unwrap_or(100)).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/revoke",
    tag = "access",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = Revoked))
)]
async fn revoke_node(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Revoked> {
    Ok(Json(conductor::revoke_node(&s, &c, &name).await?))
}
