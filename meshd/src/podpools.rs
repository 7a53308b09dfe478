//! Multi-pool PodCIDR IPAM on a node, sans-IO: which pools a node's pods take addresses from
//! (`mesh.pod_cidr_pools`, and the `IPPool`s of type PodCIDR, chosen by the pods' namespaces),
//! what the CNI plugin is told (`pod-cidrs.json`), and when the node needs another block of a
//! pool (the CNI asked because the blocks it has are full, or few addresses are left).
//!
//! The CNI plugin picks, for a pod of namespace `ns`, the first pool of [`PodCidrsFile::pools`]
//! whose `namespaces` lists `ns` (or is absent: every namespace), and takes one address per
//! family the pool has from the node's blocks of that pool, the first block with room first.
//! When none has room it drops a request (`pool-requests/<pool>.<ipv4|ipv6>`) and waits a
//! bounded time for meshd to add a block (see `agent/podcidrs.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::podcidrs::{FilePool, PodCidrsFile};
use ipnet::IpNet;
use resources::{IpPoolSpec, PoolType};

use crate::ipam::{Family, Pool, family};

/// The name under which the config's pools (`mesh.pod_cidr_pools`) appear; an IPPool's name
/// is a DNS name and cannot contain `_`, so it never clashes.
pub const CONFIG_POOL: &str = "mesh.pod_cidr_pools";

/// How many blocks of one pool and family a node may hold: growth stops there (a CNI that
/// leaks addresses must not drain the cluster's pools).
pub const MAX_BLOCKS_PER_POOL: usize = 64;

/// A pool as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPool {
    pub name: String,
    pub pools: Vec<Pool>,
    /// The namespaces whose pods use this pool; `None`: every namespace (that no pool listed
    /// before it takes).
    pub namespaces: Option<BTreeSet<String>>,
}

impl PodPool {
    pub fn families(&self) -> Vec<Family> {
        let mut f: Vec<Family> = self.pools.iter().map(Pool::family).collect();
        f.sort();
        f.dedup();
        f
    }

    /// Whether `block` was carved from this pool.
    pub fn holds(&self, block: &IpNet) -> bool {
        self.pools.iter().any(|p| p.cidr().contains(block))
    }

    /// The pools of one family (what a block of that family is carved from).
    pub fn of(&self, fam: Family) -> Vec<Pool> {
        self.pools
            .iter()
            .filter(|p| p.family() == fam)
            .copied()
            .collect()
    }

    /// The node's blocks of this pool and family, in the node's order.
    pub fn blocks(&self, fam: Family, node_blocks: &[IpNet]) -> Vec<IpNet> {
        node_blocks
            .iter()
            .filter(|b| family(b) == fam && self.holds(b))
            .copied()
            .collect()
    }
}

/// The node's pools in the order the CNI tries them: IPPools with a namespace selector (by
/// name), then the config's pools, then IPPools without a selector (by name). Disabled IPPools
/// give no new addresses (the blocks nodes have stay in the node records). `namespaces`:
/// the Namespace objects' labels (each namespace also carries
/// `kubernetes.io/metadata.name`, as in Kubernetes).
pub fn resolve(
    config: &[Pool],
    ippools: &[(String, IpPoolSpec)],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<PodPool> {
    let mut selecting = Vec::new();
    let mut open = Vec::new();
    let mut sorted: Vec<&(String, IpPoolSpec)> = ippools
        .iter()
        .filter(|(_, p)| p.type_ == PoolType::PodCidr && !p.disabled)
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, spec) in sorted {
        let masks = spec.masks();
        let pools: Vec<Pool> = spec
            .cidrs
            .iter()
            .filter_map(|c| Pool::new(*c, masks.for_net(c)).ok())
            .collect();
        match &spec.namespace_selector {
            Some(sel) => {
                let names: BTreeSet<String> = namespaces
                    .iter()
                    .filter(|(ns, labels)| {
                        sel.matches(|k| match k {
                            "kubernetes.io/metadata.name" => Some(ns.as_str()),
                            k => labels.get(k).map(String::as_str),
                        })
                    })
                    .map(|(ns, _)| ns.clone())
                    .collect();
                selecting.push(PodPool {
                    name: name.clone(),
                    pools,
                    namespaces: Some(names),
                });
            }
            None => open.push(PodPool {
                name: name.clone(),
                pools,
                namespaces: None,
            }),
        }
    }
    let mut out = selecting;
    if !config.is_empty() {
        out.push(PodPool {
            name: CONFIG_POOL.into(),
            pools: config.to_vec(),
            namespaces: None,
        });
    }
    out.extend(open);
    out
}

