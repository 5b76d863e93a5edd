//! A remote console's side of RMCP+: a session opened with cipher suite 17 or 3, and one
//! command at a time over it, each datagram sent again (the same bytes) when no answer came
//! in time — over a lossy management network one lost datagram must not cost a whole login.
//!
//! The suite: with [`SuiteChoice::Auto`] Open Session asks for 17 and, when the BMC refuses
//! it (an Open Session status naming the algorithms, an answer with other algorithms, or no
//! answer), for 3. Open Session comes before any credential is checked, so asking costs no
//! failed login on BMCs that lock accounts out; Get Channel Cipher Suites would cost a
//! round trip on every BMC and is missing on some. [`SuiteChoice::Only`] asks for one
//! suite and nothing else. Anything weaker than asked — an IPMI 1.5-only BMC, a session
//! without integrity or confidentiality — is refused, never used.

use crate::packet::{Datagram, parse, parse_response, payload, plus_frame, request, v15_frame};
use crate::suite::{Rakp, SessionKeys, Suite};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Which suites a session may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteChoice {
    /// 17, else 3.
    Auto,
    /// This suite only (for BMCs that must not be asked twice).
    Only(Suite),
}

/// How long to wait.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Wait for one answer, resends included.
    pub exchange_timeout: Duration,
    /// Send the same datagram again after this long without an answer.
    pub resend_after: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            exchange_timeout: Duration::from_millis(400),
            resend_after: Duration::from_millis(100),
        }
    }
}

/// Why no session was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// No answer (or none that made sense): retrying may work.
    NoAnswer(String),
    /// The user name or password was refused.
    Refused(String),
    /// The user may not have an administrator session.
    Privilege(String),
    /// The BMC offers nothing Ferric accepts (IPMI 1.5 only, weaker algorithms, no suite
    /// in common).
    Unsupported(String),
    /// A setup spoiled by a datagram sent twice (the BMC answered a copy with a new
    /// random number): not evidence of a wrong password; retrying may work.
    Spoiled(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::NoAnswer(m)
            | LoginError::Refused(m)
            | LoginError::Privilege(m)
            | LoginError::Unsupported(m)
            | LoginError::Spoiled(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LoginError {}

/// An open session.
pub struct Session {
    sock: UdpSocket,
    opts: ClientOptions,
    suite: Suite,
    keys: SessionKeys,
    console_id: u32,
    bmc_id: u32,
    out_seq: u32,
    rq_seq: u8,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("suite", &self.suite)
            .field("bmc_id", &self.bmc_id)
            .finish_non_exhaustive()
    }
}

/// Sends `out` and waits for a datagram `accept` takes, sending `out` again every
/// `resend_after`; `resent` counts the copies.
fn exchange<T>(
    sock: &UdpSocket,
    opts: &ClientOptions,
    out: &[u8],
    resent: &mut u32,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let started = Instant::now();
    let mut buf = [0u8; 1500];
    let mut sent_at = Instant::now();
    sock.send(out).ok()?;
    loop {
        let left = opts.exchange_timeout.checked_sub(started.elapsed())?;
        let until_resend = opts.resend_after.saturating_sub(sent_at.elapsed());
        let wait = left.min(until_resend).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).ok()?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                if let Some(t) = accept(&buf[..n]) {
                    return Some(t);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(_) => return None,
        }
        if sent_at.elapsed() >= opts.resend_after && started.elapsed() < opts.exchange_timeout {
            *resent += 1;
            sent_at = Instant::now();
            sock.send(out).ok()?;
        }
    }
}

/// The RMCP+ payload of type `ty` in `d`, outside a session.
fn setup_payload(d: &[u8], ty: u8) -> Option<Vec<u8>> {
    match parse(d).ok()? {
        Datagram::Plus(p) if p.payload_type == ty && p.session_id == 0 => Some(p.payload.to_vec()),
        _ => None,
    }
}

/// Open Session statuses that say "not this suite": invalid authentication, integrity or
/// confidentiality algorithm, no matching suite, illegal parameter.
fn refuses_suite(status: u8) -> bool {
    matches!(status, 0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11 | 0x12)
}

