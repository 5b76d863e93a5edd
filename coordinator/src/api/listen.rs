//! The API's socket: HTTPS by default, with a certificate the coordinator's CA signs at each
//! start; plain HTTP only when asked for, and only on loopback.
//!
//! A client may show a certificate: an agent's (signed by the same CA, not revoked) is its
//! credential for the image blobs of its node's project (see [`super::auth`]), so an agent on
//! another host fetches images without an API token. Nothing else of the API takes it.

use crate::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Who is on the other end of an API connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// The node its verified client certificate names, if it showed one.
    pub node: Option<String>,
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS server configuration of the API: TLS 1.2 and 1.3, HTTP/1.1, the client
/// certificate optional (verified against the CA and the revocations when shown), and no
/// session resumption (a resumed session would not show its certificate again).
pub fn tls_config(
    shared_pki: &crate::pki::Pki,
    names: &[String],
) -> Result<rustls::ServerConfig, crate::StartError> {
    let (chain, key) = shared_pki.api_identity(names)?;
    let verifier = crate::pki::client_verifier(shared_pki)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(crate::StartError::ApiTls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(crate::StartError::ApiTls)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(tls)
}

/// Accepts TLS connections on `tcp` through `gate` until `shutdown`: each handshake runs off
/// the accept loop (a slow client holds up no one) within [`HANDSHAKE_TIMEOUT`], and the
/// connection keeps its place at the gate for its whole life.
async fn accept_tls(
    tcp: TcpListener,
    config: rustls::ServerConfig,
    gate: crate::http::Gate,
    shutdown: CancellationToken,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, Peer, crate::http::Permit)>,
) {
    let (plain_tx, mut plain_rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(crate::http::accept_tcp(
        tcp,
        gate,
        shutdown.clone(),
        plain_tx,
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    while let Some((stream, addr, permit)) = plain_rx.recv().await {
        let (tx, acceptor) = (tx.clone(), acceptor.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let node = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::pki::node_of_certificate(c));
                    let _ = tx.send((tls, Peer { addr, node }, permit)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "API TLS handshake timed out"),
            }
        });
    }
}

/// Serves the API on `tcp` (TLS unless `tls` is `None`) within `limits` until the
/// coordinator shuts down.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<rustls::ServerConfig>,
    limits: crate::http::Limits,
    shared: Arc<Shared>,
) {
    let shutdown = shared.shutdown.clone();
    let grace = shared.config.drain_grace;
    let header_timeout = limits.header_timeout;
    let gate = crate::http::Gate::new("API", limits);
    let app = super::router(shared);
    match tls {
        Some(config) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(accept_tls(tcp, config, gate, shutdown.clone(), tx));
            crate::http::serve(rx, app, header_timeout, shutdown, grace).await;
        }
        None => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(crate::http::accept_tcp(tcp, gate, shutdown.clone(), tx));
            let (peer_tx, peer_rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                while let Some((io, addr, permit)) = rx.recv().await {
                    if peer_tx
                        .send((io, Peer { addr, node: None }, permit))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            crate::http::serve(peer_rx, app, header_timeout, shutdown, grace).await;
        }
    }
}
