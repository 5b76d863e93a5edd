//! A read-only TFTP server for the files network-boot ROMs load first (iPXE), after RFC 1350
//! with the option extension (RFC 2347), block size (RFC 2348) and transfer size and timeout
//! (RFC 2349). Only the files it was given by name are served; there is no path to traverse
//! and no write request. Each transfer runs on a socket of its own (the RFC's TID), with
//! retransmission of an unacknowledged block.
//!
//! The packet decoder ([`Packet::decode`]) takes untrusted bytes: malformed packets are
//! errors, never panics (fuzzed), and get no answer on the server's port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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

/// The options of a read request for a file of `size` bytes (unknown options are ignored,
/// as RFC 2347 says).
pub fn negotiate(options: &[(String, String)], size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        timeout: Duration::from_secs(1),
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
                    && (1..=255).contains(&t)
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

/// The files served, by the name clients ask for.
#[derive(Debug, Clone, Default)]
pub struct Files(pub HashMap<String, PathBuf>);

/// Retransmissions of a block before the transfer is given up.
const RETRIES: u32 = 5;

/// Serves read requests on `sock` until it fails; each transfer on its own task.
pub async fn serve(sock: UdpSocket, files: Arc<Files>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await?;
        let local = sock.local_addr()?;
        match Packet::decode(&buf[..n]) {
            Ok(Packet::Read {
                file,
                mode,
                options,
            }) => {
                let files = files.clone();
                tokio::spawn(async move {
                    if let Err(e) = transfer(local, peer, &file, &mode, &options, &files).await {
                        tracing::debug!(%peer, %file, error = %e, "TFTP transfer ended");
                    }
                });
            }
            Ok(Packet::Write { .. }) => {
                let e = Packet::Error {
                    code: 2,
                    message: "this server is read-only".into(),
                };
                let _ = sock.send_to(&e.encode(), peer).await;
            }
            // Stray data, acknowledgements or errors on the server port, and malformed
            // packets: no answer.
            Ok(_) | Err(_) => {}
        }
    }
}

async fn transfer(
    local: SocketAddr,
    peer: SocketAddr,
    file: &str,
    mode: &str,
    options: &[(String, String)],
    files: &Files,
) -> std::io::Result<()> {
    let sock = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    sock.connect(peer).await?;
    let fail = |code: u16, message: String| Packet::Error { code, message }.encode();
    let Some(path) = files.0.get(file.trim_start_matches('/')) else {
        sock.send(&fail(1, format!("no file `{file}` here")))
            .await?;
        return Ok(());
    };
    if mode != "octet" && mode != "netascii" {
        sock.send(&fail(4, format!("mode `{mode}` is not supported")))
            .await?;
        return Ok(());
    }
    let data = tokio::fs::read(path).await?;
    let n = negotiate(options, data.len() as u64);
    let blk = usize::from(n.blksize);
    let mut buf = vec![0u8; blk + 64];
    // Block 0 is the option acknowledgement, when there is one.
    let mut block: u16 = if n.ack.is_empty() { 1 } else { 0 };
    let mut offset = 0usize;
    tracing::debug!(%peer, %file, blksize = n.blksize, "TFTP transfer");
    loop {
        let packet = if block == 0 && !n.ack.is_empty() && offset == 0 {
            Packet::OptionAck {
                options: n.ack.clone(),
            }
        } else {
            let end = (offset + blk).min(data.len());
            Packet::Data {
                block,
                data: data[offset..end].to_vec(),
            }
        };
        let bytes = packet.encode();
        let mut tries = 0;
        loop {
            sock.send(&bytes).await?;
            match tokio::time::timeout(n.timeout, sock.recv(&mut buf)).await {
                Ok(Ok(len)) => match Packet::decode(&buf[..len]) {
                    Ok(Packet::Ack { block: b }) if b == block => break,
                    Ok(Packet::Error { .. }) => return Ok(()),
                    // A duplicate acknowledgement of the previous block: wait on.
                    _ => continue,
                },
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tries += 1;
                    if tries > RETRIES {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("block {block} unacknowledged after {RETRIES} tries"),
                        ));
                    }
                }
            }
        }
        if let Packet::Data { data: d, .. } = &packet {
            offset += d.len();
            // A block shorter than the block size ends the transfer.
            if d.len() < blk {
                return Ok(());
            }
        }
        block = block.wrapping_add(1);
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
        let files = Files(HashMap::from([(
            "undionly.kpxe".to_owned(),
            dir.path().join("f"),
        )]));
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve(server, Arc::new(files)));
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
    }
}
