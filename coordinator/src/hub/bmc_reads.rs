//! Bare-metal nodes' BMC reads: the newest per node (sensors carried over reads that do not
//! read them) and a ring of each read as it was.

use super::Changes;
use super::rings::{Received, push_ring, ring_since};
use crate::lock;
pub use ferric_api::records::BmcRecord;
use ferric_proto::msg::BmcState;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Sensors one BMC read keeps (a BMC reports a few dozen).
pub const BMC_SENSORS_MAX: usize = 256;

impl Received for BmcRecord {
    fn received_at_ms(&self) -> i64 {
        self.received_at_ms
    }
    fn set_received_at_ms(&mut self, ms: i64) {
        self.received_at_ms = ms;
    }
}

/// BMC reads by bare-metal node.
#[derive(Debug)]
pub struct BmcReads {
    states: Mutex<HashMap<String, BmcState>>,
    records: Mutex<HashMap<String, VecDeque<BmcRecord>>>,
    changes: Changes,
}

impl BmcReads {
    /// None yet.
    pub fn new(changes: Changes) -> Self {
        BmcReads {
            states: Mutex::default(),
            records: Mutex::default(),
            changes,
        }
    }

    /// Keeps the newest state read from a BMC (sensors included), by bare-metal node name.
    pub fn record(&self, mut state: BmcState, now_ms: i64) {
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
        let mut m = lock(&self.states);
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
            &self.records,
            &state.name,
            BmcRecord {
                received_at_ms: now_ms,
                bmc: read,
            },
            |b, r| b.bmc.at_ms > r.bmc.at_ms,
        );
        m.insert(state.name.clone(), state);
        drop(m);
        self.changes.bump();
    }

    /// The BMC reads of bare-metal node `node` received after `after_ms`.
    pub fn since(&self, node: &str, after_ms: i64) -> Vec<BmcRecord> {
        ring_since(&self.records, node, after_ms)
    }

    /// The newest state read from the BMC of `node`.
    pub fn state(&self, node: &str) -> Option<BmcState> {
        lock(&self.states).get(node).cloned()
    }

    /// Forgets a BMC (its node was removed).
    pub fn forget(&self, node: &str) {
        lock(&self.states).remove(node);
        lock(&self.records).remove(node);
    }
}
