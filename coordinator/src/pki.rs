//! The coordinator's certificate authority: it signs its own server certificate and the client
//! certificates of enrolled agents, and it names an agent by the certificate it presents.
//!
//! Files in the data directory: `ca.key` (0600), `ca.pem`, `server.key` (0600), `server.pem`.
//! The CA fingerprint that agents pin is `sha256:` + hex of the CA certificate's DER.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a key or certificate file failed.
    #[error("cannot access {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key or certificate file is not valid PEM of the expected kind.
    #[error("{path} is not a valid {what}")]
    BadFile {
        /// File.
        path: PathBuf,
        /// Expected content.
        what: &'static str,
    },
    /// Generating or signing failed.
    #[error("certificate operation failed")]
    Rcgen(#[from] rcgen::Error),
    /// The certificate signing request is invalid.
    #[error("certificate signing request is not valid: {0}")]
    BadCsr(String),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client certificate verifier could not be built: {0}")]
    Verifier(String),
}

/// How long an agent's client certificate is valid.
pub const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The CA and the coordinator's server identity.
#[derive(Debug)]
pub struct Pki {
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
    server_der: CertificateDer<'static>,
    revocations: Revocations,
}

/// Which certificates of a node are revoked: every client certificate carries its node's
/// certificate generation, and one older than the node's current generation is refused at
/// the handshake. Only nodes revoked at least once are listed.
#[derive(Debug, Clone, Default)]
pub struct Revocations(std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, i64>>>);

impl Revocations {
    /// Certificates of `node` older than `generation` are refused.
    pub fn set(&self, node: &str, generation: i64) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        if generation > 0 {
            m.insert(node.to_owned(), generation);
        } else {
            m.remove(node);
        }
    }

    /// The generation a certificate of `node` must have at least.
    pub fn current(&self, node: &str) -> i64 {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.get(node).copied().unwrap_or(0)
    }

    /// Whether a verified client certificate is revoked (`None` when it names no node).
    pub fn is_revoked(&self, der: &[u8]) -> Option<bool> {
        let (node, generation) = identity_of_certificate(der)?;
        Some(generation < self.current(&node))
    }
}

/// The prefix of the organizational unit that carries a client certificate's generation.
const GENERATION_OU: &str = "ferric-cert-generation-";

