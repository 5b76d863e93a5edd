//! Guests as desired state: `ferric guest create` places a guest with [`super::placement`],
//! stores it, and pushes the plan that makes it exist on its host; start, stop and delete push
//! plans too. Hosts are hypervisor nodes with their capacity (from telemetry) and what is
//! promised to guests (from the store).

use super::placement::{HostView, Request, place};
use super::{ConductorError, Result, invalid, plans};
use crate::Shared;
use crate::model::{GuestDesired, GuestObserved, NodeRole};
use crate::store::GuestRow;
use ferric_proto::plan::{
    GuestNic, GuestPowerAction, GuestSpec, Step, VolumeFormat, VolumeImage, VolumeRef,
};

pub use ferric_api::guests::{CreateGuest, GuestAction, GuestView, ROOT_POOL};

fn default_pool() -> String {
    ROOT_POOL.to_owned()
}
/// Where a host keeps guests' serial consoles.
pub const CONSOLE_DIR: &str = "/var/log/ferric/guests";

/// Hypervisor hosts of projects `sees` accepts, with capacity and use.
pub async fn hosts(s: &Shared, sees: impl Fn(&str) -> bool) -> Result<Vec<HostView>> {
    let alloc = s.store.allocations().await?;
    let mut out = Vec::new();
    for n in s.store.nodes().await? {
        if n.role != NodeRole::Hypervisor || !sees(&n.project) {
            continue;
        }
        let t = s.hub.telemetry.latest(&n.name).map(|r| r.sample);
        let a = alloc.get(&n.name).copied().unwrap_or_default();
        out.push(HostView {
            connected: s.hub.links.connected_since(&n.name).is_some(),
            cpus: t.as_ref().map_or(0, |t| t.cpus),
            mem_total_mib: t.as_ref().map_or(0, |t| t.mem_total_bytes >> 20),
            disk_free_bytes: t
                .as_ref()
                .and_then(|t| t.disks.iter().map(|d| d.available_bytes).max())
                .unwrap_or(0),
            interfaces: t
                .as_ref()
                .map(|t| t.nics.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_default(),
            vcpus_used: a.vcpus,
            mem_used_mib: a.memory_mib,
            disk_used_bytes: a.disk_bytes,
            guests: a.guests,
            capabilities: n.capabilities,
            name: n.name,
        });
    }
    Ok(out)
}

/// Stores a plan for `guest` on `host`, records the guest's desired state and that plan, and
/// only then pushes it: an agent may finish a plan at once, and the store must already know
/// what the plan was for (a deletion is purged when its plan succeeds).
async fn push(
    s: &Shared,
    host: &str,
    guest: &str,
    desired: GuestDesired,
    steps: Vec<(Step, u32)>,
) -> Result<u64> {
    let steps = plans::keyed_steps(steps)?;
    let plan = s.store.create_plan(host, &steps, crate::now_us()).await?;
    let id = plan.id;
    s.store.guest_desired(guest, desired, id).await?;
    s.hub.links.push(plan);
    Ok(id)
}

/// Places a new guest on the least loaded host of `project` that fits and pushes the plan
/// that makes it.
pub async fn create(s: &Shared, project: &str, req: CreateGuest) -> Result<GuestAction> {
    let spec = GuestSpec {
        name: req.name.clone(),
        vcpus: req.vcpus,
        memory_mib: req.memory_mib,
        volumes: vec![VolumeRef {
            pool: req.pool.clone(),
            name: format!("{}-root", req.name),
        }],
        nics: req
            .nets
            .iter()
            .map(|b| GuestNic {
                bridge: b.clone(),
                mac: None,
            })
            .collect(),
        boot: req.boot.clone(),
        serial_log: Some(format!("{CONSOLE_DIR}/{}.log", req.name)),
    };
    if req.disk_bytes == 0 {
        return Err(invalid("field `disk_bytes` must be greater than 0"));
    }
    let image = match &req.image {
        None => None,
        Some(name) => {
            let Some(img) = s.store.image(name).await?.filter(|i| i.project == project) else {
                return Err(ConductorError::UnknownImage(format!(
                    "field `image`: no image named `{name}`"
                )));
            };
            if let Some(v) = img.virtual_size
                && v as u64 > req.disk_bytes
            {
                return Err(invalid(format!(
                    "field `disk_bytes`: {} bytes is smaller than image `{name}`'s disk of {v} bytes",
                    req.disk_bytes
                )));
            }
            let base = s.config.images_url.clone().unwrap_or_default();
            Some(VolumeImage {
                url: format!(
                    "{}/images/sha256/{}",
                    base.trim_end_matches('/'),
                    img.sha256
                ),
                checksum: format!("sha256:{}", img.sha256),
                format: Some(img.format),
            })
        }
    };
    let steps =
        vec![
            (
                Step::EnsureVolume {
                    pool: req.pool.clone(),
                    name: format!("{}-root", req.name),
                    size_bytes: req.disk_bytes,
                    // A clone holds raw disk bytes.
                    format: if image.is_some() {
                        VolumeFormat::Raw
                    } else {
                        VolumeFormat::Qcow2
                    },
                    image,
                },
                // Cloning writes the whole image, and a new LVM volume is zeroed in full (written
                // out on a disk without write-zeroes offload): either at 100 MiB/s at worst.
                (if req.image.is_some() { 1800 } else { 120 }).max(120u32.saturating_add(
                    u32::try_from(req.disk_bytes / (100 << 20)).unwrap_or(u32::MAX),
                )),
            ),
            (Step::EnsureGuest(spec.clone()), 120),
            (
                Step::GuestPower {
                    name: req.name.clone(),
                    action: GuestPowerAction::Start,
                },
                120,
            ),
        ];
    // The same checks a plan gets, before placement.
    plans::keyed_steps(steps.clone())?;
    if s.store.guest(&req.name).await?.is_some() {
        return Err(ConductorError::GuestExists(req.name));
    }
    let hosts = hosts(s, |p| p == project).await?;
    let request = Request {
        vcpus: req.vcpus,
        memory_mib: req.memory_mib,
        disk_bytes: req.disk_bytes,
        bridges: req.nets.clone(),
    };
    let host = place(&hosts, &request)?.name.clone();
    let row = GuestRow {
        name: req.name.clone(),
        host: host.clone(),
        vcpus: i64::from(req.vcpus),
        memory_mib: req.memory_mib as i64,
        disk_bytes: req.disk_bytes as i64,
        spec,
        desired: GuestDesired::Running,
        created_at_ms: crate::now_ms(),
        last_plan: None,
    };
    if !s.store.insert_guest(&row).await? {
        return Err(ConductorError::GuestExists(req.name));
    }
    let plan = push(s, &host, &req.name, GuestDesired::Running, steps).await?;
    tracing::info!(guest = %req.name, %host, plan, "guest placed");
    Ok(GuestAction {
        guest: req.name,
        host,
        plan,
    })
}

/// Differences between what a host reports of a guest and what the store wants. Only
/// meaningful once the guest's last plan has finished (before, the host is converging).
pub fn drift(
    g: &GuestRow,
    observed: GuestObserved,
    seen: Option<&ferric_proto::msg::GuestSample>,
) -> Vec<String> {
    use GuestDesired as D;
    use GuestObserved as O;
    let mut out = Vec::new();
    match (g.desired, observed) {
        (_, O::Unknown) | (D::Deleted, _) => return out,
        (_, O::Missing) => {
            out.push("deleted outside Ferric: the host does not report it".to_owned())
        }
        (D::Running, O::Stopped) => out.push("stopped outside Ferric".to_owned()),
        (D::Stopped, O::Running) => out.push("started outside Ferric".to_owned()),
        _ => {}
    }
    if let Some(x) = seen {
        if i64::from(x.vcpus) != g.vcpus {
            out.push(format!(
                "changed outside Ferric: {} vCPUs, want {}",
                x.vcpus, g.vcpus
            ));
        }
        for d in &x.missing_disks {
            out.push(format!("disk {d} deleted outside Ferric"));
        }
        // The root volume is the one Ferric sized.
        let root = format!("/{}-root", g.name);
        for (path, size) in &x.disk_sizes {
            if path.ends_with(&root) && *size as i64 != g.disk_bytes {
                out.push(format!(
                    "disk {path} resized outside Ferric: {size} bytes, want {}",
                    g.disk_bytes
                ));
            }
        }
        if x.memory_mib as i64 != g.memory_mib {
            out.push(format!(
                "changed outside Ferric: {} MiB memory, want {}",
                x.memory_mib, g.memory_mib
            ));
        }
    }
    out
}

fn view(s: &Shared, g: GuestRow, plan_finished: bool) -> GuestView {
    let sample = s.hub.telemetry.latest(&g.host).map(|r| r.sample);
    let seen = sample
        .as_ref()
        .and_then(|t| t.guests.iter().find(|x| x.name == g.name).cloned());
    let observed = match (&sample, &seen) {
        (None, _) => GuestObserved::Unknown,
        (Some(_), None) => GuestObserved::Missing,
        (Some(_), Some(x)) if x.running => GuestObserved::Running,
        (Some(_), Some(_)) => GuestObserved::Stopped,
    };
    let drift = if plan_finished {
        drift(&g, observed, seen.as_ref())
    } else {
        Vec::new()
    };
    GuestView {
        drift,
        observed,
        cpu_percent: seen.map(|x| x.cpu_percent),
        name: g.name,
        host: g.host,
        vcpus: g.vcpus,
        memory_mib: g.memory_mib,
        disk_bytes: g.disk_bytes,
        desired: g.desired,
        last_plan: g.last_plan,
    }
}

async fn finished(s: &Shared, g: &GuestRow) -> Result<bool> {
    Ok(match g.last_plan {
        None => true,
        Some(id) => s
            .store
            .plan(id as u64)
            .await?
            .is_none_or(|p| p.finished_at_us.is_some()),
    })
}

/// Every guest the caller sees (on hosts of its projects), with what its host reports.
pub async fn list(s: &Shared, caller: &super::access::Caller) -> Result<Vec<GuestView>> {
    let projects: std::collections::HashMap<String, String> = s
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, n.project))
        .collect();
    let mut out = Vec::new();
    for g in s.store.guests().await? {
        if !projects.get(&g.host).is_some_and(|p| caller.sees(p)) {
            continue;
        }
        let done = finished(s, &g).await?;
        out.push(view(s, g, done));
    }
    Ok(out)
}

