//! Bootstrap tokens and the enrollment that uses one up.

use super::{Store, StoreError};
use crate::model::NodeRole;
use sqlx::Row;

/// Why a bootstrap token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Unknown id or wrong secret.
    Invalid,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
}

/// Why an enrollment did not happen (nothing was changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollProblem {
    /// The token was not accepted.
    Token(TokenProblem),
    /// The node name is taken.
    NodeExists,
}
impl Store {
    /// Records a new bootstrap token (only the hash of its secret).
    pub async fn create_token(
        &self,
        id: &str,
        secret_sha256: &str,
        project: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let q = sqlx::query(
            "INSERT INTO tokens (id, secret_sha256, created_at_ms, expires_at_ms, project) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(secret_sha256)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(project);
        self.run(q).await?;
        Ok(())
    }

    /// Checks a token without using it.
    pub async fn check_token(
        &self,
        id: &str,
        secret_sha256: &str,
        now_ms: i64,
    ) -> Result<Result<(), TokenProblem>, StoreError> {
        let row = sqlx::query(
            "SELECT secret_sha256, expires_at_ms, used_at_ms FROM tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Err(TokenProblem::Invalid));
        };
        let stored: String = row.try_get(0)?;
        if !constant_time_eq(stored.as_bytes(), secret_sha256.as_bytes()) {
            return Ok(Err(TokenProblem::Invalid));
        }
        let used: Option<i64> = row.try_get(2)?;
        if used.is_some() {
            return Ok(Err(TokenProblem::Used));
        }
        let expires: i64 = row.try_get(1)?;
        if now_ms >= expires {
            return Ok(Err(TokenProblem::Expired));
        }
        Ok(Ok(()))
    }

    /// Uses a token and enrolls `node` in one transaction: either both happen or neither.
    pub async fn enroll(
        &self,
        token_id: &str,
        secret_sha256: &str,
        node: &str,
        role: NodeRole,
        now_ms: i64,
    ) -> Result<Result<(), EnrollProblem>, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        let used = sqlx::query(
            "UPDATE tokens SET used_at_ms = $1, used_by = $2 \
             WHERE id = $3 AND secret_sha256 = $4 AND used_at_ms IS NULL AND expires_at_ms > $1",
        )
        .bind(now_ms)
        .bind(node)
        .bind(token_id)
        .bind(secret_sha256)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            // Name the precise problem (the token may have been used concurrently).
            let problem = self
                .check_token(token_id, secret_sha256, now_ms)
                .await?
                .err()
                .unwrap_or(TokenProblem::Used);
            return Ok(Err(EnrollProblem::Token(problem)));
        }
        let exists = sqlx::query("SELECT 1 FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            tx.rollback().await?;
            return Ok(Err(EnrollProblem::NodeExists));
        }
        // The node joins the project its token was made for.
        sqlx::query(
            "INSERT INTO nodes (name, role, enrolled_at_ms, project, cert_generation) \
             SELECT $1, $2, $3, project, COALESCE((SELECT cert_generation FROM retired_nodes WHERE name = $1), 0) FROM tokens WHERE id = $4",
        )
        .bind(node)
        .bind(role.as_str())
        .bind(now_ms)
        .bind(token_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Number of tokens not yet used (for tests and status).
    pub async fn unused_tokens(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM tokens WHERE used_at_ms IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
