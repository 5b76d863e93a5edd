//! Images: upload (inspected as it lands), list, show, delete, and the content served with
//! `Range` requests.

use super::{ApiError, ApiResult};
use crate::Shared;
use crate::conductor::access::Caller;
use crate::conductor::images::{self as conductor, ImageView, check_name};
use crate::store::ImageRow;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferric_images::inspect::{Format, ImageError};
use ferric_images::source::{Algo, Hasher, parse_checksum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
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

/// Removes a partial upload when dropped (error paths, a client that went away).
struct Incoming(Option<PathBuf>);

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    err(
        StatusCode::PAYLOAD_TOO_LARGE,
        "image_too_large",
        format!(
            "the image is larger than this coordinator takes ({limit} bytes, `--max-image-size`); \
             nothing of it was kept"
        ),
    )
}

/// Room left in a project's image quota (`None`: it has none).
async fn quota_room(s: &Shared, project: &str) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(quota) = s
        .store
        .project(project)
        .await?
        .and_then(|p| p.image_quota_bytes)
    else {
        return Ok(None);
    };
    let used = s.store.project_image_bytes(project).await?;
    Ok(Some((
        quota as u64,
        quota.saturating_sub(used).max(0) as u64,
    )))
}

fn over_quota(project: &str, quota: u64) -> ApiError {
    ApiError::Conductor(crate::conductor::ConductorError::QuotaExceeded(format!(
        "project `{project}` may keep {quota} bytes of images and this one does not fit; \
         delete images or ask for a larger quota; nothing of it was kept"
    )))
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
    body: Body,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let limit = s.config.max_image_bytes;
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let project = caller.project.clone();
    let checked = async {
        if declared_len.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let room = quota_room(&s, &project).await?;
        if let (Some(n), Some((quota, left))) = (declared_len, room)
            && n > left
        {
            return Err(over_quota(&project, quota));
        }
        check_name(&name)
            .map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
        let bad = |e: &dyn std::error::Error| {
            err(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
        };
        let declared = Format::parse_declared(q.format.as_deref()).map_err(|e| bad(&e))?;
        let expected = q
            .checksum
            .as_deref()
            .map(parse_checksum)
            .transpose()
            .map_err(|e| bad(&e))?;
        if s.store.image(&name).await?.is_some() {
            return Err(conflict(&name));
        }
        Ok((declared, expected, room))
    }
    .await;
    let (declared, expected, room) = match checked {
        Ok(v) => v,
        Err(e) => {
            // Read (a bounded part of) what the client is sending before answering, or it
            // sees a broken pipe instead of the reason.
            drain(body, EARLY_DRAIN).await;
            return Err(e);
        }
    };
    let path = s.images.incoming();
    let guard = Incoming(Some(path.clone()));
    let io = |what: &str, e: std::io::Error| {
        err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            format!("{what} the upload: {e}"),
        )
    };
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| io("store", e))?;
    let (mut h256, mut h512) = (Hasher::new(Algo::Sha256), Hasher::new(Algo::Sha512));
    let mut size = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            err(
                StatusCode::BAD_REQUEST,
                "upload_broken",
                format!("the upload broke off after {size} bytes: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if size + data.len() as u64 > limit {
                // The partial file goes with the guard; the rest is not read.
                return Err(too_large(limit));
            }
            if let Some((quota, left)) = room
                && size + data.len() as u64 > left
            {
                return Err(over_quota(&project, quota));
            }
            h256.update(&data);
            h512.update(&data);
            size += data.len() as u64;
            file.write_all(&data).await.map_err(|e| io("store", e))?;
        }
    }
    file.sync_all().await.map_err(|e| io("store", e))?;
    drop(file);
    let (sha256, sha512) = (h256.finish(), h512.finish());
    if let Some((algo, want)) = &expected {
        let got = match algo {
            Algo::Sha256 => &sha256,
            Algo::Sha512 => &sha512,
        };
        if got != want {
            return Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "checksum_mismatch",
                ImageError::ChecksumMismatch {
                    algo: algo.name(),
                    expected: want.clone(),
                    actual: got.clone(),
                }
                .to_string(),
            ));
        }
    }
    let p = path.clone();
    let inspection = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        match declared {
            Some(d) => ferric_images::inspect::inspect_as(&mut f, d),
            None => ferric_images::inspect::inspect(&mut f),
        }
    })
    .await
    .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        tracing::warn!(image = %name, error = %e, "image refused");
        err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_refused",
            format!("image `{name}` refused: {e}"),
        )
    })?;
    let row = ImageRow {
        name: name.clone(),
        sha256: sha256.clone(),
        sha512,
        format: inspection.format.as_str().to_owned(),
        wrapper: inspection.wrapper.map(|w| format!("{w:?}").to_lowercase()),
        virtual_size: inspection.virtual_size.map(|v| v as i64),
        size: size as i64,
        details: inspection.details,
        created_at_ms: crate::now_ms(),
        project: project.clone(),
    };
    let _held = s.images.lock.lock().await;
    // Uploads to one project running side by side: the quota holds for their sum.
    if let Some((quota, left)) = quota_room(&s, &project).await?
        && size > left
    {
        return Err(over_quota(&project, quota));
    }
    let blob = s.images.blob(&sha256);
    if !blob.exists() {
        std::fs::rename(&path, &blob).map_err(|e| io("keep", e))?;
    }
    if !s.store.insert_image(&row).await? {
        if s.store.image_refs(&sha256).await? == 0 {
            let _ = std::fs::remove_file(&blob);
        }
        return Err(conflict(&name));
    }
    drop(guard);
    tracing::info!(image = %name, %sha256, size, format = %row.format, "image stored");
    Ok((StatusCode::CREATED, Json(row.into())))
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

fn conflict(name: &str) -> ApiError {
    err(
        StatusCode::CONFLICT,
        "image_exists",
        format!("an image named `{name}` exists; delete it first"),
    )
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
