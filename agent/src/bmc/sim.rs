//! A BMC simulation for unit tests: IPMI 2.0 over LAN on a loopback UDP socket, with RMCP+
//! session setup (RAKP-HMAC-SHA1) and cipher suite 3 (HMAC-SHA1-96 integrity, AES-CBC-128
//! confidentiality), computed as the IPMI 2.0 specification (13.28–13.32) and `ipmi-rs` do.
//! It answers the few commands the client tests need — Get Channel Authentication
//! Capabilities, Set Session Privilege Level, Close Session, Chassis Status and Control — and
//! refuses the rest as unsupported (0xC1), so it has no SDR repository, as VirtualBMC has none.
//!
//! Its behaviour can be set to that of BMCs met in the field: one that never answers an
//! ASF Presence Ping (pyghmi's, as VirtualBMC runs it), one that offers only IPMI 1.5, one that
//! opens sessions with weaker algorithms than asked for.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use hmac::{Hmac, Mac};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type HmacSha1 = Hmac<sha1::Sha1>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut m = HmacSha1::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// IPMB checksum: the two's complement of the bytes' sum.
fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

/// How the simulated BMC behaves.
#[derive(Debug, Clone)]
pub(crate) struct SimOptions {
    /// Answer ASF Presence Pings (many BMCs never do).
    pub answer_ping: bool,
    /// Offer IPMI 2.0 (RMCP+) in the channel's capabilities; without it, IPMI 1.5 only.
    pub ipmi2: bool,
    /// Integrity algorithm the Open Session Response picks (1: HMAC-SHA1-96).
    pub integrity: u8,
    /// Confidentiality algorithm it picks (1: AES-CBC-128).
    pub confidentiality: u8,
    /// The administrator's name and password.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            answer_ping: false,
            ipmi2: true,
            integrity: 1,
            confidentiality: 1,
            user: "admin".into(),
            password: "sim-secret".into(),
        }
    }
}

/// A running simulation; stops when dropped.
pub(crate) struct SimBmc {
    /// Where it listens.
    pub addr: SocketAddr,
    /// ASF datagrams it received.
    pub asf_seen: Arc<AtomicU32>,
    /// Commands it received, `(netfn, cmd)`, in order (the sessionless one included).
    pub commands: Arc<Mutex<Vec<(u8, u8)>>>,
    /// Chassis power.
    pub power_on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A session being set up or open.
#[derive(Default)]
struct Session {
    console_id: [u8; 4],
    bmc_id: [u8; 4],
    console_random: [u8; 16],
    bmc_random: [u8; 16],
    guid: [u8; 16],
    role: u8,
    user: Vec<u8>,
    k1: [u8; 20],
    k2: [u8; 20],
    out_seq: u32,
}

impl SimBmc {
    /// Starts a simulated BMC on 127.0.0.1.
    pub fn start(opts: SimOptions) -> SimBmc {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let sim = SimBmc {
            addr: sock.local_addr().expect("local address"),
            asf_seen: Arc::default(),
            commands: Arc::default(),
            power_on: Arc::default(),
            stop: Arc::default(),
        };
        let (asf, commands, power, stop) = (
            sim.asf_seen.clone(),
            sim.commands.clone(),
            sim.power_on.clone(),
            sim.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut session = Session::default();
            let mut buf = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                let answer = if d.len() >= 4 && d[3] & 0x1f == 0x06 {
                    asf.fetch_add(1, Ordering::Relaxed);
                    opts.answer_ping.then(|| pong(d)).flatten()
                } else if d.len() > 14 && d[4] == 0x00 {
                    sessionless(d, &opts, &commands)
                } else if d.len() >= 16 && d[4] == 0x06 {
                    rmcp_plus(d, &opts, &mut session, &commands, &power)
                } else {
                    None
                };
                if let Some(a) = answer {
                    let _ = sock.send_to(&a, from);
                }
            }
        });
        sim
    }
}

fn pong(d: &[u8]) -> Option<Vec<u8>> {
    if d.len() < 12 || d[8] != 0x80 {
        return None;
    }
    let mut p = vec![
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, d[9], 0x00, 0x10,
    ];
    p.extend_from_slice(&[
        0x00, 0x00, 0x11, 0xbe, 0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0,
    ]);
    Some(p)
}