async fn find(s: &Shared, name: &str) -> Result<GuestRow> {
    s.store
        .guest(name)
        .await?
        .ok_or_else(|| ConductorError::UnknownGuest(name.to_owned()))
}

/// One guest with what its host reports.
pub async fn show(s: &Shared, name: &str) -> Result<GuestView> {
    let g = find(s, name).await?;
    let done = finished(s, &g).await?;
    Ok(view(s, g, done))
}

async fn power(
    s: &Shared,
    name: &str,
    action: GuestPowerAction,
    desired: GuestDesired,
) -> Result<GuestAction> {
    let g = find(s, name).await?;
    if g.desired == GuestDesired::Deleted {
        return Err(ConductorError::Busy(format!(
            "guest `{name}` is being deleted"
        )));
    }
    let step = Step::GuestPower {
        name: name.to_owned(),
        action,
    };
    let plan = push(s, &g.host, name, desired, vec![(step, 120)]).await?;
    Ok(GuestAction {
        guest: name.to_owned(),
        host: g.host,
        plan,
    })
}

/// Starts a guest (and wants it running).
pub async fn start(s: &Shared, name: &str) -> Result<GuestAction> {
    power(s, name, GuestPowerAction::Start, GuestDesired::Running).await
}

/// Shuts a guest down (and wants it stopped).
pub async fn stop(s: &Shared, name: &str) -> Result<GuestAction> {
    power(s, name, GuestPowerAction::Shutdown, GuestDesired::Stopped).await
}

