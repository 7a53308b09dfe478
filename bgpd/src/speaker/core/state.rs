//! The core's logic, sans-IO: [`CoreState::on`] takes one [`Input`] (a session event from a
//! peer task, an API command, a timer that ran out, a flush) and the current time, and returns
//! the [`Action`]s the driver ([`super::Core`]) carries out in order: bytes to a session, FIB
//! changes, BMP events, commands to a peer task, timers to arm or cancel, the reply to a
//! command. Nothing here waits, spawns or reads the clock; timers are deadlines the driver
//! sleeps on and hands back as [`Input::Timer`].
//!
//! It owns the RIB and tells apart the generations of a peer's sessions, plays the graceful
//! restart helper (RFC 4724 §4.2, RFC 9494 §4.2), enforces max-prefix (RFC 4486 subcode 1) and
//! answers route refresh (RFC 2918, RFC 7313).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::bmp::BmpEvent;
use crate::fib::FibMsg;
use crate::fsm::{DownReason, Negotiated};
use crate::policy::Policy;
use crate::rib::{Advert, PeerId, PeerInfo, Rib, SessionInfo};
use crate::wire::{
    Afi, Capability, Community, Context, Message, RouteRefreshMsg, RouteRefreshSubtype, Safi,
    UpdateMsg,
};

/// The unicast families the RIB holds.
const UNICAST: [Afi; 2] = [Afi::IPV4, Afi::IPV6];

/// Why an API command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("advert {prefix}: no pool named {pool:?} (see [[bgp.pools]])")]
    NoSuchPool { prefix: IpNet, pool: String },
    #[error("advert {prefix} is outside pool {pool:?} ({range})")]
    OutsidePool {
        prefix: IpNet,
        pool: String,
        range: IpNet,
    },
}

/// What [`Input::AddAdverts`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertsAdded {
    pub added: u32,
    pub replaced: u32,
}

/// A timer of the core; at most one of each is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CoreTimer {
    /// The restart time of a peer that went down gracefully (RFC 4724 §4.2).
    Restart(PeerId),
    /// The long-lived stale time of a family of a peer whose routes are long-lived stale
    /// (RFC 9494 §4.2).
    LongLivedStale(PeerId, Afi),
}

impl CoreTimer {
    fn peer(&self) -> PeerId {
        match self {
            CoreTimer::Restart(p) | CoreTimer::LongLivedStale(p, _) => *p,
        }
    }
}

/// A session-level command for a peer task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCommand {
    /// Tear the session down with a Cease of this subcode and keep it down for `hold_down`.
    Cease {
        subcode: u8,
        communication: Option<String>,
        hold_down: Duration,
        /// Shown as the peer's last error.
        reason: String,
    },
    /// Something the operator should see as the peer's status.
    Notice(String),
}

/// The answer to a command input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Adverts(Result<AdvertsAdded, CoreError>),
    /// How many of the adverts to remove existed.
    Removed(u32),
    /// The sessions up when draining began.
    Drained(u32),
    /// Done (AddPeer, RemovePeer, SetPolicies).
    Done,
}

/// A session came up (named fields of [`Input::Up`]).
#[derive(Debug)]
pub struct SessionUp {
    pub peer: PeerId,
    pub generation: u64,
    pub negotiated: Box<Negotiated>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The IPv6 link-local address of the interface holding `local` (RFC 2545 §3), looked up
    /// by the driver.
    pub link_local: Option<Ipv6Addr>,
}

/// A peer to add (named fields of [`Input::AddPeer`]).
#[derive(Debug)]
pub struct NewPeer {
    pub info: PeerInfo,
    pub name: String,
    pub max_prefixes: Option<configs::MaxPrefixes>,
}