enum Opened {
    Yes { bmc_id: u32 },
    NotThisSuite(String),
    Failed(LoginError),
}

impl Session {
    /// Opens an administrator session with the BMC at `addr`.
    pub fn open(
        addr: SocketAddr,
        user: &str,
        password: &[u8],
        choice: SuiteChoice,
        opts: ClientOptions,
    ) -> Result<Session, LoginError> {
        if user.len() > 16 {
            return Err(LoginError::Refused(format!(
                "the user name `{user}` is longer than IPMI's 16 bytes"
            )));
        }
        if password.len() > 20 {
            return Err(LoginError::Refused(
                "the password is longer than IPMI's 20 bytes".into(),
            ));
        }
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(addr)
        } else {
            "[::]:0".parse().unwrap_or(addr)
        };
        let sock = UdpSocket::bind(bind)
            .and_then(|s| s.connect(addr).map(|()| s))
            .map_err(|e| LoginError::NoAnswer(format!("cannot open a UDP socket: {e}")))?;
        let mut resent = 0;
        // Get Channel Authentication Capabilities (IPMI 2.0 data, administrator), as
        // ipmitool starts: whether the BMC answers IPMI at all, and speaks RMCP+.
        let caps = exchange(
            &sock,
            &opts,
            &v15_frame(&request(0x06, 0x38, 0, &[0x8e, 0x04])),
            &mut resent,
            |d| match parse(d).ok()? {
                Datagram::V15 { message, .. } => {
                    let r = parse_response(message).ok()?;
                    (r.cmd == 0x38).then(|| (r.cc, r.data.to_vec()))
                }
                _ => None,
            },
        )
        .ok_or_else(|| {
            LoginError::NoAnswer("no answer to Get Channel Authentication Capabilities".into())
        })?;
        match caps {
            (0, d) if d.len() >= 4 && d[1] & 0x80 != 0 && d[3] & 0x02 != 0 => {}
            (0, _) => {
                return Err(LoginError::Unsupported(
                    "the BMC offers only IPMI 1.5 sessions (no RMCP+): Ferric opens none without integrity and confidentiality".into(),
                ));
            }
            (cc, _) => {
                return Err(LoginError::NoAnswer(format!(
                    "Get Channel Authentication Capabilities failed (completion code {cc:#04x})"
                )));
            }
        }
        let suites: &[Suite] = match choice {
            SuiteChoice::Auto => &Suite::ALL,
            SuiteChoice::Only(ref s) => std::slice::from_ref(s),
        };
        let mut why = Vec::new();
        for &suite in suites {
            let console_id = rand::random::<u32>().max(1);
            match open_session(&sock, &opts, suite, console_id) {
                Opened::Yes { bmc_id } => {
                    return Session::authenticate(
                        sock, opts, suite, console_id, bmc_id, user, password,
                    );
                }
                Opened::NotThisSuite(m) => why.push(format!("cipher suite {}: {m}", suite.id())),
                Opened::Failed(e) => return Err(e),
            }
        }
        let all_silent = why.iter().all(|w| w.ends_with("no answer"));
        let message = format!("no cipher suite in common ({})", why.join("; "));
        Err(if all_silent {
            LoginError::NoAnswer(message)
        } else {
            LoginError::Unsupported(message)
        })
    }

    fn authenticate(
        sock: UdpSocket,
        opts: ClientOptions,
        suite: Suite,
        console_id: u32,
        bmc_id: u32,
        user: &str,
        password: &[u8],
    ) -> Result<Session, LoginError> {
        let mut rakp = Rakp {
            console_id: console_id.to_le_bytes(),
            bmc_id: bmc_id.to_le_bytes(),
            console_random: rand::random(),
            // Administrator, looked up by name *and* privilege: a BMC refuses an account
            // without administrator rights here (with name-only lookup, 0x14, ipmi_sim opens
            // such an account an administrator session).
            role: 0x04,
            user: user.as_bytes().to_vec(),
            ..Rakp::default()
        };
        let mut m1 = vec![0x00, 0, 0, 0];
        m1.extend_from_slice(&rakp.bmc_id);
        m1.extend_from_slice(&rakp.console_random);
        m1.extend_from_slice(&[rakp.role, 0, 0, rakp.user.len() as u8]);
        m1.extend_from_slice(&rakp.user);
        let mut resent = 0;
        let m2 = exchange(
            &sock,
            &opts,
            &plus_frame(payload::RAKP1, 0, 0, &m1, None),
            &mut resent,
            |d| {
                let p = setup_payload(d, payload::RAKP2)?;
                (p.len() >= 8 && p[4..8] == rakp.console_id).then_some(p)
            },
        )
        .ok_or_else(|| LoginError::NoAnswer("no answer to RAKP message 1".into()))?;
        match m2[1] {
            0 => {}
            0x09 | 0x0a => {
                return Err(LoginError::Privilege(format!(
                    "user `{user}` may not open an administrator session (RAKP status {:#04x})",
                    m2[1]
                )));
            }
            0x0c | 0x0d => {
                return Err(LoginError::Refused(format!(
                    "the login as `{user}` was refused: no administrator of that name (RAKP status {:#04x})",
                    m2[1]
                )));
            }
            s => {
                return Err(LoginError::NoAnswer(format!(
                    "RAKP message 2 has status {s:#04x}"
                )));
            }
        }
        let n = suite.hash_len();
        if m2.len() < 40 + n {
            return Err(LoginError::NoAnswer("a short RAKP message 2".into()));
        }
        rakp.bmc_random.copy_from_slice(&m2[8..24]);
        rakp.guid.copy_from_slice(&m2[24..40]);
        let want = rakp.rakp2_code(suite, password);
        if !same(&want, &m2[40..40 + n]) {
            let m = format!(
                "the login as `{user}` was refused (RAKP 2's code does not match: wrong password)"
            );
            return Err(if resent > 0 {
                LoginError::Spoiled(m)
            } else {
                LoginError::Refused(m)
            });
        }
        let mut m3 = vec![0x00, 0, 0, 0];
        m3.extend_from_slice(&rakp.bmc_id);
        m3.extend_from_slice(&rakp.rakp3_code(suite, password));
        let m4 = exchange(
            &sock,
            &opts,
            &plus_frame(payload::RAKP3, 0, 0, &m3, None),
            &mut resent,
            |d| {
                let p = setup_payload(d, payload::RAKP4)?;
                (p.len() >= 8 && p[4..8] == rakp.console_id).then_some(p)
            },
        )
        .ok_or_else(|| LoginError::NoAnswer("no answer to RAKP message 3".into()))?;
        if m4[1] != 0 {
            // RAKP 2 proved the password right: a refusal here comes from a copy of RAKP 1
            // that made the BMC draw a new random number.
            return Err(LoginError::Spoiled(format!(
                "RAKP message 4 has status {:#04x}",
                m4[1]
            )));
        }
        let sik = rakp.sik(suite, password);
        let icv = rakp.rakp4_icv(suite, &sik);
        if !same(&icv, m4.get(8..8 + icv.len()).unwrap_or_default()) {
            return Err(LoginError::Spoiled(
                "RAKP message 4's integrity check value does not match".into(),
            ));
        }
        let mut s = Session {
            sock,
            opts,
            suite,
            keys: SessionKeys::derive(suite, &sik),
            console_id,
            bmc_id,
            out_seq: 0,
            rq_seq: 0,
        };
        match s.command(0x06, 0x3b, &[0x04]) {
            Some((0, _)) => Ok(s),
            Some((cc, _)) => Err(LoginError::Privilege(format!(
                "user `{user}` cannot raise the session to administrator (completion code {cc:#04x})"
            ))),
            None => Err(LoginError::NoAnswer(
                "no answer to Set Session Privilege Level".into(),
            )),
        }
    }

    /// The session's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The BMC's id of the session.
    pub fn id(&self) -> u32 {
        self.bmc_id
    }

    /// One command: its completion code and data, or `None` when no answer came within the
    /// exchange timeout (resends included).
    pub fn command(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Option<(u8, Vec<u8>)> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        let msg = request(netfn, cmd, self.rq_seq, data);
        let body = self.keys.encrypt(&msg, rand::random());
        let out = plus_frame(
            payload::IPMI | payload::ENCRYPTED | payload::AUTHENTICATED,
            self.bmc_id,
            self.out_seq,
            &body,
            Some(&self.keys),
        );
        let (keys, console_id, seq) = (&self.keys, self.console_id, self.rq_seq);
        let mut resent = 0;
        exchange(&self.sock, &self.opts, &out, &mut resent, |d| {
            let Ok(Datagram::Plus(p)) = parse(d) else {
                return None;
            };
            if p.payload_type != payload::IPMI
                || p.session_id != console_id
                || !(p.encrypted && p.authenticated && p.verify(keys))
            {
                return None;
            }
            let plain = keys.decrypt(p.payload)?;
            let r = parse_response(&plain).ok()?;
            (r.seq == seq && r.cmd == cmd && r.netfn == netfn | 1).then(|| (r.cc, r.data.to_vec()))
        })
    }

    /// Closes the session on the BMC (BMCs hold a handful per user).
    pub fn close(mut self) {
        let id = self.bmc_id.to_le_bytes();
        let _ = self.command(0x06, 0x3c, &id);
    }
}

