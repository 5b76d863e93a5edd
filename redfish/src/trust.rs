//! Which BMC certificates a client accepts. BMCs ship self-signed certificates almost
//! everywhere, so a certificate is accepted when its SHA-256 matches the fingerprint pinned in
//! the BMC's address, or when a CA of the operator's bundle signed it for the BMC's name; any
//! other is refused with both fingerprints named, so that an operator can check and pin it.
//! Trust on first use is a separate, explicit act ([`first_use`]): nothing here accepts a
//! certificate it cannot check.

use ferric_proto::msg::fingerprint_text;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// The SHA-256 of a certificate's DER.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// What a connection to one BMC trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly the certificate with this SHA-256.
    Pin([u8; 32]),
    /// Certificates these CAs signed for the BMC's host name.
    Roots(Arc<RootCertStore>),
    /// Nothing: every certificate is refused, naming its fingerprint.
    Nothing,
}

/// The crypto the client and the service use.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks a BMC's certificate against its [`Trust`], and remembers why it refused one so that
/// the error names the problem instead of a bare TLS alert.
#[derive(Debug)]
pub struct BmcVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
    refusal: Mutex<Option<String>>,
}

impl BmcVerifier {
    /// A verifier for `trust`.
    pub fn new(trust: Trust, provider: Arc<CryptoProvider>) -> BmcVerifier {
        BmcVerifier {
            trust,
            provider,
            refusal: Mutex::new(None),
        }
    }

    /// Why the last certificate was refused (taken: each refusal is told once).
    pub fn take_refusal(&self) -> Option<String> {
        self.refusal.lock().ok().and_then(|mut r| r.take())
    }

    fn refuse(&self, msg: String) -> rustls::Error {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(msg.clone());
        }
        rustls::Error::General(msg)
    }
}

impl ServerCertVerifier for BmcVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity.as_ref());
        let seen_text = fingerprint_text(&seen);
        match &self.trust {
            Trust::Pin(pin) if *pin == seen => Ok(ServerCertVerified::assertion()),
            Trust::Pin(pin) => Err(self.refuse(format!(
                "its certificate is {seen_text}, not the pinned {}: refused (a replaced BMC \
                 certificate is pinned again by changing the address's ?pin=)",
                fingerprint_text(pin)
            ))),
            Trust::Roots(roots) => {
                let inner = WebPkiServerVerifier::builder_with_provider(
                    roots.clone(),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| self.refuse(format!("cannot build a verifier: {e}")))?;
                inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map_err(|e| {
                        self.refuse(format!(
                            "its certificate {seen_text} does not check against the BMC CA \
                             bundle ({e}); if it is this BMC's, pin it: ?pin={seen_text}"
                        ))
                    })
            }
            Trust::Nothing => Err(self.refuse(format!(
                "its certificate {seen_text} is neither pinned nor checkable (no BMC CA bundle \
                 is configured); if it is this BMC's, add ?pin={seen_text} to its address"
            ))),
        }
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

/// Records the certificate a server presents and accepts it: only for [`first_use`].
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<[u8; 32]>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(fingerprint(end_entity.as_ref()));
        }
        Ok(ServerCertVerified::assertion())
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

/// Trust on first use, when an operator asks for it: connects to `host:port`, completes a TLS
/// handshake (the server proves it holds the certificate's key) and returns the certificate's
/// fingerprint, to be pinned in the BMC's address.
pub async fn first_use(host: &str, port: u16) -> std::io::Result<[u8; 32]> {
    let provider = provider();
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))??;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let _tls = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake in 10 s"))??;
    let seen = recorder.seen.lock().ok().and_then(|s| *s);
    seen.ok_or_else(|| std::io::Error::other("the server presented no certificate"))
}
