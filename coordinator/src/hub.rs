//! Who is connected right now, how to push a plan to them, and their recent telemetry.

use crate::lock;
use ferric_proto::msg::{BmcState, TelemetrySample};
use ferric_proto::plan::Plan;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Samples kept per node at full rate (10 minutes at the default 1 s interval).
pub const TELEMETRY_RING: usize = 600;

/// The largest telemetry sample kept, encoded (a host with hundreds of guests, disks and
/// NICs fits in a few dozen KiB); a larger one is dropped.
pub const TELEMETRY_SAMPLE_MAX: usize = 64 << 10;

/// Memory one node's telemetry ring may hold, encoded bytes: past it the oldest samples go
/// first, so no agent pins more than this however large its samples.
pub const TELEMETRY_RING_BYTES: usize = 4 << 20;

/// How recent replacements count, ms (see [`Hub::may_replace`]).
pub const DUPLICATE_WINDOW_MS: i64 = 10_000;

/// How recently the connection in place must have been heard to count as alive, ms.
pub const DUPLICATE_ALIVE_MS: i64 = 5_000;

/// Replacements of a live connection within [`DUPLICATE_WINDOW_MS`] after which a new one is
/// refused as a second agent with the same identity (two live agents replace each other
/// several times a second; an agent restarted after a crash replaces its dead connection once).
pub const DUPLICATE_REPLACEMENTS: usize = 5;

/// When a node's live connection was replaced by a newer one, within the window.
#[derive(Debug, Default)]
struct Replacements(VecDeque<i64>);

impl Replacements {
    /// A replacement at `now_ms`.
    fn note(&mut self, now_ms: i64) {
        self.0.push_back(now_ms);
        if self.0.len() > DUPLICATE_REPLACEMENTS {
            self.0.pop_front();
        }
    }

    /// Whether one more may happen at `now_ms`.
    fn allow(&mut self, now_ms: i64) -> bool {
        while self
            .0
            .front()
            .is_some_and(|t| now_ms - t > DUPLICATE_WINDOW_MS)
        {
            self.0.pop_front();
        }
        self.0.len() < DUPLICATE_REPLACEMENTS
    }
}

/// Console lines kept per node (the dashboard shows the last few dozen).
pub const CONSOLE_RING: usize = 1000;

/// One line of a node's serial console, as the coordinator received it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConsoleLine {
    /// Number of the line since the coordinator started (ask for those after it).
    pub seq: u64,
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// The text, without terminal escapes.
    pub text: String,
}

/// The console lines of a node the hub holds, and why its log was last not read.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConsoleTail {
    /// Oldest first.
    pub lines: Vec<ConsoleLine>,
    /// The agent's reason the log cannot be read, until a line arrives again.
    pub error: Option<String>,
    /// Number of the newest line held (what to ask for lines after, to get only new ones).
    pub last_seq: Option<u64>,
    /// Where line numbers count from (ms since the epoch; fixed for a coordinator's run): a
    /// reader that sees it change, the coordinator restarted, starts over.
    pub epoch_ms: i64,
}

#[derive(Debug, Default)]
struct ConsoleRing {
    lines: VecDeque<ConsoleLine>,
    error: Option<String>,
}

/// `line` with the secret of a per-boot token on it hidden: a ramdisk's kernel command line
/// (`ferric.token=ID.SECRET`) is printed on its console, which readers may read.
pub fn redact_boot_token(line: &str) -> String {
    const KEY: &str = "ferric.token=";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(KEY) {
        let (before, after) = rest.split_at(at + KEY.len());
        out.push_str(before);
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = &after[..end];
        // Keep the token's id (which boot), hide its secret.
        match token.split_once('.') {
            Some((id, _)) => {
                out.push_str(id);
                out.push_str(".…");
            }
            None => out.push('…'),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Sensors one BMC read keeps (a BMC reports a few dozen).
pub const BMC_SENSORS_MAX: usize = 256;

/// A telemetry sample as received.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TelemetryRecord {
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// The sample.
    pub sample: TelemetrySample,
    /// Its encoded size, counted against [`TELEMETRY_RING_BYTES`].
    #[serde(skip)]
    pub bytes: usize,
}

/// A telemetry sample as a node's ring holds it: encoded, as it came (a decoded sample's
/// vectors and strings take several times its encoded size, which at 600 samples per node
/// was most of the coordinator's memory per agent), decoded when read.
#[derive(Debug, Clone)]
struct HeldSample {
    received_at_ms: i64,
    seq: u64,
    at_ms: u64,
    frame: Box<[u8]>,
}

impl HeldSample {
    fn record(&self) -> Option<TelemetryRecord> {
        let payload = self.frame.get(ferric_proto::frame::HEADER_LEN..)?;
        let sample = ferric_proto::frame::decode_payload(payload).ok()?;
        Some(TelemetryRecord {
            received_at_ms: self.received_at_ms,
            sample,
            bytes: self.frame.len(),
        })
    }
}

/// One read of a bare-metal node's BMC as received (its telemetry: the management agent polls
/// it every `--bmc-poll`, sensors every third time).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BmcRecord {
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// What the agent read (no sensors when it did not read them this time).
    pub bmc: BmcState,
}

/// A stage a node's network boot reached, and when (coordinator clock, ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BootMark {
    /// The stage.
    pub stage: crate::model::BootStage,
    /// When.
    pub at_ms: i64,
}

