//! Machines found by network boot (discovery), which have no BMC yet.

use super::{Store, StoreError};
use sqlx::Row;

impl Store {
    /// A node found by network boot: a bare-metal node in state `enroll` named `node`, with
    /// its MAC; the existing node when the MAC was found before.
    pub async fn discovered(
        &self,
        mac: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        if let Some(r) = sqlx::query("SELECT node FROM discovered_macs WHERE mac = $1")
            .bind(mac)
            .fetch_optional(&mut *tx)
            .await?
        {
            tx.rollback().await?;
            return Ok(r.try_get(0)?);
        }
        if let Some(e) = Self::mac_holder(&mut tx, &[mac.to_owned()]).await? {
            tx.rollback().await?;
            return Err(e);
        }
        sqlx::query(
            "INSERT INTO nodes (name, role, enrolled_at_ms, provision_state, cert_generation) \
             VALUES ($1, $2, $3, $4, COALESCE((SELECT cert_generation FROM retired_nodes WHERE name = $1), 0))",
        )
        .bind(node)
        .bind(crate::model::NodeRole::Baremetal.as_str())
        .bind(now_ms)
        .bind(crate::model::ProvisionState::Enroll.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO discovered_macs (mac, node, at_ms) VALUES ($1, $2, $3)")
            .bind(mac)
            .bind(node)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(node.to_owned())
    }

    /// MACs of discovered nodes, with their nodes.
    pub async fn discovered_macs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT mac, node FROM discovered_macs ORDER BY mac")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// How many discovered nodes are still in `enroll` (found, not yet taken in by an
    /// operator): what discovery is bounded by.
    pub async fn discovered_waiting(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM discovered_macs JOIN nodes ON nodes.name = discovered_macs.node \
             WHERE nodes.provision_state = $1",
        )
        .bind(crate::model::ProvisionState::Enroll.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}
