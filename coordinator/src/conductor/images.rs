//! The image store: images uploaded by name, inspected on arrival (unsafe ones refused), stored
//! content-addressed under `DATA_DIR/images/sha256/<hex>` with their sha256 and sha512, and
//! served with `Range` requests so that agents stream them (and resume) instead of copying
//! them first. The upload and download themselves are HTTP's ([`crate::api`]).
//!
//! Uploads land in `images/incoming/` and are moved into place only after inspection; what a
//! crash leaves there is removed at the next start.

use super::{ConductorError, Result};
use crate::Shared;
use crate::store::ImageRow;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where images live in the data directory, and the lock that keeps a delete from racing an
/// upload of the same content.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    pub(crate) lock: tokio::sync::Mutex<()>,
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

    /// A fresh path for an upload in progress.
    pub(crate) fn incoming(&self) -> PathBuf {
        self.dir
            .join("incoming")
            .join(format!("{:016x}.part", rand::random::<u64>()))
    }
}

/// An image as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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

/// An image name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image name `{0}` must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot")]
pub struct ImageNameError(pub String);

/// Image names: what fits in a URL path segment and a file name without escaping.
pub fn check_name(name: &str) -> std::result::Result<(), ImageNameError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageNameError(name.to_owned()))
    }
}

fn not_found(name: &str) -> ConductorError {
    ConductorError::UnknownImage(format!("no image named `{name}`"))
}

/// Every image the caller sees.
pub async fn list(s: &Shared, caller: &super::access::Caller) -> Result<Vec<ImageView>> {
    Ok(s.store
        .images()
        .await?
        .into_iter()
        .filter(|i| caller.sees(&i.project))
        .map(ImageView::from)
        .collect())
}

/// One image.
pub async fn show(s: &Shared, name: &str) -> Result<ImageView> {
    s.store
        .image(name)
        .await?
        .map(ImageView::from)
        .ok_or_else(|| not_found(name))
}

/// Deletes an image by name; its content goes when no other name refers to it.
pub async fn delete(s: &Shared, name: &str) -> Result<ImageView> {
    let _held = s.images.lock.lock().await;
    let Some(row) = s.store.delete_image(name).await? else {
        return Err(not_found(name));
    };
    if s.store.image_refs(&row.sha256).await? == 0 {
        let blob = s.images.blob(&row.sha256);
        if let Err(e) = std::fs::remove_file(&blob) {
            tracing::warn!(blob = %blob.display(), error = %e, "cannot remove image blob");
        }
    }
    tracing::info!(image = %name, "image deleted");
    Ok(row.into())
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