/// The IPMB response to request `m` with completion code `cc` and `data`.
fn ipmb_response(m: &[u8], cc: u8, data: &[u8]) -> Vec<u8> {
    let netfn = m[1] >> 2;
    let mut r = vec![0x81, ((netfn | 1) << 2) | (m[4] & 3)];
    r.push(checksum(&r));
    let start = r.len();
    r.extend_from_slice(&[0x20, m[4], m[5], cc]);
    r.extend_from_slice(data);
    let c = checksum(&r[start..]);
    r.push(c);
    r
}

/// IPMI 1.5 framing without a session: only Get Channel Authentication Capabilities.
fn sessionless(d: &[u8], opts: &SimOptions, commands: &Mutex<Vec<(u8, u8)>>) -> Option<Vec<u8>> {
    let len = usize::from(d[13]);
    let m = d.get(14..14 + len)?;
    if m.len() < 7 {
        return None;
    }
    let (netfn, cmd) = (m[1] >> 2, m[5]);
    commands.lock().ok()?.push((netfn, cmd));
    if (netfn, cmd) != (0x06, 0x38) {
        return None;
    }
    let data = if opts.ipmi2 {
        // Channel 1; IPMI 2.0 extended capabilities; MD5 and none; non-null user names;
        // IPMI 1.5 and 2.0 connections.
        [0x01, 0x80 | 0x04 | 0x01, 0x04, 0x03, 0, 0, 0, 0]
    } else {
        [0x01, 0x04 | 0x01, 0x04, 0x00, 0, 0, 0, 0]
    };
    let msg = ipmb_response(m, 0, &data);
    let mut out = vec![0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    out.push(msg.len() as u8);
    out.extend(msg);
    Some(out)
}

/// An RMCP+ datagram of payload type `ty` (with the encryption and authentication bits).
fn frame(ty: u8, session_id: [u8; 4], seq: u32, payload: &[u8], k1: Option<&[u8; 20]>) -> Vec<u8> {
    let mut out = vec![0x06, 0x00, 0xff, 0x07, 0x06, ty];
    out.extend_from_slice(&session_id);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
    if let Some(k1) = k1 {
        // Integrity pad so that auth type … next header is a multiple of 4 bytes.
        let pad = (4 - (out.len() - 4 + 2) % 4) % 4;
        out.extend(std::iter::repeat_n(0xff, pad));
        out.push(pad as u8);
        out.push(0x07);
        let code = hmac(k1, &[&out[4..]]);
        out.extend_from_slice(&code[..12]);
    }
    out
}

fn rmcp_plus(
    d: &[u8],
    opts: &SimOptions,
    s: &mut Session,
    commands: &Mutex<Vec<(u8, u8)>>,
    power: &AtomicBool,
) -> Option<Vec<u8>> {
    let ty = d[5];
    let len = usize::from(u16::from_le_bytes([d[14], d[15]]));
    let p = d.get(16..16 + len)?;
    match ty & 0x3f {
        // Open Session Request.
        0x10 if p.len() >= 32 => {
            *s = Session::default();
            s.console_id.copy_from_slice(&p[4..8]);
            s.bmc_id = rand::random::<u32>().max(1).to_le_bytes();
            let mut r = vec![p[0], 0x00, 0x04, 0x00];
            r.extend_from_slice(&s.console_id);
            r.extend_from_slice(&s.bmc_id);
            r.extend_from_slice(&[0x00, 0, 0, 0x08, 0x01, 0, 0, 0]);
            r.extend_from_slice(&[0x01, 0, 0, 0x08, opts.integrity, 0, 0, 0]);
            r.extend_from_slice(&[0x02, 0, 0, 0x08, opts.confidentiality, 0, 0, 0]);
            Some(frame(0x11, [0; 4], 0, &r, None))
        }
        // RAKP 1.
        0x12 if p.len() >= 28 => {
            let ulen = usize::from(p[27]);
            let user = p.get(28..28 + ulen)?.to_vec();
            s.console_random.copy_from_slice(&p[8..24]);
            s.role = p[24];
            s.bmc_random = rand::random();
            s.guid = rand::random();
            let mut r = vec![p[0], 0x00, 0x00, 0x00];
            r.extend_from_slice(&s.console_id);
            if user != opts.user.as_bytes() {
                // Unauthorized name.
                r[1] = 0x0d;
                return Some(frame(0x13, [0; 4], 0, &r, None));
            }
            s.user = user;
            let ulen = [s.role, s.user.len() as u8];
            let code = hmac(
                opts.password.as_bytes(),
                &[
                    &s.console_id,
                    &s.bmc_id,
                    &s.console_random,
                    &s.bmc_random,
                    &s.guid,
                    &ulen,
                    &s.user,
                ],
            );
            r.extend_from_slice(&s.bmc_random);
            r.extend_from_slice(&s.guid);
            r.extend_from_slice(&code);
            Some(frame(0x13, [0; 4], 0, &r, None))
        }
        // RAKP 3.
        0x14 if p.len() >= 8 => {
            let ulen = [s.role, s.user.len() as u8];
            let pw = opts.password.as_bytes();
            let expected = hmac(pw, &[&s.bmc_random, &s.console_id, &ulen, &s.user]);
            let mut r = vec![p[0], 0x00, 0x00, 0x00];
            r.extend_from_slice(&s.console_id);
            if p[1] != 0 || p.get(8..28) != Some(&expected[..]) {
                // Invalid integrity check value.
                r[1] = 0x0f;
                return Some(frame(0x15, [0; 4], 0, &r, None));
            }
            let sik = hmac(pw, &[&s.console_random, &s.bmc_random, &ulen, &s.user]);
            s.k1 = hmac(&sik, &[&[0x01; 20]]);
            s.k2 = hmac(&sik, &[&[0x02; 20]]);
            let icv = hmac(&sik, &[&s.console_random, &s.bmc_id, &s.guid]);
            r.extend_from_slice(&icv[..12]);
            Some(frame(0x15, [0; 4], 0, &r, None))
        }
        // An IPMI message in the session: encrypted and authenticated.
        0x00 if ty & 0xc0 == 0xc0 && d[6..10] == s.bmc_id && d.len() >= 12 => {
            let (signed, code) = d.split_at(d.len() - 12);
            if hmac(&s.k1, &[&signed[4..]])[..12] != *code || p.len() < 32 || p.len() % 16 != 0 {
                return None;
            }
            let mut plain = p[16..].to_vec();
            let key: [u8; 16] = s.k2[..16].try_into().ok()?;
            let iv: [u8; 16] = p[..16].try_into().ok()?;
            cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
                .decrypt_padded_mut::<NoPadding>(&mut plain)
                .ok()?;
            let pad = usize::from(*plain.last()?);
            let m = plain.get(..plain.len().checked_sub(pad + 1)?)?;
            if m.len() < 7 {
                return None;
            }
            let (netfn, cmd, data) = (m[1] >> 2, m[5], &m[6..m.len() - 1]);
            commands.lock().ok()?.push((netfn, cmd));
            let (cc, out): (u8, Vec<u8>) = match (netfn, cmd) {
                // Set Session Privilege Level.
                (0x06, 0x3b) => (0, vec![data.first().copied().unwrap_or(0x04)]),
                // Close Session.
                (0x06, 0x3c) => (0, vec![]),
                // Chassis Status.
                (0x00, 0x01) => (0, vec![u8::from(power.load(Ordering::Relaxed)), 0, 0]),
                // Chassis Control: off, on, cycle, reset.
                (0x00, 0x02) => {
                    match data.first() {
                        Some(0) => power.store(false, Ordering::Relaxed),
                        Some(1..=3) => power.store(true, Ordering::Relaxed),
                        _ => {}
                    }
                    (0, vec![])
                }
                _ => (0xc1, vec![]),
            };
            let msg = ipmb_response(m, cc, &out);
            let pad = (16 - (msg.len() + 1) % 16) % 16;
            let mut plain = msg;
            plain.extend(1..=pad as u8);
            plain.push(pad as u8);
            let iv: [u8; 16] = rand::random();
            let n = plain.len();
            cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into())
                .encrypt_padded_mut::<NoPadding>(&mut plain, n)
                .ok()?;
            let mut payload = iv.to_vec();
            payload.extend(plain);
            s.out_seq += 1;
            let k1 = s.k1;
            Some(frame(0xc0, s.console_id, s.out_seq, &payload, Some(&k1)))
        }
        _ => None,
    }
}
