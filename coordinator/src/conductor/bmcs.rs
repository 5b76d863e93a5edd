//! Bare-metal nodes behind BMCs: enrolling a node with its BMC's address and password and
//! the agent that reaches the BMC; power, boot-device, sensor and event-log requests become
//! plans for that agent. The password leaves the coordinator only inside the mutual-TLS link
//! to that agent ([`credentials`]); no view, log line or event carries it.

use super::{ConductorError, Result, invalid, plans};
use crate::Shared;
use crate::model::check_node_name;
use crate::store::{BmcRow, StoreError};
pub use ferric_api::bmcs::{
    BmcAction, BmcView, BootSettings, BootdevRequest, EnrollBmcNode, PowerRequest, SelRequest,
};
use ferric_api::network::NodeNetwork;
use ferric_proto::msg::{BmcAddress, BmcCredential, ConsoleSource};
use ferric_proto::plan::{Access, PowerAction, Step};

/// `aa:bb:cc:dd:ee:ff` in lowercase, from `:` or `-` separated hex.
fn canonical_mac(m: &str) -> Option<String> {
    let parts: Vec<&str> = m.split([':', '-']).collect();
    (parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| parts.join(":").to_lowercase())
}

/// Whether the newest read of this BMC failed.
pub fn failing(r: &BmcRow) -> bool {
    r.error_at_ms > r.observed_at_ms
}

/// What a node's POWER shows: the power last read, or, while reads fail, why — `unreachable`
/// for a BMC that does not answer, the error kind for one that answers with a refusal.
pub fn power_shown(r: &BmcRow) -> Option<String> {
    use ferric_proto::plan::ErrorKind;
    if !failing(r) {
        return r.power_observed.clone();
    }
    let kind = ferric_proto::msg::BmcState {
        name: String::new(),
        at_ms: 0,
        power_on: None,
        sensors: vec![],
        error: r.last_error.clone(),
    }
    .error_kind();
    Some(match kind {
        Some(ErrorKind::Unreachable | ErrorKind::Timeout) | None => "unreachable".into(),
        Some(k) => k.as_str().replace('_', " "),
    })
}

/// The view of a stored BMC, with the newest sensors from the hub.
pub fn view(s: &Shared, r: BmcRow) -> BmcView {
    let sensors = s
        .hub
        .bmc
        .state(&r.node)
        .map(|st| st.sensors)
        .unwrap_or_default();
    let failing = failing(&r);
    BmcView {
        node: r.node,
        address: r.address,
        via: r.via,
        macs: r.macs,
        power_expected: r.power_expected,
        power_observed: r.power_observed,
        observed_at_ms: r.observed_at_ms,
        failing,
        error_at_ms: r.error_at_ms,
        last_error: r.last_error,
        flag: r.flag,
        sensors,
        console_log: r.console_log,
        boot_mode: r.boot_mode,
        boot_mode_seen_at_ms: r.boot_mode_seen_at_ms,
        efi_loader: r.efi_loader,
        boot_via: r.boot_via,
    }
}

