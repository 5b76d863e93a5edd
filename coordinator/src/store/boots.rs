//! Network boots Ferric started, with their per-boot tokens and ramdisks.

use super::{Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;

/// How a boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEnd {
    /// The machine left its ramdisk for its deployed image: that ramdisk may still connect,
    /// for a while, to deliver what it journaled, but it is given no work.
    Left,
    /// A newer boot of the node was started.
    Superseded,
    /// The machine's power was cut or cycled.
    Power,
    /// It was never fetched or enrolled before its expiry (ended when next looked at).
    Expired,
}

impl BootEnd {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BootEnd::Left => "left",
            BootEnd::Superseded => "superseded",
            BootEnd::Power => "power",
            BootEnd::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<BootEnd> {
        [
            BootEnd::Left,
            BootEnd::Superseded,
            BootEnd::Power,
            BootEnd::Expired,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// A boot's script as handed out: to whom, with which token.
#[derive(Debug, Clone, Copy)]
pub struct IssuedScript<'a> {
    /// The MAC it is for.
    pub mac: &'a str,
    /// The address it went to.
    pub address: &'a str,
    /// The per-boot token's id.
    pub token_id: &'a str,
    /// SHA-256 of its secret.
    pub token_sha256: &'a str,
    /// Its secret, sealed.
    pub token_sealed: &'a str,
}

/// A network boot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRow {
    /// Its number.
    pub id: i64,
    /// The node booting.
    pub node: String,
    /// Why Ferric started it (for people).
    pub cause: String,
    /// When, ms since the epoch.
    pub armed_at_ms: i64,
    /// The script must be fetched and the ramdisk enroll before this.
    pub expires_at_ms: i64,
    /// The MAC whose script was handed out.
    pub mac: Option<String>,
    /// The address it was handed to (the one DHCP gave that MAC).
    pub address: Option<String>,
    /// The per-boot token's id, once the script was handed out.
    pub token_id: Option<String>,
    /// SHA-256 of its secret.
    pub token_sha256: Option<String>,
    /// Its secret, sealed (the same script goes again to the same address).
    pub token_sealed: Option<String>,
    /// SHA-256 of the enrolled ramdisk's public key.
    pub ramdisk_key: Option<String>,
    /// When the ramdisk enrolled.
    pub enrolled_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
    /// How.
    pub end: Option<BootEnd>,
    /// Why, for people.
    pub end_reason: Option<String>,
}

impl BootRow {
    /// Whether it still runs at `now_ms`: not ended, and enrolled or not yet expired.
    pub fn open(&self, now_ms: i64) -> bool {
        self.ended_at_ms.is_none() && (self.enrolled_at_ms.is_some() || now_ms < self.expires_at_ms)
    }
}

/// `SELECT` of every column of `boots` a [`BootRow`] holds, then the rest of the statement.
macro_rules! select_boots {
    ($rest:literal) => {
        concat!(
            "SELECT id, node, cause, armed_at_ms, expires_at_ms, mac, address, token_id, \
             token_sha256, token_sealed, ramdisk_key, enrolled_at_ms, ended_at_ms, end_kind, \
             end_reason FROM boots ",
            $rest
        )
    };
}

impl Store {
    fn boot_row(r: &AnyRow) -> Result<BootRow, StoreError> {
        Ok(BootRow {
            id: r.try_get("id")?,
            node: r.try_get("node")?,
            cause: r.try_get("cause")?,
            armed_at_ms: r.try_get("armed_at_ms")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
            mac: r.try_get("mac")?,
            address: r.try_get("address")?,
            token_id: r.try_get("token_id")?,
            token_sha256: r.try_get("token_sha256")?,
            token_sealed: r.try_get("token_sealed")?,
            ramdisk_key: r.try_get("ramdisk_key")?,
            enrolled_at_ms: r.try_get("enrolled_at_ms")?,
            ended_at_ms: r.try_get("ended_at_ms")?,
            end: r
                .try_get::<Option<String>, _>("end_kind")?
                .as_deref()
                .and_then(BootEnd::parse),
            end_reason: r.try_get("end_reason")?,
        })
    }

