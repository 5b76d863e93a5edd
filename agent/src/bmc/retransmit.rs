//! Retransmission under `ipmi-rs`: its RMCP+ session sends each datagram once and waits, so
//! over a lossy management network one lost datagram fails a whole session setup (four round
//! trips). Ferric puts a small relay on loopback between the session and the BMC: each request
//! is forwarded, and sent again (the same bytes) when no answer came within the
//! retransmission timeout, a few times. A BMC that already answered a request ignores or
//! re-answers the copy, and only the first answer goes up; the session above still times out
//! and retries with a new sequence number if every copy is lost.
//!
//! Session setup is special (see `run`): Open Session is never copied, RAKP 1 and 3 only when
//! the client asks for it ([`Relay::copy_setup`]) and more slowly; the client learns from
//! [`Relay::setup_copied`] whether a failed login may have been spoiled by a copy.
//!
//! The relay also holds the session setup to what Ferric accepts, where `ipmi-rs` offers no
//! option:
//! * `ipmi-rs` sends an RMCP/ASF Presence Ping first and opens no session without the Pong.
//!   Many BMCs never answer ASF (pyghmi's, as VirtualBMC runs it, drops every datagram that is
//!   not IPMI; several vendors' do the same), and ipmitool never asks. The relay answers the
//!   ping itself and sends nothing, so the first datagram the BMC sees is Get Channel
//!   Authentication Capabilities, as from ipmitool; a BMC that speaks no IPMI stays silent to
//!   that and the login fails as unreachable.
//! * A BMC whose capabilities offer no IPMI 2.0 would make `ipmi-rs` fall back to an IPMI 1.5
//!   session (MD5 or a password in clear, no encryption); an Open Session Response that picks
//!   other integrity or confidentiality algorithms than the HMAC-SHA1-96 and AES-CBC-128
//!   asked for (the algorithms are not covered by RAKP's hashes) would give a session
//!   without them. Neither answer is passed up; [`Relay::refusal`] says why.

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::datagram::{
    Refusal, answer_kind, is_login, kind, opened_session, pong_for, refused_answer,
};

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct Relay {
    /// Where the session should send (a loopback address).
    pub local: SocketAddr,
    /// Whether RAKP 1 and 3 may be copied (the client turns it off for every other login, so
    /// that a BMC slower than the copy interval still gets logins it can answer).
    pub copy_setup: Arc<AtomicBool>,
    /// Copies of RAKP 1 or 3 sent so far.
    pub setup_copied: Arc<AtomicU32>,
    /// The BMC's id of the session last opened through this relay (0: none), for Close
    /// Session (ipmi-rs keeps its own copy private).
    pub session_id: Arc<AtomicU32>,
    refused: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Relay {
    /// Starts a relay to `bmc`: a request is sent again after `rto`, up to `copies` times;
    /// its answer is awaited up to `give_up`.
    pub fn start(
        bmc: SocketAddr,
        rto: Duration,
        copies: u32,
        give_up: Duration,
    ) -> std::io::Result<Relay> {
        let front = UdpSocket::bind(if bmc.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        })?;
        let back = UdpSocket::bind(if bmc.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        back.connect(bmc)?;
        front.set_nonblocking(true)?;
        back.set_nonblocking(true)?;
        let local = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let copy_setup = Arc::new(AtomicBool::new(true));
        let setup_copied = Arc::new(AtomicU32::new(0));
        let session_id = Arc::new(AtomicU32::new(0));
        let refused = Arc::new(AtomicU8::new(Refusal::None as u8));
        let shared = Shared {
            stop: stop.clone(),
            copy_setup: copy_setup.clone(),
            setup_copied: setup_copied.clone(),
            session_id: session_id.clone(),
            refused: refused.clone(),
        };
        std::thread::Builder::new()
            .name("ferric-ipmi-relay".into())
            .spawn(move || run(&front, &back, rto, copies, give_up, &shared))?;
        Ok(Relay {
            local,
            copy_setup,
            setup_copied,
            session_id,
            refused,
            stop,
        })
    }

    /// Why the relay held back the BMC's answer during the last session setup, if it did: a
    /// setup that retrying cannot make acceptable.
    pub fn refusal(&self) -> Option<&'static str> {
        match self.refused.load(Ordering::Relaxed) {
            x if x == Refusal::Ipmi15Only as u8 => Some(
                "the BMC offers only IPMI 1.5 sessions (no RMCP+), which Ferric does not use: \
                 their authentication is weak and they are not encrypted; enable IPMI 2.0 \
                 (lanplus) on the BMC",
            ),
            x if x == Refusal::WeakAlgorithms as u8 => Some(
                "the BMC opened the session without HMAC-SHA1-96 integrity and AES-CBC-128 \
                 confidentiality (cipher suite 3), which Ferric asked for and requires",
            ),
            _ => None,
        }
    }

    /// Forgets an earlier refusal (before a new login).
    pub fn clear_refusal(&self) {
        self.refused.store(Refusal::None as u8, Ordering::Relaxed);
    }
}

