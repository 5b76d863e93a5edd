//! RMCP+ sessions and exchanges: a session at administrator privilege (ferric-ipmi's console
//! side: cipher suite 17, else 3, or the one the address names; the suite that worked is
//! remembered for the BMC's next session), and one command retried with backoff until it is
//! answered or the deadline passes.

use super::commands::{Raw, completion};
use crate::bmc::{BmcError, BmcErrorKind, BmcTarget};
use ferric_ipmi::client::{ClientOptions, LoginError, Session, SuiteChoice};
use ferric_ipmi::suite::Suite;
use ipmi_rs::connection::CompletionErrorCode;
use std::time::{Duration, Instant};

/// How hard the client tries.
#[derive(Debug, Clone, Copy)]
pub struct IpmiOptions {
    /// Wait for one answer before giving up on it (resends included).
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

/// One BMC's session, and what was learnt of the BMC.
#[derive(Default)]
pub(super) struct Conn {
    pub(super) session: Option<Session>,
    /// The suite the last session opened with: the next one asks for it alone.
    pub(super) suite: Option<Suite>,
    pub(super) last: Option<Instant>,
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

/// Opens an RMCP+ session at administrator privilege. A failure that retrying cannot fix
/// comes with its kind.
fn open(
    t: &BmcTarget,
    opts: &IpmiOptions,
    conn: &mut Conn,
) -> Result<Session, (Option<BmcErrorKind>, String)> {
    use std::net::ToSocketAddrs;
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| (None, format!("cannot resolve `{}`", t.host)))?;
    let choice = match (t.suite.and_then(Suite::from_id), conn.suite) {
        (Some(named), _) => SuiteChoice::Only(named),
        (None, Some(known)) => SuiteChoice::Only(known),
        (None, None) => SuiteChoice::Auto,
    };
    let client = ClientOptions {
        exchange_timeout: opts.exchange_timeout,
        resend_after: opts.exchange_timeout / 4,
    };
    match Session::open(
        addr,
        &t.user,
        t.password.expose().as_bytes(),
        choice,
        client,
    ) {
        Ok(s) => {
            conn.suite = Some(s.suite());
            Ok(s)
        }
        Err(e) => {
            if t.suite.is_none() && conn.suite.take().is_some() {
                // The BMC changed: the next try asks for every suite again.
                return Err((None, format!("the suite that worked before: {e}")));
            }
            Err(match e {
                LoginError::NoAnswer(m) | LoginError::Spoiled(m) => (None, m),
                LoginError::Refused(m) => (
                    Some(BmcErrorKind::AuthFailed),
                    format!("{m} (wrong user name or password, or no administrator rights)"),
                ),
                LoginError::Privilege(m) => (Some(BmcErrorKind::InsufficientPrivilege), m),
                LoginError::Unsupported(m) => (Some(BmcErrorKind::Unsupported), m),
            })
        }
    }
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
        if conn.session.is_none() {
            match open(t, opts, conn) {
                Ok(s) => conn.session = Some(s),
                Err((Some(kind), msg)) => {
                    // On a lossy path a copy of a RAKP message can spoil a login; a refusal
                    // counts once it repeats. A session setup Ferric does not accept is final.
                    refused += 1;
                    if refused >= LOGIN_REFUSALS || kind == BmcErrorKind::Unsupported {
                        conn.last = Some(Instant::now());
                        return Err(fail(t, kind, msg));
                    }
                    last_problem = msg;
                    continue;
                }
                Err((None, msg)) => {
                    silent += 1;
                    last_problem = msg;
                    continue;
                }
            }
        }
        let Some(session) = conn.session.as_mut() else {
            continue;
        };
        let (netfn, cmd, data) = request.parts();
        match session.command(netfn, cmd, data) {
            Some((0, answer)) => {
                conn.last = Some(Instant::now());
                return Ok(answer);
            }
            Some((cc, _)) => {
                conn.last = Some(Instant::now());
                let (kind, msg) = match CompletionErrorCode::try_from(cc) {
                    Ok(code) => completion(code),
                    Err(_) => (
                        BmcErrorKind::Failed,
                        format!("the BMC answered completion code {cc:#04x}"),
                    ),
                };
                return Err(fail(t, kind, msg));
            }
            None => {
                // Lost datagrams (each was sent again): ask again; after repeated silence the
                // session may be gone on the BMC's side, so open a new one.
                silent += 1;
                last_problem = format!("no answer to netfn {netfn:#04x} command {cmd:#04x}");
                if silent.is_multiple_of(4) {
                    conn.session = None;
                }
            }
        }
    }
}
