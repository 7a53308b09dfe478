//! The sans-IO Routing Information Bases (RFC 4271 §3.2, §9): Adj-RIBs-In, Loc-RIB and
//! Adj-RIBs-Out for IPv4 and IPv6 unicast.
//!
//! Events in ([`Rib::apply_update`], [`Rib::originate`], [`Rib::peer_up`], ...) only change the
//! stored routes and mark prefixes dirty. [`Rib::flush`] then runs the decision process on the
//! dirty prefixes, reports Loc-RIB changes for the kernel FIB and, per peer, the difference between
//! the desired and the current Adj-RIB-Out as encoded UPDATE messages (§9.2: many prefixes per
//! UPDATE, nothing the peer already has).
//!
//! Storage: one hash table per family keyed by prefix holds every peer's path (Adj-RIB-In entries
//! and Loc-RIB candidates are the same records, with flags); attribute sets are interned and
//! shared. Views and UPDATE contents are sorted by prefix, so output is deterministic.
//! Adj-RIB-In keeps post-import-policy attributes, and routes the policy rejected (or that loop)
//! as received, so `received`/`accepted` counters and views show them; changing an import policy
//! therefore needs a ROUTE-REFRESH to the peer (no soft-reconfiguration copy is kept).
//!
//! Graceful restart keeps a peer's paths with a `STALE` flag until End-of-RIB (RFC 4724 §4.2);
//! enhanced route refresh marks and sweeps the same way (RFC 7313).
//! Not yet: ADD-PATH, route reflection and confederations, next-hop reachability checks.

mod decision;
mod export;
mod table;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use decision::{Candidate, DEFAULT_LOCAL_PREF, is_loop, select};

use crate::fsm::Negotiated;
use crate::policy::{Outcome, Policy, Route};
use crate::wire::{
    Afi, AsPath, Community, Context, EncodeError, LargeCommunity, Message, MpNextHop, MpReach,
    MpUnreach, Origin, PathAttrs, Safi, UpdateBuilder, UpdateMsg,
};
use export::Source;
use table::{Delta, FastMap, Interner, Path, Paths, RibPrefix, Table, Upsert, flags};

/// A configured peer's handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// A configured peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub id: PeerId,
    pub address: IpAddr,
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub ibgp: bool,
    /// Runs on every received route (RFC 8212: the caller picks the default).
    pub import: Policy,
    /// Runs on every route before it enters this peer's Adj-RIB-Out.
    pub export: Policy,
    /// Toward iBGP peers: advertise our address as next hop instead of keeping it.
    pub next_hop_self: bool,
    /// RFC 4271 §6.3 (MAY): from an eBGP peer, ignore routes whose AS_PATH does not start with
    /// the peer's AS.
    pub enforce_first_as: bool,
    /// Accept at most this many prefixes; new ones beyond it are ignored (max-prefix "drop").
    pub max_accepted: Option<u64>,
}

/// What an established session settled, as the RIB needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub families: Vec<(Afi, Safi)>,
    pub ctx: Context,
    /// Our addresses on this session, used as next hop.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    pub local_v6_link_local: Option<Ipv6Addr>,
    /// RFC 8950 negotiated for IPv4 unicast: IPv4 routes may carry an IPv6 next hop.
    pub ipv4_over_ipv6_next_hop: bool,
    /// Both sides sent the long-lived graceful restart capability (RFC 9494).
    pub long_lived_gr: bool,
}

impl SessionInfo {
    /// From the FSM's negotiation result and the socket's local address.
    pub fn from_negotiated(n: &Negotiated, local: IpAddr, link_local: Option<Ipv6Addr>) -> Self {
        let (local_v4, local_v6) = match local {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (Some(v4), None),
                None => (None, Some(a)),
            },
        };
        SessionInfo {
            families: n.families.clone(),
            ctx: n.context(),
            local_v4,
            local_v6,
            local_v6_link_local: link_local,
            ipv4_over_ipv6_next_hop: n.extended_next_hop.iter().any(|e| {
                e.nlri_afi == Afi::IPV4
                    && e.nlri_safi == Safi::UNICAST.0 as u16
                    && e.next_hop_afi == Afi::IPV6
            }),
            long_lived_gr: n.long_lived_stale_time().is_some(),
        }
    }

    fn has(&self, afi: Afi) -> bool {
        self.families.contains(&(afi, Safi::UNICAST))
    }
}

/// The attributes of a stored route: the path attributes (with `attrs.next_hop` unset) and the
/// next hop as received or as we send it (`None` for locally originated routes in the Loc-RIB).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteAttrs {
    pub attrs: PathAttrs,
    pub next_hop: Option<MpNextHop>,
}

/// A route to originate (a PodCIDR, a LoadBalancer VIP): ORIGIN IGP, empty AS_PATH, our next hop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advert {
    pub prefix: IpNet,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Sent to iBGP peers (default 100).
    pub local_pref: Option<u32>,
    /// Sent to all peers.
    pub med: Option<u32>,
}

/// A change of the Loc-RIB's installed (multipath) next hops for a learned prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibChange {
    pub prefix: IpNet,
    /// Sorted; empty means remove the route.
    pub next_hops: Vec<IpAddr>,
}

/// What a flush produced.
#[derive(Debug, Default)]
pub struct RibOutput {
    /// Per peer: one or more complete UPDATE messages, in order.
    pub updates: Vec<(PeerId, Bytes)>,
    pub fib: Vec<FibChange>,
    /// End-of-RIB markers included in `updates` (RFC 4724 §2).
    pub end_of_rib: Vec<(PeerId, Afi, Safi)>,
    /// Routes that could not be encoded (attributes larger than a message); they are left out
    /// of the peer's Adj-RIB-Out.
    pub errors: Vec<(PeerId, EncodeError)>,
}

