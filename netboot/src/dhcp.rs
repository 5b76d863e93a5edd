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
//! HTTP; a PXE ROM gets iPXE over TFTP: `undionly.kpxe` for BIOS, and for x86-64 UEFI
//! `snponly.efi`, which drives the NIC through the firmware's own driver (`ipxe.efi`, with
//! iPXE's drivers, fails on many server NICs) — `ipxe.efi` for the MACs set so
//! ([`Dhcp::set_ipxe_efi`]); a UEFI HTTP-boot client gets an absolute `http://` URL to the
//! same. Other clients (the ramdisk, the installed OS) get an address only, and only in full
//! mode. MACs Ferric does
//! not know are ignored unless discovery is on. Bad datagrams get no answer.
//!
//! Anyone on the provisioning network can send anything with any MAC, so the server trusts
//! no datagram with more than that MAC's own lease (see [`Limits`]):
//! * a DECLINE counts only from the lease's holder, naming this server and the lease's
//!   address; the address is then quarantined for a while, within limits per MAC and in all;
//! * a RELEASE counts only for an acknowledged lease, sent from its address;
//! * each MAC and all of them together are rate-limited (token buckets);
//! * MACs Ferric does not know hold at most a share of the pool, so enrolled nodes always
//!   find an address;
//! * leases and quarantines are listed for the coordinator to store ([`Dhcp::leases`]) and
//!   restored after a restart ([`Dhcp::restore`]), so that addresses in use are not handed
//!   out again.

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
    /// Rate limits, quarantine and the share of the pool for unknown MACs.
    pub limits: Limits,
}

impl Config {
    /// Settings with the default [`Limits`].
    pub fn new(server: Ipv4Addr, http_port: u16, mode: Mode, discovery: bool) -> Config {
        Config {
            server,
            http_port,
            mode,
            discovery,
            limits: Limits::default(),
        }
    }
}

/// What clients may take of the server: the defences against a flood of datagrams and a
/// neighbour spoofing MACs. A datagram over a rate limit gets no answer and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Datagrams one MAC may send at once (its token bucket's size). Default 16: one boot is
    /// a PXE ROM, iPXE and the ramdisk, each a DISCOVER and a REQUEST, with retries.
    pub mac_burst: u32,
    /// Datagrams per second one MAC may send past its burst. Default 2.
    pub mac_rate: u32,
    /// Datagrams all clients together may send at once. Default 1024.
    pub global_burst: u32,
    /// Datagrams per second all clients together may send past the burst. Default 512.
    pub global_rate: u32,
    /// MACs tracked at once for their rate (and, in proxy mode, for the address they asked
    /// for); past it the idlest is forgotten. Default 4096.
    pub tracked_macs: usize,
    /// How long a declined address stays out of the pool. Default 10 minutes.
    pub quarantine: Duration,
    /// Quarantines one MAC's declines hold at once; a further decline ends its oldest.
    /// Default 2. (In all, quarantines hold at most an eighth of the pool, at least one.)
    pub quarantines_per_mac: usize,
    /// Percentage of the pool that MACs Ferric does not know may hold together (discovery),
    /// so that enrolled nodes always find an address. Default 50.
    pub discovery_share: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            mac_burst: 16,
            mac_rate: 2,
            global_burst: 1024,
            global_rate: 512,
            tracked_macs: 4096,
            quarantine: Duration::from_secs(600),
            quarantines_per_mac: 2,
            discovery_share: 50,
        }
    }
}

/// The file a network-boot client is told to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// iPXE for legacy BIOS PXE ROMs, over TFTP.
    UndionlyKpxe,
    /// iPXE for x86-64 UEFI on the firmware's own NIC driver (SNP), over TFTP.
    SnpOnlyEfi,
    /// iPXE for x86-64 UEFI with its own NIC drivers, over TFTP.
    IpxeEfi,
    /// iPXE for UEFI HTTP boot (either of the two), as an absolute URL.
    EfiHttp(String),
    /// The node's iPXE script, for iPXE itself.
    Script(String),
}

/// The UEFI iPXE binaries the boot services serve.
pub const EFI_LOADERS: [&str; 2] = ["snponly.efi", "ipxe.efi"];

impl BootFile {
    /// What goes in the reply's `file` field and option 67.
    pub fn name(&self) -> &str {
        match self {
            BootFile::UndionlyKpxe => "undionly.kpxe",
            BootFile::SnpOnlyEfi => "snponly.efi",
            BootFile::IpxeEfi => "ipxe.efi",
            BootFile::EfiHttp(u) | BootFile::Script(u) => u,
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

/// A declined address kept out of the pool for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quarantine {
    ip: Ipv4Addr,
    /// The MAC whose DECLINE put it there: its declines can hold only so many.
    mac: Mac,
    until: Instant,
}

/// A token bucket, in thousandths of a datagram (integers, no float drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            milli: u64::from(burst) * 1000,
            at: now,
        }
    }

    /// Adds what `rate` per second gave since the last look, up to `burst`.
    fn refill(&mut self, burst: u32, rate: u32, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        self.milli = self
            .milli
            .saturating_add(ms.saturating_mul(u64::from(rate)))
            .min(u64::from(burst) * 1000);
        self.at = self.at.max(now);
    }

    fn has_token(&self) -> bool {
        self.milli >= 1000
    }

    fn is_full(&self, burst: u32) -> bool {
        self.milli >= u64::from(burst) * 1000
    }
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

