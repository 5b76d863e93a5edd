//! RMCP+ datagrams and the IPMI messages inside them (IPMI 2.0 rev 1.1, 13.6–13.8 and the
//! LAN message format of 13.8). Every function that reads takes bytes anyone on the
//! management network can send: none may panic or read past them (fuzzed).

use crate::suite::SessionKeys;

/// RMCP message class of ASF (presence ping).
pub const CLASS_ASF: u8 = 0x06;
/// RMCP message class of IPMI.
pub const CLASS_IPMI: u8 = 0x07;
/// Authentication type byte that marks an RMCP+ (IPMI 2.0) session header.
pub const AUTH_RMCP_PLUS: u8 = 0x06;

/// RMCP+ payload types.
pub mod payload {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// Open Session Request.
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    /// Open Session Response.
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    /// RAKP Message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP Message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP Message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP Message 4.
    pub const RAKP4: u8 = 0x15;
    /// Payload-type bit: the payload is encrypted.
    pub const ENCRYPTED: u8 = 0x80;
    /// Payload-type bit: the packet carries an AuthCode.
    pub const AUTHENTICATED: u8 = 0x40;
}

/// What is wrong with a datagram or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer bytes than the part named needs.
    Short(&'static str),
    /// Not an RMCP datagram (version byte, class).
    NotRmcp,
    /// A length field says more than the datagram holds.
    Length,
    /// An OEM payload (Ferric speaks none).
    Oem,
    /// An IPMI message whose checksum does not add up.
    Checksum,
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::Short(what) => write!(f, "too short for its {what}"),
            PacketError::NotRmcp => f.write_str("not an RMCP datagram"),
            PacketError::Length => f.write_str("a length field says more than the datagram holds"),
            PacketError::Oem => f.write_str("an OEM payload"),
            PacketError::Checksum => f.write_str("an IPMI message with a bad checksum"),
        }
    }
}

impl std::error::Error for PacketError {}

/// A datagram, by framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// ASF (a presence ping): its bytes after the RMCP header.
    Asf(&'a [u8]),
    /// IPMI 1.5 framing (what Get Channel Authentication Capabilities comes in before any
    /// session): the session id and the message.
    V15 {
        /// Session id (0 outside a session).
        session_id: u32,
        /// Authentication type (0: none).
        auth_type: u8,
        /// The IPMI message.
        message: &'a [u8],
    },
    /// RMCP+.
    Plus(Plus<'a>),
}

/// An RMCP+ datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plus<'a> {
    /// Payload type (without the encrypted and authenticated bits).
    pub payload_type: u8,
    /// The payload is encrypted.
    pub encrypted: bool,
    /// The packet carries an AuthCode.
    pub authenticated: bool,
    /// The receiver's session id (0 during session setup).
    pub session_id: u32,
    /// Session sequence number.
    pub seq: u32,
    /// The payload.
    pub payload: &'a [u8],
    /// The datagram from the authentication type byte on (what the AuthCode covers, with
    /// the code itself at the end).
    body: &'a [u8],
    /// Where the payload ends in `body`.
    payload_end: usize,
}