/// Open Session for `suite`.
fn open_session(sock: &UdpSocket, opts: &ClientOptions, suite: Suite, console_id: u32) -> Opened {
    let (a, i, c) = suite.algorithms();
    let tag = rand::random::<u8>();
    // Administrator as the highest privilege asked for.
    let mut p = vec![tag, 0x04, 0, 0];
    p.extend_from_slice(&console_id.to_le_bytes());
    p.extend_from_slice(&[0x00, 0, 0, 8, a, 0, 0, 0]);
    p.extend_from_slice(&[0x01, 0, 0, 8, i, 0, 0, 0]);
    p.extend_from_slice(&[0x02, 0, 0, 8, c, 0, 0, 0]);
    let mut resent = 0;
    let answer = exchange(
        sock,
        opts,
        &plus_frame(payload::OPEN_SESSION_REQUEST, 0, 0, &p, None),
        &mut resent,
        |d| {
            let r = setup_payload(d, payload::OPEN_SESSION_RESPONSE)?;
            (r.len() >= 8 && r[0] == tag && r[4..8] == console_id.to_le_bytes()).then_some(r)
        },
    );
    let Some(r) = answer else {
        return Opened::NotThisSuite("no answer".into());
    };
    match r[1] {
        0 => {}
        s if refuses_suite(s) => return Opened::NotThisSuite(format!("refused (status {s:#04x})")),
        0x01 => {
            return Opened::Failed(LoginError::NoAnswer(
                "the BMC has no room for another session (status 0x01)".into(),
            ));
        }
        0x09..=0x0b => {
            return Opened::Failed(LoginError::Privilege(format!(
                "the BMC opens no administrator session (status {:#04x})",
                r[1]
            )));
        }
        s => {
            return Opened::Failed(LoginError::NoAnswer(format!(
                "Open Session failed (status {s:#04x})"
            )));
        }
    }
    if r.len() < 36 {
        return Opened::Failed(LoginError::NoAnswer("a short Open Session Response".into()));
    }
    // The algorithms are not covered by RAKP's codes: a session with others than asked
    // would be a weaker one.
    if (r[16] & 0x3f, r[24] & 0x3f, r[32] & 0x3f) != (a, i, c) {
        return Opened::NotThisSuite(format!(
            "the BMC answered with other algorithms ({}, {}, {})",
            r[16], r[24], r[32]
        ));
    }
    let bmc_id = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
    if bmc_id == 0 {
        return Opened::Failed(LoginError::NoAnswer(
            "Open Session gave session id 0".into(),
        ));
    }
    Opened::Yes { bmc_id }
}

/// Constant-time equality.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |x, (p, q)| x | (p ^ q)) == 0
}
