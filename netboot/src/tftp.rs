//! A read-only TFTP server for the files network-boot ROMs load first (iPXE), after RFC 1350
//! with the option extension (RFC 2347), block size (RFC 2348) and transfer size and timeout
//! (RFC 2349). Only the files it was given by name are served; there is no path to traverse
//! and no write request.
//!
//! The protocol is a [`Server`] without I/O (time passed in), driven by [`serve`], which gives
//! each transfer a socket of its own (the RFC's TID). Since anyone on the network may send
//! anything, the server bounds what it does for them: a block is sent again only when its
//! timeout passes, never for a duplicate acknowledgement (RFC 1123's fix for the Sorcerer's
//! Apprentice), so one datagram in causes at most one out; transfers are limited in number,
//! per client and in time (see [`Limits`]); a client's retransmission timeout is accepted up
//! to [`MAX_TIMEOUT`]; files are read once, so a transfer holds no file descriptor.
//!
//! The packet decoder ([`Packet::decode`]) takes untrusted bytes: malformed packets are
//! errors, never panics (fuzzed), and get no answer on the server's port.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Largest block size accepted (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size without the option.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// A TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request: file name, mode, options (names lowercased).
    Read {
        /// File name.
        file: String,
        /// `octet` or `netascii`.
        mode: String,
        /// Options in order.
        options: Vec<(String, String)>,
    },
    /// Write request (refused).
    Write {
        /// File name.
        file: String,
    },
    /// A data block.
    Data {
        /// Block number.
        block: u16,
        /// Payload.
        data: Vec<u8>,
    },
    /// Acknowledgement of a block.
    Ack {
        /// Block number.
        block: u16,
    },
    /// An error.
    Error {
        /// Code.
        code: u16,
        /// Message.
        message: String,
    },
    /// Options accepted.
    OptionAck {
        /// Options in order.
        options: Vec<(String, String)>,
    },
}

/// Why bytes are no TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TftpError {
    /// Fewer than 4 bytes.
    #[error("packet of {0} bytes is too short")]
    Short(usize),
    /// An opcode outside 1–6.
    #[error("unknown opcode {0}")]
    Opcode(u16),
    /// A string without its terminating zero, or not UTF-8.
    #[error("malformed string field")]
    Text,
    /// An option name without a value.
    #[error("option `{0}` has no value")]
    OptionValue(String),
}

fn strings(b: &[u8]) -> Result<Vec<String>, TftpError> {
    if b.is_empty() {
        return Ok(vec![]);
    }
    if *b.last().ok_or(TftpError::Text)? != 0 {
        return Err(TftpError::Text);
    }
    b[..b.len() - 1]
        .split(|c| *c == 0)
        .map(|s| {
            std::str::from_utf8(s)
                .map(str::to_owned)
                .map_err(|_| TftpError::Text)
        })
        .collect()
}

fn options(fields: &[String]) -> Result<Vec<(String, String)>, TftpError> {
    fields
        .chunks(2)
        .map(|kv| match kv {
            [k, v] => Ok((k.to_ascii_lowercase(), v.clone())),
            [k] => Err(TftpError::OptionValue(k.clone())),
            _ => Err(TftpError::Text),
        })
        .collect()
}

impl Packet {
    /// Decodes a packet.
    pub fn decode(b: &[u8]) -> Result<Packet, TftpError> {
        if b.len() < 4 && !(b.len() >= 2 && u16::from_be_bytes([b[0], b[1]]) == 6) {
            return Err(TftpError::Short(b.len()));
        }
        let op = u16::from_be_bytes([b[0], b[1]]);
        let rest = &b[2..];
        Ok(match op {
            1 | 2 => {
                let f = strings(rest)?;
                if f.len() < 2 {
                    return Err(TftpError::Text);
                }
                if op == 2 {
                    Packet::Write { file: f[0].clone() }
                } else {
                    Packet::Read {
                        file: f[0].clone(),
                        mode: f[1].to_ascii_lowercase(),
                        options: options(&f[2..])?,
                    }
                }
            }
            3 => Packet::Data {
                block: u16::from_be_bytes([rest[0], rest[1]]),
                data: rest[2..].to_vec(),
            },
            4 => Packet::Ack {
                block: u16::from_be_bytes([rest[0], rest[1]]),
            },
            5 => {
                let msg = strings(&rest[2..])?;
                Packet::Error {
                    code: u16::from_be_bytes([rest[0], rest[1]]),
                    message: msg.first().cloned().unwrap_or_default(),
                }
            }
            6 => Packet::OptionAck {
                options: options(&strings(rest)?)?,
            },
            other => return Err(TftpError::Opcode(other)),
        })
    }

