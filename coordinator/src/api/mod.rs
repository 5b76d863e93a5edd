//! The coordinator's HTTP API (JSON), used by the CLI. Handlers only
//! translate HTTP: they read the path, query and body, call the [conductor](crate::conductor)
//! and answer its result, or its error as a JSON problem document (RFC 9457) with a stable
//! `code`.
//!
//! Every route but the probes and the OpenAPI document needs an API token ([`auth`]; an image
//! blob takes an agent's client certificate instead, [`listen`]); what a
//! caller sees and changes is its project's (nodes and images belong to a project, guests and
//! plans to their node's).

mod access;
pub use access::WhoAmI;
pub(crate) mod auth;
mod bmcs;
mod dashboard;
mod guests;
mod images;
pub mod listen;
mod nodes;
mod plans;
mod problems;
mod watch;

use crate::Shared;
use crate::conductor::ConductorError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
pub use ferric_api::Problem;
use std::sync::Arc;

/// Why a request failed, as the API answers it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the conductor refused or could not do.
    #[error(transparent)]
    Conductor(#[from] ConductorError),
    /// An image upload or download that failed on its own terms.
    #[error("{detail}")]
    Image {
        /// HTTP status.
        status: StatusCode,
        /// Stable code.
        code: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl ApiError {
    /// Status, code and detail.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Conductor(e) => {
                let status = match e {
                    ConductorError::InvalidPlan(p) if p.too_large() => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    ConductorError::Invalid(_) | ConductorError::InvalidPlan(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    ConductorError::UnknownNode(_)
                    | ConductorError::UnknownPlan(_)
                    | ConductorError::UnknownGuest(_)
                    | ConductorError::UnknownImage(_)
                    | ConductorError::UnknownProject(_)
                    | ConductorError::UnknownToken(_) => StatusCode::NOT_FOUND,
                    ConductorError::Forbidden(_) => StatusCode::FORBIDDEN,
                    ConductorError::QuotaExceeded(_) | ConductorError::UserDataTooLarge(_) => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    ConductorError::NodeExists(_)
                    | ConductorError::GuestExists(_)
                    | ConductorError::Busy(_)
                    | ConductorError::WrongState(_)
                    | ConductorError::NoHost(_)
                    | ConductorError::ProjectExists(_)
                    | ConductorError::MacTaken(_) => StatusCode::CONFLICT,
                    ConductorError::Store(_) | ConductorError::Secrets(_) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                (status, e.code(), e.to_string())
            }
            ApiError::Image {
                status,
                code,
                detail,
            } => (*status, code, detail.clone()),
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let (status, code, detail) = self.parts();
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail,
            code: code.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Conductor(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(code = %problem.code, detail = %problem.detail, "API error");
        }
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = self.parts().1;
        let mut resp = (status, Json(problem)).into_response();
        resp.extensions_mut().insert(auth::ProblemCode(code));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The API's contract, generated from the handlers' annotations: every route of [`router`]
/// and nothing else (both come from the same `routes!` lists), served at `/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Ferric coordinator API",
        description = "Provisioning plans, nodes, bare metal, guests, images and access of a Ferric fleet."
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// What every operation shares: the bearer token (unless the route is public), the
/// `project` a fleet token acts in, and failures as problem documents.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{Parameter, ParameterIn};
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder, schema};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ID.SECRET")
                    .description(Some("An API token (`ferric api-token create`)."))
                    .build(),
            ),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let failure = ResponseBuilder::new()
            .description("The call failed: a problem document (RFC 9457) with a stable `code`")
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .insert("default".into(), failure.clone().into());
                let public = op.security.as_ref().is_some_and(|s| {
                    s.iter()
                        .all(|r| *r == utoipa::openapi::security::SecurityRequirement::default())
                });
                if !public {
                    let mut project = Parameter::new("project");
                    project.parameter_in = ParameterIn::Query;
                    project.required = Required::False;
                    project.description = Some(
                        "The project a fleet-wide token acts in (default `default`); a \
                         project's token acts in its own."
                            .into(),
                    );
                    project.schema = Some(schema::Object::with_type(schema::Type::String).into());
                    let params = op.parameters.get_or_insert_with(Vec::new);
                    let named = |p: &utoipa::openapi::RefOr<Parameter>| matches!(p, utoipa::openapi::RefOr::T(p) if p.name == "project");
                    if !params.iter().any(named) {
                        params.push(project.into());
                    }
                }
            }
        }
    }
}

