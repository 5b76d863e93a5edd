//! The stages nodes' network boots reached, and when.

use super::Changes;
use crate::lock;
pub use ferric_api::records::BootMark;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Boot stages kept per node (a few boots' worth).
const BOOT_MARKS: usize = 64;

/// Stages of each node's network boots (a few boots' worth).
#[derive(Debug)]
pub struct BootStages {
    marks: Mutex<HashMap<String, VecDeque<BootMark>>>,
    changes: Changes,
}

impl BootStages {
    /// None yet.
    pub fn new(changes: Changes) -> Self {
        BootStages {
            marks: Mutex::default(),
            changes,
        }
    }

    /// Notes that `node`'s network boot reached `stage`.
    pub fn mark(&self, node: &str, stage: crate::model::BootStage, at_ms: i64) {
        let mut m = lock(&self.marks);
        let ring = m.entry(node.to_owned()).or_default();
        if ring.len() == BOOT_MARKS {
            ring.pop_front();
        }
        ring.push_back(BootMark { stage, at_ms });
        drop(m);
        self.changes.bump();
    }

    /// The stages `node`'s network boots reached, oldest first.
    pub fn of(&self, node: &str) -> Vec<BootMark> {
        lock(&self.marks)
            .get(node)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}