    /// Encodes a packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let text = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Read {
                file,
                mode,
                options,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                text(&mut out, file);
                text(&mut out, mode);
                for (k, v) in options {
                    text(&mut out, k);
                    text(&mut out, v);
                }
            }
            Packet::Write { file } => {
                out.extend_from_slice(&2u16.to_be_bytes());
                text(&mut out, file);
                text(&mut out, "octet");
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                text(&mut out, message);
            }
            Packet::OptionAck { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    text(&mut out, k);
                    text(&mut out, v);
                }
            }
        }
        out
    }
}

/// What a read request gets: the options this server accepts, with their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size.
    pub blksize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// Options to acknowledge (empty: none asked for, no OACK).
    pub ack: Vec<(String, String)>,
}

/// Retransmission timeout when the client asks for none (or for one out of bounds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest retransmission timeout a client may ask for: a transfer whose client vanished
/// ends after [`Limits::retries`] of these.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// The options of a read request for a file of `size` bytes (unknown options are ignored,
/// as RFC 2347 says). A `timeout` outside 1 s to [`MAX_TIMEOUT`] is ignored (RFC 2349 lets
/// the server ignore it, not answer another value): the transfer uses [`DEFAULT_TIMEOUT`].
pub fn negotiate(options: &[(String, String)], size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        timeout: DEFAULT_TIMEOUT,
        ack: Vec::new(),
    };
    for (k, v) in options {
        match k.as_str() {
            "blksize" => {
                if let Ok(b) = v.parse::<u16>()
                    && b >= 8
                {
                    // Within one Ethernet frame; clients on jumbo networks still get 1468.
                    n.blksize = b.min(1468).min(MAX_BLKSIZE);
                    n.ack.push((k.clone(), n.blksize.to_string()));
                }
            }
            "tsize" => n.ack.push((k.clone(), size.to_string())),
            "timeout" => {
                if let Ok(t) = v.parse::<u64>()
                    && (1..=MAX_TIMEOUT.as_secs()).contains(&t)
                {
                    n.timeout = Duration::from_secs(t);
                    n.ack.push((k.clone(), t.to_string()));
                }
            }
            _ => {}
        }
    }
    n
}

/// The files served, by the name clients ask for, each read into memory once and shared by
/// every transfer of it (a transfer holds no file descriptor).
#[derive(Debug, Clone, Default)]
pub struct Files(HashMap<String, Arc<[u8]>>);

/// A file that could not be read for serving.
#[derive(Debug, thiserror::Error)]
#[error("cannot read TFTP file `{name}` from {}", path.display())]
pub struct FileError {
    /// The name clients ask for.
    pub name: String,
    /// Where it was to be read.
    pub path: PathBuf,
    /// Why it could not.
    pub source: std::io::Error,
}

impl Files {
    /// No files.
    pub fn new() -> Files {
        Files::default()
    }

    /// Serves `content` as `name`.
    pub fn insert(&mut self, name: impl Into<String>, content: impl Into<Arc<[u8]>>) {
        self.0.insert(name.into(), content.into());
    }

    /// Reads each `(name, path)` (blocking: at start, or on a blocking thread). A file that
    /// cannot be read is left out, so that requests for it get ERROR 1 (no such file), and
    /// its error is returned beside the files for the caller to report.
    pub fn load(paths: impl IntoIterator<Item = (String, PathBuf)>) -> (Files, Vec<FileError>) {
        let mut files = Files::new();
        let mut errors = Vec::new();
        for (name, path) in paths {
            match std::fs::read(&path) {
                Ok(content) => files.insert(name, content),
                Err(source) => errors.push(FileError { name, path, source }),
            }
        }
        (files, errors)
    }

