//! What nodes' ramdisks found when they inspected their machines.

use super::{Store, StoreError};
use ferric_proto::msg::Inspection;
use sqlx::Row;

impl Store {
    /// Stores what a node's ramdisk found (replacing an earlier inspection).
    pub async fn save_inspection(
        &self,
        node: &str,
        inspection: &Inspection,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(inspection).map_err(StoreError::Corrupt)?;
        sqlx::query(
            "INSERT INTO inspections (node, at_ms, inspection_json) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET at_ms = $2, inspection_json = $3",
        )
        .bind(node)
        .bind(at_ms)
        .bind(json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest inspection of a node, with its time.
    pub async fn inspection(&self, node: &str) -> Result<Option<(Inspection, i64)>, StoreError> {
        let row = sqlx::query("SELECT inspection_json, at_ms FROM inspections WHERE node = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let json: String = r.try_get(0)?;
            let at: i64 = r.try_get(1)?;
            Ok((
                serde_json::from_str(&json).map_err(StoreError::Corrupt)?,
                at,
            ))
        })
        .transpose()
    }
}
