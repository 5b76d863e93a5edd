//! The API's socket: HTTPS by default, with a certificate the coordinator's CA signs at each
//! start; plain HTTP only when asked for, and only on loopback.
//!
//! A client may show a certificate: an agent's (signed by the same CA, not revoked) is its
//! credential for the image blobs of its node's project (see [`super::auth`]), so an agent on
//! another host fetches images without an API token. Nothing else of the API takes it.

use crate::Shared;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
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

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            node: None,
        }
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// The TLS server configuration of the API: TLS 1.2 and 1.3, HTTP/1.1, the client
/// certificate optional (verified against the CA and the revocations when shown), and no
/// session resumption (a resumed session would not show its certificate again).
pub fn tls_config(
    shared_pki: &crate::pki::Pki,
    names: &[String],
) -> Result<rustls::ServerConfig, crate::StartError> {
    let (chain, key) = shared_pki.api_identity(names)?;
    let verifier = crate::link::client_verifier(shared_pki)?;
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

/// Accepted TLS connections, handshaken off the accept loop (a slow client holds up no one).
#[derive(Debug)]
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` until `shutdown`.
    pub fn new(
        tcp: TcpListener,
        config: rustls::ServerConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "API accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                };
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let node = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| crate::pki::node_of_certificate(c));
                            let _ = tx.send((tls, Peer { addr, node })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "API TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%addr, "API TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            node: None,
        })
    }
}

/// Serves the API on `tcp` (TLS unless `tls` is `None`) until the coordinator shuts down.
pub async fn serve(tcp: TcpListener, tls: Option<rustls::ServerConfig>, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let app = super::router(shared).into_make_service_with_connect_info::<Peer>();
    let stop = {
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    };
    let result = match tls {
        Some(config) => match TlsListener::new(tcp, config, shutdown) {
            Ok(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
            Err(e) => Err(e),
        },
        None => axum::serve(tcp, app).with_graceful_shutdown(stop).await,
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP API stopped");
    }
}
