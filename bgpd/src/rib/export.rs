//! What we send a peer for a Loc-RIB best route (RFC 4271 §5.1, §9.1.3; RFC 1997; RFC 2545;
//! RFC 8950), before and after its export policy.

use std::net::IpAddr;

use ipnet::IpNet;

use super::decision::DEFAULT_LOCAL_PREF;
use super::{PeerInfo, RouteAttrs, SessionInfo};
use crate::policy::{self, Outcome, Route};
use crate::wire::{AsPath, Community, MpNextHop};

/// Where a best route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Originated,
    Peer { id: super::PeerId, ibgp: bool },
}

impl Source {
    /// Part of the export memo key.
    pub fn kind(self) -> u8 {
        match self {
            Source::Originated => 0,
            Source::Peer { ibgp: false, .. } => 1,
            Source::Peer { ibgp: true, .. } => 2,
        }
    }
}

/// Our next hop on this session for a family: the session's local address; for IPv6 the global
/// address plus the link-local one when known (RFC 2545 §3); for IPv4 over an IPv6-only session
/// the IPv6 addresses when RFC 8950 was negotiated.
pub(crate) fn self_next_hop(s: &SessionInfo, v6: bool) -> Option<MpNextHop> {
    let ipv6 = || {
        let global = s.local_v6.or(s.local_v6_link_local)?;
        let link_local = s.local_v6.and(s.local_v6_link_local);
        Some(MpNextHop::Ipv6 { global, link_local })
    };
    if v6 {
        return ipv6();
    }
    match s.local_v4 {
        Some(a) => Some(MpNextHop::Ipv4(a)),
        None if s.ipv4_over_ipv6_next_hop => ipv6(),
        None => None,
    }
}

/// Whether a kept next hop can be sent for this family on this session.
fn next_hop_fits(nh: &MpNextHop, s: &SessionInfo, v6: bool) -> bool {
    match nh {
        MpNextHop::Ipv4(_) => !v6,
        MpNextHop::Ipv6 { .. } => v6 || s.ipv4_over_ipv6_next_hop,
    }
}

/// The attributes to advertise `best` with to `peer`, or `None` when it must not be advertised.
pub(crate) fn export(
    local_asn: u32,
    peer: &PeerInfo,
    session: &SessionInfo,
    prefix: IpNet,
    best: &RouteAttrs,
    source: Source,
) -> Option<RouteAttrs> {
    let v6 = matches!(prefix, IpNet::V6(_));
    let originated = source == Source::Originated;
    match source {
        // Never back to where it came from.
        Source::Peer { id, .. } if id == peer.id => return None,
        // §9.1.3 (no route reflection): iBGP-learned routes are not sent to iBGP peers.
        Source::Peer { ibgp: true, .. } if peer.ibgp => return None,
        _ => {}
    }
    // RFC 1997 well-known communities.
    let c = &best.attrs.communities;
    if c.contains(&Community::NO_ADVERTISE) {
        return None;
    }
    // RFC 9494 §4.5: long-lived stale routes only to peers that know what they are.
    if c.contains(&Community::LLGR_STALE) && !session.long_lived_gr {
        return None;
    }
    if !peer.ibgp
        && (c.contains(&Community::NO_EXPORT) || c.contains(&Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let (attrs, med_set) = match peer.export.apply(&Route {
        prefix,
        attrs: &best.attrs,
        originated,
        local_asn,
    }) {
        Outcome::Reject => return None,
        Outcome::Accept { attrs, med_set } => (attrs, med_set),
    };
    let mut a = attrs.into_owned();
    a.next_hop = None;
    let next_hop = if peer.ibgp {
        // §5.1.5: LOCAL_PREF to internal peers.
        a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        match best.next_hop {
            Some(nh) if !peer.next_hop_self && next_hop_fits(&nh, session, v6) => nh,
            _ => self_next_hop(session, v6)?,
        }
    } else {
        // §5.1.2: prepend our AS (4-octet; the codec writes AS_TRANS and AS4_PATH on 2-octet
        // sessions); RFC 5065 §5.3: confederation segments do not leave the confederation.
        let mut path = a.as_path.take().unwrap_or_default();
        path.segments.retain(|s| !s.kind.is_confed());
        a.as_path = Some(path);
        policy::prepend(&mut a.as_path, local_asn, 1);
        // §5.1.5: no LOCAL_PREF to external peers; §5.1.4: MED only if ours (or set by policy).
        a.local_pref = None;
        if !(originated || med_set) {
            a.med = None;
        }
        // RFC 4456 §8: reflection attributes stay inside the AS.
        a.originator_id = None;
        a.cluster_list.clear();
        self_next_hop(session, v6)?
    };
    if a.as_path.is_none() {
        a.as_path = Some(AsPath::default());
    }
    Some(RouteAttrs {
        attrs: a,
        next_hop: Some(next_hop),
    })
}

impl RouteAttrs {
    /// The address a kernel route would use: the IPv4 next hop, or the IPv6 global one (the
    /// link-local one when no global one was sent).
    pub fn fib_next_hop(&self) -> Option<IpAddr> {
        match self.next_hop? {
            MpNextHop::Ipv4(a) => Some(IpAddr::V4(a)),
            MpNextHop::Ipv6 { global, link_local } => match link_local {
                Some(ll) if global.is_unspecified() => Some(IpAddr::V6(ll)),
                _ => Some(IpAddr::V6(global)),
            },
        }
    }
}
