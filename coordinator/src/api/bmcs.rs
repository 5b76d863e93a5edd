//! Bare-metal nodes behind BMCs.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::bmcs::{
    self as conductor, BmcAction, BmcView, BootSettings, BootdevRequest, EnrollBmcNode,
    PowerRequest, SelRequest,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ferric_api::network::NodeNetwork;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(enroll))
        .routes(routes!(delete))
        .routes(routes!(show, set_boot))
        .routes(routes!(network, set_network))
        .routes(routes!(power))
        .routes(routes!(bootdev))
        .routes(routes!(sensors))
        .routes(routes!(sel))
        .routes(routes!(inventory))
        .routes(routes!(console))
        .routes(routes!(provision))
}

#[utoipa::path(
    post,
    path = "/v1/nodes",
    tag = "bare-metal",
    request_body = EnrollBmcNode,
    responses((status = 201, description = "Enrolled by its BMC", body = BmcView))
)]
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

#[utoipa::path(
    delete,
    path = "/v1/nodes/{name}",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, description = "The node as it was, and what went with it", body = crate::conductor::nodes::DeletedNode))
)]
async fn delete(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<crate::conductor::nodes::DeletedNode> {
    Ok(Json(crate::conductor::nodes::delete(&s, &name).await?))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/bmc",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = BmcView))
)]
async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcView> {
    Ok(Json(conductor::show(&s, &name).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/nodes/{name}/bmc",
    tag = "bare-metal",
    description = "How the node boots: its firmware's mode (which every boot device asked of its BMC says, and an inspection confirms) and the iPXE its UEFI firmware network-boots. Absent fields stay.",
    params(("name" = String, Path, description = "The node's name")),
    request_body = BootSettings,
    responses((status = 200, description = "The BMC as it is now", body = BmcView))
)]
async fn set_boot(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<BootSettings>,
) -> ApiResult<BmcView> {
    Ok(Json(conductor::set_boot(&s, &name, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/network",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, description = "Its network (empty: none set)", body = NodeNetwork))
)]
async fn network(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<NodeNetwork> {
    Ok(Json(conductor::network(&s.store, &name).await?))
}

#[utoipa::path(
    put,
    path = "/v1/nodes/{name}/network",
    tag = "bare-metal",
    description = "The network a deploy's config drive gives the node's OS: ports (its NICs, by MAC — enrolled or seen by inspection) with addresses, VLANs and bond membership; bonds; routes; DNS. Checked whole; replaces what was set.",
    params(("name" = String, Path, description = "The node's name")),
    request_body = NodeNetwork,
    responses((status = 200, description = "As stored (MACs in canonical spelling)", body = NodeNetwork))
)]
async fn set_network(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(net): Json<NodeNetwork>,
) -> ApiResult<NodeNetwork> {
    Ok(Json(conductor::set_network(&s, &name, net).await?))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/power",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    request_body = PowerRequest,
    responses((status = 200, body = BmcAction))
)]
async fn power(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<PowerRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::power(&s, &name, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/bootdev",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    request_body = BootdevRequest,
    responses((status = 200, body = BmcAction))
)]
async fn bootdev(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<BootdevRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::bootdev(&s, &name, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/sensors",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = BmcAction))
)]
async fn sensors(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcAction> {
    Ok(Json(conductor::sensors(&s, &name).await?))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/sel",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    request_body = SelRequest,
    responses((status = 200, body = BmcAction))
)]
async fn sel(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<SelRequest>,
) -> ApiResult<BmcAction> {
    Ok(Json(conductor::sel(&s, &name, req).await?))
}

/// What a Redfish BMC knows of its machine without booting it (processors, memory, drives,
/// NICs with their MACs, the system's identity): a plan whose step output is the inventory.
#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/inventory",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = BmcAction))
)]
async fn inventory(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<BmcAction> {
    Ok(Json(conductor::inventory(&s, &name).await?))
}

/// Query of `GET /v1/nodes/{name}/console`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ConsoleQuery {
    /// Only the lines after this one (`seq`); all held when absent.
    after: Option<u64>,
    /// At most this many, the newest (default 100, at most 1000).
    limit: Option<usize>,
}

/// The node's serial console as its driving agent tails the log named at enrollment
/// (`console_log`): the newest lines the coordinator holds (1000 at most per node).
#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/console",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name"), ConsoleQuery),
    responses((status = 200, body = crate::hub::ConsoleTail))
)]
async fn console(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ConsoleQuery>,
) -> ApiResult<crate::hub::ConsoleTail> {
    conductor::find(&s.store, &name).await?;
    let limit = q.limit.unwrap_or(100).min(crate::hub::CONSOLE_RING);
    Ok(Json(s.hub.consoles.since(&name, q.after, limit)))
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/provision",
    tag = "bare-metal",
    params(("name" = String, Path, description = "The node's name")),
    request_body = crate::conductor::lifecycle::ProvisionRequest,
    responses((status = 200, body = crate::conductor::lifecycle::LifecycleView))
)]
async fn provision(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(req): Json<crate::conductor::lifecycle::ProvisionRequest>,
) -> ApiResult<crate::conductor::lifecycle::LifecycleView> {
    Ok(Json(
        crate::conductor::lifecycle::provision(&s.env(), &name, req).await?,
    ))
}