pub fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

pub fn parse_family(s: &str) -> Option<Family> {
    match s {
        "ipv4" => Some(Family::V4),
        "ipv6" => Some(Family::V6),
        _ => None,
    }
}

pub fn cni_file(pools: &[PodPool], node_blocks: &[IpNet]) -> PodCidrsFile {
    PodCidrsFile {
        pod_cidrs: node_blocks.to_vec(),
        pools: pools
            .iter()
            .map(|p| FilePool {
                name: p.name.clone(),
                namespaces: p.namespaces.as_ref().map(|n| n.iter().cloned().collect()),
                families: p
                    .families()
                    .into_iter()
                    .map(|f| family_name(f).to_string())
                    .collect(),
                cidrs: node_blocks.iter().filter(|b| p.holds(b)).copied().collect(),
            })
            .collect(),
    }
}

/// How many pod addresses a block has: all but the network address and the gateway (and
/// IPv4's broadcast), as the CNI hands them out.
pub fn capacity(block: &IpNet) -> u128 {
    let bits = u32::from(block.max_prefix_len() - block.prefix_len());
    let n = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    let reserved = match block {
        IpNet::V4(_) => 3,
        IpNet::V6(_) => 2,
    };
    n.saturating_sub(reserved)
}

/// Free pod addresses in `blocks` given the addresses in use.
pub fn free(blocks: &[IpNet], used: &BTreeSet<IpAddr>) -> u128 {
    blocks
        .iter()
        .map(|b| {
            let u = used.iter().filter(|a| b.contains(*a)).count() as u128;
            capacity(b).saturating_sub(u)
        })
        .fold(0, u128::saturating_add)
}

/// Why a pool grows on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The CNI found no room (or no block) for a pod and asked.
    Requested,
    /// Few addresses left: grown ahead so pods do not wait.
    LowWater { free: u128 },
}

/// One block to add: the pool (index into the resolved pools) and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grow {
    pub pool: usize,
    pub family: Family,
    pub why: Why,
}

/// What a request names: a pool and a family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub pool: String,
    pub family: Family,
}

/// The request file's name for a pool and family.
pub fn request_name(pool: &str, fam: Family) -> String {
    common::podcidrs::request_name(pool, family_name(fam))
}

/// Parses a request file's name (`<pool>.<ipv4|ipv6>`).
pub fn parse_request(name: &str) -> Option<Request> {
    let (pool, fam) = name.rsplit_once('.')?;
    Some(Request {
        pool: pool.to_string(),
        family: parse_family(fam)?,
    })
}

/// The blocks to add now, at most one per pool and family: a requested pool/family with no
/// free address, or one whose free addresses fell to an eighth of its last block (at least
/// one). Never past [`MAX_BLOCKS_PER_POOL`]. A request for a pool or family this node does
/// not know is dropped by the caller with the reason [`refuse`] gives.
pub fn to_grow(
    pools: &[PodPool],
    node_blocks: &[IpNet],
    used: &BTreeSet<IpAddr>,
    requests: &[Request],
) -> Vec<Grow> {
    let mut out = Vec::new();
    for (i, p) in pools.iter().enumerate() {
        for fam in p.families() {
            let blocks = p.blocks(fam, node_blocks);
            if blocks.len() >= MAX_BLOCKS_PER_POOL {
                continue;
            }
            let left = free(&blocks, used);
            let asked = requests.iter().any(|r| r.pool == p.name && r.family == fam);
            let why = if asked && left == 0 {
                Some(Why::Requested)
            } else {
                blocks.last().and_then(|last| {
                    let low = (capacity(last) / 8).max(1);
                    (left <= low && left < capacity(last)).then_some(Why::LowWater { free: left })
                })
            };
            if let Some(why) = why {
                out.push(Grow {
                    pool: i,
                    family: fam,
                    why,
                });
            }
        }
    }
    out
}

