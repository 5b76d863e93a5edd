//! A BMC's side of the LAN channel: RMCP+ session setup for the cipher suites it offers,
//! its sessions, and the App and Chassis commands a provisioning system sends. The chassis
//! (power, and what the boot flags make of the next boot) is behind [`Chassis`]; the lab's
//! BMCs put their QEMU machine there, the tests a value in memory.
//!
//! What it keeps as a real BMC does, and ipmi_sim does not: every byte of boot parameter 5
//! (valid, persistent and EFI bits), the valid bit cleared by the boot that used
//! next-boot-only flags, and sessions at User privilege until Set Session Privilege Level
//! raises them (Chassis Control and Set System Boot Options need Operator).

use crate::packet::{self, Datagram, Plus, Request, parse, parse_request, payload};
use crate::suite::{Rakp, SessionKeys, Suite};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Privilege levels.
pub mod privilege {
    /// Callback.
    pub const CALLBACK: u8 = 1;
    /// User: reads.
    pub const USER: u8 = 2;
    /// Operator: power and boot.
    pub const OPERATOR: u8 = 3;
    /// Administrator.
    pub const ADMINISTRATOR: u8 = 4;
}

/// Chassis Control operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Power down (hard).
    Off,
    /// Power up.
    On,
    /// Power cycle.
    Cycle,
    /// Hard reset.
    Reset,
    /// Soft shutdown (ACPI).
    Soft,
}

/// The next boot as boot parameter 5 says it (IPMI 2.0, table 28-14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags(pub [u8; 5]);

impl BootFlags {
    /// The flags are valid (bit 7 of byte 1).
    pub fn valid(self) -> bool {
        self.0[0] & 0x80 != 0
    }
    /// For every boot, not only the next one (bit 6).
    pub fn persistent(self) -> bool {
        self.0[0] & 0x40 != 0
    }
    /// EFI boot (bit 5); legacy otherwise.
    pub fn efi(self) -> bool {
        self.0[0] & 0x20 != 0
    }
    /// The boot device selector (bits 5:2 of byte 2): 1 PXE, 2 disk, 3 disk safe mode,
    /// 5 CD/DVD, 6 BIOS setup, 0 none.
    pub fn device(self) -> u8 {
        (self.0[1] >> 2) & 0x0f
    }
}

/// The machine a BMC controls.
pub trait Chassis: Send {
    /// Whether it is powered on.
    fn power_on(&self) -> bool;
    /// Carries out `op`; a refusal is said in the error (the console sees completion code
    /// 0xD5, "cannot execute in present state").
    fn control(&mut self, op: Control, boot: BootFlags) -> Result<(), String>;
    /// Boot parameter 5 was set (a machine may prepare its next boot now).
    fn boot_flags_set(&mut self, _flags: BootFlags) {}
}

/// A machine in memory (for tests and fuzzing): its power, and every control it was given
/// with the boot flags of that moment.
#[derive(Debug, Default)]
pub struct MemoryChassis {
    /// Powered on.
    pub on: bool,
    /// Controls carried out, in order, with the boot flags each saw.
    pub controls: Vec<(Control, BootFlags)>,
}

impl Chassis for MemoryChassis {
    fn power_on(&self) -> bool {
        self.on
    }
    fn control(&mut self, op: Control, boot: BootFlags) -> Result<(), String> {
        self.on = !matches!(op, Control::Off | Control::Soft);
        self.controls.push((op, boot));
        Ok(())
    }
}

/// How a BMC is set up.
#[derive(Clone)]
pub struct BmcConfig {
    /// The one user (administrator): its name.
    pub user: Vec<u8>,
    /// Its password: the key Kuid of the RAKP exchange.
    pub password: Vec<u8>,
    /// Suites offered, in the order Get Channel Cipher Suites lists them.
    pub suites: Vec<Suite>,
    /// The system GUID sent in RAKP 2.
    pub guid: [u8; 16],
    /// Sessions at once (set up or open); more are refused as real BMCs refuse them.
    pub max_sessions: usize,
    /// An open session idle this long is closed; a setup not finished in a tenth of it is
    /// dropped.
    pub idle: Duration,
}

