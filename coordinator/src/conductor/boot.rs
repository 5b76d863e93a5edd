//! Network boot of bare-metal nodes: which MACs the boot services answer, the iPXE script a
//! node's iPXE loads (the ramdisk's kernel and initramfs, and a kernel command line with the
//! coordinator's address, the CA fingerprint and a per-boot token), the ramdisk's enrollment
//! with that token, and what happens when a ramdisk connects: it inspects the machine.
//!
//! A per-boot token is bound to one node, used once, valid for a short while, and dead as
//! soon as the node's next script is rendered (the next boot); the ramdisk's certificate
//! lasts a day.

use super::{ConductorError, Result, plans};
use crate::Shared;
use crate::model::BootStage;
use crate::store::BootTokenProblem;
use ferric_proto::msg::{EnrollRefusal, EnrollRequest, EnrollResponse, Inspection, Role};
use ferric_proto::plan::Step;
use rand::Rng;
use std::time::Duration;

/// Lifetime of a ramdisk's client certificate.
pub const RAMDISK_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// What the boot services know of themselves, for rendering scripts.
#[derive(Debug, Clone)]
pub struct BootSite {
    /// Base URL of the boot HTTP server, `http://IP:PORT`.
    pub http_base: String,
    /// Where ramdisks dial the coordinator's link, `IP:PORT`.
    pub link: String,
    /// Extra kernel arguments (consoles).
    pub kernel_args: String,
    /// How long a per-boot token may wait for its ramdisk.
    pub token_ttl: Duration,
    /// Machines of no enrolled node boot the ramdisk too (and appear as nodes in `enroll`).
    pub discovery: bool,
}

/// The MACs of enrolled bare-metal nodes and of discovered ones, with their nodes.
pub async fn known_macs(s: &Shared) -> Result<Vec<(String, String)>> {
    let mut known: Vec<(String, String)> = s
        .store
        .bmcs(None)
        .await?
        .into_iter()
        .flat_map(|b| {
            let node = b.node;
            b.macs.into_iter().map(move |m| (m, node.clone()))
        })
        .collect();
    known.extend(s.store.discovered_macs().await?);
    Ok(known)
}

/// The name a discovered machine gets: `disc-` and its MAC's hex digits.
pub fn discovered_name(mac: &str) -> String {
    format!("disc-{}", mac.replace([':', '-'], "").to_ascii_lowercase())
}

/// The node a MAC belongs to.
pub async fn node_of_mac(s: &Shared, mac: &str) -> Result<Option<String>> {
    let mac = mac.to_ascii_lowercase().replace('-', ":");
    Ok(known_macs(s)
        .await?
        .into_iter()
        .find(|(m, _)| *m == mac)
        .map(|(_, n)| n))
}

/// The iPXE script for the machine with `mac`: a fresh per-boot token for its node (the
/// previous boot's die), and the ramdisk to boot with it.
pub async fn script(s: &Shared, site: &BootSite, mac: &str) -> Result<String> {
    let mac = mac.to_ascii_lowercase().replace('-', ":");
    let node = match node_of_mac(s, &mac).await? {
        Some(n) => n,
        None if site.discovery => {
            let n = s
                .store
                .discovered(&mac, &discovered_name(&mac), crate::now_ms())
                .await?;
            tracing::info!(node = %n, %mac, "discovered a machine by network boot");
            n
        }
        None => {
            return Err(ConductorError::UnknownNode(format!(
                "(no node has MAC {mac})"
            )));
        }
    };
    let (id, secret) = {
        let mut rng = rand::rng();
        let id: String = std::iter::once('b')
            .chain((0..9).map(|_| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
            }))
            .collect();
        let mut secret = [0u8; 16];
        rng.fill(&mut secret);
        (id, hex::encode(secret))
    };
    let now = crate::now_ms();
    s.store
        .create_boot_token(
            &id,
            &crate::pki::token_secret_hash(&secret),
            &node,
            &mac,
            now,
            now + site.token_ttl.as_millis() as i64,
        )
        .await?;
    tracing::info!(%node, %mac, token_id = %id, "boot script rendered");
    s.hub.boot_mark(&node, BootStage::Script, now);
    let b = &site.http_base;
    Ok(format!(
        "#!ipxe\n\
         echo Ferric: {node} boots the deploy ramdisk\n\
         kernel {b}/boot/ramdisk/vmlinuz?node={node} ferric.coordinator={link} ferric.ca={ca} ferric.token={id}.{secret} ferric.node={node} ferric.mac={mac} {args}\n\
         initrd {b}/boot/ramdisk/initramfs?node={node}\n\
         boot\n",
        link = site.link,
        ca = s.pki.ca_hash(),
        args = site.kernel_args,
    ))
}

