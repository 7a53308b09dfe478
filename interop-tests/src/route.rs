//! A BGP route as a peer reports it, the same shape for BIRD, FRR and GoBGP.

use std::net::IpAddr;

use ipnet::IpNet;

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// One path for one prefix, with the attributes the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpRoute {
    pub prefix: IpNet,
    pub next_hop: Option<IpAddr>,
    pub as_path: Vec<u32>,
    pub origin: Option<Origin>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// RFC 1997 communities as (ASN, value).
    pub communities: Vec<(u16, u16)>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl BgpRoute {
    pub fn new(prefix: IpNet) -> BgpRoute {
        BgpRoute {
            prefix,
            next_hop: None,
            as_path: Vec::new(),
            origin: None,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// Finds the route for `prefix` (CIDR text) in a list.
pub fn find<'a>(routes: &'a [BgpRoute], prefix: &str) -> Option<&'a BgpRoute> {
    let p: IpNet = prefix.parse().ok()?;
    routes.iter().find(|r| r.prefix == p)
}

/// Parses "65000:100" or a well-known community name as peers print them (RFC 1997, 8326, 9494).
pub(crate) fn parse_community(s: &str) -> Option<(u16, u16)> {
    let well_known = match s {
        "graceful-shutdown" => Some(0),
        "accept-own" => Some(1),
        "llgr-stale" => Some(6),
        "no-llgr" => Some(7),
        "blackhole" => Some(666),
        "no-export" => Some(0xFF01),
        "no-advertise" => Some(0xFF02),
        "local-AS" | "no-export-subconfed" => Some(0xFF03),
        "no-peer" => Some(0xFF04),
        _ => None,
    };
    if let Some(v) = well_known {
        return Some((0xFFFF, v));
    }
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub(crate) fn parse_large(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(':').map(|x| x.trim().parse::<u32>());
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_parse_numbers_and_names() {
        assert_eq!(parse_community("65000:100"), Some((65000, 100)));
        assert_eq!(parse_community("graceful-shutdown"), Some((65535, 0)));
        assert_eq!(parse_community("no-export"), Some((65535, 65281)));
        assert_eq!(parse_community("70000:1"), None);
        assert_eq!(parse_large("65000:1:2"), Some((65000, 1, 2)));
        assert_eq!(parse_large("65000:1"), None);
    }
}
