//! Ingest: received UPDATEs into the Adj-RIB-In (RFC 4271 §9.1 phase 1 inputs, RFC 4760,
//! RFC 7606 outcomes, RFC 4724 End-of-RIB), with the §6.3 semantic checks (NEXT_HOP,
//! enforce-first-as) and the import policy.

use super::*;

impl Rib {
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
}

/// The leftmost AS of an AS_PATH: the first AS of a leading AS_SEQUENCE (an empty path, or one
/// starting with an AS_SET, has none).
fn first_as(a: &PathAttrs) -> Option<u32> {
    let seg = a.as_path.as_ref()?.segments.first()?;
    (seg.kind == crate::wire::AsSegmentType::Sequence)
        .then(|| seg.asns.first().copied())
        .flatten()
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