/// Boot stages kept per node (a few boots' worth).
const BOOT_MARKS: usize = 64;

/// What the hub hands a connection to send to its agent.
#[derive(Debug, Clone)]
pub enum Push {
    /// A stored plan.
    Plan(Plan),
    /// The set of BMCs the agent drives changed: reload it from the store and send it.
    Bmcs,
    /// An operator asked to cancel this plan of the agent's.
    Cancel(ferric_proto::plan::PlanId),
}

#[derive(Debug)]
struct Live {
    conn_id: u64,
    plans: mpsc::UnboundedSender<Push>,
    conn: quinn::Connection,
    since_ms: i64,
    /// When the agent last sent anything: a control frame, a telemetry datagram or stream.
    heard_ms: i64,
    /// A bare-metal node's ramdisk of the boot Ferric runs for it (given work, taken for the
    /// lifecycle's call back); false for agents and for a ramdisk whose machine left it.
    resident: bool,
}

/// Connected agents and telemetry rings.
#[derive(Debug, Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Live>>,
    telemetry: Mutex<HashMap<String, VecDeque<HeldSample>>>,
    bmc_states: Mutex<HashMap<String, BmcState>>,
    bmc_records: Mutex<HashMap<String, VecDeque<BmcRecord>>>,
    boot_marks: Mutex<HashMap<String, VecDeque<BootMark>>>,
    consoles: Mutex<(u64, HashMap<String, ConsoleRing>)>,
    console_epoch: std::sync::OnceLock<i64>,
    /// When each node's connection was last replaced by a newer one.
    replaced: Mutex<HashMap<String, Replacements>>,
    /// Bumped whenever something a watcher shows arrived (a sample, a BMC read, a boot mark,
    /// a connection come or gone): the dashboard's streams wake on it.
    changes: tokio::sync::watch::Sender<u64>,
}

/// A record kept in a per-node ring, stamped when it arrived.
trait Received: Clone {
    fn received_at_ms(&self) -> i64;
    fn set_received_at_ms(&mut self, ms: i64);
    /// What it costs the ring's byte budget (0: counted by number only).
    fn bytes(&self) -> usize {
        0
    }
}

impl Received for HeldSample {
    fn received_at_ms(&self) -> i64 {
        self.received_at_ms
    }
    fn set_received_at_ms(&mut self, ms: i64) {
        self.received_at_ms = ms;
    }
    fn bytes(&self) -> usize {
        self.frame.len()
    }
}

impl Received for BmcRecord {
    fn received_at_ms(&self) -> i64 {
        self.received_at_ms
    }
    fn set_received_at_ms(&mut self, ms: i64) {
        self.received_at_ms = ms;
    }
}

/// Appends to `node`'s ring unless `stale(newest, r)` (a late arrival does not rewrite
/// history), dropping the oldest past [`TELEMETRY_RING`] records or
/// [`TELEMETRY_RING_BYTES`]. Arrival stamps within a ring strictly increase (one that came in
/// the same millisecond as the one before is stamped a millisecond later), so a reader that
/// asks for what came after the last stamp it saw misses nothing and gets nothing twice.
fn push_ring<T: Received>(
    rings: &Mutex<HashMap<String, VecDeque<T>>>,
    node: &str,
    mut r: T,
    stale: impl FnOnce(&T, &T) -> bool,
) {
    let mut rings = lock(rings);
    let ring = rings.entry(node.to_owned()).or_default();
    if let Some(b) = ring.back() {
        if stale(b, &r) {
            return;
        }
        if r.received_at_ms() <= b.received_at_ms() {
            r.set_received_at_ms(b.received_at_ms() + 1);
        }
    }
    if ring.len() == TELEMETRY_RING {
        ring.pop_front();
    }
    ring.push_back(r);
    let mut held: usize = ring.iter().map(Received::bytes).sum();
    while held > TELEMETRY_RING_BYTES && ring.len() > 1 {
        held -= ring.pop_front().map_or(0, |x| x.bytes());
    }
}

