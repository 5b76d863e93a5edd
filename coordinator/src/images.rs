//! The image store: images uploaded by name, inspected on arrival (unsafe ones refused), stored
//! content-addressed under `DATA_DIR/images/sha256/<hex>` with their sha256 and sha512, and
//! served over HTTP with `Range` requests so that agents stream them (and resume) instead of
//! copying them first.
//!
//! Uploads land in `images/incoming/` and are moved into place only after inspection; what a
//! crash leaves there is removed at the next start.

use crate::Shared;
use crate::api::ApiError;
use crate::store::ImageRow;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferric_images::inspect::{Format, ImageError};
use ferric_images::source::{Algo, Hasher};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Where images live in the data directory, and the lock that keeps a delete from racing an
/// upload of the same content.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) `DATA_DIR/images` and clears unfinished uploads.
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<ImageStore> {
        let dir = data_dir.join("images");
        let incoming = dir.join("incoming");
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        std::fs::create_dir_all(&incoming)?;
        std::fs::create_dir_all(dir.join("sha256"))?;
        Ok(ImageStore {
            dir,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Path of the blob with this sha256.
    pub fn blob(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    fn incoming(&self) -> PathBuf {
        self.dir
            .join("incoming")
            .join(format!("{:016x}.part", rand::random::<u64>()))
    }
}

/// An image as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageView {
    /// Name.
    pub name: String,
    /// Format of the content (`raw`, `qcow2`, …).
    pub format: String,
    /// Compression around it (`gzip`, `zstd`, `xz`), if any.
    pub wrapper: Option<String>,
    /// Size of the disk it holds, when known.
    pub virtual_size: Option<u64>,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the file as uploaded (also its address).
    pub sha256: String,
    /// sha512 of the file as uploaded.
    pub sha512: String,
    /// Format details from inspection.
    pub details: Vec<String>,
    /// Uploaded at, ms since the epoch.
    pub created_at_ms: i64,
    /// Path to fetch it from this server (`Range` requests welcome).
    pub path: String,
}

impl From<ImageRow> for ImageView {
    fn from(r: ImageRow) -> Self {
        ImageView {
            path: format!("/images/sha256/{}", r.sha256),
            name: r.name,
            format: r.format,
            wrapper: r.wrapper,
            virtual_size: r.virtual_size.map(|v| v as u64),
            size: r.size as u64,
            sha256: r.sha256,
            sha512: r.sha512,
            details: r.details,
            created_at_ms: r.created_at_ms,
        }
    }
}

/// Query of `PUT /v1/images/{name}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Declared format; content that differs is refused.
    #[serde(default)]
    pub format: Option<String>,
    /// Expected `sha256:HEX` or `sha512:HEX` of the file.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// The image routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/images", get(list))
        .route(
            "/v1/images/{name}",
            get(show).put(upload).delete(delete_image),
        )
        .route("/images/sha256/{hex}", get(serve_blob))
}

/// Image names: what fits in a URL path segment and a file name without escaping.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image name `{name}` must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot"
        ))
    }
}

async fn list(State(s): State<Arc<Shared>>) -> Result<Json<Vec<ImageView>>, ApiError> {
    let rows = s.store.images().await?;
    Ok(Json(rows.into_iter().map(ImageView::from).collect()))
}

async fn show(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<ImageView>, ApiError> {
    match s.store.image(&name).await? {
        Some(r) => Ok(Json(r.into())),
        None => Err(not_found(&name)),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no image named `{name}`"))
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

async fn upload(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let checked = async {
        check_name(&name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
        let declared = Format::parse_declared(q.format.as_deref()).map_err(bad)?;
        let expected = q
            .checksum
            .as_deref()
            .map(Algo::parse_checksum)
            .transpose()
            .map_err(bad)?;
        if s.store.image(&name).await?.is_some() {
            return Err(conflict(&name));
        }
        Ok((declared, expected))
    }
    .await;
    let (declared, expected) = match checked {
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
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
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
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off after {size} bytes: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
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
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
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
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        tracing::warn!(image = %name, error = %e, "image refused");
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
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
    };
    let _held = s.images.lock.lock().await;
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
    ApiError::new(
        StatusCode::CONFLICT,
        format!("an image named `{name}` exists; delete it first"),
    )
}

async fn delete_image(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<ImageView>, ApiError> {
    let _held = s.images.lock.lock().await;
    let Some(row) = s.store.delete_image(&name).await? else {
        return Err(not_found(&name));
    };
    if s.store.image_refs(&row.sha256).await? == 0 {
        let blob = s.images.blob(&row.sha256);
        if let Err(e) = std::fs::remove_file(&blob) {
            tracing::warn!(blob = %blob.display(), error = %e, "cannot remove image blob");
        }
    }
    tracing::info!(image = %name, "image deleted");
    Ok(Json(row.into()))
}

/// Serves a blob with `Range` support. Its content never changes (the path is its sha256), so
/// the ETag is the digest; an `If-Range` naming anything else gets the whole file, as HTTP says.
async fn serve_blob(
    State(s): State<Arc<Shared>>,
    Path(hex): Path<String>,
    mut req: Request,
) -> Response {
    use tower::ServiceExt;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return ApiError::new(StatusCode::NOT_FOUND, "no such image blob").into_response();
    }
    let etag = format!("\"{hex}\"");
    let stale = req
        .headers()
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes() != etag.as_bytes());
    if stale {
        req.headers_mut().remove(header::RANGE);
    }
    req.headers_mut().remove(header::IF_RANGE);
    let blob = s.images.blob(&hex);
    if !blob.exists() {
        return ApiError::new(StatusCode::NOT_FOUND, "no such image blob").into_response();
    }
    match tower_http::services::ServeFile::new(blob)
        .oneshot(req)
        .await
    {
        Ok(mut resp) => {
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            resp.map(Body::new)
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("debian-12.qcow2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
