//! Images in the coordinator's store.

use serde::{Deserialize, Serialize};

/// An image as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageView {
    /// Name.
    pub name: String,
    /// Format of the content (`raw`, `qcow2`, …).
    pub format: String,
    /// Compression around it (`gzip`, `zstd`, `xz`), if any.
    pub wrapper: Option<String>,
    /// Size of the disk it holds, when known.
    pub virtual_size: Option<u64>,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the file as uploaded (also its address).
    pub sha256: String,
    /// sha512 of the file as uploaded.
    pub sha512: String,
    /// Format details from inspection.
    pub details: Vec<String>,
    /// Uploaded at, ms since the epoch.
    pub created_at_ms: i64,
    /// Path to fetch it from this server (`Range` requests welcome).
    pub path: String,
}

/// An image name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image name `{0}` must be 1 to 128 of A-Z a-z 0-9 . _ - and not start with a dot")]
pub struct ImageNameError(pub String);

/// Image names: what fits in a URL path segment and a file name without escaping.
pub fn check_name(name: &str) -> std::result::Result<(), ImageNameError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageNameError(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("debian-12.qcow2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
