//! Network boot of bare-metal nodes: the boots Ferric starts, the iPXE script such a boot's
//! machine loads (the ramdisk's kernel and initramfs, and a kernel command line with the
//! coordinator's address, the CA fingerprint and a per-boot token), the ramdisk's enrollment
//! with that token, which ramdisk counts as the node's, and what happens when it connects: it
//! inspects the machine.
//!
//! Nothing here trusts the provisioning network more than it must. A boot is **armed** only
//! by Ferric itself — a plan that sets the node's boot device to `pxe` (the lifecycle's, or an
//! operator's `ferric node bootdev NODE pxe`), or a machine discovery finds (when on, for a MAC
//! no node has, rate-limited and bounded). Its script, with a fresh per-boot token, goes only
//! to a request for that node's MAC from the address DHCP gave that MAC, and the same script
//! again to the same address (never a new token that would kill the one a booting machine
//! holds). The token enrolls once, from that address again, before the boot's expiry; the
//! ramdisk's key is recorded, and only a ramdisk with that key, while its boot runs, is the
//! node's: given work, taken for the lifecycle's call back. What an attacker on the
//! provisioning network can still do is written in `docs/design.md` ("Boot services").

use super::{ConductorError, Env, Result};
use crate::Shared;
use crate::model::{BootStage, ProvisionState};
use crate::store::{BootEnd, BootRow};
use ferric_proto::msg::{EnrollRefusal, EnrollRequest, EnrollResponse, Inspection, Role};
use ferric_proto::plan::Step;
use rand::Rng;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lifetime of a ramdisk's client certificate (its key is tied to the boot besides).
pub const RAMDISK_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// How long a ramdisk whose machine left it for its image may still connect (its reboot is
/// held until its last report is stored, at most this).
pub const LEAVING_GRACE: Duration = Duration::from_secs(600);

/// What the boot services' DHCP knows of a MAC's address: the one it gave it (full mode) or
/// the one it saw it ask another server for (proxy mode).
pub trait DhcpAddresses: Send + Sync + std::fmt::Debug {
    /// The address of `mac` (`aa:bb:…`, lowercase), if DHCP knows one.
    fn address_of(&self, mac: &str) -> Option<IpAddr>;
}

/// How discovery of machines no node has is bounded.
#[derive(Debug, Clone)]
pub struct DiscoveryLimits {
    /// New machines found per minute, at most (a burst of as many, then that rate).
    pub per_minute: u32,
    /// Discovered nodes still in `enroll` (not yet taken in by an operator), at most.
    pub max_waiting: i64,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        DiscoveryLimits {
            per_minute: 30,
            max_waiting: 256,
        }
    }
}

/// What the boot services know of themselves, for rendering scripts.
#[derive(Debug, Clone)]
pub struct BootSite {
    /// Base URL of the boot HTTP server, `http://IP:PORT`.
    pub http_base: String,
    /// Where ramdisks dial the coordinator's link, `IP:PORT`.
    pub link: String,
    /// Extra kernel arguments (consoles).
    pub kernel_args: String,
    /// Machines of no enrolled node boot the ramdisk too (and appear as nodes in `enroll`),
    /// within these limits.
    pub discovery: Option<DiscoveryLimits>,
    /// The DHCP server's view of addresses.
    pub dhcp: Arc<dyn DhcpAddresses>,
    /// Discoveries' rate: tokens left and when they were counted.
    pub discovered: Arc<Mutex<(f64, Instant)>>,
    /// How long a boot waits for its script and its ramdisk.
    pub boot_ttl: Duration,
}