/// What one UPDATE did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The UPDATE was an End-of-RIB marker for this family.
    pub end_of_rib: Option<(Afi, Safi)>,
    /// Prefixes announced (including rejected and looped ones).
    pub announced: usize,
    /// Prefixes withdrawn (explicitly or by treat-as-withdraw).
    pub withdrawn: usize,
    /// RFC 7606 treat-as-withdraw applied.
    pub treat_as_withdraw: bool,
    /// Prefixes of families not negotiated on the session, ignored.
    pub ignored: usize,
    /// Stale paths removed by this End-of-RIB (graceful restart).
    pub stale_removed: usize,
    /// New prefixes ignored because the peer is at its max-prefix limit.
    pub over_limit: usize,
    /// Routes ignored for a semantically incorrect NEXT_HOP (RFC 4271 §6.3).
    pub bad_next_hop: Option<BadNextHop>,
    /// Prefixes ignored because the eBGP peer's AS was not first in AS_PATH (RFC 4271 §6.3).
    pub first_as_mismatch: usize,
}

/// The leftmost AS of an AS_PATH: the first AS of a leading AS_SEQUENCE (an empty path, or one
/// starting with an AS_SET, has none).
fn first_as(a: &PathAttrs) -> Option<u32> {
    let seg = a.as_path.as_ref()?.segments.first()?;
    (seg.kind == crate::wire::AsSegmentType::Sequence)
        .then(|| seg.asns.first().copied())
        .flatten()
}

/// Routes of an UPDATE ignored because of their NEXT_HOP (RFC 4271 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadNextHop {
    pub next_hop: MpNextHop,
    /// What is wrong with it ("multicast", "the receiver's own address", ...).
    pub why: &'static str,
    /// How many prefixes were ignored.
    pub prefixes: usize,
}

/// RFC 4271 §6.3 (and §5.1.3): a NEXT_HOP that is the unspecified address, the receiver's own
/// address on the session, multicast, broadcast or loopback is semantically incorrect. A
/// loopback next hop is accepted only on a session that itself runs over loopback (where it
/// is the peer's own address: in-process tests). For IPv6 (RFC 2545 §3), an unspecified global
/// address is accepted when a link-local one follows (unnumbered peers send that); the
/// link-local one must be link-local.
pub fn next_hop_refusal(nh: &MpNextHop, s: &SessionInfo) -> Option<&'static str> {
    let on_loopback =
        s.local_v4.is_some_and(|a| a.is_loopback()) || s.local_v6.is_some_and(|a| a.is_loopback());
    match *nh {
        MpNextHop::Ipv4(a) => {
            if a.is_unspecified() {
                Some("the unspecified address")
            } else if a.is_multicast() {
                Some("multicast")
            } else if a.is_broadcast() {
                Some("the broadcast address")
            } else if a.is_loopback() && !on_loopback {
                Some("loopback")
            } else if s.local_v4 == Some(a) {
                Some("the receiver's own address")
            } else {
                None
            }
        }
        MpNextHop::Ipv6 { global, link_local } => {
            if let Some(ll) = link_local
                && !ll.is_unicast_link_local()
            {
                return Some("a second (link-local) address that is not link-local");
            }
            if global.is_unspecified() {
                return link_local.is_none().then_some("the unspecified address");
            }
            if global.is_multicast() {
                Some("multicast")
            } else if global.is_loopback() && !on_loopback {
                Some("loopback")
            } else if s.local_v6 == Some(global) {
                Some("the receiver's own address")
            } else {
                None
            }
        }
    }
}

/// Per-peer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Prefixes in the Adj-RIB-In.
    pub received: u64,
    /// Of those, accepted by the import policy and loop-free.
    pub accepted: u64,
    /// Prefixes in the Adj-RIB-Out.
    pub advertised: u64,
    pub updates_received: u64,
    pub treat_as_withdraw: u64,
    /// Prefixes ignored for a semantically incorrect NEXT_HOP (RFC 4271 §6.3).
    pub bad_next_hop: u64,
    /// Prefixes ignored because the eBGP peer's AS was not first in AS_PATH (RFC 4271 §6.3).
    pub first_as_mismatch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RibError {
    #[error("unknown peer {0:?}")]
    UnknownPeer(PeerId),
    #[error("peer {0:?} already configured")]
    DuplicatePeer(PeerId),
    #[error("peer {0:?} has no established session")]
    PeerNotUp(PeerId),
    #[error("address family {0:?}/{1:?} not negotiated")]
    FamilyNotNegotiated(Afi, Safi),
}

/// A route in a view.
#[derive(Clone, Copy, Debug)]
pub struct RibRoute<'a> {
    pub prefix: IpNet,
    /// `None` for locally originated routes.
    pub peer: Option<PeerId>,
    pub attrs: &'a RouteAttrs,
    /// Accepted by import policy and loop-free.
    pub accepted: bool,
    /// Best path as of the last flush.
    pub best: bool,
    /// In the multipath set as of the last flush.
    pub multipath: bool,
    /// Kept from a session that is gone (graceful restart, RFC 4724 §4.2; long-lived stale,
    /// RFC 9494 §4.2) or awaiting its re-send (enhanced route refresh, RFC 7313 §4).
    pub stale: bool,
}

/// Per-family sync state of a peer's Adj-RIB-Out.
#[derive(Clone, Copy, Debug, Default)]
struct Sync {
    /// Walk the whole table at the next flush (after peer_up, route refresh).
    full: bool,
    /// Re-send what the peer already has (route refresh).
    resend: bool,
}

#[derive(Debug)]
pub(crate) struct Peer {
    info: PeerInfo,
    session: Option<SessionInfo>,
    /// Adj-RIB-Out (unordered; views sort).
    out4: FastMap<Ipv4Net, Arc<RouteAttrs>>,
    out6: FastMap<Ipv6Net, Arc<RouteAttrs>>,
    delta4: Delta<Ipv4Net>,
    delta6: Delta<Ipv6Net>,
    sync: [Sync; 2],
    send_eor: bool,
    counters: PeerCounters,
    eor_received: Vec<(Afi, Safi)>,
}

impl Peer {
    /// Forgets what belonged to the session: its Adj-RIB-Out, pending changes and sync state.
    fn end_session(&mut self) {
        self.session = None;
        self.out4.clear();
        self.out6.clear();
        self.delta4.clear();
        self.delta6.clear();
        self.sync = [Sync::default(); 2];
        self.send_eor = false;
        self.eor_received.clear();
    }
}

