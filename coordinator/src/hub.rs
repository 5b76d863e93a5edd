//! Who is connected right now, how to push a plan to them, and their recent telemetry.

use ferric_proto::msg::{BmcState, TelemetrySample};
use ferric_proto::plan::Plan;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Samples kept per node at full rate (10 minutes at the default 1 s interval).
pub const TELEMETRY_RING: usize = 600;

/// A telemetry sample as received.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryRecord {
    /// Coordinator clock at receipt, ms since the epoch.
    pub received_at_ms: i64,
    /// The sample.
    pub sample: TelemetrySample,
}

/// What the hub hands a connection to send to its agent.
#[derive(Debug, Clone)]
pub enum Push {
    /// A stored plan.
    Plan(Plan),
    /// The set of BMCs the agent drives changed: reload it from the store and send it.
    Bmcs,
}

#[derive(Debug)]
struct Live {
    conn_id: u64,
    plans: mpsc::UnboundedSender<Push>,
    conn: quinn::Connection,
    since_ms: i64,
}

/// Connected agents and telemetry rings.
#[derive(Debug, Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Live>>,
    telemetry: Mutex<HashMap<String, VecDeque<TelemetryRecord>>>,
    bmc_states: Mutex<HashMap<String, BmcState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (single inserts
    // and removals), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Registers the connection of `node`, closing an older one of the same node.
    pub fn register(
        &self,
        node: &str,
        conn_id: u64,
        conn: quinn::Connection,
        plans: mpsc::UnboundedSender<Push>,
        now_ms: i64,
    ) {
        let old = lock(&self.live).insert(
            node.to_owned(),
            Live {
                conn_id,
                plans,
                conn,
                since_ms: now_ms,
            },
        );
        if let Some(old) = old {
            old.conn.close(
                ferric_proto::close::REPLACED.into(),
                b"replaced by a newer connection of the same node",
            );
        }
    }

    /// Removes the connection if it is still the registered one.
    pub fn unregister(&self, node: &str, conn_id: u64) {
        let mut live = lock(&self.live);
        if live.get(node).is_some_and(|l| l.conn_id == conn_id) {
            live.remove(node);
        }
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

    /// Tells the connection of agent `node` (if any) to resend the BMCs it drives.
    pub fn push_bmcs(&self, node: &str) -> bool {
        match lock(&self.live).get(node) {
            Some(l) => l.plans.send(Push::Bmcs).is_ok(),
            None => false,
        }
    }

    /// Keeps the newest state read from a BMC (sensors included), by bare-metal node name.
    pub fn record_bmc(&self, state: BmcState) {
        let mut m = lock(&self.bmc_states);
        if m.get(&state.name)
            .is_some_and(|old| old.at_ms > state.at_ms)
        {
            return;
        }
        m.insert(state.name.clone(), state);
    }

    /// The newest state read from the BMC of `node`.
    pub fn bmc_state(&self, node: &str) -> Option<BmcState> {
        lock(&self.bmc_states).get(node).cloned()
    }

    /// Forgets a BMC (its node was removed).
    pub fn forget_bmc(&self, node: &str) {
        lock(&self.bmc_states).remove(node);
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

    /// Records a sample; older samples past the ring size are dropped, out-of-order ones too.
    pub fn record_telemetry(&self, node: &str, sample: TelemetrySample, now_ms: i64) {
        let mut t = lock(&self.telemetry);
        let ring = t.entry(node.to_owned()).or_default();
        if ring
            .back()
            .is_some_and(|r| r.sample.seq >= sample.seq && r.sample.at_ms >= sample.at_ms)
        {
            return; // newest wins: a late datagram does not rewrite history
        }
        if ring.len() == TELEMETRY_RING {
            ring.pop_front();
        }
        ring.push_back(TelemetryRecord {
            received_at_ms: now_ms,
            sample,
        });
    }

    /// Samples of `node` received after `after_ms` (oldest first).
    pub fn telemetry_since(&self, node: &str, after_ms: i64) -> Vec<TelemetryRecord> {
        lock(&self.telemetry)
            .get(node)
            .map(|r| {
                r.iter()
                    .filter(|x| x.received_at_ms > after_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The newest sample of `node`.
    pub fn latest_telemetry(&self, node: &str) -> Option<TelemetryRecord> {
        lock(&self.telemetry)
            .get(node)
            .and_then(|r| r.back().cloned())
    }
}
