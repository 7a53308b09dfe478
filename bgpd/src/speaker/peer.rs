//! One task per configured peer: drives the FSM over its TCP connection(s), owns the timers,
//! resolves connection collisions (RFC 4271 §6.8) and talks to the core (RIB) task.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::conn::{self, Frame, Transport};
use super::status::{PeerStatus, count_messages, notification_text};
use crate::fsm::{
    Action, Connection, DownReason, Event, Negotiated, Session, SessionConfig, State, Timer,
    resolve_collision,
};
use crate::rib::PeerId;
use crate::wire::{Context, Message, MessageType, UpdateMsg, cease_subcode};

/// Messages into a peer task.
#[derive(Debug)]
pub enum PeerMsg {
    Connected(u64, std::io::Result<TcpStream>),
    Incoming(TcpStream),
    /// Stop the session (Cease / Administrative Shutdown, RFC 9003 text) and stay down.
    Stop {
        communication: Option<String>,
    },
    Start,
    /// Ask the peer to re-send its routes (RFC 2918).
    RequestRefresh,
    /// Exit the task. `notify`: send Cease first (a planned stop without graceful restart).
    Shutdown {
        notify: bool,
    },
    /// Tear the session down with a Cease of this subcode and keep it down for `hold_down`.
    Cease {
        subcode: u8,
        communication: Option<String>,
        hold_down: Duration,
        /// Shown as the peer's last error.
        reason: String,
    },
    /// Something the operator should see as the peer's status (e.g. max-prefix warn).
    Notice(String),
    /// Exit the task after a Cease of this subcode (peer de-configured or changed, RFC 4486).
    Remove {
        subcode: u8,
    },
    /// The peer's BFD session changed: Down takes the BGP session down at once.
    Bfd(crate::bfd::BfdEvent),
}

impl From<crate::bfd::BfdEvent> for PeerMsg {
    fn from(e: crate::bfd::BfdEvent) -> Self {
        PeerMsg::Bfd(e)
    }
}

/// Encoded messages from the core for session `generation`. An unbounded channel of its own:
/// the core never waits on a peer (which may itself be waiting on the core).
pub type Outbound = mpsc::UnboundedSender<(u64, Bytes)>;

/// Frames read but not yet handled, per peer: a small bound gives TCP backpressure.
const FRAME_BATCHES: usize = 4;

/// Events from peer tasks to the core.
#[derive(Debug)]
pub enum CoreEvent {
    Up {
        peer: PeerId,
        generation: u64,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Down {
        peer: PeerId,
        generation: u64,
        reason: DownReason,
    },
    /// UPDATEs in the order received (batched per read).
    Updates {
        peer: PeerId,
        generation: u64,
        updates: Vec<UpdateMsg>,
    },
    RouteRefresh {
        peer: PeerId,
        generation: u64,
        msg: crate::wire::RouteRefreshMsg,
    },
}

struct Conn {
    id: u64,
    session: Session,
    writer: Option<OwnedWriteHalf>,
    reader: Option<JoinHandle<()>>,
    outgoing: bool,
    timers: [Option<Instant>; 4],
    ctx: Context,
    established: bool,
    addrs: Option<(SocketAddr, SocketAddr)>,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

impl Conn {
    fn new(id: u64, session: Session) -> Conn {
        Conn {
            id,
            session,
            writer: None,
            reader: None,
            outgoing: false,
            timers: [None; 4],
            ctx: Context::default(),
            established: false,
            addrs: None,
        }
    }

