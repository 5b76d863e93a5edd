//! Per-node rings of records stamped on arrival, bounded by number and bytes.

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Samples kept per node at full rate (10 minutes at the default 1 s interval).
pub const TELEMETRY_RING: usize = 600;

/// Memory one node's telemetry ring may hold, encoded bytes: past it the oldest samples go
/// first, so no agent pins more than this however large its samples.
pub const TELEMETRY_RING_BYTES: usize = 4 << 20;

/// A record kept in a per-node ring, stamped when it arrived.
pub(super) trait Received: Clone {
    fn received_at_ms(&self) -> i64;
    fn set_received_at_ms(&mut self, ms: i64);
    /// What it costs the ring's byte budget (0: counted by number only).
    fn bytes(&self) -> usize {
        0
    }
}

/// Appends to `node`'s ring unless `stale(newest, r)` (a late arrival does not rewrite
/// history), dropping the oldest past [`TELEMETRY_RING`] records or
/// [`TELEMETRY_RING_BYTES`]. Arrival stamps within a ring strictly increase (one that came in
/// the same millisecond as the one before is stamped a millisecond later), so a reader that
/// asks for what came after the last stamp it saw misses nothing and gets nothing twice.
pub(super) fn push_ring<T: Received>(
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
pub(super) fn ring_since<T: Received>(
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
