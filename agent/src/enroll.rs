//! Enrollment: a single-use bootstrap token and the pinned CA fingerprint buy a client
//! certificate. The private key never leaves the agent; the coordinator signs a CSR.

use crate::tls::{CaPin, Identity, IdentityMeta, PinnedCaVerifier, TlsError, enroll_client_config};
use ferric_proto::frame::{FrameDecoder, to_frame};
use ferric_proto::msg::{EnrollRefusal, EnrollRequest, EnrollResponse, Role};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest enrollment response accepted.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why an enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The coordinator's address did not resolve.
    #[error("cannot resolve coordinator address `{0}`")]
    Resolve(String, #[source] std::io::Error),
    /// The coordinator presented a CA other than the pinned one.
    #[error("{0}")]
    PinMismatch(String),
    /// The QUIC connection failed.
    #[error("cannot connect to the coordinator at {addr}: {reason}")]
    Connect {
        /// Address dialled.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The coordinator refused the enrollment.
    #[error("coordinator refused the enrollment: {0}")]
    Refused(EnrollRefusal),
    /// The answer was not valid.
    #[error("invalid answer from the coordinator: {0}")]
    Protocol(String),
    /// Key or CSR generation failed.
    #[error("cannot generate the node key")]
    Key(#[from] rcgen::Error),
    /// Saving the identity failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No answer in time.
    #[error("coordinator did not answer within {0:?}")]
    Timeout(Duration),
}

/// What to enroll as.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Coordinator address, `host:port`.
    pub coordinator: String,
    /// Bootstrap token.
    pub token: String,
    /// Pinned CA fingerprint.
    pub ca_pin: CaPin,
    /// Node name wanted.
    pub node: String,
    /// Role.
    pub role: Role,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
    /// The local address to enroll from (the system's choice when absent). A ramdisk's
    /// enrollment must come from the address DHCP gave its machine.
    pub local: Option<std::net::IpAddr>,
}

/// Resolves `host:port` to one address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, std::io::Error> {
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

/// A client endpoint of the right address family for `remote`, on `local` when given.
pub fn client_endpoint(
    remote: SocketAddr,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<quinn::Endpoint> {
    let any: std::net::IpAddr = if remote.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    quinn::Endpoint::client(SocketAddr::new(local.unwrap_or(any), 0))
}

/// Enrolls and returns the identity (not yet saved).
pub async fn enroll(opts: &EnrollOptions) -> Result<Identity, EnrollError> {
    tokio::time::timeout(opts.timeout, enroll_inner(opts))
        .await
        .map_err(|_| EnrollError::Timeout(opts.timeout))?
}

async fn enroll_inner(opts: &EnrollOptions) -> Result<Identity, EnrollError> {
    let addr = resolve(&opts.coordinator)
        .await
        .map_err(|e| EnrollError::Resolve(opts.coordinator.clone(), e))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, opts.node.as_str());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;

    let verifier = Arc::new(PinnedCaVerifier::new(opts.ca_pin, crate::tls::provider()));
    let endpoint = client_endpoint(addr, opts.local).map_err(|e| EnrollError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    let connect_err = |reason: String| match verifier.last_error.lock().ok().and_then(|e| e.clone())
    {
        Some(pin) => EnrollError::PinMismatch(pin),
        None => EnrollError::Connect { addr, reason },
    };
    let conn = endpoint
        .connect_with(
            enroll_client_config(verifier.clone())?,
            addr,
            ferric_proto::COORDINATOR_SERVER_NAME,
        )
        .map_err(|e| EnrollError::Connect {
            addr,
            reason: e.to_string(),
        })?
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let req = EnrollRequest {
        token: opts.token.clone(),
        node: opts.node.clone(),
        role: opts.role,
        csr_der: csr.der().to_vec(),
    };
    let frame = to_frame(&req, MAX_RESPONSE).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    send.write_all(&frame)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = send.finish();
    let bytes = recv
        .read_to_end(MAX_RESPONSE + 4)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let mut dec = FrameDecoder::new(MAX_RESPONSE);
    dec.extend(&bytes);
    let resp = dec
        .next_msg::<EnrollResponse>()
        .map_err(|e| EnrollError::Protocol(e.to_string()))?
        .ok_or_else(|| EnrollError::Protocol("no response frame".into()))?;
    conn.close(ferric_proto::close::ENROLL_DONE.into(), b"done");
    endpoint.wait_idle().await;
    match resp {
        EnrollResponse::Refused(r) => Err(EnrollError::Refused(r)),
        EnrollResponse::Enrolled { cert_der, ca_der } => {
            if Sha256::digest(&ca_der)[..] != opts.ca_pin.0[..] {
                return Err(EnrollError::PinMismatch(format!(
                    "coordinator returned a CA that does not match the pinned hash {}",
                    opts.ca_pin
                )));
            }
            Ok(Identity {
                meta: IdentityMeta {
                    node: opts.node.clone(),
                    role: opts.role,
                    coordinator: opts.coordinator.clone(),
                },
                cert_der: cert_der.into(),
                key_der: key.serialize_der(),
                ca_der: ca_der.into(),
            })
        }
    }
}
