//! The bare-metal lifecycle — enroll → manageable → (inspect) → available → active → back —
//! as the coordinator runs it: [`machine`] decides, this module stores each move (a
//! compare-and-set, logged), turns the move's work into plans for the management agent or
//! the node's ramdisk, and feeds the machine what happens: verbs from the API, the end of the
//! plan a node waits for, a ramdisk that calls back, a deadline that passes ([`tick`]).
//!
//! Every wait has a deadline, kept in the store: a coordinator that restarts finds its
//! nodes where they were, their plans' events arrive again from the agents' journals, and
//! a wait whose deadline passed while it was down fails with that reason.

pub mod rules;

pub use rules::{At, Input, Next, Phase, Timeouts, Verb, Work};

use super::{ConductorError, Env, Result, invalid, plans};
use crate::Shared;
use crate::store::{LifecycleRow, TransitionRow};
pub use ferric_api::lifecycle::{
    ConfigDrive, LifecycleView, ProgressView, ProvisionRequest, Transition,
};
use ferric_proto::hardware::BootMode;
use ferric_proto::plan::{BootDevice, EraseMode, PowerAction, RootHint, Step, VolumeImage};
use serde::{Deserialize, Serialize};

/// What a node was asked to become, kept with its lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// How cleaning erases its disks.
    #[serde(default)]
    pub erase: EraseMode,
    /// What a deploy writes.
    #[serde(default)]
    pub deploy: Option<DeploySpec>,
}

/// A deploy's image and config drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// Image name in the store, or its URL.
    pub image: String,
    /// Its sha256 (the store's address; the ramdisk checks it in flight).
    pub sha256: String,
    /// Its format (empty: as its content says, for an image from a URL).
    pub format: String,
    /// Where the ramdisk fetches it from when not the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Which disk is the root disk.
    #[serde(default)]
    pub root: RootHint,
    /// The config drive, if any.
    #[serde(default)]
    pub config_drive: Option<ConfigDrive>,
}