/// Why a machine gets no script.
#[derive(Debug, thiserror::Error)]
pub enum ScriptRefusal {
    /// No node has the MAC (and discovery is off).
    #[error("no node has MAC {0}")]
    UnknownMac(String),
    /// Ferric started no boot of the MAC's node, or it ended or expired.
    #[error(
        "no network boot of node `{node}` is under way (MAC {mac}): a ramdisk script goes only to a boot Ferric started (a lifecycle verb, `ferric node bootdev {node} pxe`, or discovery)"
    )]
    NotBooting {
        /// The node.
        node: String,
        /// Its MAC.
        mac: String,
    },
    /// DHCP gave the MAC no address, so nothing can be checked.
    #[error(
        "the boot services' DHCP has given MAC {0} no address: the script goes only to the address DHCP gave it"
    )]
    NoAddress(String),
    /// The request came from another address than the MAC's.
    #[error("the request for MAC {mac}'s script came from {from}, but DHCP gave that MAC {given}")]
    WrongAddress {
        /// The MAC.
        mac: String,
        /// Where the request came from.
        from: IpAddr,
        /// Where it should have.
        given: IpAddr,
    },
    /// The boot's ramdisk enrolled already.
    #[error(
        "the ramdisk of node `{0}`'s boot has enrolled already; another script needs another network boot"
    )]
    Enrolled(String),
    /// Discovery is at one of its bounds.
    #[error("discovery is at its limit: {0}")]
    DiscoveryLimit(String),
    /// Something failed inside.
    #[error(transparent)]
    Conductor(#[from] ConductorError),
}

/// The MACs of enrolled bare-metal nodes and of discovered ones, with their nodes.
pub async fn known_macs(s: &Shared) -> Result<Vec<(String, String)>> {
    let mut known: Vec<(String, String)> = Vec::new();
    for b in s.store.bmcs(None).await? {
        // A node that boots from virtual media with a static address is on a network where
        // Ferric's DHCP has nothing to give it.
        if b.boot_via == crate::model::BootVia::Media
            && let Some(first) = b.macs.first()
            && static_address(
                s.store.network_json(&b.node).await?.flatten().as_deref(),
                first,
            )
            .is_some()
        {
            continue;
        }
        let node = b.node;
        known.extend(b.macs.into_iter().map(move |m| (m, node.clone())));
    }
    known.extend(s.store.discovered_macs().await?);
    Ok(known)
}

/// The MACs of the nodes set to boot `ipxe.efi` (iPXE's own NIC drivers) under UEFI.
pub async fn ipxe_efi_macs(s: &Shared) -> Result<Vec<String>> {
    Ok(s.store
        .bmcs(None)
        .await?
        .into_iter()
        .filter(|b| b.efi_loader == crate::model::EfiLoader::Ipxe)
        .flat_map(|b| b.macs)
        .collect())
}

/// The name a discovered machine gets: `disc-` and its MAC's hex digits.
pub fn discovered_name(mac: &str) -> String {
    format!("disc-{}", mac.replace([':', '-'], "").to_ascii_lowercase())
}

/// `aa:bb:cc:dd:ee:ff`, from either separator and case.
pub fn canonical_mac(mac: &str) -> String {
    mac.to_ascii_lowercase().replace('-', ":")
}

/// The node a MAC belongs to.
pub async fn node_of_mac(s: &Shared, mac: &str) -> Result<Option<String>> {
    let mac = canonical_mac(mac);
    Ok(known_macs(s)
        .await?
        .into_iter()
        .find(|(m, _)| *m == mac)
        .map(|(_, n)| n))
}

/// How long an armed boot waits for its script and its ramdisk: the boot services' setting,
/// else the network boot's own time and the call back's.
fn boot_ttl(env: &Env<'_>) -> Duration {
    env.boot
        .map_or(env.timeouts.boot + env.timeouts.callback, |b| b.boot_ttl)
}

/// Starts a network boot of `node` (its earlier boots end): only now will its machine get a
/// script. Called for every plan that sets a bare-metal node's boot device to `pxe`.
pub async fn arm(env: &Env<'_>, node: &str, cause: &str) -> Result<BootRow> {
    let now = env.now_ms();
    let ttl = boot_ttl(env).as_millis() as i64;
    let boot = env.store.arm_boot(node, cause, now, now + ttl).await?;
    // A ramdisk of an earlier boot is not this boot's.
    env.hub.links.set_resident(node, false);
    tracing::info!(%node, boot = boot.id, %cause, expires_in_s = ttl / 1000, "network boot armed");
    Ok(boot)
}

