//! The BGP session FSM (RFC 4271 §8), sans-IO: [`Event`]s in, [`Action`]s out.
//!
//! The I/O layer owns the TCP connection and the timers. It feeds decoded messages, decode
//! errors, TCP outcomes and timer expiries in, and carries out the actions: connect, send,
//! disconnect, (re)arm or stop a timer, hand UPDATEs to the RIB. Time never enters the FSM except
//! as timer expiry events, so every transition is a deterministic story.

mod collision;
mod negotiate;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

pub use collision::{Connection, resolve_collision};
pub use negotiate::{Negotiated, build_open, negotiate};

use crate::wire::{
    Capability, DecodeError, Message, NotificationMsg, OpenMsg, UpdateMsg, cease_subcode,
    error_code, open_subcode,
};

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub mod fsm_subcode {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_MESSAGE_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_MESSAGE_IN_ESTABLISHED: u8 = 3;
}

/// Session states (RFC 4271 §8.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// The session's timers (RFC 4271 §8, §10). IdleHold delays the automatic restart after an
/// error and doubles on each consecutive failure (§8.1.1 DampPeerOscillations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    IdleHold,
}

/// The peer AS we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAs {
    Exact(u32),
    /// Learned from the peer's OPEN.
    Any,
}

/// What the FSM needs to know of its peer's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub peer_as: PeerAs,
    /// Proposed hold time: 0 or at least 3 (§4.2).
    pub hold_time: u16,
    /// Keepalive interval; default hold_time / 3.
    pub keepalive: Option<u16>,
    pub connect_retry: Duration,
    /// Passive: never initiate a connection, only accept.
    pub passive: bool,
    /// Capabilities we advertise (4-octet AS is added if missing).
    pub capabilities: Vec<Capability>,
    /// First delay of the automatic restart after an error.
    pub idle_hold: Duration,
    /// Upper bound of the doubled idle hold.
    pub idle_hold_max: Duration,
}

/// The large hold time used until the OPEN exchange completes (§8.2.2: "4 minutes suggested").
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// Inputs (RFC 4271 §8.1, events named as there).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Event 1.
    ManualStart,
    /// Event 2, with an RFC 9003 shutdown communication.
    ManualStop { communication: Option<String> },
    /// Event 3: restart after the idle hold timer.
    AutomaticStart,
    /// Events 9-11 and the idle hold timer.
    TimerExpired(Timer),
    /// Events 16/17: our connect completed, or an incoming connection was accepted for us.
    TcpConnected,
    /// Event 18.
    TcpFailed,
    /// Events 19, 25-27 and ROUTE-REFRESH.
    Message(Message),
    /// Events 21, 22, 28: a message that could not be decoded.
    DecodeError(DecodeError),
    /// Stop with a Cease of the given subcode (e.g. max prefixes, collision, deconfigured).
    Cease {
        subcode: u8,
        communication: Option<String>,
    },
}

/// Why a session left Established or failed to get there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    NotificationSent(NotificationMsg),
    NotificationReceived(NotificationMsg),
    TcpFailed,
    ManualStop,
    /// The speaker closed the session because BFD saw the forwarding path fail (RFC 5882):
    /// unlike a plain TCP loss, no graceful restart (the path is gone, not the control plane).
    BfdDown,
}

/// Outputs, to be carried out in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending what was queued).
    Disconnect,
    Send(Message),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// The session is up: switch the codec to `negotiated.context()`, send the Adj-RIB-Out.
    Established(Box<Negotiated>),
    /// The session is down (or never came up): the RIB flushes or marks stale the peer's routes.
    Down(DownReason),
    /// An UPDATE for the RIB (RFC 7606 outcomes are in it).
    Update(Box<UpdateMsg>),
    /// The peer asked to have our routes re-sent (RFC 2918, 7313).
    RouteRefresh(crate::wire::RouteRefreshMsg),
}

