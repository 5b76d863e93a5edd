//! What differs between the databases the store runs on; the queries themselves do not.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use std::path::Path;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the data directory: the embedded default, nothing to install.
    Sqlite,
}

impl Backend {
    /// Opens a pool on the database at `path` (created when missing).
    pub(super) async fn connect(self, path: &Path) -> Result<AnyPool, sqlx::Error> {
        match self {
            Backend::Sqlite => {
                sqlx::any::install_default_drivers();
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let pool = AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            // What is deleted or replaced is overwritten, not left in free
                            // space (a password sealed in place leaves no clear copy).
                            sqlx::query("PRAGMA secure_delete = ON")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await?;
                Ok(pool)
            }
        }
    }

    /// The backend's schema migrations.
    pub(super) fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    /// The statement that opens a write transaction. SQLite's plain `BEGIN` defers the write
    /// lock, and a deferred transaction that reads first fails with "database is locked" when
    /// another writer commits meanwhile; `BEGIN IMMEDIATE` takes the lock up front and waits.
    pub(super) fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
        }
    }
}
