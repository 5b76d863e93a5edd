//! Session logic of both ends as sans-IO state machines.
//!
//! Call order, for either end: feed decoded messages with `handle_frame(now, msg)` and expired
//! deadlines with `handle_timeout(now)`; after every call drain `poll_transmit` (messages to
//! write on the control stream, in order) and `poll_event` (what the application must act on),
//! and re-arm the timer with `poll_timeout`. Nothing here reads a clock or touches a socket.
//!
//! Delivery guarantees: step events are numbered per plan by the agent and kept until the
//! coordinator acknowledges them *after* storing them; on a new session the coordinator tells
//! the agent how many events of each plan it holds and the agent re-sends the rest. The
//! coordinator drops events it has already seen, so each event is stored exactly once.

use crate::msg::{
    AgentMsg, BmcCredential, BmcState, ConsoleLines, ConsoleSource, CoordMsg, Hello, PlanCursor,
    RefuseReason, StoredCursor, Welcome,
};
use crate::plan::{Plan, PlanId, StepEvent};
use crate::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Default time allowed between connecting and the end of the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended from the protocol's point of view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer did not finish the handshake in time.
    #[error("handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The coordinator refused the session.
    #[error("coordinator refused the session: {0}")]
    Refused(RefuseReason),
    /// The peer sent a message that is not allowed in the current state.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Handshake { deadline: Instant },
    Established,
    Closed,
}

/// What both ends share: the phase with the handshake's deadline, the messages to write
/// (`Out`) and the events for the application (`Ev`), and how the end closes.
#[derive(Debug)]
struct Core<Out, Ev> {
    phase: Phase,
    handshake_timeout: Duration,
    transmit: VecDeque<Out>,
    events: VecDeque<Ev>,
    /// The end's event for a session that ended.
    closed: fn(SessionError) -> Ev,
    /// Whether closing drops what was queued to write (the agent's does; the coordinator's
    /// keeps a queued refusal).
    clear_on_close: bool,
}

impl<Out, Ev> Core<Out, Ev> {
    fn new(
        now: Instant,
        handshake_timeout: Duration,
        closed: fn(SessionError) -> Ev,
        clear_on_close: bool,
    ) -> Self {
        Core {
            phase: Phase::Handshake {
                deadline: now + handshake_timeout,
            },
            handshake_timeout,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            closed,
            clear_on_close,
        }
    }

    fn established(&self) -> bool {
        self.phase == Phase::Established
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Handshake { deadline } = self.phase
            && now >= deadline
        {
            self.close(SessionError::HandshakeTimeout(self.handshake_timeout));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake { deadline } => Some(deadline),
            _ => None,
        }
    }

    fn close(&mut self, err: SessionError) {
        self.phase = Phase::Closed;
        if self.clear_on_close {
            self.transmit.clear();
        }
        self.events.push_back((self.closed)(err));
    }
}

// ---------------------------------------------------------------------------------------------
// Agent end
// ---------------------------------------------------------------------------------------------

/// What the agent application must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The session is up.
    Established {
        /// Session id (for logs).
        session: u64,
        /// Telemetry interval to use.
        telemetry_interval: Duration,
    },
    /// A plan to journal and run. Reply with [`AgentSession::plan_accepted`] once journaled.
    PlanReceived(Plan),
    /// Events `0..=seq` of `plan` are stored by the coordinator: forget them.
    Acked {
        /// The plan.
        plan: PlanId,
        /// Highest stored seq.
        seq: u32,
    },
    /// The BMCs this agent drives now (replacing the set before).
    Bmcs(Vec<BmcCredential>),
    /// The console logs this agent tails now (replacing the set before).
    Consoles(Vec<ConsoleSource>),
    /// Stop this plan (see [`CoordMsg::Cancel`]).
    Cancel(PlanId),
    /// The session ended; reconnect (with backoff) unless the error says otherwise.
    Closed(SessionError),
}

/// Agent end of a session. One per connection.
#[derive(Debug)]
pub struct AgentSession {
    core: Core<AgentMsg, AgentEvent>,
    /// Events waiting for the handshake (re-sent from the journal, or new).
    pending: VecDeque<StepEvent>,
}

impl AgentSession {
    /// Starts a session: queues `hello`, and will re-send `unacked` events (in journal order)
    /// once the coordinator says how many of them it already has.
    pub fn new(
        now: Instant,
        hello: Hello,
        unacked: Vec<StepEvent>,
        handshake_timeout: Duration,
    ) -> Self {
        let mut core = Core::new(now, handshake_timeout, AgentEvent::Closed, true);
        core.transmit.push_back(AgentMsg::Hello(hello));
        Self {
            core,
            pending: unacked.into(),
        }
    }

