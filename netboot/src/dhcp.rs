//! DHCPv4 for network boot, on `dhcproto`'s message types; the server logic is Ferric's and
//! does no I/O: [`Dhcp::handle`] takes a datagram's bytes and returns the answer, if any.
//!
//! Two modes:
//! * **full**: addresses from a pool, a reservation per enrolled MAC (when the node's BMC
//!   enrollment names it), leases kept by MAC address — not by client identifier, which PXE
//!   ROMs, iPXE and the ramdisk's own client each set differently, so that one machine holds
//!   one lease through all its boot stages;
//! * **proxy**: beside an existing DHCP server that hands out addresses, Ferric answers only
//!   network-boot clients, with the boot server and file and no address (option 60 echoing
//!   the client's class, option 43 sub-option 6 = 8 so that PXE ROMs skip boot-server
//!   discovery, option 54 and `siaddr` naming this server).
//!
//! What a client boots follows its kind: iPXE (user class `iPXE`) gets its node's script over
//! HTTP; a PXE ROM gets iPXE over TFTP (`undionly.kpxe` for BIOS, `ipxe.efi` for x86-64 UEFI);
//! a UEFI HTTP-boot client gets an absolute `http://` URL to `ipxe.efi`. Other clients (the
//! ramdisk, the installed OS) get an address only, and only in full mode. MACs Ferric does
//! not know are ignored unless discovery is on. Bad datagrams get no answer.

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// A MAC address.
pub type Mac = [u8; 6];

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

/// How addresses are handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Ferric is the provisioning network's DHCP server.
    Full {
        /// First address of the pool.
        first: Ipv4Addr,
        /// Last address of the pool.
        last: Ipv4Addr,
        /// Subnet mask.
        netmask: Ipv4Addr,
        /// Default gateway, if the network has one.
        router: Option<Ipv4Addr>,
        /// Lease time.
        lease: Duration,
    },
    /// Another server hands out addresses; Ferric adds the boot information.
    Proxy,
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This server's address on the provisioning network (boot server, TFTP, HTTP).
    pub server: Ipv4Addr,
    /// Port of the boot HTTP server on it.
    pub http_port: u16,
    /// Addresses, or proxy.
    pub mode: Mode,
    /// Answer MACs Ferric does not know (they boot the ramdisk and are inspected).
    pub discovery: bool,
}

/// The file a network-boot client is told to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// iPXE for legacy BIOS PXE ROMs, over TFTP.
    UndionlyKpxe,
    /// iPXE for x86-64 UEFI, over TFTP.
    IpxeEfi,
    /// iPXE for UEFI HTTP boot, as an absolute URL.
    IpxeEfiHttp(String),
    /// The node's iPXE script, for iPXE itself.
    Script(String),
}

impl BootFile {
    /// What goes in the reply's `file` field and option 67.
    pub fn name(&self) -> &str {
        match self {
            BootFile::UndionlyKpxe => "undionly.kpxe",
            BootFile::IpxeEfi => "ipxe.efi",
            BootFile::IpxeEfiHttp(u) | BootFile::Script(u) => u,
        }
    }
}

/// What kind of client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A PXE ROM (option 60 `PXEClient`), with its architecture (option 93).
    Pxe(u16),
    /// A UEFI HTTP-boot client (option 60 `HTTPClient`).
    HttpBoot,
    /// iPXE (user class `iPXE`).
    Ipxe,
    /// Anything else: an OS or the ramdisk asking for an address.
    Plain,
}

/// The kind of client that sent `m`.
pub fn client_kind(m: &Message) -> ClientKind {
    let opts = m.opts();
    if let Some(DhcpOption::UserClass(uc)) = opts.get(OptionCode::UserClass)
        && contains(uc, b"iPXE")
    {
        return ClientKind::Ipxe;
    }
    let class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => c.as_slice(),
        _ => &[],
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => u16::from(*a),
        _ => 0,
    };
    if class.starts_with(b"HTTPClient") {
        ClientKind::HttpBoot
    } else if class.starts_with(b"PXEClient") {
        ClientKind::Pxe(arch)
    } else {
        ClientKind::Plain
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    ip: Ipv4Addr,
    /// Offered, not yet requested: reclaimable sooner.
    offered: bool,
    expires: Instant,
}

