//! The node numbers the wire SPIs are made of (`crypto::ipsec::spi`): each node publishes
//! one in its record (`ipsec_node_id`), unique in the mesh and stable across restarts.
//!
//! Source: `cluster_id << 16 | slot`, where `slot` is the index of the node's IPv4 PodCIDR
//! (IPv6 in a cluster without IPv4 pools) among all CIDRs the cluster's pools of that family
//! can hold, in pool order. PodCIDRs are allocated once per cluster by etcd transaction
//! (`crate::ipam`) and kept across restarts; cluster IDs are unique in the mesh
//! (`federation::config`). So: 1023 clusters, 65536 PodCIDR slots per cluster. The slot moves
//! if a pool is inserted before the node's pool or resized (appending pools keeps it); two
//! nodes that disagree then clash, which [`numbers`] refuses by name.

use std::collections::BTreeMap;

use crypto::ipsec::spi::wire_spi;
use ipnet::IpNet;

use crate::ipam::Pool;

/// Slot bits of a node number (the cluster ID above them).
pub const SLOT_BITS: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNumberError {
    #[error(
        "IPsec needs a node number from this node's PodCIDR, but mesh.pod_cidr_pools is empty; configure the cluster's pools"
    )]
    NoPools,
    #[error(
        "IPsec needs a node number from this node's {family} PodCIDR, but it has none (PodCIDRs: {cidrs:?})"
    )]
    NoPodCidr {
        family: &'static str,
        cidrs: Vec<IpNet>,
    },
    #[error(
        "IPsec needs a node number from this node's PodCIDR, but {cidr} is not a CIDR of any pool in mesh.pod_cidr_pools"
    )]
    NotFromPool { cidr: IpNet },
    #[error(
        "IPsec node number: PodCIDR {cidr} is slot {slot} of the cluster's pools, beyond the {max} slots a node number holds; use fewer, larger PodCIDRs (node_mask) or smaller pools"
    )]
    SlotTooLarge { cidr: IpNet, slot: u128, max: u32 },
    #[error("IPsec node number of cluster ID {0}: {1}")]
    TooLarge(u16, crypto::ipsec::SpiError),
}

fn bits(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

/// This node's number from its cluster ID, the cluster's pools and its PodCIDRs.
pub fn node_number(
    cluster_id: u16,
    pools: &[Pool],
    pod_cidrs: &[IpNet],
) -> Result<u32, NodeNumberError> {
    let v4 = match (pools.iter().any(|p| p.cidr().addr().is_ipv4()), pools) {
        (_, []) => return Err(NodeNumberError::NoPools),
        (v4, _) => v4,
    };
    let cidr = pod_cidrs
        .iter()
        .find(|c| c.addr().is_ipv4() == v4)
        .ok_or_else(|| NodeNumberError::NoPodCidr {
            family: if v4 { "IPv4" } else { "IPv6" },
            cidrs: pod_cidrs.to_vec(),
        })?;
    let mut offset: u128 = 0;
    for pool in pools.iter().filter(|p| p.cidr().addr().is_ipv4() == v4) {
        let (net, mask) = (pool.cidr(), pool.node_mask());
        let host_bits = u32::from(net.max_prefix_len() - mask);
        if net.contains(cidr) && cidr.prefix_len() == mask {
            let slot = offset + ((bits(cidr.network()) - bits(net.network())) >> host_bits);
            let max = 1u32 << SLOT_BITS;
            if slot >= u128::from(max) {
                return Err(NodeNumberError::SlotTooLarge {
                    cidr: *cidr,
                    slot,
                    max,
                });
            }
            let n = u32::from(cluster_id) << SLOT_BITS | slot as u32;
            return wire_spi(1, n)
                .map(|_| n)
                .map_err(|e| NodeNumberError::TooLarge(cluster_id, e));
        }
        let size = 1u128
            .checked_shl(u32::from(mask - net.prefix_len()))
            .unwrap_or(u128::MAX);
        offset = offset.saturating_add(size);
    }
    Err(NodeNumberError::NotFromPool { cidr: *cidr })
}

/// The peers' numbers as usable for SPIs, and the peers refused (with why).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Numbers {
    pub own: Option<u32>,
    pub peers: BTreeMap<String, u32>,
    pub refused: BTreeMap<String, String>,
}