    /// The content served as `name` (a leading `/` is ignored).
    pub fn get(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.0.get(name.trim_start_matches('/'))
    }
}

/// How much the server takes on: a read request past a limit gets one ERROR (code 0, naming
/// the limit) and no transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Transfers open at once. Default 64: a rack booting at once loads iPXE in a few
    /// seconds each, and each open transfer costs the driver a socket.
    pub transfers: usize,
    /// Transfers open at once for one client address. Default 4: a PXE ROM asks for the size
    /// first and then the file, possibly twice after a timeout.
    pub per_client: usize,
    /// Retransmissions of an unacknowledged block before the transfer is given up.
    /// Default 5.
    pub retries: u32,
    /// Longest a whole transfer may take, after which it ends with an ERROR. Default 120 s:
    /// iPXE (about 1 MB) takes a few seconds on a provisioning network.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            transfers: 64,
            per_client: 4,
            retries: 5,
            deadline: Duration::from_secs(120),
        }
    }
}

/// A transfer, as the server and its driver name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub u64);

/// Which of the driver's sockets a packet leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The server's own port (69): errors answering a request.
    Server,
    /// The transfer's own socket (the RFC's TID), opened by the driver for the transfer's
    /// first packet and connected to its client.
    Transfer(TransferId),
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// From which socket.
    pub from: Port,
    /// To whom (for [`Port::Transfer`], always that transfer's client).
    pub to: SocketAddr,
    /// The encoded packet.
    pub bytes: Vec<u8>,
}

/// One read transfer in progress.
#[derive(Debug, Clone)]
struct Transfer {
    peer: SocketAddr,
    data: Arc<[u8]>,
    blksize: usize,
    timeout: Duration,
    /// Options acknowledged (sent as block 0).
    oack: Vec<(String, String)>,
    /// The packet in flight: 0 for the OACK, else the data block (counted past 65535; the
    /// wire number wraps).
    block: u64,
    /// Retransmissions of it so far.
    tries: u32,
    resend_at: Instant,
    deadline: Instant,
}

impl Transfer {
    fn wire_block(&self) -> u16 {
        // Truncation is the point: block numbers wrap after 65535.
        (self.block & 0xffff) as u16
    }

    fn packet(&self) -> Packet {
        if self.block == 0 {
            return Packet::OptionAck {
                options: self.oack.clone(),
            };
        }
        let blk = self.blksize as u64;
        let start = (self.block - 1).saturating_mul(blk);
        let end = start.saturating_add(blk).min(self.data.len() as u64);
        let data = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.data.get(s..e))
            .unwrap_or(&[]);
        Packet::Data {
            block: self.wire_block(),
            data: data.to_vec(),
        }
    }

    /// Whether the packet in flight is the last data block (shorter than the block size).
    fn is_last(&self) -> bool {
        self.block >= 1 && self.block.saturating_mul(self.blksize as u64) > self.data.len() as u64
    }
}

/// The TFTP server's logic, without I/O: it owns the files, the transfers and the limits.
///
/// The driver ([`serve`] is one) feeds it what happens and sends what it says:
/// * a datagram on the server's port: [`Server::handle_request`];
/// * a datagram on a transfer's socket: [`Server::handle_datagram`];
/// * the time [`Server::poll_timeout`] named has come: [`Server::handle_timeout`];
/// * a transfer whose socket could not be opened: [`Server::abort`].
///
/// After each, it sends every [`Server::poll_transmit`] (opening a socket for a transfer's
/// first packet) and then closes the socket of every [`Server::poll_ended`]. Each datagram
/// in causes at most one packet out; a block is sent again only when its timeout passes,
/// never because an old acknowledgement arrived (RFC 1123 4.2.3.1).
#[derive(Debug)]
pub struct Server {
    files: Files,
    limits: Limits,
    transfers: BTreeMap<TransferId, Transfer>,
    next_id: u64,
    out: VecDeque<Transmit>,
    ended: VecDeque<TransferId>,
}

