//! Messages of the control stream and the telemetry datagrams.
//!
//! The agent dials and opens the control stream with [`AgentMsg::Hello`]; the coordinator
//! answers [`CoordMsg::Welcome`] or [`CoordMsg::Refused`]. Plans and step events then flow on the
//! same ordered stream; telemetry goes as QUIC datagrams ([`TelemetrySample`]).

use crate::plan::{ErrorKind, Plan, PlanId, StepEvent};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use crate::hardware::{
    BmcLan, CpuInfo, DiskInfo, DmiInfo, Inspection, Inventory, NicInfo, SensorReading,
};

/// Role of an agent, announced in `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs on a hypervisor host (guests, volumes, bridges).
    Hypervisor,
    /// Runs on a management host that reaches BMCs.
    Management,
    /// Runs inside the deploy ramdisk of a bare-metal node.
    Ramdisk,
}

impl Role {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hypervisor => "hypervisor",
            Role::Management => "management",
            Role::Ramdisk => "ramdisk",
        }
    }
}

/// What an agent's drivers can do. On the wire (`Hello.capabilities`) each is its name, so
/// that a capability a peer does not know is skipped, not a malformed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Capability {
    /// Bridges and VLANs.
    Network,
    /// Storage pools and volumes.
    Storage,
    /// Guests.
    Compute,
    /// BMCs over their management network.
    Bmc,
    /// The machine the agent runs on (inspection; the ramdisk's disk steps).
    Machine,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Network,
        Capability::Storage,
        Capability::Compute,
        Capability::Bmc,
        Capability::Machine,
    ];

    /// The name sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Network => "network",
            Capability::Storage => "storage",
            Capability::Compute => "compute",
            Capability::Bmc => "bmc",
            Capability::Machine => "machine",
        }
    }

    /// The capability of a name; `None` for one this build does not know.
    pub fn from_name(s: &str) -> Option<Capability> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent knows of one plan, sent in `Hello` so that the coordinator can resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCursor {
    /// The plan.
    pub plan: PlanId,
    /// Number of events the agent has recorded for it (the next seq it will use).
    pub next_seq: u32,
    /// Whether the agent has finished (done or failed) the plan.
    pub finished: bool,
}

/// First message of an agent on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the agent speaks.
    pub version: u16,
    /// Node identity; must equal the identity in the agent's client certificate.
    pub node: String,
    /// Role of the agent.
    pub role: Role,
    /// Capabilities: [`Capability`] names.
    pub capabilities: Vec<String>,
    /// SHA-256 of the agent's hardware inventory, so that the coordinator re-reads it on change.
    pub inventory_digest: [u8; 32],
    /// Plans the agent still holds in its journal.
    pub plans: Vec<PlanCursor>,
}

/// How many events of a plan the coordinator has stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCursor {
    /// The plan.
    pub plan: PlanId,
    /// Events `0..stored` are stored; the agent re-sends from `stored` on.
    pub stored: u32,
}

/// Coordinator's answer to an accepted `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the coordinator will speak on this session.
    pub version: u16,
    /// Session id, for logs.
    pub session: u64,
    /// Telemetry interval in milliseconds.
    pub telemetry_interval_ms: u32,
    /// For each plan the agent reported, how much the coordinator already has.
    pub stored: Vec<StoredCursor>,
}

/// Why the coordinator refused a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RefuseReason {
    /// The agent's protocol version is outside what the coordinator serves.
    #[error("protocol version {agent} is not supported; coordinator serves {min}..={max}")]
    UnsupportedVersion {
        /// Version the agent sent.
        agent: u16,
        /// Oldest served.
        min: u16,
        /// Newest served.
        max: u16,
    },
    /// `Hello.node` differs from the certificate's identity.
    #[error("hello names node `{claimed}` but the client certificate is for `{certified}`")]
    IdentityMismatch {
        /// Node named in Hello.
        claimed: String,
        /// Node in the certificate.
        certified: String,
    },
    /// The node is not enrolled (or was removed).
    #[error("node `{0}` is not enrolled")]
    UnknownNode(String),
    /// The first message was not `Hello`.
    #[error("expected hello as the first message")]
    ExpectedHello,
    /// A ramdisk whose certificate belongs to no network boot Ferric runs for its node.
    #[error("{0}")]
    NotBooting(String),
    /// Another agent with this node's identity is connected and keeps being replaced.
    #[error(
        "another agent with node `{0}`'s identity is connected: two agents share one identity (copy of a state directory?); stop one, or enroll it under a name of its own"
    )]
    DuplicateIdentity(String),
    /// The hello names more plans than an agent's journal holds.
    #[error("hello names {named} plans; at most {max} are taken")]
    TooManyPlans {
        /// Plans named.
        named: u64,
        /// The most taken.
        max: u64,
    },
}