/// Enrolls a bare-metal node by its BMC; the agent that drives it learns of it at once.
pub async fn enroll(s: &Shared, project: &str, req: EnrollBmcNode) -> Result<BmcView> {
    check_node_name(&req.name).map_err(|e| invalid(format!("node name `{}` {e}", req.name)))?;
    let addr = BmcAddress::parse(&req.bmc).map_err(|e| invalid(e.to_string()))?;
    if req.boot_via == Some(crate::model::BootVia::Media) && !addr.scheme.is_redfish() {
        return Err(invalid(
            "booting the ramdisk from virtual media needs a Redfish BMC (redfish://…)",
        ));
    }
    if req.password.is_empty() {
        return Err(invalid("the BMC password is empty"));
    }
    let macs = req
        .macs
        .iter()
        .map(|m| canonical_mac(m).ok_or_else(|| invalid(format!("`{m}` is not a MAC address"))))
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = &req.console_log {
        let path = std::path::Path::new(p);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(invalid(format!(
                "console log `{p}` is not an absolute path without `..` (it names a file on the agent's host)"
            )));
        }
    }
    let via = match req.via {
        Some(v) => v,
        None => {
            let agents: Vec<String> = s
                .store
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.role.has_agent() && n.project == project)
                .map(|n| n.name)
                .collect();
            match agents.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(invalid(
                        "no agent is enrolled to drive the BMC; enroll one first (ferric token create)",
                    ));
                }
                many => {
                    return Err(invalid(format!(
                        "several agents could drive the BMC; name one with --via ({})",
                        many.join(", ")
                    )));
                }
            }
        }
    };
    // Stored in the canonical spelling, with the port; the password sealed.
    let address = addr.to_string();
    let sealed = s.secrets.seal(&req.name, &req.password)?;
    match s
        .store
        .insert_bmc_node(
            &req.name,
            &address,
            &sealed,
            &via,
            &macs,
            req.console_log.as_deref(),
            (
                req.boot_mode
                    .unwrap_or(ferric_proto::hardware::BootMode::Uefi),
                req.efi_loader.unwrap_or(crate::model::EfiLoader::SnpOnly),
            ),
            project,
            crate::now_ms(),
        )
        .await
    {
        Ok(()) => {
            if let Some(v) = req.boot_via {
                s.store.set_boot_via(&req.name, v).await?;
            }
        }
        Err(StoreError::NodeExists(n)) => return Err(ConductorError::NodeExists(n)),
        Err(StoreError::UnknownNode(v)) => {
            return Err(invalid(format!(
                "agent `{v}` is not enrolled (--via names the agent that reaches the BMC)"
            )));
        }
        Err(StoreError::MacTaken {
            mac,
            node,
            project: holder,
        }) => {
            // Another project's node is not named to this one.
            return Err(ConductorError::MacTaken(if holder == project {
                format!("MAC {mac} already belongs to node `{node}`; a MAC belongs to one node")
            } else {
                format!(
                    "MAC {mac} already belongs to a node of another project; a MAC belongs to one node in the fleet"
                )
            }));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(node = %req.name, bmc = %address, %via, "bare-metal node enrolled");
    // Lines of a node of this name deleted meanwhile are not this one's.
    s.hub.consoles.forget(&req.name);
    s.hub.links.push_bmcs(&via);
    let row = s
        .store
        .bmc(&req.name)
        .await?
        .ok_or_else(|| ConductorError::UnknownNode(req.name.clone()))?;
    Ok(view(s, row))
}

/// The BMC of a bare-metal node.
pub async fn find(store: &crate::store::Store, name: &str) -> Result<BmcRow> {
    match store.bmc(name).await? {
        Some(r) => Ok(r),
        None if store.node(name).await?.is_some() => Err(invalid(format!(
            "node `{name}` has no BMC (it is an agent; enroll bare-metal nodes with --bmc)"
        ))),
        None => Err(ConductorError::UnknownNode(name.to_owned())),
    }
}

/// Every BMC agent `via` drives, with its credentials, for that agent's link alone. A
/// password that does not open with this coordinator's key is left out, and said.
pub async fn credentials(s: &Shared, via: &str) -> Result<Vec<BmcCredential>> {
    let mut out = Vec::new();
    for r in s.store.bmcs(Some(via)).await? {
        match s.secrets.open(&r.node, &r.sealed_password) {
            Ok(p) => out.push(BmcCredential {
                name: r.node,
                address: r.address,
                password: p.expose().to_owned(),
            }),
            Err(e) => tracing::error!(node = %r.node, error = %e, "BMC credentials not sent"),
        }
    }
    Ok(out)
}

/// The console logs agent `via` tails: those of the nodes whose BMCs it drives.
pub async fn consoles(store: &crate::store::Store, via: &str) -> Result<Vec<ConsoleSource>> {
    Ok(store
        .bmcs(Some(via))
        .await?
        .into_iter()
        .filter_map(|r| {
            r.console_log
                .map(|path| ConsoleSource { name: r.node, path })
        })
        .collect())
}

/// Seals every BMC password a store from an older version kept in clear; how many.
pub async fn seal_clear_passwords(s: &Shared) -> Result<usize> {
    let mut n = 0;
    for r in s.store.bmcs(None).await? {
        if crate::secrets::is_sealed(&r.sealed_password) {
            continue;
        }
        let sealed = s.secrets.seal(&r.node, &r.sealed_password)?;
        s.store.set_bmc_password(&r.node, &sealed).await?;
        n += 1;
    }
    Ok(n)
}

/// Whether an unfinished plan of agent `via` touches the BMC of `node` (only plans that change
/// it, with `writes_only`).
pub async fn plan_running(
    store: &crate::store::Store,
    via: &str,
    node: &str,
    writes_only: bool,
) -> std::result::Result<bool, StoreError> {
    let object = format!("bmc:{node}");
    Ok(store.unfinished_plans(via).await?.iter().any(|p| {
        p.steps.iter().any(|st| {
            st.step
                .objects()
                .iter()
                .any(|(o, a)| *o == object && (!writes_only || *a == Access::Write))
        })
    }))
}

async fn push_steps(s: &Shared, r: &BmcRow, steps: Vec<(Step, u32)>) -> Result<BmcAction> {
    let steps = plans::keyed_steps(steps)?;
    let (plan, pushed) = plans::submit(&s.env(), &r.via, &steps).await?;
    Ok(BmcAction {
        node: r.node.clone(),
        via: r.via.clone(),
        plan,
        pushed,
    })
}

/// Powers a bare-metal node on, off, … or reads its power.
pub async fn power(s: &Shared, name: &str, req: PowerRequest) -> Result<BmcAction> {
    let r = find(&s.store, name).await?;
    // A soft power-off waits for the operating system.
    let timeout = if req.action == PowerAction::Soft {
        600
    } else {
        120
    };
    let step = Step::BmcPower {
        bmc: name.to_owned(),
        action: req.action,
    };
    if req.action != PowerAction::Status && req.action != PowerAction::On {
        // Whatever ran on the machine (its ramdisk) stops with its power.
        super::network_boot::end(
            &s.env(),
            name,
            crate::store::BootEnd::Power,
            "the machine's power is cut or cycled",
        )
        .await?;
    }
    let a = push_steps(s, &r, vec![(step, timeout)]).await?;
    tracing::info!(node = %name, action = req.action.as_str(), plan = a.plan, "power action requested");
    Ok(a)
}

/// Sets a bare-metal node's next boot device.
pub async fn bootdev(s: &Shared, name: &str, req: BootdevRequest) -> Result<BmcAction> {
    let r = find(&s.store, name).await?;
    let step = Step::BmcBootDevice {
        bmc: name.to_owned(),
        device: req.device,
        persistent: req.persistent,
        uefi: req.uefi,
    };
    push_steps(s, &r, vec![(step, 120)]).await
}

/// A fresh SDR walk and reading.
pub async fn sensors(s: &Shared, name: &str) -> Result<BmcAction> {
    let r = find(&s.store, name).await?;
    let step = Step::BmcSensors {
        bmc: name.to_owned(),
    };
    push_steps(s, &r, vec![(step, 300)]).await
}

/// Reads what the BMC knows of the machine without booting it (Redfish): processors, memory,
/// drives, NICs with their MACs, the system's identity.
pub async fn inventory(s: &Shared, name: &str) -> Result<BmcAction> {
    let r = find(&s.store, name).await?;
    if !BmcAddress::parse(&r.address).is_ok_and(|a| a.scheme.is_redfish()) {
        return Err(invalid(format!(
            "an out-of-band inventory needs a Redfish BMC; `{name}` has {} (inspect the node \
             instead: its ramdisk reads the hardware)",
            r.address
        )));
    }
    let step = Step::BmcInventory {
        bmc: name.to_owned(),
    };
    push_steps(s, &r, vec![(step, 300)]).await
}

/// Reads the System Event Log; with `clear`, a second step reads it again and clears it.
pub async fn sel(s: &Shared, name: &str, req: SelRequest) -> Result<BmcAction> {
    let r = find(&s.store, name).await?;
    // Clearing is a second step: the first one's entries are journaled and reported before
    // anything is erased, whatever happens to the agent in between.
    let read = Step::BmcSel {
        bmc: name.to_owned(),
        clear: false,
    };
    let mut steps = vec![(read, 300)];
    if req.clear {
        steps.push((
            Step::BmcSel {
                bmc: name.to_owned(),
                clear: true,
            },
            300,
        ));
    }
    let a = push_steps(s, &r, steps).await?;
    if req.clear {
        tracing::info!(node = %name, plan = a.plan, "event log read and clear requested");
    }
    Ok(a)
}

/// The view of a node's BMC.
pub async fn show(s: &Shared, name: &str) -> Result<BmcView> {
    Ok(view(s, find(&s.store, name).await?))
}

/// Changes how `name` boots (its firmware's mode, its UEFI iPXE); the next boot device asked
/// of its BMC, and the next network boot, follow.
pub async fn set_boot(s: &Shared, name: &str, req: BootSettings) -> Result<BmcView> {
    let r = find(&s.store, name).await?;
    if req.boot_via == Some(crate::model::BootVia::Media)
        && !BmcAddress::parse(&r.address).is_ok_and(|a| a.scheme.is_redfish())
    {
        return Err(invalid(format!(
            "booting the ramdisk from virtual media needs a Redfish BMC; `{name}` has {}",
            r.address
        )));
    }
    if !s
        .store
        .set_boot(name, req.boot_mode, req.efi_loader)
        .await?
    {
        find(&s.store, name).await?;
    }
    if let Some(v) = req.boot_via {
        s.store.set_boot_via(name, v).await?;
    }
    tracing::info!(node = %name, boot_mode = ?req.boot_mode, efi_loader = ?req.efi_loader, boot_via = ?req.boot_via, "boot settings changed");
    show(s, name).await
}

/// The MACs a node is known by: enrolled, and seen by its last inspection.
pub async fn known_macs(s: &crate::store::Store, name: &str) -> Result<Vec<String>> {
    let mut macs = find(s, name).await?.macs;
    if let Some((i, _)) = s.inspection(name).await? {
        macs.extend(i.inventory.nics.into_iter().map(|n| n.mac));
    }
    Ok(macs)
}

/// A node's network (empty when none is set).
pub async fn network(s: &crate::store::Store, name: &str) -> Result<NodeNetwork> {
    let json = s
        .network_json(name)
        .await?
        .ok_or_else(|| ConductorError::UnknownNode(name.to_owned()))?;
    match json {
        None => Ok(NodeNetwork::default()),
        Some(j) => serde_json::from_str(&j).map_err(|e| {
            ConductorError::Invalid(format!(
                "node `{name}`'s stored network does not parse: {e}"
            ))
        }),
    }
}

/// Sets a node's network, checked against its NICs; the next deploy's config drive carries
/// it.
pub async fn set_network(s: &Shared, name: &str, net: NodeNetwork) -> Result<NodeNetwork> {
    let known = known_macs(&s.store, name).await?;
    let net = super::config_drive::check_network(&net, &known)
        .map_err(|e| invalid(format!("node `{name}`'s network: {e}")))?;
    let json = serde_json::to_string(&net)
        .map_err(|e| ConductorError::Invalid(format!("network cannot be stored: {e}")))?;
    s.store.set_network_json(name, Some(&json)).await?;
    tracing::info!(node = %name, ports = net.ports.len(), bonds = net.bonds.len(), "network set");
    Ok(net)
}
