//! The coordinator's store: nodes, bootstrap tokens, plans and every step event, images,
//! guests and BMCs, a file per table group.
//!
//! The embedded default is SQLite in the data directory. Queries go through sqlx's `Any`
//! driver with `$N` placeholders, written once for every backend; what differs between
//! backends (connecting, migrations, how a write transaction begins) is in [`Backend`].
//! Schema migrations are versioned per backend and run at start.

mod access;
mod backend;
mod bmcs;
mod boots;
mod discovery;
mod events;
mod guests;
mod images;
mod inspections;
mod leases;
mod lifecycle;
mod nodes;
mod plans;
mod tokens;

pub use access::{ApiTokenRow, AuditRow, ProjectRow};
pub use backend::Backend;
pub use bmcs::BmcRow;
pub use boots::{BootEnd, BootRow, IssuedScript};
pub use events::EventRow;
pub use guests::{Allocation, GuestRow};
pub use images::ImageRow;
pub use leases::LeaseRow;
pub use lifecycle::{LifecycleRow, TransitionRow};
pub use nodes::NodeRow;
pub use plans::{PlanFigure, PlanRow};
pub use tokens::{EnrollProblem, TokenProblem, constant_time_eq};

use ferric_proto::plan::PlanId;
use sqlx::AnyPool;
use std::path::Path;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Running migrations failed.
    #[error("schema migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored plan could not be decoded.
    #[error("stored plan {0} is corrupt")]
    CorruptPlan(PlanId, #[source] serde_json::Error),
    /// A stored JSON document could not be written or read back.
    #[error("stored document is corrupt")]
    Corrupt(#[source] serde_json::Error),
    /// The node does not exist.
    #[error("node `{0}` is not enrolled")]
    UnknownNode(String),
    /// The node exists already.
    #[error("node `{0}` is already enrolled")]
    NodeExists(String),
    /// A stored value is outside its vocabulary (written by a newer build, or edited by hand).
    #[error("stored value unreadable")]
    BadName(#[from] crate::model::UnknownName),
    /// A MAC given for a node is another node's (a MAC belongs to one node in the fleet).
    #[error("MAC {mac} already belongs to node `{node}`")]
    MacTaken {
        /// The MAC.
        mac: String,
        /// The node that has it.
        node: String,
        /// That node's project.
        project: String,
    },
    /// An event names a plan this node does not have.
    #[error("plan {plan} does not exist for node `{node}`")]
    UnknownPlan {
        /// Plan.
        plan: PlanId,
        /// Node.
        node: String,
    },
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let backend = Backend::Sqlite;
        let pool = backend.connect(path).await?;
        backend.migrator().run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Moves the write-ahead log into the database and empties it, so that no older version
    /// of a replaced row stays in it (after sealing secrets kept in clear).
    pub async fn flush_journal(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_all(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every row `q` selects, each read by `read`.
    async fn fetch_rows<T>(&self, q: Query<'_>, read: ReadRow<T>) -> Result<Vec<T>, StoreError> {
        q.fetch_all(&self.pool).await?.iter().map(read).collect()
    }

    /// The row `q` selects, if any, read by `read`.
    async fn fetch_row<T>(&self, q: Query<'_>, read: ReadRow<T>) -> Result<Option<T>, StoreError> {
        q.fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(read)
            .transpose()
    }

    /// Runs `q` on the pool; returns how many rows it changed.
    async fn run(&self, q: Query<'_>) -> Result<u64, StoreError> {
        Ok(q.execute(&self.pool).await?.rows_affected())
    }
}

/// A statement with its arguments bound.
type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Reads a selected row into what the store returns.
type ReadRow<T> = fn(&sqlx::any::AnyRow) -> Result<T, StoreError>;

#[cfg(test)]
mod tests;
