//! BMCs over IPMI 2.0.
//!
//! * Over the LAN ("lanplus": RMCP+ with cipher suite 17 or 3 — RAKP-HMAC-SHA256 or -SHA1,
//!   HMAC integrity, AES-CBC-128 confidentiality), on ferric-ipmi's session: the client in
//!   [`ipmi`] and the agent's BMC driver on it in `control` (cargo feature `agent`). One
//!   session per BMC, opened on first use and kept; one operation in flight per BMC (a
//!   per-BMC lock) and a minimum interval between operations; every datagram is sent again
//!   when unanswered, every exchange has a short timeout and is retried with backoff until
//!   the operation's deadline, re-opening the session after repeated silence, so that UDP
//!   loss costs time, not failures.
//! * In-band, through the kernel's IPMI device, for the deploy ramdisk: `inband` (cargo
//!   feature `inband`).
//!
//! Both use the command encodings and decoders of [`ipmi`], which are always compiled.
//! Errors come in stable kinds and name the BMC; the password is never printed (see
//! [`Secret`]).

#[cfg(feature = "agent")]
pub mod control;
#[cfg(feature = "inband")]
pub mod inband;
pub mod ipmi;
#[cfg(feature = "agent")]
pub mod redfish;
#[cfg(test)]
#[cfg(feature = "agent")]
mod sim;

thread_local! {
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs third-party code that may panic on hostile input (ipmi-rs unwraps on some datagrams
/// and records) and catches the panic: it costs the operation, not the agent. The panic is
/// logged at debug level instead of printed as if the process were crashing; panics elsewhere
/// reach the previous hook as before.
pub fn contained<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CONTAINING.with(std::cell::Cell::get) {
                tracing::debug!(panic = %info, "caught a panic in ipmi-rs");
            } else {
                previous(info);
            }
        }));
    });
    let outer = CONTAINING.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    r
}

use std::fmt;

pub use ferric_proto::Secret;

/// Where a BMC is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcTarget {
    /// Host name or address.
    pub host: String,
    /// UDP port (623 by default).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// The one IPMI cipher suite to use (`?suite=17|3` in the address); `None`: 17, else 3.
    pub suite: Option<u8>,
}

impl BmcTarget {
    /// `host:port`, how errors and logs name the BMC.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses `ipmi://USER@HOST[:PORT][?suite=17|3]` (the password comes separately).
    pub fn parse(url: &str, password: Secret) -> Result<BmcTarget, BmcTargetError> {
        let a = ferric_proto::msg::BmcAddress::parse(url)?;
        if a.scheme != ferric_proto::msg::BmcScheme::Ipmi {
            return Err(BmcTargetError::NotIpmi(url.to_owned()));
        }
        Ok(BmcTarget {
            host: a.host,
            port: a.port,
            user: a.user,
            password,
            suite: a.suite,
        })
    }
}

/// A BMC target that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcTargetError {
    /// The address is not `ipmi://USER@HOST[:PORT]`, or holds a password.
    #[error(transparent)]
    Address(#[from] ferric_proto::msg::BmcAddressError),
    /// A BMC of another protocol.
    #[error("`{0}` is not an ipmi:// address")]
    NotIpmi(String),
}

/// Stable kinds of BMC failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcErrorKind {
    /// The user name or password was refused.
    AuthFailed,
    /// The BMC did not answer (after every retry).
    Unreachable,
    /// The user's privilege does not allow the command.
    InsufficientPrivilege,
    /// The BMC does not implement the command.
    Unsupported,
    /// The operation's deadline passed.
    Timeout,
    /// The BMC answered with an error or something unexpected.
    Failed,
    /// The requested record is not present (completion code 0xCB): an empty log or
    /// repository.
    NotPresent,
}

/// A BMC failure, naming the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcError {
    /// Kind.
    pub kind: BmcErrorKind,
    /// The BMC (`host:port`).
    pub bmc: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for BmcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BMC {}: {}", self.bmc, self.message)
    }
}

impl std::error::Error for BmcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_never_show_the_password() {
        let t = BmcTarget::parse("ipmi://admin@10.0.0.5:6230", Secret::new("hunter2")).unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("admin", "10.0.0.5", 6230)
        );
        assert_eq!(t.addr(), "10.0.0.5:6230");
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = BmcTarget::parse("ipmi://root@[fd00::5]", Secret::new("x")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", 623));
        assert_eq!(t.addr(), "[fd00::5]:623");
        for bad in [
            "http://a@b",
            "ipmi://host",
            "ipmi://a:pw@host",
            "ipmi://a@host:port",
            "ipmi://@host",
            "redfish://a@host",
        ] {
            assert!(BmcTarget::parse(bad, Secret::new("x")).is_err(), "{bad}");
        }
    }
}
