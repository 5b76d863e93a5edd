//! Failures that did not come from a handler — axum's own rejections of a body, path or query
//! it cannot read, an unknown route, a method a route does not take — answered as problem
//! documents like every other failure, so that a client reads one shape.

use super::Problem;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

/// The longest rejection text kept as the detail.
const DETAIL_MAX: usize = 1024;

/// The stable code of a failure by its status, for the ones no handler named.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

/// A failure not yet a problem document becomes one (its text, if any, the detail).
pub(super) async fn as_problem(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match http_body_util::Limited::new(body, DETAIL_MAX * 4)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let mut detail: String = text.chars().take(DETAIL_MAX).collect();
    if detail.is_empty() {
        detail = status.canonical_reason().unwrap_or("error").to_owned();
    }
    let code = code(status);
    let problem = Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail,
        code: code.into(),
    };
    let mut out = (status, axum::Json(problem)).into_response();
    // Keep what the original said besides its body (Allow, WWW-Authenticate, …).
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    out.extensions_mut().insert(super::auth::ProblemCode(code));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rejection_becomes_a_problem_document() {
        let resp = (StatusCode::UNPROCESSABLE_ENTITY, "missing field `nodes`").into_response();
        let out = as_problem(resp).await;
        assert_eq!(out.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            out.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let body = out.into_body().collect().await.unwrap().to_bytes();
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (p.status, p.code.as_str(), p.detail.as_str()),
            (422, "invalid_request", "missing field `nodes`")
        );
        let ok = as_problem((StatusCode::OK, "fine").into_response()).await;
        assert_eq!(
            ok.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/plain; charset=utf-8"
        );
    }
}
