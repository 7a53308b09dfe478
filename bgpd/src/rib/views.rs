//! Views: read-only looks at the RIB (Loc-RIB, Adj-RIB-In/Out, per prefix, counters) for the
//! API, BMP, MRT and metrics.

use super::flush::{encode_routes, split_messages};
use super::*;

impl Rib {
    pub(super) fn peer(&self, id: PeerId) -> Result<&Peer, RibError> {
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