impl std::fmt::Debug for BmcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcConfig")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("suites", &self.suites)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

impl BmcConfig {
    /// One administrator, suites 17 and 3, a random GUID, 8 sessions, 60 s idle.
    pub fn new(user: &str, password: &str) -> BmcConfig {
        BmcConfig {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
            suites: Suite::ALL.to_vec(),
            guid: rand::random(),
            max_sessions: 8,
            idle: Duration::from_secs(60),
        }
    }
}

enum State {
    /// Open Session answered: waiting for RAKP 1.
    Opened,
    /// RAKP 2 sent: waiting for RAKP 3.
    Challenged(Rakp),
    /// Open.
    Active {
        keys: SessionKeys,
        privilege: u8,
        highest_in: u32,
        out_seq: u32,
    },
}

struct Session {
    console_id: u32,
    suite: Suite,
    max_privilege: u8,
    state: State,
    last: Instant,
}

/// A BMC: answers datagrams.
pub struct Bmc<C> {
    cfg: BmcConfig,
    /// The machine.
    pub chassis: C,
    sessions: HashMap<u32, Session>,
    boot: BootFlags,
    /// Boot parameters 0 (set in progress), 3 (service partition scan) and 4 (boot info
    /// acknowledge), kept as set.
    other_params: HashMap<u8, Vec<u8>>,
}

impl<C> std::fmt::Debug for Bmc<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bmc")
            .field("cfg", &self.cfg)
            .field("sessions", &self.sessions.len())
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

/// Answers the datagrams that reach `sock` until `stop` is set (looked at every 100 ms).
pub fn serve<C: Chassis>(
    sock: &std::net::UdpSocket,
    bmc: &std::sync::Mutex<Bmc<C>>,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 1500];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let answer = match bmc.lock() {
            Ok(mut b) => b.handle(&buf[..n], Instant::now()),
            Err(_) => return Err(std::io::Error::other("the BMC's state was poisoned")),
        };
        if let Some(a) = answer {
            sock.send_to(&a, from)?;
        }
    }
    Ok(())
}

/// RMCP+ status codes (IPMI 2.0, table 13-15).
mod status {
    pub const INSUFFICIENT_RESOURCES: u8 = 0x01;
    pub const INVALID_SESSION_ID: u8 = 0x02;
    pub const INVALID_ROLE: u8 = 0x09;
    pub const UNAUTHORIZED_ROLE: u8 = 0x0a;
    pub const INVALID_NAME_LENGTH: u8 = 0x0c;
    pub const UNAUTHORIZED_NAME: u8 = 0x0d;
    pub const INVALID_INTEGRITY_CHECK: u8 = 0x0f;
    pub const NO_MATCHING_SUITE: u8 = 0x11;
    pub const ILLEGAL_PARAMETER: u8 = 0x12;
}

/// Completion codes.
mod cc {
    pub const OK: u8 = 0x00;
    pub const PARAMETER_NOT_SUPPORTED: u8 = 0x80;
    pub const LEVEL_NOT_AVAILABLE: u8 = 0x80;
    pub const INVALID_SESSION: u8 = 0x87;
    pub const INVALID_COMMAND: u8 = 0xc1;
    pub const LENGTH: u8 = 0xc7;
    pub const INVALID_FIELD: u8 = 0xcc;
    pub const INSUFFICIENT_PRIVILEGE: u8 = 0xd4;
    pub const NOT_IN_PRESENT_STATE: u8 = 0xd5;
}

impl<C: Chassis> Bmc<C> {
    /// A BMC for `chassis`, its boot flags "valid, next boot, legacy, no override".
    pub fn new(cfg: BmcConfig, chassis: C) -> Bmc<C> {
        Bmc {
            cfg,
            chassis,
            sessions: HashMap::new(),
            boot: BootFlags([0x80, 0, 0, 0, 0]),
            other_params: HashMap::new(),
        }
    }

    /// The boot flags as last set.
    pub fn boot_flags(&self) -> BootFlags {
        self.boot
    }

