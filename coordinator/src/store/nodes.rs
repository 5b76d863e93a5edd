//! Enrolled nodes and when their agents were last heard.

use super::{Store, StoreError};
use crate::model::{NodeRole, ProvisionState};
use ferric_proto::msg::Capability;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// `SELECT` of every column of `nodes`, then the rest of the statement.
macro_rules! select_nodes {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            "name, role, enrolled_at_ms, last_seen_ms, capabilities, inventory_sha256, provision_state, project",
            " FROM nodes ",
            $rest
        )
    };
}

/// A node as stored.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Name (identity).
    pub name: String,
    /// What the node is.
    pub role: NodeRole,
    /// Enrollment time, ms since the epoch.
    pub enrolled_at_ms: i64,
    /// Last time the agent said hello, ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// Capabilities from the last hello (names this build does not know are left out).
    pub capabilities: Vec<Capability>,
    /// SHA-256 of the hardware inventory the agent announced in its last hello (hex).
    pub inventory_sha256: Option<String>,
    /// A bare-metal node's provision state.
    pub provision_state: Option<ProvisionState>,
    /// The project it belongs to.
    pub project: String,
}

impl Store {
    fn node_row(row: &AnyRow) -> Result<NodeRow, StoreError> {
        let caps: String = row.try_get("capabilities")?;
        Ok(NodeRow {
            name: row.try_get("name")?,
            role: row.try_get::<String, _>("role")?.parse()?,
            enrolled_at_ms: row.try_get("enrolled_at_ms")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            inventory_sha256: row.try_get("inventory_sha256")?,
            provision_state: row
                .try_get::<Option<String>, _>("provision_state")?
                .map(|s| s.parse())
                .transpose()?,
            capabilities: caps.split(',').filter_map(Capability::from_name).collect(),
            project: row.try_get("project")?,
        })
    }

    /// One node.
    pub async fn node(&self, name: &str) -> Result<Option<NodeRow>, StoreError> {
        let q = sqlx::query(select_nodes!("WHERE name = $1"));
        self.fetch_row(q.bind(name), Self::node_row).await
    }

    /// All nodes, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let q = sqlx::query(select_nodes!("ORDER BY name"));
        self.fetch_rows(q, Self::node_row).await
    }

    /// Records a hello.
    pub async fn node_seen(
        &self,
        name: &str,
        now_ms: i64,
        capabilities: &[Capability],
        inventory_sha256: &str,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE nodes SET last_seen_ms = $1, capabilities = $2, inventory_sha256 = $3 WHERE name = $4",
        )
        .bind(now_ms)
        .bind(
            capabilities
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
        .bind(inventory_sha256)
        .bind(name);
        self.run(q).await?;
        Ok(())
    }

    /// Records when a node's agent was last heard, as its link closes.
    pub async fn node_heard(&self, name: &str, at_ms: i64) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE nodes SET last_seen_ms = $1 WHERE name = $2 AND (last_seen_ms IS NULL OR last_seen_ms < $1)",
        );
        self.run(q.bind(at_ms).bind(name)).await?;
        Ok(())
    }
}

/// What deleting a node took with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Its plans (and their events).
    pub plans: u64,
    /// Guests placed on it (a host), by name: gone from the inventory, not from the host.
    pub guests: Vec<String>,
    /// The generation its certificates are refused below from now on.
    pub cert_generation: i64,
}

impl Store {
    /// Deletes `node` with everything that belongs to it — its plans and their events, the
    /// guests placed on it, its boots, inspection, transitions, discovered MAC and BMC — and
    /// retires its name: certificates issued to it are refused from now on, even once the
    /// name is enrolled again. `None`: no such node. The caller checks what depends on it
    /// (nodes whose BMC it drives).
    pub async fn delete_node(
        &self,
        node: &str,
        now_ms: i64,
    ) -> Result<Option<Removed>, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        let Some(row) = sqlx::query("SELECT cert_generation FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let generation: i64 = row.try_get(0)?;
        let guests: Vec<String> =
            sqlx::query("SELECT name FROM guests WHERE host = $1 ORDER BY name")
                .bind(node)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        sqlx::query("DELETE FROM events WHERE plan_id IN (SELECT id FROM plans WHERE node = $1)")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        let plans = sqlx::query("DELETE FROM plans WHERE node = $1")
            .bind(node)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        for stmt in [
            "DELETE FROM guests WHERE host = $1",
            "DELETE FROM boots WHERE node = $1",
            "DELETE FROM inspections WHERE node = $1",
            "DELETE FROM transitions WHERE node = $1",
            "DELETE FROM discovered_macs WHERE node = $1",
            "DELETE FROM bmcs WHERE node = $1",
            "DELETE FROM nodes WHERE name = $1",
        ] {
            sqlx::query(stmt).bind(node).execute(&mut *tx).await?;
        }
        let retired = generation + 1;
        sqlx::query(
            "INSERT INTO retired_nodes (name, cert_generation, retired_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cert_generation = $2, retired_at_ms = $3",
        )
        .bind(node)
        .bind(retired)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Removed {
            plans,
            guests,
            cert_generation: retired,
        }))
    }

    /// The certificate generation a node of this name starts at (that of the name's
    /// deleted node, or 0).
    pub async fn retired_generation(&self, name: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT cert_generation FROM retired_nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    /// Every retired name's generation (refused below at start).
    pub async fn retired_generations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT name, cert_generation FROM retired_nodes")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
