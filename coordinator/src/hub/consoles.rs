//! Serial console lines of nodes, numbered, bounded, and cleared of per-boot tokens' secrets.

use super::Changes;
use crate::lock;
pub use ferric_api::records::{ConsoleLine, ConsoleTail};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Console lines kept per node (the dashboard shows the last few dozen).
pub const CONSOLE_RING: usize = 1000;

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

/// Console lines by node.
#[derive(Debug)]
pub struct Consoles {
    rings: Mutex<(u64, HashMap<String, ConsoleRing>)>,
    epoch: std::sync::OnceLock<i64>,
    changes: Changes,
}

impl Consoles {
    /// None yet.
    pub fn new(changes: Changes) -> Self {
        Consoles {
            rings: Mutex::default(),
            epoch: std::sync::OnceLock::new(),
            changes,
        }
    }

    /// Keeps console lines of `node` (at most [`CONSOLE_RING`], each cut to the protocol's
    /// line length: an agent cannot make the coordinator hold more), and the error reading it
    /// as the agent says it now (`None`: read fine; cut to 1 KiB).
    pub fn record(&self, node: &str, lines: Vec<String>, error: Option<String>, now_ms: i64) {
        let mut g = lock(&self.rings);
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
        self.changes.bump();
    }

    /// The console lines of `node` after line `after` (all held when `None`), the newest
    /// `limit` of them.
    pub fn since(&self, node: &str, after: Option<u64>, limit: usize) -> ConsoleTail {
        let epoch_ms = *self.epoch.get_or_init(crate::now_ms);
        let g = lock(&self.rings);
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
    pub fn forget(&self, node: &str) {
        lock(&self.rings).1.remove(node);
    }
}