impl Plus<'_> {
    /// Whether the trailer is well formed and its AuthCode is right under `keys`: an integrity
    /// pad of 0xFF bytes making the signed part a multiple of 4, its length, next header 0x07,
    /// then the code.
    pub fn verify(&self, keys: &SessionKeys) -> bool {
        let n = keys.suite.icv_len();
        let Some(signed_len) = self.body.len().checked_sub(n) else {
            return false;
        };
        if signed_len < self.payload_end + 2 || signed_len % 4 != 0 {
            return false;
        }
        let (signed, code) = self.body.split_at(signed_len);
        let pad = usize::from(signed[signed_len - 2]);
        if signed[signed_len - 1] != 0x07 || self.payload_end + pad + 2 != signed_len {
            return false;
        }
        if signed[self.payload_end..signed_len - 2]
            .iter()
            .any(|b| *b != 0xff)
        {
            return false;
        }
        keys.verify(signed, code)
    }
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads a datagram's framing.
pub fn parse(d: &[u8]) -> Result<Datagram<'_>, PacketError> {
    if d.len() < 4 {
        return Err(PacketError::Short("RMCP header"));
    }
    if d[0] != 0x06 {
        return Err(PacketError::NotRmcp);
    }
    match d[3] & 0x1f {
        CLASS_ASF => return Ok(Datagram::Asf(&d[4..])),
        CLASS_IPMI => {}
        _ => return Err(PacketError::NotRmcp),
    }
    let body = &d[4..];
    let auth_type = *body.first().ok_or(PacketError::Short("session header"))?;
    if auth_type & 0x0f != AUTH_RMCP_PLUS {
        // IPMI 1.5: type, sequence, session id, [16-byte code], length, message.
        let code = if auth_type == 0 { 0 } else { 16 };
        let head = 1 + 4 + 4 + code + 1;
        if body.len() < head {
            return Err(PacketError::Short("IPMI 1.5 session header"));
        }
        let len = usize::from(body[head - 1]);
        let message = body.get(head..head + len).ok_or(PacketError::Length)?;
        return Ok(Datagram::V15 {
            session_id: u32_le(&body[5..9]),
            auth_type,
            message,
        });
    }
    if body.len() < 12 {
        return Err(PacketError::Short("RMCP+ session header"));
    }
    let ty = body[1];
    if ty & 0x3f == 0x02 {
        return Err(PacketError::Oem);
    }
    let len = usize::from(u16::from_le_bytes([body[10], body[11]]));
    let payload = body.get(12..12 + len).ok_or(PacketError::Length)?;
    Ok(Datagram::Plus(Plus {
        payload_type: ty & 0x3f,
        encrypted: ty & payload::ENCRYPTED != 0,
        authenticated: ty & payload::AUTHENTICATED != 0,
        session_id: u32_le(&body[2..6]),
        seq: u32_le(&body[6..10]),
        payload,
        body,
        payload_end: 12 + len,
    }))
}

/// An RMCP+ datagram carrying `payload` (already encrypted when `ty` says so) to session
/// `session_id`; signed with `keys` when `ty` has the authenticated bit.
pub fn plus_frame(
    ty: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<&SessionKeys>,
) -> Vec<u8> {
    let mut out = vec![0x06, 0x00, 0xff, CLASS_IPMI, AUTH_RMCP_PLUS, ty];
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
    if let (Some(k), true) = (keys, ty & payload::AUTHENTICATED != 0) {
        let pad = (4 - (out.len() - 4 + 2) % 4) % 4;
        out.extend(std::iter::repeat_n(0xff, pad));
        out.push(pad as u8);
        out.push(0x07);
        let code = k.auth_code(&out[4..]);
        out.extend_from_slice(&code);
    }
    out
}

/// An IPMI 1.5 datagram outside a session (authentication type none) carrying `message`.
pub fn v15_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0x06, 0x00, 0xff, CLASS_IPMI, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    out
}

/// The two's complement of the bytes' sum: what makes a message's parts sum to zero.
pub fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

/// A request from a remote console (LAN message format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Network function (even: a request).
    pub netfn: u8,
    /// The responder's LUN.
    pub rs_lun: u8,
    /// The requester's address (0x81 for a remote console).
    pub rq_addr: u8,
    /// The requester's sequence number and LUN byte, echoed in the response.
    pub rq_seq_lun: u8,
    /// Command.
    pub cmd: u8,
    /// Request data.
    pub data: &'a [u8],
}

/// Reads a request: rsSA, netFn/rsLUN, checksum, rqSA, rqSeq/rqLUN, cmd, data, checksum.
pub fn parse_request(m: &[u8]) -> Result<Request<'_>, PacketError> {
    if m.len() < 7 {
        return Err(PacketError::Short("IPMI request"));
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(PacketError::Checksum);
    }
    Ok(Request {
        netfn: m[1] >> 2,
        rs_lun: m[1] & 3,
        rq_addr: m[3],
        rq_seq_lun: m[4],
        cmd: m[5],
        data: &m[6..m.len() - 1],
    })
}

