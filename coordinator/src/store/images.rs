//! Stored images (their content lives in the image store's files).

use super::{Store, StoreError};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// `SELECT` of every column of `images`, then the rest of the statement.
macro_rules! select_images {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            "name, sha256, sha512, format, wrapper, virtual_size, size, details, created_at_ms, project",
            " FROM images ",
            $rest
        )
    };
}

/// An image as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    /// Name.
    pub name: String,
    /// sha256 of the file (its address in the store).
    pub sha256: String,
    /// sha512 of the file.
    pub sha512: String,
    /// Format (qemu-img's spelling).
    pub format: String,
    /// Compression wrapper.
    pub wrapper: Option<String>,
    /// Size of the disk it holds.
    pub virtual_size: Option<i64>,
    /// Bytes stored.
    pub size: i64,
    /// Inspection details.
    pub details: Vec<String>,
    /// Uploaded, ms since the epoch.
    pub created_at_ms: i64,
    /// The project it belongs to.
    pub project: String,
}
impl Store {
    /// Stores an image's record (false if the name is taken).
    pub async fn insert_image(&self, i: &ImageRow) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "INSERT INTO images (name, sha256, sha512, format, wrapper, virtual_size, size, details, created_at_ms, project) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&i.name)
        .bind(&i.sha256)
        .bind(&i.sha512)
        .bind(&i.format)
        .bind(i.wrapper.clone())
        .bind(i.virtual_size)
        .bind(i.size)
        .bind(i.details.join(","))
        .bind(i.created_at_ms)
        .bind(&i.project);
        Ok(self.run(q).await? == 1)
    }

    fn image_row(r: &AnyRow) -> Result<ImageRow, StoreError> {
        let details: String = r.try_get("details")?;
        Ok(ImageRow {
            name: r.try_get("name")?,
            sha256: r.try_get("sha256")?,
            sha512: r.try_get("sha512")?,
            format: r.try_get("format")?,
            wrapper: r.try_get("wrapper")?,
            virtual_size: r.try_get("virtual_size")?,
            size: r.try_get("size")?,
            details: details
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at_ms: r.try_get("created_at_ms")?,
            project: r.try_get("project")?,
        })
    }

    /// All images, by name.
    pub async fn images(&self) -> Result<Vec<ImageRow>, StoreError> {
        let q = sqlx::query(select_images!("ORDER BY name"));
        self.fetch_rows(q, Self::image_row).await
    }

    /// One image.
    pub async fn image(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        let q = sqlx::query(select_images!("WHERE name = $1"));
        self.fetch_row(q.bind(name), Self::image_row).await
    }

    /// Removes an image's record; returns it.
    pub async fn delete_image(&self, name: &str) -> Result<Option<ImageRow>, StoreError> {
        let Some(row) = self.image(name).await? else {
            return Ok(None);
        };
        self.run(sqlx::query("DELETE FROM images WHERE name = $1").bind(name))
            .await?;
        Ok(Some(row))
    }

    /// The projects holding an image of this content.
    pub async fn image_projects(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT project FROM images WHERE sha256 = $1")
            .bind(sha256)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    /// How many names refer to this content.
    pub async fn image_refs(&self, sha256: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM images WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}