    fn close(&mut self) {
        self.writer = None;
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        self.addrs = None;
        self.ctx = Context::default();
    }
}

/// Which connection an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Primary,
    Candidate,
}

pub struct PeerTask {
    pub id: PeerId,
    pub name: String,
    pub transport: Transport,
    pub cfg: SessionConfig,
    pub status: Arc<Mutex<PeerStatus>>,
    pub core: mpsc::Sender<CoreEvent>,
    pub rx: mpsc::Receiver<PeerMsg>,
    pub tx: mpsc::Sender<PeerMsg>,
    /// Taken by `run`.
    pub out_rx: Option<mpsc::UnboundedReceiver<(u64, Bytes)>>,
    pub start: bool,
    /// bgpd restarted gracefully: set the R bit until the first session is up.
    pub restarted: bool,
}

struct Runner {
    t: PeerTask,
    primary: Conn,
    candidate: Option<Conn>,
    next_id: u64,
    /// Bumped on every Established; the core tags its sends with it.
    generation: u64,
    queue: VecDeque<(Which, Event)>,
    /// The candidate replaces the primary once the primary reports Down (collision lost).
    promote_pending: bool,
    /// UPDATEs for the core, sent as one event per batch.
    pending_updates: Vec<UpdateMsg>,
    /// The session is being closed because BFD went down.
    bfd_failed: bool,
    frames_tx: mpsc::Sender<(u64, Frame)>,
}

impl PeerTask {
    pub async fn run(mut self) {
        let mut session = Session::new(self.cfg.clone());
        session.set_restart_state(self.restarted);
        let (frames_tx, mut frames_rx) = mpsc::channel(FRAME_BATCHES);
        let mut out_rx = self.out_rx.take().expect("a peer task runs once");
        let mut r = Runner {
            primary: Conn::new(1, session),
            candidate: None,
            next_id: 2,
            generation: 0,
            queue: VecDeque::new(),
            promote_pending: false,
            pending_updates: Vec::new(),
            bfd_failed: false,
            frames_tx,
            t: self,
        };
        if r.t.start {
            r.queue.push_back((Which::Primary, Event::ManualStart));
            r.drain().await;
        }
        loop {
            let deadline = r.next_deadline();
            tokio::select! {
                msg = r.t.rx.recv() => {
                    let Some(msg) = msg else { break };
                    if r.on_msg(msg).await {
                        break;
                    }
                }
                Some((id, frame)) = frames_rx.recv() => r.on_frames(id, frame).await,
                Some((generation, bytes)) = out_rx.recv() => r.on_outbound(generation, bytes).await,
                _ = tokio::time::sleep_until(deadline.into()) => r.fire_timers(),
            }
            r.drain().await;
            r.flush_updates().await;
        }
        r.primary.close();
        if let Some(mut c) = r.candidate.take() {
            c.close();
        }
    }
}

impl Runner {
    fn conn(&mut self, w: Which) -> Option<&mut Conn> {
        match w {
            Which::Primary => Some(&mut self.primary),
            Which::Candidate => self.candidate.as_mut(),
        }
    }