impl Request<'_> {
    /// The response with completion code `cc` and `data`, from the BMC at 0x20.
    pub fn response(&self, cc: u8, data: &[u8]) -> Vec<u8> {
        let mut r = vec![
            self.rq_addr,
            ((self.netfn | 1) << 2) | (self.rq_seq_lun & 3),
        ];
        r.push(checksum(&r));
        let start = r.len();
        r.extend_from_slice(&[0x20, (self.rq_seq_lun & !3) | self.rs_lun, self.cmd, cc]);
        r.extend_from_slice(data);
        let c = checksum(&r[start..]);
        r.push(c);
        r
    }
}

/// A request message from a remote console (0x81) to the BMC (0x20), LUN 0.
pub fn request(netfn: u8, cmd: u8, seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0x20, netfn << 2];
    m.push(checksum(&m));
    let start = m.len();
    m.extend_from_slice(&[0x81, (seq & 0x3f) << 2, cmd]);
    m.extend_from_slice(data);
    let c = checksum(&m[start..]);
    m.push(c);
    m
}

/// A response to a remote console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// Network function (odd).
    pub netfn: u8,
    /// The requester's sequence number.
    pub seq: u8,
    /// Command.
    pub cmd: u8,
    /// Completion code.
    pub cc: u8,
    /// Response data.
    pub data: &'a [u8],
}

/// Reads a response: rqSA, netFn/rqLUN, checksum, rsSA, rqSeq/rsLUN, cmd, cc, data, checksum.
pub fn parse_response(m: &[u8]) -> Result<Response<'_>, PacketError> {
    if m.len() < 8 {
        return Err(PacketError::Short("IPMI response"));
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(PacketError::Checksum);
    }
    Ok(Response {
        netfn: m[1] >> 2,
        seq: m[4] >> 2,
        cmd: m[5],
        cc: m[6],
        data: &m[7..m.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Suite;

    #[test]
    fn a_request_and_its_response_round_trip() {
        let m = request(0x00, 0x09, 5, &[0x05, 0, 0]);
        let r = parse_request(&m).unwrap();
        assert_eq!((r.netfn, r.cmd, r.data), (0x00, 0x09, &[5u8, 0, 0][..]));
        let resp = r.response(0, &[1, 2]);
        let p = parse_response(&resp).unwrap();
        assert_eq!(
            (p.netfn, p.seq, p.cmd, p.cc, p.data),
            (1, 5, 9, 0, &[1u8, 2][..])
        );
        let mut bad = m.clone();
        bad[6] ^= 1;
        assert_eq!(parse_request(&bad), Err(PacketError::Checksum));
    }

    #[test]
    fn a_signed_datagram_verifies_and_a_changed_one_does_not() {
        for suite in Suite::ALL {
            let k = SessionKeys::derive(suite, &[3; 32]);
            for len in 0..8usize {
                let payload = vec![0x5a; len];
                let d = plus_frame(0xc0, 7, 9, &payload, Some(&k));
                let Ok(Datagram::Plus(p)) = parse(&d) else {
                    panic!("{d:?}")
                };
                assert_eq!((p.session_id, p.seq, p.payload), (7, 9, &payload[..]));
                assert!(p.encrypted && p.authenticated);
                assert!(p.verify(&k), "{suite:?} {len}");
                let other = SessionKeys::derive(suite, &[4; 32]);
                assert!(!p.verify(&other));
                let mut changed = d.clone();
                changed[10] ^= 1;
                let Ok(Datagram::Plus(p)) = parse(&changed) else {
                    panic!()
                };
                assert!(!p.verify(&k));
            }
        }
    }

    #[test]
    fn short_and_lying_datagrams_are_errors() {
        assert_eq!(parse(&[6, 0]), Err(PacketError::Short("RMCP header")));
        assert_eq!(parse(&[5, 0, 0xff, 7, 0]), Err(PacketError::NotRmcp));
        let mut d = plus_frame(0x10, 0, 0, &[1, 2, 3], None);
        d.truncate(d.len() - 1);
        assert_eq!(parse(&d), Err(PacketError::Length));
        let d = v15_frame(&request(6, 0x38, 0, &[0x8e, 4]));
        assert!(matches!(parse(&d), Ok(Datagram::V15 { session_id: 0, .. })));
    }
}