/// What the core reacts to.
#[derive(Debug)]
pub enum Input {
    Up(SessionUp),
    Down {
        peer: PeerId,
        generation: u64,
        reason: DownReason,
    },
    /// UPDATEs in the order received.
    Updates {
        peer: PeerId,
        generation: u64,
        updates: Vec<UpdateMsg>,
    },
    RouteRefresh {
        peer: PeerId,
        generation: u64,
        msg: RouteRefreshMsg,
    },
    /// Adds or replaces adverts, each optionally in a VIP pool: all or nothing.
    AddAdverts(Vec<(Advert, Option<String>)>),
    RemoveAdverts(Vec<IpNet>),
    /// RFC 8326: re-announce everything with GRACEFUL_SHUTDOWN.
    Drain,
    AddPeer(NewPeer),
    /// Forget a peer and withdraw what it sent.
    RemovePeer(PeerId),
    /// New import and export policies for a peer, without a session reset.
    SetPolicies {
        peer: PeerId,
        import: Policy,
        export: Policy,
    },
    /// A timer armed by an [`Action::ArmTimer`] is due.
    Timer(CoreTimer),
    /// Run the RIB's decision process and hand out what changed (after each batch of inputs).
    Flush,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Encoded messages for session `generation` of `peer` (dropped if that session is gone).
    Send {
        peer: PeerId,
        generation: u64,
        bytes: Bytes,
    },
    /// For the kernel FIB writer (only when learned routes are installed).
    Fib(FibMsg),
    /// For the BMP exporters (only when some are configured).
    Bmp(BmpEvent),
    /// For a peer task.
    Peer {
        peer: PeerId,
        cmd: PeerCommand,
    },
    /// Hand back [`Input::Timer`] at `at` (replaces the same timer if armed).
    ArmTimer {
        timer: CoreTimer,
        at: Instant,
    },
    CancelTimer(CoreTimer),
    /// The answer to the command input.
    Reply(Reply),
}

/// What the core keeps of the peer's last session for graceful restart (RFC 4724 §4.2,
/// RFC 9494 §4.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RestartPlan {
    /// The Restart Time the peer advertised.
    restart_time: u16,
    /// Unicast families both negotiated and listed in the peer's GR capability: only their
    /// routes are retained (a capability listing none, BIRD's "aware" mode, retains nothing).
    families: Vec<Afi>,
    /// Both sides sent LLGR: the long-lived stale time and the families the peer listed.
    long_lived: Option<(u32, Vec<Afi>)>,
    /// Both sides sent the N bit (RFC 8538): a NOTIFICATION other than Hard Reset is graceful.
    notification: bool,
}

impl RestartPlan {
    fn from_negotiated(n: &Negotiated) -> RestartPlan {
        let negotiated = |afi: Afi| n.families.contains(&(afi, Safi::UNICAST));
        let Some(gr) = &n.peer_graceful_restart else {
            return RestartPlan::default();
        };
        let families = UNICAST
            .into_iter()
            .filter(|&afi| {
                negotiated(afi)
                    && gr
                        .families
                        .iter()
                        .any(|f| f.afi == afi && f.safi == Safi::UNICAST)
            })
            .collect();
        // RFC 9494 §4.1: LLGR is used only along with GR; per family as the peer lists it.
        let long_lived = n.long_lived_stale_time().map(|t| {
            let listed: Vec<Afi> = n
                .received_open
                .capabilities
                .iter()
                .flat_map(|c| match c {
                    Capability::LongLivedGracefulRestart(f) => f.clone(),
                    _ => Vec::new(),
                })
                .filter(|f| f.safi == Safi::UNICAST && negotiated(f.afi))
                .map(|f| f.afi)
                .collect();
            (
                t,
                UNICAST.into_iter().filter(|a| listed.contains(a)).collect(),
            )
        });
        RestartPlan {
            restart_time: gr.restart_time,
            families,
            long_lived,
            notification: n.graceful_notification(),
        }
    }

    fn long_lived_families(&self) -> &[Afi] {
        self.long_lived.as_ref().map_or(&[], |(_, f)| f)
    }
}

struct CorePeer {
    name: String,
    /// Generation of the session the RIB considers up (0: none).
    generation: u64,
    max_prefixes: Option<configs::MaxPrefixes>,
    /// The limit was reported for the current session.
    over_limit_reported: bool,
    /// Families negotiated in the current session, to know when every End-of-RIB is in.
    families: Vec<(Afi, Safi)>,
    /// Graceful restart as the last session negotiated it.
    restart: RestartPlan,
    /// The current session negotiated enhanced route refresh (RFC 7313).
    enhanced_rr: bool,
    /// Codec context of the current session, to re-encode UPDATEs for BMP.
    bmp_ctx: Option<Context>,
    /// A semantically incorrect NEXT_HOP was logged for the current session.
    bad_next_hop_logged: bool,
    /// An AS_PATH without the peer's AS first was logged for the current session.
    first_as_logged: bool,
}

