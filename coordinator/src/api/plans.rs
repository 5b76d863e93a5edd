//! Plans.

use super::ApiResult;
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::plans::{self as conductor, Cancelled, CreatePlans, CreatedPlan, PlanStatus};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use ferric_api::plans::PlanView;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "plans",
    request_body = CreatePlans,
    responses((status = 200, body = Vec<CreatedPlan>))
)]
async fn create(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreatePlans>,
) -> ApiResult<Vec<CreatedPlan>> {
    Ok(Json(conductor::create(&s, &c, req).await?))
}

/// Query of `GET /v1/plans`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PlansQuery {
    /// Only this node's plans.
    node: Option<String>,
    /// At most this many (default 50).
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    params(PlansQuery),
    responses((status = 200, body = Vec<PlanView>))
)]
async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Query(q): Query<PlansQuery>,
) -> ApiResult<Vec<PlanView>> {
    Ok(Json(
        conductor::list(&s, &c, q.node.as_deref(), q.limit.unwrap_or(50)).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/plans/{id}",
    tag = "plans",
    params(("id" = u64, Path, description = "The plan's id")),
    responses((status = 200, body = PlanStatus))
)]
async fn show(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> ApiResult<PlanStatus> {
    Ok(Json(conductor::status(&s, &c, id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/plans/{id}/cancel",
    tag = "plans",
    params(("id" = u64, Path, description = "The plan's id")),
    responses(
        (status = 202, description = "The cancel is under way (or done: see `state`)", body = Cancelled),
        (status = 409, description = "The plan has ended")
    )
)]
async fn cancel(
    State(s): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> Result<(axum::http::StatusCode, Json<Cancelled>), super::ApiError> {
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(crate::conductor::reports::cancel(&s.env(), id).await?),
    ))
}