/// Enrollment of a ramdisk with its per-boot token (`id.secret`): the token is used up and
/// the CSR signed for the node it was issued for, or the refusal names why.
pub async fn enroll(
    s: &Shared,
    req: &EnrollRequest,
    id: &str,
    hash: &str,
) -> Result<EnrollResponse> {
    use EnrollRefusal as R;
    let refuse = |r| Ok(EnrollResponse::Refused(r));
    if req.role != Role::Ramdisk {
        return refuse(R::InvalidToken);
    }
    match s
        .store
        .use_boot_token(id, hash, &req.node, crate::now_ms())
        .await?
    {
        Ok(()) => {}
        Err(BootTokenProblem::Invalid) => return refuse(R::InvalidToken),
        Err(BootTokenProblem::Used) => return refuse(R::TokenUsed),
        Err(BootTokenProblem::Expired | BootTokenProblem::Replaced) => {
            return refuse(R::TokenExpired);
        }
        Err(BootTokenProblem::OtherNode(bound)) => {
            tracing::warn!(node = %req.node, %bound, "a per-boot token was offered for another node");
            return refuse(R::InvalidToken);
        }
    }
    let generation = s.store.cert_generation(&req.node).await?.unwrap_or(0);
    let cert =
        match s
            .pki
            .sign_client_for(&req.csr_der, &req.node, RAMDISK_CERT_VALIDITY, generation)
        {
            Ok(c) => c,
            Err(e) => return refuse(R::BadCsr(e.to_string())),
        };
    tracing::info!(node = %req.node, "ramdisk enrolled with its per-boot token");
    s.hub
        .boot_mark(&req.node, BootStage::Enrolled, crate::now_ms());
    Ok(EnrollResponse::Enrolled {
        cert_der: cert.to_vec(),
        ca_der: s.pki.ca_der().to_vec(),
    })
}

/// A ramdisk said hello: its lifecycle gets what it waited for; a node in `enroll` (found by
/// network boot, or booted by hand) with no plan under way inspects the machine.
pub async fn ramdisk_connected(s: &Shared, node: &str) -> Result<()> {
    s.hub.boot_mark(node, BootStage::Connected, crate::now_ms());
    if super::lifecycle::ramdisk_connected(s, node).await? {
        return Ok(());
    }
    let state = s.store.node(node).await?.and_then(|n| n.provision_state);
    if state.is_some_and(|st| st != crate::model::ProvisionState::Enroll)
        || !s.store.unfinished_plans(node).await?.is_empty()
    {
        return Ok(());
    }
    let steps = plans::keyed_steps(vec![(Step::Inspect {}, 300)])?;
    let (plan, _) = plans::submit(s, node, &steps).await?;
    tracing::info!(%node, plan, "ramdisk connected: inspecting");
    Ok(())
}

/// An inspection arrived from `node`'s ramdisk.
pub async fn inspected(s: &Shared, node: &str, found: &Inspection, at_ms: i64) -> Result<()> {
    s.store.save_inspection(node, found, at_ms).await?;
    s.hub.boot_mark(node, BootStage::Inspected, crate::now_ms());
    tracing::info!(
        %node,
        cpus = found.inventory.cpu.count,
        memory_mib = found.inventory.memory_bytes >> 20,
        disks = found.inventory.disks.len(),
        nics = found.inventory.nics.len(),
        "inspection stored"
    );
    Ok(())
}
