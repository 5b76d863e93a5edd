//! The agent's journal: what it was told to do and what it did, on disk, so that a restarted
//! agent resumes a plan where it was and re-sends the events the coordinator had not stored.
//!
//! One append-only file of JSON lines per plan (`plan-<id>.jsonl`): the plan, then its events
//! and acknowledgements. A file is removed once its plan has finished and every event is
//! acknowledged; the ids of removed plans stay in `completed.log` so that a plan delivered
//! again is not run again. A torn last line (crash mid-append) is ignored.

pub mod record;
#[cfg(feature = "agent")]
mod store;
#[cfg(feature = "agent")]
pub use store::*;
