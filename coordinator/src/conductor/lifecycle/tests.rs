//! The lifecycle's decisions on a simulated clock: deadlines counted from the move into a
//! step, passing exactly when due, surviving a coordinator that was down past them.

use super::*;
use crate::model::ProvisionState as S;
use std::time::Duration;

/// A node's row on a clock the test moves.
struct Sim {
    row: LifecycleRow,
    now_ms: i64,
    t: Timeouts,
}

impl Sim {
    fn new() -> Self {
        Sim {
            row: LifecycleRow {
                node: "n0".into(),
                state: S::Enroll,
                step: None,
                since_ms: 1_000_000,
                deadline_ms: None,
                wait_plan: None,
                error: None,
                error_at_ms: None,
                spec_json: None,
            },
            now_ms: 1_000_000,
            t: Timeouts {
                callback: Duration::from_secs(90),
                ..Timeouts::default()
            },
        }
    }

    fn at(&mut self, ms: i64) -> &mut Self {
        assert!(ms >= self.now_ms, "time goes forward");
        self.now_ms = ms;
        self
    }

    /// Feeds an input at the current time; whether the node moved.
    fn feed(&mut self, input: Input, ramdisk: bool) -> bool {
        let next = match &input {
            Input::Verb(v) => Some(
                rules::next(
                    At {
                        state: self.row.state,
                        phase: self.row.step,
                    },
                    ramdisk,
                    &Input::Verb(*v),
                    &self.t,
                )
                .unwrap()
                .unwrap(),
            ),
            other => decide(&self.row, ramdisk, other, &self.t, self.now_ms),
        };
        match next {
            Some(n) => {
                self.row = moved(&self.row, &n, &Spec::default(), self.now_ms).unwrap();
                true
            }
            None => false,
        }
    }

    fn ok(&mut self) -> bool {
        self.feed(
            Input::PlanEnded {
                ok: true,
                message: None,
            },
            false,
        )
    }

    fn where_(&self) -> (S, Option<Phase>) {
        (self.row.state, self.row.step)
    }
}

#[test]
fn a_deadline_counts_from_entering_the_step_and_passes_exactly_when_due() {
    let mut n = Sim::new();
    n.at(1_000_000).feed(Input::Verb(Verb::Manage), false);
    n.at(1_002_000).ok();
    assert_eq!(n.where_(), (S::Manageable, None));
    assert_eq!(n.row.deadline_ms, None, "a state at rest has no deadline");
    n.at(1_010_000).feed(Input::Verb(Verb::Provide), false);
    assert_eq!(n.where_(), (S::Cleaning, Some(Phase::BootRamdisk)));
    assert_eq!(n.row.deadline_ms, Some(1_010_000 + 180_000));
    // The power cycle ends 3 s later: the call-back wait starts then, not at the verb.
    n.at(1_013_000).ok();
    assert_eq!(n.where_(), (S::Cleaning, Some(Phase::WaitCallback)));
    assert_eq!(n.row.deadline_ms, Some(1_013_000 + 90_000));
    // The every-second check before the deadline changes nothing.
    for at in [1_014_000, 1_050_000, 1_102_999] {
        assert!(!n.at(at).feed(Input::DeadlinePassed, false), "at {at}");
        assert_eq!(n.where_(), (S::Cleaning, Some(Phase::WaitCallback)));
    }
    assert!(n.at(1_103_000).feed(Input::DeadlinePassed, false));
    assert_eq!(n.where_(), (S::CleanFailed, None));
    let why = n.row.error.clone().unwrap();
    assert!(
        why.contains("no ramdisk called back within 1m 30s"),
        "{why}"
    );
    assert_eq!(n.row.error_at_ms, Some(1_103_000));
    // Failed, it waits for nothing: no deadline passes again.
    assert_eq!(n.row.deadline_ms, None);
    assert!(!n.at(9_000_000).feed(Input::DeadlinePassed, false));
    // Manage recovers; the reason stays shown until the next failure.
    n.at(9_000_001).feed(Input::Verb(Verb::Manage), false);
    assert_eq!(n.where_(), (S::Manageable, None));
    assert_eq!(n.row.error.as_deref(), Some(why.as_str()));
}