    /// Sessions set up or open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The answer to datagram `d` received at `now`, if it gets one (a datagram that is not
    /// RMCP, fails its AuthCode or belongs to no session gets none, as on a real BMC).
    pub fn handle(&mut self, d: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.prune(now);
        match parse(d).ok()? {
            Datagram::Asf(a) => pong(a),
            Datagram::V15 {
                session_id: 0,
                auth_type: 0,
                message,
            } => {
                let r = parse_request(message).ok()?;
                Some(packet::v15_frame(&self.sessionless(&r)?))
            }
            Datagram::V15 { .. } => None,
            Datagram::Plus(p) => self.plus(&p, now),
        }
    }

    fn prune(&mut self, now: Instant) {
        let idle = self.cfg.idle;
        self.sessions.retain(|_, s| {
            let limit = match s.state {
                State::Active { .. } => idle,
                _ => idle / 10,
            };
            now.duration_since(s.last) < limit
        });
    }

    /// Commands answered outside a session.
    fn sessionless(&self, r: &Request<'_>) -> Option<Vec<u8>> {
        match (r.netfn, r.cmd) {
            (0x06, 0x38) => Some(r.response(cc::OK, &self.auth_capabilities())),
            (0x06, 0x54) => Some(self.cipher_suites(r)),
            _ => None,
        }
    }

    /// Get Channel Authentication Capabilities: channel 1, IPMI 2.0 only (no IPMI 1.5
    /// authentication types), non-null user names.
    fn auth_capabilities(&self) -> [u8; 8] {
        [0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0]
    }

    /// Get Channel Cipher Suites: the records of the suites offered, 16 bytes per index.
    fn cipher_suites(&self, r: &Request<'_>) -> Vec<u8> {
        let Some(&index) = r.data.get(2) else {
            return r.response(cc::LENGTH, &[]);
        };
        let mut records = Vec::new();
        for s in &self.cfg.suites {
            let (a, i, c) = s.algorithms();
            records.extend_from_slice(&[0xc0, s.id(), a, 0x40 | i, 0x80 | c]);
        }
        let start = usize::from(index & 0x3f) * 16;
        let mut data = vec![0x01];
        data.extend(records.iter().skip(start).take(16));
        r.response(cc::OK, &data)
    }

    fn plus(&mut self, p: &Plus<'_>, now: Instant) -> Option<Vec<u8>> {
        match p.payload_type {
            payload::OPEN_SESSION_REQUEST => self.open_session(p.payload, now),
            payload::RAKP1 => self.rakp1(p.payload, now),
            payload::RAKP3 => self.rakp3(p.payload, now),
            payload::IPMI if p.session_id == 0 && !p.authenticated && !p.encrypted => {
                let r = parse_request(p.payload).ok()?;
                let resp = self.sessionless(&r)?;
                Some(packet::plus_frame(payload::IPMI, 0, 0, &resp, None))
            }
            payload::IPMI => self.in_session(p, now),
            _ => None,
        }
    }

