//! The core task: owns the RIB. Peer tasks send it session events and UPDATEs; the API sends it
//! commands. After each batch it flushes the RIB and hands each peer its encoded UPDATEs.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::peer::{CoreEvent, Outbound, PeerMsg};
use crate::bmp::{BmpEvent, BmpSink};
use crate::fib::FibMsg;
use crate::fsm::DownReason;
use crate::fsm::Negotiated;
use crate::policy::Policy;
use crate::rib::{Advert, PeerId, PeerInfo, Rib, SessionInfo};
use crate::wire::{
    Afi, Community, Context, GracefulRestart, Message, RouteRefreshMsg, RouteRefreshSubtype, Safi,
};

/// A read-only look at the RIB, run inside the core task.
pub type Query = Box<dyn FnOnce(&Rib) + Send>;

pub enum CoreCmd {
    /// Adds or replaces adverts, each optionally in a VIP pool; replies (added, replaced), or
    /// why nothing was added.
    AddAdverts(
        Vec<(Advert, Option<String>)>,
        oneshot::Sender<Result<(u32, u32), String>>,
    ),
    /// Removes adverts; replies how many existed.
    RemoveAdverts(Vec<IpNet>, oneshot::Sender<u32>),
    Query(Query),
    /// RFC 8326: re-announce everything with GRACEFUL_SHUTDOWN; replies the number of peers.
    Drain(oneshot::Sender<u32>),
    /// A new peer (before its task starts); acknowledged.
    AddPeer(
        PeerInfo,
        String,
        mpsc::Sender<PeerMsg>,
        Outbound,
        Option<configs::MaxPrefixes>,
        oneshot::Sender<()>,
    ),
    /// Forget a peer and withdraw what it sent; acknowledged.
    RemovePeer(PeerId, oneshot::Sender<()>),
    /// The restart time of a gracefully restarting peer ran out (RFC 4724 §4.2).
    SweepStale(PeerId, u64),
    /// New import and export policies for a peer, without a session reset; acknowledged.
    SetPolicies(PeerId, Policy, Policy, oneshot::Sender<()>),
}

impl std::fmt::Debug for CoreCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoreCmd::AddAdverts(..) => "AddAdverts",
            CoreCmd::RemoveAdverts(..) => "RemoveAdverts",
            CoreCmd::Query(_) => "Query",
            CoreCmd::Drain(_) => "Drain",
            CoreCmd::AddPeer(..) => "AddPeer",
            CoreCmd::RemovePeer(..) => "RemovePeer",
            CoreCmd::SweepStale(..) => "SweepStale",
            CoreCmd::SetPolicies(..) => "SetPolicies",
        })
    }
}

struct CorePeer {
    name: String,
    tx: mpsc::Sender<PeerMsg>,
    out: Outbound,
    /// Generation of the session the RIB considers up (0: none).
    generation: u64,
    max_prefixes: Option<configs::MaxPrefixes>,
    /// The limit was reported for the current session.
    over_limit_reported: bool,
}

pub struct Core {
    rib: Rib,
    /// The kernel FIB writer, when learned routes are installed.
    fib: Option<mpsc::Sender<FibMsg>>,
    /// Families negotiated per up peer, to know when every End-of-RIB is in.
    families: HashMap<PeerId, Vec<(Afi, Safi)>>,
    converged: bool,
    /// The graceful restart capability each peer sent in its last session.
    restart_caps: HashMap<PeerId, GracefulRestart>,
    /// Long-lived stale time per peer, when both sides sent LLGR (RFC 9494).
    llgr_time: HashMap<PeerId, u32>,
    /// Peers whose stale routes are in the long-lived phase.
    llgr_phase: std::collections::HashSet<PeerId>,
    /// Bumped on every graceful down, so an old restart timer cannot sweep a newer stale set.
    stale_epoch: HashMap<PeerId, u64>,
    /// For timers that come back as commands.
    self_tx: mpsc::Sender<CoreCmd>,
    peers: HashMap<PeerId, CorePeer>,
    /// What we originate, as configured or added over the API (without drain communities).
    adverts: BTreeMap<IpNet, Advert>,
    draining: bool,
    /// VIP pools by name; aggregated pools are announced as their prefix.
    pools: HashMap<String, configs::Pool>,
    /// The pool of each advert that has one.
    advert_pool: HashMap<IpNet, String>,
    /// Peers that negotiated enhanced route refresh (RFC 7313).
    enhanced_rr: std::collections::HashSet<PeerId>,
    /// Messages to send around the next flush's UPDATEs (BoRR before, EoRR after).
    before_flush: Vec<(PeerId, bytes::Bytes)>,
    after_flush: Vec<(PeerId, bytes::Bytes)>,
    /// BMP exporters (RFC 7854); empty when none is configured.
    bmp: BmpSink,
    /// Codec context of each up peer, to re-encode UPDATEs for BMP.
    bmp_ctx: HashMap<PeerId, Context>,
}