#[test]
fn a_call_back_before_the_deadline_moves_on_and_the_new_step_gets_its_own() {
    let mut n = Sim::new();
    n.feed(Input::Verb(Verb::Manage), false);
    n.at(1_001_000).ok();
    n.at(1_002_000).feed(Input::Verb(Verb::Inspect), false);
    n.at(1_004_000).ok();
    assert_eq!(n.where_(), (S::Inspecting, Some(Phase::WaitCallback)));
    n.at(1_090_000).feed(Input::RamdiskConnected, true);
    assert_eq!(n.where_(), (S::Inspecting, Some(Phase::Inspect)));
    assert_eq!(n.row.deadline_ms, Some(1_090_000 + 600_000));
    // The call-back deadline (1_094_000) is not the inspection's.
    assert!(!n.at(1_094_000).feed(Input::DeadlinePassed, true));
    assert!(n.at(1_690_000).feed(Input::DeadlinePassed, true));
    assert_eq!(n.where_(), (S::InspectFailed, None));
    assert!(
        n.row
            .error
            .as_deref()
            .unwrap()
            .contains("did not finish inspecting the hardware within 10m")
    );
}

#[test]
fn a_deadline_that_passed_while_the_coordinator_was_down_fails_the_node_at_the_first_check() {
    let mut n = Sim::new();
    n.feed(Input::Verb(Verb::Manage), false);
    n.at(1_001_000).ok();
    n.at(1_002_000).feed(Input::Verb(Verb::Provide), true);
    assert_eq!(n.where_(), (S::Cleaning, Some(Phase::Erase)));
    // Down for two hours: the first check after the start fails the erase, with its reason.
    assert!(
        n.at(1_002_000 + 7_200_000)
            .feed(Input::DeadlinePassed, true)
    );
    assert_eq!(n.where_(), (S::CleanFailed, None));
    assert!(
        n.row
            .error
            .as_deref()
            .unwrap()
            .contains("did not finish erasing the disks within 1h")
    );
}

#[test]
fn a_clock_that_went_back_still_moves_forward() {
    let mut n = Sim::new();
    n.feed(Input::Verb(Verb::Manage), false);
    let entered = n.row.since_ms;
    // A move decided at an earlier wall-clock time than the last one still comes after it,
    // and its deadline is counted from there.
    let next = rules::next(
        At {
            state: n.row.state,
            phase: n.row.step,
        },
        false,
        &Input::PlanEnded {
            ok: false,
            message: Some("bmc said no".into()),
        },
        &n.t,
    )
    .unwrap()
    .unwrap();
    let to = moved(&n.row, &next, &Spec::default(), entered - 60_000).unwrap();
    assert_eq!(to.since_ms, entered + 1);
    assert_eq!(to.error_at_ms, Some(entered + 1));
    assert_eq!(to.state, S::Enroll);
}

#[test]
fn an_image_url_needs_http_a_host_a_sha256_and_a_known_format_and_each_refusal_says_which() {
    let u = |url: &str, checksum: &str, format: Option<&str>| ferric_api::lifecycle::ImageUrl {
        url: url.into(),
        checksum: checksum.into(),
        format: format.map(str::to_owned),
    };
    let sha = format!("sha256:{}", "AB".repeat(32));
    let ok = image_url(&u("https://images.example/debian-12.qcow2", &sha, None)).unwrap();
    assert_eq!(
        ok.sha256,
        "ab".repeat(32),
        "the digest is kept in lower case"
    );
    assert_eq!(ok.format, "", "no format: as the content says");
    assert_eq!(
        image_url(&u("http://10.0.0.1:8080/os.raw", &sha, Some("raw")))
            .unwrap()
            .format,
        "raw"
    );
    for (bad, says) in [
        (u("ftp://h/i", &sha, None), "only http:// and https://"),
        (u("/srv/i.qcow2", &sha, None), "only http:// and https://"),
        (u("https:///i", &sha, None), "names no host"),
        (u("https://h/a b", &sha, None), "names no host"),
        (
            u("https://h/i", "md5:0123", None),
            "needs `sha256:` and 64 hex digits",
        ),
        (
            u("https://h/i", "sha256:abc", None),
            "needs `sha256:` and 64 hex digits",
        ),
        (u("https://h/i", &sha, Some("vmdk")), "raw or qcow2"),
    ] {
        let e = image_url(&bad).err().unwrap().to_string();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}
