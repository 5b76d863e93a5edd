//! Nodes: what the API shows of them (link, liveness, power), bootstrap tokens and the
//! enrollment that uses one, and an agent's hello.

use super::{ConductorError, Result, invalid};
use crate::Shared;
use crate::model::check_node_name;
use crate::store::{BmcRow, EnrollProblem, NodeRow, PlanRow, TokenProblem};
pub use ferric_api::nodes::{
    CreateToken, CreatedToken, DeletedNode, NodeDetail, NodeTelemetry, NodeView,
};
use ferric_proto::msg::{EnrollRefusal, EnrollRequest, EnrollResponse};
use rand::Rng;
use std::collections::HashMap;
use std::time::Duration;

/// Longest bootstrap token lifetime.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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
            .into_iter()
            .map(super::plans::PlanView::from)
            .collect(),
        telemetry: s.hub.telemetry.latest(name),
    })
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