    /// Whether the handshake completed and the session is still open.
    pub fn is_established(&self) -> bool {
        self.core.established()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.core.phase == Phase::Closed
    }

    /// Handles one decoded message from the coordinator.
    pub fn handle_frame(&mut self, _now: Instant, msg: CoordMsg) {
        match (&self.core.phase, msg) {
            (Phase::Closed, _) => {}
            (Phase::Handshake { .. }, CoordMsg::Welcome(w)) => self.on_welcome(w),
            (Phase::Handshake { .. }, CoordMsg::Refused(r)) => {
                self.close(SessionError::Refused(r));
            }
            (Phase::Handshake { .. }, _) => {
                self.close(SessionError::Violation("expected welcome or refusal first"))
            }
            (Phase::Established, CoordMsg::Plan(plan)) => {
                self.core.events.push_back(AgentEvent::PlanReceived(plan))
            }
            (Phase::Established, CoordMsg::Ack { plan, seq }) => {
                self.core.events.push_back(AgentEvent::Acked { plan, seq })
            }
            (Phase::Established, CoordMsg::Bmcs(bmcs)) => {
                self.core.events.push_back(AgentEvent::Bmcs(bmcs))
            }
            (Phase::Established, CoordMsg::Consoles(c)) => {
                self.core.events.push_back(AgentEvent::Consoles(c))
            }
            (Phase::Established, CoordMsg::Cancel { plan }) => {
                self.core.events.push_back(AgentEvent::Cancel(plan))
            }
            (Phase::Established, CoordMsg::Welcome(_) | CoordMsg::Refused(_)) => self.close(
                SessionError::Violation("handshake message after the handshake"),
            ),
        }
    }

    fn on_welcome(&mut self, w: Welcome) {
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&w.version) {
            self.close(SessionError::Violation(
                "coordinator chose a protocol version this agent does not speak",
            ));
            return;
        }
        let stored: BTreeMap<PlanId, u32> = w.stored.iter().map(|c| (c.plan, c.stored)).collect();
        // What the coordinator has already is acknowledged now; the rest is re-sent in order.
        for (&plan, &n) in &stored {
            if n > 0 {
                self.core
                    .events
                    .push_back(AgentEvent::Acked { plan, seq: n - 1 });
            }
        }
        self.core.phase = Phase::Established;
        self.core.events.push_front(AgentEvent::Established {
            session: w.session,
            telemetry_interval: Duration::from_millis(u64::from(w.telemetry_interval_ms.max(10))),
        });
        for ev in std::mem::take(&mut self.pending) {
            let have = stored.get(&ev.plan).copied().unwrap_or(0);
            if ev.seq >= have {
                self.core.transmit.push_back(AgentMsg::Event(ev));
            }
        }
    }

    /// Reports a plan as written to the journal.
    pub fn plan_accepted(&mut self, plan: PlanId) {
        if self.core.established() {
            self.core
                .transmit
                .push_back(AgentMsg::PlanAccepted { plan });
        }
    }

    /// Sends what was read from the BMCs (dropped when the session is not up: the next poll
    /// sends fresher states).
    pub fn send_bmc_states(&mut self, states: Vec<BmcState>) {
        if self.core.established() {
            self.core.transmit.push_back(AgentMsg::BmcStates(states));
        }
    }

    /// Sends new console lines (dropped when the session is not up: the agent polls its logs
    /// only while it is).
    pub fn send_console(&mut self, lines: Vec<ConsoleLines>) {
        if self.core.established() && !lines.is_empty() {
            self.core.transmit.push_back(AgentMsg::Console(lines));
        }
    }

    /// Sends a step event (after the handshake, or queued until then).
    pub fn send_event(&mut self, ev: StepEvent) {
        match self.core.phase {
            Phase::Established => self.core.transmit.push_back(AgentMsg::Event(ev)),
            Phase::Handshake { .. } => self.pending.push_back(ev),
            Phase::Closed => {}
        }
    }

    /// Handles an expired deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// The next message to write.
    pub fn poll_transmit(&mut self) -> Option<AgentMsg> {
        self.core.transmit.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.core.events.pop_front()
    }

    fn close(&mut self, err: SessionError) {
        self.core.close(err);
    }
}

// ---------------------------------------------------------------------------------------------
// Coordinator end
// ---------------------------------------------------------------------------------------------