/// Deletes a guest and its root volume; the guest leaves the inventory when the plan succeeds.
pub async fn delete(s: &Shared, name: &str) -> Result<GuestAction> {
    let g = find(s, name).await?;
    let pool = g
        .spec
        .volumes
        .first()
        .map_or_else(default_pool, |v| v.pool.clone());
    let steps = vec![
        (
            Step::DeleteGuest {
                name: name.to_owned(),
            },
            120,
        ),
        (
            Step::DeleteVolume {
                pool,
                name: format!("{name}-root"),
            },
            120,
        ),
    ];
    let plan = push(s, &g.host, name, GuestDesired::Deleted, steps).await?;
    Ok(GuestAction {
        guest: name.to_owned(),
        host: g.host,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::msg::GuestSample;
    use ferric_proto::plan::GuestBoot;

    fn row(desired: GuestDesired) -> GuestRow {
        GuestRow {
            name: "g".into(),
            host: "h".into(),
            vcpus: 2,
            memory_mib: 512,
            disk_bytes: 10 << 30,
            spec: GuestSpec {
                name: "g".into(),
                vcpus: 2,
                memory_mib: 512,
                volumes: vec![],
                nics: vec![],
                boot: GuestBoot::Disk,
                serial_log: None,
            },
            desired,
            created_at_ms: 0,
            last_plan: None,
        }
    }

    fn seen(running: bool, vcpus: u32, memory_mib: u64) -> GuestSample {
        GuestSample {
            name: "g".into(),
            running,
            vcpus,
            memory_mib,
            cpu_percent: 0.0,
            mem_bytes: memory_mib << 20,
            block_rd_bytes: 0,
            block_wr_bytes: 0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            missing_disks: vec![],
            disk_sizes: vec![("/pool/g-root".into(), 10 << 30)],
        }
    }

    #[test]
    fn drift_names_what_changed_behind_ferrics_back() {
        assert!(
            drift(
                &row(GuestDesired::Running),
                GuestObserved::Running,
                Some(&seen(true, 2, 512))
            )
            .is_empty()
        );
        assert_eq!(
            drift(
                &row(GuestDesired::Running),
                GuestObserved::Stopped,
                Some(&seen(false, 2, 512))
            ),
            vec!["stopped outside Ferric"]
        );
        assert_eq!(
            drift(
                &row(GuestDesired::Stopped),
                GuestObserved::Running,
                Some(&seen(true, 2, 512))
            ),
            vec!["started outside Ferric"]
        );
        assert_eq!(
            drift(&row(GuestDesired::Running), GuestObserved::Missing, None),
            vec!["deleted outside Ferric: the host does not report it"]
        );
        assert_eq!(
            drift(
                &row(GuestDesired::Running),
                GuestObserved::Running,
                Some(&seen(true, 4, 1024))
            ),
            vec![
                "changed outside Ferric: 4 vCPUs, want 2",
                "changed outside Ferric: 1024 MiB memory, want 512"
            ]
        );
        let mut grown = seen(true, 2, 512);
        grown.disk_sizes = vec![("/pool/g-root".into(), 20 << 30), ("/pool/data".into(), 1)];
        assert_eq!(
            drift(
                &row(GuestDesired::Running),
                GuestObserved::Running,
                Some(&grown)
            ),
            vec![format!(
                "disk /pool/g-root resized outside Ferric: {} bytes, want {}",
                20u64 << 30,
                10u64 << 30
            )]
        );
        let mut gone = seen(true, 2, 512);
        gone.disk_sizes.clear();
        gone.missing_disks = vec!["/pool/g-root".into()];
        assert_eq!(
            drift(
                &row(GuestDesired::Running),
                GuestObserved::Running,
                Some(&gone)
            ),
            vec!["disk /pool/g-root deleted outside Ferric"]
        );
        assert!(drift(&row(GuestDesired::Deleted), GuestObserved::Missing, None).is_empty());
        assert!(drift(&row(GuestDesired::Running), GuestObserved::Unknown, None).is_empty());
    }
}
