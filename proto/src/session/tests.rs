//! Both ends in memory with simulated time; every message crosses the real framing.

use super::*;
use crate::frame::{DEFAULT_MAX_FRAME, FrameDecoder, Message, to_frame};
use crate::msg::Role;
use crate::plan::{PlanStep, Step, StepEventKind};

/// Encodes and decodes through the real framing, so the tests cover the wire too.
fn wire<M: Message + std::fmt::Debug>(msg: M) -> M {
    let frame = to_frame(&msg, DEFAULT_MAX_FRAME).expect("encode");
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.extend(&frame);
    dec.next_msg::<M>().expect("decode").expect("one message")
}

fn hello(node: &str, version: u16, plans: Vec<PlanCursor>) -> Hello {
    Hello {
        version,
        node: node.into(),
        role: Role::Hypervisor,
        capabilities: vec!["fake".into()],
        inventory_digest: [7; 32],
        plans,
    }
}

fn plan(id: PlanId, steps: usize) -> Plan {
    Plan {
        id,
        node: "n1".into(),
        steps: (0..steps)
            .map(|i| PlanStep {
                key: format!("{id}/{i}"),
                timeout_secs: 5,
                step: Step::DeleteGuest {
                    name: format!("g{i}"),
                },
            })
            .collect(),
    }
}

fn event(plan: PlanId, seq: u32, kind: StepEventKind) -> StepEvent {
    StepEvent {
        plan,
        seq,
        step: seq / 2,
        at_ms: 1_000 + u64::from(seq),
        kind,
    }
}

/// A coordinator with a store of events, and an agent with a journal of unacked events.
struct World {
    now: Instant,
    agent: AgentSession,
    coord: CoordSession,
    store: BTreeMap<PlanId, Vec<StepEvent>>,
    agent_events: Vec<AgentEvent>,
    coord_events: Vec<CoordEvent>,
    /// Messages lost on the way to the agent (simulates a connection dropping).
    drop_to_agent: bool,
}

impl World {
    fn new(now: Instant, agent: AgentSession) -> Self {
        let coord = CoordSession::new(
            now,
            "n1".into(),
            42,
            Duration::from_secs(1),
            DEFAULT_HANDSHAKE_TIMEOUT,
        );
        Self {
            now,
            agent,
            coord,
            store: BTreeMap::new(),
            agent_events: vec![],
            coord_events: vec![],
            drop_to_agent: false,
        }
    }

    /// Moves messages both ways until quiet; the coordinator app stores events and acks them,
    /// and answers hellos from its store.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(m) = self.agent.poll_transmit() {
                moved = true;
                self.coord.handle_frame(self.now, wire(m));
            }
            while let Some(e) = self.coord.poll_event() {
                moved = true;
                match &e {
                    CoordEvent::Hello(h) => {
                        let stored = h
                            .plans
                            .iter()
                            .map(|c| StoredCursor {
                                plan: c.plan,
                                stored: self.store.get(&c.plan).map_or(0, |v| v.len() as u32),
                            })
                            .collect();
                        self.coord.accept(stored);
                    }
                    CoordEvent::Event(ev) => {
                        self.store.entry(ev.plan).or_default().push(ev.clone());
                        self.coord.ack(ev.plan, ev.seq);
                    }
                    _ => {}
                }
                self.coord_events.push(e);
            }
            while let Some(m) = self.coord.poll_transmit() {
                moved = true;
                if !self.drop_to_agent {
                    self.agent.handle_frame(self.now, wire(m));
                }
            }
            while let Some(e) = self.agent.poll_event() {
                moved = true;
                self.agent_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }
}

#[test]
fn handshake_plan_delivery_and_acks() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", PROTOCOL_VERSION, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    assert!(w.agent.is_established() && w.coord.is_established());
    assert_eq!(
        w.agent_events[0],
        AgentEvent::Established {
            session: 42,
            telemetry_interval: Duration::from_secs(1)
        }
    );

    w.coord.push_plan(plan(9, 2));
    w.pump();
    assert_eq!(
        w.agent_events.last(),
        Some(&AgentEvent::PlanReceived(plan(9, 2)))
    );
    w.agent.plan_accepted(9);
    w.agent.send_event(event(9, 0, StepEventKind::Started));
    w.agent
        .send_event(event(9, 1, StepEventKind::Done { changed: true }));
    w.pump();
    assert!(w.coord_events.contains(&CoordEvent::PlanAccepted(9)));
    assert_eq!(
        w.store[&9].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(
        w.agent_events
            .contains(&AgentEvent::Acked { plan: 9, seq: 1 })
    );
}