/// One BGP session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    open_sent: Option<OpenMsg>,
    negotiated: Option<Negotiated>,
    /// Consecutive failures, for the idle hold backoff.
    failures: u32,
    /// Set by ManualStop: no automatic restart.
    stopped: bool,
    /// A one-off idle hold for the next automatic restart (e.g. after max-prefix).
    next_idle_hold: Option<Duration>,
    last_error: Option<DownReason>,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            state: State::Idle,
            open_sent: None,
            negotiated: None,
            failures: 0,
            stopped: true,
            next_idle_hold: None,
            last_error: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The peer's BGP identifier once its OPEN arrived (for collision detection, §6.8).
    pub fn peer_router_id(&self) -> Option<Ipv4Addr> {
        self.negotiated.as_ref().map(|n| n.peer_router_id)
    }

    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The next automatic restart waits `d` instead of the usual idle hold.
    pub fn hold_down(&mut self, d: Duration) {
        self.next_idle_hold = Some(d);
    }

    /// Sets or clears the Restart State (R) bit of our graceful restart capability
    /// (RFC 4724 §3): set in the OPENs right after a restart, cleared once a session is up.
    pub fn set_restart_state(&mut self, restarted: bool) {
        for c in &mut self.cfg.capabilities {
            if let Capability::GracefulRestart(gr) = c {
                gr.restart_state = restarted;
            }
        }
    }

    /// Changes who initiates connections (a collision winner taking over a peer, §6.8).
    pub fn set_passive(&mut self, passive: bool) {
        self.cfg.passive = passive;
    }

    /// Feeds one event; returns the actions to carry out.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::ManualStart => {
                self.stopped = false;
                self.failures = 0;
                if self.state == State::Idle {
                    self.start(&mut out);
                }
            }
            Event::AutomaticStart | Event::TimerExpired(Timer::IdleHold) => {
                if self.state == State::Idle && !self.stopped {
                    self.start(&mut out);
                }
            }
            Event::ManualStop { communication } => {
                self.stopped = true;
                let n = NotificationMsg::cease_with_communication(
                    cease_subcode::ADMINISTRATIVE_SHUTDOWN,
                    communication.as_deref().unwrap_or(""),
                );
                self.stop(&mut out, Some(n), DownReason::ManualStop);
            }
            Event::Cease {
                subcode,
                communication,
            } => {
                let n = NotificationMsg::cease_with_communication(
                    subcode,
                    communication.as_deref().unwrap_or(""),
                );
                self.fail(&mut out, n);
            }
            Event::TimerExpired(t) => self.timer(t, &mut out),
            Event::TcpConnected => self.connected(&mut out),
            Event::TcpFailed => self.tcp_failed(&mut out),
            Event::DecodeError(e) => {
                if self.state != State::Idle {
                    self.fail(&mut out, e.to_notification());
                }
            }
            Event::Message(m) => self.message(m, &mut out),
        }
        out
    }

    fn set(&mut self, s: State) {
        self.state = s;
    }

    /// Idle → Connect (or Active when passive), §8.2.2 Idle state, events 1/3.
    fn start(&mut self, out: &mut Vec<Action>) {
        out.push(Action::StartTimer(
            Timer::ConnectRetry,
            self.cfg.connect_retry,
        ));
        if self.cfg.passive {
            self.set(State::Active);
        } else {
            out.push(Action::Connect);
            self.set(State::Connect);
        }
    }

    /// Events 16/17 in Connect/Active: send OPEN, large hold time, → OpenSent.
    fn connected(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Connect | State::Active => {
                out.push(Action::StopTimer(Timer::ConnectRetry));
                let open = build_open(
                    self.cfg.local_asn,
                    self.cfg.hold_time,
                    self.cfg.router_id,
                    &self.cfg.capabilities,
                );
                self.open_sent = Some(open.clone());
                out.push(Action::Send(Message::Open(open)));
                out.push(Action::StartTimer(Timer::Hold, OPEN_HOLD_TIME));
                self.set(State::OpenSent);
            }
            // A second connection is the speaker's business (§6.8); the FSM has one.
            _ => {}
        }
    }

    fn tcp_failed(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => {}
            // §8.2.2 Connect, event 18: restart ConnectRetry, → Active.
            State::Connect | State::Active => {
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
                self.set(State::Active);
            }
            // OpenSent, event 18: close, restart ConnectRetry, → Active.
            State::OpenSent => {
                out.push(Action::Disconnect);
                out.push(Action::StopTimer(Timer::Hold));
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
                self.open_sent = None;
                self.set(State::Active);
            }
            State::OpenConfirm | State::Established => {
                self.down(out, DownReason::TcpFailed, None);
            }
        }
    }

    fn timer(&mut self, t: Timer, out: &mut Vec<Action>) {
        match (self.state, t) {
            // §8.2.2 Connect/Active, event 9: drop the attempt and retry.
            (State::Connect | State::Active, Timer::ConnectRetry) => {
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
                if self.cfg.passive {
                    return;
                }
                if self.state == State::Connect {
                    out.push(Action::Disconnect);
                }
                out.push(Action::Connect);
                self.set(State::Connect);
            }
            // Event 10 in OpenSent/OpenConfirm/Established: Hold Timer Expired (§6.5).
            (State::OpenSent | State::OpenConfirm | State::Established, Timer::Hold) => {
                let n = NotificationMsg::new(error_code::HOLD_TIMER_EXPIRED, 0, Bytes::new());
                self.fail(out, n);
            }
            // Event 11: send KEEPALIVE, restart the timer.
            (State::OpenConfirm | State::Established, Timer::Keepalive) => {
                if let Some(n) = self.negotiated.as_ref().filter(|n| n.keepalive > 0) {
                    out.push(Action::Send(Message::Keepalive));
                    let k = Duration::from_secs(n.keepalive.into());
                    out.push(Action::StartTimer(Timer::Keepalive, k));
                }
            }
            // A stale expiry (the timer raced a transition): nothing to do.
            _ => {}
        }
    }

    fn message(&mut self, m: Message, out: &mut Vec<Action>) {
        if let Message::Notification(n) = m {
            // Event 25 in any connected state: close, → Idle (§8.2.2). Version errors in
            // OpenSent are the same here: we only speak version 4.
            if self.state != State::Idle {
                self.down(out, DownReason::NotificationReceived(n), None);
            }
            return;
        }
        match (self.state, m) {
            (State::OpenSent, Message::Open(open)) => self.open_received(open, out),
            (State::OpenConfirm, Message::Keepalive) => {
                // Event 26: → Established.
                let n = self.negotiated.clone().expect("OpenConfirm has negotiated");
                self.restart_hold(out);
                self.failures = 0;
                self.last_error = None;
                self.set(State::Established);
                out.push(Action::Established(Box::new(n)));
            }
            (State::Established, Message::Keepalive) => self.restart_hold(out),
            (State::Established, Message::Update(u)) => {
                self.restart_hold(out);
                out.push(Action::Update(u));
            }
            (State::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold(out);
                out.push(Action::RouteRefresh(rr));
            }
            (State::Idle, _) => {}
            // Connect/Active with no OPEN exchanged, or a message out of order (RFC 6608).
            (s, _) => {
                let sub = match s {
                    State::OpenSent => fsm_subcode::UNEXPECTED_MESSAGE_IN_OPEN_SENT,
                    State::OpenConfirm => fsm_subcode::UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
                    State::Established => fsm_subcode::UNEXPECTED_MESSAGE_IN_ESTABLISHED,
                    _ => fsm_subcode::UNSPECIFIED,
                };
                self.fail(
                    out,
                    NotificationMsg::new(error_code::FSM, sub, Bytes::new()),
                );
            }
        }
    }

    /// §8.2.2 OpenSent, event 19: check the OPEN (§6.2), reply KEEPALIVE, → OpenConfirm.
    fn open_received(&mut self, open: OpenMsg, out: &mut Vec<Action>) {
        if let Err(n) = self.check_open(&open) {
            self.fail(out, n);
            return;
        }
        let ours = self.open_sent.as_ref().expect("OpenSent has sent an OPEN");
        let neg = negotiate(ours, self.cfg.keepalive, &open);
        out.push(Action::Send(Message::Keepalive));
        if neg.hold_time > 0 {
            out.push(Action::StartTimer(
                Timer::Keepalive,
                Duration::from_secs(neg.keepalive.into()),
            ));
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(neg.hold_time.into()),
            ));
        } else {
            out.push(Action::StopTimer(Timer::Hold));
        }
        self.negotiated = Some(neg);
        self.set(State::OpenConfirm);
    }

    fn check_open(&self, open: &OpenMsg) -> Result<(), NotificationMsg> {
        let err = |sub: u8, data: Bytes| NotificationMsg::new(error_code::OPEN_MESSAGE, sub, data);
        // RFC 7607 §2: AS 0 as the peer's AS (My AS, or the 4-octet AS capability) is Bad Peer
        // AS, whatever peer AS is configured ("any" included).
        if open.asn() == 0 {
            return Err(err(
                open_subcode::BAD_PEER_AS,
                Bytes::copy_from_slice(&open.my_as.to_be_bytes()),
            ));
        }
        // §6.2: Bad Peer AS, data = the 2-octet My AS field.
        if let PeerAs::Exact(want) = self.cfg.peer_as
            && open.asn() != want
        {
            return Err(err(
                open_subcode::BAD_PEER_AS,
                Bytes::copy_from_slice(&open.my_as.to_be_bytes()),
            ));
        }
        // §6.2, RFC 6286 §2.2: the identifier must be non-zero, and differ from ours on iBGP.
        let ibgp = open.asn() == self.cfg.local_asn;
        if open.bgp_id.is_unspecified() || (ibgp && open.bgp_id == self.cfg.router_id) {
            return Err(err(open_subcode::BAD_BGP_IDENTIFIER, Bytes::new()));
        }
        Ok(())
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if let Some(n) = self.negotiated.as_ref().filter(|n| n.hold_time > 0) {
            out.push(Action::StartTimer(
                Timer::Hold,
                Duration::from_secs(n.hold_time.into()),
            ));
        }
    }

    /// A TCP connection carries the session (a NOTIFICATION can be sent).
    fn has_connection(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    /// An error: NOTIFICATION (if connected), close, → Idle, restart after the idle hold.
    fn fail(&mut self, out: &mut Vec<Action>, n: NotificationMsg) {
        if self.state == State::Idle {
            return;
        }
        let notify = self.has_connection().then(|| n.clone());
        self.down(out, DownReason::NotificationSent(n), notify);
    }

    fn stop(&mut self, out: &mut Vec<Action>, n: Option<NotificationMsg>, reason: DownReason) {
        if self.state == State::Idle {
            out.push(Action::StopTimer(Timer::IdleHold));
            return;
        }
        let notify = if self.has_connection() { n } else { None };
        self.down(out, reason, notify);
    }

    /// Common exit to Idle: optional NOTIFICATION, close, stop timers, report, schedule restart.
    fn down(&mut self, out: &mut Vec<Action>, reason: DownReason, notify: Option<NotificationMsg>) {
        // RFC 8538 §5: with the N bit exchanged, a Cease meant to remove the routes goes out as
        // a Hard Reset (and is reported so: the core must not keep the peer's routes either).
        let graceful_notification = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.graceful_notification());
        let hard = |n: NotificationMsg| {
            if graceful_notification && n.wants_hard_reset() {
                NotificationMsg::hard_reset(&n)
            } else {
                n
            }
        };
        let notify = notify.map(hard);
        let reason = match reason {
            DownReason::NotificationSent(n) => DownReason::NotificationSent(hard(n)),
            r => r,
        };
        if let Some(n) = notify {
            out.push(Action::Send(Message::Notification(n)));
        }
        if self.state != State::Active || self.open_sent.is_some() {
            out.push(Action::Disconnect);
        }
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Action::StopTimer(t));
        }
        out.push(Action::Down(reason.clone()));
        self.last_error = Some(reason);
        self.open_sent = None;
        self.negotiated = None;
        self.set(State::Idle);
        if !self.stopped {
            let backoff = self
                .cfg
                .idle_hold
                .saturating_mul(1 << self.failures.min(16))
                .min(self.cfg.idle_hold_max);
            let delay = self.next_idle_hold.take().unwrap_or(backoff);
            self.failures = self.failures.saturating_add(1);
            out.push(Action::StartTimer(Timer::IdleHold, delay));
        }
    }
}
