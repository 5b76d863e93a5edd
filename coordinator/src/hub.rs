//! Who is connected right now, how to push a plan to them, and their recent telemetry.

use ferric_proto::msg::TelemetrySample;
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

#[derive(Debug)]
struct Live {
    conn_id: u64,
    plans: mpsc::UnboundedSender<Plan>,
    conn: quinn::Connection,
    since_ms: i64,
}

/// Connected agents and telemetry rings.
#[derive(Debug, Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Live>>,
    telemetry: Mutex<HashMap<String, VecDeque<TelemetryRecord>>>,
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
        plans: mpsc::UnboundedSender<Plan>,
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
            Some(l) => l.plans.send(plan).is_ok(),
            None => false,
        }
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
