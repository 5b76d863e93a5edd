use super::*;

fn t() -> Timeouts {
    Timeouts::default()
}

fn at(state: S, phase: Option<Phase>) -> At {
    At { state, phase }
}

/// Runs inputs from `start`, returning every place the node passes through.
fn walk(start: At, ramdisk: bool, inputs: &[Input]) -> Vec<(S, Option<Phase>)> {
    let mut cur = start;
    let mut seen = vec![];
    for i in inputs {
        if let Some(n) = next(cur, ramdisk, i, &t()).unwrap() {
            cur = n.at;
            seen.push((cur.state, cur.phase));
        }
    }
    seen
}

fn ok() -> Input {
    Input::PlanEnded {
        ok: true,
        message: None,
    }
}

#[test]
fn a_node_goes_from_enroll_to_active_and_back_to_available() {
    let mut cur = at(S::Enroll, None);
    let mut step = |i: Input, ramdisk: bool| {
        let n = next(cur, ramdisk, &i, &t()).unwrap().expect("a transition");
        cur = n.at;
        (n.at.state, n.at.phase, n.work)
    };
    assert_eq!(
        step(Input::Verb(Verb::Manage), false),
        (S::Verifying, Some(Phase::ReadPower), Some(Work::ReadPower))
    );
    assert_eq!(step(ok(), false), (S::Manageable, None, None));
    assert_eq!(
        step(Input::Verb(Verb::Inspect), false),
        (
            S::Inspecting,
            Some(Phase::BootRamdisk),
            Some(Work::BootRamdisk)
        )
    );
    assert_eq!(
        step(ok(), false),
        (S::Inspecting, Some(Phase::WaitCallback), None)
    );
    assert_eq!(
        step(Input::RamdiskConnected, true),
        (
            S::Inspecting,
            Some(Phase::Inspect),
            Some(Work::Ramdisk(Phase::Inspect))
        )
    );
    assert_eq!(step(ok(), true), (S::Manageable, None, None));
    // Fast track: the ramdisk is still there, so cleaning starts at once.
    assert_eq!(
        step(Input::Verb(Verb::Provide), true),
        (
            S::Cleaning,
            Some(Phase::Erase),
            Some(Work::Ramdisk(Phase::Erase))
        )
    );
    assert_eq!(step(ok(), true), (S::Available, None, None));
    assert_eq!(
        step(Input::Verb(Verb::Deploy), true),
        (
            S::Deploying,
            Some(Phase::Write),
            Some(Work::Ramdisk(Phase::Write))
        )
    );
    assert_eq!(
        step(ok(), true),
        (S::Deploying, Some(Phase::ReadPower), Some(Work::ReadPower))
    );
    assert_eq!(step(ok(), false), (S::Active, None, None));
    // Undeploy boots the ramdisk again, which cleans.
    assert_eq!(
        step(Input::Verb(Verb::Undeploy), false),
        (
            S::Undeploying,
            Some(Phase::BootRamdisk),
            Some(Work::BootRamdisk)
        )
    );
    assert_eq!(
        step(ok(), false),
        (S::Undeploying, Some(Phase::WaitCallback), None)
    );
    assert_eq!(
        step(Input::RamdiskConnected, true),
        (
            S::Cleaning,
            Some(Phase::Erase),
            Some(Work::Ramdisk(Phase::Erase))
        )
    );
    assert_eq!(step(ok(), true), (S::Available, None, None));
}

#[test]
fn a_deploy_without_a_ramdisk_waits_for_its_call_back_in_wait_callback() {
    let seen = walk(
        at(S::Available, None),
        false,
        &[Input::Verb(Verb::Deploy), ok(), Input::RamdiskConnected],
    );
    assert_eq!(
        seen,
        [
            (S::Deploying, Some(Phase::BootRamdisk)),
            (S::WaitCallback, Some(Phase::WaitCallback)),
            (S::Deploying, Some(Phase::Write)),
        ]
    );
}