/// `node`'s records received after `after_ms`, oldest first.
fn ring_since<T: Received>(
    rings: &Mutex<HashMap<String, VecDeque<T>>>,
    node: &str,
    after_ms: i64,
) -> Vec<T> {
    lock(rings)
        .get(node)
        .map(|r| {
            r.iter()
                .filter(|x| x.received_at_ms() > after_ms)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

impl Hub {
    /// Wakes the watchers.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees each change the hub records (telemetry, BMC reads, boot marks,
    /// connections): what the API's live streams wait on.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Registers the connection of `node`, closing an older one of the same node; `resident`
    /// when it is the ramdisk of the boot Ferric runs for the node.
    pub fn register(
        &self,
        node: &str,
        conn_id: u64,
        conn: quinn::Connection,
        plans: mpsc::UnboundedSender<Push>,
        now_ms: i64,
        resident: bool,
    ) {
        let old = lock(&self.live).insert(
            node.to_owned(),
            Live {
                conn_id,
                plans,
                conn,
                since_ms: now_ms,
                heard_ms: now_ms,
                resident,
            },
        );
        if let Some(old) = old {
            old.conn.close(
                ferric_proto::close::REPLACED.into(),
                b"replaced by a newer connection of the same node",
            );
            lock(&self.replaced)
                .entry(node.to_owned())
                .or_default()
                .note(now_ms);
        }
        self.changed();
    }

    /// Whether a new connection of `node` may replace the one it has at `now_ms`: not when the
    /// one it has is alive (heard within [`DUPLICATE_ALIVE_MS`]) and has been replaced
    /// [`DUPLICATE_REPLACEMENTS`] times within that window — two agents that share an identity
    /// would otherwise replace each other forever. An agent that reconnects after a broken
    /// link replaces its half-open connection as before.
    pub fn may_replace(&self, node: &str, now_ms: i64) -> bool {
        let alive = lock(&self.live)
            .get(node)
            .is_some_and(|l| now_ms - l.heard_ms < DUPLICATE_ALIVE_MS);
        !alive
            || lock(&self.replaced)
                .get_mut(node)
                .is_none_or(|r| r.allow(now_ms))
    }

    /// Removes the connection if it is still the registered one; returns when the agent was
    /// last heard on it.
    pub fn unregister(&self, node: &str, conn_id: u64) -> Option<i64> {
        let mut live = lock(&self.live);
        if live.get(node).is_some_and(|l| l.conn_id == conn_id) {
            let heard = live.remove(node).map(|l| l.heard_ms);
            drop(live);
            self.changed();
            return heard;
        }
        None
    }

    /// Closes and forgets `node`'s connection (a ramdisk whose machine rebooted into its
    /// deployed system: its link is gone, whatever the idle timeout says).
    pub fn disconnect(&self, node: &str, reason: &[u8]) {
        if let Some(l) = lock(&self.live).remove(node) {
            l.conn.close(ferric_proto::close::SHUTDOWN.into(), reason);
        }
    }

    /// Notes that the agent sent something on its connection.
    pub fn heard(&self, node: &str, conn_id: u64, now_ms: i64) {
        if let Some(l) = lock(&self.live).get_mut(node)
            && l.conn_id == conn_id
        {
            l.heard_ms = l.heard_ms.max(now_ms);
        }
    }

    /// Notes that `node`'s network boot reached `stage`.
    pub fn boot_mark(&self, node: &str, stage: crate::model::BootStage, at_ms: i64) {
        let mut m = lock(&self.boot_marks);
        let ring = m.entry(node.to_owned()).or_default();
        if ring.len() == BOOT_MARKS {
            ring.pop_front();
        }
        ring.push_back(BootMark { stage, at_ms });
        drop(m);
        self.changed();
    }

    /// Notes that `node`'s machine left its ramdisk (rebooted into its image, or its power was
    /// cut), closing the ramdisk's link.
    pub fn ramdisk_gone(&self, node: &str, why: &[u8], now_ms: i64) {
        self.ramdisk_leaving(node, now_ms);
        self.disconnect(node, why);
    }

    /// Notes that `node`'s ramdisk is about to reboot the machine into its image: no longer
    /// resident, but its link stays, so that its last reports (the reboot's own) and their
    /// acknowledgements still flow; it waits for them, then its reboot ends the link.
    pub fn ramdisk_leaving(&self, node: &str, now_ms: i64) {
        self.set_resident(node, false);
        self.boot_mark(node, crate::model::BootStage::Rebooted, now_ms);
    }

    /// Whether `node`'s connection is the ramdisk of the boot Ferric runs for it (see
    /// [`crate::conductor::network_boot::admit_ramdisk`]), and its machine has not left it.
    pub fn ramdisk_resident(&self, node: &str) -> bool {
        lock(&self.live).get(node).is_some_and(|l| l.resident)
    }

    /// Marks `node`'s connection (if any) as its boot's resident ramdisk, or no longer.
    pub fn set_resident(&self, node: &str, resident: bool) {
        if let Some(l) = lock(&self.live).get_mut(node) {
            l.resident = resident;
        }
    }

    /// The stages `node`'s network boots reached, oldest first.
    pub fn boot_marks(&self, node: &str) -> Vec<BootMark> {
        lock(&self.boot_marks)
            .get(node)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// When a connected agent last sent anything (`None`: not connected).
    pub fn last_heard(&self, node: &str) -> Option<i64> {
        lock(&self.live).get(node).map(|l| l.heard_ms)
    }

    /// Pushes a stored plan to its node if connected; returns whether it was handed over.
    /// A plan that is not handed over is delivered when the agent next says hello.
    pub fn push(&self, plan: Plan) -> bool {
        let live = lock(&self.live);
        match live.get(&plan.node) {
            Some(l) => l.plans.send(Push::Plan(plan)).is_ok(),
            None => false,
        }
    }

    /// Tells the connection of agent `node` (if any) to cancel `plan`; whether it is connected.
    pub fn push_cancel(&self, node: &str, plan: ferric_proto::plan::PlanId) -> bool {
        match lock(&self.live).get(node) {
            Some(l) => l.plans.send(Push::Cancel(plan)).is_ok(),
            None => false,
        }
    }

    /// Tells the connection of agent `node` (if any) to resend the BMCs it drives.
    pub fn push_bmcs(&self, node: &str) -> bool {
        match lock(&self.live).get(node) {
            Some(l) => l.plans.send(Push::Bmcs).is_ok(),
            None => false,
        }
    }

    /// Keeps the newest state read from a BMC (sensors included), by bare-metal node name.
    pub fn record_bmc(&self, mut state: BmcState, now_ms: i64) {
        // An agent cannot make the coordinator hold more than this per read (a ring holds
        // 600 reads per node).
        use ferric_proto::msg::cut_chars;
        state.sensors.truncate(BMC_SENSORS_MAX);
        for r in &mut state.sensors {
            r.name = cut_chars(std::mem::take(&mut r.name), 64);
            r.kind = cut_chars(std::mem::take(&mut r.kind), 32);
            r.unit = cut_chars(std::mem::take(&mut r.unit), 32);
        }
        state.error = state.error.map(|e| cut_chars(e, 1024));
        // The ring keeps each read as it was; the view carries sensors over.
        let read = state.clone();
        let mut m = lock(&self.bmc_states);
        if let Some(old) = m.get(&state.name) {
            if old.at_ms > state.at_ms {
                return; // newest wins
            }
            // A poll without sensors keeps the last readings (sensors are read every third
            // poll); a failed read drops them, as they may no longer be true.
            if state.sensors.is_empty() && state.error.is_none() {
                state.sensors = old.sensors.clone();
            }
        }
        push_ring(
            &self.bmc_records,
            &state.name,
            BmcRecord {
                received_at_ms: now_ms,
                bmc: read,
            },
            |b, r| b.bmc.at_ms > r.bmc.at_ms,
        );
        m.insert(state.name.clone(), state);
        drop(m);
        self.changed();
    }

    /// The BMC reads of bare-metal node `node` received after `after_ms`.
    pub fn bmc_since(&self, node: &str, after_ms: i64) -> Vec<BmcRecord> {
        ring_since(&self.bmc_records, node, after_ms)
    }

    /// The newest state read from the BMC of `node`.
    pub fn bmc_state(&self, node: &str) -> Option<BmcState> {
        lock(&self.bmc_states).get(node).cloned()
    }

    /// Forgets a BMC (its node was removed).
    pub fn forget_bmc(&self, node: &str) {
        lock(&self.bmc_states).remove(node);
        lock(&self.bmc_records).remove(node);
    }

    /// Keeps console lines of `node` (at most [`CONSOLE_RING`], each cut to the protocol's
    /// line length: an agent cannot make the coordinator hold more), and the error reading it
    /// as the agent says it now (`None`: read fine; cut to 1 KiB).
    pub fn record_console(
        &self,
        node: &str,
        lines: Vec<String>,
        error: Option<String>,
        now_ms: i64,
    ) {
        let mut g = lock(&self.consoles);
        let (seq, rings) = &mut *g;
        let ring = rings.entry(node.to_owned()).or_default();
        use ferric_proto::msg::{CONSOLE_ERROR_MAX, CONSOLE_LINE_MAX, cut_chars};
        ring.error = error.map(|e| cut_chars(e, CONSOLE_ERROR_MAX));
        let skip = lines.len().saturating_sub(CONSOLE_RING);
        for text in lines.into_iter().skip(skip) {
            let text = redact_boot_token(&cut_chars(text, CONSOLE_LINE_MAX));
            *seq += 1;
            if ring.lines.len() == CONSOLE_RING {
                ring.lines.pop_front();
            }
            ring.lines.push_back(ConsoleLine {
                seq: *seq,
                received_at_ms: now_ms,
                text,
            });
        }
        drop(g);
        self.changed();
    }

    /// The console lines of `node` after line `after` (all held when `None`), the newest
    /// `limit` of them.
    pub fn console_since(&self, node: &str, after: Option<u64>, limit: usize) -> ConsoleTail {
        let epoch_ms = *self.console_epoch.get_or_init(crate::now_ms);
        let g = lock(&self.consoles);
        let Some(ring) = g.1.get(node) else {
            return ConsoleTail {
                epoch_ms,
                ..ConsoleTail::default()
            };
        };
        let new: Vec<&ConsoleLine> = ring
            .lines
            .iter()
            .filter(|l| after.is_none_or(|a| l.seq > a))
            .collect();
        ConsoleTail {
            lines: new[new.len().saturating_sub(limit)..]
                .iter()
                .map(|l| (*l).clone())
                .collect(),
            error: ring.error.clone(),
            last_seq: ring.lines.back().map(|l| l.seq),
            epoch_ms,
        }
    }

    /// Forgets a node's console (it was removed).
    pub fn forget_console(&self, node: &str) {
        lock(&self.consoles).1.remove(node);
    }

    /// Whether `node` is connected, and since when (ms since the epoch).
    pub fn connected_since(&self, node: &str) -> Option<i64> {
        lock(&self.live).get(node).map(|l| l.since_ms)
    }

    /// Number of connected agents.
    pub fn connected(&self) -> usize {
        lock(&self.live).len()
    }

    /// Closes every agent connection (drain).
    pub fn close_all(&self, reason: &[u8]) {
        for l in lock(&self.live).values() {
            l.conn.close(ferric_proto::close::SHUTDOWN.into(), reason);
        }
    }

    /// Records a sample; older samples past the ring's bounds are dropped, out-of-order ones
    /// and ones over [`TELEMETRY_SAMPLE_MAX`] too.
    pub fn record_telemetry(&self, node: &str, sample: TelemetrySample, now_ms: i64) {
        let frame = match ferric_proto::frame::to_frame(&sample, TELEMETRY_SAMPLE_MAX) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%node, max = TELEMETRY_SAMPLE_MAX, error = %e, "telemetry sample dropped");
                return;
            }
        };
        push_ring(
            &self.telemetry,
            node,
            HeldSample {
                received_at_ms: now_ms,
                seq: sample.seq,
                at_ms: sample.at_ms,
                frame: frame.into_boxed_slice(),
            },
            |b, r| b.seq >= r.seq && b.at_ms >= r.at_ms,
        );
        self.changed();
    }

    /// Samples of `node` received after `after_ms` (oldest first).
    pub fn telemetry_since(&self, node: &str, after_ms: i64) -> Vec<TelemetryRecord> {
        ring_since(&self.telemetry, node, after_ms)
            .iter()
            .filter_map(HeldSample::record)
            .collect()
    }

    /// The newest sample of `node`.
    pub fn latest_telemetry(&self, node: &str) -> Option<TelemetryRecord> {
        lock(&self.telemetry)
            .get(node)
            .and_then(|r| r.back().and_then(HeldSample::record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferric_proto::msg::SensorReading;

    fn read(at_ms: u64, sensors: usize, error: bool) -> BmcState {
        BmcState {
            name: "bm1".into(),
            at_ms,
            power_on: (!error).then_some(true),
            sensors: (0..sensors)
                .map(|i| SensorReading {
                    name: format!("s{i}"),
                    kind: "temperature".into(),
                    value: Some(40.0),
                    unit: "degrees C".into(),
                })
                .collect(),
            error: error.then(|| "bmc `bm1`: no answer".into()),
        }
    }

    #[test]
    fn bmc_reads_keep_the_last_sensors_until_a_read_fails_and_older_reads_lose() {
        let hub = Hub::default();
        hub.record_bmc(read(10, 2, false), 100);
        hub.record_bmc(read(20, 0, false), 200);
        assert_eq!(hub.bmc_state("bm1").unwrap().sensors.len(), 2);
        assert_eq!(hub.bmc_state("bm1").unwrap().at_ms, 20);
        // A late datagram does not rewrite history, in the view or in the telemetry ring.
        hub.record_bmc(read(15, 3, false), 250);
        assert_eq!(hub.bmc_state("bm1").unwrap().at_ms, 20);
        let ring = hub.bmc_since("bm1", 0);
        assert_eq!(
            ring.iter().map(|r| r.bmc.at_ms).collect::<Vec<_>>(),
            [10, 20]
        );
        // The telemetry shows each read as it was: no sensors where none were read.
        assert_eq!(ring[1].bmc.sensors.len(), 0);
        assert_eq!(hub.bmc_since("bm1", 100).len(), 1);
        hub.record_bmc(read(30, 0, true), 300);
        assert!(hub.bmc_state("bm1").unwrap().sensors.is_empty());
        hub.forget_bmc("bm1");
        assert!(hub.bmc_state("bm1").is_none() && hub.bmc_since("bm1", 0).is_empty());
    }

    #[test]
    fn records_of_the_same_millisecond_get_distinct_stamps_so_a_reader_misses_none() {
        let hub = Hub::default();
        hub.record_telemetry("n1", sample(1, 0), 500);
        let seen = hub.telemetry_since("n1", 0);
        // Arrives in the millisecond the reader last saw.
        hub.record_telemetry("n1", sample(2, 0), 500);
        let after = hub.telemetry_since("n1", seen[0].received_at_ms);
        assert_eq!(after.len(), 1, "the second sample of ms 500 is not lost");
        assert_eq!(after[0].received_at_ms, 501);
        hub.record_bmc(read(10, 0, false), 700);
        hub.record_bmc(read(11, 0, false), 700);
        let stamps: Vec<i64> = hub
            .bmc_since("bm1", 0)
            .iter()
            .map(|r| r.received_at_ms)
            .collect();
        assert_eq!(stamps, [700, 701]);
    }

    #[test]
    fn a_per_boot_token_on_a_console_keeps_its_id_and_loses_its_secret() {
        assert_eq!(
            redact_boot_token("Kernel command line: ferric.token=b123456789.abcdef ferric.node=n0"),
            "Kernel command line: ferric.token=b123456789.… ferric.node=n0"
        );
        assert_eq!(redact_boot_token("x ferric.token=zzz"), "x ferric.token=…");
        assert_eq!(redact_boot_token("nothing here"), "nothing here");
        let hub = Hub::default();
        hub.record_console("n0", vec!["ferric.token=bq.s3cret".into()], None, 1);
        let tail = hub.console_since("n0", None, 10);
        assert!(!tail.lines[0].text.contains("s3cret"), "{:?}", tail.lines);
    }

    #[test]
    fn two_live_agents_of_one_identity_stop_replacing_each_other() {
        let mut r = Replacements::default();
        let mut t = 1_000;
        let mut allowed = 0;
        while r.allow(t) {
            r.note(t);
            allowed += 1;
            t += 300;
        }
        assert_eq!(allowed, DUPLICATE_REPLACEMENTS);
        // A while later (one agent gave up, or the other restarted once), it may again.
        assert!(r.allow(t + DUPLICATE_WINDOW_MS));
        // No connection in place: anyone may come.
        assert!(Hub::default().may_replace("n1", 0));
    }

    #[test]
    fn console_lines_are_numbered_bounded_and_cut() {
        let hub = Hub::default();
        assert!(hub.console_since("bm1", None, 10).lines.is_empty());
        let many: Vec<String> = (0..CONSOLE_RING + 5).map(|i| format!("line {i}")).collect();
        hub.record_console("bm1", many, None, 1);
        let all = hub.console_since("bm1", None, usize::MAX);
        assert_eq!(all.lines.len(), CONSOLE_RING);
        assert_eq!(all.lines[0].text, "line 5");
        let last = all.lines.last().unwrap().seq;
        hub.record_console("bm1", vec!["x".repeat(5000)], None, 2);
        let new = hub.console_since("bm1", Some(last), 10);
        assert_eq!(new.lines.len(), 1);
        assert_eq!(new.lines[0].seq, last + 1);
        assert_eq!(new.lines[0].text.len(), ferric_proto::msg::CONSOLE_LINE_MAX);
        assert_eq!(
            hub.console_since("bm1", None, 3).lines.len(),
            3,
            "the newest 3"
        );
        // The error is what the agent said last (it says so when it changes), cut.
        hub.record_console("bm1", vec![], Some("x".repeat(5000)), 3);
        assert_eq!(hub.console_since("bm1", None, 1).error.unwrap().len(), 1024);
        hub.record_console("bm1", vec![], None, 4);
        assert!(hub.console_since("bm1", None, 1).error.is_none());
        let epoch = hub.console_since("bm1", None, 1).epoch_ms;
        assert!(epoch > 0 && epoch == hub.console_since("bm9", None, 1).epoch_ms);
        hub.forget_console("bm1");
        assert!(hub.console_since("bm1", None, 10).lines.is_empty());
    }

    /// A sample whose guest list encodes to about `bytes`.
    fn sample(seq: u64, bytes: usize) -> TelemetrySample {
        let guests = (0..bytes / 1024)
            .map(|i| ferric_proto::msg::GuestSample {
                name: format!("g{i}"),
                running: true,
                vcpus: 1,
                memory_mib: 512,
                cpu_percent: 0.0,
                mem_bytes: 0,
                block_rd_bytes: 0,
                block_wr_bytes: 0,
                net_rx_bytes: 0,
                net_tx_bytes: 0,
                missing_disks: vec!["x".repeat(990)],
                disk_sizes: vec![],
            })
            .collect();
        TelemetrySample {
            seq,
            at_ms: seq * 1000,
            cpu_percent: 1.0,
            cpus: 2,
            mem_used_bytes: 1,
            mem_total_bytes: 2,
            load1: 0.1,
            disks: vec![],
            nics: vec![],
            progress: None,
            guests,
        }
    }

    #[test]
    fn telemetry_rings_are_bounded_in_bytes_and_a_sample_too_large_is_dropped() {
        let hub = Hub::default();
        // Small samples: kept by number, 600 of them.
        for seq in 1..=700 {
            hub.record_telemetry("small", sample(seq, 0), seq as i64);
        }
        assert_eq!(hub.telemetry_since("small", 0).len(), TELEMETRY_RING);
        // 60 KiB samples: what the ring holds stays within its byte budget, newest kept.
        for seq in 1..=700 {
            hub.record_telemetry("big", sample(seq, 60 << 10), seq as i64);
        }
        let ring = hub.telemetry_since("big", 0);
        let held: usize = ring.iter().map(|r| r.bytes).sum();
        assert!(held <= TELEMETRY_RING_BYTES, "{held} bytes held");
        assert!(ring.len() > 10 && ring.len() < 100, "{} kept", ring.len());
        assert_eq!(ring.last().unwrap().sample.seq, 700);
        assert!(ring.iter().all(|r| r.bytes > 50 << 10));
        // One over the sample limit is not kept at all.
        hub.record_telemetry("big", sample(701, 80 << 10), 701);
        assert_eq!(hub.latest_telemetry("big").unwrap().sample.seq, 700);
    }
}