/// Messages from agent to coordinator on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// Opens the session.
    Hello(Hello),
    /// A plan arrived and was written to the journal.
    PlanAccepted {
        /// The plan.
        plan: PlanId,
    },
    /// A step event.
    Event(StepEvent),
    /// What the agent last read from the BMCs it drives (power, sensors), sent after each
    /// poll (protocol version 2).
    BmcStates(Vec<BmcState>),
    /// New lines of the console logs it tails (protocol version 6).
    Console(Vec<ConsoleLines>),
}

/// Messages from coordinator to agent on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMsg {
    /// Session accepted.
    Welcome(Welcome),
    /// Session refused; the coordinator closes the connection after this.
    Refused(RefuseReason),
    /// A plan to run.
    Plan(Plan),
    /// Events `0..=seq` of `plan` are stored; the agent may forget them.
    Ack {
        /// The plan.
        plan: PlanId,
        /// Highest stored sequence number (cumulative).
        seq: u32,
    },
    /// Every BMC this agent drives, with its credentials: the whole set, replacing the one
    /// sent before. Sent after the welcome and whenever the set changes, before any plan that
    /// names one of them (protocol version 2). The agent keeps them in memory only.
    Bmcs(Vec<BmcCredential>),
    /// Every serial console log this agent tails: the whole set, replacing the one sent
    /// before (protocol version 6).
    Consoles(Vec<ConsoleSource>),
    /// Stop `plan`: a step under way is abandoned, none starts, and the plan fails with
    /// `ErrorKind::Cancelled` (protocol version 7). A plan the agent does not hold, or that
    /// ended, is left as it is.
    Cancel {
        /// The plan.
        plan: PlanId,
    },
}

/// A serial console log on the agent's host (where a console server or the lab's QEMU writes
/// a machine's serial port) that the agent tails for the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSource {
    /// The node whose console it is.
    pub name: String,
    /// Absolute path of the log on the agent's host (within the agent's allowed paths).
    pub path: String,
}

/// Longest console line sent, in characters (the rest is cut).
pub const CONSOLE_LINE_MAX: usize = 512;

/// Longest console error sent (or kept), in characters.
pub const CONSOLE_ERROR_MAX: usize = 1024;

/// `s` cut to at most `max` characters (on a character boundary).
pub fn cut_chars(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

/// New lines of one node's console log, as text: terminal escape sequences and control
/// characters removed, at most [`CONSOLE_LINE_MAX`] characters each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleLines {
    /// The node.
    pub name: String,
    /// The lines, oldest first.
    pub lines: Vec<String>,
    /// Why the log cannot be read (missing, outside the allowed paths), when it cannot.
    pub error: Option<String>,
}

/// A console line as a terminal would leave it: after the last carriage return that has text
/// behind it, without escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL`, two-byte
/// `ESC x`) and control characters (a tab becomes a space), cut to [`CONSOLE_LINE_MAX`].
pub fn console_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates up to the final byte (@ to ~).
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // An operating-system command, ended by BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {
                if chars.peek().is_some_and(|n| *n != '\r') {
                    out.clear();
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end().len());
    cut_chars(out, CONSOLE_LINE_MAX)
}

/// A BMC an agent drives: how steps name it, where it is, and how to log in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcCredential {
    /// Name steps use (`bmc` of `BmcPower` and the like): the bare-metal node's name.
    pub name: String,
    /// `ipmi://USER@HOST[:PORT]`.
    pub address: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for BmcCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcCredential")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("password", &"***")
            .finish()
    }
}