    fn open_session(&mut self, p: &[u8], now: Instant) -> Option<Vec<u8>> {
        if p.len() < 32 {
            return None;
        }
        let (tag, asked, console) = (p[0], p[1] & 0x0f, &p[4..8]);
        let refuse = |status: u8| {
            let mut r = vec![tag, status, 0, 0];
            r.extend_from_slice(console);
            Some(packet::plus_frame(
                payload::OPEN_SESSION_RESPONSE,
                0,
                0,
                &r,
                None,
            ))
        };
        if p[8] != 0x00 || p[16] != 0x01 || p[24] != 0x02 {
            return refuse(status::ILLEGAL_PARAMETER);
        }
        let Some(suite) = Suite::from_algorithms(p[12] & 0x3f, p[20] & 0x3f, p[28] & 0x3f)
            .filter(|s| self.cfg.suites.contains(s))
        else {
            return refuse(status::NO_MATCHING_SUITE);
        };
        let max_privilege = match asked {
            0 => privilege::ADMINISTRATOR,
            1..=4 => asked,
            _ => return refuse(status::INVALID_ROLE),
        };
        if self.sessions.len() >= self.cfg.max_sessions {
            return refuse(status::INSUFFICIENT_RESOURCES);
        }
        let bmc_id = loop {
            let id = rand::random::<u32>();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(
            bmc_id,
            Session {
                console_id: u32::from_le_bytes([console[0], console[1], console[2], console[3]]),
                suite,
                max_privilege,
                state: State::Opened,
                last: now,
            },
        );
        let (a, i, c) = suite.algorithms();
        let mut r = vec![tag, 0, max_privilege, 0];
        r.extend_from_slice(console);
        r.extend_from_slice(&bmc_id.to_le_bytes());
        r.extend_from_slice(&[0x00, 0, 0, 8, a, 0, 0, 0]);
        r.extend_from_slice(&[0x01, 0, 0, 8, i, 0, 0, 0]);
        r.extend_from_slice(&[0x02, 0, 0, 8, c, 0, 0, 0]);
        Some(packet::plus_frame(
            payload::OPEN_SESSION_RESPONSE,
            0,
            0,
            &r,
            None,
        ))
    }

    fn rakp1(&mut self, p: &[u8], now: Instant) -> Option<Vec<u8>> {
        if p.len() < 28 {
            return None;
        }
        let tag = p[0];
        let bmc_id = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        let role = p[24];
        let ulen = usize::from(p[27]);
        let s = self.sessions.get_mut(&bmc_id)?;
        let console_id = s.console_id.to_le_bytes();
        let answer = |status: u8, rest: &[u8]| {
            let mut r = vec![tag, status, 0, 0];
            r.extend_from_slice(&console_id);
            r.extend_from_slice(rest);
            Some(packet::plus_frame(payload::RAKP2, 0, 0, &r, None))
        };
        let fail = |status: u8| answer(status, &[]);
        if !matches!(s.state, State::Opened | State::Challenged(_)) {
            return fail(status::INVALID_SESSION_ID);
        }
        let user = match p.get(28..28 + ulen) {
            Some(u) if ulen <= 16 => u.to_vec(),
            _ => {
                self.sessions.remove(&bmc_id);
                return fail(status::INVALID_NAME_LENGTH);
            }
        };
        let wanted = role & 0x0f;
        if !(privilege::CALLBACK..=privilege::ADMINISTRATOR).contains(&wanted) {
            self.sessions.remove(&bmc_id);
            return fail(status::INVALID_ROLE);
        }
        if wanted > s.max_privilege {
            self.sessions.remove(&bmc_id);
            return fail(status::UNAUTHORIZED_ROLE);
        }
        if user != self.cfg.user {
            self.sessions.remove(&bmc_id);
            return fail(status::UNAUTHORIZED_NAME);
        }
        let mut rakp = Rakp {
            console_id,
            bmc_id: bmc_id.to_le_bytes(),
            bmc_random: rand::random(),
            guid: self.cfg.guid,
            role,
            user,
            ..Rakp::default()
        };
        rakp.console_random.copy_from_slice(&p[8..24]);
        let code = rakp.rakp2_code(s.suite, &self.cfg.password);
        let mut rest = rakp.bmc_random.to_vec();
        rest.extend_from_slice(&rakp.guid);
        rest.extend_from_slice(&code);
        s.max_privilege = wanted;
        s.state = State::Challenged(rakp);
        s.last = now;
        answer(0, &rest)
    }

    fn rakp3(&mut self, p: &[u8], now: Instant) -> Option<Vec<u8>> {
        if p.len() < 8 {
            return None;
        }
        let (tag, console_status) = (p[0], p[1]);
        let bmc_id = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        let s = self.sessions.get_mut(&bmc_id)?;
        let State::Challenged(rakp) = &s.state else {
            return None;
        };
        let mut r = vec![tag, 0, 0, 0];
        r.extend_from_slice(&s.console_id.to_le_bytes());
        let want = rakp.rakp3_code(s.suite, &self.cfg.password);
        let got = &p[8..];
        let same =
            want.len() == got.len() && want.iter().zip(got).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if console_status != 0 || !same {
            // A wrong password: the session is gone, and the console is told (a console
            // that gave up itself is not answered).
            self.sessions.remove(&bmc_id);
            if console_status != 0 {
                return None;
            }
            r[1] = status::INVALID_INTEGRITY_CHECK;
            return Some(packet::plus_frame(payload::RAKP4, 0, 0, &r, None));
        }
        let sik = rakp.sik(s.suite, &self.cfg.password);
        r.extend_from_slice(&rakp.rakp4_icv(s.suite, &sik));
        s.state = State::Active {
            keys: SessionKeys::derive(s.suite, &sik),
            privilege: privilege::USER.min(s.max_privilege),
            highest_in: 0,
            out_seq: 0,
        };
        s.last = now;
        Some(packet::plus_frame(payload::RAKP4, 0, 0, &r, None))
    }

    fn in_session(&mut self, p: &Plus<'_>, now: Instant) -> Option<Vec<u8>> {
        let s = self.sessions.get_mut(&p.session_id)?;
        let State::Active {
            keys, highest_in, ..
        } = &mut s.state
        else {
            return None;
        };
        // Suites 3 and 17 both sign and encrypt: anything less is not of this session.
        if !(p.authenticated && p.encrypted && p.verify(keys)) {
            return None;
        }
        // Sequence numbers move forward; a window of 16 behind the highest lets reordered
        // and resent requests through (a resend is answered again, as BMCs do).
        if p.seq == 0 || p.seq.saturating_add(16) <= *highest_in {
            return None;
        }
        *highest_in = (*highest_in).max(p.seq);
        let plain = keys.decrypt(p.payload)?;
        let r = parse_request(&plain).ok()?;
        s.last = now;
        let bmc_id = p.session_id;
        let (resp, close) = self.command(bmc_id, &r);
        let s = self.sessions.get_mut(&bmc_id)?;
        let State::Active { keys, out_seq, .. } = &mut s.state else {
            return None;
        };
        *out_seq = out_seq.wrapping_add(1).max(1);
        let payload = keys.encrypt(&resp, rand::random());
        let out = packet::plus_frame(
            payload::IPMI | payload::ENCRYPTED | payload::AUTHENTICATED,
            s.console_id,
            *out_seq,
            &payload,
            Some(keys),
        );
        if close {
            self.sessions.remove(&bmc_id);
        }
        Some(out)
    }

    /// A command in session `id`: the response message, and whether the session ends.
    fn command(&mut self, id: u32, r: &Request<'_>) -> (Vec<u8>, bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return (r.response(cc::INVALID_SESSION, &[]), false);
        };
        let max = s.max_privilege;
        let State::Active { privilege, .. } = &mut s.state else {
            return (r.response(cc::INVALID_SESSION, &[]), false);
        };
        let need = match (r.netfn, r.cmd) {
            (0x00, 0x02) | (0x00, 0x08) => privilege::OPERATOR,
            _ => privilege::USER,
        };
        if *privilege < need && (r.netfn, r.cmd) != (0x06, 0x3b) && (r.netfn, r.cmd) != (0x06, 0x3c)
        {
            return (r.response(cc::INSUFFICIENT_PRIVILEGE, &[]), false);
        }
        let ok = |data: &[u8]| r.response(cc::OK, data);
        match (r.netfn, r.cmd) {
            // Get Device ID: device 0x20, revision 1, firmware 1.0, IPMI 2.0, chassis and
            // sensor device; manufacturer and product 0 (none registered).
            (0x06, 0x01) => (
                ok(&[0x20, 0x01, 0x01, 0x00, 0x02, 0x81, 0, 0, 0, 0, 0]),
                false,
            ),
            (0x06, 0x38) => (ok(&self.auth_capabilities()), false),
            (0x06, 0x54) => (self.cipher_suites(r), false),
            // Set Session Privilege Level.
            (0x06, 0x3b) => match r.data.first().map(|b| b & 0x0f) {
                Some(0) => (ok(&[*privilege]), false),
                Some(level @ 2..=4) if level <= max => {
                    *privilege = level;
                    (ok(&[level]), false)
                }
                Some(2..=4) => (r.response(cc::LEVEL_NOT_AVAILABLE, &[]), false),
                Some(_) => (r.response(cc::INVALID_FIELD, &[]), false),
                None => (r.response(cc::LENGTH, &[]), false),
            },
            // Close Session: this one (another's only at administrator).
            (0x06, 0x3c) => {
                let Some(target) = r.data.get(..4) else {
                    return (r.response(cc::LENGTH, &[]), false);
                };
                let target = u32::from_le_bytes([target[0], target[1], target[2], target[3]]);
                if target == id || target == 0 {
                    (ok(&[]), true)
                } else if *privilege == privilege::ADMINISTRATOR
                    && self.sessions.remove(&target).is_some()
                {
                    (ok(&[]), false)
                } else {
                    (r.response(cc::INVALID_SESSION, &[]), false)
                }
            }
            // Get Chassis Status: power, last event, miscellaneous state.
            (0x00, 0x01) => (ok(&[u8::from(self.chassis.power_on()), 0, 0]), false),
            (0x00, 0x02) => (self.control(r), false),
            (0x00, 0x08) => (self.set_boot(r), false),
            (0x00, 0x09) => (self.get_boot(r), false),
            _ => (r.response(cc::INVALID_COMMAND, &[]), false),
        }
    }

