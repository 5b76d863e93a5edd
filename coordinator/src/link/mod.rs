//! The coordinator's end of the agent link: a QUIC endpoint with mutual TLS.
//!
//! One endpoint serves two ALPNs. `ferric-enroll/1` ([`enroll`]) accepts a client without a
//! certificate, reads one [`EnrollRequest`](ferric_proto::msg::EnrollRequest) and answers with
//! a signed certificate or a refusal. `ferric/1` ([`agent`]) requires a client certificate
//! issued by this coordinator's CA (verified by rustls) and runs a
//! [`CoordSession`](ferric_proto::session::CoordSession) over the first bidirectional stream;
//! telemetry arrives as datagrams. The link moves bytes and turns session events into
//! [conductor](crate::conductor) calls; it decides nothing itself.

mod agent;
mod enroll;

use crate::Shared;
use ferric_proto::close;
use ferric_proto::frame::{FrameDecoder, Message};
use ferric_proto::{ALPN, ALPN_ENROLL};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info, info_span};

/// Errors setting up the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TLS configuration failed.
    #[error("TLS configuration failed")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error(transparent)]
    Verifier(#[from] crate::pki::PkiError),
    /// QUIC rejected the TLS configuration.
    #[error("QUIC rejected the TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The stateless-reset key could not be stored.
    #[error("cannot store the stateless-reset key: {0}")]
    ResetKey(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind the QUIC endpoint to {addr}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the QUIC server configuration from the CA.
pub fn server_config(
    pki: &crate::pki::Pki,
    idle: Duration,
) -> Result<quinn::ServerConfig, LinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = crate::pki::client_verifier(pki)?;
    let (chain, key) = pki.server_identity();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec(), ALPN_ENROLL.to_vec()];
    // No session resumption: a resumed TLS 1.3 session skips the client certificate, so an
    // agent revoked after its first handshake would come back on a ticket. Every connection
    // shows its certificate (a full handshake per reconnect is cheap next to its lifetime).
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).unwrap_or(quinn::VarInt::from_u32(30_000).into()),
    ));
    transport.max_concurrent_bidi_streams(4u32.into());
    transport.max_concurrent_uni_streams(4u32.into());
    // Small windows: agents send a few KiB per second; this keeps memory per agent low.
    transport.stream_receive_window(quinn::VarInt::from_u32(256 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(512 * 1024));
    transport.send_window(512 * 1024);
    transport.datagram_receive_buffer_size(Some(64 * 1024));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Endpoint settings with a stateless-reset key kept in the data directory (`reset.key`,
/// 0600). A coordinator restarted after a crash can then reset the connections its previous
/// life held, and agents reconnect at once instead of waiting out the idle timeout.
pub fn endpoint_config(data_dir: &std::path::Path) -> Result<quinn::EndpointConfig, LinkError> {
    let path = data_dir.join("reset.key");
    let key = match std::fs::read(&path) {
        Ok(k) if k.len() == 32 => k,
        _ => {
            let mut k = vec![0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut k[..]);
            crate::pki::write_private(&path, &k[..])
                .map_err(|e| LinkError::ResetKey(e.to_string()))?;
            k
        }
    };
    let mut cfg = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &key,
    )));
    // Connection ids carry a check value keyed by the same secret, so that the restarted
    // coordinator recognises its predecessor's ids as its own and answers them with a reset
    // (with a fresh key it would drop them as invalid and stay silent).
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&key[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(cfg)
}

/// Serves one incoming connection until it ends.
pub async fn serve(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes TLS failures such as a client certificate from another CA.
            info!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<HandshakeData>().ok())
        .and_then(|h| h.protocol);
    match alpn.as_deref() {
        Some(p) if p == ALPN_ENROLL => {
            enroll::serve(conn, &shared)
                .instrument(info_span!("enroll", %remote))
                .await
        }
        Some(p) if p == ALPN => agent::serve(conn, shared).await,
        _ => conn.close(close::PROTOCOL_ERROR.into(), b"unknown ALPN"),
    }
}

/// Reads one framed message from a stream (with its size limit).
async fn read_one<M: Message>(recv: &mut quinn::RecvStream, max: usize) -> Result<M, String> {
    let mut dec = FrameDecoder::new(max);
    let mut buf = vec![0u8; 4096];
    loop {
        match dec.next_msg::<M>() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => dec.extend(&buf[..n]),
            Ok(None) => {
                return Err(dec
                    .finish()
                    .err()
                    .map_or("stream ended before a message".into(), |e| e.to_string()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
