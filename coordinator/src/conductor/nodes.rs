//! Nodes: what the API shows of them (link, liveness, power), bootstrap tokens and the
//! enrollment that uses one, and an agent's hello.

use super::{ConductorError, Result, invalid};
use crate::Shared;
use crate::hub::{BmcRecord, TelemetryRecord};
use crate::model::{NodeRole, check_node_name};
use crate::store::{BmcRow, EnrollProblem, NodeRow, PlanRow, TokenProblem};
use ferric_proto::msg::{Capability, EnrollRefusal, EnrollRequest, EnrollResponse};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Longest bootstrap token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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
    pub state: Option<crate::model::ProvisionState>,
}

/// `GET /v1/nodes/{name}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeDetail {
    /// The node.
    pub node: NodeView,
    /// Recent plans, newest first.
    pub plans: Vec<serde_json::Value>,
    /// Newest telemetry sample.
    pub telemetry: Option<serde_json::Value>,
    /// Bare-metal nodes: the BMC.
    #[serde(default)]
    pub bmc: Option<super::bmcs::BmcView>,
    /// What the node's ramdisk found when it last inspected the machine.
    #[serde(default)]
    pub inspection: Option<ferric_proto::msg::Inspection>,
    /// When that was, ms since the epoch (agent clock).
    #[serde(default)]
    pub inspected_at_ms: Option<i64>,
    /// The stages its network boots reached, oldest first.
    #[serde(default)]
    pub boot: Vec<crate::hub::BootMark>,
    /// A bare-metal node's lifecycle: state, step, deadline, last error, transitions.
    #[serde(default)]
    pub lifecycle: Option<super::lifecycle::LifecycleView>,
}

/// The view of a node (with its BMC's row, for a bare-metal node).
pub fn view(s: &Shared, n: NodeRow, bmc: Option<&BmcRow>) -> NodeView {
    let heard = s.hub.links.last_heard(&n.name);
    NodeView {
        connected: s.hub.links.connected_since(&n.name).is_some(),
        power: bmc.and_then(super::bmcs::power_shown),
        flag: bmc.and_then(|b| b.flag.clone()),
        name: n.name,
        role: n.role,
        enrolled_at_ms: n.enrolled_at_ms,
        last_seen_ms: heard.or(n.last_seen_ms),
        capabilities: n.capabilities,
        inventory_sha256: n.inventory_sha256,
        state: n.provision_state,
    }
}

/// Every node the caller sees.
pub async fn list(s: &Shared, caller: &super::access::Caller) -> Result<Vec<NodeView>> {
    let mut nodes = s.store.nodes().await?;
    nodes.retain(|n| caller.sees(&n.project));
    let bmcs: HashMap<String, BmcRow> = s
        .store
        .bmcs(None)
        .await?
        .into_iter()
        .map(|b| (b.node.clone(), b))
        .collect();
    Ok(nodes
        .into_iter()
        .map(|n| {
            let b = bmcs.get(&n.name);
            view(s, n, b)
        })
        .collect())
}

/// A node, stored.
pub async fn find(store: &crate::store::Store, name: &str) -> Result<NodeRow> {
    store
        .node(name)
        .await?
        .ok_or_else(|| ConductorError::UnknownNode(name.to_owned()))
}