/// The RIBs of one speaker.
#[derive(Debug)]
pub struct Rib {
    local_asn: u32,
    router_id: Ipv4Addr,
    peers: BTreeMap<PeerId, Peer>,
    v4: Table<Ipv4Net>,
    v6: Table<Ipv6Net>,
    interner: Interner,
    track_fib: bool,
}

impl Rib {
    pub fn new(local_asn: u32, router_id: Ipv4Addr) -> Self {
        Rib {
            local_asn,
            router_id,
            peers: BTreeMap::new(),
            v4: Table::default(),
            v6: Table::default(),
            interner: Interner::default(),
            track_fib: true,
        }
    }

    /// Whether `flush` reports Loc-RIB next-hop changes (`RibOutput::fib`). Off when nothing
    /// installs routes: it saves a vector per changed prefix.
    pub fn set_fib_tracking(&mut self, on: bool) {
        self.track_fib = on;
    }

    pub fn local_asn(&self) -> u32 {
        self.local_asn
    }

    pub fn router_id(&self) -> Ipv4Addr {
        self.router_id
    }

    pub fn add_peer(&mut self, info: PeerInfo) -> Result<(), RibError> {
        if self.peers.contains_key(&info.id) {
            return Err(RibError::DuplicatePeer(info.id));
        }
        self.peers.insert(
            info.id,
            Peer {
                info,
                session: None,
                out4: FastMap::default(),
                out6: FastMap::default(),
                delta4: Delta::default(),
                delta6: Delta::default(),
                sync: [Sync::default(); 2],
                send_eor: false,
                counters: PeerCounters::default(),
                eor_received: Vec::new(),
            },
        );
        Ok(())
    }

