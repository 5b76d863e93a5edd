//! The image store: images uploaded by name, inspected on arrival (unsafe ones refused), stored
//! content-addressed under `DATA_DIR/images/sha256/<hex>` with their sha256 and sha512, and
//! served with `Range` requests so that agents stream them (and resume) instead of copying
//! them first. An upload ([`Upload`]) is checked before a byte is kept (name, size, quota,
//! declared format and checksum), hashed as it lands, checked against its checksum,
//! inspected, and stored; the API only streams it in, and [`crate::blobs`] serves blobs out.
//!
//! Uploads land in `images/incoming/` and are moved into place only after inspection; what a
//! crash leaves there is removed at the next start.

use super::{ConductorError, Result};
use crate::Shared;
use crate::store::ImageRow;
pub use ferric_api::images::{ImageNameError, ImageView, check_name};
use ferric_images::inspect::{Format, ImageError};
use ferric_images::source::{Algo, Hasher, parse_checksum};
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

/// Why an upload was refused; nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Larger than `--max-image-size`.
    #[error(
        "the image is larger than this coordinator takes ({limit} bytes, `--max-image-size`); \
         nothing of it was kept"
    )]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// Over the project's quota, or the store failed.
    #[error(transparent)]
    Conductor(#[from] ConductorError),
    /// A name, declared format or checksum that is not one.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("an image named `{0}` exists; delete it first")]
    Exists(String),
    /// The data directory failed.
    #[error("cannot {what} the upload: {source}")]
    Storage {
        /// `store`, `keep`.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The content's digest is not the one declared.
    #[error("{0}")]
    ChecksumMismatch(ImageError),
    /// Inspection refused the content (unsafe, not the declared format, unreadable).
    #[error("image `{name}` refused: {source}")]
    Refused {
        /// The image's name.
        name: String,
        /// Why.
        source: ImageError,
    },
    /// The inspection task failed.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for UploadError {
    fn from(e: crate::store::StoreError) -> Self {
        UploadError::Conductor(e.into())
    }
}

fn over_quota(project: &str, quota: u64) -> UploadError {
    UploadError::Conductor(ConductorError::QuotaExceeded(format!(
        "project `{project}` may keep {quota} bytes of images and this one does not fit; \
         delete images or ask for a larger quota; nothing of it was kept"
    )))
}

/// Room left in a project's image quota: `(quota, left)`, `None` when it has none.
async fn quota_room(s: &Shared, project: &str) -> Result<Option<(u64, u64)>> {
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

/// Removes a partial upload when dropped (refusals, a client that went away).
#[derive(Debug)]
struct Incoming(Option<PathBuf>);

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What an upload says of itself before its content.
#[derive(Debug, Clone, Default)]
pub struct UploadRequest {
    /// Its name.
    pub name: String,
    /// The project it goes to.
    pub project: String,
    /// Its length, when the client said (`Content-Length`).
    pub length: Option<u64>,
    /// Declared format (`raw`, `qcow2`, …); content that differs is refused.
    pub format: Option<String>,
    /// Expected `sha256:HEX` or `sha512:HEX`.
    pub checksum: Option<String>,
}

/// An upload under way: its content lands in `images/incoming/`, hashed as it comes.
#[derive(Debug)]
pub struct Upload {
    name: String,
    project: String,
    limit: u64,
    room: Option<(u64, u64)>,
    declared: Option<Format>,
    expected: Option<(Algo, String)>,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// Removes the incoming file when the upload ends, kept or not.
    _incoming: Incoming,
    h256: Hasher,
    h512: Hasher,
    size: u64,
}

impl Upload {
    /// Checks what the upload says of itself (size, quota, name, format, checksum, a free
    /// name) before any of its content is read; the refusal names what is wrong.
    pub async fn check(s: &Shared, req: UploadRequest) -> std::result::Result<Self, UploadError> {
        let limit = s.config.max_image_bytes;
        if req.length.is_some_and(|n| n > limit) {
            return Err(UploadError::TooLarge { limit });
        }
        let room = quota_room(s, &req.project).await?;
        if let (Some(n), Some((quota, left))) = (req.length, room)
            && n > left
        {
            return Err(over_quota(&req.project, quota));
        }
        check_name(&req.name).map_err(|e| UploadError::Invalid(e.to_string()))?;
        let declared = Format::parse_declared(req.format.as_deref())
            .map_err(|e| UploadError::Invalid(e.to_string()))?;
        let expected = req
            .checksum
            .as_deref()
            .map(parse_checksum)
            .transpose()
            .map_err(|e| UploadError::Invalid(e.to_string()))?;
        if s.store.image(&req.name).await?.is_some() {
            return Err(UploadError::Exists(req.name));
        }
        let path = s.images.incoming();
        Ok(Upload {
            name: req.name,
            project: req.project,
            limit,
            room,
            declared,
            expected,
            _incoming: Incoming(Some(path.clone())),
            path,
            file: None,
            h256: Hasher::new(Algo::Sha256),
            h512: Hasher::new(Algo::Sha512),
            size: 0,
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.size
    }

    /// Takes the next part of the content: refused as soon as it passes the size limit or
    /// the project's quota.
    pub async fn write(&mut self, data: &[u8]) -> std::result::Result<(), UploadError> {
        use tokio::io::AsyncWriteExt;
        let after = self.size + data.len() as u64;
        if after > self.limit {
            return Err(UploadError::TooLarge { limit: self.limit });
        }
        if let Some((quota, left)) = self.room
            && after > left
        {
            return Err(over_quota(&self.project, quota));
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                self.file.insert(
                    tokio::fs::File::create(&self.path)
                        .await
                        .map_err(|source| UploadError::Storage {
                            what: "store",
                            source,
                        })?,
                )
            }
        };
        self.h256.update(data);
        self.h512.update(data);
        self.size = after;
        file.write_all(data)
            .await
            .map_err(|source| UploadError::Storage {
                what: "store",
                source,
            })
    }

    /// Ends the upload: checks its checksum, inspects it, and stores it under its name.
    pub async fn finish(mut self, s: &Shared) -> std::result::Result<ImageView, UploadError> {
        let store = |source| UploadError::Storage {
            what: "store",
            source,
        };
        let file = match self.file.take() {
            Some(f) => f,
            None => tokio::fs::File::create(&self.path).await.map_err(store)?,
        };
        file.sync_all().await.map_err(store)?;
        drop(file);
        let (sha256, sha512) = (self.h256.finish(), self.h512.finish());
        if let Some((algo, want)) = &self.expected {
            let got = match algo {
                Algo::Sha256 => &sha256,
                Algo::Sha512 => &sha512,
            };
            if got != want {
                return Err(UploadError::ChecksumMismatch(
                    ImageError::ChecksumMismatch {
                        algo: algo.name(),
                        expected: want.clone(),
                        actual: got.clone(),
                    },
                ));
            }
        }
        let (p, declared) = (self.path.clone(), self.declared);
        let inspection = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&p)?;
            match declared {
                Some(d) => ferric_images::inspect::inspect_as(&mut f, d),
                None => ferric_images::inspect::inspect(&mut f),
            }
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?
        .map_err(|source| {
            tracing::warn!(image = %self.name, error = %source, "image refused");
            UploadError::Refused {
                name: self.name.clone(),
                source,
            }
        })?;
        let size = self.size;
        let row = ImageRow {
            name: self.name.clone(),
            sha256: sha256.clone(),
            sha512,
            format: inspection.format.as_str().to_owned(),
            wrapper: inspection.wrapper.map(|w| format!("{w:?}").to_lowercase()),
            virtual_size: inspection.virtual_size.map(|v| v as i64),
            size: size as i64,
            details: inspection.details,
            created_at_ms: crate::now_ms(),
            project: self.project.clone(),
        };
        let _held = s.images.lock.lock().await;
        // Uploads to one project running side by side: the quota holds for their sum.
        if let Some((quota, left)) = quota_room(s, &self.project).await?
            && size > left
        {
            return Err(over_quota(&self.project, quota));
        }
        let blob = s.images.blob(&sha256);
        if !blob.exists() {
            std::fs::rename(&self.path, &blob).map_err(|source| UploadError::Storage {
                what: "keep",
                source,
            })?;
        }
        if !s.store.insert_image(&row).await? {
            if s.store.image_refs(&sha256).await? == 0 {
                let _ = std::fs::remove_file(&blob);
            }
            return Err(UploadError::Exists(self.name));
        }
        // The incoming file goes when the upload drops (moved into place, or a copy of a
        // blob kept already).
        tracing::info!(image = %self.name, %sha256, size, format = %row.format, "image stored");
        Ok(row.into())
    }
}
