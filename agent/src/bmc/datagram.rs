//! What the BMC relay reads from a datagram before passing it on (see `relay`): its kind
//! (ASF, IPMI 1.5 framing, an RMCP+ payload type), whether it is a session-setup request,
//! the answer a request expects, the Presence Pong that answers a Presence Ping, whether a
//! BMC's answer is one Ferric refuses to build a session on, and the session id an Open
//! Session Response gives. Every function takes the bytes a BMC (or anyone on the management
//! network) sent, so none may panic or read past the datagram: they are fuzzed
//! (`fuzz/fuzz_targets/bmc_datagram.rs`).

/// Session setups the relay does not pass up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// None: the answer goes up.
    None = 0,
    /// The BMC offers only IPMI 1.5 sessions.
    Ipmi15Only = 1,
    /// The session was opened without the algorithms asked for.
    WeakAlgorithms = 2,
}

/// The ASF Presence Pong that answers a Presence Ping (`d`) on the BMC's behalf: RMCP header
/// (class ASF), the ASF IANA number 4542, type 0x40, the ping's tag, then the data — IANA
/// number, no OEM data, "IPMI supported, ASF 1.0", no further interactions (DMTF DSP0136,
/// 3.2.4.3). `None` for ASF messages that are not a ping.
pub fn pong_for(d: &[u8]) -> Option<Vec<u8>> {
    if kind(d) != 0x100 || d.len() < 12 || d[4..8] != 4542u32.to_be_bytes() || d[8] != 0x80 {
        return None;
    }
    let mut p = vec![0x06, 0x00, d[2], 0x06];
    p.extend_from_slice(&4542u32.to_be_bytes());
    p.extend_from_slice(&[0x40, d[9], 0x00, 0x10]);
    p.extend_from_slice(&4542u32.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0]);
    Some(p)
}

/// Whether an answer is one Ferric refuses to build a session on (see the module comment).
pub fn refused_answer(d: &[u8]) -> Option<Refusal> {
    match kind(d) {
        // IPMI 1.5 framing without authentication: Get Channel Authentication Capabilities'
        // answer is the IPMB message after the 10-byte session header and its length byte;
        // its data starts after the completion code (IPMI 2.0, table 22-15).
        0x200 if d.len() >= 4 + 10 + 7 + 4 && d[4] == 0x00 => {
            let m = &d[14..];
            let is_caps = m[1] >> 2 == 0x07 && m[5] == 0x38 && m[6] == 0x00;
            let v2 =
                m.get(8).is_some_and(|b| b & 0x80 != 0) && m.get(10).is_some_and(|b| b & 0x02 != 0);
            (is_caps && !v2).then_some(Refusal::Ipmi15Only)
        }
        // An Open Session Response with success status: integrity and confidentiality
        // algorithms at payload bytes 24 and 32 (after the 16-byte headers).
        0x11 if d.len() >= 52 && d[17] == 0 => {
            (d[16 + 24] != 0x01 || d[16 + 32] != 0x01).then_some(Refusal::WeakAlgorithms)
        }
        _ => None,
    }
}

/// What a datagram is: ASF (ping/pong), IPMI 1.5 framing (before a session), or an RMCP+
/// payload type (open session, RAKP 1–4, IPMI messages).
pub fn kind(d: &[u8]) -> u16 {
    if d.len() < 6 {
        return 0xffff;
    }
    if d[3] & 0x1f == 0x06 {
        0x100
    } else if d[4] == 0x06 {
        u16::from(d[5] & 0x3f)
    } else {
        0x200
    }
}

/// The kind of answer a request expects.
pub fn answer_kind(request: u16) -> u16 {
    match request {
        0x10 | 0x12 | 0x14 => request + 1,
        k => k,
    }
}

/// Session setup messages (see `run`).
pub fn is_login(d: &[u8]) -> bool {
    matches!(kind(d), 0x10 | 0x12 | 0x14)
}