/// What the coordinator application must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum CoordEvent {
    /// A valid `Hello` from the certified node: look up the store, then call
    /// [`CoordSession::accept`] (or [`CoordSession::refuse`]).
    Hello(Hello),
    /// A new step event: store it, then call [`CoordSession::ack`].
    Event(StepEvent),
    /// The agent journaled a plan.
    PlanAccepted(PlanId),
    /// What the agent read from its BMCs.
    BmcStates(Vec<BmcState>),
    /// New lines of the console logs the agent tails.
    Console(Vec<ConsoleLines>),
    /// The session ended (after a refusal was queued, if any: flush the transmit queue).
    Closed(SessionError),
}

/// Coordinator end of a session. One per connection.
#[derive(Debug)]
pub struct CoordSession {
    core: Core<CoordMsg, CoordEvent>,
    certified: String,
    session: u64,
    telemetry_interval: Duration,
    hello_seen: bool,
    /// Protocol version agreed: the lower of the agent's and this build's.
    version: u16,
    /// BMC credentials pushed before the handshake finished.
    queued_bmcs: Option<Vec<BmcCredential>>,
    /// Console sources pushed before the handshake finished.
    queued_consoles: Option<Vec<ConsoleSource>>,
    /// Next event seq expected per plan; earlier ones are duplicates.
    next_seq: BTreeMap<PlanId, u32>,
    /// Plans pushed before the handshake finished.
    queued_plans: Vec<Plan>,
}

