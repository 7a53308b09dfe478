//! What an OPEN exchange settles: hold time (RFC 4271 §4.2, §10), 4-octet ASN (RFC 6793),
//! address families (RFC 4760), route refresh (RFC 2918, 7313), extended next hop (RFC 8950),
//! extended messages (RFC 8654) and the peer's graceful restart capability (RFC 4724).

use std::net::Ipv4Addr;

use crate::wire::{
    AS_TRANS, Afi, Capability, Context, ExtNextHopEntry, GracefulRestart, OpenMsg, Safi,
};

/// The result of a successful OPEN exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// min(ours, theirs); 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    /// hold_time / 3 unless configured lower; 0 when hold_time is 0.
    pub keepalive: u16,
    /// AFI/SAFIs both sides announced (IPv4 unicast implied when neither sent MP, RFC 4760 §8).
    pub families: Vec<(Afi, Safi)>,
    pub four_octet_as: bool,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    pub extended_message: bool,
    /// RFC 8950 entries both sides announced (NLRI AFI/SAFI carried with an IPv6 next hop).
    pub extended_next_hop: Vec<ExtNextHopEntry>,
    /// The peer's GR capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both OPENs as exchanged (BMP Peer Up, RFC 7854 §4.10).
    pub sent_open: OpenMsg,
    pub received_open: OpenMsg,
}

impl Negotiated {
    /// RFC 9494: when both sides sent the LLGR capability, the time the peer's routes may be
    /// kept long-lived stale: the smaller of the two largest per-family stale times.
    pub fn long_lived_stale_time(&self) -> Option<u32> {
        let max = |o: &OpenMsg| {
            o.capabilities.iter().find_map(|c| match c {
                Capability::LongLivedGracefulRestart(f) => {
                    Some(f.iter().map(|f| f.stale_time).max().unwrap_or(0))
                }
                _ => None,
            })
        };
        let (ours, theirs) = (max(&self.sent_open)?, max(&self.received_open)?);
        Some(ours.min(theirs)).filter(|&t| t > 0)
    }

    /// RFC 8538 §2: both sides sent the N bit in their graceful restart capability: a
    /// NOTIFICATION other than Hard Reset then ends the session gracefully (routes retained).
    pub fn graceful_notification(&self) -> bool {
        let n = |o: &OpenMsg| {
            o.capabilities
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart(gr) if gr.notification))
        };
        n(&self.sent_open) && n(&self.received_open)
    }

    /// The codec context for this session.
    pub fn context(&self) -> Context {
        Context {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
        }
    }

    pub fn has_family(&self, afi: Afi, safi: Safi) -> bool {
        self.families.contains(&(afi, safi))
    }
}

/// The OPEN we send (RFC 4271 §4.2, RFC 6793 §3: AS_TRANS when our ASN needs 4 octets).
pub fn build_open(
    local_asn: u32,
    hold_time: u16,
    router_id: Ipv4Addr,
    caps: &[Capability],
) -> OpenMsg {
    let mut capabilities = caps.to_vec();
    if !capabilities
        .iter()
        .any(|c| matches!(c, Capability::FourOctetAs(_)))
    {
        capabilities.push(Capability::FourOctetAs(local_asn));
    }
    OpenMsg {
        my_as: u16::try_from(local_asn).unwrap_or(AS_TRANS),
        hold_time,
        bgp_id: router_id,
        capabilities,
    }
}

fn families(caps: &[Capability]) -> Vec<(Afi, Safi)> {
    let mp: Vec<_> = caps
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
            _ => None,
        })
        .collect();
    if mp.is_empty() {
        vec![(Afi::IPV4, Safi::UNICAST)]
    } else {
        mp
    }
}

/// Combines our capabilities with the peer's OPEN.
pub fn negotiate(ours: &OpenMsg, keepalive_cfg: Option<u16>, theirs: &OpenMsg) -> Negotiated {
    let has = |caps: &[Capability], f: &dyn Fn(&Capability) -> bool| caps.iter().any(f);
    let both = |f: &dyn Fn(&Capability) -> bool| {
        has(&ours.capabilities, f) && has(&theirs.capabilities, f)
    };
    let hold_time = ours.hold_time.min(theirs.hold_time);
    let keepalive = match (hold_time, keepalive_cfg) {
        (0, _) => 0,
        (h, Some(k)) if k > 0 => k.min(h / 3).max(1),
        (h, _) => (h / 3).max(1),
    };
    let their_families = families(&theirs.capabilities);
    let fams = families(&ours.capabilities)
        .into_iter()
        .filter(|f| their_families.contains(f))
        .collect();
    let ext_nh = |caps: &[Capability]| -> Vec<ExtNextHopEntry> {
        caps.iter()
            .flat_map(|c| match c {
                Capability::ExtendedNextHop(v) => v.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    let their_enh = ext_nh(&theirs.capabilities);
    Negotiated {
        peer_asn: theirs.asn(),
        peer_router_id: theirs.bgp_id,
        hold_time,
        keepalive,
        families: fams,
        four_octet_as: both(&|c| matches!(c, Capability::FourOctetAs(_))),
        route_refresh: both(&|c| matches!(c, Capability::RouteRefresh)),
        enhanced_route_refresh: both(&|c| matches!(c, Capability::EnhancedRouteRefresh)),
        extended_message: both(&|c| matches!(c, Capability::ExtendedMessage)),
        extended_next_hop: ext_nh(&ours.capabilities)
            .into_iter()
            .filter(|e| their_enh.contains(e))
            .collect(),
        peer_graceful_restart: theirs.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr.clone()),
            _ => None,
        }),
        sent_open: ours.clone(),
        received_open: theirs.clone(),
    }
}