    /// Drops the peer and its routes.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<PeerInfo, RibError> {
        self.peer_down(id)?;
        let peer = self.peers.remove(&id).ok_or(RibError::UnknownPeer(id))?;
        Ok(peer.info)
    }

    /// The session reached Established: the next flush sends the peer its whole Adj-RIB-Out
    /// and an End-of-RIB per negotiated family (RFC 4724 §2).
    pub fn peer_up(&mut self, id: PeerId, session: SessionInfo) -> Result<(), RibError> {
        if self.peer(id)?.session.is_some() {
            self.peer_down(id)?;
        }
        let peer = self.peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        peer.sync = [Sync {
            full: true,
            resend: false,
        }; 2];
        peer.send_eor = true;
        peer.session = Some(session);
        Ok(())
    }

    /// The session went down: its Adj-RIB-In is flushed and its Adj-RIB-Out forgotten.
    /// (Graceful restart would instead mark the paths stale: see the module notes.)
    pub fn peer_down(&mut self, id: PeerId) -> Result<(), RibError> {
        let Rib { peers, v4, v6, .. } = self;
        let peer = peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        v4.remove_peer(id, |_| {});
        v6.remove_peer(id, |_| {});
        peer.end_session();
        peer.counters = PeerCounters::default();
        self.interner.request_sweep();
        Ok(())
    }

    /// The session ended without a NOTIFICATION from a peer that can restart gracefully
    /// (RFC 4724 §4.2): its routes stay, marked stale, and keep being used (and forwarded)
    /// until the peer's End-of-RIB or [`Rib::sweep_stale`]. Returns the paths kept.
    pub fn peer_down_graceful(&mut self, id: PeerId) -> Result<usize, RibError> {
        let Rib { peers, v4, v6, .. } = self;
        let peer = peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        let kept = v4.mark_stale(id) + v6.mark_stale(id);
        // The counters stay: the paths they count stay too.
        peer.end_session();
        Ok(kept)
    }

    /// Removes the peer's stale paths (its restart time ran out, or it came back without
    /// preserving forwarding state); returns how many.
    pub fn sweep_stale(&mut self, id: PeerId) -> usize {
        self.interner.request_sweep();
        self.v4.sweep_stale(id) + self.v6.sweep_stale(id)
    }

    /// RFC 9494 §4.2: the peer's restart time ran out (or was zero) and it negotiated LLGR for
    /// `afi`: its stale paths there stay as long-lived stale (LLGR_STALE added, least
    /// preferred), except those marked NO_LLGR, which go. Returns (kept, removed).
    pub fn enter_long_lived_stale(&mut self, id: PeerId, afi: Afi) -> (usize, usize) {
        let Rib {
            v4, v6, interner, ..
        } = self;
        let mut tag = |a: &Arc<RouteAttrs>| -> Option<Arc<RouteAttrs>> {
            let c = &a.attrs.communities;
            if c.contains(&Community::NO_LLGR) {
                return None;
            }
            if c.contains(&Community::LLGR_STALE) {
                return Some(a.clone());
            }
            let mut t = (**a).clone();
            t.attrs.communities.push(Community::LLGR_STALE);
            Some(interner.intern(t))
        };
        let res = match afi {
            Afi::IPV4 => v4.retag_stale(id, &mut tag),
            Afi::IPV6 => v6.retag_stale(id, &mut tag),
            _ => (0, 0),
        };
        self.interner.request_sweep();
        res
    }

    /// How many of the peer's paths of `afi` are stale.
    pub fn stale_count(&self, id: PeerId, afi: Afi) -> usize {
        match afi {
            Afi::IPV4 => self.v4.stale_count(id),
            Afi::IPV6 => self.v6.stale_count(id),
            _ => 0,
        }
    }

    /// RFC 7313 §4: the peer begins re-sending a family (BoRR): its paths there become stale
    /// until its EoRR; they stay selected meanwhile. Returns how many.
    pub fn begin_refresh(&mut self, id: PeerId, afi: Afi) -> usize {
        match afi {
            Afi::IPV4 => self.v4.mark_stale(id),
            Afi::IPV6 => self.v6.mark_stale(id),
            _ => 0,
        }
    }

    /// RFC 4724 §4.2: the restarted peer did not preserve forwarding for `afi` (no F bit):
    /// its stale routes of that family go now. Returns how many.
    pub fn sweep_stale_family(&mut self, id: PeerId, afi: Afi) -> usize {
        self.end_refresh(id, afi)
    }

    /// RFC 7313 §4 (EoRR): what the peer did not re-send is gone. Returns how many.
    pub fn end_refresh(&mut self, id: PeerId, afi: Afi) -> usize {
        self.interner.request_sweep();
        match afi {
            Afi::IPV4 => self.v4.sweep_stale(id),
            Afi::IPV6 => self.v6.sweep_stale(id),
            _ => 0,
        }
    }

    /// Replaces a peer's policies. A new export policy re-evaluates its whole Adj-RIB-Out at the
    /// next flush (only differences are sent); a new import policy applies to routes received
    /// from now on, so the caller asks the peer for a ROUTE-REFRESH. Returns (import changed,
    /// export changed).
    pub fn set_policies(
        &mut self,
        id: PeerId,
        import: Policy,
        export: Policy,
    ) -> Result<(bool, bool), RibError> {
        let peer = self.peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        let import_changed = peer.info.import != import;
        let export_changed = peer.info.export != export;
        peer.info.import = import;
        peer.info.export = export;
        if export_changed && peer.session.is_some() {
            peer.sync = [Sync {
                full: true,
                resend: false,
            }; 2];
        }
        Ok((import_changed, export_changed))
    }

    /// RFC 2918: the peer asked for a family again; the next flush re-sends all of it.
    pub fn route_refresh(&mut self, id: PeerId, afi: Afi, safi: Safi) -> Result<(), RibError> {
        let peer = self.peers.get_mut(&id).ok_or(RibError::UnknownPeer(id))?;
        let session = peer.session.as_ref().ok_or(RibError::PeerNotUp(id))?;
        let idx = match afi {
            Afi::IPV4 => 0,
            Afi::IPV6 => 1,
            _ => return Err(RibError::FamilyNotNegotiated(afi, safi)),
        };
        if safi != Safi::UNICAST || !session.has(afi) {
            return Err(RibError::FamilyNotNegotiated(afi, safi));
        }
        peer.sync[idx] = Sync {
            full: true,
            resend: true,
        };
        Ok(())
    }

    /// Applies one received UPDATE (RFC 4271 §9, RFC 4760, RFC 7606, RFC 4724 §2).
    pub fn apply_update(
        &mut self,
        from: PeerId,
        update: &UpdateMsg,
    ) -> Result<UpdateOutcome, RibError> {
        let Rib {
            local_asn,
            router_id,
            peers,
            v4,
            v6,
            interner,
            ..
        } = self;
        let peer = peers.get_mut(&from).ok_or(RibError::UnknownPeer(from))?;
        let session = peer.session.clone().ok_or(RibError::PeerNotUp(from))?;
        peer.counters.updates_received += 1;
        let mut out = UpdateOutcome::default();
        if let Some(fam) = update.end_of_rib() {
            if !peer.eor_received.contains(&fam) {
                peer.eor_received.push(fam);
            }
            out.end_of_rib = Some(fam);
            // RFC 4724 §4.2: what the restarted peer did not send again is gone.
            out.stale_removed = match fam {
                (Afi::IPV4, Safi::UNICAST) => v4.sweep_stale(from),
                (Afi::IPV6, Safi::UNICAST) => v6.sweep_stale(from),
                _ => 0,
            };
            return Ok(out);
        }
        let mut ing = Ingest {
            local_asn: *local_asn,
            router_id: *router_id,
            peer,
            interner,
            session: &session,
            out: &mut out,
        };
        // Withdrawals first: an UPDATE may withdraw and re-announce the same prefix.
        ing.withdraw(v4, &update.withdrawn);
        match &update.mp_unreach {
            Some(MpUnreach::Ipv4Unicast(v)) => ing.withdraw(v4, v),
            Some(MpUnreach::Ipv6Unicast(v)) => ing.withdraw(v6, v),
            _ => {}
        }
        if update.treat_as_withdraw() {
            // RFC 7606 §2: every NLRI of the UPDATE is withdrawn.
            ing.out.treat_as_withdraw = true;
            ing.peer.counters.treat_as_withdraw += 1;
            ing.withdraw(v4, &update.nlri);
            match &update.mp_reach {
                Some(MpReach::Ipv4Unicast { nlri, .. }) => ing.withdraw(v4, nlri),
                Some(MpReach::Ipv6Unicast { nlri, .. }) => ing.withdraw(v6, nlri),
                _ => {}
            }
            return Ok(out);
        }
        if !update.nlri.is_empty()
            && let Some(nh) = update.attrs.next_hop
        {
            ing.announce(v4, &update.nlri, &update.attrs, MpNextHop::Ipv4(nh));
        }
        match &update.mp_reach {
            Some(MpReach::Ipv4Unicast { next_hop, nlri }) => {
                ing.announce(v4, nlri, &update.attrs, *next_hop)
            }
            Some(MpReach::Ipv6Unicast { next_hop, nlri }) => {
                ing.announce(v6, nlri, &update.attrs, *next_hop)
            }
            _ => {}
        }
        Ok(out)
    }

    /// Originates (or replaces) a local route.
    pub fn originate(&mut self, advert: Advert) {
        let attrs = RouteAttrs {
            attrs: PathAttrs {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::default()),
                communities: advert.communities,
                large_communities: advert.large_communities,
                local_pref: advert.local_pref,
                med: advert.med,
                ..PathAttrs::default()
            },
            next_hop: None,
        };
        let attrs = self.interner.intern(attrs);
        match advert.prefix.trunc() {
            IpNet::V4(p) => self.v4.set_originated(p, Some(attrs)),
            IpNet::V6(p) => self.v6.set_originated(p, Some(attrs)),
        }
    }

    /// Stops originating a local route.
    pub fn withdraw_originated(&mut self, prefix: IpNet) {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.set_originated(p, None),
            IpNet::V6(p) => self.v6.set_originated(p, None),
        }
    }

    /// Runs the decision process on everything changed since the last flush and returns the
    /// FIB changes and the UPDATEs for each peer.
    pub fn flush(&mut self) -> RibOutput {
        let mut out = RibOutput::default();
        let Rib {
            local_asn,
            peers,
            v4,
            v6,
            interner,
            track_fib,
            ..
        } = self;
        let fib = track_fib.then_some(&mut out.fib);
        flush_family(*local_asn, v4, peers, interner, fib);
        let fib = track_fib.then_some(&mut out.fib);
        flush_family(*local_asn, v6, peers, interner, fib);
        for (&id, peer) in peers.iter_mut() {
            let Some(session) = &peer.session else {
                continue;
            };
            let builder = UpdateBuilder::new(session.ctx);
            let ctx = session.ctx;
            let families = session.families.clone();
            let mut buf = BytesMut::new();
            encode_family::<Ipv4Net>(id, peer, &builder, &mut buf, &mut out.errors);
            encode_family::<Ipv6Net>(id, peer, &builder, &mut buf, &mut out.errors);
            if std::mem::take(&mut peer.send_eor) {
                for (afi, safi) in families {
                    let eor = Message::Update(Box::new(UpdateMsg::end_of_rib_marker(afi, safi)));
                    match eor.encode(&mut buf, &ctx) {
                        Ok(()) => out.end_of_rib.push((id, afi, safi)),
                        Err(e) => out.errors.push((id, e)),
                    }
                }
            }
            peer.counters.advertised = (peer.out4.len() + peer.out6.len()) as u64;
            if !buf.is_empty() {
                out.updates.push((id, buf.freeze()));
            }
        }
        interner.maybe_sweep();
        out
    }

    // ---- views ----

    fn peer(&self, id: PeerId) -> Result<&Peer, RibError> {
        self.peers.get(&id).ok_or(RibError::UnknownPeer(id))
    }

    pub fn peer_info(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&id).map(|p| &p.info)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.values().map(|p| &p.info)
    }

    pub fn is_up(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.session.is_some())
    }

    pub fn counters(&self, id: PeerId) -> Option<PeerCounters> {
        self.peers.get(&id).map(|p| p.counters)
    }

    /// Families for which the peer's End-of-RIB arrived since its session came up.
    pub fn end_of_rib_received(&self, id: PeerId) -> &[(Afi, Safi)] {
        self.peers
            .get(&id)
            .map_or(&[][..], |p| p.eor_received.as_slice())
    }

    /// Every candidate of the Loc-RIB (all peers' paths and our originated routes), by family
    /// and prefix; flags as of the last flush.
    pub fn loc_rib(&self) -> impl Iterator<Item = RibRoute<'_>> {
        view(&self.v4).chain(view(&self.v6))
    }

    /// One peer's Adj-RIB-In (a scan of the table).
    pub fn adj_rib_in(&self, id: PeerId) -> impl Iterator<Item = RibRoute<'_>> {
        self.loc_rib().filter(move |r| r.peer == Some(id))
    }

    /// The peer's post-policy Adj-RIB-In (accepted routes) as UPDATE messages encoded with
    /// `ctx`, one End-of-RIB per negotiated family after them (BMP's initial dump, RFC 7854
    /// §5), and the number of routes.
    pub fn adj_rib_in_updates(&self, id: PeerId, ctx: Context) -> (Vec<Bytes>, u64) {
        let routes: Vec<(IpNet, &RouteAttrs)> = self
            .adj_rib_in(id)
            .filter(|r| r.accepted)
            .map(|r| (r.prefix, r.attrs))
            .collect();
        let mut buf = BytesMut::new();
        let n = encode_routes(ctx, &routes, &[], &mut buf);
        let families = self
            .peers
            .get(&id)
            .and_then(|p| p.session.as_ref())
            .map(|s| s.families.clone())
            .unwrap_or_default();
        for (afi, safi) in families {
            let eor = Message::Update(Box::new(UpdateMsg::end_of_rib_marker(afi, safi)));
            let _ = eor.encode(&mut buf, &ctx);
        }
        (split_messages(buf.freeze()), n)
    }

    /// The post-policy state of `prefixes` in the peer's Adj-RIB-In as UPDATE messages: the
    /// accepted ones announced with their stored attributes, the others (gone or rejected)
    /// withdrawn. For BMP's post-policy route monitoring (RFC 7854 §4.3, L flag).
    pub fn adj_rib_in_post_policy(
        &self,
        id: PeerId,
        prefixes: &[IpNet],
        ctx: Context,
    ) -> Vec<Bytes> {
        let mut announced = Vec::new();
        let mut withdrawn = Vec::new();
        for &p in prefixes {
            match self.routes(p).into_iter().find(|r| r.peer == Some(id)) {
                Some(r) if r.accepted => announced.push((r.prefix, r.attrs)),
                _ => withdrawn.push(p),
            }
        }
        let mut buf = BytesMut::new();
        encode_routes(ctx, &announced, &withdrawn, &mut buf);
        split_messages(buf.freeze())
    }

    /// The routes to one prefix: originated first, then learned.
    pub fn routes(&self, prefix: IpNet) -> Vec<RibRoute<'_>> {
        match prefix.trunc() {
            IpNet::V4(p) => routes_of(&self.v4, p).collect(),
            IpNet::V6(p) => routes_of(&self.v6, p).collect(),
        }
    }

    /// The best route to one prefix as of the last flush.
    pub fn best(&self, prefix: IpNet) -> Option<RibRoute<'_>> {
        self.routes(prefix).into_iter().find(|r| r.best)
    }

    /// What we advertised to a peer.
    pub fn adj_rib_out(&self, id: PeerId) -> impl Iterator<Item = (IpNet, &RouteAttrs)> {
        let peer = self.peers.get(&id);
        let v4 = peer
            .into_iter()
            .flat_map(|p| sorted(&p.out4).into_iter())
            .map(|(k, v)| (IpNet::V4(*k), &**v));
        let v6 = peer
            .into_iter()
            .flat_map(|p| sorted(&p.out6).into_iter())
            .map(|(k, v)| (IpNet::V6(*k), &**v));
        v4.chain(v6)
    }

    /// Distinct attribute sets held (Loc-RIB and Adj-RIBs-Out).
    pub fn attribute_sets(&self) -> usize {
        self.interner.len()
    }

    /// Prefixes with at least one route (learned or originated), IPv4 and IPv6.
    pub fn prefix_count(&self) -> (usize, usize) {
        (count(&self.v4), count(&self.v6))
    }
}

