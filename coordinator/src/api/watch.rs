//! Live streams for the dashboard (and any client that reads server-sent events): a node's
//! detail and telemetry as they arrive, and the fleet's nodes, hosts and recent plans as they
//! change. Each stream wakes on the telemetry hub's change signal, and at least once a second
//! for what the hub does not see (lifecycle transitions, plan ends), and sends only what is
//! new. A client reads them with its token in `Authorization` like any other route
//! (`fetch` with a streaming body: a browser's `EventSource` cannot send the header). The
//! token is checked again every few seconds: one revoked or expired while a stream runs ends
//! it with an `unauthorized` event.

use super::ApiError;
use crate::Shared;
use crate::conductor::access::{self, Caller};
use crate::conductor::{ConductorError, guests, nodes, plans};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .routes(routes!(watch_node))
        .routes(routes!(watch_fleet))
}

/// The longest a stream sleeps without looking again (lifecycle transitions and plan ends do
/// not pass through the hub).
const TICK: Duration = Duration::from_secs(1);

/// Telemetry history a new node stream starts with when the client names none.
const HISTORY_MS: i64 = 5 * 60 * 1000;

/// How often a stream checks that its token still stands.
const RECHECK: Duration = Duration::from_secs(5);

/// How often a node's detail goes out again when only what moves all the time changed (when
/// it was last seen, the BMC's latest reading, which also go out as `sample` and `bmc`).
const RESEND: Duration = Duration::from_secs(5);

/// Query of `GET /v1/nodes/{name}/watch`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WatchQuery {
    /// Start with the samples received after this time (ms since the epoch; default: the
    /// last five minutes).
    after_ms: Option<i64>,
}

/// What a stream keeps between wakes.
struct Cursor {
    s: Arc<Shared>,
    caller: Caller,
    checked: Instant,
    wake: tokio::sync::watch::Receiver<u64>,
    queue: VecDeque<Event>,
    first: bool,
    ended: bool,
}

impl Cursor {
    fn new(s: Arc<Shared>, caller: Caller) -> Self {
        let mut wake = s.hub.watch();
        wake.mark_unchanged();
        Cursor {
            s,
            caller,
            checked: Instant::now(),
            wake,
            queue: VecDeque::new(),
            first: true,
            ended: false,
        }
    }

    /// Whether the caller's token still stands (looked up every [`RECHECK`]); when it does
    /// not, queues an `unauthorized` problem.
    async fn admitted(&mut self) -> bool {
        if self.checked.elapsed() < RECHECK {
            return true;
        }
        self.checked = Instant::now();
        match access::still_admitted(&self.s, &self.caller).await {
            Ok(None) => true,
            Ok(Some(f)) => {
                self.push("unauthorized", &super::auth::auth_error(&f).problem());
                false
            }
            // A store that fails now may answer on the next look.
            Err(e) => {
                tracing::warn!(error = %e, "live stream: cannot check the token");
                true
            }
        }
    }

    /// Sleeps until the hub changes, the tick passes or the coordinator drains (`false`).
    async fn sleep(&mut self) -> bool {
        if std::mem::take(&mut self.first) {
            return true;
        }
        tokio::select! {
            _ = self.s.shutdown.cancelled() => false,
            _ = self.wake.changed() => true,
            _ = tokio::time::sleep(TICK) => true,
        }
    }

    fn push(&mut self, kind: &str, value: &impl serde::Serialize) {
        match Event::default().event(kind).json_data(value) {
            Ok(e) => self.queue.push_back(e),
            Err(e) => tracing::warn!(error = %e, kind, "stream event not encoded"),
        }
    }
}

/// One look: adds what is new to the cursor's queue; `false` ends the stream.
type Look<S> = for<'a> fn(&'a mut Cursor, &'a mut S) -> BoxFuture<'a, bool>;

/// Turns `look` (called after each wake) into an event stream that ends when `look` says so
/// or the coordinator drains.
fn stream<S: Send + 'static>(
    cursor: Cursor,
    state: S,
    look: Look<S>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((cursor, state), move |(mut c, mut st)| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                return Some((Ok(e), (c, st)));
            }
            if c.ended || !c.sleep().await {
                return None;
            }
            if !c.admitted().await || !look(&mut c, &mut st).await {
                c.ended = true;
            }
        }
    })
}

/// What a node stream has sent.
struct NodeSent {
    name: String,
    sample_ms: i64,
    bmc_ms: i64,
    /// The newest console line sent, and the error.
    console: Option<u64>,
    console_error: Option<String>,
    /// The detail last sent, whole and without what moves all the time, and when.
    detail: Option<(String, String, Instant)>,
}

/// A node's detail without what changes with every sample or BMC read.
fn steady(shown: &serde_json::Value) -> String {
    let mut v = shown.clone();
    if let Some(n) = v.pointer_mut("/node").and_then(|n| n.as_object_mut()) {
        n.remove("last_seen_ms");
    }
    if let Some(b) = v.pointer_mut("/bmc").and_then(|b| b.as_object_mut()) {
        b.remove("observed_at_ms");
        b.remove("sensors");
    }
    v.to_string()
}