/// The management protocol a BMC is reached with (the scheme of its address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BmcScheme {
    /// IPMI 2.0 over LAN (RMCP+), `ipmi://`, UDP port 623 by default.
    Ipmi,
    /// Redfish over HTTPS, `redfish://`, port 443 by default. The BMC's certificate is checked
    /// against the agent's CA bundle or the fingerprint pinned in the address (`?pin=`).
    Redfish,
    /// Redfish over plain HTTP, `redfish+http://`, port 80 by default: for emulators and labs
    /// only, said by its name (the password travels in the clear).
    RedfishHttp,
}

impl BmcScheme {
    /// Every scheme (the longer of two names sharing a prefix first).
    pub const ALL: [BmcScheme; 3] = [BmcScheme::Ipmi, BmcScheme::RedfishHttp, BmcScheme::Redfish];

    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            BmcScheme::Ipmi => "ipmi",
            BmcScheme::Redfish => "redfish",
            BmcScheme::RedfishHttp => "redfish+http",
        }
    }

    /// The port used when the address names none.
    pub fn default_port(self) -> u16 {
        match self {
            BmcScheme::Ipmi => 623,
            BmcScheme::Redfish => 443,
            BmcScheme::RedfishHttp => 80,
        }
    }

    /// Whether this is Redfish (over either transport).
    pub fn is_redfish(self) -> bool {
        matches!(self, BmcScheme::Redfish | BmcScheme::RedfishHttp)
    }
}

/// Why a BMC address was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcAddressError {
    /// Not `SCHEME://USER@HOST[:PORT]` with a known scheme.
    #[error(
        "`{0}` is not ipmi://USER@HOST[:PORT], redfish://USER@HOST[:PORT] or redfish+http://USER@HOST[:PORT]"
    )]
    Scheme(String),
    /// No user.
    #[error("`{0}` names no user (SCHEME://USER@HOST[:PORT])")]
    NoUser(String),
    /// A password inside the URL (it must come from a prompt, a file or the environment).
    #[error(
        "the BMC address holds a password: give it from a prompt, a file or an environment variable, not in the URL"
    )]
    Password,
    /// `[` without `]`.
    #[error("`{0}`: unclosed [")]
    Bracket(String),
    /// A port that is not a number.
    #[error("`{url}`: port `{port}` is not a number")]
    Port {
        /// The address.
        url: String,
        /// What stood for the port.
        port: String,
    },
    /// User or host empty, or a path after the host.
    #[error("`{0}` needs a user and a host")]
    Empty(String),
    /// An option the scheme does not have, or a bad value.
    #[error(
        "`{0}`: the options are ?suite=17|3 for ipmi://, and ?system=ID and ?pin=sha256:HEX (64 digits, https only) for redfish://, joined by &"
    )]
    Query(String),
}

/// A BMC's address, `ipmi://USER@HOST[:PORT][?suite=17|3]` or
/// `redfish[+http]://USER@HOST[:PORT][?system=ID][&pin=sha256:HEX]` (the password always
/// travels apart from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcAddress {
    /// Protocol.
    pub scheme: BmcScheme,
    /// User name.
    pub user: String,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port; the scheme's default when not given.
    pub port: u16,
    /// The IPMI cipher suite to use and no other (`?suite=17` or `?suite=3`), for BMCs that
    /// must not be asked twice; `None`: 17, else 3.
    pub suite: Option<u8>,
    /// The Redfish system to drive (`?system=ID`, the last segment of its URI), for a BMC
    /// that manages several; `None`: the only one in `/redfish/v1/Systems`.
    pub system: Option<String>,
    /// The SHA-256 of the Redfish BMC's certificate (`?pin=sha256:HEX`), trusted instead of a
    /// CA: BMC certificates are self-signed almost everywhere.
    pub pin: Option<[u8; 32]>,
}