fn count<P: RibPrefix>(t: &Table<P>) -> usize {
    let extra = t.originated.keys().filter(|k| !t.dests.contains_key(k));
    t.dests.len() + extra.count()
}

fn originated_route<P: RibPrefix>(p: P, a: &Arc<RouteAttrs>) -> RibRoute<'_> {
    RibRoute {
        prefix: p.into(),
        peer: None,
        attrs: a,
        accepted: true,
        best: true,
        multipath: false,
        stale: false,
    }
}

fn learned_route<P: RibPrefix>(p: P, path: &Path) -> RibRoute<'_> {
    RibRoute {
        prefix: p.into(),
        peer: Some(path.peer),
        attrs: &path.attrs,
        accepted: path.has(flags::ELIGIBLE),
        best: path.has(flags::BEST),
        multipath: path.has(flags::MULTIPATH),
        stale: path.has(flags::STALE),
    }
}

fn view<P: RibPrefix>(t: &Table<P>) -> impl Iterator<Item = RibRoute<'_>> {
    let orig = t.originated.iter().map(|(p, a)| originated_route(*p, a));
    let learned = sorted(&t.dests)
        .into_iter()
        .flat_map(|(p, paths)| paths.as_slice().iter().map(|x| learned_route(*p, x)));
    orig.chain(learned)
}