pub struct CoreState {
    rib: Rib,
    /// Learned routes go to the kernel: report FIB changes and convergence.
    fib: bool,
    converged: bool,
    /// BMP exporters are configured.
    bmp: bool,
    peers: HashMap<PeerId, CorePeer>,
    /// Armed timers and their deadlines.
    timers: BTreeMap<CoreTimer, Instant>,
    /// What we originate, as configured or added over the API (without drain communities).
    adverts: BTreeMap<IpNet, Advert>,
    draining: bool,
    /// VIP pools by name; aggregated pools are announced as their prefix.
    pools: HashMap<String, configs::Pool>,
    /// The pool of each advert that has one.
    advert_pool: HashMap<IpNet, String>,
    /// Messages to send around the next flush's UPDATEs (BoRR before, EoRR after).
    before_flush: Vec<(PeerId, Bytes)>,
    after_flush: Vec<(PeerId, Bytes)>,
}

impl CoreState {
    /// `fib`: learned routes are installed (FIB actions are produced); `bmp`: BMP exporters are
    /// configured (BMP actions are produced).
    pub fn new(rib: Rib, fib: bool, bmp: bool) -> CoreState {
        CoreState {
            rib,
            fib,
            converged: false,
            bmp,
            peers: HashMap::new(),
            timers: BTreeMap::new(),
            adverts: BTreeMap::new(),
            draining: false,
            pools: HashMap::new(),
            advert_pool: HashMap::new(),
            before_flush: Vec::new(),
            after_flush: Vec::new(),
        }
    }

    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    pub fn set_pools(&mut self, pools: &[configs::Pool]) {
        self.pools = pools.iter().map(|p| (p.name.clone(), p.clone())).collect();
    }

    /// The configured adverts at start-up (already validated with the configuration).
    pub fn add_initial(&mut self, adverts: Vec<(Advert, Option<String>)>) {
        for (a, pool) in adverts {
            self.add_advert(a, pool);
        }
    }