/// One node with its recent plans (as `caller` may see them), newest telemetry and BMC.
pub async fn show(s: &Shared, caller: &super::access::Caller, name: &str) -> Result<NodeDetail> {
    let n = find(&s.store, name).await?;
    let mut plans: Vec<PlanRow> = s.store.plans(Some(name), 10).await?;
    plans
        .iter_mut()
        .for_each(|p| super::plans::redact_for(caller, p));
    let bmc = s.store.bmc(name).await?;
    let inspection = s.store.inspection(name).await?;
    let lifecycle = match s.store.lifecycle(name).await? {
        Some(row) => Some(super::lifecycle::view(&s.env(), row).await?),
        None => None,
    };
    Ok(NodeDetail {
        lifecycle,
        inspected_at_ms: inspection.as_ref().map(|(_, at)| *at),
        boot: s.hub.boot_stages.of(name),
        inspection: inspection.map(|(i, _)| i),
        node: view(s, n, bmc.as_ref()),
        bmc: bmc.map(|b| super::bmcs::view(s, b)),
        plans: plans
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect(),
        telemetry: s
            .hub
            .telemetry
            .latest(name)
            .and_then(|t| serde_json::to_value(t).ok()),
    })
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

/// What arrived from or about `name` after `after_ms`.
pub async fn telemetry(s: &Shared, name: &str, after_ms: i64) -> Result<NodeTelemetry> {
    let node = find(&s.store, name).await?;
    Ok(if node.role.has_agent() {
        NodeTelemetry::Host(s.hub.telemetry.since(name, after_ms))
    } else {
        NodeTelemetry::Bmc(s.hub.bmc.since(name, after_ms))
    })
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

/// A single-use bootstrap token for enrolling one agent.
/// The agent it enrolls joins `project`.
pub async fn create_token(s: &Shared, project: &str, req: CreateToken) -> Result<CreatedToken> {
    let ttl = Duration::from_secs(req.ttl_secs);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(invalid(format!(
            "ttl must be between 1s and {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    let (id, secret) = {
        let mut rng = rand::rng();
        let id: String = (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let mut secret = [0u8; 16];
        rng.fill(&mut secret);
        (id, hex::encode(secret))
    };
    let now = crate::now_ms();
    let expires = now + ttl.as_millis() as i64;
    s.store
        .create_token(
            &id,
            &crate::pki::token_secret_hash(&secret),
            project,
            now,
            expires,
        )
        .await?;
    tracing::info!(token_id = %id, expires_at_ms = expires, "bootstrap token created");
    Ok(CreatedToken {
        token: format!("{id}.{secret}"),
        expires_at_ms: expires,
        ca_hash: s.pki.ca_hash(),
    })
}

fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// An enrollment request from `from`: the token checked and used up, the CSR signed for the
/// node — or a refusal that names why, with nothing changed. Per-boot tokens (`b` and nine
/// more characters) are a ramdisk's ([`super::network_boot::enroll`]).
pub async fn enroll(
    s: &Shared,
    req: &EnrollRequest,
    from: std::net::IpAddr,
) -> Result<EnrollResponse> {
    use EnrollRefusal as R;
    let refuse = |r| Ok(EnrollResponse::Refused(r));
    let Some((id, secret)) = split_token(&req.token) else {
        return refuse(R::InvalidToken);
    };
    let hash = crate::pki::token_secret_hash(secret);
    if id.starts_with('b') && id.len() == 10 {
        return super::network_boot::enroll(s, req, id, &hash, from).await;
    }
    let now = crate::now_ms();
    // Check everything that needs no state change first.
    match s.store.check_token(id, &hash, now).await? {
        Ok(()) => {}
        Err(TokenProblem::Invalid) => return refuse(R::InvalidToken),
        Err(TokenProblem::Used) => return refuse(R::TokenUsed),
        Err(TokenProblem::Expired) => return refuse(R::TokenExpired),
    }
    if let Err(e) = check_node_name(&req.node) {
        return refuse(R::BadNodeName(format!("`{}` {e}", req.node)));
    }
    // A name used before starts where its deleted node's certificates stopped.
    let generation = s.store.retired_generation(&req.node).await?;
    let cert = match s.pki.sign_client_for(
        &req.csr_der,
        &req.node,
        crate::pki::CLIENT_CERT_VALIDITY,
        generation,
    ) {
        Ok(c) => c,
        Err(e) => return refuse(R::BadCsr(e.to_string())),
    };
    match s
        .store
        .enroll(id, &hash, &req.node, req.role.into(), now)
        .await?
    {
        Ok(()) => {
            // A new node: certificates of a deleted one of the same name stay refused.
            s.pki.revocations().set(&req.node, generation);
            Ok(EnrollResponse::Enrolled {
                cert_der: cert.to_vec(),
                ca_der: s.pki.ca_der().to_vec(),
            })
        }
        Err(EnrollProblem::NodeExists) => refuse(R::AlreadyEnrolled(req.node.clone())),
        Err(EnrollProblem::Token(TokenProblem::Used)) => refuse(R::TokenUsed),
        Err(EnrollProblem::Token(TokenProblem::Expired)) => refuse(R::TokenExpired),
        Err(EnrollProblem::Token(TokenProblem::Invalid)) => refuse(R::InvalidToken),
    }
}

/// What `DELETE /v1/nodes/{name}` removed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletedNode {
    /// The node as it was.
    pub node: NodeView,
    /// Its BMC, for a bare-metal node enrolled by one.
    #[serde(default)]
    pub bmc: Option<super::bmcs::BmcView>,
    /// Its plans removed with their events.
    pub plans: u64,
    /// Guests placed on it, removed from the inventory (a host's guests keep running there
    /// until someone stops them: the coordinator no longer knows the host).
    #[serde(default)]
    pub guests: Vec<String>,
    /// Certificates issued to the name below this generation are refused from now on.
    pub cert_generation: i64,
}

/// Deletes any node — an agent, a bare-metal node, a discovered one — with what belongs to
/// it; the machine is not touched. Refused while a BMC plan for it runs, and for an agent
/// that drives other nodes' BMCs (they would be left without one: the refusal names them).
/// Its certificates are refused from now on and its link is closed.
pub async fn delete(s: &Shared, name: &str) -> Result<DeletedNode> {
    let n = find(&s.store, name).await?;
    let driven: Vec<String> = s
        .store
        .bmcs(Some(name))
        .await?
        .into_iter()
        .map(|b| b.node)
        .collect();
    if !driven.is_empty() {
        return Err(ConductorError::Busy(format!(
            "agent `{name}` drives the BMCs of {}: enroll them again --via another agent, or \
             delete them first",
            driven.join(", ")
        )));
    }
    let bmc = s.store.bmc(name).await?;
    if let Some(b) = &bmc
        && super::bmcs::plan_running(&s.store, &b.via, name, false).await?
    {
        return Err(ConductorError::Busy(format!(
            "node `{name}` has a BMC plan still running on `{}`",
            b.via
        )));
    }
    let view_before = view(s, n, bmc.as_ref());
    let bmc_view = bmc.clone().map(|b| super::bmcs::view(s, b));
    let removed = s
        .store
        .delete_node(name, crate::now_ms())
        .await?
        .ok_or_else(|| ConductorError::UnknownNode(name.to_owned()))?;
    s.pki.revocations().set(name, removed.cert_generation);
    s.hub.links.disconnect(name, b"the node was deleted");
    s.hub.bmc.forget(name);
    s.hub.consoles.forget(name);
    if let Some(b) = &bmc {
        s.hub.links.push_bmcs(&b.via);
    }
    tracing::info!(node = %name, plans = removed.plans, guests = removed.guests.len(), "node deleted");
    Ok(DeletedNode {
        node: view_before,
        bmc: bmc_view,
        plans: removed.plans,
        guests: removed.guests,
        cert_generation: removed.cert_generation,
    })
}