fn spec_of(row: &LifecycleRow) -> Spec {
    row.spec_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

fn progress(env: &Env<'_>, row: &LifecycleRow) -> Option<ProgressView> {
    let plan = row.wait_plan?;
    let since = crate::now_ms() - 10_000;
    let samples: Vec<_> = env
        .hub
        .telemetry
        .since(&row.node, since)
        .into_iter()
        .filter_map(|r| {
            let p = r.sample.progress.clone()?;
            (p.plan == plan).then_some((r.received_at_ms, p))
        })
        .collect();
    let (last_at, last) = samples.last()?.clone();
    let rate = samples
        .first()
        .filter(|(at, p)| *at < last_at && p.step == last.step)
        .map(|(at, p)| {
            (last.done.saturating_sub(p.done)) as f64 / ((last_at - at) as f64 / 1000.0)
        });
    let eta = match (rate, last.total) {
        (Some(r), Some(t)) if r > 0.0 => Some(t.saturating_sub(last.done) as f64 / r),
        _ => None,
    };
    Some(ProgressView {
        done: last.done,
        total: last.total,
        bytes_per_sec: rate,
        eta_secs: eta,
    })
}

/// The view of a node's lifecycle.
pub async fn view(env: &Env<'_>, row: LifecycleRow) -> Result<LifecycleView> {
    let transitions = env.store.transitions(&row.node, 20).await?;
    Ok(LifecycleView {
        progress: progress(env, &row),
        image: spec_of(&row).deploy.map(|d| d.image),
        node: row.node,
        state: row.state,
        step: row.step,
        doing: row.step.map(|p| p.describe().to_owned()),
        since_ms: row.since_ms,
        deadline_ms: row.deadline_ms,
        wait_plan: row.wait_plan,
        error: row.error,
        error_at_ms: row.error_at_ms,
        transitions: transitions.into_iter().map(Transition::from).collect(),
    })
}

async fn row(env: &Env<'_>, node: &str) -> Result<LifecycleRow> {
    match env.store.lifecycle(node).await? {
        Some(r) => Ok(r),
        None => {
            if env.store.node(node).await?.is_none() {
                return Err(ConductorError::UnknownNode(node.to_owned()));
            }
            Err(invalid(format!(
                "node `{node}` is not a bare-metal node; it has no provision state"
            )))
        }
    }
}

/// `POST /v1/nodes/{name}/provision`: an operator's verb.
pub async fn provision(env: &Env<'_>, node: &str, req: ProvisionRequest) -> Result<LifecycleView> {
    let _g = env.lifecycle.lock().await;
    let cur = row(env, node).await?;
    let mut spec = spec_of(&cur);
    if let Some(e) = req.erase {
        spec.erase = e;
    }
    match req.verb {
        Verb::Deploy | Verb::Rebuild => {
            // What the request says is checked before what this coordinator can do with it.
            let user_data = req.instance.as_ref().and_then(|i| i.user_data.as_ref());
            if let Some(u) = user_data.filter(|u| u.len() > ferric_api::lifecycle::USER_DATA_MAX) {
                return Err(ConductorError::UserDataTooLarge(
                    super::config_drive::DriveError::UserDataTooLarge(u.len()),
                ));
            }
            if env.boot.is_none() {
                return Err(invalid(
                    "this coordinator runs no boot services (`--boot-services IFACE`); a \
                     deploy network-boots the node into the ramdisk and serves it the image",
                ));
            }
            // The image: from a URL, by name from the store, or (rebuild) the last one.
            let source = match (&req.image, &req.image_url, &spec.deploy) {
                (Some(_), Some(_), _) => {
                    return Err(invalid(
                        "a deploy names an image in the store (`image`) or at a URL \
                         (`image_url`), not both",
                    ));
                }
                (_, Some(u), _) => Source::Url(image_url(u)?),
                (Some(i), None, _) => Source::Store(i.clone()),
                (None, None, Some(d)) if req.verb == Verb::Rebuild => match &d.url {
                    Some(_) => Source::Again(d.clone()),
                    None => Source::Store(d.image.clone()),
                },
                _ => {
                    return Err(invalid(
                        "a deploy needs an image (`--image NAME`, or `--image-url URL \
                         --checksum sha256:HEX`)",
                    ));
                }
            };
            let (name, sha256, format, url) = match source {
                Source::Url(u) => (u.url.clone(), u.sha256, u.format, Some(u.url)),
                Source::Again(d) => (d.image, d.sha256, d.format, d.url),
                Source::Store(name) => {
                    // Only an image of the node's own project: another's answers as unknown.
                    let project = env.store.node_project(node).await?.unwrap_or_default();
                    let img = env
                        .store
                        .image(&name)
                        .await?
                        .filter(|i| i.project == project)
                        .ok_or_else(|| {
                            ConductorError::UnknownImage(format!(
                                "image `{name}` is not in the store"
                            ))
                        })?;
                    (name, img.sha256, img.format, None)
                }
            };
            let drive = match (&req.config_drive, &req.instance) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "a deploy gives its config drive's files (`config_drive`) or what it \
                         should say (`instance`), not both",
                    ));
                }
                (Some(d), None) => Some(d.clone()),
                (None, Some(inst)) => {
                    let net = super::bmcs::network(env.store, node).await?;
                    Some(
                        super::config_drive::build(node, inst, &net, env.now_ms()).map_err(
                            |e| match e {
                                super::config_drive::DriveError::Invalid(m) => invalid(m),
                                e => ConductorError::UserDataTooLarge(e),
                            },
                        )?,
                    )
                }
                (None, None) => None,
            };
            let previous = spec.deploy.take();
            let keep = req.verb == Verb::Rebuild && req.image.is_none();
            spec.deploy = Some(DeploySpec {
                image: name,
                sha256,
                format,
                url,
                root: req
                    .root
                    .clone()
                    .or_else(|| previous.as_ref().filter(|_| keep).map(|d| d.root.clone()))
                    .unwrap_or_default(),
                config_drive: drive
                    .or_else(|| previous.and_then(|d| d.config_drive).filter(|_| keep)),
            });
            if let Some(cd) = spec.deploy.as_ref().and_then(|d| d.config_drive.as_ref()) {
                let probe = Step::WriteConfigDrive {
                    root: RootHint::default(),
                    label: cd.label.clone(),
                    files: cd.files.clone(),
                };
                plans::keyed_steps(vec![(probe, 1)])?;
            }
        }
        _ => {}
    }
    let next = rules::next(
        At {
            state: cur.state,
            phase: cur.step,
        },
        ramdisk_here(env, node),
        &Input::Verb(req.verb),
        env.timeouts,
    )?
    .ok_or_else(|| invalid("the verb changes nothing"))?;
    let moved = apply(env, &cur, next, spec, &format!("verb {}", req.verb)).await?;
    tracing::info!(%node, verb = %req.verb, state = %moved.state, step = ?moved.step, "provision verb");
    view(env, moved).await
}