impl BmcAddress {
    /// Parses an address; a password in the URL is refused, and so is an option the scheme
    /// does not have.
    pub fn parse(url: &str) -> Result<BmcAddress, BmcAddressError> {
        let (url_part, query) = match url.split_once('?') {
            None => (url, None),
            Some((u, q)) => (u, Some(q)),
        };
        let mut a = Self::parse_plain(url_part)?;
        let bad = || BmcAddressError::Query(url.to_owned());
        for kv in query.map(|q| q.split('&')).into_iter().flatten() {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            match (a.scheme, k) {
                (BmcScheme::Ipmi, "suite") if a.suite.is_none() => {
                    a.suite = Some(match v {
                        "17" => 17,
                        "3" => 3,
                        _ => return Err(bad()),
                    })
                }
                (s, "system") if s.is_redfish() && a.system.is_none() => {
                    if v.is_empty()
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    {
                        return Err(bad());
                    }
                    a.system = Some(v.to_owned());
                }
                (BmcScheme::Redfish, "pin") if a.pin.is_none() => {
                    a.pin = Some(parse_fingerprint(v).ok_or_else(bad)?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(a)
    }

    fn parse_plain(url: &str) -> Result<BmcAddress, BmcAddressError> {
        let (scheme, rest) = BmcScheme::ALL
            .into_iter()
            .find_map(|sc| {
                url.strip_prefix(sc.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|r| (sc, r))
            })
            .ok_or_else(|| BmcAddressError::Scheme(url.to_owned()))?;
        let (user, hostport) = rest
            .rsplit_once('@')
            .ok_or_else(|| BmcAddressError::NoUser(url.to_owned()))?;
        if user.contains(':') {
            return Err(BmcAddressError::Password);
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| BmcAddressError::Bracket(url.to_owned()))?;
            (h, p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p.parse().map_err(|_| BmcAddressError::Port {
                url: url.to_owned(),
                port: p.to_owned(),
            })?,
        };
        if user.is_empty() || host.is_empty() || host.contains('/') {
            return Err(BmcAddressError::Empty(url.to_owned()));
        }
        Ok(BmcAddress {
            scheme,
            user: user.to_owned(),
            host: host.to_owned(),
            port,
            suite: None,
            system: None,
            pin: None,
        })
    }
}

/// `sha256:` and 64 hex digits (either case), or the colon-separated form browsers and
/// `openssl x509 -fingerprint -sha256` print, as 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
    let digits: Vec<u8> = hex_part.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 || hex_part.starts_with(':') {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A fingerprint as `sha256:` and 64 lower-case hex digits.
pub fn fingerprint_text(fp: &[u8; 32]) -> String {
    let mut s = String::from("sha256:");
    for b in fp {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl fmt::Display for BmcAddress {
    /// The canonical spelling, with the port (and an IPv6 host in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.scheme.as_str();
        if self.host.contains(':') {
            write!(f, "{s}://{}@[{}]:{}", self.user, self.host, self.port)?;
        } else {
            write!(f, "{s}://{}@{}:{}", self.user, self.host, self.port)?;
        }
        let mut sep = '?';
        if let Some(n) = self.suite {
            write!(f, "{sep}suite={n}")?;
            sep = '&';
        }
        if let Some(id) = &self.system {
            write!(f, "{sep}system={id}")?;
            sep = '&';
        }
        if let Some(fp) = &self.pin {
            write!(f, "{sep}pin={}", fingerprint_text(fp))?;
        }
        Ok(())
    }
}

/// What an agent last read from one BMC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BmcState {
    /// The BMC's name (as in [`BmcCredential`]).
    pub name: String,
    /// Agent's clock at the read, ms since the Unix epoch.
    pub at_ms: u64,
    /// System power; `None` when the read failed.
    pub power_on: Option<bool>,
    /// Sensor readings (empty when not read this time).
    pub sensors: Vec<SensorReading>,
    /// Why the read failed, naming the BMC: `KIND — MESSAGE`, KIND an [`ErrorKind`] name.
    pub error: Option<String>,
}

impl BmcState {
    /// The text of [`BmcState::error`] for a failure of `kind`.
    pub fn error_text(kind: ErrorKind, message: &str) -> String {
        format!("{kind} — {message}")
    }

    /// The kind of a failed read, when the text names one (earlier agents sent the message
    /// alone).
    pub fn error_kind(&self) -> Option<ErrorKind> {
        let (kind, _) = self.error.as_deref()?.split_once(" — ")?;
        kind.parse().ok()
    }
}

/// Enrollment request, the only message on an `ferric-enroll/1` connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// Bootstrap token, `ID.SECRET`.
    pub token: String,
    /// Node identity wanted.
    pub node: String,
    /// Role of the agent.
    pub role: Role,
    /// PKCS#10 certificate signing request, DER.
    pub csr_der: Vec<u8>,
}

/// Answer to an [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    /// Enrolled: the signed client certificate (DER) and the CA certificate (DER).
    Enrolled {
        /// Client certificate for the node.
        cert_der: Vec<u8>,
        /// The coordinator's CA certificate.
        ca_der: Vec<u8>,
    },
    /// Refused, with the reason.
    Refused(EnrollRefusal),
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum EnrollRefusal {
    /// Token unknown or malformed.
    #[error("bootstrap token is not valid")]
    InvalidToken,
    /// Token already used.
    #[error("bootstrap token was already used")]
    TokenUsed,
    /// Token expired.
    #[error("bootstrap token has expired")]
    TokenExpired,
    /// CSR could not be parsed or its signature is wrong.
    #[error("certificate signing request is not valid: {0}")]
    BadCsr(String),
    /// Node name not acceptable.
    #[error("node name is not valid: {0}")]
    BadNodeName(String),
    /// A node with that name is enrolled already.
    #[error("node `{0}` is already enrolled")]
    AlreadyEnrolled(String),
    /// A per-boot token used outside the network boot it was made for (from another
    /// address than the one DHCP gave the node's MAC).
    #[error("{0}")]
    NotBooting(String),
}

/// A NIC's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NicSample {
    /// Interface name.
    pub name: String,
    /// Bytes received since boot.
    pub rx_bytes: u64,
    /// Bytes sent since boot.
    pub tx_bytes: u64,
}

/// A disk's space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskSample {
    /// Mount point.
    pub mount: String,
    /// Total bytes.
    pub total_bytes: u64,
    /// Available bytes.
    pub available_bytes: u64,
}

/// One guest on a hypervisor host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestSample {
    /// Guest name.
    pub name: String,
    /// Whether it runs.
    pub running: bool,
    /// vCPUs defined.
    pub vcpus: u32,
    /// Memory defined, MiB.
    pub memory_mib: u64,
    /// CPU use since the previous sample, percent of one vCPU times the vCPU count.
    pub cpu_percent: f32,
    /// Memory assigned, bytes.
    pub mem_bytes: u64,
    /// Bytes read from all its disks since it started.
    pub block_rd_bytes: u64,
    /// Bytes written to all its disks since it started.
    pub block_wr_bytes: u64,
    /// Bytes received on all its NICs since it started.
    pub net_rx_bytes: u64,
    /// Bytes sent on all its NICs since it started.
    pub net_tx_bytes: u64,
    /// Disk files of the guest that no longer exist on the host.
    pub missing_disks: Vec<String>,
    /// Size the guest sees of each disk that exists: (path, bytes).
    pub disk_sizes: Vec<(String, u64)>,
}

/// Progress of the step a plan is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepProgress {
    /// The plan.
    pub plan: PlanId,
    /// Step index.
    pub step: u32,
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: Option<u64>,
}

