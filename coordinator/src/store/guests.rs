//! Guests (desired state) and what is promised on each host.

use super::{Store, StoreError};
use crate::model::GuestDesired;
use ferric_proto::plan::PlanId;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// `SELECT` of every column of `guests`, then the rest of the statement.
macro_rules! select_guests {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            "name, host, vcpus, memory_mib, disk_bytes, spec_json, desired, created_at_ms, last_plan",
            " FROM guests ",
            $rest
        )
    };
}

/// A guest as stored.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRow {
    /// Name.
    pub name: String,
    /// Host it is placed on.
    pub host: String,
    /// vCPUs.
    pub vcpus: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Root disk, bytes.
    pub disk_bytes: i64,
    /// Its spec as pushed in `ensure_guest`.
    pub spec: ferric_proto::plan::GuestSpec,
    /// `running`, `stopped` or `deleted`.
    pub desired: GuestDesired,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// The last plan that acted on it.
    pub last_plan: Option<i64>,
}

/// Resources promised on a host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocation {
    /// vCPUs.
    pub vcpus: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Disk, bytes.
    pub disk_bytes: u64,
    /// Guests.
    pub guests: u64,
}
impl Store {
    /// Stores a placed guest (fails if the name is taken).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_guest(&self, g: &GuestRow) -> Result<bool, StoreError> {
        let spec = serde_json::to_string(&g.spec).map_err(|e| StoreError::CorruptPlan(0, e))?;
        let q = sqlx::query(
            "INSERT INTO guests (name, host, vcpus, memory_mib, disk_bytes, spec_json, desired, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&g.name)
        .bind(&g.host)
        .bind(g.vcpus)
        .bind(g.memory_mib)
        .bind(g.disk_bytes)
        .bind(spec)
        .bind(g.desired.as_str())
        .bind(g.created_at_ms);
        Ok(self.run(q).await? == 1)
    }

    fn guest_row(r: &AnyRow) -> Result<GuestRow, StoreError> {
        let spec: String = r.try_get("spec_json")?;
        Ok(GuestRow {
            name: r.try_get("name")?,
            host: r.try_get("host")?,
            vcpus: r.try_get("vcpus")?,
            memory_mib: r.try_get("memory_mib")?,
            disk_bytes: r.try_get("disk_bytes")?,
            spec: serde_json::from_str(&spec).map_err(|e| StoreError::CorruptPlan(0, e))?,
            desired: r.try_get::<String, _>("desired")?.parse()?,
            created_at_ms: r.try_get("created_at_ms")?,
            last_plan: r.try_get("last_plan")?,
        })
    }

    /// All guests, by name.
    pub async fn guests(&self) -> Result<Vec<GuestRow>, StoreError> {
        let q = sqlx::query(select_guests!("ORDER BY name"));
        self.fetch_rows(q, Self::guest_row).await
    }

    /// One guest.
    pub async fn guest(&self, name: &str) -> Result<Option<GuestRow>, StoreError> {
        let q = sqlx::query(select_guests!("WHERE name = $1"));
        self.fetch_row(q.bind(name), Self::guest_row).await
    }

    /// Records the desired state of a guest and the plan that brings it there.
    pub async fn guest_desired(
        &self,
        name: &str,
        desired: GuestDesired,
        plan: PlanId,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE guests SET desired = $1, last_plan = $2 WHERE name = $3")
            .bind(desired.as_str())
            .bind(plan as i64)
            .bind(name);
        self.run(q).await?;
        Ok(())
    }

    /// Resources promised per host by guests that are not being deleted.
    pub async fn allocations(
        &self,
    ) -> Result<std::collections::HashMap<String, Allocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT host, SUM(vcpus), SUM(memory_mib), SUM(disk_bytes), COUNT(*) FROM guests WHERE desired <> 'deleted' GROUP BY host",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = std::collections::HashMap::new();
        for r in rows {
            let host: String = r.try_get(0)?;
            let n =
                |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
            out.insert(
                host,
                Allocation {
                    vcpus: n(1)?,
                    memory_mib: n(2)?,
                    disk_bytes: n(3)?,
                    guests: n(4)?,
                },
            );
        }
        Ok(out)
    }
}