#[test]
fn every_wait_has_a_deadline_and_passing_it_fails_the_node_with_the_reason() {
    for (state, phase, failed, words) in [
        (
            S::WaitCallback,
            Phase::WaitCallback,
            S::DeployFailed,
            "no ramdisk called back within 5m",
        ),
        (
            S::Inspecting,
            Phase::WaitCallback,
            S::InspectFailed,
            "no ramdisk called back",
        ),
        (
            S::Cleaning,
            Phase::Erase,
            S::CleanFailed,
            "did not finish erasing the disks within 1h",
        ),
        (
            S::Deploying,
            Phase::Write,
            S::DeployFailed,
            "writing the image within 1h",
        ),
        (
            S::Verifying,
            Phase::ReadPower,
            S::Enroll,
            "reading power through the BMC did not finish within 2m",
        ),
        (S::Undeploying, Phase::BootRamdisk, S::Error, "within 3m"),
    ] {
        let n = next(
            at(state, Some(phase)),
            false,
            &Input::Verb(Verb::Abort),
            &t(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.at.state, failed, "abort in {state}");
        let n = next(at(state, Some(phase)), false, &Input::DeadlinePassed, &t())
            .unwrap()
            .unwrap();
        assert_eq!(n.at, at(failed, None), "deadline in {state}");
        let why = n.error.unwrap();
        assert!(why.contains(words), "{state}: {why}");
    }
    // Every phase's timeout is set on entry.
    let n = next(
        at(S::Available, None),
        false,
        &Input::Verb(Verb::Deploy),
        &t(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(n.timeout, Some(t().boot));
    // A node at rest has no deadline to pass.
    assert_eq!(
        next(at(S::Active, None), false, &Input::DeadlinePassed, &t()),
        Ok(None)
    );
}

#[test]
fn a_failed_plan_lands_in_the_failed_state_with_its_message_and_manage_recovers() {
    let n = next(
        at(S::Deploying, Some(Phase::Write)),
        true,
        &Input::PlanEnded {
            ok: false,
            message: Some("sha256 of the image is aa, expected bb".into()),
        },
        &t(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(n.at, at(S::DeployFailed, None));
    let why = n.error.unwrap();
    assert!(
        why.contains("writing the image failed") && why.contains("expected bb"),
        "{why}"
    );
    let n = next(n.at, true, &Input::Verb(Verb::Manage), &t())
        .unwrap()
        .unwrap();
    assert_eq!(n.at, at(S::Manageable, None));
    let n = next(n.at, true, &Input::Verb(Verb::Provide), &t())
        .unwrap()
        .unwrap();
    assert_eq!(n.at, at(S::Cleaning, Some(Phase::Erase)));
}

#[test]
fn verbs_that_do_not_apply_are_refused_with_what_would() {
    let e = next(at(S::Enroll, None), false, &Input::Verb(Verb::Deploy), &t()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot deploy a node in state `enroll` (manage it first)"
    );
    let e = next(at(S::Active, None), false, &Input::Verb(Verb::Abort), &t()).unwrap_err();
    assert!(e.to_string().contains("nothing is under way"), "{e}");
    let e = next(
        at(S::Cleaning, Some(Phase::Erase)),
        true,
        &Input::Verb(Verb::Deploy),
        &t(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("wait for it, or abort"), "{e}");
    let e = next(
        at(S::DeployFailed, None),
        false,
        &Input::Verb(Verb::Provide),
        &t(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("manage it to recover"), "{e}");
}

#[test]
fn inputs_that_are_not_awaited_change_nothing() {
    // A ramdisk that connects while nothing waits for it (it booted by hand, or reconnects
    // after a coordinator restart while its plan runs).
    for a in [
        at(S::Manageable, None),
        at(S::Deploying, Some(Phase::Write)),
        at(S::Cleaning, Some(Phase::Erase)),
    ] {
        assert_eq!(next(a, true, &Input::RamdiskConnected, &t()), Ok(None));
    }
    assert_eq!(next(at(S::Available, None), true, &ok(), &t()), Ok(None));
    // A ramdisk faster than the report of its own boot plan is taken as the call back.
    let n = next(
        at(S::Cleaning, Some(Phase::BootRamdisk)),
        true,
        &Input::RamdiskConnected,
        &t(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(n.at, at(S::Cleaning, Some(Phase::Erase)));
}

/// `ferric node VERB --wait` waits for [`Verb::ends_in`]: the successful path of every verb
/// ends there (and abort, which has none, is not waited for).
#[test]
fn every_verb_that_succeeds_ends_where_the_api_says() {
    assert_eq!(Verb::Abort.ends_in(), None);
    for (verb, from) in [
        (Verb::Manage, S::Enroll),
        (Verb::Inspect, S::Manageable),
        (Verb::Provide, S::Manageable),
        (Verb::Deploy, S::Available),
        (Verb::Undeploy, S::Active),
        (Verb::Rebuild, S::Active),
    ] {
        let mut cur = next(at(from, None), false, &Input::Verb(verb), &t())
            .unwrap()
            .unwrap_or_else(|| panic!("{verb} applies in {from}"))
            .at;
        let mut moves = 0;
        while let Some(phase) = cur.phase {
            let ramdisk_work = matches!(phase, Phase::Inspect | Phase::Erase | Phase::Write);
            let input = if phase == Phase::WaitCallback {
                Input::RamdiskConnected
            } else {
                ok()
            };
            cur = next(cur, ramdisk_work, &input, &t())
                .unwrap()
                .unwrap_or_else(|| panic!("{verb}: {phase} moves on when its work succeeds"))
                .at;
            moves += 1;
            assert!(moves < 20, "{verb} never ends");
        }
        assert_eq!(Some(cur.state), verb.ends_in(), "{verb} from {from}");
    }
}
