use super::*;
use crate::model::{NodeRole, PlanState};
use ferric_proto::plan::{ErrorKind, PlanStep, Step, StepEvent, StepEventKind};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_sqlite(&dir.path().join("ferric.db"))
        .await
        .unwrap();
    (dir, s)
}

/// A store with the hypervisor `n1` enrolled.
async fn store_with_n1() -> (tempfile::TempDir, Store) {
    let (dir, s) = store().await;
    s.create_token("t", "h", "default", 0, 1_000).await.unwrap();
    s.enroll("t", "h", "n1", NodeRole::Hypervisor, 1)
        .await
        .unwrap()
        .unwrap();
    (dir, s)
}

fn steps(n: usize) -> Vec<PlanStep> {
    (0..n)
        .map(|i| PlanStep {
            key: format!("k{i}"),
            timeout_secs: 5,
            step: Step::DeleteGuest {
                name: format!("g{i}"),
            },
        })
        .collect()
}

#[tokio::test]
async fn token_is_single_use_and_enrollment_is_atomic() {
    let (_d, s) = store().await;
    s.create_token("abc", "h", "default", 0, 1_000)
        .await
        .unwrap();
    assert_eq!(
        s.enroll("abc", "wrong", "n1", NodeRole::Hypervisor, 10)
            .await
            .unwrap(),
        Err(EnrollProblem::Token(TokenProblem::Invalid))
    );
    assert_eq!(
        s.enroll("abc", "h", "n1", NodeRole::Hypervisor, 2_000)
            .await
            .unwrap(),
        Err(EnrollProblem::Token(TokenProblem::Expired))
    );
    assert!(
        s.node("n1").await.unwrap().is_none(),
        "refusals change nothing"
    );
    assert_eq!(
        s.enroll("abc", "h", "n1", NodeRole::Hypervisor, 10)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        s.enroll("abc", "h", "n2", NodeRole::Hypervisor, 11)
            .await
            .unwrap(),
        Err(EnrollProblem::Token(TokenProblem::Used))
    );
    // A taken name does not burn a fresh token.
    s.create_token("def", "h2", "default", 0, 1_000)
        .await
        .unwrap();
    assert_eq!(
        s.enroll("def", "h2", "n1", NodeRole::Hypervisor, 12)
            .await
            .unwrap(),
        Err(EnrollProblem::NodeExists)
    );
    assert_eq!(s.unused_tokens().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_wait_for_each_other_instead_of_failing() {
    let (_d, s) = store_with_n1().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let plan = s.create_plan("n1", &steps(40), 5).await.unwrap();
        let s = s.clone();
        set.spawn(async move {
            for seq in 0..40u32 {
                let ev = StepEvent {
                    plan: plan.id,
                    seq,
                    step: seq / 2,
                    at_ms: 1,
                    kind: StepEventKind::Started,
                };
                s.insert_event("n1", &ev, 6).await?;
            }
            Ok::<_, StoreError>(plan.id)
        });
    }
    while let Some(r) = set.join_next().await {
        let id = r.unwrap().unwrap();
        assert_eq!(s.stored_events(id).await.unwrap(), 40);
    }
}

#[tokio::test]
async fn events_are_stored_once_and_drive_plan_state() {
    let (_d, s) = store_with_n1().await;
    let plan = s.create_plan("n1", &steps(2), 5).await.unwrap();
    let ev = |seq, step, kind| StepEvent {
        plan: plan.id,
        seq,
        step,
        at_ms: 1,
        kind,
    };
    assert!(
        s.insert_event("n1", &ev(0, 0, StepEventKind::Started), 6)
            .await
            .unwrap()
    );
    assert!(
        !s.insert_event("n1", &ev(0, 0, StepEventKind::Started), 7)
            .await
            .unwrap()
    );
    assert_eq!(
        s.plan(plan.id).await.unwrap().unwrap().state,
        PlanState::Running
    );
    s.insert_event("n1", &ev(1, 0, StepEventKind::Done { changed: true }), 8)
        .await
        .unwrap();
    s.insert_event(
        "n1",
        &ev(
            2,
            1,
            StepEventKind::Failed {
                kind: ErrorKind::Timeout,
                message: "slow".into(),
            },
        ),
        9,
    )
    .await
    .unwrap();
    let row = s.plan(plan.id).await.unwrap().unwrap();
    assert_eq!(row.state, PlanState::Failed);
    assert_eq!(row.finished_at_us, Some(9));
    assert_eq!(s.stored_events(plan.id).await.unwrap(), 3);
    let evs = s.events(plan.id).await.unwrap();
    assert_eq!(
        evs[2].kind,
        StepEventKind::Failed {
            kind: ErrorKind::Timeout,
            message: "slow".into()
        }
    );
    assert!(s.unfinished_plans("n1").await.unwrap().is_empty());
    // Another node cannot write into this plan.
    assert!(matches!(
        s.insert_event("n2", &ev(3, 1, StepEventKind::Started), 10)
            .await,
        Err(StoreError::UnknownPlan { .. })
    ));
}
