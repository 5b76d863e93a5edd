//! Serving the image store's blobs (`/images/sha256/{hex}`), the same way on the API and on the
//! boot services' HTTP: the file by its digest, with `Range` requests, the digest as a strong
//! ETag, `If-Range` honoured (a mismatch gets the whole file) and cached for good (content
//! addressed). Who may read a blob is each server's to decide before it calls [`serve`].

use crate::conductor::images::ImageStore;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;

/// Why no blob is served.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob of that digest (or a name that is no digest).
    #[error("no such image blob")]
    Unknown,
    /// Serving the file failed.
    #[error("serving the image blob failed: {0}")]
    Failed(String),
}

/// The blob `hex` (64 lowercase hex digits) of `images`, answering `req`.
pub async fn serve(
    images: &ImageStore,
    hex: &str,
    mut req: Request,
) -> Result<Response, BlobError> {
    use tower::ServiceExt;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(BlobError::Unknown);
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
    let blob = images.blob(hex);
    if !blob.exists() {
        return Err(BlobError::Unknown);
    }
    let mut resp = tower_http::services::ServeFile::new(blob)
        .oneshot(req)
        .await
        .map_err(|e| BlobError::Failed(e.to_string()))?;
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(resp.map(Body::new))
}