/// Copies of RAKP 1 or 3, when allowed.
const SETUP_COPIES: u32 = 2;

/// A request waiting for its answer.
struct Pending {
    bytes: Vec<u8>,
    first: Instant,
    last: Instant,
    copies: u32,
    rto: Duration,
    setup: bool,
    expect: u16,
}

struct Shared {
    stop: Arc<AtomicBool>,
    copy_setup: Arc<AtomicBool>,
    setup_copied: Arc<AtomicU32>,
    session_id: Arc<AtomicU32>,
    refused: Arc<AtomicU8>,
}

fn run(
    front: &UdpSocket,
    back: &UdpSocket,
    rto: Duration,
    copies: u32,
    give_up: Duration,
    shared: &Shared,
) {
    let stop = &shared.stop;
    let mut buf = [0u8; 2048];
    let mut client: Option<SocketAddr> = None;
    let mut pending: Option<Pending> = None;
    while !stop.load(Ordering::Relaxed) {
        let wait = match &pending {
            Some(p) if p.copies > 0 => p.rto.saturating_sub(p.last.elapsed()),
            Some(p) => give_up.saturating_sub(p.first.elapsed()),
            None => Duration::from_millis(500),
        };
        let timeout = PollTimeout::try_from(wait.as_millis().min(500) as i32 + 1)
            .unwrap_or(PollTimeout::NONE);
        let mut fds = [
            PollFd::new(front.as_fd(), PollFlags::POLLIN),
            PollFd::new(back.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            client = Some(from);
            let d = &buf[..n];
            if let Some(pong) = pong_for(d) {
                let _ = front.send_to(&pong, from);
                continue;
            }
            let _ = back.send(d);
            // Session setup: an Open Session request is never copied, as each copy opens
            // another session on the BMC (BMCs allow a user a handful). A BMC answers each
            // copy of RAKP 1 with a fresh random number and keeps the last, so a copy sent
            // while the first answer is merely late spoils the login; sent because the first
            // answer was lost, it saves it. So RAKP 1 and 3 are copied at twice the interval,
            // only when the client allows it, and counted: a refused login after a copy is
            // not taken for a wrong password, and the next login goes without copies.
            let now = Instant::now();
            let setup = is_login(d);
            let setup_copies = if kind(d) != 0x10 && shared.copy_setup.load(Ordering::Relaxed) {
                SETUP_COPIES
            } else {
                0
            };
            pending = Some(Pending {
                bytes: d.to_vec(),
                first: now,
                last: now,
                copies: if setup { setup_copies } else { copies },
                rto: if setup { rto * 2 } else { rto },
                setup,
                expect: answer_kind(kind(d)),
            });
        }
        while let Ok(n) = back.recv(&mut buf) {
            // Only the first answer of the kind the request in flight expects goes up: a late
            // answer to an earlier request would be taken for this one's.
            let d = &buf[..n];
            if pending.as_ref().is_some_and(|p| p.expect == kind(d))
                && let Some(c) = client
            {
                pending = None;
                if let Some(r) = refused_answer(d) {
                    shared.refused.store(r as u8, Ordering::Relaxed);
                    continue;
                }
                if let Some(id) = opened_session(d) {
                    shared.session_id.store(id, Ordering::Relaxed);
                }
                let _ = front.send_to(d, c);
            }
        }
        if let Some(p) = &mut pending {
            if p.copies > 0 && p.last.elapsed() >= p.rto {
                let _ = back.send(&p.bytes);
                p.last = Instant::now();
                p.copies -= 1;
                if p.setup {
                    shared.setup_copied.fetch_add(1, Ordering::Relaxed);
                }
            } else if p.copies == 0 && p.first.elapsed() >= give_up {
                pending = None;
            }
        }
    }
}
