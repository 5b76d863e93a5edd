//! The journal's record format and its reader. A plan's file is JSON lines: the plan, then
//! its events in order (`seq` 0, 1, …) and acknowledgements. The reader takes the file's
//! bytes as they are after any crash — a torn last line, bytes that are not UTF-8, a line
//! that is not a record — so it is fuzzed (`fuzz/fuzz_targets/journal_record.rs`).

use ferric_proto::plan::{Plan, StepEvent};
use serde::{Deserialize, Serialize};

/// One line of a plan's journal file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The plan, always the first line.
    Plan(Plan),
    /// A step event; their `seq` counts up from 0 without gaps.
    Event(StepEvent),
    /// The coordinator stored events up to this `seq`.
    Ack(u32),
}

/// What a journal file holds.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The plan (`None` for a file with no complete first line).
    pub plan: Option<Plan>,
    /// Its events, in order.
    pub events: Vec<StepEvent>,
    /// The highest acknowledgement.
    pub acked: Option<u32>,
    /// Bytes of complete, valid lines from the start: past them is a torn tail to cut.
    pub good_len: usize,
    /// Whether the last line was torn (incomplete or unreadable) and ignored.
    pub torn: bool,
}

/// Reads a journal file's bytes. A last line without its newline, or one that is not a
/// record, is a torn append (a crash while writing it) and is ignored; any other line that
/// is not a record, or records out of order (an event before the plan, a second plan, an
/// event whose `seq` is not the next), make the file corrupt: `Err` holds that line's number
/// (1-based).
pub fn replay(bytes: &[u8]) -> Result<Replayed, usize> {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let mut r = Replayed::default();
    for (i, raw) in lines.iter().enumerate() {
        let complete = raw.ends_with(b"\n");
        let rec = match serde_json::from_slice::<Record>(raw) {
            Ok(rec) if complete => rec,
            _ if i + 1 == lines.len() => {
                r.torn = true;
                break;
            }
            _ => return Err(i + 1),
        };
        match rec {
            Record::Plan(p) if r.plan.is_none() => r.plan = Some(p),
            Record::Event(e) if r.plan.is_some() && e.seq as usize == r.events.len() => {
                r.events.push(e)
            }
            Record::Ack(a) if r.plan.is_some() => r.acked = Some(r.acked.map_or(a, |x| x.max(a))),
            _ => return Err(i + 1),
        }
        r.good_len += raw.len();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_ignored_and_a_bad_middle_line_named() {
        let plan = br#"{"plan":{"id":7,"node":"n1","steps":[]}}"#;
        let mut file = plan.to_vec();
        file.extend_from_slice(b"\n{\"ack\":3}\n");
        let good = file.len();
        // A crash in the middle of a multi-byte character: not UTF-8, and not a reason to
        // lose the journal.
        file.extend_from_slice(b"{\"event\":{\"plan\":7,\"note\":\"caf\xc3");
        let r = replay(&file).unwrap();
        assert_eq!(r.plan.map(|p| p.id), Some(7));
        assert_eq!((r.acked, r.good_len, r.torn), (Some(3), good, true));

        let mut bad = plan.to_vec();
        bad.extend_from_slice(b"\nnot json\n{\"ack\":1}\n");
        assert_eq!(replay(&bad).unwrap_err(), 2);
        assert_eq!(
            replay(b"{\"ack\":1}\n").unwrap_err(),
            1,
            "an ack before the plan"
        );
        let mut twice = plan.to_vec();
        twice.push(b'\n');
        twice.extend_from_slice(plan);
        twice.push(b'\n');
        assert_eq!(replay(&twice).unwrap_err(), 2, "a second plan");
        let empty = replay(b"").unwrap();
        assert!(empty.plan.is_none() && !empty.torn && empty.good_len == 0);
    }
}
