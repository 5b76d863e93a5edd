//! The coordinator's HTTP API (JSON), used by the CLI. Handlers only
//! translate HTTP: they read the path, query and body, call the [conductor](crate::conductor)
//! and answer its result, or its error as a JSON problem document (RFC 9457) with a stable
//! `code`.
//!
//! Every route but the probes and the image blobs needs an API token ([`auth`]); what a
//! caller sees and changes is its project's (nodes and images belong to a project, guests and
//! plans to their node's).

mod access;
pub use access::WhoAmI;
pub(crate) mod auth;
mod bmcs;
mod guests;
mod images;
mod nodes;
mod plans;

use crate::Shared;
use crate::conductor::ConductorError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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

/// A problem document (RFC 9457): `type`, `title`, `status`, `detail`, and Ferric's stable
/// `code`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Problem type URI; `about:blank` (the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, naming the object.
    pub detail: String,
    /// Stable, machine-readable cause (`unknown_node`, `invalid_plan`, …).
    pub code: String,
}

impl ApiError {
    /// Status, code and detail.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Conductor(e) => {
                let status = match e {
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
                    ConductorError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    ConductorError::NodeExists(_)
                    | ConductorError::GuestExists(_)
                    | ConductorError::Busy(_)
                    | ConductorError::WrongState(_)
                    | ConductorError::NoHost(_)
                    | ConductorError::ProjectExists(_) => StatusCode::CONFLICT,
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

/// Serves an image blob (with `Range`), for the boot services' HTTP server too.
pub(crate) async fn serve_blob(
    s: Arc<Shared>,
    hex: String,
    req: axum::extract::Request,
) -> Response {
    images::serve_blob(axum::extract::State(s), axum::extract::Path(hex), req).await
}

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(nodes::ready))
        .route("/metrics", get(nodes::metrics))
        .merge(nodes::routes())
        .merge(bmcs::routes())
        .merge(plans::routes())
        .merge(guests::routes())
        .merge(images::routes())
        .merge(access::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::gate,
        ))
        .with_state(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

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
