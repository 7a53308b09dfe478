//! A deterministic, Internet-like routing table for benchmarks (`rib_ingest`, `bgp_ingest`):
//! prefix lengths as in a real full table, ~2–8 ASN paths (some 4-octet), communities, MEDs,
//! large communities, and a skewed sharing of attribute sets. Same seed, same table.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::wire::{AsPath, Community, LargeCommunity, Origin, PathAttrs};

/// splitmix64: deterministic, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `n` distinct values of `next` that `keep` accepts, in the order drawn.
fn distinct<P: Copy + Eq + Hash>(
    n: usize,
    keep: impl Fn(&P) -> bool,
    mut next: impl FnMut() -> P,
) -> Vec<P> {
    let mut seen = HashSet::with_capacity(n);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let p = next();
        if keep(&p) && seen.insert(p) {
            v.push(p);
        }
    }
    v
}

/// `n` distinct IPv4 prefixes (/16–/24, mostly /24) that `keep` accepts.
pub fn v4_prefixes(rng: &mut Rng, n: usize, keep: impl Fn(&Ipv4Net) -> bool) -> Vec<Ipv4Net> {
    distinct(n, keep, || {
        let len = match rng.below(100) {
            0..60 => 24,
            60..70 => 23,
            70..80 => 22,
            80..88 => 21,
            88..94 => 20,
            94..98 => 19,
            _ => 16,
        };
        let addr = Ipv4Addr::from((1 + rng.below(222) as u32) << 24 | rng.below(1 << 24) as u32);
        Ipv4Net::new(addr, len).unwrap().trunc()
    })
}

/// `n` distinct IPv6 prefixes in 2000::/4 (/32–/48, mostly /48) that `keep` accepts.
pub fn v6_prefixes(rng: &mut Rng, n: usize, keep: impl Fn(&Ipv6Net) -> bool) -> Vec<Ipv6Net> {
    distinct(n, keep, || {
        let len = match rng.below(100) {
            0..55 => 48,
            55..70 => 32,
            70..80 => 44,
            80..90 => 40,
            _ => 36,
        };
        let hi = (0x2000u128 | rng.below(0x1000) as u128) << 112;
        let addr = Ipv6Addr::from(hi | (rng.next_u64() as u128) << 48);
        Ipv6Net::new(addr, len).unwrap().trunc()
    })
}

/// `n` attribute sets as a peer in `feed_asn` sends them: paths of 2–8 ASNs starting with
/// `feed_asn` (the others in 1..64000 or 200000..400000), 0–4 communities, some MEDs and large
/// communities.
pub fn attr_sets(rng: &mut Rng, n: usize, feed_asn: u32) -> Vec<PathAttrs> {
    (0..n)
        .map(|_| {
            let len = 2 + rng.below(7) as usize;
            let mut path = vec![feed_asn];
            for _ in 1..len {
                let asn = if rng.chance(20) {
                    200_000 + rng.below(200_000) as u32
                } else {
                    1 + rng.below(64_000) as u32
                };
                path.push(asn);
            }
            let communities = (0..rng.below(5))
                .map(|_| Community::new(feed_asn as u16, rng.below(200) as u16))
                .collect();
            let large_communities = if rng.chance(10) {
                vec![LargeCommunity {
                    global_admin: feed_asn,
                    local_data1: rng.below(10) as u32,
                    local_data2: rng.below(100) as u32,
                }]
            } else {
                Vec::new()
            };
            PathAttrs {
                origin: Some(if rng.chance(90) {
                    Origin::Igp
                } else {
                    Origin::Incomplete
                }),
                as_path: Some(AsPath::from_sequence(path)),
                med: rng.chance(30).then(|| rng.below(1000) as u32),
                communities,
                large_communities,
                ..PathAttrs::default()
            }
        })
        .collect()
}

/// Which of `n` attribute sets a prefix gets, skewed: a few sets carry many prefixes, most
/// carry few.
pub fn pick_set(rng: &mut Rng, n: usize) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((u * u) * n as f64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same seed, same table; the prefixes are distinct and `keep` is honoured.
    #[test]
    fn deterministic_distinct_and_filtered() {
        let gen4 = |seed| v4_prefixes(&mut Rng(seed), 2000, |p| p.addr().octets()[0] != 10);
        let a = gen4(7);
        assert_eq!(a, gen4(7));
        assert_ne!(a, gen4(8));
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 2000);
        assert!(a.iter().all(|p| p.addr().octets()[0] != 10));
        let v6 = v6_prefixes(&mut Rng(7), 500, |_| true);
        assert!(v6.iter().all(|p| (32..=48).contains(&p.prefix_len())));
        let sets = attr_sets(&mut Rng(7), 100, 65010);
        assert!(sets.iter().all(|s| {
            let path = s.as_path.as_ref().unwrap();
            path.segments[0].asns[0] == 65010 && (2..=8).contains(&path.path_len())
        }));
        let mut rng = Rng(7);
        assert!((0..1000).all(|_| pick_set(&mut rng, 50) < 50));
    }
}
