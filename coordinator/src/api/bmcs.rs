//! Bare-metal nodes behind BMCs.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::bmcs::{
    self as conductor, BmcAction, BmcView, BootdevRequest, EnrollBmcNode, PowerRequest, SelRequest,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/nodes", post(enroll))
        .route("/v1/nodes/{name}", axum::routing::delete(delete))
        .route("/v1/nodes/{name}/bmc", get(show))
        .route("/v1/nodes/{name}/power", post(power))
        .route("/v1/nodes/{name}/bootdev", post(bootdev))
        .route("/v1/nodes/{name}/sensors", post(sensors))
        .route("/v1/nodes/{name}/sel", post(sel))
        .route("/v1/nodes/{name}/provision", post(provision))
}

async fn enroll(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<EnrollBmcNode>,
) -> Result<(StatusCode, Json<BmcView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(conductor::enroll(&s, &c.project, req).await?),
    ))
}

async fn delete(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcView> {
    Ok(Json(conductor::delete(&s, &name).await?))
}

async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcView> {
    Ok(Json(conductor::show(&s, &name).await?))
}

async fn power(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<PowerRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::power(&s, &name, req).await?))
}

async fn bootdev(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<BootdevRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::bootdev(&s, &name, req).await?))
}

async fn sensors(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcAction> {
    Ok(Json(conductor::sensors(&s, &name).await?))
}

async fn sel(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<SelRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::sel(&s, &name, req).await?))
}

async fn provision(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<crate::conductor::lifecycle::ProvisionRequest>,
) -> ApiResult<crate::conductor::lifecycle::LifecycleView> {
    Ok(Json(
        crate::conductor::lifecycle::provision(&s, &name, req).await?,
    ))
}
