//! What can go wrong building, driving or removing a rack.

use std::path::PathBuf;

/// A lab result.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Why a lab operation failed. Each message names what failed (the rack, node, file or
/// command); the cause, where there is one, is its `source`.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A rack name `ferric lab` cannot use (it names a namespace and host interfaces).
    #[error("rack name `{0}` must be 1 to 10 lowercase letters, digits or hyphens")]
    BadName(String),
    /// A rack size out of range.
    #[error("a rack holds 1 to 200 nodes, not {0}")]
    BadNodeCount(u32),
    /// An accelerator QEMU is not asked for here.
    #[error("accelerator `{0}` is not auto, kvm or tcg")]
    BadAccel(String),
    /// A disk QEMU cannot make.
    #[error("disk of node {0}")]
    BadDisk(String),
    /// A node option given for more nodes than the rack has.
    #[error("{0}")]
    BadNodeOption(String),
    /// A `bmc-loss` share above 100 %.
    #[error("loss must be 0 to 100 percent, not {0}")]
    BadLoss(u32),
    /// The rack's directory holds a rack already.
    #[error("rack `{name}` exists at {} (ferric lab down --name {name} first)", dir.display())]
    RackExists {
        /// Rack.
        name: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The rack's network namespace exists without its rack file.
    #[error("network namespace {netns} exists (left over? ferric lab down --name {name})")]
    NetnsExists {
        /// Namespace.
        netns: String,
        /// Rack.
        name: String,
    },
    /// A program the lab runs is missing.
    #[error("`{0}` is not installed (Debian packages openipmi, qemu-system-x86, iproute2)")]
    MissingTool(&'static str),
    /// OVMF is missing.
    #[error("UEFI nodes need OVMF ({0}; Debian package ovmf)")]
    MissingFirmware(&'static str),
    /// Every subnet pair the lab may take is used by an interface of this host.
    #[error("every lab subnet 10.247.20-219.0/24 is in use")]
    NoFreeSubnet,
    /// There is no rack file (`rack.json`) in the directory.
    #[error("no rack at {} (cannot read {})", dir.display(), file.display())]
    NoRack {
        /// Rack directory.
        dir: PathBuf,
        /// Its rack file.
        file: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// The rack file does not parse.
    #[error("{} is not a rack file", file.display())]
    BadRackFile {
        /// Rack file.
        file: PathBuf,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// A node name the rack does not hold.
    #[error("rack `{rack}` has no node `{node}`")]
    UnknownNode {
        /// Rack.
        rack: String,
        /// Node asked for.
        node: String,
    },
    /// Building a rack failed part way; what it had made was removed.
    #[error("building rack `{rack}` failed; removed what was made")]
    Build {
        /// Rack.
        rack: String,
        /// What failed.
        #[source]
        source: Box<LabError>,
    },
    /// A program could not be started.
    #[error("cannot run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A BMC certificate could not be made or loaded.
    #[error("BMC certificate: {0}")]
    Certificate(String),
    /// A node's `ipmi_sim` did not bind its LAN socket in time.
    #[error("the BMC of {node} did not come up: {log}")]
    BmcNotUp {
        /// Node.
        node: String,
        /// Its log.
        log: String,
    },
    /// The node's BMC process is not running (a fault needs it).
    #[error("the BMC of {0} is not running")]
    BmcNotRunning(String),
    /// The rack's relay did not serve every BMC address in time.
    #[error("the BMC relay did not come up: {log}")]
    RelayNotUp {
        /// Its log.
        log: String,
    },
    /// QEMU refused to start a node.
    #[error("QEMU for {node} failed: {log}")]
    Qemu {
        /// Node.
        node: String,
        /// QEMU's log.
        log: String,
    },
    /// A node's QMP socket could not be used.
    #[error("cannot reach QEMU's QMP socket {}", sock.display())]
    Qmp {
        /// Socket.
        sock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot send {signal} to process {pid}")]
    Signal {
        /// Signal.
        signal: nix::sys::signal::Signal,
        /// Process.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// `ferric lab chassis` was asked something ipmi_sim does not ask.
    #[error("usage: ferric lab chassis --dir DIR --node NODE [0x20] get|set …")]
    ChassisUsage,
    /// A file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What was being done, naming the file or address.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Names what an I/O operation was doing when it failed.
pub(crate) trait IoContext<T> {
    /// Turns an I/O error into [`LabError::Io`] with `what` (called only on failure).
    fn or_lab(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn or_lab(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LabError::Io {
            what: what(),
            source,
        })
    }
}