/// Checks the published numbers: a peer without one (an older meshd), with one that does not
/// fit, or sharing one with this node or another peer gets no SAs (its inbound SPIs would not
/// be its own); the others are unaffected.
pub fn numbers<'a>(
    own: Option<u32>,
    peers: impl IntoIterator<Item = (&'a str, Option<u32>)>,
) -> Numbers {
    let mut out = Numbers {
        own,
        ..Numbers::default()
    };
    let mut by_number: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (name, n) in peers {
        let refuse = |why: String| (name.to_string(), why);
        let (name, why) = match (own, n) {
            (None, _) => refuse(
                "refused for IPsec: this node has no ipsec_node_id (its PodCIDR must come from mesh.pod_cidr_pools)".into(),
            ),
            (_, None) => refuse(
                "refused for IPsec: its node record has no ipsec_node_id (meshd older than per-peer SPIs?); no SAs with it until it publishes one".into(),
            ),
            (_, Some(n)) if wire_spi(1, n).is_err() => refuse(format!(
                "refused for IPsec: its ipsec_node_id {n:#x} does not fit an SPI (at most {:#x})",
                crypto::ipsec::spi::MAX_NODE
            )),
            (Some(o), Some(n)) if o == n => refuse(format!(
                "refused for IPsec: it publishes ipsec_node_id {n:#x}, this node's own; no SAs with it (the inbound SPIs would collide, RFC 4303 §2.1)"
            )),
            (_, Some(n)) => {
                by_number.entry(n).or_default().push(name);
                continue;
            }
        };
        out.refused.insert(name, why);
    }
    for (n, names) in by_number {
        if let [one] = names[..] {
            out.peers.insert(one.to_string(), n);
            continue;
        }
        for name in &names {
            let others: Vec<&str> = names.iter().copied().filter(|o| o != name).collect();
            out.refused.insert(
                name.to_string(),
                format!(
                    "refused for IPsec: it publishes ipsec_node_id {n:#x}, as {} does; no SAs with any of them until the numbers differ (their inbound SPIs would collide, RFC 4303 §2.1)",
                    others.join(", ")
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, mask: u8) -> Pool {
        Pool::new(cidr.parse().unwrap(), mask).unwrap()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn numbers_come_from_cluster_id_and_the_pod_cidr_slot() {
        let pools = [
            pool("10.244.0.0/16", 24),
            pool("fd00:10::/48", 64),
            pool("10.96.0.0/20", 26),
        ];
        let n = |id, c: &[&str]| node_number(id, &pools, &nets(c));
        assert_eq!(n(1, &["10.244.0.0/24"]), Ok(0x1_0000));
        assert_eq!(n(1, &["fd00:10::/64", "10.244.7.0/24"]), Ok(0x1_0007));
        assert_eq!(n(1023, &["10.244.255.0/24"]), Ok(1023 << 16 | 255));
        // The second IPv4 pool continues after the first's 256 slots.
        assert_eq!(n(2, &["10.96.0.64/26"]), Ok(2 << 16 | 257));
        // Every CIDR of the cluster's pools has its own number; other clusters differ.
        let mut seen = std::collections::BTreeSet::new();
        for id in [1, 2, 1023] {
            for i in 0..256u32 {
                let c = format!("10.244.{i}.0/24");
                assert!(seen.insert(n(id, &[c.as_str()]).unwrap()));
            }
        }
    }

    #[test]
    fn numbers_that_cannot_be_made_are_refused_with_the_cause() {
        let pools = [pool("10.244.0.0/16", 24)];
        assert_eq!(
            node_number(1, &[], &nets(&["10.244.0.0/24"])),
            Err(NodeNumberError::NoPools)
        );
        let e = node_number(1, &pools, &nets(&["fd00::/64"])).unwrap_err();
        assert!(
            e.to_string().contains("IPv4 PodCIDR, but it has none"),
            "{e}"
        );
        let e = node_number(1, &pools, &nets(&["10.1.0.0/24"])).unwrap_err();
        assert_eq!(
            e,
            NodeNumberError::NotFromPool {
                cidr: "10.1.0.0/24".parse().unwrap()
            }
        );
        assert!(e.to_string().contains("not a CIDR of any pool"), "{e}");
        let big = [pool("10.0.0.0/8", 28)];
        assert_eq!(
            node_number(1, &big, &nets(&["10.0.15.240/28"])),
            Ok(0x1_00ff)
        );
        let e = node_number(1, &big, &nets(&["10.16.0.0/28"])).unwrap_err();
        assert!(
            matches!(e, NodeNumberError::SlotTooLarge { slot: 65536, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("beyond the 65536 slots"), "{e}");
        // IPv6-only clusters number by the IPv6 PodCIDR.
        let v6 = [pool("fd00:10::/48", 64)];
        assert_eq!(
            node_number(3, &v6, &nets(&["fd00:10:0:2::/64"])),
            Ok(0x3_0002)
        );
    }

    #[test]
    fn missing_and_clashing_peers_are_refused_by_name_the_rest_kept() {
        let n = numbers(
            Some(0x1_0001),
            [
                ("n2", Some(0x1_0002)),
                ("n3", Some(0x1_0003)),
                ("n4", None),
                ("blue/b1", Some(0x1_0003)),
                ("n5", Some(0x1_0001)),
                ("n6", Some(u32::MAX)),
            ],
        );
        assert_eq!(n.peers, [("n2".to_string(), 0x1_0002)].into());
        let why = |p: &str| n.refused[p].clone();
        assert!(
            why("n3").contains("0x10003, as blue/b1 does"),
            "{}",
            why("n3")
        );
        assert!(why("blue/b1").contains("as n3 does"), "{}", why("blue/b1"));
        assert!(why("n4").contains("no ipsec_node_id"), "{}", why("n4"));
        assert!(why("n5").contains("this node's own"), "{}", why("n5"));
        assert!(why("n6").contains("does not fit"), "{}", why("n6"));
        let none = numbers(None, [("n2", Some(2))]);
        assert!(none.peers.is_empty());
        assert!(none.refused["n2"].contains("this node has no ipsec_node_id"));
    }
}