/// The bare-metal nodes whose boot device `steps` set to `pxe` (what arms a boot), or to
/// `cdrom` after inserting virtual media (the ramdisk's ISO).
pub fn pxe_boots(steps: &[ferric_proto::plan::PlanStep]) -> Vec<String> {
    use ferric_proto::plan::BootDevice;
    let media: Vec<&str> = steps
        .iter()
        .filter_map(|st| match &st.step {
            Step::BmcMedia {
                bmc,
                image: Some(_),
            } => Some(bmc.as_str()),
            _ => None,
        })
        .collect();
    steps
        .iter()
        .filter_map(|st| match &st.step {
            Step::BmcBootDevice {
                bmc,
                device: BootDevice::Pxe,
                ..
            } => Some(bmc.clone()),
            Step::BmcBootDevice {
                bmc,
                device: BootDevice::Cdrom,
                ..
            } if media.contains(&bmc.as_str()) => Some(bmc.clone()),
            _ => None,
        })
        .collect()
}

/// Ends `node`'s running boot (the machine left its ramdisk, or its power went), if any.
pub async fn end(env: &Env<'_>, node: &str, how: BootEnd, reason: &str) -> Result<()> {
    let now = env.now_ms();
    if env.store.end_boots(node, how, reason, now).await? > 0 {
        tracing::info!(%node, end = how.as_str(), %reason, "network boot ended");
    }
    // Not resident from now on (a fast track must not take it for one); a machine that left
    // for its image keeps its ramdisk's link for the last reports, one whose power went
    // loses it.
    env.hub.links.set_resident(node, false);
    env.hub.boot_stages.mark(node, BootStage::Rebooted, now);
    if how != BootEnd::Left {
        env.hub.links.disconnect(node, reason.as_bytes());
    }
    Ok(())
}

/// A fresh per-boot token: `(id, secret)`.
fn new_token() -> (String, String) {
    let mut rng = rand::rng();
    let id: String =
        std::iter::once('b')
            .chain((0..9).map(|_| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
            }))
            .collect();
    let mut secret = [0u8; 16];
    rng.fill(&mut secret);
    (id, hex::encode(secret))
}

/// Whether discovery may find one more machine now (a token is taken when it may).
async fn discovery_allows(
    s: &Shared,
    site: &BootSite,
    limits: &DiscoveryLimits,
) -> std::result::Result<(), ScriptRefusal> {
    let waiting = s
        .store
        .discovered_waiting()
        .await
        .map_err(ConductorError::from)?;
    if waiting >= limits.max_waiting {
        return Err(ScriptRefusal::DiscoveryLimit(format!(
            "{waiting} discovered nodes wait in `enroll` (at most {}); manage or delete them",
            limits.max_waiting
        )));
    }
    let mut b = crate::lock(&site.discovered);
    let now = Instant::now();
    let per_sec = f64::from(limits.per_minute) / 60.0;
    let cap = f64::from(limits.per_minute.max(1));
    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * per_sec).min(cap);
    b.1 = now;
    if b.0 < 1.0 {
        return Err(ScriptRefusal::DiscoveryLimit(format!(
            "more than {} new machines a minute",
            limits.per_minute
        )));
    }
    b.0 -= 1.0;
    Ok(())
}