#[test]
fn plans_pushed_during_handshake_follow_the_welcome() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", PROTOCOL_VERSION, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.coord.push_plan(plan(3, 1));
    w.pump();
    assert!(matches!(w.agent_events[0], AgentEvent::Established { .. }));
    assert_eq!(w.agent_events[1], AgentEvent::PlanReceived(plan(3, 1)));
}

#[test]
fn unsupported_version_is_refused_with_the_range() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", 99, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    let want = RefuseReason::UnsupportedVersion {
        agent: 99,
        min: MIN_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };
    assert_eq!(
        w.agent_events,
        vec![AgentEvent::Closed(SessionError::Refused(want.clone()))]
    );
    assert!(w.coord.is_closed() && w.agent.is_closed());
    assert!(
        want.to_string()
            .contains("protocol version 99 is not supported")
    );
}

#[test]
fn identity_must_match_the_certificate() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("impostor", PROTOCOL_VERSION, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    assert!(matches!(
        &w.agent_events[..],
        [AgentEvent::Closed(SessionError::Refused(
            RefuseReason::IdentityMismatch { .. }
        ))]
    ));
}

#[test]
fn message_before_hello_is_refused() {
    let t0 = Instant::now();
    let mut coord = CoordSession::new(
        t0,
        "n1".into(),
        1,
        Duration::from_secs(1),
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    coord.handle_frame(t0, AgentMsg::PlanAccepted { plan: 1 });
    assert_eq!(
        coord.poll_transmit(),
        Some(CoordMsg::Refused(RefuseReason::ExpectedHello))
    );
    assert!(coord.is_closed());
}

#[test]
fn handshake_times_out_in_simulated_time() {
    let t0 = Instant::now();
    let mut agent = AgentSession::new(t0, hello("n1", 1, vec![]), vec![], Duration::from_secs(10));
    let _ = agent.poll_transmit();
    let deadline = agent.poll_timeout().expect("deadline armed");
    assert_eq!(deadline, t0 + Duration::from_secs(10));
    agent.handle_timeout(t0 + Duration::from_secs(9));
    assert!(!agent.is_closed());
    agent.handle_timeout(deadline);
    assert_eq!(
        agent.poll_event(),
        Some(AgentEvent::Closed(SessionError::HandshakeTimeout(
            Duration::from_secs(10)
        )))
    );
    assert_eq!(agent.poll_timeout(), None);

    let mut coord = CoordSession::new(
        t0,
        "n1".into(),
        1,
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    coord.handle_timeout(t0 + Duration::from_secs(3));
    assert!(matches!(
        coord.poll_event(),
        Some(CoordEvent::Closed(SessionError::HandshakeTimeout(_)))
    ));
}

#[test]
fn resume_after_reconnect_stores_each_event_once() {
    let t0 = Instant::now();
    // Session 1: the plan arrives, two events are stored, but the acks are lost because the
    // connection drops on the way back.
    let agent = AgentSession::new(
        t0,
        hello("n1", 1, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    w.coord.push_plan(plan(5, 2));
    w.pump();
    w.drop_to_agent = true;
    w.agent.send_event(event(5, 0, StepEventKind::Started));
    w.agent
        .send_event(event(5, 1, StepEventKind::Done { changed: false }));
    w.pump();
    assert!(
        !w.agent_events
            .iter()
            .any(|e| matches!(e, AgentEvent::Acked { .. }))
    );
    let store = std::mem::take(&mut w.store);
    assert_eq!(store[&5].len(), 2);

    // Session 2, 30 s later: the agent's journal still holds events 0..=3 unacked.
    let t1 = t0 + Duration::from_secs(30);
    let unacked: Vec<_> = vec![
        event(5, 0, StepEventKind::Started),
        event(5, 1, StepEventKind::Done { changed: false }),
        event(5, 2, StepEventKind::Started),
        event(5, 3, StepEventKind::Done { changed: true }),
    ];
    let agent = AgentSession::new(
        t1,
        hello("n1", 1, cursors([(5, 4, true)])),
        unacked,
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w2 = World::new(t1, agent);
    w2.store = store;
    w2.pump();
    assert_eq!(
        w2.store[&5].iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "every event stored exactly once"
    );
    // The welcome acknowledged 0..=1, the re-sent events 2 and 3 were acked after storing.
    assert!(
        w2.agent_events
            .contains(&AgentEvent::Acked { plan: 5, seq: 1 })
    );
    assert!(
        w2.agent_events
            .contains(&AgentEvent::Acked { plan: 5, seq: 3 })
    );
}

#[test]
fn duplicate_event_is_acked_again_not_emitted() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", 1, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    w.coord.push_plan(plan(1, 1));
    w.pump();
    w.agent.send_event(event(1, 0, StepEventKind::Started));
    w.agent.send_event(event(1, 0, StepEventKind::Started));
    w.pump();
    assert_eq!(w.store[&1].len(), 1);
    let acks = w
        .agent_events
        .iter()
        .filter(|e| **e == AgentEvent::Acked { plan: 1, seq: 0 })
        .count();
    assert_eq!(acks, 2);
}

#[test]
fn sequence_gap_closes_the_session() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", 1, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    w.coord.push_plan(plan(1, 3));
    w.pump();
    w.agent.send_event(event(1, 2, StepEventKind::Started));
    w.pump();
    assert!(w.coord.is_closed());
    assert!(w.store.is_empty());
}

#[test]
fn welcome_with_foreign_version_is_a_violation() {
    let t0 = Instant::now();
    let mut agent = AgentSession::new(
        t0,
        hello("n1", 1, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    agent.handle_frame(
        t0,
        CoordMsg::Welcome(Welcome {
            version: 77,
            session: 1,
            telemetry_interval_ms: 1000,
            stored: vec![],
        }),
    );
    assert!(agent.is_closed());
    assert!(matches!(
        agent.poll_event(),
        Some(AgentEvent::Closed(SessionError::Violation(_)))
    ));
}

fn creds(name: &str) -> Vec<BmcCredential> {
    vec![BmcCredential {
        name: name.into(),
        address: "ipmi://admin@10.0.0.5:623".into(),
        password: "hunter2".into(),
    }]
}

#[test]
fn bmc_credentials_precede_plans_and_never_print() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", PROTOCOL_VERSION, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    // Pushed during the handshake: the welcome, then the credentials, then the plan.
    w.coord.push_plan(plan(3, 1));
    assert!(w.coord.push_bmcs(creds("bm1")));
    w.pump();
    assert!(matches!(w.agent_events[0], AgentEvent::Established { .. }));
    assert_eq!(w.agent_events[1], AgentEvent::Bmcs(creds("bm1")));
    assert_eq!(w.agent_events[2], AgentEvent::PlanReceived(plan(3, 1)));
    assert!(!format!("{:?}", w.agent_events).contains("hunter2"));

    // After it, in call order; and states flow back.
    assert!(w.coord.push_bmcs(vec![]));
    w.pump();
    assert_eq!(w.agent_events.last(), Some(&AgentEvent::Bmcs(vec![])));
    let state = BmcState {
        name: "bm1".into(),
        at_ms: 5,
        power_on: Some(true),
        sensors: vec![],
        error: None,
    };
    w.agent.send_bmc_states(vec![state.clone()]);
    w.pump();
    assert_eq!(
        w.coord_events.last(),
        Some(&CoordEvent::BmcStates(vec![state]))
    );
}

#[test]
fn an_older_agent_gets_its_own_version_and_no_credentials() {
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", 1, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    assert!(w.agent.is_established() && w.coord.is_established());
    assert_eq!(w.coord.version(), 1);
    assert!(
        !w.coord.push_bmcs(creds("bm1")),
        "a version-1 agent cannot take credentials"
    );
    w.pump();
    assert!(
        !w.agent_events
            .iter()
            .any(|e| matches!(e, AgentEvent::Bmcs(_)))
    );
}

#[test]
fn console_sources_go_to_agents_of_version_6_and_lines_come_back() {
    let source = || {
        vec![crate::msg::ConsoleSource {
            name: "bm1".into(),
            path: "/var/log/ferric/consoles/bm1.log".into(),
        }]
    };
    let t0 = Instant::now();
    let agent = AgentSession::new(
        t0,
        hello("n1", PROTOCOL_VERSION, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    // Lines before the session is up are not sent (the tail is read again later).
    w.agent.send_console(vec![crate::msg::ConsoleLines {
        name: "bm1".into(),
        lines: vec!["early".into()],
        error: None,
    }]);
    assert!(w.coord.push_consoles(source()));
    w.pump();
    assert_eq!(w.agent_events[1], AgentEvent::Consoles(source()));
    let lines = vec![crate::msg::ConsoleLines {
        name: "bm1".into(),
        lines: vec!["login:".into()],
        error: None,
    }];
    w.agent.send_console(lines.clone());
    w.agent.send_console(vec![]);
    w.pump();
    let got: Vec<&CoordEvent> = w
        .coord_events
        .iter()
        .filter(|e| matches!(e, CoordEvent::Console(_)))
        .collect();
    assert_eq!(got, [&CoordEvent::Console(lines)]);

    // A version-5 agent does not get them.
    let agent = AgentSession::new(
        t0,
        hello("n1", 5, vec![]),
        vec![],
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    let mut w = World::new(t0, agent);
    w.pump();
    assert!(!w.coord.push_consoles(source()));
    w.pump();
    assert!(
        !w.agent_events
            .iter()
            .any(|e| matches!(e, AgentEvent::Consoles(_)))
    );
}