/// Where a deploy's image comes from.
enum Source {
    /// The store, by name.
    Store(String),
    /// A URL.
    Url(CheckedUrl),
    /// The last deploy's URL again (a rebuild).
    Again(DeploySpec),
}

/// An image URL that passed [`image_url`].
struct CheckedUrl {
    url: String,
    sha256: String,
    format: String,
}

/// Checks an image URL, its checksum and its format, naming what is wrong.
fn image_url(u: &ferric_api::lifecycle::ImageUrl) -> Result<CheckedUrl> {
    let url = u.url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(format!(
                "image URL `{url}`: only http:// and https:// are fetched"
            ))
        })?;
    if rest.is_empty()
        || rest.starts_with('/')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!("image URL `{url}` names no host")));
    }
    let hex = u
        .checksum
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            invalid(format!(
                "checksum `{}`: an image from a URL needs `sha256:` and 64 hex digits",
                u.checksum
            ))
        })?;
    let format = match u.format.as_deref() {
        None | Some("") => String::new(),
        Some(f @ ("raw" | "qcow2")) => f.to_owned(),
        Some(f) => return Err(invalid(format!("image format `{f}`: raw or qcow2"))),
    };
    Ok(CheckedUrl {
        url: url.to_owned(),
        sha256: hex.to_ascii_lowercase(),
        format,
    })
}

fn ramdisk_here(env: &Env<'_>, node: &str) -> bool {
    env.hub.links.ramdisk_resident(node)
}

/// Feeds `input` to `node`'s lifecycle (if it has one and it applies).
async fn feed(env: &Env<'_>, node: &str, input: Input, cause: &str) -> Result<bool> {
    let _g = env.lifecycle.lock().await;
    let Some(cur) = env.store.lifecycle(node).await? else {
        return Ok(false);
    };
    feed_locked(env, cur, input, cause).await
}

/// [`feed`], with the lifecycle lock held and the node's row read under it.
async fn feed_locked(env: &Env<'_>, cur: LifecycleRow, input: Input, cause: &str) -> Result<bool> {
    let node = cur.node.clone();
    let ramdisk = ramdisk_here(env, &node);
    let Some(next) = decide(&cur, ramdisk, &input, env.timeouts, env.now_ms()) else {
        return Ok(false);
    };
    if cur.step == Some(Phase::Write) && matches!(input, Input::PlanEnded { ok: true, .. }) {
        // The ramdisk reboots the machine into its image once this plan's end is
        // acknowledged: its boot ends, it is not resident from now on (a fast track must not
        // take it for one).
        super::network_boot::end(
            env,
            &node,
            crate::store::BootEnd::Left,
            "the machine rebooted into its deployed image",
        )
        .await?;
    }
    let spec = spec_of(&cur);
    let moved = apply(env, &cur, next, spec, cause).await?;
    tracing::info!(%node, %cause, state = %moved.state, step = ?moved.step, error = ?moved.error, "lifecycle moved");
    Ok(true)
}

