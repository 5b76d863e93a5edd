//! The boot services' DHCP leases, kept across restarts.

use super::{Store, StoreError};
use sqlx::Row;

/// A lease (or a quarantined address) as stored: wall-clock expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The address.
    pub ip: String,
    /// The MAC holding it (for a quarantine, the one that declined it).
    pub mac: String,
    /// `offered`, `bound` or `quarantined`.
    pub kind: String,
    /// When it ends, ms since the epoch.
    pub expires_at_ms: i64,
}

impl Store {
    /// Replaces the stored leases with `rows`, in one transaction.
    pub async fn save_leases(&self, rows: &[LeaseRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        sqlx::query("DELETE FROM dhcp_leases")
            .execute(&mut *tx)
            .await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO dhcp_leases (ip, mac, kind, expires_at_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&r.ip)
            .bind(&r.mac)
            .bind(&r.kind)
            .bind(r.expires_at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored leases that have not ended at `now_ms`.
    pub async fn leases(&self, now_ms: i64) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT ip, mac, kind, expires_at_ms FROM dhcp_leases WHERE expires_at_ms > $1",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    ip: r.try_get(0)?,
                    mac: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    expires_at_ms: r.try_get(3)?,
                })
            })
            .collect()
    }
}