/// The iPXE script for the machine with `mac`, asked for from `from`: the script of the boot
/// Ferric started for its node, with the boot's per-boot token — made on the first request,
/// the same again after that — or the reason it gets none.
pub async fn script(
    s: &Shared,
    site: &BootSite,
    mac: &str,
    from: IpAddr,
) -> std::result::Result<String, ScriptRefusal> {
    let mac = canonical_mac(mac);
    // The address first: nothing below, discovery included, happens for a request from an
    // address DHCP did not give this MAC.
    let given = site
        .dhcp
        .address_of(&mac)
        .ok_or_else(|| ScriptRefusal::NoAddress(mac.clone()))?;
    if given != from {
        return Err(ScriptRefusal::WrongAddress { mac, from, given });
    }
    let now = s.clock.now_ms();
    let node = match node_of_mac(s, &mac).await? {
        Some(n) => n,
        None => match &site.discovery {
            Some(limits) => {
                discovery_allows(s, site, limits).await?;
                let n = s
                    .store
                    .discovered(&mac, &discovered_name(&mac), now)
                    .await
                    .map_err(ConductorError::from)?;
                tracing::info!(node = %n, %mac, "discovered a machine by network boot");
                arm(&s.env(), &n, "discovery").await?;
                n
            }
            None => return Err(ScriptRefusal::UnknownMac(mac)),
        },
    };
    let mut boot = s
        .store
        .latest_boot(&node)
        .await
        .map_err(ConductorError::from)?
        .filter(|b| b.open(now));
    // A discovered machine still in `enroll` that boots again (nobody took it in yet) may be
    // inspected again, within discovery's bounds; every other node boots when Ferric says.
    if boot.is_none()
        && let Some(limits) = &site.discovery
        && s.store
            .discovered_macs()
            .await
            .map_err(ConductorError::from)?
            .iter()
            .any(|(m, n)| *m == mac && *n == node)
        && s.store
            .node(&node)
            .await
            .map_err(ConductorError::from)?
            .is_some_and(|n| n.provision_state == Some(ProvisionState::Enroll))
    {
        discovery_allows(s, site, limits).await?;
        boot = Some(arm(&s.env(), &node, "discovery (booted again)").await?);
    }
    let Some(boot) = boot else {
        return Err(ScriptRefusal::NotBooting { node, mac });
    };
    if boot.enrolled_at_ms.is_some() {
        return Err(ScriptRefusal::Enrolled(node));
    }
    let token = boot_token(s, &boot, &node, &mac, Some(from), given, now).await?;
    s.hub.boot_stages.mark(&node, BootStage::Script, now);
    let b = &site.http_base;
    // The initramfs is named and the command line names it: the kernel's EFI stub loads it
    // from there (a kernel started by UEFI finds no initramfs otherwise); under BIOS the
    // argument is ignored.
    Ok(format!(
        "#!ipxe\n\
         echo Ferric: {node} boots the deploy ramdisk\n\
         kernel {b}/boot/ramdisk/vmlinuz?node={node} initrd=initramfs ferric.coordinator={link} ferric.ca={ca} ferric.token={token} ferric.node={node} ferric.mac={mac} {args}\n\
         initrd --name initramfs {b}/boot/ramdisk/initramfs?node={node}\n\
         boot\n",
        link = site.link,
        ca = s.pki.ca_hash(),
        args = site.kernel_args,
    ))
}

/// The static address of a node's boot port, from its network document: the first IPv4
/// address of the port with MAC `mac` (untagged), and the default route's gateway.
fn static_address(
    network_json: Option<&str>,
    mac: &str,
) -> Option<(std::net::Ipv4Addr, u8, Option<std::net::Ipv4Addr>)> {
    let doc: ferric_api::network::NodeNetwork = serde_json::from_str(network_json?).ok()?;
    let port = doc.ports.iter().find(|p| canonical_mac(&p.mac) == mac)?;
    let (ip, prefix) = port.addresses.iter().find_map(|a| {
        let (ip, p) = a.split_once('/')?;
        Some((
            ip.parse::<std::net::Ipv4Addr>().ok()?,
            p.parse::<u8>().ok()?,
        ))
    })?;
    let gateway = doc
        .routes
        .iter()
        .find(|r| r.to == "default")
        .and_then(|r| r.via.parse().ok());
    Some((ip, prefix, gateway))
}