/// A hash map's entries in key order.
fn sorted<K: Ord, V, S>(m: &HashMap<K, V, S>) -> Vec<(&K, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

fn routes_of<P: RibPrefix>(t: &Table<P>, p: P) -> impl Iterator<Item = RibRoute<'_>> {
    let orig = t.originated.get(&p).map(|a| originated_route(p, a));
    let learned = t
        .dests
        .get(&p)
        .into_iter()
        .flat_map(move |paths| paths.as_slice().iter().map(move |x| learned_route(p, x)));
    orig.into_iter().chain(learned)
}

/// Ingest state for one UPDATE from one peer.
struct Ingest<'a> {
    local_asn: u32,
    router_id: Ipv4Addr,
    peer: &'a mut Peer,
    interner: &'a mut Interner,
    session: &'a SessionInfo,
    out: &'a mut UpdateOutcome,
}

impl Ingest<'_> {
    fn withdraw<P: RibPrefix>(&mut self, table: &mut Table<P>, prefixes: &[P]) {
        if !self.session.has(P::AFI) {
            self.out.ignored += prefixes.len();
            return;
        }
        for &p in prefixes {
            self.out.withdrawn += 1;
            if let Some(path) = table.remove(p, self.peer.info.id) {
                self.peer.counters.received -= 1;
                self.peer.counters.accepted -= path.has(flags::ELIGIBLE) as u64;
            }
        }
    }

    /// The attributes as stored: 4-octet AS path merged (RFC 6793 §4.2.3), next hop moved out,
    /// LOCAL_PREF and reflection attributes of external peers ignored (§5.1.5, RFC 4456).
    fn normalize(&self, attrs: &PathAttrs) -> PathAttrs {
        let mut a = attrs.clone();
        if a.as4_path.is_some() || a.as4_aggregator.is_some() {
            let (path, agg) = a.effective_as_path();
            a.as_path = path;
            a.aggregator = agg;
            a.as4_path = None;
            a.as4_aggregator = None;
        }
        a.next_hop = None;
        if !self.peer.info.ibgp {
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list = Vec::new();
        }
        a
    }

    fn announce<P: RibPrefix>(
        &mut self,
        table: &mut Table<P>,
        prefixes: &[P],
        attrs: &PathAttrs,
        nh: MpNextHop,
    ) {
        if prefixes.is_empty() {
            return;
        }
        if !self.session.has(P::AFI) {
            self.out.ignored += prefixes.len();
            return;
        }
        // RFC 4271 §6.3: a semantically incorrect NEXT_HOP: the routes are ignored (as if
        // withdrawn, so an earlier route of the peer for the prefix does not linger), no
        // NOTIFICATION; never stored, so never passed on. The core logs it once per session.
        if let Some(why) = next_hop_refusal(&nh, self.session) {
            self.withdraw(table, prefixes);
            self.out.bad_next_hop = Some(BadNextHop {
                next_hop: nh,
                why,
                prefixes: self.out.bad_next_hop.map_or(0, |b| b.prefixes) + prefixes.len(),
            });
            self.peer.counters.bad_next_hop += prefixes.len() as u64;
            return;
        }
        let base = self.normalize(attrs);
        // RFC 4271 §6.3 (MAY; on by default, as in FRR): from an eBGP peer the leftmost AS of
        // the AS_PATH (after RFC 6793 reconstruction) must be the peer's. Otherwise the routes
        // are ignored as if withdrawn (RFC 7606 §2 treat-as-withdraw, not §6.3's reset).
        let info = &self.peer.info;
        if !info.ibgp && info.enforce_first_as && first_as(&base) != Some(info.asn) {
            self.withdraw(table, prefixes);
            self.out.first_as_mismatch += prefixes.len();
            self.peer.counters.first_as_mismatch += prefixes.len() as u64;
            return;
        }
        let info = &self.peer.info;
        let ibgp = info.ibgp;
        let ibgp_flag = if ibgp { flags::IBGP } else { 0 };
        let mut received: Option<Arc<RouteAttrs>> = None;
        let mut intern_received = |interner: &mut Interner| {
            received
                .get_or_insert_with(|| {
                    interner.intern(RouteAttrs {
                        attrs: base.clone(),
                        next_hop: Some(nh),
                    })
                })
                .clone()
        };
        let looped = is_loop(&base, self.local_asn, self.router_id, ibgp);
        // One policy run per UPDATE unless the policy looks at prefixes.
        let per_prefix = !looped && info.import.depends_on_prefix();
        let mut shared: Option<(Arc<RouteAttrs>, u8)> = None;
        if looped {
            shared = Some((intern_received(self.interner), flags::LOOP | ibgp_flag));
        } else if !per_prefix {
            let first: IpNet = prefixes[0].into();
            shared = Some(self.import(first, &base, nh, &mut intern_received));
        }
        for &p in prefixes {
            let (a, f) = match &shared {
                Some((a, f)) => (a.clone(), *f),
                None => self.import(p.into(), &base, nh, &mut intern_received),
            };
            let f = f | ibgp_flag;
            self.out.announced += 1;
            let path = Path {
                attrs: a,
                peer: self.peer.info.id,
                flags: f,
            };
            let eligible = (f & flags::ELIGIBLE != 0) as u64;
            if eligible == 1
                && self
                    .peer
                    .info
                    .max_accepted
                    .is_some_and(|max| self.peer.counters.accepted >= max)
                && !table
                    .dests
                    .get(&p)
                    .is_some_and(|paths| paths.as_slice().iter().any(|x| x.peer == path.peer))
            {
                self.out.over_limit += 1;
                continue;
            }
            match table.upsert(p, path) {
                Upsert::New => {
                    self.peer.counters.received += 1;
                    self.peer.counters.accepted += eligible;
                }
                Upsert::Replaced { old_flags } => {
                    self.peer.counters.accepted -= (old_flags & flags::ELIGIBLE != 0) as u64;
                    self.peer.counters.accepted += eligible;
                }
                Upsert::Unchanged => {}
            }
        }
    }

    /// The import policy on one route: the attributes to store and the flags.
    fn import(
        &mut self,
        prefix: IpNet,
        base: &PathAttrs,
        nh: MpNextHop,
        intern_received: &mut impl FnMut(&mut Interner) -> Arc<RouteAttrs>,
    ) -> (Arc<RouteAttrs>, u8) {
        let route = Route {
            prefix,
            attrs: base,
            originated: false,
            local_asn: self.local_asn,
        };
        match self.peer.info.import.apply(&route) {
            Outcome::Reject => (intern_received(self.interner), flags::REJECTED),
            Outcome::Accept {
                attrs: std::borrow::Cow::Borrowed(_),
                ..
            } => (intern_received(self.interner), flags::ELIGIBLE),
            Outcome::Accept { attrs, .. } => (
                self.interner.intern(RouteAttrs {
                    attrs: attrs.into_owned(),
                    next_hop: Some(nh),
                }),
                flags::ELIGIBLE,
            ),
        }
    }
}