/// One telemetry sample of a node, sent as a datagram every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TelemetrySample {
    /// Per-connection sample counter; newest wins.
    pub seq: u64,
    /// Agent's wall clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// CPU use over the last interval, percent of all cores.
    pub cpu_percent: f32,
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in use, bytes.
    pub mem_used_bytes: u64,
    /// Memory in all, bytes.
    pub mem_total_bytes: u64,
    /// 1-minute load average.
    pub load1: f32,
    /// Disks.
    pub disks: Vec<DiskSample>,
    /// NICs.
    pub nics: Vec<NicSample>,
    /// Running step, if any.
    pub progress: Option<StepProgress>,
    /// Guests on this host (hypervisor agents).
    pub guests: Vec<GuestSample>,
}

#[cfg(test)]
mod console_tests {
    use super::*;

    #[test]
    fn console_text_is_what_a_terminal_leaves() {
        assert_eq!(
            console_text(b"Booting from ROM...\r"),
            "Booting from ROM..."
        );
        assert_eq!(
            console_text(b"\x1b[2J\x1b[01;01H\x1b[=3hSeaBIOS (version 1.16)"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(console_text(b"net0: 10%\rnet0: 55%\rnet0: ok"), "net0: ok");
        assert_eq!(
            console_text(b"\x1b]0;title\x07login:\tok\x00\x08"),
            "login: ok"
        );
        assert_eq!(console_text(b"bad \xff utf8"), "bad \u{fffd} utf8");
        let long = "x".repeat(CONSOLE_LINE_MAX + 50);
        assert_eq!(console_text(long.as_bytes()).len(), CONSOLE_LINE_MAX);
        // A cut lands on a character boundary.
        let wide = "é".repeat(CONSOLE_LINE_MAX + 1);
        assert_eq!(
            console_text(wide.as_bytes()).chars().count(),
            CONSOLE_LINE_MAX
        );
        // An escape cut off at the end of the line is dropped, not kept half.
        assert_eq!(console_text(b"ok\x1b["), "ok");
    }
}

#[cfg(test)]
mod bmc_address_tests {
    use super::*;

    #[test]
    fn a_cipher_suite_may_be_named_and_round_trips() {
        let a = BmcAddress::parse("ipmi://admin@10.0.5.7?suite=17").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.suite),
            ("10.0.5.7", 623, Some(17))
        );
        assert_eq!(a.to_string(), "ipmi://admin@10.0.5.7:623?suite=17");
        assert_eq!(BmcAddress::parse(&a.to_string()).unwrap(), a);
        let v6 = BmcAddress::parse("ipmi://admin@[fd00::7]:6230?suite=3").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.suite),
            ("fd00::7", 6230, Some(3))
        );
        assert_eq!(BmcAddress::parse("ipmi://admin@h").unwrap().suite, None);
        for bad in [
            "ipmi://admin@h?suite=2",
            "ipmi://admin@h?cipher=17",
            "ipmi://admin@h?",
            "ipmi://admin@h?suite=17&suite=3",
            "ipmi://admin@h?system=1",
            "redfish://admin@h?suite=17",
            "redfish://admin@h?pin=sha256:00",
            "redfish+http://admin@h?pin=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "redfish://admin@h?system=a/b",
        ] {
            assert!(
                matches!(BmcAddress::parse(bad), Err(BmcAddressError::Query(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redfish_addresses_carry_a_system_and_a_pin_and_round_trip() {
        let fp = "AB:".repeat(31) + "CD";
        let a = BmcAddress::parse(&format!(
            "redfish://root@bmc7?system=System.Embedded.1&pin={fp}"
        ))
        .unwrap();
        assert_eq!(a.scheme, BmcScheme::Redfish);
        assert_eq!((a.host.as_str(), a.port), ("bmc7", 443));
        assert_eq!(a.system.as_deref(), Some("System.Embedded.1"));
        let mut want = [0xab; 32];
        want[31] = 0xcd;
        assert_eq!(a.pin, Some(want));
        let text = a.to_string();
        assert_eq!(
            text,
            format!(
                "redfish://root@bmc7:443?system=System.Embedded.1&pin=sha256:{}cd",
                "ab".repeat(31)
            )
        );
        assert_eq!(BmcAddress::parse(&text).unwrap(), a);
        let h = BmcAddress::parse("redfish+http://admin@127.0.0.1:8000").unwrap();
        assert_eq!((h.scheme, h.port), (BmcScheme::RedfishHttp, 8000));
        assert_eq!(
            BmcAddress::parse("redfish+http://admin@h").unwrap().port,
            80
        );
        assert_eq!(h.to_string(), "redfish+http://admin@127.0.0.1:8000");
    }
}