/// An answer and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// Destination.
    pub to: SocketAddrV4,
    /// The decoded message (for logs and tests).
    pub message: Message,
}

/// How long an offer holds its address before it may go to another client.
const OFFER_HOLD: Duration = Duration::from_secs(60);

/// The DHCP server state: known MACs, reservations, leases.
#[derive(Debug)]
pub struct Dhcp {
    cfg: Config,
    /// Known MACs → node name (and a reserved address, when given).
    known: HashMap<Mac, (String, Option<Ipv4Addr>)>,
    leases: HashMap<Mac, Lease>,
    taken: HashSet<Ipv4Addr>,
}

impl Dhcp {
    /// A server with these settings and no known MACs.
    pub fn new(cfg: Config) -> Dhcp {
        Dhcp {
            cfg,
            known: HashMap::new(),
            leases: HashMap::new(),
            taken: HashSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replaces the known MACs (from the enrolled nodes), each with its node and an optional
    /// reserved address.
    pub fn set_known(&mut self, known: impl IntoIterator<Item = (Mac, String, Option<Ipv4Addr>)>) {
        self.known = known
            .into_iter()
            .map(|(m, node, ip)| (m, (node, ip)))
            .collect();
    }

    /// The node a MAC belongs to, if known.
    pub fn node_of(&self, mac: &Mac) -> Option<&str> {
        self.known.get(mac).map(|(n, _)| n.as_str())
    }

    /// The address leased to a MAC, if any.
    pub fn lease_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.leases.get(mac).map(|l| l.ip)
    }

    /// The boot file for a client of `kind` with `mac`; `None` for plain clients.
    pub fn boot_file(&self, kind: ClientKind, mac: &Mac) -> Option<BootFile> {
        let base = format!("http://{}:{}", self.cfg.server, self.cfg.http_port);
        match kind {
            ClientKind::Ipxe => Some(BootFile::Script(format!(
                "{base}/boot/node/{}.ipxe",
                mac_string(mac).replace(':', "-")
            ))),
            ClientKind::HttpBoot => Some(BootFile::IpxeEfiHttp(format!("{base}/boot/ipxe.efi"))),
            // RFC 4578: 0 is BIOS; 6, 7 and 9 are UEFI (IA32, x64, x64 byte code); the UEFI
            // HTTP architectures (0x0f, 0x10) come with `HTTPClient`.
            ClientKind::Pxe(6 | 7 | 9 | 0x0f | 0x10) => Some(BootFile::IpxeEfi),
            ClientKind::Pxe(_) => Some(BootFile::UndionlyKpxe),
            ClientKind::Plain => None,
        }
    }

    /// Handles one datagram from `from` at `now`; returns the answer, or `None` when there is
    /// nothing to say (malformed, not for us, a MAC Ferric does not know).
    pub fn handle(&mut self, bytes: &[u8], from: SocketAddrV4, now: Instant) -> Option<Reply> {
        let m = decode(bytes)?;
        if m.opcode() != Opcode::BootRequest || m.hlen() != 6 || m.chaddr().len() < 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&m.chaddr()[..6]);
        let kind = client_kind(&m);
        if !self.known.contains_key(&mac) && !self.cfg.discovery {
            return None;
        }
        let mtype = m.opts().msg_type()?;
        let proxy = self.cfg.mode == Mode::Proxy;
        if proxy && kind == ClientKind::Plain {
            return None;
        }
        let answer = match (mtype, &self.cfg.mode) {
            (MessageType::Discover, Mode::Full { .. }) => {
                let ip = self.allocate(&mac, now, true)?;
                self.reply(&m, MessageType::Offer, Some(ip), kind, &mac)
            }
            (MessageType::Request, Mode::Full { .. }) => {
                // Another server's offer was taken: forget ours.
                if let Some(DhcpOption::ServerIdentifier(sid)) =
                    m.opts().get(OptionCode::ServerIdentifier)
                    && *sid != self.cfg.server
                {
                    if self.leases.get(&mac).is_some_and(|l| l.offered) {
                        self.release(&mac);
                    }
                    return None;
                }
                let asked = match m.opts().get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                    _ => m.ciaddr(),
                };
                let reserved = self.known.get(&mac).and_then(|(_, ip)| *ip);
                let current = reserved.or_else(|| self.lease_of(&mac));
                // A client rebooting with an address from an earlier life of this server
                // (no lease known, the address free in the pool) keeps it.
                let free = current.is_none() && self.free(asked);
                if current == Some(asked) || free {
                    if free {
                        self.taken.insert(asked);
                        self.leases.insert(
                            mac,
                            Lease {
                                ip: asked,
                                offered: true,
                                expires: now,
                            },
                        );
                    }
                    let ip = self.allocate(&mac, now, false)?;
                    self.reply(&m, MessageType::Ack, Some(ip), kind, &mac)
                } else {
                    self.reply(&m, MessageType::Nak, None, ClientKind::Plain, &mac)
                }
            }
            (MessageType::Release, Mode::Full { .. }) => {
                if self.leases.get(&mac).is_some_and(|l| l.ip == m.ciaddr()) {
                    self.release(&mac);
                }
                return None;
            }
            (MessageType::Decline, Mode::Full { .. }) => {
                // The address is in use on the network: it stays taken (out of the pool).
                self.leases.remove(&mac);
                return None;
            }
            (MessageType::Inform, _) => self.reply(&m, MessageType::Ack, None, kind, &mac),
            (MessageType::Discover, Mode::Proxy) => {
                self.reply(&m, MessageType::Offer, None, kind, &mac)
            }
            (MessageType::Request, Mode::Proxy) => {
                self.reply(&m, MessageType::Ack, None, kind, &mac)
            }
            _ => return None,
        }?;
        let to = if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            SocketAddrV4::new(m.giaddr(), 67)
        } else if from.port() == 4011 && *from.ip() != Ipv4Addr::UNSPECIFIED {
            // A PXE boot-server request: answered to where it came from.
            from
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        };
        let mut bytes = Vec::with_capacity(512);
        answer.encode(&mut Encoder::new(&mut bytes)).ok()?;
        Some(Reply {
            bytes,
            to,
            message: answer,
        })
    }

    /// Whether `ip` is in the pool and nobody's.
    fn free(&self, ip: Ipv4Addr) -> bool {
        let Mode::Full { first, last, .. } = self.cfg.mode else {
            return false;
        };
        (u32::from(first)..=u32::from(last)).contains(&u32::from(ip))
            && ip != self.cfg.server
            && !self.taken.contains(&ip)
            && !self.known.values().any(|(_, r)| *r == Some(ip))
    }

    fn release(&mut self, mac: &Mac) {
        if let Some(l) = self.leases.remove(mac) {
            self.taken.remove(&l.ip);
        }
    }

    /// The address for `mac`: its reservation, its lease, or the first free one in the pool.
    fn allocate(&mut self, mac: &Mac, now: Instant, offer: bool) -> Option<Ipv4Addr> {
        let Mode::Full {
            first, last, lease, ..
        } = self.cfg.mode
        else {
            return None;
        };
        let hold = if offer { OFFER_HOLD } else { lease };
        let keep = |l: &Lease| Lease {
            ip: l.ip,
            offered: l.offered && offer,
            expires: now + hold,
        };
        if let Some(ip) = self.known.get(mac).and_then(|(_, ip)| *ip) {
            if let Some(other) = self
                .leases
                .iter()
                .find(|(m, l)| l.ip == ip && *m != mac)
                .map(|(m, _)| *m)
            {
                self.release(&other);
            }
            self.leases.insert(
                *mac,
                Lease {
                    ip,
                    offered: offer,
                    expires: now + hold,
                },
            );
            self.taken.insert(ip);
            return Some(ip);
        }
        if let Some(l) = self.leases.get(mac).copied() {
            self.leases.insert(*mac, keep(&l));
            return Some(l.ip);
        }
        // Expired leases free their addresses.
        let expired: Vec<Mac> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(m, _)| *m)
            .collect();
        for m in expired {
            self.release(&m);
        }
        let reserved: HashSet<Ipv4Addr> = self.known.values().filter_map(|(_, ip)| *ip).collect();
        let (a, b) = (u32::from(first), u32::from(last));
        let ip = (a..=b).map(Ipv4Addr::from).find(|ip| {
            !self.taken.contains(ip) && !reserved.contains(ip) && *ip != self.cfg.server
        })?;
        self.taken.insert(ip);
        self.leases.insert(
            *mac,
            Lease {
                ip,
                offered: offer,
                expires: now + hold,
            },
        );
        Some(ip)
    }

    fn reply(
        &self,
        req: &Message,
        mtype: MessageType,
        yiaddr: Option<Ipv4Addr>,
        kind: ClientKind,
        mac: &Mac,
    ) -> Option<Message> {
        let mut r = Message::default();
        r.set_opcode(Opcode::BootReply)
            .set_xid(req.xid())
            .set_flags(req.flags())
            .set_chaddr(req.chaddr())
            .set_giaddr(req.giaddr())
            .set_yiaddr(yiaddr.unwrap_or(Ipv4Addr::UNSPECIFIED));
        if mtype == MessageType::Ack && yiaddr.is_none() {
            r.set_ciaddr(req.ciaddr());
        }
        let opts = r.opts_mut();
        opts.insert(DhcpOption::MessageType(mtype));
        opts.insert(DhcpOption::ServerIdentifier(self.cfg.server));
        if mtype == MessageType::Nak {
            return Some(r);
        }
        if let (
            Some(_),
            Mode::Full {
                netmask,
                router,
                lease,
                ..
            },
        ) = (yiaddr, &self.cfg.mode)
        {
            let opts = r.opts_mut();
            opts.insert(DhcpOption::SubnetMask(*netmask));
            opts.insert(DhcpOption::AddressLeaseTime(
                u32::try_from(lease.as_secs()).unwrap_or(u32::MAX),
            ));
            if let Some(gw) = router {
                opts.insert(DhcpOption::Router(vec![*gw]));
            }
        }
        if let Some(file) = self.boot_file(kind, mac) {
            r.set_siaddr(self.cfg.server);
            r.set_fname_str(file.name());
            let opts = r.opts_mut();
            opts.insert(DhcpOption::BootfileName(file.name().as_bytes().to_vec()));
            // The class is echoed to every network-boot client that sent one: PXE ROMs, and
            // iPXE (which sends `PXEClient` too), take an offer without an address as
            // proxy DHCP only when it is there.
            let asked = match req.opts().get(OptionCode::ClassIdentifier) {
                Some(DhcpOption::ClassIdentifier(c)) => c.as_slice(),
                _ => &[],
            };
            if matches!(kind, ClientKind::Pxe(_) | ClientKind::HttpBoot)
                || asked.starts_with(b"PXEClient")
                || asked.starts_with(b"HTTPClient")
            {
                let class: &[u8] =
                    if kind == ClientKind::HttpBoot || asked.starts_with(b"HTTPClient") {
                        b"HTTPClient"
                    } else {
                        b"PXEClient"
                    };
                opts.insert(DhcpOption::ClassIdentifier(class.to_vec()));
                // PXE vendor options: discovery control 8 = boot from the file given here,
                // no boot-server discovery.
                opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
                opts.insert(DhcpOption::TFTPServerName(
                    self.cfg.server.to_string().into_bytes(),
                ));
            }
        } else if self.cfg.mode == Mode::Proxy {
            return None;
        }
        if req.flags().broadcast() {
            r.set_flags(Flags::default().set_broadcast());
        }
        Some(r)
    }
}