    /// Handles one input at `now`.
    pub fn on(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Up(up) => self.up(up, &mut out),
            Input::Down {
                peer,
                generation,
                reason,
            } => self.down(peer, generation, reason, now, &mut out),
            Input::Updates {
                peer,
                generation,
                updates,
            } => self.updates(peer, generation, updates, &mut out),
            Input::RouteRefresh {
                peer,
                generation,
                msg,
            } => self.route_refresh(peer, generation, msg),
            Input::AddAdverts(list) => {
                out.push(Action::Reply(Reply::Adverts(self.add_adverts(list))))
            }
            Input::RemoveAdverts(list) => {
                let removed = list.into_iter().filter(|p| self.remove_advert(*p)).count();
                out.push(Action::Reply(Reply::Removed(removed as u32)));
            }
            Input::Drain => out.push(Action::Reply(Reply::Drained(self.drain()))),
            Input::AddPeer(p) => {
                self.add_peer(p);
                out.push(Action::Reply(Reply::Done));
            }
            Input::RemovePeer(id) => {
                if self.peers.remove(&id).is_some() {
                    let _ = self.rib.remove_peer(id);
                }
                self.cancel_timers(id, &mut out);
                out.push(Action::Reply(Reply::Done));
            }
            Input::SetPolicies {
                peer,
                import,
                export,
            } => {
                self.set_policies(peer, import, export);
                out.push(Action::Reply(Reply::Done));
            }
            Input::Timer(t) => self.timer(t, now, &mut out),
            Input::Flush => self.flush(&mut out),
        }
        out
    }

    fn add_peer(&mut self, p: NewPeer) {
        let id = p.info.id;
        if let Err(e) = self.rib.add_peer(p.info) {
            warn!(peer = %p.name, error = %e, "peer not added to the RIB");
            return;
        }
        self.peers.insert(
            id,
            CorePeer {
                name: p.name,
                generation: 0,
                max_prefixes: p.max_prefixes,
                over_limit_reported: false,
                families: Vec::new(),
                restart: RestartPlan::default(),
                enhanced_rr: false,
                bmp_ctx: None,
                bad_next_hop_logged: false,
                first_as_logged: false,
            },
        );
    }

    // ---- sessions ----

    fn up(&mut self, up: SessionUp, out: &mut Vec<Action>) {
        let SessionUp {
            peer,
            generation,
            negotiated: n,
            local,
            remote,
            link_local,
        } = up;
        if !self.peers.contains_key(&peer) {
            return;
        }
        if self.bmp {
            out.push(Action::Bmp(bmp_peer_up(peer, &n, local, remote)));
        }
        // The peer's ASN ("any") and router id are known now.
        if let Some(mut info) = self.rib.peer_info(peer).cloned()
            && (info.asn != n.peer_asn || info.router_id != n.peer_router_id)
        {
            info.asn = n.peer_asn;
            info.router_id = n.peer_router_id;
            info.ibgp = n.peer_asn == self.rib.local_asn();
            let _ = self.rib.remove_peer(peer);
            let _ = self.rib.add_peer(info);
        }
        let session = SessionInfo::from_negotiated(&n, local.ip(), link_local);
        // RFC 4724 §4.2: stale routes survive re-establishment only for the families whose
        // forwarding state the restarted peer says it preserved (F bit in its new capability);
        // a family without the F bit, missing from the capability, or no longer negotiated
        // (or no capability at all) loses them now.
        let preserved = |afi: Afi| {
            n.families.contains(&(afi, Safi::UNICAST))
                && n.peer_graceful_restart.as_ref().is_some_and(|gr| {
                    gr.families
                        .iter()
                        .any(|f| f.afi == afi && f.safi == Safi::UNICAST && f.forwarding)
                })
        };
        for afi in UNICAST {
            if preserved(afi) {
                continue;
            }
            let gone = self.rib.sweep_stale_family(peer, afi);
            if gone > 0 {
                info!(peer = %self.name(peer), ?afi, stale = gone, "peer did not preserve forwarding state: stale routes removed");
            }
        }
        let p = self.peers.get_mut(&peer).expect("checked above");
        p.families = n.families.clone();
        p.enhanced_rr = n.enhanced_route_refresh;
        p.restart = RestartPlan::from_negotiated(&n);
        p.bmp_ctx = self.bmp.then(|| n.context());
        match self.rib.peer_up(peer, session) {
            Ok(()) => {
                p.generation = generation;
                p.over_limit_reported = false;
                p.bad_next_hop_logged = false;
                p.first_as_logged = false;
            }
            Err(e) => warn!(peer = %p.name, error = %e, "peer up refused by the RIB"),
        }
    }

    fn down(
        &mut self,
        peer: PeerId,
        generation: u64,
        reason: DownReason,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.current(peer, generation) {
            return;
        }
        let p = self.peers.get_mut(&peer).expect("current");
        p.generation = 0;
        if p.bmp_ctx.take().is_some() {
            out.push(Action::Bmp(BmpEvent::Down {
                peer,
                reason: reason.clone(),
            }));
        }
        let plan = p.restart.clone();
        let name = p.name.clone();
        // RFC 4724 §4.2: a session lost without a NOTIFICATION is a graceful restart; RFC 8538
        // §4: with the N bit exchanged, so is one ended by a NOTIFICATION (sent or received,
        // Hold Timer Expired included) other than Hard Reset. A BFD-detected failure is a path
        // failure (RFC 5882 §4.3.2) and a manual stop is meant: no restart.
        let graceful = match &reason {
            DownReason::TcpFailed => true,
            DownReason::NotificationSent(n) | DownReason::NotificationReceived(n) => {
                plan.notification && !n.is_hard_reset()
            }
            DownReason::ManualStop | DownReason::BfdDown => false,
        };
        // The families whose routes are retained: those in the peer's GR capability while its
        // Restart Time is nonzero (RFC 4724 §4.2), and those in its LLGR capability (RFC 9494
        // §4.2). No family: the routes go with the session.
        let restarting: Vec<Afi> = if plan.restart_time > 0 {
            plan.families.clone()
        } else {
            Vec::new()
        };
        let long_lived = plan.long_lived_families();
        let retained: Vec<Afi> = UNICAST
            .into_iter()
            .filter(|a| restarting.contains(a) || long_lived.contains(a))
            .collect();
        if !graceful || retained.is_empty() {
            if graceful {
                info!(peer = %name, "session lost; the peer's graceful restart capability retains no family: its routes are removed");
            } else {
                debug!(peer = %name, ?reason, "flushing the peer's routes");
            }
            let _ = self.rib.peer_down(peer);
            self.cancel_timers(peer, out);
            return;
        }
        let kept = self.rib.peer_down_graceful(peer).unwrap_or(0);
        for afi in UNICAST.into_iter().filter(|a| !retained.contains(a)) {
            let gone = self.rib.sweep_stale_family(peer, afi);
            info!(peer = %name, ?afi, removed = gone, "family not in the peer's graceful restart capability: its routes are removed");
        }
        self.cancel_timers(peer, out);
        // RFC 9494 §4.2: a family without a restart phase (Restart Time 0, or listed only in
        // the LLGR capability) is long-lived stale at once.
        for &afi in long_lived.iter().filter(|a| !restarting.contains(a)) {
            self.enter_long_lived(peer, afi, now, out);
        }
        if !restarting.is_empty() {
            info!(peer = %name, kept, restart_time = plan.restart_time, families = ?restarting,
                  "peer restarting gracefully: routes kept as stale");
            self.arm(
                CoreTimer::Restart(peer),
                now + Duration::from_secs(plan.restart_time.into()),
                out,
            );
        }
    }

    /// RFC 9494 §4.2: the family's stale routes become long-lived stale, for the LLST.
    fn enter_long_lived(&mut self, peer: PeerId, afi: Afi, now: Instant, out: &mut Vec<Action>) {
        let Some((secs, _)) = self
            .peers
            .get(&peer)
            .and_then(|p| p.restart.long_lived.clone())
        else {
            return;
        };
        let (kept, removed) = self.rib.enter_long_lived_stale(peer, afi);
        info!(peer = %self.name(peer), ?afi, kept, removed, long_lived_stale_time = secs,
              "routes kept as long-lived stale (LLGR_STALE)");
        self.arm(
            CoreTimer::LongLivedStale(peer, afi),
            now + Duration::from_secs(secs.into()),
            out,
        );
    }

    fn timer(&mut self, t: CoreTimer, now: Instant, out: &mut Vec<Action>) {
        // Only an armed timer that is due counts (a late or cancelled one is ignored).
        match self.timers.get(&t) {
            Some(at) if *at <= now => {
                self.timers.remove(&t);
            }
            _ => return,
        }
        match t {
            CoreTimer::Restart(peer) => {
                let Some(p) = self.peers.get(&peer) else {
                    return;
                };
                let long_lived = p.restart.long_lived_families().to_vec();
                let up = self.rib.is_up(peer);
                for afi in UNICAST {
                    // RFC 9494 §4.2: with LLGR the routes stay, long-lived stale, unless the
                    // peer is back (then its End-of-RIB or this bound ends them).
                    if !up && long_lived.contains(&afi) {
                        if !self
                            .timers
                            .contains_key(&CoreTimer::LongLivedStale(peer, afi))
                        {
                            self.enter_long_lived(peer, afi, now, out);
                        }
                        continue;
                    }
                    // RFC 4724 §4.2: the Restart Time ran out (or, the peer back, the time we
                    // wait for its End-of-RIB): the stale routes go.
                    let gone = self.rib.sweep_stale_family(peer, afi);
                    if gone > 0 {
                        info!(peer = %self.name(peer), ?afi, stale = gone, "restart time over: stale routes removed");
                    }
                }
            }
            CoreTimer::LongLivedStale(peer, afi) => {
                let gone = self.rib.sweep_stale_family(peer, afi);
                if gone > 0 {
                    info!(peer = %self.name(peer), ?afi, stale = gone, "long-lived stale time over: routes removed");
                }
            }
        }
    }

    fn arm(&mut self, timer: CoreTimer, at: Instant, out: &mut Vec<Action>) {
        self.timers.insert(timer, at);
        out.push(Action::ArmTimer { timer, at });
    }

    fn cancel_timers(&mut self, peer: PeerId, out: &mut Vec<Action>) {
        let mine: Vec<CoreTimer> = self
            .timers
            .keys()
            .filter(|t| t.peer() == peer)
            .copied()
            .collect();
        for t in mine {
            self.timers.remove(&t);
            out.push(Action::CancelTimer(t));
        }
    }

    fn updates(
        &mut self,
        peer: PeerId,
        generation: u64,
        updates: Vec<UpdateMsg>,
        out: &mut Vec<Action>,
    ) {
        if !self.current(peer, generation) {
            return;
        }
        let bmp_ctx = self.peers.get(&peer).and_then(|p| p.bmp_ctx);
        let mut touched: Vec<IpNet> = Vec::new();
        if let Some(ctx) = bmp_ctx {
            // Pre-policy route monitoring: each UPDATE as received (re-encoded).
            for update in &updates {
                let m = Message::Update(Box::new(update.clone()));
                if let Ok(pdu) = m.to_bytes(&ctx) {
                    out.push(Action::Bmp(BmpEvent::Update {
                        peer,
                        pdu,
                        post_policy: false,
                    }));
                }
                touched.extend(prefixes_of(update));
            }
        }
        for update in updates {
            let res = self.rib.apply_update(peer, &update);
            let dropped = res.as_ref().map(|o| o.over_limit).unwrap_or(0);
            self.check_max_prefixes(peer, dropped, out);
            match res {
                Ok(o) if o.end_of_rib.is_some() => {
                    info!(peer = %self.name(peer), family = ?o.end_of_rib, "End-of-RIB received")
                }
                // RFC 4271 §6.3: logged (once per session), the routes ignored, no NOTIFICATION.
                Ok(o) => {
                    if let Some(bad) = o.bad_next_hop
                        && let Some(p) = self.peers.get_mut(&peer)
                        && !std::mem::replace(&mut p.bad_next_hop_logged, true)
                    {
                        warn!(peer = %p.name, next_hop = ?bad.next_hop, why = bad.why, prefixes = bad.prefixes,
                              "routes with a semantically incorrect NEXT_HOP ignored (RFC 4271 §6.3); further ones this session are only counted");
                    }
                    if o.first_as_mismatch > 0
                        && let Some(p) = self.peers.get_mut(&peer)
                        && !std::mem::replace(&mut p.first_as_logged, true)
                    {
                        warn!(peer = %p.name, prefixes = o.first_as_mismatch,
                              "routes whose AS_PATH does not start with the peer's AS ignored (RFC 4271 §6.3, enforce_first_as); further ones this session are only counted");
                    }
                }
                Err(e) => warn!(peer = %self.name(peer), error = %e, "UPDATE not applied"),
            }
        }
        if let Some(ctx) = bmp_ctx
            && !touched.is_empty()
        {
            touched.sort_unstable();
            touched.dedup();
            for pdu in self.rib.adj_rib_in_post_policy(peer, &touched, ctx) {
                out.push(Action::Bmp(BmpEvent::Update {
                    peer,
                    pdu,
                    post_policy: true,
                }));
            }
        }
    }

    fn route_refresh(&mut self, peer: PeerId, generation: u64, msg: RouteRefreshMsg) {
        if !self.current(peer, generation) {
            return;
        }
        match msg.subtype {
            RouteRefreshSubtype::Normal => {
                if let Err(e) = self.rib.route_refresh(peer, msg.afi, msg.safi) {
                    debug!(peer = %self.name(peer), error = %e, "ROUTE-REFRESH ignored");
                    return;
                }
                // RFC 7313 §4: bracket the re-sent routes with BoRR/EoRR.
                if self.peers.get(&peer).is_some_and(|p| p.enhanced_rr) {
                    self.before_flush.push((
                        peer,
                        refresh_marker(msg.afi, msg.safi, RouteRefreshSubtype::BoRR),
                    ));
                    self.after_flush.push((
                        peer,
                        refresh_marker(msg.afi, msg.safi, RouteRefreshSubtype::EoRR),
                    ));
                }
            }
            // RFC 7313 §4: from BoRR the peer's routes of the family are stale until its EoRR
            // (markers from a peer that did not negotiate enhanced route refresh included:
            // they only bracket a re-send, which it does anyway).
            RouteRefreshSubtype::BoRR => {
                let n = self.rib.begin_refresh(peer, msg.afi);
                debug!(peer = %self.name(peer), stale = n, "BoRR: the peer re-sends its routes");
            }
            RouteRefreshSubtype::EoRR => {
                let n = self.rib.end_refresh(peer, msg.afi);
                debug!(peer = %self.name(peer), removed = n, "EoRR: routes not re-sent removed");
            }
            // RFC 7313 §5: reserved subtypes are ignored.
            RouteRefreshSubtype::Reserved(_) => {}
        }
    }

    /// RFC 4486 subcode 1 / max-prefix: act once per session when the peer goes over its limit.
    fn check_max_prefixes(&mut self, peer: PeerId, dropped: usize, out: &mut Vec<Action>) {
        let accepted = self.rib.counters(peer).map(|c| c.accepted).unwrap_or(0);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(max) = p.max_prefixes else { return };
        let over = accepted > max.limit || dropped > 0;
        if !over || p.over_limit_reported {
            return;
        }
        p.over_limit_reported = true;
        let reason = match max.action {
            configs::MaxPrefixAction::Warn => format!(
                "max-prefix: {accepted} prefixes accepted, limit {} (warn only)",
                max.limit
            ),
            configs::MaxPrefixAction::Drop => format!(
                "max-prefix: limit {} reached; further new prefixes are ignored",
                max.limit
            ),
            configs::MaxPrefixAction::Teardown => format!(
                "max-prefix: {accepted} prefixes accepted, limit {}; session torn down, restart in {} s",
                max.limit, max.restart
            ),
        };
        warn!(peer = %p.name, "{reason}");
        let cmd = match max.action {
            configs::MaxPrefixAction::Teardown => PeerCommand::Cease {
                subcode: crate::wire::cease_subcode::MAXIMUM_PREFIXES_REACHED,
                communication: Some(format!(
                    "maximum number of prefixes reached ({})",
                    max.limit
                )),
                hold_down: Duration::from_secs(max.restart),
                reason,
            },
            _ => PeerCommand::Notice(reason),
        };
        out.push(Action::Peer { peer, cmd });
    }

    /// Events of an older session of the peer are stale.
    fn current(&self, peer: PeerId, generation: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.generation == generation && generation != 0)
    }

    fn name(&self, id: PeerId) -> &str {
        self.peers.get(&id).map(|p| p.name.as_str()).unwrap_or("?")
    }

    // ---- policies and adverts ----

    fn set_policies(&mut self, id: PeerId, import: Policy, export: Policy) {
        match self.rib.set_policies(id, import, export) {
            // RFC 2918: routes already received went through the old import policy; ask the
            // peer to send them again (RFC 7313 brackets them if negotiated).
            Ok((true, _)) if self.rib.is_up(id) => {
                let families = self
                    .peers
                    .get(&id)
                    .map(|p| p.families.clone())
                    .unwrap_or_default();
                for (afi, safi) in families {
                    let rr = refresh_marker(afi, safi, RouteRefreshSubtype::Normal);
                    self.before_flush.push((id, rr));
                }
            }
            Ok(_) => {}
            Err(e) => warn!(peer = ?id, error = %e, "policy change not applied"),
        }
    }

    fn add_adverts(
        &mut self,
        list: Vec<(Advert, Option<String>)>,
    ) -> Result<AdvertsAdded, CoreError> {
        if let Some(e) = list.iter().find_map(|(a, p)| self.check_pool(a, p).err()) {
            return Err(e);
        }
        let mut n = AdvertsAdded::default();
        for (a, pool) in list {
            match self.adverts.get(&a.prefix) {
                Some(old) if *old == a => {}
                Some(_) => n.replaced += 1,
                None => n.added += 1,
            }
            self.add_advert(a, pool);
        }
        Ok(n)
    }

    fn drain(&mut self) -> u32 {
        self.draining = true;
        let all: Vec<Advert> = self.adverts.values().cloned().collect();
        for a in all {
            let pool = self.advert_pool.get(&a.prefix).cloned();
            self.add_advert(a, pool);
        }
        info!("draining: every advert now carries GRACEFUL_SHUTDOWN (RFC 8326)");
        self.peers.values().filter(|p| p.generation != 0).count() as u32
    }

    /// Checks an advert's pool: it exists and contains the prefix.
    fn check_pool(&self, a: &Advert, pool: &Option<String>) -> Result<(), CoreError> {
        let Some(name) = pool else { return Ok(()) };
        match self.pools.get(name) {
            None => Err(CoreError::NoSuchPool {
                prefix: a.prefix,
                pool: name.clone(),
            }),
            Some(p) if !p.prefix.contains(&a.prefix) => Err(CoreError::OutsidePool {
                prefix: a.prefix,
                pool: name.clone(),
                range: p.prefix,
            }),
            Some(_) => Ok(()),
        }
    }

    fn aggregated(&self, pool: &Option<String>) -> Option<configs::Pool> {
        pool.as_ref()
            .and_then(|n| self.pools.get(n))
            .filter(|p| p.aggregate)
            .cloned()
    }

    /// Adds an advert; a member of an aggregated pool only keeps the pool's prefix announced.
    fn add_advert(&mut self, a: Advert, pool: Option<String>) {
        match self.aggregated(&pool) {
            Some(p) => {
                self.adverts.insert(a.prefix, a.clone());
                self.advert_pool.insert(a.prefix, p.name.clone());
                self.refresh_pool(&p);
            }
            None => {
                match pool {
                    Some(name) => self.advert_pool.insert(a.prefix, name),
                    None => self.advert_pool.remove(&a.prefix),
                };
                self.originate(a);
            }
        }
    }

    fn remove_advert(&mut self, prefix: IpNet) -> bool {
        if self.adverts.remove(&prefix).is_none() {
            return false;
        }
        let pool = self.advert_pool.remove(&prefix);
        match self.aggregated(&pool) {
            Some(p) => self.refresh_pool(&p),
            None => self.rib.withdraw_originated(prefix),
        }
        true
    }

    /// An aggregated pool is announced while at least one of its VIPs is present.
    fn refresh_pool(&mut self, p: &configs::Pool) {
        let members = self.advert_pool.values().filter(|n| **n == p.name).count();
        if members == 0 {
            self.rib.withdraw_originated(p.prefix);
            return;
        }
        let mut communities: Vec<Community> = p.communities.clone();
        if self.draining {
            communities.push(Community::GRACEFUL_SHUTDOWN);
        }
        self.rib.originate(Advert {
            prefix: p.prefix,
            communities,
            ..Advert::default()
        });
    }

    fn originate(&mut self, a: Advert) {
        let mut out = a.clone();
        if self.draining && !out.communities.contains(&Community::GRACEFUL_SHUTDOWN) {
            out.communities.push(Community::GRACEFUL_SHUTDOWN);
        }
        self.adverts.insert(a.prefix, a);
        self.rib.originate(out);
    }

    // ---- flush ----

    /// Every configured peer is up and sent End-of-RIB for each negotiated family.
    fn all_end_of_rib(&self) -> bool {
        self.peers.iter().all(|(id, p)| {
            p.generation != 0 && {
                let got = self.rib.end_of_rib_received(*id);
                p.families.iter().all(|f| got.contains(f))
            }
        })
    }

    fn send(&self, peer: PeerId, bytes: Bytes, out: &mut Vec<Action>) {
        if let Some(p) = self.peers.get(&peer) {
            out.push(Action::Send {
                peer,
                generation: p.generation,
                bytes,
            });
        }
    }

    fn flush(&mut self, out: &mut Vec<Action>) {
        for (peer, bytes) in std::mem::take(&mut self.before_flush) {
            self.send(peer, bytes, out);
        }
        let rib_out = self.rib.flush();
        for (peer, e) in &rib_out.errors {
            warn!(peer = %self.name(*peer), error = %e, "route left out of UPDATE");
        }
        for f in &rib_out.fib {
            debug!(prefix = %f.prefix, next_hops = ?f.next_hops, "Loc-RIB change");
        }
        if self.fib {
            if !rib_out.fib.is_empty() {
                out.push(Action::Fib(FibMsg::Changes(rib_out.fib)));
            }
            if !self.converged && self.all_end_of_rib() {
                self.converged = true;
                info!("every peer sent End-of-RIB: the RIB has converged");
                out.push(Action::Fib(FibMsg::Converged));
            }
        }
        for (peer, bytes) in rib_out.updates {
            self.send(peer, bytes, out);
        }
        for (peer, bytes) in std::mem::take(&mut self.after_flush) {
            self.send(peer, bytes, out);
        }
    }
}