    fn control(&mut self, r: &Request<'_>) -> Vec<u8> {
        let op = match r.data.first().map(|b| b & 0x0f) {
            Some(0) => Control::Off,
            Some(1) => Control::On,
            Some(2) => Control::Cycle,
            Some(3) => Control::Reset,
            Some(5) => Control::Soft,
            Some(_) => return r.response(cc::INVALID_FIELD, &[]),
            None => return r.response(cc::LENGTH, &[]),
        };
        let flags = self.boot;
        match self.chassis.control(op, flags) {
            Ok(()) => {
                // A boot used next-boot-only flags: they are spent.
                if matches!(op, Control::On | Control::Cycle | Control::Reset)
                    && flags.valid()
                    && !flags.persistent()
                {
                    self.boot.0[0] &= !0x80;
                }
                r.response(cc::OK, &[])
            }
            Err(_) => r.response(cc::NOT_IN_PRESENT_STATE, &[]),
        }
    }

    fn set_boot(&mut self, r: &Request<'_>) -> Vec<u8> {
        let Some((&param, data)) = r.data.split_first() else {
            return r.response(cc::LENGTH, &[]);
        };
        let param = param & 0x7f;
        let len = match param {
            0 | 3 => 1,
            4 => 2,
            5 => 5,
            _ => return r.response(cc::PARAMETER_NOT_SUPPORTED, &[]),
        };
        if data.len() != len {
            return r.response(cc::LENGTH, &[]);
        }
        if param == 5 {
            let mut f = [0u8; 5];
            f.copy_from_slice(data);
            self.boot = BootFlags(f);
            self.chassis.boot_flags_set(self.boot);
        } else {
            self.other_params.insert(param, data.to_vec());
        }
        r.response(cc::OK, &[])
    }

    fn get_boot(&self, r: &Request<'_>) -> Vec<u8> {
        let Some(&param) = r.data.first() else {
            return r.response(cc::LENGTH, &[]);
        };
        let param = param & 0x7f;
        let value = match param {
            5 => self.boot.0.to_vec(),
            0 | 3 => self.other_params.get(&param).cloned().unwrap_or(vec![0]),
            4 => self.other_params.get(&param).cloned().unwrap_or(vec![0, 0]),
            _ => return r.response(cc::PARAMETER_NOT_SUPPORTED, &[]),
        };
        let mut data = vec![0x01, param];
        data.extend(value);
        r.response(cc::OK, &data)
    }
}

/// The ASF Presence Pong for a Presence Ping (`a`: the bytes after the RMCP header).
fn pong(a: &[u8]) -> Option<Vec<u8>> {
    if a.len() < 8 || a[..4] != 4542u32.to_be_bytes() || a[4] != 0x80 {
        return None;
    }
    let mut p = vec![0x06, 0x00, 0xff, 0x06];
    p.extend_from_slice(&4542u32.to_be_bytes());
    p.extend_from_slice(&[0x40, a[5], 0x00, 0x10]);
    p.extend_from_slice(&4542u32.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0]);
    Some(p)
}