/// The block to give back now, if any (at most one per call): a block that is not the node's
/// first of its pool and family, empty since at least `after` (`empty_since`: when each block
/// was last seen empty, kept by the caller), and whose pool would still have more than its
/// low water free without it (so it is not grown again at once).
pub fn to_release(
    pools: &[PodPool],
    node_blocks: &[IpNet],
    used: &BTreeSet<IpAddr>,
    empty_since: &BTreeMap<IpNet, std::time::Instant>,
    now: std::time::Instant,
    after: std::time::Duration,
) -> Option<IpNet> {
    for p in pools {
        for fam in p.families() {
            let blocks = p.blocks(fam, node_blocks);
            for b in blocks.iter().skip(1) {
                let empty = !used.iter().any(|a| b.contains(a));
                let long = empty_since
                    .get(b)
                    .is_some_and(|t| now.saturating_duration_since(*t) >= after);
                if !(empty && long) {
                    continue;
                }
                let rest: Vec<IpNet> = blocks.iter().filter(|x| *x != b).copied().collect();
                let low = rest.last().map(|l| (capacity(l) / 8).max(1)).unwrap_or(1);
                if free(&rest, used) > low {
                    return Some(*b);
                }
            }
        }
    }
    None
}

/// Why a request cannot be served, if it cannot (unknown pool or family, or the node at its
/// block limit for the pool).
pub fn refuse(pools: &[PodPool], node_blocks: &[IpNet], r: &Request) -> Option<String> {
    let Some(p) = pools.iter().find(|p| p.name == r.pool) else {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        return Some(format!(
            "no PodCIDR pool {:?} on this node (pools: {})",
            r.pool,
            names.join(", ")
        ));
    };
    if !p.families().contains(&r.family) {
        return Some(format!("pool {:?} has no {} CIDR", r.pool, r.family));
    }
    let n = p.blocks(r.family, node_blocks).len();
    (n >= MAX_BLOCKS_PER_POOL).then(|| {
        format!(
            "this node holds {n} {} blocks of pool {:?}, the most one node may (MAX_BLOCKS_PER_POOL); free addresses by deleting pods",
            r.family, r.pool
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use resources::{LabelSelector, NodeMaskSize};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tenant_pool(selector: Option<LabelSelector>, disabled: bool) -> IpPoolSpec {
        IpPoolSpec {
            type_: PoolType::PodCidr,
            cidrs: vec![net("10.9.0.0/24"), net("fd00:9::/112")],
            namespace_selector: selector,
            disabled,
            node_mask_size: Some(NodeMaskSize {
                ipv4: 29,
                ipv6: 120,
            }),
            ..Default::default()
        }
    }

    fn selector(k: &str, v: &str) -> LabelSelector {
        LabelSelector {
            match_labels: [(k.to_string(), v.to_string())].into(),
            ..Default::default()
        }
    }

    fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
        [
            ("team-a", vec![("tier", "tenant")]),
            ("team-b", vec![("tier", "tenant")]),
            ("default", vec![]),
        ]
        .into_iter()
        .map(|(n, l)| {
            (
                n.to_string(),
                l.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect()
    }

    fn config() -> Vec<Pool> {
        vec![Pool::new(net("10.1.0.0/16"), 24).unwrap()]
    }

    /// The tenants pool (namespaces labelled tier=tenant) and the config's pool.
    fn tenants_then_config() -> Vec<PodPool> {
        resolve(
            &config(),
            &[(
                "tenants".into(),
                tenant_pool(Some(selector("tier", "tenant")), false),
            )],
            &namespaces(),
        )
    }

    #[test]
    fn selecting_pools_come_first_then_the_config_then_open_ippools_and_disabled_ones_never() {
        let ippools = vec![
            ("zz-open".to_string(), {
                let mut p = tenant_pool(None, false);
                p.cidrs = vec![net("10.20.0.0/24")];
                p
            }),
            (
                "tenants".to_string(),
                tenant_pool(Some(selector("tier", "tenant")), false),
            ),
            ("off".to_string(), {
                let mut p = tenant_pool(Some(selector("tier", "tenant")), true);
                p.cidrs = vec![net("10.30.0.0/24")];
                p
            }),
            ("by-name".to_string(), {
                let mut p = tenant_pool(
                    Some(selector("kubernetes.io/metadata.name", "default")),
                    false,
                );
                p.cidrs = vec![net("10.40.0.0/24")];
                p
            }),
            ("lb".to_string(), {
                let mut p = tenant_pool(None, false);
                p.type_ = PoolType::LoadBalancer;
                p.cidrs = vec![net("203.0.113.0/28")];
                p
            }),
        ];
        let pools = resolve(&config(), &ippools, &namespaces());
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["by-name", "tenants", CONFIG_POOL, "zz-open"]);
        assert_eq!(
            pools[1].namespaces,
            Some(["team-a".to_string(), "team-b".to_string()].into())
        );
        assert_eq!(pools[0].namespaces, Some(["default".to_string()].into()));
        assert_eq!(pools[1].families(), vec![Family::V4, Family::V6]);
        assert_eq!(pools[1].pools[0].node_mask(), 29);
        assert_eq!(pools[1].pools[1].node_mask(), 120);
    }

    #[test]
    fn the_cni_file_lists_each_pools_blocks_and_families_even_without_a_block() {
        let pools = tenants_then_config();
        let blocks = vec![net("10.1.3.0/24"), net("10.9.0.8/29")];
        let f = cni_file(&pools, &blocks);
        assert_eq!(f.pod_cidrs, blocks);
        assert_eq!(f.pools[0].name, "tenants");
        assert_eq!(f.pools[0].cidrs, vec![net("10.9.0.8/29")]);
        assert_eq!(f.pools[0].families, vec!["ipv4", "ipv6"]);
        assert_eq!(
            f.pools[0].namespaces.as_deref(),
            Some(&["team-a".to_string(), "team-b".to_string()][..])
        );
        assert_eq!(f.pools[1].name, CONFIG_POOL);
        assert_eq!(f.pools[1].cidrs, vec![net("10.1.3.0/24")]);
        assert_eq!(f.pools[1].namespaces, None);
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.starts_with(r#"{"podCIDRs":["10.1.3.0/24","10.9.0.8/29"],"pools":[{"name":"tenants","namespaces":["team-a","team-b"],"families":["ipv4","ipv6"]"#), "{json}");
    }

    #[test]
    fn capacity_skips_network_gateway_and_broadcast() {
        assert_eq!(capacity(&net("10.9.0.8/29")), 5);
        assert_eq!(capacity(&net("10.1.0.0/24")), 253);
        assert_eq!(capacity(&net("fd00::/120")), 254);
        assert_eq!(capacity(&net("10.0.0.0/30")), 1);
    }

    #[test]
    fn a_pool_grows_when_asked_with_no_room_or_when_an_eighth_is_left() {
        let pools = tenants_then_config();
        let blocks = vec![net("10.1.3.0/24"), net("10.9.0.8/29")];
        let req = |p: &str, f| Request {
            pool: p.into(),
            family: f,
        };
        // Nothing used: nothing to do, even when asked (a DEL freed an address meanwhile).
        let none = BTreeSet::new();
        assert_eq!(
            to_grow(&pools, &blocks, &none, &[req("tenants", Family::V4)]),
            vec![]
        );
        // The /29 has 5 pod addresses; with 4 used one is left: low water (an eighth, at least 1).
        let used: BTreeSet<IpAddr> = (10..14).map(|i| ip(&format!("10.9.0.{i}"))).collect();
        assert_eq!(
            to_grow(&pools, &blocks, &used, &[]),
            vec![Grow {
                pool: 0,
                family: Family::V4,
                why: Why::LowWater { free: 1 }
            }]
        );
        // Full and asked: requested. Asked for IPv6, where the node has no block yet: requested.
        let full: BTreeSet<IpAddr> = (10..15).map(|i| ip(&format!("10.9.0.{i}"))).collect();
        let got = to_grow(
            &pools,
            &blocks,
            &full,
            &[req("tenants", Family::V4), req("tenants", Family::V6)],
        );
        assert_eq!(
            got.iter()
                .map(|g| (g.family, g.why.clone()))
                .collect::<Vec<_>>(),
            vec![(Family::V4, Why::Requested), (Family::V6, Why::Requested)]
        );
        // The config pool's /24 with 2 used: nothing.
        let some: BTreeSet<IpAddr> = [ip("10.1.3.2"), ip("10.1.3.3")].into();
        assert_eq!(to_grow(&pools, &blocks, &some, &[]), vec![]);
    }

    #[test]
    fn an_extra_block_empty_long_enough_goes_back_but_never_the_first_or_one_still_needed() {
        use std::time::{Duration, Instant};
        let pools = tenants_then_config();
        let a = net("10.9.0.8/29");
        let b = net("10.9.0.16/29");
        let blocks = vec![net("10.1.3.0/24"), a, b];
        let t0 = Instant::now();
        let after = Duration::from_secs(600);
        let since: BTreeMap<IpNet, Instant> = [(a, t0), (b, t0)].into();
        let later = t0 + after;
        // Both empty: the first block of the pool stays, the second goes.
        let none = BTreeSet::new();
        assert_eq!(
            to_release(&pools, &blocks, &none, &since, later, after),
            Some(b)
        );
        // Not empty long enough yet.
        assert_eq!(
            to_release(
                &pools,
                &blocks,
                &none,
                &since,
                t0 + Duration::from_secs(599),
                after
            ),
            None
        );
        // The second block is empty but the first is full: without it the pool would be at
        // its low water and grow again, so it stays.
        let full_a: BTreeSet<IpAddr> = (10..15).map(|i| ip(&format!("10.9.0.{i}"))).collect();
        assert_eq!(
            to_release(&pools, &blocks, &full_a, &since, later, after),
            None
        );
        // A pod in the second block keeps it.
        let in_b: BTreeSet<IpAddr> = [ip("10.9.0.18")].into();
        assert_eq!(
            to_release(&pools, &blocks, &in_b, &since, later, after),
            None
        );
        // The node's only config block never goes.
        let only: Vec<IpNet> = vec![net("10.1.3.0/24")];
        let s2: BTreeMap<IpNet, Instant> = [(only[0], t0)].into();
        assert_eq!(to_release(&pools, &only, &none, &s2, later, after), None);
    }

    #[test]
    fn growth_stops_at_the_per_node_limit_and_unknown_requests_are_refused_with_why() {
        let pools = resolve(&config(), &[], &namespaces());
        let blocks: Vec<IpNet> = (0..MAX_BLOCKS_PER_POOL)
            .map(|i| net(&format!("10.1.{i}.0/24")))
            .collect();
        let used: BTreeSet<IpAddr> = blocks
            .iter()
            .flat_map(|b| b.hosts().skip(1).take(253))
            .collect();
        let r = Request {
            pool: CONFIG_POOL.into(),
            family: Family::V4,
        };
        assert_eq!(
            to_grow(&pools, &blocks, &used, std::slice::from_ref(&r)),
            vec![]
        );
        assert!(
            refuse(&pools, &blocks, &r)
                .unwrap()
                .contains("the most one node may")
        );
        let r6 = Request {
            pool: CONFIG_POOL.into(),
            family: Family::V6,
        };
        assert!(
            refuse(&pools, &blocks, &r6)
                .unwrap()
                .contains("has no IPv6 CIDR")
        );
        let other = Request {
            pool: "nope".into(),
            family: Family::V4,
        };
        assert!(
            refuse(&pools, &blocks, &other)
                .unwrap()
                .contains(r#"no PodCIDR pool "nope" on this node (pools: mesh.pod_cidr_pools)"#)
        );
        assert_eq!(parse_request("mesh.pod_cidr_pools.ipv4"), Some(r.clone()));
        assert_eq!(parse_request("tenants.ipv7"), None);
        assert_eq!(request_name("tenants", Family::V6), "tenants.ipv6");
    }
}
