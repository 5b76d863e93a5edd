//! RMCP+ sessions and exchanges: opening a session at administrator privilege through the
//! relay, and one command retried with backoff until it is answered or the deadline passes.

use super::commands::{Raw, completion};
use crate::bmc::retransmit::Relay;
use crate::bmc::{BmcError, BmcErrorKind, BmcTarget};
use ipmi_rs::connection::NetFn;
use ipmi_rs::rmcp::{ActivationError, Rmcp, V2_0ActivationError};
use ipmi_rs::{Ipmi, IpmiError};
use std::time::{Duration, Instant};

/// How hard the client tries.
#[derive(Debug, Clone, Copy)]
pub struct IpmiOptions {
    /// Wait for one answer before sending again.
    pub exchange_timeout: Duration,
    /// Give up on an operation after this long.
    pub deadline: Duration,
    /// Least time between two operations on one BMC (BMCs are small computers).
    pub min_interval: Duration,
}

impl Default for IpmiOptions {
    fn default() -> Self {
        IpmiOptions {
            exchange_timeout: Duration::from_millis(400),
            deadline: Duration::from_secs(30),
            min_interval: Duration::from_millis(10),
        }
    }
}

/// An error about BMC `t`.
pub(super) fn fail(t: &BmcTarget, kind: BmcErrorKind, message: impl Into<String>) -> BmcError {
    BmcError {
        kind,
        bmc: t.addr(),
        message: message.into(),
    }
}

/// One BMC's session, and the relay under it.
pub(super) struct Conn {
    pub(super) ipmi: Option<Ipmi<Rmcp>>,
    pub(super) relay: Option<Relay>,
    pub(super) last: Option<Instant>,
}

/// Whether an activation failure means the credentials were refused.
fn auth_refused(e: &ActivationError) -> bool {
    matches!(
        e,
        ActivationError::V2_0(
            V2_0ActivationError::RakpMessage2Parse(_)
                | V2_0ActivationError::RakpMessage2Validate(_)
                | V2_0ActivationError::RakpMessage4Parse(_)
                | V2_0ActivationError::RakpMessage4Validate(_)
                | V2_0ActivationError::RakpMessage4InvalidIntegrityCheckValue
                | V2_0ActivationError::ServerAuthenticationFailed
        )
    )
}

/// Sessions are shared by calls with the same address *and* credentials: two nodes enrolled
/// on one BMC with different passwords must not ride on each other's session.
pub(super) fn session_key(t: &BmcTarget) -> String {
    use sha2::Digest;
    let pw = sha2::Sha256::digest(t.password.expose().as_bytes());
    format!("{}@{}#{}", t.user, t.addr(), hex::encode(&pw[..8]))
}

/// Login refusals in a row that make an authentication failure final.
const LOGIN_REFUSALS: u32 = 2;

/// Opens an RMCP+ session at administrator privilege; `copy_setup` lets the relay copy RAKP
/// messages. A failure that retrying cannot fix comes with its kind.
fn open(
    t: &BmcTarget,
    opts: &IpmiOptions,
    relay: &mut Option<Relay>,
    copy_setup: bool,
) -> Result<Ipmi<Rmcp>, (Option<BmcErrorKind>, String)> {
    use std::net::ToSocketAddrs;
    if relay.is_none() {
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| (None, format!("cannot resolve `{}`", t.host)))?;
        *relay = Some(
            Relay::start(addr, opts.exchange_timeout / 4, 3, opts.exchange_timeout)
                .map_err(|e| (None, format!("cannot open a UDP socket: {e}")))?,
        );
    }
    let (local, copied) = relay
        .as_ref()
        .map(|r| {
            r.copy_setup
                .store(copy_setup, std::sync::atomic::Ordering::Relaxed);
            r.clear_refusal();
            (r.local, r.setup_copied.clone())
        })
        .ok_or((None, String::new()))?;
    let copied_before = copied.load(std::sync::atomic::Ordering::Relaxed);
    let mut rmcp = Rmcp::new(local, opts.exchange_timeout)
        .map_err(|e| (None, format!("cannot reach the address: {e}")))?;
    // ipmi-rs 0.6 panics on some unexpected datagrams during activation (an unwrap on a
    // decryption failure); a stray packet must cost a retry, not the agent.
    let activated = crate::bmc::contained(|| {
        rmcp.activate(true, Some(&t.user), Some(t.password.expose().as_bytes()))
    })
    .map_err(|_| {
        (
            None,
            "the session setup met an unexpected datagram".to_owned(),
        )
    })?;
    activated
        .map_err(|e| {
            let detail = format!("{e:?}");
            if let Some(why) = relay.as_ref().and_then(|r| r.refusal()) {
                (Some(BmcErrorKind::Unsupported), why.to_owned())
            } else if copied.load(std::sync::atomic::Ordering::Relaxed) != copied_before {
                // A copy of a RAKP message may have made the BMC change its random number
                // under this login: not evidence of a wrong password.
                (
                    None,
                    format!(
                        "login failed after a RAKP message was sent again: {}",
                        short(&e)
                    ),
                )
            } else if detail.contains("Role") {
                (
                    Some(BmcErrorKind::InsufficientPrivilege),
                    format!("user `{}` may not open an administrator session", t.user),
                )
            } else if auth_refused(&e) {
                (
                    Some(BmcErrorKind::AuthFailed),
                    format!(
                        "the login as `{}` was refused (wrong user name or password, or no administrator rights)",
                        t.user
                    ),
                )
            } else {
                (None, format!("no RMCP+ session: {}", short(&e)))
            }
        })?;
    let mut ipmi = Ipmi::new(rmcp);
    // Without this, chassis commands fail with "insufficient privilege" (0xD4).
    ipmi.send_recv(Raw::new(NetFn::App, 0x3b, vec![0x04]))
        .map_err(|e| match e {
            IpmiError::Failed {
                completion_code, ..
            } => {
                let (kind, msg) = completion(completion_code);
                (
                    Some(kind),
                    format!("cannot raise the session to administrator: {msg}"),
                )
            }
            other => (
                None,
                format!(
                    "cannot raise the session to administrator: {}",
                    short(&other)
                ),
            ),
        })?;
    Ok(ipmi)
}

