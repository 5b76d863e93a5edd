//! The agent's TLS: the pinned-CA verifier used before the agent has a certificate, the
//! identity files it keeps afterwards, and the QUIC client configurations.

use ferric_proto::msg::Role;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime, pem::PemObject,
};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Errors around the agent's identity and TLS setup.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent has not enrolled yet.
    #[error("no identity in {0}: enroll first with `ferric-agent enroll`")]
    NotEnrolled(PathBuf),
    /// A stored file is not valid.
    #[error("{0} is not valid")]
    BadFile(PathBuf),
    /// The CA fingerprint is malformed.
    #[error("CA hash `{0}` is not of the form sha256:<64 hex digits>")]
    BadCaHash(String),
    /// rustls refused the configuration.
    #[error("TLS configuration failed")]
    Rustls(#[from] rustls::Error),
    /// QUIC refused the configuration.
    #[error("QUIC rejected the TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A parsed CA pin: the SHA-256 of the CA certificate's DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaPin(pub [u8; 32]);

impl std::str::FromStr for CaPin {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| TlsError::BadCaHash(s.into()))?;
        let bytes = hex::decode(hex_part).map_err(|_| TlsError::BadCaHash(s.into()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TlsError::BadCaHash(s.into()))?;
        Ok(CaPin(arr))
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// Accepts a server whose chain contains a CA with the pinned fingerprint and whose
/// certificate that CA signed for the coordinator's name. Records why it refused, so that the
/// caller can name the problem instead of a bare TLS alert.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    /// Why the last verification failed.
    pub last_error: Mutex<Option<String>>,
}

impl PinnedCaVerifier {
    /// A verifier for `pin`.
    pub fn new(pin: CaPin, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin,
            provider,
            last_error: Mutex::new(None),
        }
    }

    fn fail(&self, msg: String) -> rustls::Error {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.clone());
        }
        rustls::Error::General(msg)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref())[..] == self.pin.0[..])
        else {
            let offered: Vec<String> = intermediates
                .iter()
                .map(|c| format!("sha256:{}", hex::encode(Sha256::digest(c.as_ref()))))
                .collect();
            return Err(self.fail(format!(
                "coordinator CA does not match the pinned hash {} (it offered {})",
                self.pin,
                if offered.is_empty() {
                    "no CA".into()
                } else {
                    offered.join(", ")
                }
            )));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| self.fail(format!("cannot build verifier: {e}")))?;
        inner
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| {
                self.fail(format!(
                    "coordinator certificate is not valid for the pinned CA: {e}"
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the agent keeps about itself after enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityMeta {
    /// Node name.
    pub node: String,
    /// Role.
    pub role: Role,
    /// Coordinator address it enrolled with.
    pub coordinator: String,
}

/// The agent's identity: its certificate and key, and the coordinator's CA.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Metadata.
    pub meta: IdentityMeta,
    /// Client certificate (DER).
    pub cert_der: CertificateDer<'static>,
    /// Private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
    /// CA certificate (DER).
    pub ca_der: CertificateDer<'static>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a file atomically with the given mode.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    // A temporary file of its own (a key and a certificate of one stem once shared one), made
    // anew: an older one left by a crash, with a looser mode, would keep its mode.
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

impl Identity {
    /// Saves the identity into `dir` (key 0600).
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_file(
            &dir.join("node.key"),
            pem("PRIVATE KEY", &self.key_der).as_bytes(),
            0o600,
        )?;
        write_file(
            &dir.join("node.pem"),
            pem("CERTIFICATE", &self.cert_der).as_bytes(),
            0o644,
        )?;
        write_file(
            &dir.join("ca.pem"),
            pem("CERTIFICATE", &self.ca_der).as_bytes(),
            0o644,
        )?;
        let meta = serde_json::to_vec_pretty(&self.meta)
            .map_err(|_| TlsError::BadFile(dir.join("identity.json")))?;
        write_file(&dir.join("identity.json"), &meta, 0o644)
    }

    /// The client certificate and its key in one PEM, for the HTTPS client that fetches
    /// images from the coordinator (the certificate is the agent's credential there; it grants
    /// image blobs of its node's project and nothing else of the API).
    pub fn client_pem(&self) -> Vec<u8> {
        let mut out = pem("CERTIFICATE", &self.cert_der);
        out.push_str(&pem("PRIVATE KEY", &self.key_der));
        out.into_bytes()
    }

    /// Loads the identity saved in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let meta_path = dir.join("identity.json");
        if !meta_path.exists() {
            return Err(TlsError::NotEnrolled(dir.to_owned()));
        }
        let meta: IdentityMeta =
            serde_json::from_slice(&std::fs::read(&meta_path).map_err(io(&meta_path))?)
                .map_err(|_| TlsError::BadFile(meta_path.clone()))?;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(io(&p))
        };
        let cert_der = CertificateDer::from_pem_slice(&read("node.pem")?)
            .map_err(|_| TlsError::BadFile(dir.join("node.pem")))?;
        let ca_der = CertificateDer::from_pem_slice(&read("ca.pem")?)
            .map_err(|_| TlsError::BadFile(dir.join("ca.pem")))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&read("node.key")?)
            .map_err(|_| TlsError::BadFile(dir.join("node.key")))?;
        Ok(Self {
            meta,
            cert_der,
            key_der: key.secret_pkcs8_der().to_vec(),
            ca_der,
        })
    }
}

/// The ring provider, the only one linked.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport settings of the agent link.
pub fn transport(keepalive: Duration, idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(keepalive));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
    t.stream_receive_window(quinn::VarInt::from_u32(1 << 20));
    t.receive_window(quinn::VarInt::from_u32(2 << 20));
    t.send_window(1 << 20);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(4));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(4));
    Arc::new(t)
}

/// Client configuration for enrollment: server verified through the pin, no client cert.
pub fn enroll_client_config(
    verifier: Arc<PinnedCaVerifier>,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ferric_proto::ALPN_ENROLL.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    cfg.transport_config(transport(Duration::from_secs(5), Duration::from_secs(30)));
    Ok(cfg)
}

/// Client configuration of the mTLS link from a certificate chain and key.
pub fn link_client_config_from(
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    keepalive: Duration,
    idle: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ferric_proto::ALPN.to_vec()];
    let mut cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    cfg.transport_config(transport(keepalive, idle));
    Ok(cfg)
}

/// Client configuration of the mTLS link for an identity.
pub fn link_client_config(
    id: &Identity,
    keepalive: Duration,
    idle: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
    link_client_config_from(
        id.ca_der.clone(),
        vec![id.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
        keepalive,
        idle,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_parses_and_names_bad_input() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(good.parse::<CaPin>().unwrap().to_string(), good);
        assert!(matches!(
            "sha1:00".parse::<CaPin>(),
            Err(TlsError::BadCaHash(_))
        ));
        assert!(matches!(
            "sha256:zz".parse::<CaPin>(),
            Err(TlsError::BadCaHash(_))
        ));
    }

    #[test]
    fn pem_roundtrips_through_the_parser() {
        for len in [1usize, 2, 3, 100, 257] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let text = pem("CERTIFICATE", &der);
            let back = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), &der[..]);
        }
    }
}
