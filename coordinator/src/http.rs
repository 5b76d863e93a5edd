//! How the coordinator's HTTP servers (the API and the boot services' HTTP) take connections:
//! a connection cap in all and per peer address, a deadline for every request's header (so a
//! connection that sends nothing, or stays idle between requests, is closed), and a drain
//! that lets requests under way finish. Without them, idle connections from one host held
//! the process's file descriptors until the API stopped answering.
//!
//! The process's open-file limit is raised at start ([`raise_open_files`]) and the caps are
//! taken from it ([`Limits::for_open_files`]), keeping room for the store, the agent link
//! and the files being served.

use crate::lock;
use axum::Router;
use axum::extract::ConnectInfo;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// What one HTTP server takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (TLS handshakes included).
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub per_address: usize,
    /// How long a request's header may take to arrive, counted from the connection's start
    /// or the end of its previous request: an idle connection is closed after it.
    pub header_timeout: Duration,
}

/// File descriptors kept for everything but HTTP connections: the store, the link's socket,
/// the boot services' sockets, logs.
const RESERVED_FILES: u64 = 256;

impl Limits {
    /// Caps for a server that gets `share` of the open files above [`RESERVED_FILES`] (each
    /// connection may hold two: its socket and a file it serves), at most `ceiling`
    /// connections, `per_address` from one address.
    pub fn for_open_files(
        open_files: u64,
        share: u64,
        ceiling: usize,
        per_address: usize,
    ) -> Limits {
        let room = open_files.saturating_sub(RESERVED_FILES) / share.max(1) / 2;
        let max = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .clamp(16, ceiling.max(16));
        Limits {
            max_connections: max,
            per_address: per_address.min(max),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Raises the process's soft open-file limit to its hard limit; returns the limit now in force.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    Ok(()) => {
                        tracing::info!(from = soft, to = hard, "open-file limit raised");
                        return hard;
                    }
                    Err(e) => tracing::warn!(error = %e, soft, hard, "open-file limit not raised"),
                }
            }
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "open-file limit unknown; assuming 1024");
            1024
        }
    }
}

#[derive(Debug, Default)]
struct GateState {
    open: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Counts a server's open connections; a [`Permit`] is held for a connection's whole life.
#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
    limits: Limits,
    what: &'static str,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<GateState>>,
    address: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        s.open = s.open.saturating_sub(1);
        if let Some(n) = s.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.address);
            }
        }
    }
}

impl Gate {
    /// A gate for the server named `what` (for logs).
    pub fn new(what: &'static str, limits: Limits) -> Gate {
        Gate {
            state: Arc::default(),
            limits,
            what,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Admits a connection from `address`, or `None` when a cap is reached (the caller closes
    /// it at once).
    pub fn admit(&self, address: IpAddr) -> Option<Permit> {
        let address = address.to_canonical();
        let mut s = lock(&self.state);
        let mine = s.by_address.get(&address).copied().unwrap_or(0);
        if s.open >= self.limits.max_connections || mine >= self.limits.per_address {
            let (open, what) = (s.open, self.what);
            drop(s);
            tracing::debug!(%address, open, from_address = mine, server = what, "connection refused: at the cap");
            return None;
        }
        s.open += 1;
        *s.by_address.entry(address).or_default() += 1;
        Some(Permit {
            state: self.state.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.state).open
    }
}

/// Accepts TCP connections on `listener` through `gate` until `shutdown`, handing each
/// admitted one (with its peer address and permit) to `serve`. Accept errors (out of
/// descriptors) pause the loop instead of spinning.
pub async fn accept_tcp(
    listener: tokio::net::TcpListener,
    gate: Gate,
    shutdown: CancellationToken,
    tx: tokio::sync::mpsc::Sender<(tokio::net::TcpStream, std::net::SocketAddr, Permit)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, server = gate.what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
        };
        let Some(permit) = gate.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if tx.send((stream, peer, permit)).await.is_err() {
            return;
        }
    }
}

/// Serves `router` on the connections `rx` hands over — each as HTTP/1.1 with the gate's
/// header deadline, its peer given to handlers as `ConnectInfo<P>` — until `shutdown`, then
/// lets requests under way finish (at most `grace`).
pub async fn serve<I, P>(
    mut rx: tokio::sync::mpsc::Receiver<(I, P, Permit)>,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Clone + Send + Sync + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (io, peer, permit) = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let svc = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(ConnectInfo(peer))),
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    drop(rx);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain's grace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_caps_connections_in_all_and_per_address_and_frees_them() {
        let gate = Gate::new(
            "test",
            Limits {
                max_connections: 3,
                per_address: 2,
                header_timeout: Duration::from_secs(1),
            },
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per address");
        let _p3 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "in all");
        drop(p1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(a).is_some());
        assert_eq!(gate.open(), 2, "a dropped permit frees its place");
        // An IPv4-mapped IPv6 peer counts as its IPv4 address.
        let wide = Gate::new(
            "test",
            Limits {
                max_connections: 10,
                per_address: 1,
                header_timeout: Duration::from_secs(1),
            },
        );
        let _v4 = wide.admit(a).unwrap();
        assert!(wide.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
        assert!(wide.admit("::ffff:10.0.0.2".parse().unwrap()).is_some());
    }

    #[test]
    fn caps_follow_the_open_file_limit() {
        let low = Limits::for_open_files(1024, 2, 1024, 64);
        assert_eq!(low.max_connections, 192);
        let high = Limits::for_open_files(1 << 20, 2, 1024, 64);
        assert_eq!(high.max_connections, 1024);
        assert_eq!(high.per_address, 64);
        let tiny = Limits::for_open_files(100, 2, 1024, 64);
        assert_eq!(tiny.max_connections, 16);
    }
}