/// What `input` (not a verb) does to `cur` at `now_ms`: `None` when nothing (a deadline that
/// has not passed yet, an input not awaited).
fn decide(
    cur: &LifecycleRow,
    ramdisk: bool,
    input: &Input,
    t: &Timeouts,
    now_ms: i64,
) -> Option<Next> {
    if *input == Input::DeadlinePassed && !due(cur, now_ms) {
        return None;
    }
    let at = At {
        state: cur.state,
        phase: cur.step,
    };
    rules::next(at, ramdisk, input, t).ok().flatten()
}

/// Whether `cur`'s step has run out of time at `now_ms`.
fn due(cur: &LifecycleRow, now_ms: i64) -> bool {
    cur.deadline_ms.is_some_and(|d| d <= now_ms)
}

/// The row `cur` becomes on `next` at `now_ms` (after it entered its state, even when the
/// clock says otherwise): its deadline counted from then, a failure's reason and time kept
/// until the next failure, no plan awaited yet.
fn moved(cur: &LifecycleRow, next: &Next, spec: &Spec, now_ms: i64) -> Result<LifecycleRow> {
    let now = now_ms.max(cur.since_ms + 1);
    let failed = next.error.is_some();
    Ok(LifecycleRow {
        node: cur.node.clone(),
        state: next.at.state,
        step: next.at.phase,
        since_ms: now,
        deadline_ms: next.timeout.map(|t| now + t.as_millis() as i64),
        wait_plan: None,
        error: next.error.clone().or_else(|| cur.error.clone()),
        error_at_ms: if failed { Some(now) } else { cur.error_at_ms },
        spec_json: Some(serde_json::to_string(spec).map_err(|e| invalid(e.to_string()))?),
    })
}

/// Stores the move from `cur` to `next` and pushes its work; a failure to push fails the
/// node at once with that reason.
async fn apply(
    env: &Env<'_>,
    cur: &LifecycleRow,
    next: Next,
    spec: Spec,
    cause: &str,
) -> Result<LifecycleRow> {
    let mut to = moved(cur, &next, &spec, env.now_ms())?;
    let now = to.since_ms;
    if !env.store.move_lifecycle(cur, &to, cause).await? {
        return Err(ConductorError::Busy(format!(
            "node `{}` moved while this was decided; try again",
            cur.node
        )));
    }
    let Some(work) = next.work else {
        return Ok(to);
    };
    match push(env, &cur.node, work, &spec).await {
        Ok(plan) => {
            env.store.lifecycle_waits_for(&cur.node, now, plan).await?;
            to.wait_plan = Some(plan);
            Ok(to)
        }
        Err(e) => not_started(env, &to, &e).await,
    }
}

/// Fails `cur`, whose step's work could not be pushed, with `e`.
async fn not_started(
    env: &Env<'_>,
    cur: &LifecycleRow,
    e: &ConductorError,
) -> Result<LifecycleRow> {
    let at = env.now_ms().max(cur.since_ms + 1);
    let failed = LifecycleRow {
        state: rules::failed_state(cur.state),
        step: None,
        since_ms: at,
        deadline_ms: None,
        wait_plan: None,
        error: Some(format!(
            "{} could not start: {e}",
            cur.step.map_or("work", Phase::describe)
        )),
        error_at_ms: Some(at),
        ..cur.clone()
    };
    env.store
        .move_lifecycle(cur, &failed, "work could not start")
        .await?;
    Ok(failed)
}

