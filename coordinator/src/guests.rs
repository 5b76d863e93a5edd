//! Guests as desired state (the HTTP side): `ferric guest create` places a guest with
//! [`crate::placement`], stores it, and pushes the plan that makes it exist on its host;
//! start, stop and delete push plans too. Hosts are hypervisor nodes with their capacity (from
//! telemetry) and what is promised to guests (from the store).

use crate::Shared;
use crate::api::ApiError;
use crate::placement::{HostView, Request, place};
use crate::store::GuestRow;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ferric_proto::plan::{
    GuestBoot, GuestNic, GuestPowerAction, GuestSpec, PlanStep, Step, VolumeFormat, VolumeImage,
    VolumeRef,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Pool guests' root volumes go to on their host unless the request names one.
pub const ROOT_POOL: &str = "default";

fn default_pool() -> String {
    ROOT_POOL.to_owned()
}
/// Where a host keeps guests' serial consoles.
pub const CONSOLE_DIR: &str = "/var/log/ferric/guests";

/// Body of `POST /v1/guests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGuest {
    /// Name.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Root disk, bytes.
    pub disk_bytes: u64,
    /// Bridges, one NIC each.
    #[serde(default)]
    pub nets: Vec<String>,
    /// What it boots.
    #[serde(default)]
    pub boot: GuestBoot,
    /// Storage pool of its root volume on the host.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Image in the store its root volume is cloned from.
    #[serde(default)]
    pub image: Option<String>,
}

/// Answer to a guest action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestAction {
    /// Guest.
    pub guest: String,
    /// Its host.
    pub host: String,
    /// The plan pushed.
    pub plan: u64,
}

/// A guest with what its host last reported of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestView {
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// vCPUs.
    pub vcpus: i64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Root disk, bytes.
    pub disk_bytes: i64,
    /// Desired state.
    pub desired: String,
    /// Observed state: `running`, `stopped`, `missing` (the host does not report it), or
    /// `unknown` (no telemetry from the host).
    pub observed: String,
    /// State of the last plan.
    pub last_plan: Option<i64>,
    /// CPU percent from the last sample.
    pub cpu_percent: Option<f32>,
    /// What differs from the desired state although no plan is working on it (changed,
    /// stopped, started or deleted behind Ferric's back); empty when in line.
    #[serde(default)]
    pub drift: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

/// Routes of this module.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/hosts", get(hosts))
        .route("/v1/guests", post(create).get(list))
        .route("/v1/guests/{name}", get(show).delete(delete))
        .route("/v1/guests/{name}/start", post(start))
        .route("/v1/guests/{name}/stop", post(stop))
}