impl Core {
    pub fn new(
        rib: Rib,
        fib: Option<mpsc::Sender<FibMsg>>,
        self_tx: mpsc::Sender<CoreCmd>,
    ) -> Core {
        Core {
            rib,
            fib,
            families: HashMap::new(),
            converged: false,
            restart_caps: HashMap::new(),
            stale_epoch: HashMap::new(),
            llgr_time: HashMap::new(),
            llgr_phase: Default::default(),
            self_tx,
            peers: HashMap::new(),
            adverts: BTreeMap::new(),
            draining: false,
            pools: HashMap::new(),
            advert_pool: HashMap::new(),
            enhanced_rr: Default::default(),
            before_flush: Vec::new(),
            after_flush: Vec::new(),
            bmp: BmpSink::default(),
            bmp_ctx: HashMap::new(),
        }
    }

    pub fn set_bmp(&mut self, sink: BmpSink) {
        self.bmp = sink;
    }

    /// BMP Peer Up (RFC 7854 §4.10) for a session that just came up.
    fn bmp_up(&mut self, peer: PeerId, n: &Negotiated, local: SocketAddr, remote: SocketAddr) {
        if self.bmp.is_empty() {
            return;
        }
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
        self.bmp_ctx.insert(peer, ctx);
        self.bmp
            .send(BmpEvent::Up(std::sync::Arc::new(crate::bmp::PeerUp {
                peer,
                header,
                local,
                remote,
                sent_open: open(&n.sent_open),
                received_open: open(&n.received_open),
                ctx,
            })));
    }

    pub fn add_peer(
        &mut self,
        info: PeerInfo,
        name: String,
        tx: mpsc::Sender<PeerMsg>,
        out: Outbound,
    ) {
        let id = info.id;
        if let Err(e) = self.rib.add_peer(info) {
            warn!(peer = %name, error = %e, "peer not added to the RIB");
            return;
        }
        self.peers.insert(
            id,
            CorePeer {
                name,
                tx,
                out,
                generation: 0,
                max_prefixes: None,
                over_limit_reported: false,
            },
        );
    }

    pub fn set_pools(&mut self, pools: &[configs::Pool]) {
        self.pools = pools.iter().map(|p| (p.name.clone(), p.clone())).collect();
    }

