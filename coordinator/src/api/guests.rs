//! Guests and hypervisor hosts.

use super::ApiResult;
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::guests::{self as conductor, CreateGuest, GuestAction, GuestView};
use crate::conductor::placement::HostView;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/hosts", get(hosts))
        .route("/v1/guests", post(create).get(list))
        .route("/v1/guests/{name}", get(show).delete(delete))
        .route("/v1/guests/{name}/start", post(start))
        .route("/v1/guests/{name}/stop", post(stop))
}

async fn hosts(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<HostView>> {
    Ok(Json(conductor::hosts(&s, |p| c.sees(p)).await?))
}

async fn create(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateGuest>,
) -> ApiResult<GuestAction> {
    Ok(Json(conductor::create(&s, &c.project, req).await?))
}

async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<GuestView>> {
    Ok(Json(conductor::list(&s, &c).await?))
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestView> {
    Ok(Json(conductor::show(&s, &name).await?))
}

async fn start(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::start(&s, &name).await?))
}

async fn stop(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::stop(&s, &name).await?))
}

async fn delete(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<GuestAction> {
    Ok(Json(conductor::delete(&s, &name).await?))
}
