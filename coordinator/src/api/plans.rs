//! Plans.

use super::ApiResult;
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::plans::{self as conductor, CreatePlans, CreatedPlan, PlanStatus};
use crate::store::PlanRow;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/plans", post(create).get(list))
        .route("/v1/plans/{id}", get(show))
}

async fn create(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreatePlans>,
) -> ApiResult<Vec<CreatedPlan>> {
    Ok(Json(conductor::create(&s, &c, req).await?))
}

/// Query of `GET /v1/plans`.
#[derive(Debug, Deserialize)]
struct PlansQuery {
    /// Only this node's plans.
    node: Option<String>,
    /// At most this many (default 50).
    limit: Option<i64>,
}

async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<PlansQuery>,
) -> ApiResult<Vec<PlanRow>> {
    Ok(Json(
        conductor::list(&s, &c, q.node.as_deref(), q.limit.unwrap_or(50)).await?,
    ))
}

async fn show(State(s): State<Arc<Shared>>, Path(id): Path<u64>) -> ApiResult<PlanStatus> {
    Ok(Json(conductor::status(&s, id).await?))
}