/// The best route of a prefix after the decision process.
struct Best<'a> {
    attrs: &'a Arc<RouteAttrs>,
    source: Source,
}

impl<'a> Best<'a> {
    fn learned(path: &'a Path) -> Self {
        Best {
            attrs: &path.attrs,
            source: Source::Peer {
                id: path.peer,
                ibgp: path.has(flags::IBGP),
            },
        }
    }
}

/// Runs the decision process for one prefix and stores the result in the path flags.
fn decide(
    local_asn: u32,
    peers: &BTreeMap<PeerId, Peer>,
    paths: &mut Paths,
    originated: bool,
    scratch: &mut Vec<usize>,
) {
    let slice = paths.as_mut_slice();
    for p in slice.iter_mut() {
        p.flags &= !(flags::BEST | flags::MULTIPATH);
    }
    if originated {
        return;
    }
    if let [only] = slice {
        if only.has(flags::ELIGIBLE) {
            only.flags |= flags::BEST | flags::MULTIPATH;
        }
        return;
    }
    let eligible: Vec<usize> = (0..slice.len())
        .filter(|&i| slice[i].has(flags::ELIGIBLE))
        .collect();
    let cands: Vec<Candidate<'_>> = eligible
        .iter()
        .map(|&i| {
            let path = &slice[i];
            let info = peers.get(&path.peer).map(|p| &p.info);
            Candidate {
                attrs: &path.attrs.attrs,
                ibgp: path.has(flags::IBGP),
                peer_router_id: info.map_or(Ipv4Addr::UNSPECIFIED, |i| i.router_id),
                peer_address: info.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |i| i.address),
            }
        })
        .collect();
    let best = select(&cands, local_asn, scratch);
    drop(cands);
    for &m in scratch.iter() {
        slice[eligible[m]].flags |= flags::MULTIPATH;
    }
    if let Some(b) = best {
        slice[eligible[b]].flags |= flags::BEST;
    }
}

fn flush_family<P: RibPrefix>(
    local_asn: u32,
    table: &mut Table<P>,
    peers: &mut BTreeMap<PeerId, Peer>,
    interner: &mut Interner,
    mut fib: Option<&mut Vec<FibChange>>,
) {
    let mut dirty = std::mem::take(&mut table.dirty);
    dirty.sort_unstable();
    dirty.dedup();
    let mut scratch = Vec::new();
    for &p in &dirty {
        // One lookup per map and prefix: the decision, the FIB and the export share them.
        let orig = table.originated.get(&p);
        let before = if table.fib_before.is_empty() {
            Vec::new()
        } else {
            table.fib_before.remove(&p).unwrap_or_default()
        };
        let mut paths = table.dests.get_mut(&p);
        if let Some(paths) = paths.as_deref_mut() {
            decide(local_asn, peers, paths, orig.is_some(), &mut scratch);
        }
        if let Some(fib) = fib.as_deref_mut() {
            let after = paths.as_deref().map(Paths::installed).unwrap_or_default();
            if before != after {
                fib.push(FibChange {
                    prefix: p.into(),
                    next_hops: after,
                });
            }
        }
        let best = match orig {
            Some(attrs) => Some(Best {
                attrs,
                source: Source::Originated,
            }),
            None => paths.as_deref().and_then(Paths::best).map(Best::learned),
        };
        for (&id, peer) in peers.iter_mut() {
            let resend = peer.sync[P::IDX].resend;
            update_out(local_asn, id, peer, interner, p, best.as_ref(), resend);
        }
    }
    table.fib_before = Default::default();
    // Full walks for peers that came up or asked for a refresh; dirty prefixes are done.
    for (&id, peer) in peers.iter_mut() {
        let sync = std::mem::take(&mut peer.sync[P::IDX]);
        if !sync.full {
            continue;
        }
        // In table order (cheapest); encode_family sorts each UPDATE's prefixes.
        let originated = table.originated.iter().map(|(p, attrs)| {
            let best = Best {
                attrs,
                source: Source::Originated,
            };
            (*p, Some(best))
        });
        let learned = table
            .dests
            .iter()
            .filter(|(p, _)| !table.originated.contains_key(p))
            .map(|(p, paths)| (*p, paths.best().map(Best::learned)));
        for (p, best) in originated.chain(learned) {
            if dirty.binary_search(&p).is_ok() {
                continue;
            }
            update_out(local_asn, id, peer, interner, p, best.as_ref(), sync.resend);
        }
    }
    // Keep a small buffer for the next round; give back the one a full table needed.
    dirty.clear();
    if dirty.capacity() <= 4096 {
        table.dirty = dirty;
    }
}