/// What a [`LeaseRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// Offered to the MAC, not yet requested (held for a minute).
    Offered,
    /// Acknowledged: the MAC uses the address.
    Bound,
    /// Declined by the MAC (in use by someone else on the network): out of the pool until
    /// the time is up.
    Quarantined,
}

/// One address the server holds, as [`Dhcp::leases`] lists it and [`Dhcp::restore`] takes
/// it back: what the coordinator stores so that a restart does not hand out addresses in use.
/// `remaining` counts from the `now` of the call that listed it; a store that keeps records
/// across a restart converts it to a wall-clock expiry and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    /// The MAC holding the address; for a quarantine, the MAC whose DECLINE put it there.
    pub mac: Mac,
    /// The address.
    pub ip: Ipv4Addr,
    /// How long the record has left.
    pub remaining: Duration,
    /// Lease or quarantine.
    pub kind: LeaseKind,
}

/// How long an offer holds its address before it may go to another client.
const OFFER_HOLD: Duration = Duration::from_secs(60);

/// The DHCP server state: known MACs, reservations, leases, quarantined addresses, rate
/// limits.
///
/// Call [`Dhcp::restore`] once at start with what [`Dhcp::leases`] listed before, then
/// [`Dhcp::handle`] for each datagram; after handling, [`Dhcp::take_changed`] says whether
/// the leases are to be stored again.
#[derive(Debug, Clone)]
pub struct Dhcp {
    cfg: Config,
    /// Known MACs → node name (and a reserved address, when given).
    known: HashMap<Mac, (String, Option<Ipv4Addr>)>,
    leases: HashMap<Mac, Lease>,
    /// Every address leased or quarantined (each by one holder only).
    taken: HashSet<Ipv4Addr>,
    quarantine: Vec<Quarantine>,
    /// When the earliest lease or quarantine may end (`None`: nothing to end).
    next_expiry: Option<Instant>,
    /// Per-MAC rate limits; at most `limits.tracked_macs`.
    buckets: HashMap<Mac, Bucket>,
    global: Option<Bucket>,
    /// Proxy mode: the address each known MAC last asked the other server for, and when.
    asked: HashMap<Mac, (Ipv4Addr, Instant)>,
    /// MACs whose UEFI firmware gets `ipxe.efi` rather than `snponly.efi`.
    ipxe_efi: HashSet<Mac>,
    changed: bool,
}

impl Dhcp {
    /// A server with these settings and no known MACs.
    pub fn new(cfg: Config) -> Dhcp {
        Dhcp {
            cfg,
            known: HashMap::new(),
            leases: HashMap::new(),
            taken: HashSet::new(),
            quarantine: Vec::new(),
            next_expiry: None,
            buckets: HashMap::new(),
            global: None,
            asked: HashMap::new(),
            ipxe_efi: HashSet::new(),
            changed: false,
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
        let known = &self.known;
        self.asked.retain(|m, _| known.contains_key(m));
    }

    /// Replaces the MACs whose UEFI firmware gets `ipxe.efi` (iPXE's own NIC drivers) instead
    /// of `snponly.efi` (the firmware's).
    pub fn set_ipxe_efi(&mut self, macs: impl IntoIterator<Item = Mac>) {
        self.ipxe_efi = macs.into_iter().collect();
    }

    /// The node a MAC belongs to, if known.
    pub fn node_of(&self, mac: &Mac) -> Option<&str> {
        self.known.get(mac).map(|(n, _)| n.as_str())
    }

    /// The address leased (offered or acknowledged) to a MAC, if any.
    pub fn lease_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.leases.get(mac).map(|l| l.ip)
    }