/// The API's routes, not yet gated, and their OpenAPI document (from the same lists).
fn routes_and_doc() -> (Router<Arc<Shared>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    let (routes, mut doc) = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(nodes::routes())
        .merge(bmcs::routes())
        .merge(plans::routes())
        .merge(guests::routes())
        .merge(images::routes())
        .merge(access::routes())
        .merge(watch::routes())
        .split_for_parts();
    utoipa::Modify::modify(&Contract, &mut doc);
    (routes, doc)
}

/// The API's OpenAPI document, as `/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_doc().1
}

/// The API's routes and their OpenAPI document.
pub fn router_and_doc(shared: Arc<Shared>) -> (Router, utoipa::openapi::OpenApi) {
    let (routes, doc) = routes_and_doc();
    let served = Arc::new(doc.clone());
    let router = routes
        .route(
            OPENAPI_PATH,
            get(move || {
                let doc = served.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::gate,
        ))
        // The dashboard's page and assets are public (they hold no data; the page asks for a
        // token and sends it with each call), and not part of the API's contract.
        .merge(dashboard::routes())
        .layer(axum::middleware::map_response(problems::as_problem))
        .with_state(shared);
    (router, doc)
}

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    router_and_doc(shared).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_who_may_call_it() {
        let doc = openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let paths = json["paths"].as_object().unwrap();
        let mut ops = vec![];
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    continue;
                }
                let public = op["security"] == serde_json::json!([{}]);
                let m: axum::http::Method = method.to_uppercase().parse().unwrap();
                // The gate and the document agree on which routes are public.
                assert_eq!(
                    auth::needed(&m, path).is_none(),
                    public,
                    "{method} {path}: gate and document disagree"
                );
                assert!(
                    op["responses"]["default"]["content"]["application/problem+json"].is_object(),
                    "{method} {path} documents its failures"
                );
                ops.push(format!("{} {path}", m));
            }
        }
        for want in [
            "GET /live",
            "GET /metrics",
            "POST /v1/nodes",
            "GET /v1/nodes",
            "DELETE /v1/nodes/{name}",
            "PUT /v1/images/{name}",
            "GET /images/sha256/{hex}",
            "POST /v1/plans",
            "DELETE /v1/api-tokens/{id}",
            "POST /v1/nodes/{name}/revoke",
            "GET /v1/nodes/{name}/watch",
            "GET /v1/watch",
            "POST /v1/plans/{id}/cancel",
            "PATCH /v1/nodes/{name}/bmc",
            "PUT /v1/nodes/{name}/network",
            "GET /v1/nodes/{name}/network",
            "POST /v1/nodes/{name}/inventory",
        ] {
            assert!(ops.iter().any(|o| o == want), "{want} missing from {ops:?}");
        }
        assert_eq!(ops.len(), 47, "{ops:?}");
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn errors_are_problem_documents_with_stable_codes() {
        let cases = [
            (
                ConductorError::UnknownNode("n1".into()),
                404,
                "unknown_node",
                "node `n1` is not enrolled",
            ),
            (
                ConductorError::Invalid("field `nodes` is empty".into()),
                400,
                "invalid_request",
                "field `nodes` is empty",
            ),
            (
                ConductorError::GuestExists("g".into()),
                409,
                "guest_exists",
                "guest `g` already exists",
            ),
            (
                crate::store::StoreError::UnknownNode("n2".into()).into(),
                404,
                "unknown_node",
                "node `n2` is not enrolled",
            ),
        ];
        for (e, status, code, detail) in cases {
            let p = ApiError::from(e).problem();
            assert_eq!(
                (p.status, p.code.as_str(), p.detail.as_str()),
                (status, code, detail)
            );
            assert_eq!(p.kind, "about:blank");
        }
        let resp = ApiError::from(ConductorError::UnknownPlan(7)).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
    }
}
