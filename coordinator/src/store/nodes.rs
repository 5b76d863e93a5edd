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