    /// Starts a network boot of `node`, ending the boots of it still open; returns it.
    pub async fn arm_boot(
        &self,
        node: &str,
        cause: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<BootRow, StoreError> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await?;
        sqlx::query(
            "UPDATE boots SET ended_at_ms = $1, end_kind = $2, end_reason = $3 \
             WHERE node = $4 AND ended_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(BootEnd::Superseded.as_str())
        .bind(format!("a newer boot was started ({cause})"))
        .bind(node)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO boots (node, cause, armed_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(node)
        .bind(cause)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(select_boots!("WHERE node = $1 ORDER BY id DESC LIMIT 1"))
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Self::boot_row(&row)
    }

    /// The newest boot of `node`, whatever its state.
    pub async fn latest_boot(&self, node: &str) -> Result<Option<BootRow>, StoreError> {
        let q = sqlx::query(select_boots!("WHERE node = $1 ORDER BY id DESC LIMIT 1"));
        self.fetch_row(q.bind(node), Self::boot_row).await
    }

    /// The boot whose per-boot token is `token_id`.
    pub async fn boot_of_token(&self, token_id: &str) -> Result<Option<BootRow>, StoreError> {
        let q = sqlx::query(select_boots!("WHERE token_id = $1"));
        self.fetch_row(q.bind(token_id), Self::boot_row).await
    }

    /// The newest boot of `node` whose ramdisk enrolled with the key `key_sha256`.
    pub async fn boot_of_ramdisk(
        &self,
        node: &str,
        key_sha256: &str,
    ) -> Result<Option<BootRow>, StoreError> {
        let q = sqlx::query(select_boots!(
            "WHERE node = $1 AND ramdisk_key = $2 ORDER BY id DESC LIMIT 1"
        ));
        self.fetch_row(q.bind(node).bind(key_sha256), Self::boot_row)
            .await
    }

    /// Binds boot `id`'s script to a MAC and an address with its per-boot token (only the hash
    /// of its secret, and the secret sealed); false when the boot ended or has a token already.
    pub async fn boot_script_issued(
        &self,
        id: i64,
        script: &IssuedScript<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE boots SET mac = $1, address = $2, token_id = $3, token_sha256 = $4, \
             token_sealed = $5, script_at_ms = $6 \
             WHERE id = $7 AND token_id IS NULL AND ended_at_ms IS NULL",
        )
        .bind(script.mac)
        .bind(script.address)
        .bind(script.token_id)
        .bind(script.token_sha256)
        .bind(script.token_sealed)
        .bind(now_ms)
        .bind(id);
        Ok(self.run(q).await? == 1)
    }

    /// Records that boot `id`'s ramdisk enrolled from `address` with the key `key_sha256`:
    /// the token is used up. False when it was used, or the boot ended, meanwhile.
    pub async fn boot_enrolled(
        &self,
        id: i64,
        key_sha256: &str,
        address: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let q = sqlx::query(
            "UPDATE boots SET ramdisk_key = $1, enrolled_at_ms = $2, enrolled_from = $3 \
             WHERE id = $4 AND enrolled_at_ms IS NULL AND ended_at_ms IS NULL",
        )
        .bind(key_sha256)
        .bind(now_ms)
        .bind(address)
        .bind(id);
        Ok(self.run(q).await? == 1)
    }

    /// Ends every open boot of `node`; how many.
    pub async fn end_boots(
        &self,
        node: &str,
        end: BootEnd,
        reason: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let q = sqlx::query(
            "UPDATE boots SET ended_at_ms = $1, end_kind = $2, end_reason = $3 \
             WHERE node = $4 AND ended_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(end.as_str())
        .bind(reason)
        .bind(node);
        self.run(q).await
    }
}