/// Turns work into a plan (for the management agent, or the node's ramdisk) and submits it.
async fn push(env: &Env<'_>, node: &str, work: Work, spec: &Spec) -> Result<u64> {
    let t = env.timeouts;
    let secs = |d: std::time::Duration| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
    let (agent, steps) = match work {
        Work::ReadPower | Work::BootRamdisk => {
            let r = super::bmcs::find(env.store, node).await?;
            let bmc = node.to_owned();
            let steps = if work == Work::ReadPower {
                vec![(
                    Step::BmcPower {
                        bmc,
                        action: PowerAction::Status,
                    },
                    secs(t.power),
                )]
            } else {
                let each = secs(t.boot / 3);
                let mut steps = vec![(
                    Step::BmcPower {
                        bmc: bmc.clone(),
                        action: PowerAction::Off,
                    },
                    each,
                )];
                // From virtual media: the BMC fetches this boot's ISO of the ramdisk from
                // the boot services (made when it asks), and boots its CD once.
                let device = if r.boot_via == crate::model::BootVia::Media {
                    let site = env
                        .boot
                        .ok_or_else(|| invalid("this coordinator runs no boot services"))?;
                    steps.push((
                        Step::BmcMedia {
                            bmc: bmc.clone(),
                            image: Some(format!("{}/boot/media/{node}.iso", site.http_base)),
                        },
                        each,
                    ));
                    BootDevice::Cdrom
                } else {
                    BootDevice::Pxe
                };
                steps.push((
                    Step::BmcBootDevice {
                        bmc: bmc.clone(),
                        device,
                        persistent: false,
                        uefi: r.boot_mode == BootMode::Uefi,
                    },
                    each,
                ));
                steps.push((
                    Step::BmcPower {
                        bmc,
                        action: PowerAction::On,
                    },
                    each,
                ));
                steps
            };
            (r.via, steps)
        }
        Work::Ramdisk(Phase::Inspect) => {
            (node.to_owned(), vec![(Step::Inspect {}, secs(t.inspect))])
        }
        Work::Ramdisk(Phase::Erase) => (
            node.to_owned(),
            vec![(Step::EraseDisks { mode: spec.erase }, secs(t.clean))],
        ),
        Work::Ramdisk(Phase::Write) => {
            let d = spec
                .deploy
                .as_ref()
                .ok_or_else(|| invalid("no image was given for this deploy"))?;
            let site = env
                .boot
                .ok_or_else(|| invalid("this coordinator runs no boot services"))?;
            let mut steps = vec![(
                Step::WriteImage {
                    image: VolumeImage {
                        url: d.url.clone().unwrap_or_else(|| {
                            format!("{}/images/sha256/{}", site.http_base, d.sha256)
                        }),
                        checksum: format!("sha256:{}", d.sha256),
                        format: (!d.format.is_empty()).then(|| d.format.clone()),
                    },
                    root: d.root.clone(),
                },
                secs(t.deploy),
            )];
            if let Some(cd) = &d.config_drive {
                steps.push((
                    Step::WriteConfigDrive {
                        root: d.root.clone(),
                        label: cd.label.clone(),
                        files: cd.files.clone(),
                    },
                    300,
                ));
            }
            // On UEFI, the firmware's boot order decides: the deployed disk's loader first.
            if super::bmcs::find(env.store, node).await?.boot_mode == BootMode::Uefi {
                steps.push((
                    Step::UefiBootEntry {
                        root: d.root.clone(),
                    },
                    60,
                ));
            }
            // The disk as the boot device for good, set in-band through the machine's own
            // BMC interface where its inspection found one. A machine without (a Redfish BMC
            // with no KCS, as the lab's) boots by its own order once the one-time network
            // boot override its ramdisk boot spent is gone: on UEFI the entry just made, and
            // on BIOS the disk, or a network boot the boot services refuse (no boot of
            // Ferric's is under way) before the disk.
            let in_band = env
                .store
                .inspection(node)
                .await?
                .is_none_or(|(i, _)| i.bmc.is_some());
            if in_band {
                steps.push((
                    Step::SetBootDevice {
                        device: BootDevice::Disk,
                        persistent: true,
                    },
                    60,
                ));
            }
            steps.push((Step::Reboot {}, 60));
            (node.to_owned(), steps)
        }
        Work::Ramdisk(p) => return Err(invalid(format!("no ramdisk work for step {p}"))),
    };
    if work == Work::BootRamdisk {
        // Its boot device set to pxe, the plan arms the new boot (see `plans::submit`).
        super::network_boot::end(
            env,
            node,
            crate::store::BootEnd::Power,
            "the machine is power-cycled into a network boot",
        )
        .await?;
    }
    let steps = plans::keyed_steps(steps)?;
    let (plan, pushed) = plans::submit(env, &agent, &steps).await?;
    tracing::info!(%node, %agent, plan, pushed, ?work, "lifecycle work submitted");
    Ok(plan)
}

