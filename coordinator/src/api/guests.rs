//! Guests and hypervisor hosts.

use super::ApiResult;
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::guests::{self as conductor, CreateGuest, GuestAction, GuestView};
use crate::conductor::placement::HostView;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(hosts))
        .routes(routes!(create, list))
        .routes(routes!(show, delete))
        .routes(routes!(start))
        .routes(routes!(stop))
}

#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "guests",
    responses((status = 200, body = Vec<HostView>))
)]
async fn hosts(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<HostView>> {
    Ok(Json(conductor::hosts(&s, |p| c.sees(p)).await?))
}

#[utoipa::path(
    post,
    path = "/v1/guests",
    tag = "guests",
    request_body = CreateGuest,
    responses((status = 200, body = GuestAction))
)]
async fn create(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateGuest>,
) -> ApiResult<GuestAction> {
    Ok(Json(conductor::create(&s, &c.project, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/guests",
    tag = "guests",
    responses((status = 200, body = Vec<GuestView>))
)]
async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<GuestView>> {
    Ok(Json(conductor::list(&s, &c).await?))
}

#[utoipa::path(
    get,
    path = "/v1/guests/{name}",
    tag = "guests",
    params(("name" = String, Path, description = "The guest's name")),
    responses((status = 200, body = GuestView))
)]
async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestView> {
    Ok(Json(conductor::show(&s, &name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/guests/{name}/start",
    tag = "guests",
    params(("name" = String, Path, description = "The guest's name")),
    responses((status = 200, body = GuestAction))
)]
async fn start(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::start(&s, &name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/guests/{name}/stop",
    tag = "guests",
    params(("name" = String, Path, description = "The guest's name")),
    responses((status = 200, body = GuestAction))
)]
async fn stop(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::stop(&s, &name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/guests/{name}",
    tag = "guests",
    params(("name" = String, Path, description = "The guest's name")),
    responses((status = 200, body = GuestAction))
)]
async fn delete(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::delete(&s, &name).await?))
}