/// Brings one peer's Adj-RIB-Out entry for `p` to what it should be, recording the change.
fn update_out<P: RibPrefix>(
    local_asn: u32,
    id: PeerId,
    peer: &mut Peer,
    interner: &mut Interner,
    p: P,
    best: Option<&Best<'_>>,
    resend: bool,
) {
    if !peer.session.as_ref().is_some_and(|s| s.has(P::AFI)) {
        return;
    }
    let desired = best.and_then(|b| desired(local_asn, id, peer, interner, p, b));
    match desired {
        Some(d) => {
            let prev = P::out_mut(peer).insert(p, d.clone());
            if resend || !prev.is_some_and(|c| Arc::ptr_eq(&d, &c)) {
                P::delta(peer).announce(p, &d);
            }
        }
        None => {
            if P::out_mut(peer).remove(&p).is_some() {
                P::delta(peer).withdrawn.push(p);
            }
        }
    }
}

/// What `peer` should have for `p` (memoized per source attribute set when the export policy
/// ignores prefixes).
fn desired<P: RibPrefix>(
    local_asn: u32,
    id: PeerId,
    peer: &mut Peer,
    interner: &mut Interner,
    p: P,
    b: &Best<'_>,
) -> Option<Arc<RouteAttrs>> {
    if matches!(b.source, Source::Peer { id: from, .. } if from == id) {
        return None;
    }
    let memo_ok = !peer.info.export.depends_on_prefix();
    let key = (Arc::as_ptr(b.attrs) as usize, b.source.kind());
    if memo_ok && let Some(m) = P::delta(peer).memo.get(&key) {
        return m.clone();
    }
    let session = peer.session.as_ref()?;
    let r = export::export(local_asn, &peer.info, session, p.into(), b.attrs, b.source)
        .map(|a| interner.intern(a));
    if memo_ok {
        P::delta(peer).memo.insert(key, r.clone());
    }
    r
}

/// Encodes one family's gathered changes for a peer: withdrawals, then announcements.
fn encode_family<P: RibPrefix>(
    id: PeerId,
    peer: &mut Peer,
    builder: &UpdateBuilder,
    buf: &mut BytesMut,
    errors: &mut Vec<(PeerId, EncodeError)>,
) {
    let mut delta = std::mem::take(P::delta(peer));
    // Prefix order within each UPDATE: the same table gives the same messages.
    delta.withdrawn.sort_unstable();
    for (_, prefixes) in &mut delta.groups {
        prefixes.sort_unstable();
    }
    delta
        .groups
        .sort_unstable_by(|a, b| a.1.first().cmp(&b.1.first()));
    if !delta.withdrawn.is_empty()
        && let Err(e) = P::withdraw(builder, &delta.withdrawn, buf)
    {
        errors.push((id, e));
    }
    for (attrs, prefixes) in &delta.groups {
        let Some(nh) = attrs.next_hop else {
            continue;
        };
        let start = buf.len();
        if let Err(e) = P::announce(builder, &attrs.attrs, nh, prefixes, buf) {
            // Keep whole messages only, and forget what was not sent.
            buf.truncate(start);
            let out = P::out_mut(peer);
            for p in prefixes {
                out.remove(p);
            }
            errors.push((id, e));
        }
    }
    // Dropped rather than cleared: after a full table these buffers are large.
    drop(delta);
}

/// Splits concatenated BGP messages (each with its header) into one `Bytes` each.
fn split_messages(mut all: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while all.len() >= crate::wire::HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([all[16], all[17]])).max(crate::wire::HEADER_LEN);
        out.push(all.split_to(len.min(all.len())));
    }
    out
}

/// Packed UPDATEs for `withdrawn` and for `announced` grouped by attribute set; returns the
/// number of announced routes encoded.
fn encode_routes(
    ctx: Context,
    announced: &[(IpNet, &RouteAttrs)],
    withdrawn: &[IpNet],
    buf: &mut BytesMut,
) -> u64 {
    let b = UpdateBuilder::new(ctx);
    let (w4, w6) = split_families(withdrawn.iter().copied());
    if !w4.is_empty() {
        let _ = b.withdraw_ipv4(&w4, buf);
    }
    if !w6.is_empty() {
        let _ = b.withdraw_ipv6(&w6, buf);
    }
    let mut groups: Vec<(&RouteAttrs, Vec<IpNet>)> = Vec::new();
    let mut index: HashMap<*const RouteAttrs, usize> = HashMap::new();
    for &(prefix, attrs) in announced {
        let at = *index.entry(attrs as *const RouteAttrs).or_insert_with(|| {
            groups.push((attrs, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(prefix);
    }
    let mut n = 0u64;
    for (attrs, prefixes) in &groups {
        let Some(nh) = attrs.next_hop else { continue };
        let (v4, v6) = split_families(prefixes.iter().copied());
        if !v4.is_empty() && b.announce_ipv4(&attrs.attrs, nh, &v4, buf).is_ok() {
            n += v4.len() as u64;
        }
        if !v6.is_empty() && b.announce_ipv6(&attrs.attrs, nh, &v6, buf).is_ok() {
            n += v6.len() as u64;
        }
    }
    n
}

fn split_families(prefixes: impl Iterator<Item = IpNet>) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for p in prefixes {
        match p {
            IpNet::V4(p) => v4.push(p),
            IpNet::V6(p) => v6.push(p),
        }
    }
    (v4, v6)
}
