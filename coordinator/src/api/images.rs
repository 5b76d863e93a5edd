//! Images: upload (streamed into the conductor's [`Upload`], which checks, hashes, inspects
//! and stores it), list, show, delete, and the content served with `Range` requests.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::images::{self as conductor, ImageView, Upload, UploadError, UploadRequest};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Query of `PUT /v1/images/{name}`.
#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Declared format; content that differs is refused.
    #[serde(default)]
    pub format: Option<String>,
    /// Expected `sha256:HEX` or `sha512:HEX` of the file.
    #[serde(default)]
    pub checksum: Option<String>,
    /// The project it goes to (a fleet token's choice; see the API's authentication).
    #[serde(default)]
    pub project: Option<String>,
}

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, upload, delete_image))
        .routes(routes!(serve_blob))
}

#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "images",
    responses((status = 200, body = Vec<ImageView>))
)]
async fn list(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Vec<ImageView>> {
    Ok(Json(conductor::list(&s, &c).await?))
}

#[utoipa::path(
    get,
    path = "/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "The image's name")),
    responses((status = 200, body = ImageView))
)]
async fn show(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<ImageView> {
    Ok(Json(conductor::show(&s, &name).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "The image's name")),
    responses((status = 200, description = "The image as it was", body = ImageView))
)]
async fn delete_image(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<ImageView> {
    Ok(Json(conductor::delete(&s, &name).await?))
}

fn err(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::Image {
        status,
        code,
        detail: detail.into(),
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let (status, code) = match e {
            UploadError::Conductor(c) => return ApiError::Conductor(c),
            UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
            UploadError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            UploadError::Exists(_) => (StatusCode::CONFLICT, "image_exists"),
            UploadError::Storage { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            UploadError::ChecksumMismatch(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "checksum_mismatch")
            }
            UploadError::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_refused"),
            UploadError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        err(status, code, e.to_string())
    }
}

#[utoipa::path(
    put,
    path = "/v1/images/{name}",
    tag = "images",
    params(("name" = String, Path, description = "The image's name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The image file"),
    responses((status = 201, description = "Stored, inspected and checksummed", body = ImageView))
)]
async fn upload(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    mut body: Body,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    use http_body_util::BodyExt;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let request = UploadRequest {
        name,
        project: caller.project.clone(),
        length,
        format: q.format,
        checksum: q.checksum,
    };
    let mut upload = match Upload::check(&s, request).await {
        Ok(u) => u,
        Err(e) => {
            // Read (a bounded part of) what the client is sending before answering, or it
            // sees a broken pipe instead of the reason.
            drain(body, EARLY_DRAIN).await;
            return Err(e.into());
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                "upload_broken",
                format!(
                    "the upload broke off after {} bytes: {e}",
                    upload.received()
                ),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            // Refused past a limit: the partial file goes with the upload; the rest is not
            // read.
            upload.write(&data).await?;
        }
    }
    let view = upload.finish(&s).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// How much of a refused upload is read before the answer (beyond it, the connection closes).
const EARLY_DRAIN: u64 = 64 << 20;

async fn drain(mut body: Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    while seen < limit {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

/// Serves a blob with `Range` support. Its content never changes (the path is its sha256), so
/// the ETag is the digest; an `If-Range` naming anything else gets the whole file, as HTTP says.
#[utoipa::path(
    get,
    path = "/images/sha256/{hex}",
    tag = "images",
    params(("hex" = String, Path, description = "The blob's SHA-256, lowercase hex")),
    description = "Read with an API token of a project that holds an image of this content, or with an agent's client certificate (its node's project must hold one): the credential agents fetch images with.",
    responses((status = 200, description = "The blob (also 206 for a `Range`)", body = Vec<u8>, content_type = "application/octet-stream"), (status = 206, description = "The range asked", body = Vec<u8>, content_type = "application/octet-stream"))
)]
pub(super) async fn serve_blob(
    State(s): State<Arc<Shared>>,
    Path(hex): Path<String>,
    req: Request,
) -> Response {
    match crate::blobs::serve(&s.images, &hex, req).await {
        Ok(resp) => resp,
        Err(e @ crate::blobs::BlobError::Unknown) => {
            err(StatusCode::NOT_FOUND, "unknown_image", e.to_string()).into_response()
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}
