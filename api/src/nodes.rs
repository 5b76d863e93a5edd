//! Nodes: their views, bootstrap tokens, deletion.

use crate::bmcs::BmcView;
use crate::lifecycle::LifecycleView;
use crate::model::{NodeRole, ProvisionState};
use crate::plans::PlanView;
use crate::records::{BmcRecord, BootMark, TelemetryRecord};
use ferric_proto::msg::Capability;
use serde::{Deserialize, Serialize};

/// A node with its link state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// What it is.
    pub role: NodeRole,
    /// Enrolled at, ms since the epoch.
    pub enrolled_at_ms: i64,
    /// When the agent last sent anything (a message, a telemetry sample), ms since the epoch:
    /// live while it is connected, from the store once it is not.
    pub last_seen_ms: Option<i64>,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
    /// SHA-256 of the hardware inventory its agent announced (hex), so that a change shows.
    #[serde(default)]
    pub inventory_sha256: Option<String>,
    /// Connected now.
    pub connected: bool,
    /// Bare-metal nodes: power state last read (`on`/`off`), or why reads fail.
    #[serde(default)]
    pub power: Option<String>,
    /// Bare-metal nodes: what changed behind Ferric's back.
    #[serde(default)]
    pub flag: Option<String>,
    /// Bare-metal nodes: provision state.
    #[serde(default)]
    pub state: Option<ProvisionState>,
}

/// `GET /v1/nodes/{name}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeDetail {
    /// The node.
    pub node: NodeView,
    /// Recent plans, newest first.
    pub plans: Vec<PlanView>,
    /// Newest telemetry sample.
    pub telemetry: Option<TelemetryRecord>,
    /// Bare-metal nodes: the BMC.
    #[serde(default)]
    pub bmc: Option<BmcView>,
    /// What the node's ramdisk found when it last inspected the machine.
    #[serde(default)]
    pub inspection: Option<ferric_proto::msg::Inspection>,
    /// When that was, ms since the epoch (agent clock).
    #[serde(default)]
    pub inspected_at_ms: Option<i64>,
    /// The stages its network boots reached, oldest first.
    #[serde(default)]
    pub boot: Vec<BootMark>,
    /// A bare-metal node's lifecycle: state, step, deadline, last error, transitions.
    #[serde(default)]
    pub lifecycle: Option<LifecycleView>,
}

/// A node's telemetry: an agent's host samples, or a bare-metal node's BMC reads.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum NodeTelemetry {
    /// Samples of an agent's host (`sample`).
    Host(Vec<TelemetryRecord>),
    /// Reads of a bare-metal node's BMC (`bmc`).
    Bmc(Vec<BmcRecord>),
}

// By hand: an empty list is either kind, so the schema is `anyOf` (the derive's `oneOf`
// would call `[]` ambiguous).
impl utoipa::PartialSchema for NodeTelemetry {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::Ref;
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder};
        AnyOfBuilder::new()
            .item(ArrayBuilder::new().items(Ref::from_schema_name("TelemetryRecord")))
            .item(ArrayBuilder::new().items(Ref::from_schema_name("BmcRecord")))
            .description(Some(
                "An agent's host samples, or a bare-metal node's BMC reads, oldest first.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for NodeTelemetry {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "TelemetryRecord".into(),
            <TelemetryRecord as utoipa::PartialSchema>::schema(),
        ));
        <TelemetryRecord as utoipa::ToSchema>::schemas(schemas);
        schemas.push((
            "BmcRecord".into(),
            <BmcRecord as utoipa::PartialSchema>::schema(),
        ));
        <BmcRecord as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

/// A created bootstrap token. The secret is shown once and only its hash is stored.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// `ID.SECRET`.
    pub token: String,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
    /// CA fingerprint to pin.
    pub ca_hash: String,
}

/// What `DELETE /v1/nodes/{name}` removed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedNode {
    /// The node as it was.
    pub node: NodeView,
    /// Its BMC, for a bare-metal node enrolled by one.
    #[serde(default)]
    pub bmc: Option<BmcView>,
    /// Its plans removed with their events.
    pub plans: u64,
    /// Guests placed on it, removed from the inventory (a host's guests keep running there
    /// until someone stops them: the coordinator no longer knows the host).
    #[serde(default)]
    pub guests: Vec<String>,
    /// Certificates issued to the name below this generation are refused from now on.
    pub cert_generation: i64,
}

/// `GET /v1/ca`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaHash {
    /// SHA-256 of the CA certificate (DER), hex: what `ferric agent enroll --ca-hash` pins.
    pub ca_hash: String,
}
