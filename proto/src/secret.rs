//! Secrets (BMC passwords) that never show in logs or debug output.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret: `***` in every `Debug`, taken out only with [`Secret::expose`]. On the wire it is
/// the string itself (serde transparent), so only messages that must carry it (the BMC
/// credentials an agent is sent over mutual TLS) do.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_only_when_exposed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
        let wire = postcard::to_allocvec(&s).unwrap();
        assert_eq!(wire, postcard::to_allocvec("hunter2").unwrap());
    }
}