/// A plan ended: the node waiting for it (if any) moves on.
pub async fn plan_ended(env: &Env<'_>, plan: u64, ok: bool, message: Option<String>) -> Result<()> {
    // Under the lock: the move that submitted the plan records it before this looks.
    let _g = env.lifecycle.lock().await;
    if let Some(row) = env.store.lifecycle_waiting_for(plan).await? {
        let cause = format!("plan {plan} {}", if ok { "succeeded" } else { "failed" });
        feed_locked(env, row, Input::PlanEnded { ok, message }, &cause).await?;
    }
    Ok(())
}

/// A node's ramdisk connected; true when its lifecycle was waiting for it.
pub async fn ramdisk_connected(env: &Env<'_>, node: &str) -> Result<bool> {
    if !ramdisk_here(env, node) {
        // The ramdisk of a boot that already rebooted into its image, reconnecting in its
        // last seconds: no call back.
        return Ok(false);
    }
    feed(env, node, Input::RamdiskConnected, "ramdisk called back").await
}

/// After a start, picks up every node that was under way when the coordinator stopped: one
/// whose awaited plan ended while it was down (or between storing the plan's end and acting
/// on it) moves on now; one whose step's work was never recorded as pushed (it stopped between
/// the move and the push) gets that work pushed now. Everything else resumes by itself: the
/// agents re-send what they journaled, ramdisks call back, and every step has its deadline.
pub async fn resume(env: &Env<'_>) -> Result<()> {
    for row in env.store.lifecycles_under_way().await? {
        let _g = env.lifecycle.lock().await;
        let Some(cur) = env.store.lifecycle(&row.node).await? else {
            continue;
        };
        let Some(phase) = cur.step else {
            continue;
        };
        match cur.wait_plan {
            Some(plan) => {
                if let Some((ok, message)) = super::plans::outcome(env.store, plan).await? {
                    let cause = format!(
                        "plan {plan} {} (seen at start)",
                        if ok { "succeeded" } else { "failed" }
                    );
                    feed_locked(env, cur, Input::PlanEnded { ok, message }, &cause).await?;
                }
            }
            None => {
                if let Some(work) = rules::work_of(phase) {
                    tracing::warn!(node = %cur.node, step = %phase, "resuming a step whose work was never pushed");
                    let spec = spec_of(&cur);
                    match push(env, &cur.node, work, &spec).await {
                        Ok(plan) => {
                            env.store
                                .lifecycle_waits_for(&cur.node, cur.since_ms, plan)
                                .await?;
                        }
                        Err(e) => {
                            not_started(env, &cur, &e).await?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Fails every node whose deadline passed.
pub async fn tick(env: &Env<'_>) -> Result<()> {
    for row in env.store.lifecycles_due(env.now_ms()).await? {
        feed(env, &row.node, Input::DeadlinePassed, "deadline passed").await?;
    }
    Ok(())
}

/// Resumes what a stop interrupted ([`resume`]), then runs [`tick`] every second until the
/// coordinator drains.
pub async fn deadlines(s: std::sync::Arc<Shared>) {
    if let Err(e) = resume(&s.env()).await {
        tracing::error!(error = %e, "lifecycles under way not resumed; their deadlines still hold");
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = s.shutdown.cancelled() => return,
        }
        if let Err(e) = tick(&s.env()).await {
            tracing::warn!(error = %e, "lifecycle deadlines not checked");
        }
    }
}

impl From<TransitionRow> for Transition {
    fn from(r: TransitionRow) -> Self {
        Transition {
            seq: r.seq,
            at_ms: r.at_ms,
            from: r.from,
            to: r.to,
            step: r.step,
            cause: r.cause,
            error: r.error,
        }
    }
}

#[cfg(test)]
mod tests;
