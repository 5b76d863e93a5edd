//! The coordinator's rules: what may be asked, what it becomes (stored plans pushed to the
//! agents that carry them out), and what the agents' reports mean. The HTTP API and the agent
//! link both call in here; handlers only translate HTTP, and the link only turns session
//! events into calls. Nothing here knows HTTP or QUIC.
//!
//! * [`plans`]: plan files, validation, storing and pushing plans (also the ones the
//!   coordinator makes itself), plans an agent is too old for;
//! * [`nodes`]: the node views (link, liveness, power), bootstrap tokens;
//! * [`bmcs`]: bare-metal nodes behind BMCs and the actions on them;
//! * [`boot`]: network boot — boot scripts, per-boot tokens, ramdisks that connect and inspect;
//! * [`events`]: step events from agents, stored once, their outputs acted on;
//! * [`power_sync`]: what agents read from BMCs, and what power steps leave;
//! * [`guests`] with [`placement`]: guests as desired state on hypervisor hosts;
//! * [`images`]: the image store's files and the images it holds;
//! * [`metrics`]: the fleet as Prometheus series for `/metrics`;
//! * [`lifecycle`]: bare-metal nodes from enroll to active and back, every wait with a deadline.

pub mod access;
pub mod bmcs;
pub mod config_drive;
pub mod guests;
pub mod images;
pub mod lifecycle;
pub mod metrics;
pub mod network_boot;
pub mod nodes;
pub mod placement;
pub mod plans;
pub mod power_sync;
pub mod reports;

use crate::store::StoreError;

/// Why the conductor refused or could not do something; each variant has a stable
/// [`code`](ConductorError::code) that the API reports.
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    /// The request is malformed or asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// A plan does not validate.
    #[error(transparent)]
    InvalidPlan(#[from] plans::PlanFileError),
    /// No such node.
    #[error("node `{0}` is not enrolled")]
    UnknownNode(String),
    /// No such plan.
    #[error("plan {0} does not exist")]
    UnknownPlan(u64),
    /// No such guest.
    #[error("guest `{0}` does not exist")]
    UnknownGuest(String),
    /// No such image.
    #[error("{0}")]
    UnknownImage(String),
    /// The node exists already.
    #[error("node `{0}` is already enrolled")]
    NodeExists(String),
    /// The guest exists already.
    #[error("guest `{0}` already exists")]
    GuestExists(String),
    /// Another operation holds the object.
    #[error("{0}")]
    Busy(String),
    /// A provision verb that does not apply in the node's state.
    #[error(transparent)]
    WrongState(#[from] lifecycle::rules::Refused),
    /// No host can take the guest.
    #[error(transparent)]
    NoHost(#[from] placement::NoHost),
    /// The store failed.
    #[error("store error: {}", crate::error_chain(.0))]
    Store(StoreError),
    /// A secret could not be sealed or opened.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// The caller's role does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// No such project (or not one the caller may see).
    #[error("project `{0}` does not exist")]
    UnknownProject(String),
    /// The project exists already.
    #[error("project `{0}` already exists")]
    ProjectExists(String),
    /// No such API token (or not one the caller may see).
    #[error("API token `{0}` does not exist")]
    UnknownToken(String),
    /// The project's quota does not allow it.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A MAC given is another node's.
    #[error("{0}")]
    MacTaken(String),
    /// A deploy's user data is over the config drive's limit.
    #[error(transparent)]
    UserDataTooLarge(config_drive::DriveError),
}

impl ConductorError {
    /// A stable, machine-readable name of the cause.
    pub fn code(&self) -> &'static str {
        match self {
            ConductorError::Invalid(_) => "invalid_request",
            ConductorError::InvalidPlan(e) if e.too_large() => "plan_too_large",
            ConductorError::InvalidPlan(_) => "invalid_plan",
            ConductorError::UnknownNode(_) => "unknown_node",
            ConductorError::UnknownPlan(_) => "unknown_plan",
            ConductorError::UnknownGuest(_) => "unknown_guest",
            ConductorError::UnknownImage(_) => "unknown_image",
            ConductorError::NodeExists(_) => "node_exists",
            ConductorError::GuestExists(_) => "guest_exists",
            ConductorError::Busy(_) => "busy",
            ConductorError::WrongState(_) => "wrong_state",
            ConductorError::NoHost(_) => "no_host_fits",
            ConductorError::Store(_) => "store_error",
            ConductorError::Secrets(_) => "secrets_error",
            ConductorError::Forbidden(_) => "forbidden",
            ConductorError::UnknownProject(_) => "unknown_project",
            ConductorError::ProjectExists(_) => "project_exists",
            ConductorError::UnknownToken(_) => "unknown_token",
            ConductorError::QuotaExceeded(_) => "quota_exceeded",
            ConductorError::MacTaken(_) => "mac_taken",
            ConductorError::UserDataTooLarge(_) => "user_data_too_large",
        }
    }
}

impl From<StoreError> for ConductorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownNode(n) => ConductorError::UnknownNode(n),
            StoreError::NodeExists(n) => ConductorError::NodeExists(n),
            other => ConductorError::Store(other),
        }
    }
}

/// What the conductor's rules act through, and nothing more: the store, the hub (to push to
/// agents and read what they report), the clock, the lifecycle's timeouts and lock, and the
/// boot services when they run. Tests build one from a store in a temporary directory, a hub
/// and a clock they move by hand.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The store.
    pub store: &'a crate::store::Store,
    /// Connected agents and what they reported.
    pub hub: &'a crate::hub::Hub,
    /// The clock.
    pub clock: &'a dyn crate::clock::Clock,
    /// How long lifecycle waits may last.
    pub timeouts: &'a lifecycle::Timeouts,
    /// Taken while a bare-metal node's lifecycle moves.
    pub lifecycle: &'a tokio::sync::Mutex<()>,
    /// The boot services' site, when they run.
    pub boot: Option<&'a network_boot::BootSite>,
}

impl Env<'_> {
    /// Now, on the rules' clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// A conductor result.
pub type Result<T> = std::result::Result<T, ConductorError>;

/// A request error with its message.
pub(crate) fn invalid(msg: impl Into<String>) -> ConductorError {
    ConductorError::Invalid(msg.into())
}

#[cfg(test)]
mod tests;