/// The first words of a debug rendering (ipmi-rs errors carry no Display).
fn short(e: &dyn std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    s.chars().take(120).collect()
}

/// One command, retried until it is answered or the deadline passes.
pub(super) fn exchange(
    conn: &mut Conn,
    t: &BmcTarget,
    opts: &IpmiOptions,
    request: Raw,
) -> Result<Vec<u8>, BmcError> {
    let started = Instant::now();
    if let Some(last) = conn.last
        && last.elapsed() < opts.min_interval
    {
        std::thread::sleep(opts.min_interval - last.elapsed());
    }
    let mut silent = 0u32;
    let mut refused = 0u32;
    let mut attempt = 0u32;
    let mut last_problem = String::from("no answer");
    let mut logins = 0u32;
    loop {
        if started.elapsed() >= opts.deadline {
            conn.last = Some(Instant::now());
            let kind = if attempt > 0 && silent == attempt {
                BmcErrorKind::Unreachable
            } else {
                BmcErrorKind::Timeout
            };
            return Err(fail(
                t,
                kind,
                format!(
                    "no answer after {attempt} attempts in {:.1} s ({last_problem})",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        if attempt > 0 {
            // Backoff with a little jitter, bounded by the deadline. Each try already waited an
            // exchange timeout for its answer, which paces a BMC that is merely busy; on a
            // lossy path long pauses only add up (at 30% loss they made logins miss the
            // deadline), so the pause stays short.
            let base = (25u64 << attempt.min(3)).min(200);
            let jitter = rand::random::<u64>() % (base / 2 + 1);
            let left = opts.deadline.saturating_sub(started.elapsed());
            std::thread::sleep(Duration::from_millis(base + jitter).min(left));
        }
        attempt += 1;
        if conn.ipmi.is_none() {
            // Every other login lets the relay copy RAKP messages (see relay.rs).
            logins += 1;
            match open(t, opts, &mut conn.relay, logins % 2 == 1) {
                Ok(i) => conn.ipmi = Some(i),
                Err((Some(kind), msg)) => {
                    // On a lossy path a copy of a RAKP message can spoil a login; a refusal
                    // counts once it repeats. A session setup Ferric does not accept is final.
                    refused += 1;
                    if refused >= LOGIN_REFUSALS || kind == BmcErrorKind::Unsupported {
                        conn.last = Some(Instant::now());
                        return Err(fail(t, kind, msg));
                    }
                    last_problem = msg;
                    conn.relay = None;
                    continue;
                }
                Err((None, msg)) => {
                    silent += 1;
                    last_problem = msg;
                    continue;
                }
            }
        }
        let Some(ipmi) = conn.ipmi.as_mut() else {
            continue;
        };
        let r = crate::bmc::contained(|| ipmi.send_recv(request.clone()));
        let Ok(r) = r else {
            // See `open`: a datagram ipmi-rs could not take; start a new session.
            silent += 1;
            last_problem = "an unexpected datagram".into();
            conn.ipmi = None;
            continue;
        };
        match r {
            Ok(answer) => {
                conn.last = Some(Instant::now());
                return Ok(answer);
            }
            Err(IpmiError::Failed {
                completion_code, ..
            }) => {
                conn.last = Some(Instant::now());
                let (kind, msg) = completion(completion_code);
                return Err(fail(t, kind, msg));
            }
            Err(e) => {
                // Lost (or stale) datagrams: ask again; after repeated silence the session may
                // be gone on the BMC's side, so open a new one.
                silent += 1;
                last_problem = short(&e);
                if silent.is_multiple_of(4) {
                    conn.ipmi = None;
                }
            }
        }
    }
}