/// Writes a secret file atomically, readable by its owner only.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    use std::os::unix::fs::PermissionsExt;
    // A temporary file of its own, made anew (one left by a crash keeps its mode).
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(contents.as_ref()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Pki {
    /// Loads the CA from `dir`, or creates it (and the server certificate) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let ca_key_path = dir.join("ca.key");
        let ca_path = dir.join("ca.pem");
        let (ca_key, ca_der) = if ca_key_path.exists() {
            let key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(|_| PkiError::BadFile {
                path: ca_key_path.clone(),
                what: "CA private key",
            })?;
            let der = CertificateDer::from_pem_slice(read(&ca_path)?.as_bytes()).map_err(|_| {
                PkiError::BadFile {
                    path: ca_path.clone(),
                    what: "CA certificate",
                }
            })?;
            (key, der)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Ferric coordinator CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = now() - time::Duration::hours(1);
            params.not_after = now() + time::Duration::days(3650);
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, key.serialize_pem())?;
            write_private(&ca_path, cert.pem())?;
            (key, cert.der().clone())
        };

        let server_key_path = dir.join("server.key");
        let server_path = dir.join("server.pem");
        let (server_key_der, server_der) = if server_key_path.exists() && server_path.exists() {
            let key =
                KeyPair::from_pem(&read(&server_key_path)?).map_err(|_| PkiError::BadFile {
                    path: server_key_path.clone(),
                    what: "server private key",
                })?;
            let der =
                CertificateDer::from_pem_slice(read(&server_path)?.as_bytes()).map_err(|_| {
                    PkiError::BadFile {
                        path: server_path.clone(),
                        what: "server certificate",
                    }
                })?;
            (key.serialize_der(), der)
        } else {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec![ferric_proto::COORDINATOR_SERVER_NAME.to_owned()])?;
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "Ferric coordinator");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = now() - time::Duration::hours(1);
            params.not_after = now() + time::Duration::days(3650);
            let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key)?;
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&server_key_path, key.serialize_pem())?;
            write_private(&server_path, cert.pem())?;
            (key.serialize_der(), cert.der().clone())
        };
        Ok(Self {
            ca_key,
            ca_der,
            server_key_der,
            server_der,
            revocations: Revocations::default(),
        })
    }

    /// The revoked certificate generations, shared with the link's certificate verifier.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The fingerprint agents pin: `sha256:<hex of the CA certificate DER>`.
    pub fn ca_hash(&self) -> String {
        ca_hash(&self.ca_der)
    }

    /// Server chain (server certificate, then CA) and key for TLS.
    pub fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.server_der.clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
        )
    }

    /// A fresh certificate for the HTTPS API, signed at each start and kept in memory only:
    /// it names `coordinator.ferric.internal` (the name the agents' link checks too), `localhost`, the
    /// loopback addresses, and `names` (the host's name, the addresses the API is reached at),
    /// so that any HTTP client trusting the CA can verify it by the URL's host. Valid 90 days.
    pub fn api_identity(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let mut sans = vec![
            ferric_proto::COORDINATOR_SERVER_NAME.to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        for n in names {
            let n = n.trim_start_matches('[').trim_end_matches(']');
            if !n.is_empty() && !sans.iter().any(|s| s.eq_ignore_ascii_case(n)) {
                sans.push(n.to_owned());
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferric coordinator API");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now() - time::Duration::hours(1);
        params.not_after = now() + time::Duration::days(90);
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((
            vec![cert.der().clone(), self.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs an agent's CSR. The CSR only contributes its public key (and proves possession by
    /// its signature); the identity is `node`, as authorised by the bootstrap token.
    pub fn sign_client(
        &self,
        csr_der: &[u8],
        node: &str,
    ) -> Result<CertificateDer<'static>, PkiError> {
        self.sign_client_for(csr_der, node, CLIENT_CERT_VALIDITY, 0)
    }

    /// Signs a client certificate valid for `validity` (a ramdisk's lasts one boot) of the
    /// node's certificate `generation`.
    pub fn sign_client_for(
        &self,
        csr_der: &[u8],
        node: &str,
        validity: Duration,
        generation: i64,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        dn.push(
            DnType::OrganizationalUnitName,
            format!("{GENERATION_OU}{generation}"),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            format!("{node}.node.ferric.internal")
                .try_into()
                .map_err(|_| {
                    PkiError::BadCsr(format!("node name `{node}` cannot be a DNS label"))
                })?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = now() - time::Duration::minutes(5);
        params.not_after = now() + time::Duration::seconds(validity.as_secs() as i64);
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        Ok(cert.der().clone())
    }
}

/// Hash under which a token secret (bootstrap or per-boot) is stored.
pub fn token_secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// `sha256:<hex>` of a certificate's DER.
pub fn ca_hash(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The node a verified client certificate names (its common name).
pub fn node_of_certificate(der: &[u8]) -> Option<String> {
    identity_of_certificate(der).map(|(n, _)| n)
}

/// SHA-256 (hex) of a certificate's subject public key: what ties a ramdisk's certificate to
/// the boot it enrolled in (the key is the ramdisk's own, made in its memory at each boot).
pub fn key_of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(Sha256::digest(cert.public_key().raw)))
}

/// The node a client certificate names and its generation (0 when it carries none: issued
/// before generations were).
pub fn identity_of_certificate(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    let node = cn.as_str().ok()?.to_owned();
    let generation = cert
        .subject()
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .find_map(|ou| ou.strip_prefix(GENERATION_OU)?.parse().ok())
        .unwrap_or(0);
    Some((node, generation))
}

/// The CA's verification, then revocation: a certificate of an older generation than its
/// node's is refused in the handshake (the agent sees TLS's "certificate revoked").
#[derive(Debug)]
struct RevocationCheck {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revocations: Revocations,
}

impl rustls::server::danger::ClientCertVerifier for RevocationCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.revocations.is_revoked(end_entity) == Some(true) {
            tracing::info!(
                node = node_of_certificate(end_entity).unwrap_or_default(),
                "revoked client certificate refused"
            );
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client-certificate check of the link and of the API: signed by the CA, not revoked;
/// optional in the handshake (enrollment and API clients have none), required by what needs it.
pub fn client_verifier(
    pki: &Pki,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki.ca_der().clone())
        .map_err(|e| PkiError::Verifier(e.to_string()))?;
    let inner =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
    Ok(Arc::new(RevocationCheck {
        inner,
        revocations: pki.revocations().clone(),
    }))
}