/// The kernel command line of a node's ramdisk booted from virtual media, for the ISO its
/// BMC fetches: as the iPXE script's, with the boot's token (the same one however often the
/// BMC fetches it) and, when the node's network document gives its boot port an address, that
/// address instead of DHCP.
pub async fn media_cmdline(
    s: &Shared,
    site: &BootSite,
    node: &str,
) -> std::result::Result<String, ScriptRefusal> {
    let now = s.clock.now_ms();
    let r = s
        .store
        .bmc(node)
        .await
        .map_err(ConductorError::from)?
        .ok_or_else(|| ScriptRefusal::UnknownMac(format!("(no bare-metal node `{node}`)")))?;
    let mac = r.macs.first().cloned().unwrap_or_default();
    let boot = s
        .store
        .latest_boot(node)
        .await
        .map_err(ConductorError::from)?
        .filter(|b| b.open(now));
    let Some(boot) = boot.filter(|_| r.boot_via == crate::model::BootVia::Media) else {
        return Err(ScriptRefusal::NotBooting {
            node: node.to_owned(),
            mac,
        });
    };
    if boot.enrolled_at_ms.is_some() {
        return Err(ScriptRefusal::Enrolled(node.to_owned()));
    }
    let network = s
        .store
        .network_json(node)
        .await
        .map_err(ConductorError::from)?
        .flatten();
    let fixed = static_address(network.as_deref(), &mac);
    let given = match fixed {
        Some((ip, ..)) => IpAddr::V4(ip),
        // The ramdisk asks DHCP: enrollment checks DHCP's address, as for a network boot.
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    let token = boot_token(s, &boot, node, &mac, None, given, now).await?;
    s.hub.boot_stages.mark(node, BootStage::Script, now);
    let mut line = format!(
        "ferric.coordinator={link} ferric.ca={ca} ferric.token={token} ferric.node={node} ferric.mac={mac}",
        link = site.link,
        ca = s.pki.ca_hash(),
    );
    if let Some((ip, prefix, gw)) = fixed {
        line.push_str(&format!(" ferric.ip={ip}/{prefix}"));
        if let Some(gw) = gw {
            line.push_str(&format!(" ferric.gw={gw}"));
        }
    }
    if !site.kernel_args.is_empty() {
        line.push(' ');
        line.push_str(&site.kernel_args);
    }
    Ok(line)
}

/// The per-boot token of `boot` (`id.secret`): the one handed out before — to the same
/// machine only, when `from` is given — or a new one, recorded with the address the machine
/// will enroll from (`given`: DHCP's, or the static one of a boot from virtual media).
async fn boot_token(
    s: &Shared,
    boot: &crate::store::BootRow,
    node: &str,
    mac: &str,
    from: Option<IpAddr>,
    given: IpAddr,
    now: i64,
) -> std::result::Result<String, ScriptRefusal> {
    let (mac, node) = (mac.to_owned(), node.to_owned());
    let owner = format!("boot:{}", boot.id);
    let token = match (&boot.token_id, &boot.token_sealed, &boot.address) {
        (Some(id), Some(sealed), Some(addr)) => {
            // Handed out before: the same script, to the same machine only.
            if let Some(from) = from
                && (boot.mac.as_deref() != Some(mac.as_str())
                    || addr.parse::<IpAddr>().ok() != Some(from))
            {
                return Err(ScriptRefusal::WrongAddress {
                    mac,
                    from,
                    given: addr.parse().unwrap_or(given),
                });
            }
            let secret = s
                .secrets
                .open(&owner, sealed)
                .map_err(ConductorError::from)?;
            format!("{id}.{}", secret.expose())
        }
        _ => {
            let (id, secret) = new_token();
            let sealed = s
                .secrets
                .seal(&owner, &secret)
                .map_err(ConductorError::from)?;
            let issued = s
                .store
                .boot_script_issued(
                    boot.id,
                    &crate::store::IssuedScript {
                        mac: &mac,
                        address: &given.to_string(),
                        token_id: &id,
                        token_sha256: &crate::pki::token_secret_hash(&secret),
                        token_sealed: &sealed,
                    },
                    now,
                )
                .await
                .map_err(ConductorError::from)?;
            if !issued {
                // Another request of the same boot won the race, or the boot ended: asked
                // again, it is answered as either.
                return Err(ScriptRefusal::NotBooting { node, mac });
            }
            tracing::info!(%node, %mac, address = %given, boot = boot.id, token_id = %id, "per-boot token handed out");
            format!("{id}.{secret}")
        }
    };
    Ok(token)
}

/// Enrollment of a ramdisk, from `from`, with its per-boot token (`id.secret`): the token is
/// used up and the CSR signed for the node its boot is of, and the ramdisk's key recorded as
/// that boot's — or the refusal names why.
pub async fn enroll(
    s: &Shared,
    req: &EnrollRequest,
    id: &str,
    hash: &str,
    from: IpAddr,
) -> Result<EnrollResponse> {
    use EnrollRefusal as R;
    let refuse = |r| Ok(EnrollResponse::Refused(r));
    let now = s.clock.now_ms();
    let Some(boot) = s.store.boot_of_token(id).await? else {
        return refuse(R::InvalidToken);
    };
    let stored = boot.token_sha256.as_deref().unwrap_or_default();
    if !crate::store::constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return refuse(R::InvalidToken);
    }
    if req.role != Role::Ramdisk || boot.node != req.node {
        tracing::warn!(node = %req.node, bound = %boot.node, role = req.role.as_str(), "a per-boot token was offered for another node or role");
        return refuse(R::InvalidToken);
    }
    if boot.enrolled_at_ms.is_some() {
        return refuse(R::TokenUsed);
    }
    if !boot.open(now) {
        return refuse(R::TokenExpired);
    }
    // From the address DHCP gives the boot's MAC now (the ramdisk asked DHCP again).
    let mac = boot.mac.clone().unwrap_or_default();
    let site = s.boot_site.get();
    // A boot from virtual media with a static address enrolls from the address recorded
    // with its token (DHCP never saw it).
    let media = s
        .store
        .bmc(&boot.node)
        .await?
        .is_some_and(|r| r.boot_via == crate::model::BootVia::Media);
    let given = site
        .and_then(|site| site.dhcp.address_of(&mac))
        .or_else(|| {
            boot.address
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .filter(|a| media && !a.is_unspecified())
        });
    if given != Some(from) {
        let why = match given {
            Some(g) => format!(
                "enrollment of node `{}` came from {from}, but DHCP gave its MAC {mac} {g}",
                boot.node
            ),
            None => format!(
                "enrollment of node `{}` came from {from}, but DHCP has given its MAC {mac} no address",
                boot.node
            ),
        };
        tracing::warn!(node = %boot.node, %from, "{why}");
        return refuse(R::NotBooting(why));
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
    let Some(key) = crate::pki::key_of_certificate(&cert) else {
        return refuse(R::BadCsr(
            "the signed certificate has no readable key".into(),
        ));
    };
    if !s
        .store
        .boot_enrolled(boot.id, &key, &from.to_string(), now)
        .await?
    {
        return refuse(R::TokenUsed);
    }
    tracing::info!(node = %req.node, boot = boot.id, %from, "ramdisk enrolled with its per-boot token");
    s.hub.boot_stages.mark(&req.node, BootStage::Enrolled, now);
    Ok(EnrollResponse::Enrolled {
        cert_der: cert.to_vec(),
        ca_der: s.pki.ca_der().to_vec(),
    })
}

/// Whether a ramdisk's connection is let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RamdiskAdmission {
    /// The ramdisk of the node's running boot: the node's, given work.
    Resident,
    /// The ramdisk of a boot whose machine just left it for its image: let in to deliver
    /// what it journaled, given no work.
    Leaving,
    /// Not the ramdisk of a boot Ferric runs: refused, with why.
    Refused(String),
}

