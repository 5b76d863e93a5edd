//! Who is connected right now, and how to push to them: plans, BMC sets, cancels.

use super::Changes;
use crate::lock;
use ferric_proto::plan::Plan;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// How recent replacements count, ms (see [`Links::may_replace`]).
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

/// Connected agents.
#[derive(Debug)]
pub struct Links {
    live: Mutex<HashMap<String, Live>>,
    /// When each node's connection was last replaced by a newer one.
    replaced: Mutex<HashMap<String, Replacements>>,
    changes: Changes,
}

impl Links {
    /// No agent connected yet.
    pub fn new(changes: Changes) -> Self {
        Links {
            live: Mutex::default(),
            replaced: Mutex::default(),
            changes,
        }
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
        self.changes.bump();
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
            self.changes.bump();
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Links::new(Changes::default()).may_replace("n1", 0));
    }
}
