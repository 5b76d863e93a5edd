//! Cipher suites and the keys of an RMCP+ session (IPMI 2.0 rev 1.1, 13.28–13.32, 22.15.2).

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use hmac::{Hmac, Mac};

/// A cipher suite Ferric speaks. Both use AES-CBC-128 for confidentiality; they differ in
/// the hash under authentication and integrity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 — what most BMCs offer.
    S3,
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128 — OpenBMC's only one by
    /// default, and what sites that turn SHA-1 off keep.
    S17,
}

/// Authentication algorithm numbers (Open Session payloads, Get Channel Cipher Suites).
pub const AUTH_HMAC_SHA1: u8 = 0x01;
/// RAKP-HMAC-SHA256.
pub const AUTH_HMAC_SHA256: u8 = 0x03;
/// HMAC-SHA1-96.
pub const INTEGRITY_HMAC_SHA1_96: u8 = 0x01;
/// HMAC-SHA256-128.
pub const INTEGRITY_HMAC_SHA256_128: u8 = 0x04;
/// AES-CBC-128.
pub const CONF_AES_CBC_128: u8 = 0x01;

impl Suite {
    /// Every suite, strongest first.
    pub const ALL: [Suite; 2] = [Suite::S17, Suite::S3];

    /// The suite's number.
    pub fn id(self) -> u8 {
        match self {
            Suite::S3 => 3,
            Suite::S17 => 17,
        }
    }

    /// The suite numbered `id`, if Ferric speaks it.
    pub fn from_id(id: u8) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.id() == id)
    }

    /// (authentication, integrity, confidentiality) algorithm numbers.
    pub fn algorithms(self) -> (u8, u8, u8) {
        match self {
            Suite::S3 => (AUTH_HMAC_SHA1, INTEGRITY_HMAC_SHA1_96, CONF_AES_CBC_128),
            Suite::S17 => (
                AUTH_HMAC_SHA256,
                INTEGRITY_HMAC_SHA256_128,
                CONF_AES_CBC_128,
            ),
        }
    }

    /// The suite made of exactly these algorithms.
    pub fn from_algorithms(auth: u8, integrity: u8, conf: u8) -> Option<Suite> {
        Suite::ALL
            .into_iter()
            .find(|s| s.algorithms() == (auth, integrity, conf))
    }

    /// HMAC of the suite's hash over `parts` under `key` (20 or 32 bytes).
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Suite::S3 => run::<Hmac<sha1::Sha1>>(key, parts),
            Suite::S17 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }

    /// Length of the hash: RAKP 2 and 3's codes, the keys.
    pub fn hash_len(self) -> usize {
        match self {
            Suite::S3 => 20,
            Suite::S17 => 32,
        }
    }

    /// Length of RAKP 4's integrity check value and of every packet's AuthCode: HMAC-SHA1-96
    /// keeps 12 bytes, HMAC-SHA256-128 keeps 16.
    pub fn icv_len(self) -> usize {
        match self {
            Suite::S3 => 12,
            Suite::S17 => 16,
        }
    }
}

/// What both ends of a RAKP exchange know once RAKP 2 is sent: the codes and the session
/// integrity key are computed from these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rakp {
    /// The console's (remote console's) session id, SIDm, as sent (little-endian).
    pub console_id: [u8; 4],
    /// The BMC's (managed system's) session id, SIDc.
    pub bmc_id: [u8; 4],
    /// The console's random number, Rm.
    pub console_random: [u8; 16],
    /// The BMC's random number, Rc.
    pub bmc_random: [u8; 16],
    /// The BMC's GUID, GUIDc.
    pub guid: [u8; 16],
    /// The requested maximum privilege byte of RAKP 1, ROLEm (with its name-lookup bit).
    pub role: u8,
    /// The user name, UNAMEm (at most 16 bytes).
    pub user: Vec<u8>,
}

impl Rakp {
    fn role_and_name(&self) -> [u8; 2] {
        [self.role, self.user.len() as u8]
    }