/// Options the server and the client read, with the lengths they accept. `dhcproto` asserts on the lengths
/// of several options in debug builds and slices by others' values (it panics on hostile
/// bytes), so a request is decoded only after its options are cut down to these.
fn kept(code: u8, len: usize) -> bool {
    match code {
        // Message type.
        53 => len == 1,
        // Requested address, server identifier.
        50 | 54 => len == 4,
        // Architectures: a list of 16-bit numbers.
        93 => len >= 2 && len.is_multiple_of(2),
        // Vendor class, client identifier, user class, machine identifier, host name,
        // parameter list; in answers: vendor options, TFTP server, boot file.
        60 | 61 | 77 | 97 | 12 | 55 | 43 | 66 | 67 => len >= 1,
        // In answers: subnet mask, lease time; routers.
        1 | 51 => len == 4,
        3 => len >= 4 && len.is_multiple_of(4),
        _ => false,
    }
}

/// Decodes a DHCP message; `None` for anything malformed. Only the options in [`kept`] are
/// decoded; the rest are skipped.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    if bytes.len() < 240 || bytes.len() > 1500 || bytes[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut clean = bytes[..240].to_vec();
    let opts = &bytes[240..];
    let mut i = 0;
    loop {
        match *opts.get(i)? {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*opts.get(i + 1)?);
                let option = opts.get(i..i + 2 + len)?;
                if kept(code, len) {
                    clean.extend_from_slice(option);
                }
                i += 2 + len;
            }
        }
    }
    clean.push(255);
    Message::decode(&mut Decoder::new(&clean)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Mode) -> Config {
        Config {
            server: Ipv4Addr::new(10, 248, 1, 1),
            http_port: 8080,
            mode,
            discovery: false,
        }
    }

    fn full() -> Mode {
        Mode::Full {
            first: Ipv4Addr::new(10, 248, 1, 100),
            last: Ipv4Addr::new(10, 248, 1, 250),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            lease: Duration::from_secs(3600),
        }
    }

    fn request(mac: Mac, t: MessageType, opts: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = Message::default();
        m.set_chaddr(&mac).set_xid(0x1234);
        m.opts_mut().insert(DhcpOption::MessageType(t));
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(arch.into()),
        ]
    }

    const FROM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    const A: Mac = [0x52, 0x54, 0, 0, 0, 1];

    #[test]
    fn one_lease_per_mac_through_pxe_ipxe_and_the_ramdisk() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        let offer = d
            .handle(&request(A, MessageType::Discover, pxe(0)), FROM, now)
            .unwrap();
        let ip = offer.message.yiaddr();
        assert_eq!(ip, Ipv4Addr::new(10, 248, 1, 100));
        assert_eq!(offer.message.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.message.fname_str().unwrap().unwrap(), "undionly.kpxe");
        assert_eq!(offer.message.siaddr(), Ipv4Addr::new(10, 248, 1, 1));
        assert_eq!(offer.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        let ack = d
            .handle(
                &request(
                    A,
                    MessageType::Request,
                    [
                        pxe(0),
                        vec![
                            DhcpOption::RequestedIpAddress(ip),
                            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 248, 1, 1)),
                        ],
                    ]
                    .concat(),
                ),
                FROM,
                now,
            )
            .unwrap();
        assert_eq!(ack.message.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.message.yiaddr(), ip);
        // iPXE asks again, with another client identifier: same address, and its script.
        let ipxe = vec![
            DhcpOption::UserClass(b"iPXE".to_vec()),
            DhcpOption::ClientIdentifier(vec![1, 2, 3]),
        ];
        let offer = d
            .handle(&request(A, MessageType::Discover, ipxe.clone()), FROM, now)
            .unwrap();
        assert_eq!(offer.message.yiaddr(), ip);
        assert_eq!(
            offer.message.fname_str().unwrap().unwrap(),
            "http://10.248.1.1:8080/boot/node/52-54-00-00-00-01.ipxe"
        );
        // The ramdisk's own client: same address, no boot file.
        let offer = d
            .handle(&request(A, MessageType::Discover, vec![]), FROM, now)
            .unwrap();
        assert_eq!(offer.message.yiaddr(), ip);
        assert!(
            offer
                .message
                .fname()
                .is_none_or(|f| f.iter().all(|b| *b == 0))
        );
        assert_eq!(d.lease_of(&A), Some(ip));
    }

    #[test]
    fn architectures_choose_the_boot_file_and_unknown_macs_are_ignored() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), Some(Ipv4Addr::new(10, 248, 1, 7)))]);
        let now = Instant::now();
        let file = |d: &mut Dhcp, opts| {
            d.handle(&request(A, MessageType::Discover, opts), FROM, now)
                .unwrap()
                .message
        };
        assert_eq!(
            file(&mut d, pxe(7)).fname_str().unwrap().unwrap(),
            "ipxe.efi"
        );
        let http = file(
            &mut d,
            vec![
                DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016".to_vec()),
                DhcpOption::ClientSystemArchitecture(16.into()),
            ],
        );
        assert_eq!(
            http.fname_str().unwrap().unwrap(),
            "http://10.248.1.1:8080/boot/ipxe.efi"
        );
        assert_eq!(
            http.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
        // The reservation wins.
        assert_eq!(http.yiaddr(), Ipv4Addr::new(10, 248, 1, 7));
        let stranger = [2, 0, 0, 0, 0, 9];
        assert!(
            d.handle(&request(stranger, MessageType::Discover, pxe(0)), FROM, now)
                .is_none()
        );
    }

    #[test]
    fn proxy_mode_gives_boot_information_and_no_address() {
        let mut d = Dhcp::new(cfg(Mode::Proxy));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        let offer = d
            .handle(&request(A, MessageType::Discover, pxe(0)), FROM, now)
            .unwrap()
            .message;
        assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(offer.siaddr(), Ipv4Addr::new(10, 248, 1, 1));
        let opts = offer.opts();
        assert_eq!(
            opts.get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opts.get(OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert_eq!(
            opts.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 248, 1, 1)))
        );
        assert!(opts.get(OptionCode::SubnetMask).is_none());
        // iPXE, which also calls itself PXEClient, gets its script and the class back.
        let ipxe = d
            .handle(
                &request(
                    A,
                    MessageType::Discover,
                    [pxe(0), vec![DhcpOption::UserClass(b"iPXE".to_vec())]].concat(),
                ),
                FROM,
                now,
            )
            .unwrap()
            .message;
        assert!(ipxe.fname_str().unwrap().unwrap().ends_with(".ipxe"));
        assert_eq!(
            ipxe.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        // A plain client is the other server's.
        assert!(
            d.handle(&request(A, MessageType::Discover, vec![]), FROM, now)
                .is_none()
        );
    }

    #[test]
    fn a_request_for_another_address_is_refused_and_another_servers_offer_is_let_go() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        d.handle(&request(A, MessageType::Discover, vec![]), FROM, now)
            .unwrap();
        let nak = d
            .handle(
                &request(
                    A,
                    MessageType::Request,
                    vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                        10, 248, 1, 99,
                    ))],
                ),
                FROM,
                now,
            )
            .unwrap();
        assert_eq!(nak.message.opts().msg_type(), Some(MessageType::Nak));
        assert!(
            d.handle(
                &request(
                    A,
                    MessageType::Request,
                    vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 9))],
                ),
                FROM,
                now,
            )
            .is_none()
        );
        assert_eq!(d.lease_of(&A), None, "the offer went back to the pool");
    }

    #[test]
    fn a_burst_of_a_hundred_discovers_all_get_distinct_addresses() {
        let mut c = cfg(full());
        c.discovery = true;
        let mut d = Dhcp::new(c);
        let now = Instant::now();
        let mut seen = HashSet::new();
        for i in 0..100u8 {
            let mac = [2, 0, 0, 0, 1, i];
            let r = d
                .handle(&request(mac, MessageType::Discover, pxe(0)), FROM, now)
                .unwrap_or_else(|| panic!("no offer for client {i}"));
            assert!(seen.insert(r.message.yiaddr()), "address offered twice");
        }
    }

    #[test]
    fn malformed_datagrams_get_no_answer() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        let good = request(A, MessageType::Discover, vec![]);
        // Options the server does not read are skipped, whatever their content (dhcproto
        // would panic on these: option 94 of the wrong length, a BLQ status of length 0).
        let mut odd = good[..240].to_vec();
        odd.extend_from_slice(&[94, 1, 1, 151, 0, 53, 1, 1, 255]);
        assert!(d.handle(&odd, FROM, now).is_some());
        for bad in [
            vec![],
            good[..100].to_vec(),
            {
                let mut b = good.clone();
                b.truncate(241);
                b[240] = 53;
                b
            },
            {
                // Options past the end of the datagram.
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 60, 9, 1]);
                b
            },
        ] {
            assert!(d.handle(&bad, FROM, now).is_none(), "{bad:?}");
        }
    }
}
