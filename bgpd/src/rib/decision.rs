//! The decision process: route selection among the feasible paths to one prefix (RFC 4271
//! §9.1.2.2 with RFC 4456 §9 and RFC 5065 §5.3) and loop detection (§9.1.2).
//!
//! Selection is the RFC's elimination procedure, not a pairwise comparator: the MED step only
//! compares routes from the same neighbor AS, which is not a total order.

use std::net::{IpAddr, Ipv4Addr};

use crate::policy::neighbor_as;
use crate::wire::{Community, Origin, PathAttrs};

/// LOCAL_PREF assumed when absent (eBGP-learned routes), as most implementations do.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// One feasible path as the decision process sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub attrs: &'a PathAttrs,
    /// Learned over iBGP.
    pub ibgp: bool,
    /// BGP identifier of the peer the route came from.
    pub peer_router_id: Ipv4Addr,
    /// Address of the peer the route came from.
    pub peer_address: IpAddr,
}

impl Candidate<'_> {
    /// §9.1.1: degree of preference.
    fn local_pref(&self) -> u32 {
        self.attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    }

    fn path_len(&self) -> usize {
        self.attrs.as_path.as_ref().map_or(0, |p| p.path_len())
    }

    fn origin(&self) -> Origin {
        self.attrs.origin.unwrap_or(Origin::Incomplete)
    }

    /// §9.1.2.2 c: a missing MED is 0.
    fn med(&self) -> u32 {
        self.attrs.med.unwrap_or(0)
    }

    /// §9.1.2.2 c: the local AS when the path is empty or starts with an AS_SET.
    fn neighbor_as(&self, local_asn: u32) -> u32 {
        neighbor_as(self.attrs.as_path.as_ref()).unwrap_or(local_asn)
    }

    /// RFC 4456 §9: ORIGINATOR_ID stands in for the BGP identifier.
    fn router_id(&self) -> Ipv4Addr {
        self.attrs.originator_id.unwrap_or(self.peer_router_id)
    }
}

/// §9.1.2: a route whose AS_PATH holds our ASN is not feasible; nor (RFC 4456 §8) an iBGP route
/// carrying our own BGP identifier as ORIGINATOR_ID.
pub fn is_loop(attrs: &PathAttrs, local_asn: u32, router_id: Ipv4Addr, ibgp: bool) -> bool {
    let as_loop = attrs
        .as_path
        .iter()
        .flat_map(|p| &p.segments)
        .any(|s| s.asns.contains(&local_asn));
    as_loop || (ibgp && attrs.originator_id == Some(router_id))
}

/// Keeps the survivors whose key is minimal.
fn keep_min<'a, K: Ord>(
    c: &[Candidate<'a>],
    s: &mut Vec<usize>,
    key: impl Fn(&Candidate<'a>) -> K,
) {
    if let Some(min) = s.iter().map(|&i| key(&c[i])).min() {
        s.retain(|&i| key(&c[i]) == min);
    }
}

/// Selects the best of `cands`: returns its index and leaves in `multipath` the indices of all
/// paths equal to it through the eBGP-over-iBGP step (§9.1.2.2 d; step e, the IGP cost to the
/// next hop, is equal for all: next hops are on-link), in input order. The best is among them.
pub fn select(
    cands: &[Candidate<'_>],
    local_asn: u32,
    multipath: &mut Vec<usize>,
) -> Option<usize> {
    multipath.clear();
    multipath.extend(0..cands.len());
    if cands.len() <= 1 {
        return multipath.first().copied();
    }
    let s = multipath;
    // RFC 9494 §4.3: a long-lived stale route loses to any route that is not.
    keep_min(cands, s, |c| {
        c.attrs.communities.contains(&Community::LLGR_STALE)
    });
    // §9.1.1: highest degree of preference.
    keep_min(cands, s, |c| std::cmp::Reverse(c.local_pref()));
    // a) shortest AS_PATH (AS_SET counts 1, confederation segments 0).
    keep_min(cands, s, Candidate::path_len);
    // b) lowest ORIGIN.
    keep_min(cands, s, Candidate::origin);
    // c) lowest MED among routes from the same neighbor AS.
    let snapshot: Vec<usize> = s.clone();
    s.retain(|&i| {
        let (nas, med) = (cands[i].neighbor_as(local_asn), cands[i].med());
        !snapshot
            .iter()
            .any(|&j| cands[j].neighbor_as(local_asn) == nas && cands[j].med() < med)
    });
    // d) eBGP-learned over iBGP-learned.
    if s.iter().any(|&i| !cands[i].ibgp) {
        s.retain(|&i| !cands[i].ibgp);
    }
    // f) lowest BGP identifier (ORIGINATOR_ID), g) shortest CLUSTER_LIST, h) lowest peer
    // address: tie-breaks that pick the best but do not narrow the multipath set.
    s.iter().copied().min_by_key(|&i| {
        let c = &cands[i];
        (c.router_id(), c.attrs.cluster_list.len(), c.peer_address)
    })
}