    /// Checks an advert's pool: it exists and contains the prefix.
    fn check_pool(&self, a: &Advert, pool: &Option<String>) -> Result<(), String> {
        let Some(name) = pool else { return Ok(()) };
        match self.pools.get(name) {
            None => Err(format!(
                "advert {}: no pool named {name:?} (see [[bgp.pools]])",
                a.prefix
            )),
            Some(p) if !p.prefix.contains(&a.prefix) => Err(format!(
                "advert {} is outside pool {name:?} ({})",
                a.prefix, p.prefix
            )),
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
        let mut communities: Vec<Community> =
            p.communities.iter().map(|c| Community(c.0)).collect();
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

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        initial: Vec<(Advert, Option<String>)>,
        mut events: mpsc::Receiver<CoreEvent>,
        mut cmds: mpsc::Receiver<CoreCmd>,
    ) {
        for (a, pool) in initial {
            self.add_advert(a, pool);
        }
        self.flush().await;
        let mut cmds_open = true;
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    self.event(ev);
                    // Batch whatever else is queued before flushing.
                    for _ in 0..1024 {
                        match events.try_recv() {
                            Ok(ev) => self.event(ev),
                            Err(_) => break,
                        }
                    }
                }
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(c) => self.command(c),
                    None => cmds_open = false,
                },
            }
            self.flush().await;
        }
    }

    fn event(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::Up {
                peer,
                generation,
                negotiated,
                local,
                remote,
            } => {
                self.bmp_up(peer, &negotiated, local, remote);
                // The peer's ASN ("any") and router id are known now.
                if let Some(mut info) = self.rib.peer_info(peer).cloned()
                    && (info.asn != negotiated.peer_asn
                        || info.router_id != negotiated.peer_router_id)
                {
                    info.asn = negotiated.peer_asn;
                    info.router_id = negotiated.peer_router_id;
                    info.ibgp = negotiated.peer_asn == self.rib.local_asn();
                    let _ = self.rib.remove_peer(peer);
                    let _ = self.rib.add_peer(info);
                }
                let ll = link_local_for(local.ip());
                let session = SessionInfo::from_negotiated(&negotiated, local.ip(), ll);
                self.families.insert(peer, negotiated.families.clone());
                if negotiated.enhanced_route_refresh {
                    self.enhanced_rr.insert(peer);
                } else {
                    self.enhanced_rr.remove(&peer);
                }
                // RFC 4724 §4.2: stale routes survive only for families whose forwarding
                // state the restarted peer says it preserved.
                // Per AFI: a family without the F bit (or no longer negotiated) loses them.
                let preserved = |afi: Afi| {
                    negotiated.families.contains(&(afi, Safi::UNICAST))
                        && negotiated.peer_graceful_restart.as_ref().is_some_and(|gr| {
                            gr.families
                                .iter()
                                .any(|f| f.afi == afi && f.safi == Safi::UNICAST && f.forwarding)
                        })
                };
                for afi in [Afi::IPV4, Afi::IPV6] {
                    if preserved(afi) {
                        continue;
                    }
                    let n = self.rib.sweep_stale_family(peer, afi);
                    if n > 0 {
                        info!(peer = %self.name(peer), ?afi, stale = n, "peer did not preserve forwarding state: stale routes removed");
                    }
                }
                match &negotiated.peer_graceful_restart {
                    Some(gr) => self.restart_caps.insert(peer, gr.clone()),
                    None => self.restart_caps.remove(&peer),
                };
                match negotiated.long_lived_stale_time() {
                    Some(t) => self.llgr_time.insert(peer, t),
                    None => self.llgr_time.remove(&peer),
                };
                self.llgr_phase.remove(&peer);
                match self.rib.peer_up(peer, session) {
                    Ok(()) => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.generation = generation;
                            p.over_limit_reported = false;
                        }
                    }
                    Err(e) => warn!(?peer, error = %e, "peer up refused by the RIB"),
                }
            }
            CoreEvent::Down {
                peer,
                generation,
                reason,
            } => {
                if self.current(peer, generation) {
                    if self.bmp_ctx.remove(&peer).is_some() {
                        self.bmp.send(BmpEvent::Down {
                            peer,
                            reason: reason.clone(),
                        });
                    }
                    let restart = self.restart_caps.get(&peer).map(|gr| gr.restart_time);
                    match (&reason, restart) {
                        // RFC 4724 §4.2: no NOTIFICATION and the peer can restart gracefully:
                        // keep its routes (and our forwarding) until End-of-RIB or timeout.
                        (DownReason::TcpFailed, Some(secs)) => {
                            let kept = self.rib.peer_down_graceful(peer).unwrap_or(0);
                            let epoch = self.stale_epoch.entry(peer).or_insert(0);
                            *epoch += 1;
                            let (epoch, tx) = (*epoch, self.self_tx.clone());
                            info!(peer = %self.name(peer), kept, restart_time = secs,
                                  "peer restarting gracefully: routes kept as stale");
                            tokio::spawn(async move {
                                tokio::time::sleep(std::time::Duration::from_secs(
                                    secs.max(1).into(),
                                ))
                                .await;
                                let _ = tx.send(CoreCmd::SweepStale(peer, epoch)).await;
                            });
                        }
                        _ => {
                            debug!(peer = %self.name(peer), ?reason, "flushing the peer's routes");
                            let _ = self.rib.peer_down(peer);
                        }
                    }
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.generation = 0;
                    }
                }
            }
            CoreEvent::Updates {
                peer,
                generation,
                updates,
            } => {
                if !self.current(peer, generation) {
                    return;
                }
                let bmp_ctx = self.bmp_ctx.get(&peer).copied();
                let mut touched: Vec<IpNet> = Vec::new();
                if let Some(ctx) = bmp_ctx {
                    // Pre-policy route monitoring: each UPDATE as received (re-encoded).
                    for update in &updates {
                        let m = Message::Update(Box::new(update.clone()));
                        if let Ok(pdu) = m.to_bytes(&ctx) {
                            self.bmp.send(BmpEvent::Update {
                                peer,
                                pdu,
                                post_policy: false,
                            });
                        }
                        touched.extend(prefixes_of(update));
                    }
                }
                for update in updates {
                    let res = self.rib.apply_update(peer, &update);
                    self.check_max_prefixes(peer, res.as_ref().map(|o| o.over_limit).unwrap_or(0));
                    match res {
                        Ok(o) if o.end_of_rib.is_some() => {
                            info!(peer = %self.name(peer), family = ?o.end_of_rib, "End-of-RIB received")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(peer = %self.name(peer), error = %e, "UPDATE not applied"),
                    }
                }
                if let Some(ctx) = bmp_ctx
                    && !touched.is_empty()
                {
                    touched.sort_unstable();
                    touched.dedup();
                    for pdu in self.rib.adj_rib_in_post_policy(peer, &touched, ctx) {
                        self.bmp.send(BmpEvent::Update {
                            peer,
                            pdu,
                            post_policy: true,
                        });
                    }
                }
            }
            CoreEvent::RouteRefresh {
                peer,
                generation,
                msg,
            } => {
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
                        if self.enhanced_rr.contains(&peer) {
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
        }
    }

    /// Hands encoded messages to a peer's session (dropped if that session is gone). Never
    /// waits: the peer task may be waiting on us.
    async fn send_to(&self, peer: PeerId, bytes: bytes::Bytes) {
        if let Some(p) = self.peers.get(&peer)
            && p.out.send((p.generation, bytes)).is_err()
        {
            debug!(peer = %p.name, "peer task gone");
        }
    }

    /// RFC 4486 subcode 1 / max-prefix: act once per session when the peer goes over its limit.
    fn check_max_prefixes(&mut self, peer: PeerId, dropped: usize) {
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
        let msg = match max.action {
            configs::MaxPrefixAction::Teardown => PeerMsg::Cease {
                subcode: crate::wire::cease_subcode::MAXIMUM_PREFIXES_REACHED,
                communication: Some(format!(
                    "maximum number of prefixes reached ({})",
                    max.limit
                )),
                hold_down: std::time::Duration::from_secs(max.restart),
                reason,
            },
            _ => PeerMsg::Notice(reason),
        };
        if p.tx.try_send(msg).is_err() {
            warn!(peer = %p.name, "peer task busy: max-prefix action not delivered");
        }
    }

    /// Every configured peer is up and sent End-of-RIB for each negotiated family.
    fn all_end_of_rib(&self) -> bool {
        self.peers.iter().all(|(id, p)| {
            p.generation != 0
                && self.families.get(id).is_some_and(|fams| {
                    let got = self.rib.end_of_rib_received(*id);
                    fams.iter().all(|f| got.contains(f))
                })
        })
    }

    /// Events of an older session of the peer are stale.
    fn current(&self, peer: PeerId, generation: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.generation == generation)
    }

    fn name(&self, id: PeerId) -> &str {
        self.peers.get(&id).map(|p| p.name.as_str()).unwrap_or("?")
    }

    fn command(&mut self, cmd: CoreCmd) {
        match cmd {
            CoreCmd::AddAdverts(list, reply) => {
                if let Some(e) = list.iter().find_map(|(a, p)| self.check_pool(a, p).err()) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let (mut added, mut replaced) = (0, 0);
                for (a, pool) in list {
                    match self.adverts.get(&a.prefix) {
                        Some(old) if *old == a => {}
                        Some(_) => replaced += 1,
                        None => added += 1,
                    }
                    self.add_advert(a, pool);
                }
                let _ = reply.send(Ok((added, replaced)));
            }
            CoreCmd::RemoveAdverts(list, reply) => {
                let removed = list.into_iter().filter(|p| self.remove_advert(*p)).count();
                let _ = reply.send(removed as u32);
            }
            CoreCmd::Query(q) => q(&self.rib),
            CoreCmd::AddPeer(info, name, tx, out, max, ack) => {
                let id = info.id;
                self.add_peer(info, name, tx, out);
                if let Some(p) = self.peers.get_mut(&id) {
                    p.max_prefixes = max;
                }
                let _ = ack.send(());
            }
            CoreCmd::SweepStale(peer, epoch) => {
                if self.stale_epoch.get(&peer) != Some(&epoch) {
                    return;
                }
                // RFC 9494 §4.2: with LLGR the routes stay, long-lived stale, for its time
                // (unless the peer is back: then its End-of-RIB or this timer ends them).
                if let Some(&secs) = self.llgr_time.get(&peer)
                    && !self.rib.is_up(peer)
                    && self.llgr_phase.insert(peer)
                {
                    let (kept, removed) = self.rib.enter_long_lived_stale(peer);
                    info!(peer = %self.name(peer), kept, removed, long_lived_stale_time = secs,
                          "restart time over: routes kept as long-lived stale (LLGR_STALE)");
                    let tx = self.self_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(secs.into())).await;
                        let _ = tx.send(CoreCmd::SweepStale(peer, epoch)).await;
                    });
                    return;
                }
                self.llgr_phase.remove(&peer);
                let n = self.rib.sweep_stale(peer);
                if n > 0 {
                    info!(peer = %self.name(peer), stale = n, "restart time over: stale routes removed");
                }
            }
            CoreCmd::SetPolicies(id, import, export, ack) => {
                match self.rib.set_policies(id, import, export) {
                    // RFC 2918: routes already received went through the old import policy;
                    // ask the peer to send them again (RFC 7313 brackets them if negotiated).
                    Ok((true, _)) if self.rib.is_up(id) => {
                        for &(afi, safi) in self.families.get(&id).into_iter().flatten() {
                            let rr = refresh_marker(afi, safi, RouteRefreshSubtype::Normal);
                            self.before_flush.push((id, rr));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(peer = ?id, error = %e, "policy change not applied"),
                }
                let _ = ack.send(());
            }
            CoreCmd::RemovePeer(id, ack) => {
                if self.peers.remove(&id).is_some() {
                    let _ = self.rib.remove_peer(id);
                }
                let _ = ack.send(());
            }
            CoreCmd::Drain(reply) => {
                self.draining = true;
                let all: Vec<Advert> = self.adverts.values().cloned().collect();
                for a in all {
                    let pool = self.advert_pool.get(&a.prefix).cloned();
                    self.add_advert(a, pool);
                }
                info!("draining: every advert now carries GRACEFUL_SHUTDOWN (RFC 8326)");
                let up = self.peers.values().filter(|p| p.generation != 0).count();
                let _ = reply.send(up as u32);
            }
        }
    }

    async fn flush(&mut self) {
        for (peer, bytes) in std::mem::take(&mut self.before_flush) {
            self.send_to(peer, bytes).await;
        }
        let out = self.rib.flush();
        for (peer, e) in &out.errors {
            warn!(peer = %self.name(*peer), error = %e, "route left out of UPDATE");
        }
        for f in &out.fib {
            debug!(prefix = %f.prefix, next_hops = ?f.next_hops, "Loc-RIB change");
        }
        if let Some(fib) = &self.fib {
            if !out.fib.is_empty() && fib.send(FibMsg::Changes(out.fib)).await.is_err() {
                warn!("the FIB task is gone: kernel routes are no longer updated");
            }
            if !self.converged && self.all_end_of_rib() {
                self.converged = true;
                info!("every peer sent End-of-RIB: the RIB has converged");
                let _ = fib.send(FibMsg::Converged).await;
            }
        }
        for (peer, bytes) in out.updates {
            self.send_to(peer, bytes).await;
        }
        for (peer, bytes) in std::mem::take(&mut self.after_flush) {
            self.send_to(peer, bytes).await;
        }
    }
}

/// A BoRR/EoRR marker (RFC 7313 §3); it never depends on the session's capabilities.
fn refresh_marker(afi: Afi, safi: Safi, subtype: RouteRefreshSubtype) -> bytes::Bytes {
    let m = Message::RouteRefresh(RouteRefreshMsg { afi, subtype, safi });
    m.to_bytes(&crate::wire::Context::default())
        .expect("a ROUTE-REFRESH always fits")
}

/// The IPv6 link-local address of the interface that holds `local` (sent as the second next
/// hop of IPv6 routes, RFC 2545 §3). None when unknown.
fn link_local_for(local: IpAddr) -> Option<Ipv6Addr> {
    let IpAddr::V6(addr) = local else { return None };
    if addr.is_unicast_link_local() {
        return None;
    }
    let rows = super::unnumbered::interface_addresses();
    let ifname = rows
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, i)| i.clone())?;
    rows.into_iter()
        .find(|(a, i)| *i == ifname && a.is_unicast_link_local())
        .map(|(a, _)| a)
}

/// Every prefix an UPDATE announces or withdraws (unicast families).
fn prefixes_of(u: &crate::wire::UpdateMsg) -> Vec<IpNet> {
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