    /// The address DHCP gave a MAC, as far as this server knows: in full mode, the address of
    /// its acknowledged lease (not one merely offered); in proxy mode, the address it last
    /// asked the other server for (the requested address of a REQUEST, else its `ciaddr`),
    /// as seen in the REQUESTs of known MACs. Leases that ran out are dropped when the next
    /// datagram is handled.
    pub fn address_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        match self.cfg.mode {
            Mode::Full { .. } => self.leases.get(mac).filter(|l| !l.offered).map(|l| l.ip),
            Mode::Proxy => self.asked.get(mac).map(|(ip, _)| *ip),
        }
    }

    /// The leases and quarantines in force at `now`, by address, with the time each has
    /// left: what to store for [`Dhcp::restore`].
    pub fn leases(&self, now: Instant) -> Vec<LeaseRecord> {
        let mut out: Vec<LeaseRecord> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires > now)
            .map(|(mac, l)| LeaseRecord {
                mac: *mac,
                ip: l.ip,
                remaining: l.expires - now,
                kind: if l.offered {
                    LeaseKind::Offered
                } else {
                    LeaseKind::Bound
                },
            })
            .chain(
                self.quarantine
                    .iter()
                    .filter(|q| q.until > now)
                    .map(|q| LeaseRecord {
                        mac: q.mac,
                        ip: q.ip,
                        remaining: q.until - now,
                        kind: LeaseKind::Quarantined,
                    }),
            )
            .collect();
        out.sort_by_key(|r| (u32::from(r.ip), r.kind == LeaseKind::Quarantined));
        out
    }

    /// Takes back what [`Dhcp::leases`] listed (after a restart), at `now`. Records outside
    /// the pool (or in proxy mode), with no time left, for an address already taken or
    /// reserved for another MAC, for a MAC that already holds a lease, or past the quarantine
    /// limits are ignored; times are cut to the lease time, the offer hold and the
    /// quarantine time of the settings.
    pub fn restore(&mut self, records: impl IntoIterator<Item = LeaseRecord>, now: Instant) {
        let Mode::Full { lease, .. } = self.cfg.mode else {
            return;
        };
        let limits = self.cfg.limits.clone();
        for r in records {
            if r.remaining.is_zero()
                || !self.in_pool(r.ip)
                || self.taken.contains(&r.ip)
                || self.reserved_for(r.ip).is_some_and(|m| m != r.mac)
            {
                continue;
            }
            match r.kind {
                LeaseKind::Offered | LeaseKind::Bound => {
                    if self.leases.contains_key(&r.mac) {
                        continue;
                    }
                    let offered = r.kind == LeaseKind::Offered;
                    let most = if offered { OFFER_HOLD } else { lease };
                    self.hold(r.mac, r.ip, offered, now + r.remaining.min(most));
                }
                LeaseKind::Quarantined => {
                    if self.reserved_for(r.ip).is_some()
                        || self.quarantined_by(&r.mac) >= limits.quarantines_per_mac
                        || self.quarantine.len() >= self.quarantine_cap()
                    {
                        continue;
                    }
                    self.put_quarantine(r.mac, r.ip, now + r.remaining.min(limits.quarantine));
                }
            }
        }
    }

    /// Whether leases or quarantines changed since the last call (once per change): the
    /// driver stores [`Dhcp::leases`] only then.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The boot file for a client of `kind` with `mac`; `None` for plain clients.
    pub fn boot_file(&self, kind: ClientKind, mac: &Mac) -> Option<BootFile> {
        let base = format!("http://{}:{}", self.cfg.server, self.cfg.http_port);
        match kind {
            ClientKind::Ipxe => Some(BootFile::Script(format!(
                "{base}/boot/node/{}.ipxe",
                mac_string(mac).replace(':', "-")
            ))),
            ClientKind::HttpBoot => Some(BootFile::EfiHttp(format!(
                "{base}/boot/{}",
                self.efi_loader(mac).name()
            ))),
            // RFC 4578: 0 is BIOS; 6, 7 and 9 are UEFI (IA32, x64, x64 byte code); the UEFI
            // HTTP architectures (0x0f, 0x10) come with `HTTPClient`.
            ClientKind::Pxe(6 | 7 | 9 | 0x0f | 0x10) => Some(self.efi_loader(mac)),
            ClientKind::Pxe(_) => Some(BootFile::UndionlyKpxe),
            ClientKind::Plain => None,
        }
    }

    /// The UEFI iPXE `mac` gets.
    fn efi_loader(&self, mac: &Mac) -> BootFile {
        if self.ipxe_efi.contains(mac) {
            BootFile::IpxeEfi
        } else {
            BootFile::SnpOnlyEfi
        }
    }

    /// Handles one datagram from `from` at `now`; returns the answer, if any. Nothing is
    /// answered (and nothing changes) for a malformed datagram, one not for us, a MAC Ferric
    /// does not know (unless discovery is on), or one over the rate limits.
    pub fn handle(&mut self, bytes: &[u8], from: SocketAddrV4, now: Instant) -> Option<Reply> {
        let m = decode(bytes)?;
        if m.opcode() != Opcode::BootRequest || m.hlen() != 6 || m.chaddr().len() < 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&m.chaddr()[..6]);
        let kind = client_kind(&m);
        let known = self.known.contains_key(&mac);
        if !known && !self.cfg.discovery {
            return None;
        }
        let mtype = m.opts().msg_type()?;
        if !self.admit(&mac, now) {
            return None;
        }
        self.expire(now);
        let proxy = self.cfg.mode == Mode::Proxy;
        if proxy && known && mtype == MessageType::Request {
            // What the other server is asked for (plain clients too: the ramdisk's own).
            let asked = requested(&m).unwrap_or(m.ciaddr());
            if !asked.is_unspecified() && !asked.is_broadcast() {
                self.learn_asked(mac, asked, now);
            }
        }
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
                if server_id(&m).is_some_and(|sid| sid != self.cfg.server) {
                    if self.leases.get(&mac).is_some_and(|l| l.offered) {
                        self.release(&mac);
                    }
                    return None;
                }
                let asked = requested(&m).unwrap_or(m.ciaddr());
                let current = self.reservation(&mac).or_else(|| self.lease_of(&mac));
                // A client rebooting with an address from an earlier life of this server
                // (no lease known, the address free in the pool) keeps it, within the share
                // of MACs Ferric does not know.
                let free = current.is_none() && self.free(asked) && self.may_take(&mac);
                if current == Some(asked) || free {
                    if free {
                        self.hold(mac, asked, true, now);
                    }
                    let ip = self.allocate(&mac, now, false)?;
                    self.reply(&m, MessageType::Ack, Some(ip), kind, &mac)
                } else {
                    self.reply(&m, MessageType::Nak, None, ClientKind::Plain, &mac)
                }
            }
            (MessageType::Release, Mode::Full { .. }) => {
                self.handle_release(&m, &mac, from);
                return None;
            }
            (MessageType::Decline, Mode::Full { .. }) => {
                self.handle_decline(&m, &mac, now);
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

    /// A RELEASE is honoured only from the holder of an acknowledged lease, for its address,
    /// sent from that address (a client releases by unicast from it), and to this server
    /// when it names one: anything else may be a neighbour spoofing the MAC.
    fn handle_release(&mut self, m: &Message, mac: &Mac, from: SocketAddrV4) {
        let Some(l) = self.leases.get(mac) else {
            return;
        };
        if l.offered
            || m.ciaddr() != l.ip
            || *from.ip() != l.ip
            || server_id(m).is_some_and(|sid| sid != self.cfg.server)
        {
            return;
        }
        self.release(mac);
    }

    /// A DECLINE (the address is in use by someone else) is honoured only from the holder of
    /// a lease, naming this server and the lease's address; the address is then quarantined,
    /// within the limits on quarantines (per MAC, and an eighth of the pool in all), so that
    /// a MAC declining again and again cannot empty the pool.
    fn handle_decline(&mut self, m: &Message, mac: &Mac, now: Instant) {
        let Some(l) = self.leases.get(mac).copied() else {
            return;
        };
        if server_id(m) != Some(self.cfg.server) || requested(m) != Some(l.ip) {
            return;
        }
        self.release(mac);
        // A reservation is the operator's word: it is given again, not quarantined.
        let per_mac = self.cfg.limits.quarantines_per_mac;
        if per_mac == 0 || self.reserved_for(l.ip).is_some() || !self.in_pool(l.ip) {
            return;
        }
        while self.quarantined_by(mac) >= per_mac {
            self.end_oldest_quarantine(Some(mac));
        }
        while self.quarantine.len() >= self.quarantine_cap() {
            self.end_oldest_quarantine(None);
        }
        self.put_quarantine(*mac, l.ip, now + self.cfg.limits.quarantine);
    }

    /// Whether a datagram from `mac` at `now` is within the rate limits; if so, it is
    /// counted against them.
    fn admit(&mut self, mac: &Mac, now: Instant) -> bool {
        let l = &self.cfg.limits;
        let global = self
            .global
            .get_or_insert_with(|| Bucket::full(l.global_burst, now));
        global.refill(l.global_burst, l.global_rate, now);
        let mut bucket = match self.buckets.get_mut(mac) {
            Some(b) => {
                b.refill(l.mac_burst, l.mac_rate, now);
                *b
            }
            None => Bucket::full(l.mac_burst, now),
        };
        if !global.has_token() || !bucket.has_token() {
            return false;
        }
        global.milli -= 1000;
        bucket.milli -= 1000;
        if !self.buckets.contains_key(mac) && self.buckets.len() >= l.tracked_macs {
            // Forget MACs whose bucket is full again (nothing lost), else the idlest.
            let (burst, rate) = (l.mac_burst, l.mac_rate);
            self.buckets.retain(|_, b| {
                b.refill(burst, rate, now);
                !b.is_full(burst)
            });
            if self.buckets.len() >= l.tracked_macs
                && let Some(idlest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(m, _)| *m)
            {
                self.buckets.remove(&idlest);
            }
        }
        if self.buckets.len() < l.tracked_macs || self.buckets.contains_key(mac) {
            self.buckets.insert(*mac, bucket);
        }
        true
    }

    /// Proxy mode: notes the address a known MAC asked for, forgetting the oldest note past
    /// the tracking limit.
    fn learn_asked(&mut self, mac: Mac, ip: Ipv4Addr, now: Instant) {
        if !self.asked.contains_key(&mac)
            && self.asked.len() >= self.cfg.limits.tracked_macs
            && let Some(oldest) = self
                .asked
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(m, _)| *m)
        {
            self.asked.remove(&oldest);
        }
        if self.asked.len() < self.cfg.limits.tracked_macs || self.asked.contains_key(&mac) {
            self.asked.insert(mac, (ip, now));
        }
    }

    /// Ends the leases and quarantines whose time is up.
    fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        let ended: Vec<Mac> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(m, _)| *m)
            .collect();
        for m in ended {
            self.release(&m);
        }
        while let Some(i) = self.quarantine.iter().position(|q| q.until <= now) {
            self.end_quarantine(i);
        }
        self.next_expiry = self
            .leases
            .values()
            .map(|l| l.expires)
            .chain(self.quarantine.iter().map(|q| q.until))
            .min();
    }

    fn note_expiry(&mut self, at: Instant) {
        self.next_expiry = Some(self.next_expiry.map_or(at, |t| t.min(at)));
    }

    /// The pool's bounds (full mode).
    fn pool(&self) -> Option<(u32, u32)> {
        match self.cfg.mode {
            Mode::Full { first, last, .. } => Some((u32::from(first), u32::from(last))),
            Mode::Proxy => None,
        }
    }

    /// Addresses in the pool.
    fn pool_size(&self) -> usize {
        self.pool().map_or(0, |(a, b)| {
            b.checked_sub(a).map_or(0, |d| {
                usize::try_from(d).unwrap_or(usize::MAX).saturating_add(1)
            })
        })
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pool()
            .is_some_and(|(a, b)| (a..=b).contains(&u32::from(ip)))
            && ip != self.cfg.server
    }

    /// Quarantines in all: an eighth of the pool, at least one.
    fn quarantine_cap(&self) -> usize {
        (self.pool_size() / 8).max(1)
    }

    /// Addresses the MACs Ferric does not know may hold together.
    fn discovery_cap(&self) -> usize {
        let share = usize::from(self.cfg.limits.discovery_share.min(100));
        self.pool_size() / 100 * share + self.pool_size() % 100 * share / 100
    }

    /// Whether `mac` may take a new address: known MACs always, others within their share.
    fn may_take(&self, mac: &Mac) -> bool {
        self.known.contains_key(mac)
            || self
                .leases
                .keys()
                .filter(|m| !self.known.contains_key(*m))
                .count()
                < self.discovery_cap()
    }

    fn reservation(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.known.get(mac).and_then(|(_, ip)| *ip)
    }

    /// The MAC `ip` is reserved for, if any.
    fn reserved_for(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.known
            .iter()
            .find(|(_, (_, r))| *r == Some(ip))
            .map(|(m, _)| *m)
    }

    /// Whether `ip` is in the pool and nobody's.
    fn free(&self, ip: Ipv4Addr) -> bool {
        self.in_pool(ip) && !self.taken.contains(&ip) && self.reserved_for(ip).is_none()
    }

    /// Gives `mac` the lease of `ip` (which is free, or already its own), letting go of any
    /// other address it held.
    fn hold(&mut self, mac: Mac, ip: Ipv4Addr, offered: bool, expires: Instant) {
        if let Some(old) = self.leases.insert(
            mac,
            Lease {
                ip,
                offered,
                expires,
            },
        ) && old.ip != ip
        {
            self.taken.remove(&old.ip);
        }
        self.taken.insert(ip);
        self.note_expiry(expires);
        self.changed = true;
    }

    fn release(&mut self, mac: &Mac) {
        if let Some(l) = self.leases.remove(mac) {
            self.taken.remove(&l.ip);
            self.changed = true;
        }
    }

    fn quarantined_by(&self, mac: &Mac) -> usize {
        self.quarantine.iter().filter(|q| q.mac == *mac).count()
    }

    fn put_quarantine(&mut self, mac: Mac, ip: Ipv4Addr, until: Instant) {
        self.quarantine.push(Quarantine { ip, mac, until });
        self.taken.insert(ip);
        self.note_expiry(until);
        self.changed = true;
    }

    fn end_quarantine(&mut self, i: usize) {
        let q = self.quarantine.swap_remove(i);
        if !self.leases.values().any(|l| l.ip == q.ip) {
            self.taken.remove(&q.ip);
        }
        self.changed = true;
    }

    /// Ends the quarantine that ends first (of `mac`'s, when given).
    fn end_oldest_quarantine(&mut self, mac: Option<&Mac>) {
        if let Some((i, _)) = self
            .quarantine
            .iter()
            .enumerate()
            .filter(|(_, q)| mac.is_none_or(|m| q.mac == *m))
            .min_by_key(|(_, q)| q.until)
        {
            self.end_quarantine(i);
        }
    }

    /// The address for `mac`: its reservation, its lease, or the first free one in the pool
    /// (for a MAC Ferric does not know, only within its share).
    fn allocate(&mut self, mac: &Mac, now: Instant, offer: bool) -> Option<Ipv4Addr> {
        let Mode::Full { lease, .. } = self.cfg.mode else {
            return None;
        };
        let hold = if offer { OFFER_HOLD } else { lease };
        // A DISCOVER does not shorten a lease, nor unbind it.
        let renewed = |l: &Lease| {
            if offer {
                (l.offered, l.expires.max(now + hold))
            } else {
                (false, now + hold)
            }
        };
        if let Some(ip) = self.reservation(mac) {
            // The reservation wins over another MAC's lease or a quarantine of the address.
            if let Some(other) = self
                .leases
                .iter()
                .find(|(m, l)| l.ip == ip && *m != mac)
                .map(|(m, _)| *m)
            {
                self.release(&other);
            }
            while let Some(i) = self.quarantine.iter().position(|q| q.ip == ip) {
                self.end_quarantine(i);
            }
            let (offered, expires) = match self.leases.get(mac) {
                Some(l) if l.ip == ip => renewed(l),
                _ => (offer, now + hold),
            };
            self.hold(*mac, ip, offered, expires);
            return Some(ip);
        }
        if let Some(l) = self.leases.get(mac).copied() {
            let (offered, expires) = renewed(&l);
            self.hold(*mac, l.ip, offered, expires);
            return Some(l.ip);
        }
        if !self.may_take(mac) {
            return None;
        }
        let (a, b) = self.pool()?;
        let reserved: HashSet<Ipv4Addr> = self.known.values().filter_map(|(_, ip)| *ip).collect();
        let ip = (a..=b)
            .map(Ipv4Addr::from)
            .find(|ip| self.in_pool(*ip) && !self.taken.contains(ip) && !reserved.contains(ip))?;
        self.hold(*mac, ip, offer, now + hold);
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

/// The server identifier (option 54) of a message, if any.
fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The requested address (option 50) of a message, if any.
fn requested(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
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

/// Decodes a DHCP message; `None` for anything malformed. Only the options in `kept` are
/// decoded; the rest are skipped. A hardware address length over 16 (the size of `chaddr`)
/// is malformed too: `dhcproto`'s `Message::chaddr` would panic on it.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    if bytes.len() < 240
        || bytes.len() > 1500
        || bytes[236..240] != [99, 130, 83, 99]
        || bytes[2] > 16
    {
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
        Config::new(Ipv4Addr::new(10, 248, 1, 1), 8080, mode, false)
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
        // UEFI: iPXE on the firmware's own NIC driver, unless the node is set to iPXE's.
        assert_eq!(
            file(&mut d, pxe(7)).fname_str().unwrap().unwrap(),
            "snponly.efi"
        );
        assert_eq!(
            file(&mut d, pxe(0)).fname_str().unwrap().unwrap(),
            "undionly.kpxe"
        );
        let http_boot = vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016".to_vec()),
            DhcpOption::ClientSystemArchitecture(16.into()),
        ];
        assert_eq!(
            file(&mut d, http_boot.clone())
                .fname_str()
                .unwrap()
                .unwrap(),
            "http://10.248.1.1:8080/boot/snponly.efi"
        );
        d.set_ipxe_efi([A]);
        assert_eq!(
            file(&mut d, pxe(9)).fname_str().unwrap().unwrap(),
            "ipxe.efi"
        );
        let http = file(&mut d, http_boot);
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
        // A hundred machines Ferric does not know, in a pool of 151: all of it theirs here.
        c.limits.discovery_share = 100;
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
                // A hardware address longer than `chaddr`.
                let mut b = good.clone();
                b[2] = 255;
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

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 248, 1, 1);
    const B: Mac = [0x52, 0x54, 0, 0, 0, 2];

    fn pool(first: u8, last: u8) -> Mode {
        Mode::Full {
            first: Ipv4Addr::new(10, 248, 1, first),
            last: Ipv4Addr::new(10, 248, 1, last),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            lease: Duration::from_secs(3600),
        }
    }

    /// A message from `mac` with `ciaddr` set.
    fn from_address(mac: Mac, t: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = Message::default();
        m.set_chaddr(&mac).set_xid(0x1234).set_ciaddr(ciaddr);
        m.opts_mut().insert(DhcpOption::MessageType(t));
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    fn ours(ip: Ipv4Addr) -> Vec<DhcpOption> {
        vec![
            DhcpOption::RequestedIpAddress(ip),
            DhcpOption::ServerIdentifier(SERVER),
        ]
    }

    /// DISCOVER and REQUEST: the address `mac` is bound to.
    fn bind(d: &mut Dhcp, mac: Mac, now: Instant) -> Ipv4Addr {
        let ip = d
            .handle(&request(mac, MessageType::Discover, vec![]), FROM, now)
            .expect("an offer")
            .message
            .yiaddr();
        let ack = d
            .handle(&request(mac, MessageType::Request, ours(ip)), FROM, now)
            .expect("an answer");
        assert_eq!(ack.message.opts().msg_type(), Some(MessageType::Ack));
        ip
    }

    fn offer(d: &mut Dhcp, mac: Mac, now: Instant) -> Option<Ipv4Addr> {
        d.handle(&request(mac, MessageType::Discover, vec![]), FROM, now)
            .map(|r| r.message.yiaddr())
    }

    fn quarantined(d: &Dhcp, now: Instant) -> Vec<Ipv4Addr> {
        d.leases(now)
            .into_iter()
            .filter(|r| r.kind == LeaseKind::Quarantined)
            .map(|r| r.ip)
            .collect()
    }

    #[test]
    fn a_spoofed_decline_changes_nothing() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None), (B, "n1".to_owned(), None)]);
        let now = Instant::now();
        let ip = bind(&mut d, A, now);
        assert!(d.take_changed());
        let before = d.leases(now);
        let other = Ipv4Addr::new(10, 248, 1, 200);
        for (mac, opts) in [
            // Another server's identifier.
            (
                A,
                vec![
                    DhcpOption::RequestedIpAddress(ip),
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 248, 1, 9)),
                ],
            ),
            // No server identifier.
            (A, vec![DhcpOption::RequestedIpAddress(ip)]),
            // Another address than the lease's.
            (A, ours(other)),
            // No address.
            (A, vec![DhcpOption::ServerIdentifier(SERVER)]),
            // A MAC without a lease, naming A's address.
            (B, ours(ip)),
        ] {
            assert!(
                d.handle(&request(mac, MessageType::Decline, opts.clone()), FROM, now)
                    .is_none()
            );
            assert_eq!(d.leases(now), before, "{opts:?}");
            assert!(!d.take_changed());
        }
        assert_eq!(d.address_of(&A), Some(ip));
    }

    #[test]
    fn an_honest_decline_quarantines_the_address_for_a_while() {
        let mut c = cfg(pool(100, 119));
        c.discovery = true;
        let mut d = Dhcp::new(c);
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        let ip = bind(&mut d, A, now);
        assert_eq!(ip, Ipv4Addr::new(10, 248, 1, 100));
        d.take_changed();
        assert!(
            d.handle(&request(A, MessageType::Decline, ours(ip)), FROM, now)
                .is_none()
        );
        assert!(d.take_changed());
        assert_eq!(d.lease_of(&A), None);
        assert_eq!(
            d.leases(now),
            [LeaseRecord {
                mac: A,
                ip,
                remaining: Duration::from_secs(600),
                kind: LeaseKind::Quarantined
            }]
        );
        // Nobody is offered it while it is quarantined, not even the MAC that declined it.
        assert_eq!(offer(&mut d, A, now), Some(Ipv4Addr::new(10, 248, 1, 101)));
        assert_eq!(offer(&mut d, B, now), Some(Ipv4Addr::new(10, 248, 1, 102)));
        let later = now + Duration::from_secs(601);
        let c: Mac = [2, 0, 0, 0, 0, 3];
        assert_eq!(offer(&mut d, c, later), Some(ip), "back in the pool");
        assert!(quarantined(&d, later).is_empty());
    }

    #[test]
    fn one_mac_declining_a_hundred_times_cannot_empty_a_pool_of_twenty() {
        let mut d = Dhcp::new(cfg(pool(100, 119)));
        let others: Vec<Mac> = (0..18u8).map(|i| [2, 0, 0, 0, 1, i]).collect();
        d.set_known(
            std::iter::once(A)
                .chain(others.iter().copied())
                .map(|m| (m, mac_string(&m), None)),
        );
        let mut now = Instant::now();
        for _ in 0..100 {
            let ip = bind(&mut d, A, now);
            d.handle(&request(A, MessageType::Decline, ours(ip)), FROM, now);
            assert!(quarantined(&d, now).len() <= 2);
            // Slow enough for the rate limit.
            now += Duration::from_secs(2);
        }
        assert_eq!(quarantined(&d, now).len(), 2);
        // The other 18 addresses are all still there.
        let mut seen = HashSet::new();
        for m in &others {
            let ip = offer(&mut d, *m, now).expect("an address left");
            assert!(seen.insert(ip));
        }
        // Many MACs declining hold no more than an eighth of the pool (here 2) in all.
        let mut d = Dhcp::new(cfg(pool(100, 119)));
        d.set_known(others.iter().map(|m| (*m, mac_string(m), None)));
        let now = Instant::now();
        for m in &others {
            let ip = bind(&mut d, *m, now);
            d.handle(&request(*m, MessageType::Decline, ours(ip)), FROM, now);
        }
        assert_eq!(quarantined(&d, now).len(), 2);
    }

    #[test]
    fn a_release_is_honoured_only_from_the_holders_address() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        // An offer is not released: nothing was acknowledged.
        let offered = offer(&mut d, A, now).unwrap();
        let at = |ip: Ipv4Addr| SocketAddrV4::new(ip, 68);
        d.handle(
            &from_address(A, MessageType::Release, offered, vec![]),
            at(offered),
            now,
        );
        assert_eq!(d.lease_of(&A), Some(offered));
        let ip = bind(&mut d, A, now);
        let spoofs = [
            // From elsewhere (a broadcast from no address, another host).
            (ip, vec![], FROM),
            (ip, vec![], at(Ipv4Addr::new(10, 248, 1, 50))),
            // Another address in ciaddr.
            (Ipv4Addr::new(10, 248, 1, 50), vec![], at(ip)),
            // To another server.
            (
                ip,
                vec![DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 248, 1, 9))],
                at(ip),
            ),
        ];
        for (ciaddr, opts, from) in spoofs {
            d.handle(
                &from_address(A, MessageType::Release, ciaddr, opts),
                from,
                now,
            );
            assert_eq!(d.address_of(&A), Some(ip), "{ciaddr} from {from}");
        }
        d.handle(
            &from_address(
                A,
                MessageType::Release,
                ip,
                vec![DhcpOption::ServerIdentifier(SERVER)],
            ),
            at(ip),
            now,
        );
        assert_eq!(d.lease_of(&A), None);
        assert!(d.leases(now).is_empty(), "released, not quarantined");
    }

    #[test]
    fn a_mac_over_its_rate_gets_no_answer_until_its_bucket_refills() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None), (B, "n1".to_owned(), None)]);
        let now = Instant::now();
        for i in 0..16 {
            assert!(offer(&mut d, A, now).is_some(), "datagram {i}");
        }
        assert!(offer(&mut d, A, now).is_none());
        // Another MAC is not held back by A.
        assert!(offer(&mut d, B, now).is_some());
        // Two a second: one after half a second, then none.
        let t = now + Duration::from_millis(500);
        assert!(offer(&mut d, A, t).is_some());
        assert!(offer(&mut d, A, t).is_none());
        let t = now + Duration::from_secs(1);
        assert!(offer(&mut d, A, t).is_some());
        // After long enough, the whole burst again.
        let t = now + Duration::from_secs(60);
        assert_eq!(
            (0..20).filter(|_| offer(&mut d, A, t).is_some()).count(),
            16
        );

        // The global limit, and a datagram over it changes nothing.
        let mut c = cfg(full());
        c.discovery = true;
        c.limits.global_burst = 4;
        c.limits.global_rate = 1;
        let mut d = Dhcp::new(c);
        let macs: Vec<Mac> = (0..5u8).map(|i| [2, 0, 0, 0, 2, i]).collect();
        for m in &macs[..4] {
            assert!(offer(&mut d, *m, now).is_some());
        }
        assert!(offer(&mut d, macs[4], now).is_none());
        assert_eq!(d.lease_of(&macs[4]), None);
        assert!(offer(&mut d, macs[4], now + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn the_rate_table_stays_bounded() {
        let mut c = cfg(full());
        c.discovery = true;
        c.limits.tracked_macs = 8;
        c.limits.discovery_share = 100;
        let mut d = Dhcp::new(c);
        let now = Instant::now();
        for i in 0..40u8 {
            assert!(offer(&mut d, [2, 0, 0, 0, 3, i], now).is_some());
            assert!(d.buckets.len() <= 8);
        }
    }

    #[test]
    fn macs_ferric_does_not_know_take_at_most_their_share_of_the_pool() {
        let mut c = cfg(pool(100, 119));
        c.discovery = true;
        let mut d = Dhcp::new(c);
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        let strangers: Vec<Mac> = (0..30u8).map(|i| [2, 0, 0, 0, 4, i]).collect();
        let served = strangers
            .iter()
            .filter(|m| offer(&mut d, **m, now).is_some())
            .count();
        assert_eq!(served, 10, "half of 20");
        // Nor by asking for a free address straight away (a client rebooting).
        let nak = d
            .handle(
                &request(
                    [2, 0, 0, 0, 5, 0],
                    MessageType::Request,
                    vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                        10, 248, 1, 118,
                    ))],
                ),
                FROM,
                now,
            )
            .unwrap();
        assert_eq!(nak.message.opts().msg_type(), Some(MessageType::Nak));
        // An enrolled node still finds an address.
        assert!(bind(&mut d, A, now).octets()[3] >= 100);
        // Offers never requested go back after a minute, and so does the share.
        let later = now + Duration::from_secs(61);
        assert!(offer(&mut d, [2, 0, 0, 0, 5, 1], later).is_some());
    }

    #[test]
    fn an_offer_not_taken_goes_back_after_a_minute_and_a_discover_keeps_a_bound_lease() {
        let mut d = Dhcp::new(cfg(pool(100, 100)));
        d.set_known([(A, "n0".to_owned(), None), (B, "n1".to_owned(), None)]);
        let now = Instant::now();
        assert_eq!(offer(&mut d, A, now), Some(Ipv4Addr::new(10, 248, 1, 100)));
        assert_eq!(offer(&mut d, B, now + Duration::from_secs(30)), None);
        let t = now + Duration::from_secs(61);
        let ip = bind(&mut d, B, t);
        assert_eq!(ip, Ipv4Addr::new(10, 248, 1, 100));
        // A DISCOVER from the bound MAC (its next boot stage) neither unbinds nor shortens it.
        assert_eq!(offer(&mut d, B, t), Some(ip));
        assert_eq!(
            d.leases(t)[0],
            LeaseRecord {
                mac: B,
                ip,
                remaining: Duration::from_secs(3600),
                kind: LeaseKind::Bound
            }
        );
    }

    #[test]
    fn leases_survive_a_restart_through_leases_and_restore() {
        let mut c = cfg(pool(100, 119));
        c.discovery = true;
        let c2 = c.clone();
        let mut d = Dhcp::new(c);
        let now = Instant::now();
        let ip = bind(&mut d, A, now);
        let offered = offer(&mut d, B, now).unwrap();
        let stranger: Mac = [2, 0, 0, 0, 0, 7];
        let declined = bind(&mut d, stranger, now);
        d.handle(
            &request(stranger, MessageType::Decline, ours(declined)),
            FROM,
            now,
        );
        let records = d.leases(now);
        assert_eq!(records.len(), 3);
        let later = now + Duration::from_secs(10);
        let mut again = Dhcp::new(c2);
        let junk = [
            // Outside the pool, with no time left, for an address already taken.
            LeaseRecord {
                mac: [2, 0, 0, 0, 0, 8],
                ip: Ipv4Addr::new(10, 248, 1, 5),
                remaining: Duration::from_secs(100),
                kind: LeaseKind::Bound,
            },
            LeaseRecord {
                mac: [2, 0, 0, 0, 0, 9],
                ip: Ipv4Addr::new(10, 248, 1, 110),
                remaining: Duration::ZERO,
                kind: LeaseKind::Bound,
            },
            LeaseRecord {
                mac: [2, 0, 0, 0, 0, 10],
                ip,
                remaining: Duration::from_secs(100),
                kind: LeaseKind::Bound,
            },
        ];
        again.restore(records.iter().copied().chain(junk), now);
        assert!(again.take_changed());
        assert_eq!(again.leases(now), records);
        assert_eq!(again.address_of(&A), Some(ip));
        // The bound MAC keeps its address; nobody else is given it or the quarantined one.
        assert_eq!(bind(&mut again, A, later), ip);
        let c: Mac = [2, 0, 0, 0, 0, 11];
        let fresh = offer(&mut again, c, later).unwrap();
        assert!(![ip, offered, declined].contains(&fresh));
    }

    #[test]
    fn address_of_is_the_acknowledged_lease_or_in_proxy_mode_what_was_asked_for() {
        let mut d = Dhcp::new(cfg(full()));
        d.set_known([(A, "n0".to_owned(), None)]);
        let now = Instant::now();
        offer(&mut d, A, now);
        assert_eq!(d.address_of(&A), None, "only offered");
        let ip = bind(&mut d, A, now);
        assert_eq!(d.address_of(&A), Some(ip));

        let mut c = cfg(Mode::Proxy);
        c.limits.tracked_macs = 2;
        let mut d = Dhcp::new(c);
        let c3: Mac = [0x52, 0x54, 0, 0, 0, 3];
        d.set_known([A, B, c3].map(|m| (m, mac_string(&m), None)));
        let asked = Ipv4Addr::new(192, 168, 7, 40);
        // The ramdisk's own client (a plain client, not answered) asking the other server.
        assert!(
            d.handle(
                &request(
                    A,
                    MessageType::Request,
                    vec![
                        DhcpOption::RequestedIpAddress(asked),
                        DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 168, 7, 1)),
                    ],
                ),
                FROM,
                now,
            )
            .is_none()
        );
        assert_eq!(d.address_of(&A), Some(asked));
        // Renewing: no option 50, the address in ciaddr.
        let renewed = Ipv4Addr::new(192, 168, 7, 41);
        d.handle(
            &from_address(A, MessageType::Request, renewed, vec![]),
            SocketAddrV4::new(renewed, 68),
            now,
        );
        assert_eq!(d.address_of(&A), Some(renewed));
        // A MAC Ferric does not know is not noted; the notes stay within the limit.
        let stranger: Mac = [2, 0, 0, 0, 0, 1];
        d.handle(
            &request(stranger, MessageType::Request, ours(asked)),
            FROM,
            now,
        );
        assert_eq!(d.address_of(&stranger), None);
        for (i, m) in [B, c3].into_iter().enumerate() {
            let t = now + Duration::from_secs(1 + i as u64);
            d.handle(&request(m, MessageType::Request, ours(asked)), FROM, t);
        }
        assert_eq!(d.asked.len(), 2);
        assert_eq!(d.address_of(&A), None, "the oldest note went");
        assert_eq!(d.address_of(&c3), Some(asked));
    }
}