/// Hypervisor hosts with capacity and use.
pub async fn host_views(s: &Shared) -> Result<Vec<HostView>, ApiError> {
    let alloc = s.store.allocations().await?;
    let mut out = Vec::new();
    for n in s.store.nodes().await? {
        if n.role != "hypervisor" {
            continue;
        }
        let t = s.hub.latest_telemetry(&n.name).map(|r| r.sample);
        let a = alloc.get(&n.name).copied().unwrap_or_default();
        out.push(HostView {
            connected: s.hub.connected_since(&n.name).is_some(),
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

async fn hosts(State(s): State<Arc<Shared>>) -> Result<Json<Vec<HostView>>, ApiError> {
    Ok(Json(host_views(&s).await?))
}

/// Stores a plan for `guest` on `host`, records the guest's desired state and that plan, and
/// only then pushes it: an agent may finish a plan at once, and the store must already know
/// what the plan was for (a deletion is purged when its plan succeeds).
async fn push(
    s: &Shared,
    host: &str,
    guest: &str,
    desired: &str,
    steps: Vec<(Step, u32)>,
) -> Result<u64, ApiError> {
    let steps = crate::keyed_steps(steps);
    let plan = s.store.create_plan(host, &steps, crate::now_us()).await?;
    let id = plan.id;
    s.store.guest_desired(guest, desired, id).await?;
    s.hub.push(plan);
    Ok(id)
}

async fn create(
    State(s): State<Arc<Shared>>,
    Json(req): Json<CreateGuest>,
) -> Result<Json<GuestAction>, ApiError> {
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
        return Err(bad("field `disk_bytes` must be greater than 0"));
    }
    let image = match &req.image {
        None => None,
        Some(name) => {
            let Some(img) = s.store.image(name).await? else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("field `image`: no image named `{name}`"),
                ));
            };
            if let Some(v) = img.virtual_size
                && v as u64 > req.disk_bytes
            {
                return Err(bad(format!(
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
    ferric_proto::plan::Plan {
        id: 0,
        node: String::new(),
        steps: steps
            .iter()
            .enumerate()
            .map(|(i, (st, t))| PlanStep {
                key: i.to_string(),
                timeout_secs: *t,
                step: st.clone(),
            })
            .collect(),
    }
    .validate()
    .map_err(|e| bad(e.to_string()))?;
    if s.store.guest(&req.name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("guest `{}` already exists", req.name),
        ));
    }
    let hosts = host_views(&s).await?;
    let request = Request {
        vcpus: req.vcpus,
        memory_mib: req.memory_mib,
        disk_bytes: req.disk_bytes,
        bridges: req.nets.clone(),
    };
    let host = place(&hosts, &request)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?
        .name
        .clone();
    let row = GuestRow {
        name: req.name.clone(),
        host: host.clone(),
        vcpus: i64::from(req.vcpus),
        memory_mib: req.memory_mib as i64,
        disk_bytes: req.disk_bytes as i64,
        spec,
        desired: "running".into(),
        created_at_ms: crate::now_ms(),
        last_plan: None,
    };
    if !s.store.insert_guest(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("guest `{}` already exists", req.name),
        ));
    }
    let plan = push(&s, &host, &req.name, "running", steps).await?;
    tracing::info!(guest = %req.name, %host, plan, "guest placed");
    Ok(Json(GuestAction {
        guest: req.name,
        host,
        plan,
    }))
}

/// Differences between what a host reports of a guest and what the store wants. Only
/// meaningful once the guest's last plan has finished (before, the host is converging).
pub fn drift(
    g: &GuestRow,
    observed: &str,
    seen: Option<&ferric_proto::msg::GuestSample>,
) -> Vec<String> {
    let mut out = Vec::new();
    match (g.desired.as_str(), observed) {
        (_, "unknown") | ("deleted", _) => return out,
        (_, "missing") => {
            out.push("deleted outside Ferric: the host does not report it".to_owned())
        }
        ("running", "stopped") => out.push("stopped outside Ferric".to_owned()),
        ("stopped", "running") => out.push("started outside Ferric".to_owned()),
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
    let sample = s.hub.latest_telemetry(&g.host).map(|r| r.sample);
    let seen = sample
        .as_ref()
        .and_then(|t| t.guests.iter().find(|x| x.name == g.name).cloned());
    let observed = match (&sample, &seen) {
        (None, _) => "unknown",
        (Some(_), None) => "missing",
        (Some(_), Some(x)) if x.running => "running",
        (Some(_), Some(_)) => "stopped",
    };
    let drift = if plan_finished {
        drift(&g, observed, seen.as_ref())
    } else {
        Vec::new()
    };
    GuestView {
        drift,
        observed: observed.into(),
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

async fn finished(s: &Shared, g: &GuestRow) -> Result<bool, ApiError> {
    Ok(match g.last_plan {
        None => true,
        Some(id) => s
            .store
            .plan(id as u64)
            .await?
            .is_none_or(|p| p.finished_at_us.is_some()),
    })
}

async fn list(State(s): State<Arc<Shared>>) -> Result<Json<Vec<GuestView>>, ApiError> {
    let mut out = Vec::new();
    for g in s.store.guests().await? {
        let done = finished(&s, &g).await?;
        out.push(view(&s, g, done));
    }
    Ok(Json(out))
}

async fn find(s: &Shared, name: &str) -> Result<GuestRow, ApiError> {
    s.store.guest(name).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("guest `{name}` does not exist"),
        )
    })
}

async fn show(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<GuestView>, ApiError> {
    let g = find(&s, &name).await?;
    let done = finished(&s, &g).await?;
    Ok(Json(view(&s, g, done)))
}

async fn power(
    s: &Shared,
    name: &str,
    action: GuestPowerAction,
    desired: &str,
) -> Result<Json<GuestAction>, ApiError> {
    let g = find(s, name).await?;
    if g.desired == "deleted" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("guest `{name}` is being deleted"),
        ));
    }
    let plan = push(
        s,
        &g.host,
        name,
        desired,
        vec![(
            Step::GuestPower {
                name: name.to_owned(),
                action,
            },
            120,
        )],
    )
    .await?;
    Ok(Json(GuestAction {
        guest: name.to_owned(),
        host: g.host,
        plan,
    }))
}

async fn start(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<GuestAction>, ApiError> {
    power(&s, &name, GuestPowerAction::Start, "running").await
}

async fn stop(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<GuestAction>, ApiError> {
    power(&s, &name, GuestPowerAction::Shutdown, "stopped").await
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Json<GuestAction>, ApiError> {
    let g = find(&s, &name).await?;
    let plan = push(
        &s,
        &g.host,
        &name,
        "deleted",
        vec![
            (Step::DeleteGuest { name: name.clone() }, 120),
            (
                Step::DeleteVolume {
                    pool: g
                        .spec
                        .volumes
                        .first()
                        .map_or_else(default_pool, |v| v.pool.clone()),
                    name: format!("{name}-root"),
                },
                120,
            ),
        ],
    )
    .await?;
    // The row leaves the inventory when this plan succeeds.
    Ok(Json(GuestAction {
        guest: name,
        host: g.host,
        plan,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::msg::GuestSample;

    fn row(desired: &str) -> GuestRow {
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
            desired: desired.into(),
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
        assert!(drift(&row("running"), "running", Some(&seen(true, 2, 512))).is_empty());
        assert_eq!(
            drift(&row("running"), "stopped", Some(&seen(false, 2, 512))),
            vec!["stopped outside Ferric"]
        );
        assert_eq!(
            drift(&row("stopped"), "running", Some(&seen(true, 2, 512))),
            vec!["started outside Ferric"]
        );
        assert_eq!(
            drift(&row("running"), "missing", None),
            vec!["deleted outside Ferric: the host does not report it"]
        );
        assert_eq!(
            drift(&row("running"), "running", Some(&seen(true, 4, 1024))),
            vec![
                "changed outside Ferric: 4 vCPUs, want 2",
                "changed outside Ferric: 1024 MiB memory, want 512"
            ]
        );
        let mut grown = seen(true, 2, 512);
        grown.disk_sizes = vec![("/pool/g-root".into(), 20 << 30), ("/pool/data".into(), 1)];
        assert_eq!(
            drift(&row("running"), "running", Some(&grown)),
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
            drift(&row("running"), "running", Some(&gone)),
            vec!["disk /pool/g-root deleted outside Ferric"]
        );
        assert!(drift(&row("deleted"), "missing", None).is_empty());
        assert!(drift(&row("running"), "unknown", None).is_empty());
    }
}
