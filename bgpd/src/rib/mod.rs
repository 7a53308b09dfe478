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
//!
//! Files: `ingest.rs` (UPDATEs in, §6.3 checks, import policy), `flush.rs` (decision process,
//! FIB changes, Adj-RIB-Out diffs encoded), `views.rs` (read-only views and counters),
//! `table.rs` (storage, interner), `decision.rs` (§9.1.2 steps), `export.rs` (per-peer export);
//! the tests under `tests/` by topic.

mod decision;
mod export;
mod flush;
mod ingest;
mod table;
mod views;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use decision::{Candidate, DEFAULT_LOCAL_PREF, is_loop, select};
pub use ingest::next_hop_refusal;

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

/// Routes of an UPDATE ignored because of their NEXT_HOP (RFC 4271 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadNextHop {
    pub next_hop: MpNextHop,
    /// What is wrong with it ("multicast", "the receiver's own address", ...).
    pub why: &'static str,
    /// How many prefixes were ignored.
    pub prefixes: usize,
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
}