    /// RAKP 2's key exchange authentication code, under the user's key Kuid:
    /// HMAC(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp2_code(&self, suite: Suite, kuid: &[u8]) -> Vec<u8> {
        suite.mac(
            kuid,
            &[
                &self.console_id,
                &self.bmc_id,
                &self.console_random,
                &self.bmc_random,
                &self.guid,
                &self.role_and_name(),
                &self.user,
            ],
        )
    }

    /// RAKP 3's code, proving the console knows Kuid: HMAC(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_code(&self, suite: Suite, kuid: &[u8]) -> Vec<u8> {
        suite.mac(
            kuid,
            &[
                &self.bmc_random,
                &self.console_id,
                &self.role_and_name(),
                &self.user,
            ],
        )
    }

    /// The session integrity key under the BMC key Kg (Kuid when the BMC has none):
    /// HMAC(Rm, Rc, ROLEm, ULENGTHm, UNAMEm).
    pub fn sik(&self, suite: Suite, kg: &[u8]) -> Vec<u8> {
        suite.mac(
            kg,
            &[
                &self.console_random,
                &self.bmc_random,
                &self.role_and_name(),
                &self.user,
            ],
        )
    }

    /// RAKP 4's integrity check value: HMAC(Rm, SIDc, GUIDc) under SIK, truncated.
    pub fn rakp4_icv(&self, suite: Suite, sik: &[u8]) -> Vec<u8> {
        let mut v = suite.mac(sik, &[&self.console_random, &self.bmc_id, &self.guid]);
        v.truncate(suite.icv_len());
        v
    }
}

/// The keys of an open session: K1 signs packets, the first 16 bytes of K2 encrypt them.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// The suite.
    pub suite: Suite,
    k1: Vec<u8>,
    aes: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never printed.
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 = HMAC(SIK, 0x01 × 20) and K2 = HMAC(SIK, 0x02 × 20): the constants are 20
    /// bytes whatever the hash (13.32; ipmitool and OpenBMC agree).
    pub fn derive(suite: Suite, sik: &[u8]) -> SessionKeys {
        let k1 = suite.mac(sik, &[&[0x01; 20]]);
        let k2 = suite.mac(sik, &[&[0x02; 20]]);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        SessionKeys { suite, k1, aes }
    }

    /// A packet's AuthCode over `signed` (AuthType/Format through Next Header).
    pub fn auth_code(&self, signed: &[u8]) -> Vec<u8> {
        let mut v = self.suite.mac(&self.k1, &[signed]);
        v.truncate(self.suite.icv_len());
        v
    }

    /// Whether `code` is the AuthCode of `signed` (compared in constant time).
    pub fn verify(&self, signed: &[u8], code: &[u8]) -> bool {
        let want = self.auth_code(signed);
        want.len() == code.len() && want.iter().zip(code).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    }

    /// An encrypted payload: the IV, then `plain` padded (1, 2, 3… then the pad's length) to
    /// whole AES blocks and encrypted with CBC.
    pub fn encrypt(&self, plain: &[u8], iv: [u8; 16]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = plain.to_vec();
        buf.extend(1..=pad as u8);
        buf.push(pad as u8);
        let n = buf.len();
        let _ = cbc::Encryptor::<aes::Aes128>::new(&self.aes.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, n);
        let mut out = iv.to_vec();
        out.extend(buf);
        out
    }

    /// The plain text of an encrypted payload; `None` when it is not whole blocks after the
    /// IV or its padding does not say a length that fits.
    pub fn decrypt(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < 32 || !payload.len().is_multiple_of(16) {
            return None;
        }
        let iv: [u8; 16] = payload[..16].try_into().ok()?;
        let mut buf = payload[16..].to_vec();
        cbc::Decryptor::<aes::Aes128>::new(&self.aes.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .ok()?;
        let pad = usize::from(*buf.last()?);
        let len = buf.len().checked_sub(pad + 1)?;
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_named_by_their_algorithms() {
        assert_eq!(Suite::from_algorithms(1, 1, 1), Some(Suite::S3));
        assert_eq!(Suite::from_algorithms(3, 4, 1), Some(Suite::S17));
        assert_eq!(Suite::from_algorithms(1, 1, 0), None, "no confidentiality");
        assert_eq!(Suite::from_id(17), Some(Suite::S17));
        assert_eq!(Suite::from_id(2), None);
    }

    #[test]
    fn the_hashes_are_hmac_sha1_and_hmac_sha256() {
        // RFC 2202 and RFC 4231, test case 2.
        let sha1 = Suite::S3.mac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex(&sha1), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        let sha256 = Suite::S17.mac(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            hex(&sha256),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn payloads_round_trip_and_bad_padding_is_refused() {
        for suite in Suite::ALL {
            let k = SessionKeys::derive(suite, &[7; 20]);
            for len in [0usize, 1, 14, 15, 16, 17, 40] {
                let plain: Vec<u8> = (0..len as u8).collect();
                let c = k.encrypt(&plain, [9; 16]);
                assert_eq!(c.len() % 16, 0);
                assert_eq!(k.decrypt(&c).as_deref(), Some(&plain[..]), "{len}");
            }
            assert_eq!(k.decrypt(&[0; 31]), None);
            assert_eq!(k.decrypt(&[0; 33]), None);
            let code = k.auth_code(b"signed bytes");
            assert_eq!(code.len(), suite.icv_len());
            assert!(k.verify(b"signed bytes", &code));
            assert!(!k.verify(b"signed bytez", &code));
        }
    }
}