impl CoordSession {
    /// A session for a connection whose client certificate names `certified`.
    pub fn new(
        now: Instant,
        certified: String,
        session: u64,
        telemetry_interval: Duration,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            core: Core::new(now, handshake_timeout, CoordEvent::Closed, false),
            certified,
            session,
            telemetry_interval,
            hello_seen: false,
            version: PROTOCOL_VERSION,
            queued_bmcs: None,
            queued_consoles: None,
            next_seq: BTreeMap::new(),
            queued_plans: Vec::new(),
        }
    }

    /// Node named in the peer's certificate.
    pub fn node(&self) -> &str {
        &self.certified
    }

    /// Whether the handshake completed and the session is still open.
    pub fn is_established(&self) -> bool {
        self.core.established()
    }

    /// Whether the session ended.
    pub fn is_closed(&self) -> bool {
        self.core.phase == Phase::Closed
    }

    /// Handles one decoded message from the agent.
    pub fn handle_frame(&mut self, _now: Instant, msg: AgentMsg) {
        match (&self.core.phase, msg) {
            (Phase::Closed, _) => {}
            (Phase::Handshake { .. }, AgentMsg::Hello(h)) if !self.hello_seen => self.on_hello(h),
            (Phase::Handshake { .. }, _) if !self.hello_seen => {
                self.refuse(RefuseReason::ExpectedHello)
            }
            (Phase::Handshake { .. }, _) => {
                self.close(SessionError::Violation("message before the welcome"))
            }
            (Phase::Established, AgentMsg::Hello(_)) => {
                self.close(SessionError::Violation("second hello"))
            }
            (Phase::Established, AgentMsg::PlanAccepted { plan }) => {
                self.core.events.push_back(CoordEvent::PlanAccepted(plan))
            }
            (Phase::Established, AgentMsg::Event(ev)) => self.on_event(ev),
            (Phase::Established, AgentMsg::BmcStates(states)) => {
                self.core.events.push_back(CoordEvent::BmcStates(states))
            }
            (Phase::Established, AgentMsg::Console(lines)) => {
                self.core.events.push_back(CoordEvent::Console(lines))
            }
        }
    }

    fn on_hello(&mut self, h: Hello) {
        self.hello_seen = true;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&h.version) {
            self.refuse(RefuseReason::UnsupportedVersion {
                agent: h.version,
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            });
            return;
        }
        self.version = h.version.min(PROTOCOL_VERSION);
        if h.node != self.certified {
            self.refuse(RefuseReason::IdentityMismatch {
                claimed: h.node,
                certified: self.certified.clone(),
            });
            return;
        }
        self.core.events.push_back(CoordEvent::Hello(h));
    }

    fn on_event(&mut self, ev: StepEvent) {
        let next = self.next_seq.entry(ev.plan).or_insert(0);
        if ev.seq < *next {
            // Already stored (a re-send after reconnect): acknowledge again, do not re-emit.
            self.core.transmit.push_back(CoordMsg::Ack {
                plan: ev.plan,
                seq: *next - 1,
            });
            return;
        }
        if ev.seq > *next {
            self.close(SessionError::Violation("step event sequence has a gap"));
            return;
        }
        *next += 1;
        self.core.events.push_back(CoordEvent::Event(ev));
    }

    /// Accepts the agent after a `Hello`: `stored` says how many events of each plan the agent
    /// reported are already in the store. Plans pushed meanwhile are sent after the welcome.
    pub fn accept(&mut self, stored: Vec<StoredCursor>) {
        if !matches!(self.core.phase, Phase::Handshake { .. }) || !self.hello_seen {
            return;
        }
        for c in &stored {
            self.next_seq.insert(c.plan, c.stored);
        }
        self.core.transmit.push_back(CoordMsg::Welcome(Welcome {
            version: self.version,
            session: self.session,
            telemetry_interval_ms: u32::try_from(self.telemetry_interval.as_millis())
                .unwrap_or(u32::MAX),
            stored,
        }));
        self.core.phase = Phase::Established;
        if let Some(bmcs) = self.queued_bmcs.take() {
            self.push_bmcs(bmcs);
        }
        if let Some(c) = self.queued_consoles.take() {
            self.push_consoles(c);
        }
        for plan in std::mem::take(&mut self.queued_plans) {
            self.push_plan(plan);
        }
    }

    /// Refuses the session with `reason` (queued for transmission), then closes it.
    pub fn refuse(&mut self, reason: RefuseReason) {
        self.core.transmit.clear();
        self.core
            .transmit
            .push_back(CoordMsg::Refused(reason.clone()));
        self.core.phase = Phase::Closed;
        self.core
            .events
            .push_back(CoordEvent::Closed(SessionError::Refused(reason)));
    }

    /// Pushes a plan to the agent (queued until the handshake completes).
    pub fn push_plan(&mut self, plan: Plan) {
        match self.core.phase {
            Phase::Established => {
                self.next_seq.entry(plan.id).or_insert(0);
                self.core.transmit.push_back(CoordMsg::Plan(plan));
            }
            Phase::Handshake { .. } => self.queued_plans.push(plan),
            Phase::Closed => {}
        }
    }

    /// Protocol version agreed with the agent (this build's until the hello).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Hands the agent the BMCs it drives (the whole set), ahead of any plan pushed after this
    /// call; queued until the handshake completes. Returns false when the agent's protocol
    /// version predates BMC credentials (2): it cannot drive BMCs then.
    pub fn push_bmcs(&mut self, bmcs: Vec<BmcCredential>) -> bool {
        if self.version < 2 {
            return false;
        }
        match self.core.phase {
            Phase::Established => self.core.transmit.push_back(CoordMsg::Bmcs(bmcs)),
            Phase::Handshake { .. } => self.queued_bmcs = Some(bmcs),
            Phase::Closed => {}
        }
        true
    }

    /// Hands the agent the console logs it tails (the whole set); queued until the handshake
    /// completes. Returns false when the agent's protocol version predates them (6).
    pub fn push_consoles(&mut self, consoles: Vec<ConsoleSource>) -> bool {
        if self.version < 6 {
            return false;
        }
        match self.core.phase {
            Phase::Established => self.core.transmit.push_back(CoordMsg::Consoles(consoles)),
            Phase::Handshake { .. } => self.queued_consoles = Some(consoles),
            Phase::Closed => {}
        }
        true
    }

    /// Tells the agent to stop `plan`. Returns false when the session is not established or
    /// the agent's protocol version predates cancelling (7): the plan then runs to its end.
    pub fn cancel_plan(&mut self, plan: PlanId) -> bool {
        if self.version < 7 || self.core.phase != Phase::Established {
            return false;
        }
        self.core.transmit.push_back(CoordMsg::Cancel { plan });
        true
    }

    /// Acknowledges events `0..=seq` of `plan` as stored.
    pub fn ack(&mut self, plan: PlanId, seq: u32) {
        if self.core.established() {
            self.core.transmit.push_back(CoordMsg::Ack { plan, seq });
        }
    }

    /// Handles an expired deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// The next message to write.
    pub fn poll_transmit(&mut self) -> Option<CoordMsg> {
        self.core.transmit.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<CoordEvent> {
        self.core.events.pop_front()
    }

    fn close(&mut self, err: SessionError) {
        self.core.close(err);
    }
}

/// Builds the cursors an agent reports in `Hello` from its journal's view of its plans.
pub fn cursors<I: IntoIterator<Item = (PlanId, u32, bool)>>(plans: I) -> Vec<PlanCursor> {
    plans
        .into_iter()
        .map(|(plan, next_seq, finished)| PlanCursor {
            plan,
            next_seq,
            finished,
        })
        .collect()
}

#[cfg(test)]
mod tests;