/// BMP Peer Up (RFC 7854 §4.10) for a session that just came up.
fn bmp_peer_up(peer: PeerId, n: &Negotiated, local: SocketAddr, remote: SocketAddr) -> BmpEvent {
    let ctx = n.context();
    let open =
        |m: &crate::wire::OpenMsg| Message::Open(m.clone()).to_bytes(&ctx).unwrap_or_default();
    let header = crate::bmp::PeerHeader {
        flags: if n.four_octet_as {
            0
        } else {
            crate::bmp::msg::peer_flags::A
        },
        address: remote.ip(),
        asn: n.peer_asn,
        bgp_id: n.peer_router_id,
        seconds: 0,
        micros: 0,
    };
    BmpEvent::Up(std::sync::Arc::new(crate::bmp::PeerUp {
        peer,
        header,
        local,
        remote,
        sent_open: open(&n.sent_open),
        received_open: open(&n.received_open),
        ctx,
    }))
}

/// A BoRR/EoRR marker (RFC 7313 §3); it never depends on the session's capabilities.
pub(crate) fn refresh_marker(afi: Afi, safi: Safi, subtype: RouteRefreshSubtype) -> Bytes {
    let m = Message::RouteRefresh(RouteRefreshMsg { afi, subtype, safi });
    m.to_bytes(&Context::default())
        .expect("a ROUTE-REFRESH always fits")
}

/// Every prefix an UPDATE announces or withdraws (unicast families).
fn prefixes_of(u: &UpdateMsg) -> Vec<IpNet> {
    use crate::wire::{MpReach, MpUnreach};
    let mut v: Vec<IpNet> = u
        .withdrawn
        .iter()
        .chain(&u.nlri)
        .map(|p| IpNet::V4(*p))
        .collect();
    match &u.mp_reach {
        Some(MpReach::Ipv4Unicast { nlri, .. }) => v.extend(nlri.iter().map(|p| IpNet::V4(*p))),
        Some(MpReach::Ipv6Unicast { nlri, .. }) => v.extend(nlri.iter().map(|p| IpNet::V6(*p))),
        _ => {}
    }
    match &u.mp_unreach {
        Some(MpUnreach::Ipv4Unicast(w)) => v.extend(w.iter().map(|p| IpNet::V4(*p))),
        Some(MpUnreach::Ipv6Unicast(w)) => v.extend(w.iter().map(|p| IpNet::V6(*p))),
        _ => {}
    }
    v
}