/// Whether the ramdisk of bare-metal node `node` with the key `key` (SHA-256 of its
/// certificate's) belongs to a boot Ferric runs for it.
pub async fn admit_ramdisk(s: &Shared, node: &str, key: &str) -> Result<RamdiskAdmission> {
    let now = s.clock.now_ms();
    let Some(boot) = s.store.boot_of_ramdisk(node, key).await? else {
        return Ok(RamdiskAdmission::Refused(format!(
            "this certificate of node `{node}` was not enrolled in a network boot Ferric started"
        )));
    };
    if boot.ended_at_ms.is_none() {
        return Ok(RamdiskAdmission::Resident);
    }
    let ended = boot.ended_at_ms.unwrap_or(0);
    if boot.end == Some(BootEnd::Left) && now - ended < LEAVING_GRACE.as_millis() as i64 {
        return Ok(RamdiskAdmission::Leaving);
    }
    Ok(RamdiskAdmission::Refused(format!(
        "the network boot of node `{node}` this ramdisk enrolled in has ended ({})",
        boot.end_reason.as_deref().unwrap_or("ended")
    )))
}

/// An inspection arrived from `node`'s ramdisk.
pub async fn inspected(env: &Env<'_>, node: &str, found: &Inspection, at_ms: i64) -> Result<()> {
    // The firmware that booted the ramdisk says how the node boots. Recorded before the
    // inspection, so that whoever reads the inspection also reads the mode it confirmed.
    if let Some(mode) = found.boot_mode {
        match env.store.boot_mode_seen(node, mode, at_ms).await? {
            Some(before) if before != mode => tracing::warn!(
                %node,
                enrolled = %before,
                seen = %mode,
                "the node's firmware booted otherwise than it was enrolled; its boot mode is now what was seen"
            ),
            _ => {}
        }
    }
    env.store.save_inspection(node, found, at_ms).await?;
    env.hub
        .boot_stages
        .mark(node, BootStage::Inspected, env.now_ms());
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