    fn which(&self, id: u64) -> Option<Which> {
        if self.primary.id == id {
            Some(Which::Primary)
        } else if self.candidate.as_ref().is_some_and(|c| c.id == id) {
            Some(Which::Candidate)
        } else {
            None
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let all = self
            .primary
            .timers
            .iter()
            .chain(self.candidate.iter().flat_map(|c| c.timers.iter()));
        all.flatten().copied().min().unwrap_or(far)
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for w in [Which::Primary, Which::Candidate] {
            let Some(c) = self.conn(w) else { continue };
            let mut due = Vec::new();
            for t in TIMERS {
                if c.timers[timer_index(t)].is_some_and(|d| d <= now) {
                    c.timers[timer_index(t)] = None;
                    due.push(t);
                }
            }
            for t in due {
                self.queue.push_back((w, Event::TimerExpired(t)));
            }
        }
    }

    /// Returns true when the task must exit.
    async fn on_msg(&mut self, msg: PeerMsg) -> bool {
        match msg {
            PeerMsg::Connected(id, res) => {
                if id != self.primary.id || self.primary.session.state() != State::Connect {
                    return false; // a stale attempt
                }
                match res {
                    Ok(stream) => {
                        self.attach(Which::Primary, stream, true);
                        self.queue.push_back((Which::Primary, Event::TcpConnected));
                    }
                    Err(e) => {
                        let hint = if self.t.transport.md5_key.is_some()
                            && e.kind() == std::io::ErrorKind::TimedOut
                        {
                            " (TCP MD5 is configured: a key mismatch makes the peer drop our \
                             SYNs silently; check md5_password on both sides)"
                        } else {
                            ""
                        };
                        warn!(peer = %self.t.name, remote = %self.t.transport.remote, error = %e,
                              "connect failed{hint}");
                        self.set_last_error(format!("connect: {e}{hint}"));
                        self.queue.push_back((Which::Primary, Event::TcpFailed));
                    }
                }
            }
            PeerMsg::Incoming(stream) => self.incoming(stream),
            PeerMsg::Stop { communication } => {
                self.drop_candidate();
                self.queue
                    .push_back((Which::Primary, Event::ManualStop { communication }));
            }
            PeerMsg::Start => self.queue.push_back((Which::Primary, Event::ManualStart)),
            PeerMsg::RequestRefresh => {
                if let Some(w) = self.established_conn() {
                    let fams = self.conn(w).and_then(|c| {
                        c.session
                            .negotiated()
                            .map(|n| (n.families.clone(), n.route_refresh))
                    });
                    if let Some((fams, true)) = fams {
                        for (afi, safi) in fams {
                            let m =
                                Message::RouteRefresh(crate::wire::RouteRefreshMsg::new(afi, safi));
                            let _ = self.send_msg(w, &m).await;
                        }
                    }
                }
            }
            PeerMsg::Cease {
                subcode,
                communication,
                hold_down,
                reason,
            } => {
                self.primary.session.hold_down(hold_down);
                self.queue.push_back((
                    Which::Primary,
                    Event::Cease {
                        subcode,
                        communication,
                    },
                ));
                self.drain().await;
                self.set_last_error(reason);
            }
            PeerMsg::Notice(reason) => self.set_last_error(reason),
            PeerMsg::Bfd(crate::bfd::BfdEvent::Up) => {
                info!(peer = %self.t.name, "BFD up");
            }
            PeerMsg::Bfd(crate::bfd::BfdEvent::Down { diag }) => self.bfd_down(diag).await,
            PeerMsg::Remove { subcode } => {
                self.drop_candidate();
                self.queue.push_back((
                    Which::Primary,
                    Event::Cease {
                        subcode,
                        communication: None,
                    },
                ));
                self.drain().await;
                return true;
            }
            PeerMsg::Shutdown { notify } => {
                if notify {
                    self.queue.push_back((
                        Which::Primary,
                        Event::ManualStop {
                            communication: Some("bgpd shutting down".into()),
                        },
                    ));
                    self.drain().await;
                }
                return true;
            }
        }
        false
    }

    /// BFD says the path is gone: close the connection without a NOTIFICATION (nothing would
    /// arrive) and report the session down now, not at the hold timer.
    async fn bfd_down(&mut self, diag: crate::bfd::Diag) {
        let state = self.primary.session.state();
        if !matches!(
            state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        warn!(peer = %self.t.name, ?state, %diag, "BFD down: closing the BGP session");
        self.drop_candidate();
        self.primary.close();
        self.bfd_failed = true;
        self.queue.push_back((Which::Primary, Event::TcpFailed));
        self.drain().await;
        self.bfd_failed = false;
        self.set_last_error(format!("BFD down ({diag})"));
    }

    /// What a connection's reader saw.
    async fn on_frames(&mut self, id: u64, frame: Frame) {
        let Some(w) = self.which(id) else { return };
        match frame {
            Frame::Messages(frames) => {
                // Decode each only after the previous one was handled: the KEEPALIVE
                // that establishes the session changes the codec context.
                for bytes in frames {
                    let Some(w) = self.which(id) else { break };
                    self.on_frame(w, bytes);
                    self.drain().await;
                }
            }
            Frame::HeaderError(e, seen) => {
                warn!(peer = %self.t.name, error = %e, bytes = %hex(&seen),
                      "broken message header: resetting the session (RFC 4271 §6.1)");
                self.queue.push_back((w, Event::DecodeError(e)));
            }
            Frame::Closed(e) => {
                debug!(peer = %self.t.name, error = ?e, "connection closed");
                self.queue.push_back((w, Event::TcpFailed));
            }
        }
    }

    /// UPDATEs from the core, for the session they were made for.
    async fn on_outbound(&mut self, generation: u64, bytes: Bytes) {
        if generation != self.generation {
            return;
        }
        if let Some(w) = self.established_conn() {
            let n = count_messages(&bytes);
            if self.write(w, &bytes).await.is_ok() {
                self.t.status.lock().unwrap().counters.updates_out += n;
            }
        }
    }

    fn on_frame(&mut self, w: Which, bytes: Bytes) {
        let Some(c) = self.conn(w) else { return };
        let ctx = c.ctx;
        let msg_type = bytes.get(18).copied();
        let event = match Message::decode(bytes.clone(), &ctx) {
            Ok(m) => {
                if let Message::Update(u) = &m {
                    for e in &u.errors {
                        warn!(peer = %self.t.name, action = ?e.action, reason = ?e.reason,
                              bytes = %hex(&e.data), "malformed UPDATE attribute (RFC 7606)");
                    }
                }
                Event::Message(m)
            }
            Err(e) => {
                warn!(peer = %self.t.name, error = %e, bytes = %hex(&bytes[..bytes.len().min(256)]),
                      "undecodable message");
                Event::DecodeError(e)
            }
        };
        {
            let mut st = self.t.status.lock().unwrap();
            match msg_type {
                Some(t) if t == MessageType::Update as u8 => st.counters.updates_in += 1,
                Some(t) if t == MessageType::Keepalive as u8 => st.counters.keepalives_in += 1,
                Some(t) if t == MessageType::Notification as u8 => {
                    st.counters.notifications_in += 1
                }
                _ => {}
            }
        }
        self.queue.push_back((w, event));
    }

    fn attach(&mut self, w: Which, stream: TcpStream, outgoing: bool) {
        let addrs = stream.local_addr().ok().zip(stream.peer_addr().ok());
        let (rd, wr) = stream.into_split();
        let tx = self.frames_tx.clone();
        let Some(c) = self.conn(w) else { return };
        c.close();
        let id = c.id;
        let max_len = conn::max_frame_len(&c.session.config().capabilities);
        c.reader = Some(tokio::spawn(conn::read_frames(rd, id, max_len, tx)));
        c.writer = Some(wr);
        c.outgoing = outgoing;
        c.addrs = addrs;
    }

    /// An accepted connection for this peer (§8.2.2 events 14-17, §6.8).
    fn incoming(&mut self, stream: TcpStream) {
        // Apply our TTL policy to the accepted socket too.
        let _ = conn::apply_ttl(&stream, &self.t.transport);
        match self.primary.session.state() {
            State::Connect | State::Active => {
                // Adopt it; a pending connect attempt becomes stale.
                self.primary.id = self.bump();
                self.attach(Which::Primary, stream, false);
                self.queue.push_back((Which::Primary, Event::TcpConnected));
            }
            State::OpenSent | State::OpenConfirm if self.candidate.is_none() => {
                let mut cfg = self.t.cfg.clone();
                cfg.passive = true;
                let id = self.bump();
                self.candidate = Some(Conn::new(id, Session::new(cfg)));
                self.attach(Which::Candidate, stream, false);
                self.queue.push_back((Which::Candidate, Event::ManualStart));
                self.queue
                    .push_back((Which::Candidate, Event::TcpConnected));
            }
            // Idle (not started, or holding down after an error), Established, or a second
            // collision: refuse.
            s => debug!(peer = %self.t.name, state = ?s, "refusing incoming connection"),
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn established_conn(&self) -> Option<Which> {
        if self.primary.established {
            Some(Which::Primary)
        } else if self.candidate.as_ref().is_some_and(|c| c.established) {
            Some(Which::Candidate)
        } else {
            None
        }
    }

    async fn drain(&mut self) {
        while let Some((w, ev)) = self.queue.pop_front() {
            let Some(c) = self.conn(w) else { continue };
            let actions = c.session.handle(ev);
            for a in actions {
                self.act(w, a).await;
            }
            self.check_collision();
            self.publish();
        }
    }

    /// §6.8: once the peer's BGP identifier is known, keep one connection.
    fn check_collision(&mut self) {
        let Some(cand) = &self.candidate else { return };
        if cand.session.state() == State::Idle {
            self.drop_candidate();
            return;
        }
        // The candidate is always incoming. When the primary is too, keep the older one.
        let primary_wins = if self.primary.outgoing {
            let remote_id = self
                .primary
                .session
                .peer_router_id()
                .or(cand.session.peer_router_id());
            let (out_state, in_state) = (self.primary.session.state(), cand.session.state());
            match resolve_collision(self.t.cfg.router_id, remote_id, out_state, in_state) {
                Some(keep) => keep == Connection::Outgoing,
                None => return,
            }
        } else {
            true
        };
        let loser = if primary_wins {
            Which::Candidate
        } else {
            Which::Primary
        };
        info!(peer = %self.t.name, primary_wins, "connection collision resolved (RFC 4271 §6.8)");
        self.queue.push_back((
            loser,
            Event::Cease {
                subcode: cease_subcode::CONNECTION_COLLISION_RESOLUTION,
                communication: None,
            },
        ));
        if !primary_wins {
            // The candidate carries on as the peer's session once the primary is closed.
            self.queue.push_back((
                Which::Primary,
                Event::ManualStop {
                    communication: None,
                },
            ));
        }
        // Promotion happens in `act` when the losing primary reports Down.
        self.promote_pending = !primary_wins;
    }

    fn drop_candidate(&mut self) {
        if let Some(mut c) = self.candidate.take() {
            c.close();
        }
    }

    async fn act(&mut self, w: Which, a: Action) {
        match a {
            Action::Connect => {
                if w != Which::Primary {
                    return;
                }
                self.primary.id = self.bump();
                let id = self.primary.id;
                let tx = self.t.tx.clone();
                let tr = self.t.transport.clone();
                tokio::spawn(async move {
                    let res = conn::connect(&tr).await;
                    let _ = tx.send(PeerMsg::Connected(id, res)).await;
                });
            }
            Action::Disconnect => {
                if let Some(c) = self.conn(w) {
                    if let Some(wr) = c.writer.as_mut() {
                        let _ = wr.shutdown().await;
                    }
                    c.close();
                }
            }
            Action::Send(m) => {
                let _ = self.send_msg(w, &m).await;
            }
            Action::StartTimer(t, d) => {
                if let Some(c) = self.conn(w) {
                    c.timers[timer_index(t)] = Some(Instant::now() + d);
                }
            }
            Action::StopTimer(t) => {
                if let Some(c) = self.conn(w) {
                    c.timers[timer_index(t)] = None;
                }
            }
            Action::Established(neg) => {
                let Some(c) = self.conn(w) else { return };
                c.ctx = neg.context();
                c.established = true;
                // The restart is over once a session is up (RFC 4724 §4.1).
                c.session.set_restart_state(false);
                let (local, remote) = c
                    .addrs
                    .unwrap_or((SocketAddr::from(([0, 0, 0, 0], 0)), self.t.transport.remote));
                self.generation += 1;
                info!(peer = %self.t.name, %remote, asn = neg.peer_asn, hold = neg.hold_time,
                      "session Established");
                {
                    let mut st = self.t.status.lock().unwrap();
                    st.negotiated = Some((*neg).clone());
                    st.local = Some(local);
                    st.remote = Some(remote);
                    st.last_error = None;
                }
                self.flush_updates().await;
                let _ = self
                    .t
                    .core
                    .send(CoreEvent::Up {
                        peer: self.t.id,
                        generation: self.generation,
                        negotiated: neg,
                        local,
                        remote,
                    })
                    .await;
            }
            Action::Down(reason) => {
                let reason = if self.bfd_failed && reason == DownReason::TcpFailed {
                    DownReason::BfdDown
                } else {
                    reason
                };
                let was_up = self.conn(w).is_some_and(|c| c.established);
                if let Some(c) = self.conn(w) {
                    c.established = false;
                }
                if was_up {
                    info!(peer = %self.t.name, ?reason, "session down");
                    self.flush_updates().await;
                    let _ = self
                        .t
                        .core
                        .send(CoreEvent::Down {
                            peer: self.t.id,
                            generation: self.generation,
                            reason: reason.clone(),
                        })
                        .await;
                }
                self.set_last_error(describe(&reason));
                if w == Which::Primary && self.promote_pending {
                    self.promote_pending = false;
                    if let Some(mut cand) = self.candidate.take() {
                        cand.session.set_passive(self.t.cfg.passive);
                        self.primary.close();
                        self.primary = cand;
                    }
                }
            }
            Action::Update(u) => self.pending_updates.push(*u),
            Action::RouteRefresh(msg) => {
                self.flush_updates().await;
                let _ = self
                    .t
                    .core
                    .send(CoreEvent::RouteRefresh {
                        peer: self.t.id,
                        generation: self.generation,
                        msg,
                    })
                    .await;
            }
        }
    }

    /// Hands the UPDATEs received so far to the core in one event.
    async fn flush_updates(&mut self) {
        if self.pending_updates.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.pending_updates);
        let _ = self
            .t
            .core
            .send(CoreEvent::Updates {
                peer: self.t.id,
                generation: self.generation,
                updates,
            })
            .await;
    }

    async fn send_msg(&mut self, w: Which, m: &Message) -> std::io::Result<()> {
        let Some(c) = self.conn(w) else { return Ok(()) };
        let bytes = match m.to_bytes(&c.ctx) {
            Ok(b) => b,
            Err(e) => {
                warn!(peer = %self.t.name, error = %e, "cannot encode message");
                return Ok(());
            }
        };
        {
            let mut st = self.t.status.lock().unwrap();
            match m {
                Message::Keepalive => st.counters.keepalives_out += 1,
                Message::Notification(_) => st.counters.notifications_out += 1,
                Message::Update(_) => st.counters.updates_out += 1,
                _ => {}
            }
        }
        self.write(w, &bytes).await
    }

    async fn write(&mut self, w: Which, bytes: &[u8]) -> std::io::Result<()> {
        let Some(c) = self.conn(w) else { return Ok(()) };
        let Some(wr) = c.writer.as_mut() else {
            return Ok(());
        };
        let res = wr.write_all(bytes).await;
        if res.is_err() {
            self.queue.push_back((w, Event::TcpFailed));
        }
        res
    }

    fn set_last_error(&self, e: String) {
        self.t.status.lock().unwrap().last_error = Some(e);
    }

    fn publish(&self) {
        let state = self.primary.session.state();
        let mut st = self.t.status.lock().unwrap();
        if st.state != state {
            st.state = state;
            st.since = Instant::now();
            if state != State::Established {
                st.negotiated = None;
            }
        }
    }
}

fn describe(r: &DownReason) -> String {
    match r {
        DownReason::NotificationSent(n) => format!("NOTIFICATION sent: {}", notification_text(n)),
        DownReason::NotificationReceived(n) => {
            format!("NOTIFICATION received: {}", notification_text(n))
        }
        DownReason::TcpFailed => "connection lost".into(),
        DownReason::ManualStop => "stopped by operator".into(),
        DownReason::BfdDown => "BFD down".into(),
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