impl Server {
    /// A server of `files` within `limits`.
    pub fn new(files: Files, limits: Limits) -> Server {
        Server {
            files,
            limits,
            transfers: BTreeMap::new(),
            next_id: 0,
            out: VecDeque::new(),
            ended: VecDeque::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Transfers open.
    pub fn transfers(&self) -> usize {
        self.transfers.len()
    }

    /// Transfers open for client address `ip`.
    pub fn transfers_from(&self, ip: IpAddr) -> usize {
        self.transfers
            .values()
            .filter(|t| t.peer.ip() == ip)
            .count()
    }

    /// The ids of the transfers open, oldest first.
    pub fn transfer_ids(&self) -> impl Iterator<Item = TransferId> + '_ {
        self.transfers.keys().copied()
    }

    /// A datagram from `peer` on the server's port at `now`: a read request starts a
    /// transfer or is refused with an ERROR; a write request is refused; anything else (stray
    /// or malformed) gets no answer. A read request from a client address and port that has
    /// a transfer open ends that one first (the client started again).
    pub fn handle_request(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let refuse = |out: &mut VecDeque<Transmit>, code: u16, message: String| {
            out.push_back(Transmit {
                from: Port::Server,
                to: peer,
                bytes: Packet::Error { code, message }.encode(),
            });
        };
        let (file, mode, options) = match Packet::decode(bytes) {
            Ok(Packet::Read {
                file,
                mode,
                options,
            }) => (file, mode, options),
            Ok(Packet::Write { .. }) => {
                refuse(&mut self.out, 2, "this server is read-only".into());
                return;
            }
            Ok(_) | Err(_) => return,
        };
        if let Some(old) = self
            .transfers
            .iter()
            .find(|(_, t)| t.peer == peer)
            .map(|(id, _)| *id)
        {
            self.end(old);
        }
        let Some(data) = self.files.get(&file).cloned() else {
            refuse(&mut self.out, 1, format!("no file `{file}` here"));
            return;
        };
        if mode != "octet" && mode != "netascii" {
            refuse(&mut self.out, 4, format!("mode `{mode}` is not supported"));
            return;
        }
        if self.transfers.len() >= self.limits.transfers {
            refuse(&mut self.out, 0, "too many transfers: try later".into());
            return;
        }
        if self.transfers_from(peer.ip()) >= self.limits.per_client {
            refuse(
                &mut self.out,
                0,
                "too many transfers from this client: try later".into(),
            );
            return;
        }
        let n = negotiate(&options, data.len() as u64);
        let id = TransferId(self.next_id);
        self.next_id += 1;
        let t = Transfer {
            peer,
            data,
            blksize: usize::from(n.blksize),
            timeout: n.timeout,
            // Block 0 is the option acknowledgement, when there is one.
            block: if n.ack.is_empty() { 1 } else { 0 },
            oack: n.ack,
            tries: 0,
            resend_at: now + n.timeout,
            deadline: now + self.limits.deadline,
        };
        tracing::debug!(%peer, %file, blksize = n.blksize, "TFTP transfer");
        self.out.push_back(transmit(id, &t));
        self.transfers.insert(id, t);
    }

    /// A datagram on transfer `id`'s socket (from its client) at `now`: the acknowledgement
    /// of the block in flight sends the next one (or ends the transfer after the last); an
    /// ERROR ends it; anything else, a duplicate or stale acknowledgement included, is
    /// ignored.
    pub fn handle_datagram(&mut self, now: Instant, id: TransferId, bytes: &[u8]) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        if now >= t.deadline {
            self.time_out(id);
            return;
        }
        match Packet::decode(bytes) {
            Ok(Packet::Ack { block }) if block == t.wire_block() => {
                if t.is_last() {
                    self.end(id);
                    return;
                }
                t.block += 1;
                t.tries = 0;
                t.resend_at = now + t.timeout;
                self.out.push_back(transmit(id, t));
            }
            Ok(Packet::Error { .. }) => self.end(id),
            _ => {}
        }
    }

