//! Secrets at rest: BMC passwords are sealed (ChaCha20-Poly1305 from `ring`, a random nonce
//! each, bound to the row they belong to) with a key kept outside the database — a 32-byte
//! file readable by its owner only, `DATA_DIR/secrets.key` unless `--secrets-key` names
//! another place. A copy of `ferric.db` alone gives no password; the key alone gives none
//! either.
//!
//! Sealed text is `sealed:v1:<hex nonce><hex ciphertext and tag>`.

use ferric_proto::Secret;
use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PREFIX: &str = "sealed:v1:";
const KEY_LEN: usize = 32;

/// Errors of the secrets key and of sealed values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or written.
    #[error("secrets key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a key.
    #[error("secrets key {path} holds {len} bytes, not a {KEY_LEN}-byte key")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Others may read the key file.
    #[error(
        "secrets key {path} is readable by others (mode {mode:o}): `chmod 600` it (and consider \
         every password it sealed exposed)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A sealed value does not open with this key.
    #[error(
        "a stored secret of `{0}` does not open with this secrets key (another key, or the value \
         was altered)"
    )]
    Unsealable(String),
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// The key that seals secrets at rest.
pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// Loads the key at `path`, creating it (mode 0600) when there is none. A key others may
    /// read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::Io {
            path: path.to_owned(),
            source,
        };
        let rng = SystemRandom::new();
        let bytes = match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretsError::Exposed {
                        path: path.to_owned(),
                        mode,
                    });
                }
                std::fs::read(path).map_err(io)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; KEY_LEN];
                rng.fill(&mut key).map_err(|_| SecretsError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                crate::pki::write_private(path, &key).map_err(|e| match e {
                    crate::pki::PkiError::Io { source, .. } => io(source),
                    other => io(std::io::Error::other(other.to_string())),
                })?;
                tracing::info!(path = %path.display(), "secrets key created");
                key
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_key(&bytes).ok_or(SecretsError::BadKey {
            path: path.to_owned(),
            len: bytes.len(),
        })
    }

    /// A box around raw key bytes (`None` unless 32 bytes).
    pub fn from_key(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(SecretBox {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plain`, bound to `owner` (the row it belongs to: moved to another row, it no
    /// longer opens).
    pub fn seal(&self, owner: &str, plain: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| SecretsError::Random)?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(owner.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretsError::Random)?;
        Ok(format!(
            "{PREFIX}{}{}",
            hex::encode(nonce),
            hex::encode(buf)
        ))
    }

    /// Opens what [`SecretBox::seal`] sealed for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Secret, SecretsError> {
        let bad = || SecretsError::Unsealable(owner.to_owned());
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(bad)?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(owner.as_bytes()), &mut buf)
            .map_err(|_| bad())?;
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| bad())
    }
}

/// Whether `stored` is sealed (not a password kept in clear by an older version).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_key(&[7u8; 32]).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_for_its_owner_only_and_shows_nothing_of_itself() {
        let b = boxed();
        let s = b.seal("bm0", "hunter2-password").unwrap();
        assert!(is_sealed(&s) && !s.contains("hunter2"), "{s}");
        assert_eq!(b.open("bm0", &s).unwrap().expose(), "hunter2-password");
        // Two seals of one password differ (a nonce each).
        assert_ne!(s, b.seal("bm0", "hunter2-password").unwrap());
        // Another row, another key, an altered byte, a clear value: refused, naming the row.
        let e = b.open("bm1", &s).unwrap_err();
        assert!(e.to_string().contains("`bm1`"), "{e}");
        let other = SecretBox::from_key(&[8u8; 32]).unwrap();
        assert!(other.open("bm0", &s).is_err());
        let mut altered = s.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert!(b.open("bm0", &String::from_utf8(altered).unwrap()).is_err());
        assert!(b.open("bm0", "hunter2-password").is_err());
        assert!(b.open("bm0", "sealed:v1:00").is_err());
    }

    #[test]
    fn the_key_file_is_made_private_kept_and_refused_when_others_may_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let b = SecretBox::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let s = b.seal("bm0", "pw").unwrap();
        // Loaded again: the same key.
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open("bm0", &s).unwrap().expose(), "pw");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretBox::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"short").unwrap();
        let e = SecretBox::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("not a 32-byte key"), "{e}");
    }
}
