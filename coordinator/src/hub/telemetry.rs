//! Agents' telemetry samples, held encoded and decoded when read.

use super::Changes;
use super::rings::{Received, push_ring, ring_since};
use crate::lock;
pub use ferric_api::records::TelemetryRecord;
use ferric_proto::msg::TelemetrySample;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The largest telemetry sample kept, encoded (a host with hundreds of guests, disks and
/// NICs fits in a few dozen KiB); a larger one is dropped.
pub const TELEMETRY_SAMPLE_MAX: usize = 64 << 10;

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
        })
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

/// Telemetry samples by node.
#[derive(Debug)]
pub struct Telemetry {
    rings: Mutex<HashMap<String, VecDeque<HeldSample>>>,
    changes: Changes,
}

impl Telemetry {
    /// None yet.
    pub fn new(changes: Changes) -> Self {
        Telemetry {
            rings: Mutex::default(),
            changes,
        }
    }

    /// Records a sample; older samples past the ring's bounds are dropped, out-of-order ones
    /// and ones over [`TELEMETRY_SAMPLE_MAX`] too.
    pub fn record(&self, node: &str, sample: TelemetrySample, now_ms: i64) {
        let frame = match ferric_proto::frame::to_frame(&sample, TELEMETRY_SAMPLE_MAX) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(%node, max = TELEMETRY_SAMPLE_MAX, error = %e, "telemetry sample dropped");
                return;
            }
        };
        push_ring(
            &self.rings,
            node,
            HeldSample {
                received_at_ms: now_ms,
                seq: sample.seq,
                at_ms: sample.at_ms,
                frame: frame.into_boxed_slice(),
            },
            |b, r| b.seq >= r.seq && b.at_ms >= r.at_ms,
        );
        self.changes.bump();
    }

    /// Samples of `node` received after `after_ms` (oldest first).
    pub fn since(&self, node: &str, after_ms: i64) -> Vec<TelemetryRecord> {
        ring_since(&self.rings, node, after_ms)
            .iter()
            .filter_map(HeldSample::record)
            .collect()
    }

    /// The newest sample of `node`.
    pub fn latest(&self, node: &str) -> Option<TelemetryRecord> {
        lock(&self.rings)
            .get(node)
            .and_then(|r| r.back().and_then(HeldSample::record))
    }
}