/// The managed system's session id in a successful Open Session Response: the payload starts
/// after the RMCP (4) and session (12) headers; status is its byte 1, the id its bytes 8–11.
pub fn opened_session(d: &[u8]) -> Option<u32> {
    (kind(d) == 0x11 && d.len() >= 28 && d[17] == 0)
        .then(|| u32::from_le_bytes([d[24], d[25], d[26], d[27]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_told_apart_and_answers_matched() {
        let rakp1 = [0x06, 0x00, 0xff, 0x07, 0x06, 0x12, 0, 0];
        let rakp3 = [0x06, 0x00, 0xff, 0x07, 0x06, 0x14, 0, 0];
        let ipmi = [0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 0, 0];
        let open = [0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0];
        let ping = [0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe];
        let v15 = [0x06, 0x00, 0xff, 0x07, 0x00, 0x00, 0, 0];
        assert!(is_login(&rakp1) && is_login(&rakp3) && is_login(&open));
        assert!(!is_login(&ipmi) && !is_login(&ping) && !is_login(&[6]));
        assert_eq!(answer_kind(kind(&open)), 0x11);
        assert_eq!(answer_kind(kind(&rakp1)), 0x13);
        assert_eq!(answer_kind(kind(&ipmi)), kind(&ipmi));
        assert_eq!(kind(&ping), 0x100);
        assert_eq!(kind(&v15), 0x200);
        let mut open_ok = vec![0x06, 0x00, 0xff, 0x07, 0x06, 0x11];
        open_ok.resize(36, 0);
        open_ok[24..28].copy_from_slice(&0x0a0b_0c0du32.to_le_bytes());
        assert_eq!(opened_session(&open_ok), Some(0x0a0b_0c0d));
        open_ok[17] = 0x01; // an error status opens nothing
        assert_eq!(opened_session(&open_ok), None);
        assert_eq!(opened_session(&open_ok[..20]), None);
    }

    #[test]
    fn a_ping_is_answered_and_weak_setups_are_refused() {
        // RMCP (class ASF), IANA 4542, Presence Ping, tag 0x2a.
        let ping = [
            0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 0x2a, 0x00, 0x00,
        ];
        let pong = pong_for(&ping).unwrap();
        assert_eq!(pong.len(), 28);
        assert_eq!((pong[3], pong[8], pong[9]), (0x06, 0x40, 0x2a));
        assert_eq!(pong_for(&ping[..11]), None, "a truncated ping");
        let mut not_ping = ping;
        not_ping[8] = 0x40;
        assert_eq!(pong_for(&not_ping), None, "a pong is not answered");

        // An Open Session Response (success) choosing HMAC-SHA1-96 and AES-CBC-128 …
        let mut open = vec![0x06, 0x00, 0xff, 0x07, 0x06, 0x11];
        open.resize(52, 0);
        open[16 + 24] = 0x01;
        open[16 + 32] = 0x01;
        assert_eq!(refused_answer(&open), None);
        // … and one choosing no confidentiality.
        open[16 + 32] = 0x00;
        assert_eq!(refused_answer(&open), Some(Refusal::WeakAlgorithms));
        assert_eq!(refused_answer(&open[..51]), None);

        // Get Channel Authentication Capabilities answered in IPMI 1.5 framing, no IPMI 2.0.
        let mut caps = vec![0x06, 0x00, 0xff, 0x07, 0x00];
        caps.resize(14, 0);
        caps.extend_from_slice(&[
            0x81, 0x1c, 0x63, 0x20, 0x00, 0x38, 0x00, 0x01, 0x04, 0x00, 0x00,
        ]);
        assert_eq!(refused_answer(&caps), Some(Refusal::Ipmi15Only));
        caps[14 + 8] |= 0x80; // "IPMI 2.0 extended capabilities"
        caps[14 + 10] |= 0x02; // "IPMI 2.0 supported"
        assert_eq!(refused_answer(&caps), None);
    }

    #[test]
    fn every_prefix_of_a_datagram_is_classified_without_panicking() {
        let mut d = vec![0x06, 0x00, 0xff, 0x07, 0x06, 0x11];
        d.resize(64, 0xff);
        for n in 0..=d.len() {
            let p = &d[..n];
            let k = kind(p);
            let _ = (
                answer_kind(k),
                is_login(p),
                pong_for(p),
                refused_answer(p),
                opened_session(p),
            );
        }
    }
}
