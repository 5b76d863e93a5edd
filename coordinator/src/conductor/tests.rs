//! The conductor's rules through their narrow handles — a store in a temporary directory, a
//! hub with no agent connected, a clock the test moves — so that deadlines, power sync and
//! plan endings are checked on simulated time, to the millisecond.

use super::lifecycle::{ProvisionRequest, Timeouts, Verb};
use super::{Env, lifecycle, reports};
use crate::clock::{Clock, Manual, Rebased};
use crate::hub::Hub;
use crate::model::{NodeRole, Phase, ProvisionState};
use crate::store::Store;
use ferric_proto::msg::BmcState;
use ferric_proto::plan::{StepEvent, StepEventKind, StepOutput};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A coordinator's world without its sockets: store, hub, clock.
struct World {
    _dir: tempfile::TempDir,
    store: Store,
    hub: Hub,
    clock: Box<dyn Clock>,
    timeouts: Timeouts,
    lock: tokio::sync::Mutex<()>,
}

/// The start of the simulated clock.
const T0: i64 = 1_700_000_000_000;

impl World {
    /// An agent `mgmt` and bare-metal nodes `bm1`, `bm2` it drives.
    async fn new(clock: Box<dyn Clock>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("ferric.db"))
            .await
            .unwrap();
        store
            .create_token("t", "h", "default", 0, i64::MAX)
            .await
            .unwrap();
        store
            .enroll("t", "h", "mgmt", NodeRole::Management, 1)
            .await
            .unwrap()
            .unwrap();
        for n in ["bm1", "bm2"] {
            store
                .insert_bmc_node(
                    n,
                    "ipmi://admin@10.0.0.1:623",
                    "x",
                    "mgmt",
                    &[],
                    None,
                    (
                        ferric_proto::hardware::BootMode::Bios,
                        crate::model::EfiLoader::SnpOnly,
                    ),
                    "default",
                    1,
                )
                .await
                .unwrap();
        }
        World {
            _dir: dir,
            store,
            hub: Hub::default(),
            clock,
            timeouts: Timeouts::default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            store: &self.store,
            hub: &self.hub,
            clock: &*self.clock,
            timeouts: &self.timeouts,
            lifecycle: &self.lock,
            boot: None,
        }
    }

    async fn verb(&self, node: &str, verb: Verb) {
        lifecycle::provision(
            &self.env(),
            node,
            ProvisionRequest {
                verb,
                erase: None,
                image: None,
                root: None,
                config_drive: None,
                instance: None,
                image_url: None,
            },
        )
        .await
        .unwrap();
    }

    async fn at(&self, node: &str) -> crate::store::LifecycleRow {
        self.store.lifecycle(node).await.unwrap().unwrap()
    }

    /// The plan `node`'s lifecycle waits for.
    async fn awaited(&self, node: &str) -> u64 {
        self.at(node).await.wait_plan.expect("a plan is awaited")
    }

    /// Plan `plan` ends as its agent reports: done with `power`, or failed.
    async fn plan_ends(&self, plan: u64, outcome: Result<bool, &str>) {
        let mut kinds = vec![StepEventKind::Started];
        match outcome {
            Ok(on) => {
                kinds.push(StepEventKind::Output(StepOutput::Power { on }));
                kinds.push(StepEventKind::Done { changed: false });
            }
            Err(why) => kinds.push(StepEventKind::Failed {
                kind: ferric_proto::plan::ErrorKind::Unreachable,
                message: why.to_owned(),
            }),
        }
        for (seq, kind) in kinds.into_iter().enumerate() {
            let ev = StepEvent {
                plan,
                seq: seq as u32,
                step: 0,
                at_ms: 5_000,
                kind,
            };
            reports::event(&self.env(), "mgmt", &ev).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_deadline_passed_by_one_millisecond_fails_the_node_and_one_not_yet_passed_leaves_it() {
    let manual = Arc::new(Manual::at(T0));
    #[derive(Debug)]
    struct Shared(Arc<Manual>);
    impl Clock for Shared {
        fn now_ms(&self) -> i64 {
            self.0.now_ms()
        }
    }
    let w = World::new(Box::new(Shared(manual.clone()))).await;
    w.verb("bm1", Verb::Manage).await;
    let row = w.at("bm1").await;
    assert_eq!(
        (row.state, row.step),
        (ProvisionState::Verifying, Some(Phase::ReadPower))
    );
    let deadline = row.deadline_ms.unwrap();
    assert_eq!(deadline, T0 + w.timeouts.power.as_millis() as i64);
    // The plan is stored, waiting for its agent (none is connected).
    let plan = w.store.plan(row.wait_plan.unwrap()).await.unwrap().unwrap();
    assert_eq!(plan.node, "mgmt");

    manual.advance(deadline - 1 - T0);
    lifecycle::tick(&w.env()).await.unwrap();
    assert_eq!(
        w.at("bm1").await.state,
        ProvisionState::Verifying,
        "not yet due"
    );
    manual.advance(2);
    lifecycle::tick(&w.env()).await.unwrap();
    let row = w.at("bm1").await;
    assert_eq!(row.state, ProvisionState::Enroll, "{row:?}");
    let why = row.error.unwrap();
    assert!(why.contains("within 2m"), "{why}");
    assert_eq!(row.error_at_ms, Some(deadline + 1));
    let last = w.store.transitions("bm1", 1).await.unwrap();
    assert_eq!(last[0].cause, "deadline passed");
}

#[tokio::test]
async fn a_wall_clock_set_an_hour_forward_fails_no_waiting_node() {
    // The wall clock reads T0 at start, then an hour later (set forward); the monotonic clock
    // moves one second.
    let wall_reads = Arc::new(AtomicI64::new(T0));
    let wr = wall_reads.clone();
    let wall = move || wr.fetch_add(3_600_000, Ordering::SeqCst);
    let mono = Arc::new(AtomicU64::new(0));
    let m = mono.clone();
    let clock = Rebased::with_sources(
        &wall,
        Arc::new(move || Duration::from_millis(m.load(Ordering::SeqCst))),
    );
    let w = World::new(Box::new(clock)).await;
    w.verb("bm1", Verb::Manage).await;
    w.verb("bm2", Verb::Manage).await;
    assert_eq!(
        wall_reads.load(Ordering::SeqCst),
        T0 + 3_600_000,
        "the wall was read once"
    );
    mono.fetch_add(1_000, Ordering::SeqCst);
    lifecycle::tick(&w.env()).await.unwrap();
    for n in ["bm1", "bm2"] {
        assert_eq!(w.at(n).await.state, ProvisionState::Verifying, "{n}");
    }
    // Their deadlines still come, on the monotonic clock.
    mono.fetch_add(w.timeouts.power.as_millis() as u64, Ordering::SeqCst);
    lifecycle::tick(&w.env()).await.unwrap();
    for n in ["bm1", "bm2"] {
        assert_eq!(w.at(n).await.state, ProvisionState::Enroll, "{n}");
    }
}

#[tokio::test]
async fn a_plan_that_ends_moves_the_node_that_waits_for_it_at_the_clocks_time() {
    let manual = Arc::new(Manual::at(T0));
    #[derive(Debug)]
    struct Shared(Arc<Manual>);
    impl Clock for Shared {
        fn now_ms(&self) -> i64 {
            self.0.now_ms()
        }
    }
    let w = World::new(Box::new(Shared(manual.clone()))).await;
    w.verb("bm1", Verb::Manage).await;
    w.verb("bm2", Verb::Manage).await;
    manual.advance(7_000);
    let p1 = w.awaited("bm1").await;
    w.plan_ends(p1, Ok(false)).await;
    let row = w.at("bm1").await;
    assert_eq!((row.state, row.step), (ProvisionState::Manageable, None));
    assert_eq!(row.since_ms, T0 + 7_000);
    assert_eq!(row.deadline_ms, None);
    // The power read is what Ferric expects of the node now.
    let bmc = w.store.bmc("bm1").await.unwrap().unwrap();
    assert_eq!(bmc.power_expected.as_deref(), Some("off"));
    // A plan that fails sends its node to its failed state with the step's message.
    let p2 = w.awaited("bm2").await;
    w.plan_ends(p2, Err("the BMC does not answer")).await;
    let row = w.at("bm2").await;
    assert_eq!(row.state, ProvisionState::Enroll);
    assert!(
        row.error.unwrap().contains("the BMC does not answer"),
        "the failure names its cause"
    );
    // The same end reported again (an agent re-sending after a reconnect) moves nothing.
    let before = w.store.transitions("bm1", 20).await.unwrap().len();
    w.plan_ends(p1, Ok(false)).await;
    assert_eq!(w.store.transitions("bm1", 20).await.unwrap().len(), before);
}

#[tokio::test]
async fn power_sync_flags_a_change_behind_ferrics_back_only_when_seen_after_ferrics_own() {
    let w = World::new(Box::new(Manual::at(T0))).await;
    // Ferric's power step left bm1 off at agent time 2000.
    w.store.bmc_power_set("bm1", false, 2_000).await.unwrap();
    let read = |at_ms: u64, on: bool| BmcState {
        name: "bm1".into(),
        at_ms,
        power_on: Some(on),
        sensors: vec![],
        error: None,
    };
    // A read from before that step, arriving late: history, not a change.
    reports::bmc_states(&w.env(), "mgmt", vec![read(1_500, true)])
        .await
        .unwrap();
    assert!(w.store.bmc("bm1").await.unwrap().unwrap().flag.is_none());
    // A BMC that another agent does not drive is not taken from it.
    reports::bmc_states(&w.env(), "intruder", vec![read(3_000, true)])
        .await
        .unwrap();
    assert!(w.store.bmc("bm1").await.unwrap().unwrap().flag.is_none());
    // Seen on after Ferric left it off: flagged, and the hub keeps the read.
    reports::bmc_states(&w.env(), "mgmt", vec![read(3_000, true)])
        .await
        .unwrap();
    let flag = w.store.bmc("bm1").await.unwrap().unwrap().flag.unwrap();
    assert!(
        flag.contains("Ferric left it off, the BMC reports on"),
        "{flag}"
    );
    assert_eq!(w.hub.bmc.state("bm1").unwrap().at_ms, 3_000);
}