    /// The time has come (at `now`): blocks unacknowledged for their timeout are sent again,
    /// transfers out of retries end silently (their client is gone) and transfers past their
    /// deadline end with an ERROR.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, t)| now >= t.deadline || now >= t.resend_at)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(t) = self.transfers.get_mut(&id) else {
                continue;
            };
            if now >= t.deadline {
                self.time_out(id);
            } else if t.tries >= self.limits.retries {
                tracing::debug!(peer = %t.peer, block = t.block, "TFTP client gone");
                self.end(id);
            } else {
                t.tries += 1;
                t.resend_at = now + t.timeout;
                self.out.push_back(transmit(id, t));
            }
        }
    }

    /// Transfer `id` cannot go on (its socket could not be opened): it ends, without a
    /// [`Server::poll_ended`] for it.
    pub fn abort(&mut self, id: TransferId) {
        self.transfers.remove(&id);
        self.out.retain(|t| t.from != Port::Transfer(id));
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next transfer that ended, whose socket can be closed (after its packets went).
    pub fn poll_ended(&mut self) -> Option<TransferId> {
        self.ended.pop_front()
    }

    /// When [`Server::handle_timeout`] is next due, if any transfer is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .map(|t| t.resend_at.min(t.deadline))
            .min()
    }

    fn end(&mut self, id: TransferId) {
        if self.transfers.remove(&id).is_some() {
            self.ended.push_back(id);
        }
    }

    /// Ends transfer `id`, past its deadline, telling its client.
    fn time_out(&mut self, id: TransferId) {
        if let Some(t) = self.transfers.get(&id) {
            tracing::debug!(peer = %t.peer, "TFTP transfer past its deadline");
            self.out.push_back(Transmit {
                from: Port::Transfer(id),
                to: t.peer,
                bytes: Packet::Error {
                    code: 0,
                    message: "transfer took too long".into(),
                }
                .encode(),
            });
        }
        self.end(id);
    }
}

/// The packet in flight of transfer `id`, to send.
fn transmit(id: TransferId, t: &Transfer) -> Transmit {
    Transmit {
        from: Port::Transfer(id),
        to: t.peer,
        bytes: t.packet().encode(),
    }
}

/// Serves read requests arriving on `sock` (the server's port) from `server`, until the
/// socket fails: the driver of [`Server`], in one task. Each transfer gets a socket of its
/// own (bound to `sock`'s address, any port, connected to the client), read by a small task
/// that passes its datagrams on; the socket closes when the transfer ends, so open sockets
/// are bounded by [`Limits::transfers`]. Errors refusing a request are sent from `sock`.
pub async fn serve(sock: UdpSocket, mut server: Server) -> std::io::Result<()> {
    let local = sock.local_addr()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(TransferId, Vec<u8>)>(256);
    // Dropping the set (the driver stopped) ends every reader.
    let mut readers = tokio::task::JoinSet::new();
    let mut sockets: HashMap<TransferId, (Arc<UdpSocket>, tokio::task::AbortHandle)> =
        HashMap::new();
    let mut buf = vec![0u8; 2048];
    let now = || tokio::time::Instant::now().into_std();
    loop {
        let timer = server.poll_timeout();
        let sleep = tokio::time::sleep_until(
            timer.map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std),
        );
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, peer) = r?;
                server.handle_request(now(), peer, &buf[..n]);
            }
            Some((id, bytes)) = rx.recv() => server.handle_datagram(now(), id, &bytes),
            () = sleep, if timer.is_some() => server.handle_timeout(now()),
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
        while let Some(t) = server.poll_transmit() {
            match t.from {
                Port::Server => {
                    if let Err(e) = sock.send_to(&t.bytes, t.to).await {
                        tracing::debug!(to = %t.to, error = %e, "cannot send a TFTP error");
                    }
                }
                Port::Transfer(id) => {
                    let s = match sockets.get(&id) {
                        Some((s, _)) => s.clone(),
                        None => match transfer_socket(local, t.to).await {
                            Ok(s) => {
                                let s = Arc::new(s);
                                let reader = readers.spawn(read(s.clone(), id, tx.clone()));
                                sockets.insert(id, (s.clone(), reader));
                                s
                            }
                            Err(e) => {
                                tracing::warn!(to = %t.to, error = %e, "cannot open a TFTP transfer socket");
                                server.abort(id);
                                continue;
                            }
                        },
                    };
                    if let Err(e) = s.send(&t.bytes).await {
                        // The client may be gone; the transfer's timeout decides.
                        tracing::debug!(to = %t.to, error = %e, "cannot send a TFTP packet");
                    }
                }
            }
        }
        while let Some(id) = server.poll_ended() {
            if let Some((_, reader)) = sockets.remove(&id) {
                reader.abort();
            }
        }
    }
}

