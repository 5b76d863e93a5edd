use super::*;
use ferric_proto::plan::{ErrorKind, PlanStep, Step};

/// A plan of `n` guest deletions.
fn plan(id: PlanId, n: usize) -> Plan {
    let steps = (0..n)
        .map(|i| Step::DeleteGuest {
            name: format!("g{i}"),
        })
        .collect();
    plan_of(id, steps)
}

fn plan_of(id: PlanId, steps: Vec<Step>) -> Plan {
    Plan {
        id,
        node: "n".into(),
        steps: steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| PlanStep {
                key: i.to_string(),
                timeout_secs: 5,
                step,
            })
            .collect(),
    }
}

/// A journal in a fresh directory that holds plan `id` (two steps) with step 0 started; and
/// the path of that plan's file.
fn journal_with_a_started_plan(id: PlanId) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false).unwrap();
    j.add_plan(&plan(id, 2)).unwrap();
    j.record(id, 0, 1, StepEventKind::Started).unwrap();
    let path = dir.path().join(format!("plan-{id}.jsonl"));
    (dir, path)
}

#[test]
fn resumes_an_interrupted_step_and_resends_unacked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(dir.path(), true).unwrap();
        assert!(j.add_plan(&plan(1, 3)).unwrap());
        assert!(!j.add_plan(&plan(1, 3)).unwrap());
        j.record(1, 0, 1, StepEventKind::Started).unwrap();
        j.record(1, 0, 2, StepEventKind::Done { changed: true })
            .unwrap();
        j.ack(1, 0).unwrap();
        j.record(1, 1, 3, StepEventKind::Started).unwrap();
        // crash here
    }
    let j = Journal::open(dir.path(), true).unwrap();
    let w = j.next_work().unwrap();
    assert_eq!((w.step, w.resumed), (1, true));
    assert_eq!(
        j.unacked().iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(j.cursors()[0].next_seq, 3);
}

#[test]
fn finished_and_acked_plans_are_forgotten_but_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false).unwrap();
    j.add_plan(&plan(7, 1)).unwrap();
    j.record(7, 0, 1, StepEventKind::Started).unwrap();
    j.record(
        7,
        0,
        2,
        StepEventKind::Failed {
            kind: ErrorKind::Io,
            message: "disk".into(),
        },
    )
    .unwrap();
    assert_eq!(j.next_work(), None);
    j.ack(7, 1).unwrap();
    assert!(j.is_empty());
    assert!(!dir.path().join("plan-7.jsonl").exists());
    drop(j);
    let mut j = Journal::open(dir.path(), false).unwrap();
    assert!(j.knows(7));
    assert!(
        !j.add_plan(&plan(7, 1)).unwrap(),
        "a completed plan is not run again"
    );
}

#[test]
fn plans_sharing_an_object_keep_their_order_others_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false).unwrap();
    let g = |n: &str| Step::DeleteGuest { name: n.into() };
    j.add_plan(&plan_of(1, vec![g("a")])).unwrap();
    j.add_plan(&plan_of(2, vec![g("b")])).unwrap();
    j.add_plan(&plan_of(3, vec![g("a"), g("c")])).unwrap();
    j.add_plan(&plan_of(4, vec![g("c")])).unwrap();
    let none = std::collections::HashSet::new();
    // 3 waits for 1 (guest a); 4 waits for 3 (guest c) even though 3 has not started.
    assert_eq!(j.startable(&none), vec![1, 2]);
    let running: std::collections::HashSet<_> = [1, 2].into_iter().collect();
    assert_eq!(j.startable(&running), Vec::<PlanId>::new());
    j.record(1, 0, 1, StepEventKind::Started).unwrap();
    j.record(1, 0, 2, StepEventKind::Done { changed: true })
        .unwrap();
    let running: std::collections::HashSet<_> = [2].into_iter().collect();
    assert_eq!(j.startable(&running), vec![3]);
}

#[test]
fn guests_sharing_a_bridge_run_side_by_side_but_wait_for_the_bridge_to_change() {
    use ferric_proto::plan::{GuestNic, GuestSpec};
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false).unwrap();
    let guest = |n: &str| {
        Step::EnsureGuest(GuestSpec {
            name: n.into(),
            vcpus: 1,
            memory_mib: 64,
            volumes: vec![],
            nics: vec![GuestNic {
                bridge: "br0".into(),
                mac: None,
            }],
            boot: ferric_proto::plan::GuestBoot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                cmdline: String::new(),
            },
            serial_log: None,
        })
    };
    j.add_plan(&plan_of(1, vec![guest("a")])).unwrap();
    j.add_plan(&plan_of(2, vec![guest("b")])).unwrap();
    j.add_plan(&plan_of(3, vec![Step::DeleteBridge { name: "br0".into() }]))
        .unwrap();
    j.add_plan(&plan_of(4, vec![guest("c")])).unwrap();
    // a and b both only need br0; deleting br0 waits for them; c waits for the deletion.
    assert_eq!(j.startable(&std::collections::HashSet::new()), vec![1, 2]);
}

#[test]
fn torn_last_line_is_ignored_and_cut() {
    let (dir, path) = journal_with_a_started_plan(2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"event\":{\"plan\":2,\"se").unwrap();
    drop(f);
    let mut j = Journal::open(dir.path(), false).unwrap();
    assert_eq!(j.unacked().len(), 1);
    j.record(2, 0, 2, StepEventKind::Done { changed: false })
        .unwrap();
    drop(j);
    let j = Journal::open(dir.path(), false).unwrap();
    assert_eq!(j.unacked().len(), 2);
    assert_eq!(j.next_work().unwrap().step, 1);
}

#[test]
fn corruption_in_the_middle_is_an_error() {
    let (dir, path) = journal_with_a_started_plan(3);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("{\"plan\"", "{\"plXX\"", 1);
    std::fs::write(&path, text).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), false),
        Err(JournalError::Corrupt { line: 1, .. })
    ));
}

#[test]
fn a_step_is_delivered_once_its_end_is_acknowledged_and_stays_so_after_its_plan_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), false).unwrap();
    j.add_plan(&plan(4, 2)).unwrap();
    assert!(!j.delivered(4, 0), "nothing ran yet");
    j.record(4, 0, 1, StepEventKind::Started).unwrap(); // seq 0
    j.ack(4, 0).unwrap();
    assert!(
        !j.delivered(4, 0),
        "a start acknowledged is not an end delivered"
    );
    j.record(4, 0, 2, StepEventKind::Done { changed: true })
        .unwrap(); // seq 1
    assert!(!j.delivered(4, 0), "journaled, not acknowledged");
    j.ack(4, 1).unwrap();
    assert!(j.delivered(4, 0));
    assert!(!j.delivered(4, 1), "the next step has not ended");
    j.record(4, 1, 3, StepEventKind::Started).unwrap(); // seq 2
    j.record(
        4,
        1,
        4,
        StepEventKind::Failed {
            kind: ErrorKind::Internal,
            message: "x".into(),
        },
    )
    .unwrap(); // seq 3
    assert!(!j.delivered(4, 1));
    j.ack(4, 3).unwrap();
    // Finished and fully acknowledged: forgotten, still delivered.
    assert!(j.is_empty());
    assert!(j.delivered(4, 1));
    assert!(!j.delivered(5, 0), "a plan never seen was not delivered");
}