/// One look at a node: its detail when it changed (at once when more than its last-seen time
/// and latest BMC reading changed, else every [`RESEND`]), its new samples and BMC reads.
async fn look_node(c: &mut Cursor, st: &mut NodeSent) -> bool {
    let detail = match nodes::show(&c.s, &c.caller, &st.name).await {
        Ok(d) => d,
        Err(e @ ConductorError::UnknownNode(_)) => {
            let p = ApiError::from(e).problem();
            c.push("gone", &p);
            return false;
        }
        // A store that fails now may answer on the next look; samples still go out.
        Err(e) => {
            tracing::warn!(node = %st.name, error = %e, "node stream: cannot read the node");
            push_records(c, st);
            return true;
        }
    };
    let mut shown = serde_json::to_value(&detail).unwrap_or_default();
    // The newest sample changes every second; it goes out as a sample of its own.
    if let Some(o) = shown.as_object_mut() {
        o.remove("telemetry");
    }
    let whole = shown.to_string();
    let still = steady(&shown);
    let send = match &st.detail {
        None => true,
        Some((w, s, at)) => *s != still || (*w != whole && at.elapsed() >= RESEND),
    };
    if send {
        c.push("node", &shown);
        st.detail = Some((whole, still, Instant::now()));
    }
    push_records(c, st);
    true
}

/// Queues the node's samples and BMC reads that arrived since the last look.
fn push_records(c: &mut Cursor, st: &mut NodeSent) {
    for r in c.s.hub.telemetry.since(&st.name, st.sample_ms) {
        st.sample_ms = st.sample_ms.max(r.received_at_ms);
        c.push("sample", &r);
    }
    for r in c.s.hub.bmc.since(&st.name, st.bmc_ms) {
        st.bmc_ms = st.bmc_ms.max(r.received_at_ms);
        c.push("bmc", &r);
    }
    // The newest 100 lines first, then every line as it comes; and the agent's error when
    // it changes.
    let limit = if st.console.is_none() {
        100
    } else {
        crate::hub::CONSOLE_RING
    };
    let tail = c.s.hub.consoles.since(&st.name, st.console, limit);
    // From the first look on, every line after the newest seen (0: all of them).
    st.console = tail.last_seq.or(st.console).or(Some(0));
    if !tail.lines.is_empty() || tail.error != st.console_error {
        st.console_error = tail.error.clone();
        c.push("console", &tail);
    }
}

/// `GET /v1/nodes/{name}/watch`: server-sent events of one node.
///
/// `node`: its detail (as `GET /v1/nodes/{name}` without `telemetry`) first and whenever it
/// changes; `sample`: each host sample (`TelemetryRecord`) of its agent or ramdisk as it
/// arrives; `bmc`: each read of its BMC (`BmcRecord`); `console`: its newest console lines,
/// then each batch as it comes (`ConsoleTail`); `gone`: a problem document when the
/// node is no longer there, and the stream ends; `unauthorized`: a problem document when the
/// token was revoked or expired, and the stream ends.
#[utoipa::path(
    get,
    path = "/v1/nodes/{name}/watch",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name"), WatchQuery),
    responses((status = 200, description = "Server-sent events: `node`, `sample`, `bmc`, `console`, `gone`, `unauthorized`", body = String, content_type = "text/event-stream"))
)]
async fn watch_node(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // An unknown node fails the call rather than the stream.
    nodes::find(&s.store, &name).await?;
    let after = q.after_ms.unwrap_or_else(|| crate::now_ms() - HISTORY_MS);
    let st = NodeSent {
        name,
        sample_ms: after,
        bmc_ms: after,
        console: None,
        console_error: None,
        detail: None,
    };
    let events = stream(Cursor::new(s, caller), st, |c, st| {
        Box::pin(look_node(c, st))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What the fleet stream sends: the caller's nodes, hosts and recent plans.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FleetView {
    /// Nodes, as `GET /v1/nodes`.
    pub nodes: Vec<nodes::NodeView>,
    /// Hypervisor hosts, as `GET /v1/hosts`.
    pub hosts: Vec<crate::conductor::placement::HostView>,
    /// The 50 newest plans, as `GET /v1/plans`.
    pub plans: Vec<ferric_api::plans::PlanView>,
}

async fn look_fleet(c: &mut Cursor, st: &mut (Caller, Option<String>)) -> bool {
    let (caller, sent) = st;
    let view = async {
        Ok::<_, crate::conductor::ConductorError>(FleetView {
            nodes: nodes::list(&c.s, caller).await?,
            hosts: guests::hosts(&c.s, |p| caller.sees(p)).await?,
            plans: plans::list(&c.s, caller, None, 50).await?,
        })
    }
    .await;
    match view {
        Ok(v) => {
            let text = serde_json::to_string(&v).unwrap_or_default();
            if sent.as_deref() != Some(text.as_str()) {
                c.push("fleet", &v);
                *sent = Some(text);
            }
        }
        // A store that fails now may answer on the next look.
        Err(e) => tracing::warn!(error = %e, "fleet stream: cannot read the fleet"),
    }
    true
}

/// `GET /v1/watch`: server-sent events of the fleet.
///
/// `fleet` (a `FleetView`: nodes, hosts, the 50 newest plans) first and whenever any of it
/// changes; `unauthorized` when the token was revoked or expired, and the stream ends.
#[utoipa::path(
    get,
    path = "/v1/watch",
    tag = "nodes",
    responses((status = 200, description = "Server-sent events: `fleet`, `unauthorized`", body = String, content_type = "text/event-stream"))
)]
async fn watch_fleet(
    State(s): State<Arc<Shared>>,
    Extension(c): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = stream(Cursor::new(s, c.clone()), (c, None), |c, st| {
        Box::pin(look_fleet(c, st))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