async fn transfer_socket(local: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    s.connect(peer).await?;
    Ok(s)
}

/// Passes the datagrams of transfer `id`'s socket on to the driver.
async fn read(
    sock: Arc<UdpSocket>,
    id: TransferId,
    tx: tokio::sync::mpsc::Sender<(TransferId, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                if tx.send((id, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            // An ICMP port unreachable from a client that went: its timeout ends it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_bad_bytes_are_errors() {
        let rrq = Packet::Read {
            file: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: vec![
                ("blksize".into(), "1432".into()),
                ("tsize".into(), "0".into()),
            ],
        };
        assert_eq!(Packet::decode(&rrq.encode()), Ok(rrq));
        for p in [
            Packet::Data {
                block: 7,
                data: vec![1, 2, 3],
            },
            Packet::Ack { block: 65535 },
            Packet::Error {
                code: 1,
                message: "no".into(),
            },
        ] {
            assert_eq!(Packet::decode(&p.encode()), Ok(p));
        }
        assert_eq!(Packet::decode(&[0, 1]), Err(TftpError::Short(2)));
        assert_eq!(Packet::decode(&[0, 9, 0, 0]), Err(TftpError::Opcode(9)));
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet"),
            Err(TftpError::Text)
        );
        assert_eq!(
            Packet::decode(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(TftpError::OptionValue("blksize".into()))
        );
    }

    #[test]
    fn options_are_negotiated_within_bounds() {
        let n = negotiate(
            &[
                ("blksize".into(), "9000".into()),
                ("tsize".into(), "0".into()),
                ("timeout".into(), "3".into()),
                ("windowsize".into(), "8".into()),
            ],
            12345,
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(
            n.ack,
            [
                ("blksize".to_owned(), "1468".to_owned()),
                ("tsize".to_owned(), "12345".to_owned()),
                ("timeout".to_owned(), "3".to_owned()),
            ]
        );
        assert!(
            negotiate(&[("blksize".into(), "4".into())], 1)
                .ack
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_file_is_served_block_by_block_with_options_and_unknown_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &content).unwrap();
        let (files, errors) = Files::load([
            ("undionly.kpxe".to_owned(), dir.path().join("f")),
            ("ipxe.efi".to_owned(), dir.path().join("missing")),
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].name, "ipxe.efi");
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve(server, Server::new(files, Limits::default())));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rrq = Packet::Read {
            file: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: vec![
                ("blksize".into(), "1024".into()),
                ("tsize".into(), "0".into()),
            ],
        };
        c.send_to(&rrq.encode(), addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, tid) = c.recv_from(&mut buf).await.unwrap();
        assert_ne!(tid, addr, "the transfer runs on a port of its own");
        assert_eq!(
            Packet::decode(&buf[..n]).unwrap(),
            Packet::OptionAck {
                options: vec![
                    ("blksize".into(), "1024".into()),
                    ("tsize".into(), "3000".into())
                ]
            }
        );
        let mut got = Vec::new();
        let mut block = 0u16;
        loop {
            c.send_to(&Packet::Ack { block }.encode(), tid)
                .await
                .unwrap();
            let (n, _) = c.recv_from(&mut buf).await.unwrap();
            let Packet::Data { block: b, data } = Packet::decode(&buf[..n]).unwrap() else {
                panic!("not data");
            };
            assert_eq!(b, block + 1);
            block = b;
            got.extend_from_slice(&data);
            if data.len() < 1024 {
                c.send_to(&Packet::Ack { block }.encode(), tid)
                    .await
                    .unwrap();
                break;
            }
        }
        assert_eq!(got, content);
        let missing = Packet::Read {
            file: "../etc/passwd".into(),
            mode: "octet".into(),
            options: vec![],
        };
        c.send_to(&missing.encode(), addr).await.unwrap();
        let (n, _) = c.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            Packet::decode(&buf[..n]).unwrap(),
            Packet::Error { code: 1, .. }
        ));
        // A file that could not be read at start is answered like one never named.
        let absent = Packet::Read {
            file: "ipxe.efi".into(),
            mode: "octet".into(),
            options: vec![],
        };
        c.send_to(&absent.encode(), addr).await.unwrap();
        let (n, _) = c.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            Packet::decode(&buf[..n]).unwrap(),
            Packet::Error { code: 1, .. }
        ));
    }

    const CONTENT_LEN: usize = 5000;

    fn server(limits: Limits) -> Server {
        let mut files = Files::new();
        let content: Vec<u8> = (0..CONTENT_LEN).map(|i| (i % 251) as u8).collect();
        files.insert("undionly.kpxe", content);
        Server::new(files, limits)
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 248, 1, last], port))
    }

    fn rrq(options: &[(&str, &str)]) -> Vec<u8> {
        Packet::Read {
            file: "undionly.kpxe".into(),
            mode: "octet".into(),
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
        .encode()
    }

    fn ack(block: u16) -> Vec<u8> {
        Packet::Ack { block }.encode()
    }

    /// Everything the server has to send now.
    fn sent(s: &mut Server) -> Vec<(Port, Packet)> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| (t.from, Packet::decode(&t.bytes).unwrap()))
            .collect()
    }

    /// Starts a transfer from `from`; its id and first packet.
    fn start(
        s: &mut Server,
        now: Instant,
        from: SocketAddr,
        opts: &[(&str, &str)],
    ) -> (TransferId, Packet) {
        s.handle_request(now, from, &rrq(opts));
        match sent(s).as_slice() {
            [(Port::Transfer(id), p)] => (*id, p.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sans_io_server_serves_a_file_block_by_block() {
        let mut s = server(Limits::default());
        let now = Instant::now();
        let (id, first) = start(&mut s, now, peer(7, 2000), &[]);
        let mut got = Vec::new();
        let mut p = first;
        loop {
            let Packet::Data { block, data } = p else {
                panic!("not data: {p:?}");
            };
            got.extend_from_slice(&data);
            s.handle_datagram(now, id, &ack(block));
            if data.len() < 512 {
                assert!(sent(&mut s).is_empty());
                break;
            }
            let out = sent(&mut s);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, Port::Transfer(id));
            p = out[0].1.clone();
        }
        assert_eq!(got.len(), CONTENT_LEN);
        assert_eq!(s.poll_ended(), Some(id));
        assert_eq!(s.transfers(), 0);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_thousand_stale_acks_cause_no_data() {
        let mut s = server(Limits::default());
        let now = Instant::now();
        let (id, first) = start(&mut s, now, peer(7, 2000), &[("blksize", "1024")]);
        assert!(matches!(first, Packet::OptionAck { .. }));
        s.handle_datagram(now, id, &ack(0));
        assert!(matches!(
            sent(&mut s).as_slice(),
            [(_, Packet::Data { block: 1, .. })]
        ));
        s.handle_datagram(now, id, &ack(1));
        assert!(matches!(
            sent(&mut s).as_slice(),
            [(_, Packet::Data { block: 2, .. })]
        ));
        for _ in 0..1000 {
            for stale in [0, 1, 7, 65535] {
                s.handle_datagram(now, id, &ack(stale));
            }
            s.handle_datagram(
                now,
                id,
                &Packet::Data {
                    block: 2,
                    data: vec![],
                }
                .encode(),
            );
            s.handle_datagram(now, id, b"junk");
        }
        assert!(
            sent(&mut s).is_empty(),
            "stale acknowledgements sent nothing"
        );
        // The current one still advances.
        s.handle_datagram(now, id, &ack(2));
        assert!(matches!(
            sent(&mut s).as_slice(),
            [(_, Packet::Data { block: 3, .. })]
        ));
    }

    #[test]
    fn requests_over_the_limits_are_refused_with_an_error() {
        let mut s = server(Limits {
            transfers: 3,
            per_client: 2,
            ..Limits::default()
        });
        let now = Instant::now();
        start(&mut s, now, peer(7, 2000), &[]);
        start(&mut s, now, peer(7, 2001), &[]);
        let refused = |s: &mut Server, from: SocketAddr| {
            s.handle_request(now, from, &rrq(&[]));
            match sent(s).as_slice() {
                [(Port::Server, Packet::Error { code: 0, message })] => message.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert!(refused(&mut s, peer(7, 2002)).contains("from this client"));
        assert_eq!(s.transfers_from(peer(7, 0).ip()), 2);
        start(&mut s, now, peer(8, 2000), &[]);
        let m = refused(&mut s, peer(9, 2000));
        assert!(
            m.contains("too many transfers") && !m.contains("client"),
            "{m}"
        );
        assert_eq!(s.transfers(), 3);
        // A request again from the same client port replaces its transfer.
        let old: Vec<TransferId> = s.transfer_ids().collect();
        let (id, _) = start(&mut s, now, peer(8, 2000), &[]);
        assert_eq!(s.poll_ended(), Some(old[2]));
        assert!(!old.contains(&id));
        assert_eq!(s.transfers(), 3);
        // Writes and files it does not have: errors, no transfer.
        s.handle_request(
            now,
            peer(9, 1),
            &Packet::Write { file: "x".into() }.encode(),
        );
        s.handle_request(
            now,
            peer(9, 1),
            &Packet::Read {
                file: "nope".into(),
                mode: "octet".into(),
                options: vec![],
            }
            .encode(),
        );
        assert!(matches!(
            sent(&mut s).as_slice(),
            [
                (Port::Server, Packet::Error { code: 2, .. }),
                (Port::Server, Packet::Error { code: 1, .. })
            ]
        ));
        assert_eq!(s.transfers(), 3);
    }

    #[test]
    fn a_transfer_whose_client_vanished_ends_after_its_retries() {
        let mut s = server(Limits::default());
        let start_at = Instant::now();
        let (id, first) = start(&mut s, start_at, peer(7, 2000), &[]);
        let mut resent = 0;
        while let Some(t) = s.poll_timeout() {
            assert!(t - start_at <= Duration::from_secs(10), "ends in seconds");
            s.handle_timeout(t);
            for (port, p) in sent(&mut s) {
                assert_eq!((port, &p), (Port::Transfer(id), &first));
                resent += 1;
            }
        }
        assert_eq!(resent, 5);
        assert_eq!(s.poll_ended(), Some(id));
        assert_eq!(s.transfers(), 0);
    }

    #[test]
    fn a_transfer_ends_at_its_deadline_however_slowly_it_is_acknowledged() {
        let mut s = server(Limits {
            deadline: Duration::from_secs(30),
            ..Limits::default()
        });
        let mut now = Instant::now();
        let (id, _) = start(
            &mut s,
            now,
            peer(7, 2000),
            &[("blksize", "8"), ("timeout", "5")],
        );
        let mut block = 0;
        loop {
            // Each acknowledgement just before the timeout: never out of retries.
            now += Duration::from_millis(4900);
            if let Some(t) = s.poll_timeout().filter(|t| *t <= now) {
                s.handle_timeout(t);
            }
            s.handle_datagram(now, id, &ack(block));
            let out = sent(&mut s);
            assert!(out.len() <= 1);
            match out.first() {
                Some((_, Packet::Data { block: b, .. })) => block = *b,
                Some((_, Packet::Error { code: 0, .. })) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(s.poll_ended(), Some(id));
        assert!(block < 10);
    }

    #[test]
    fn a_huge_client_timeout_is_not_acknowledged() {
        let mut s = server(Limits::default());
        let now = Instant::now();
        let (_, first) = start(
            &mut s,
            now,
            peer(7, 2000),
            &[("timeout", "255"), ("tsize", "0")],
        );
        assert_eq!(
            first,
            Packet::OptionAck {
                options: vec![("tsize".into(), CONTENT_LEN.to_string())]
            }
        );
        assert_eq!(s.poll_timeout(), Some(now + DEFAULT_TIMEOUT));
        assert_eq!(
            negotiate(&[("timeout".into(), "6".into())], 1).timeout,
            DEFAULT_TIMEOUT
        );
        assert_eq!(
            negotiate(&[("timeout".into(), "5".into())], 1).ack,
            [("timeout".to_owned(), "5".to_owned())]
        );
    }
}
