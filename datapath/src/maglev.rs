//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4): each backend gets a
//! permutation of the table's slots from two hashes of its name, and the
//! backends take turns claiming their next preferred free slot.
//!
//! The table is computed here and written to the `maglev` map whole; the
//! datapath indexes it with a hash of the flow's 5-tuple. Backend names are
//! their address and port, and the hashes are fixed functions (not std's
//! unspecified `DefaultHasher`), so every node computes the same table for
//! the same backend set and a flow reaching any node picks the same backend.

use std::net::IpAddr;

use crate::lb::MAGLEV_TABLE_SIZE;

/// A backend as Maglev sees it: its stable name and the id stored in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    pub id: u32,
    pub ip: IpAddr,
    pub port: u16,
}

impl MaglevBackend {
    /// The name the permutation is derived from: IPv6 (IPv4-mapped) octets + port.
    fn name(&self) -> [u8; 18] {
        let v6 = match self.ip {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        let mut n = [0u8; 18];
        n[..16].copy_from_slice(&v6.octets());
        n[16..].copy_from_slice(&self.port.to_be_bytes());
        n
    }
}

/// FNV-1a 64 seeded through its initial state, finished with the
/// SplitMix64 mixer so nearby names land far apart.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const SEED_OFFSET: u64 = 0x6f66_6673_6574; // "offset"
const SEED_SKIP: u64 = 0x0000_736b_6970; // "skip"

/// The lookup table (backend id per slot) of `size` slots (`size` must be
/// prime for every skip to walk all slots). Empty when there are no backends.
/// The result does not depend on the order of `backends`; duplicates (same
/// address and port) count once.
pub fn table_of_size(backends: &[MaglevBackend], size: usize) -> Vec<u32> {
    assert!(size >= 2, "a Maglev table needs at least 2 slots");
    let mut bs: Vec<(MaglevBackend, [u8; 18])> = backends.iter().map(|b| (*b, b.name())).collect();
    bs.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.id.cmp(&b.0.id)));
    bs.dedup_by(|a, b| a.1 == b.1);
    if bs.is_empty() {
        return Vec::new();
    }
    let m = size as u64;
    // (offset, skip) define backend i's permutation: slot j = (offset + j*skip) mod M.
    let perm: Vec<(u64, u64)> = bs
        .iter()
        .map(|(_, name)| {
            (
                hash(SEED_OFFSET, name) % m,
                hash(SEED_SKIP, name) % (m - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; bs.len()];
    let mut entry: Vec<Option<u32>> = vec![None; size];
    let mut filled = 0usize;
    loop {
        for (i, (b, _)) in bs.iter().enumerate() {
            let (offset, skip) = perm[i];
            let mut c = ((offset + next[i] * skip) % m) as usize;
            while entry[c].is_some() {
                next[i] += 1;
                c = ((offset + next[i] * skip) % m) as usize;
            }
            entry[c] = Some(b.id);
            next[i] += 1;
            filled += 1;
            if filled == size {
                return entry.into_iter().map(|e| e.unwrap_or_default()).collect();
            }
        }
    }
}

/// The table of [`MAGLEV_TABLE_SIZE`] slots the datapath uses.
pub fn table(backends: &[MaglevBackend]) -> Vec<u32> {
    table_of_size(backends, MAGLEV_TABLE_SIZE)
}

/// The flow hash pod_egress indexes a Maglev table with (`flow_hash` in
/// bpf/lib.h: MurmurHash3 steps over the 5-tuple as the client sent it), so
/// the agent and tests can tell which backend a flow gets.
pub fn flow_hash(src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> u32 {
    fn words(ip: IpAddr) -> [u32; 4] {
        let b = crate::lb::addr_bytes(ip).0;
        std::array::from_fn(|i| {
            u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        })
    }
    fn mix(h: u32, k: u32) -> u32 {
        let k = k
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64)
    }
    let mut h = 0x1bad_f00du32;
    for w in words(src.0).into_iter().chain(words(dst.0)) {
        h = mix(h, w);
    }
    // The ports as the program holds them: network-order bytes read natively.
    let sport = u32::from(u16::from_ne_bytes(src.1.to_be_bytes()));
    let dport = u32::from(u16::from_ne_bytes(dst.1.to_be_bytes()));
    h = mix(h, (sport << 16) | dport);
    h = mix(h, u32::from(proto));
    let mut h = h ^ 40;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The backend id a flow gets from a service's Maglev `table`.
pub fn pick(table: &[u32], src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> Option<u32> {
    if table.is_empty() {
        return None;
    }
    table
        .get(flow_hash(src, dst, proto) as usize % table.len())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn backends(n: u32) -> Vec<MaglevBackend> {
        (1..=n)
            .map(|i| MaglevBackend {
                id: i,
                ip: Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8).into(),
                port: 8080,
            })
            .collect()
    }

    fn counts(t: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for id in t {
            *c.entry(*id).or_default() += 1;
        }
        c
    }

    #[test]
    fn fills_every_slot_evenly() {
        for n in [1, 2, 3, 7, 100] {
            let t = table(&backends(n));
            assert_eq!(t.len(), MAGLEV_TABLE_SIZE);
            let c = counts(&t);
            assert_eq!(c.len(), n as usize);
            // Round-robin claiming gives each backend floor or ceil of M/N slots.
            let fair = MAGLEV_TABLE_SIZE / n as usize;
            for (id, k) in c {
                assert!(
                    (fair..=fair + 1).contains(&k),
                    "n={n} backend {id}: {k} slots"
                );
            }
        }
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn independent_of_input_order_and_duplicates() {
        let mut bs = backends(5);
        let t = table(&bs);
        bs.reverse();
        bs.push(bs[0]);
        assert_eq!(table(&bs), t);
    }

    /// Maglev's consistency: removing one backend moves (almost) only the
    /// slots it held. The datapath maps a flow to slot hash % M, so the share
    /// of slots that keep their backend is the share of flows that do.
    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        for n in [3, 10, 50] {
            let all = backends(n);
            let before = table(&all);
            let removed = 2;
            let rest: Vec<_> = all.iter().copied().filter(|b| b.id != removed).collect();
            let after = table(&rest);
            let (mut kept, mut others) = (0, 0);
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(*a, removed);
                if *b != removed {
                    others += 1;
                    kept += usize::from(a == b);
                }
            }
            let share = kept as f64 / others as f64;
            assert!(
                share >= 0.95,
                "n={n}: only {share:.3} of other flows kept their backend"
            );
        }
    }

    #[test]
    fn adding_a_backend_takes_about_its_share() {
        let before = table(&backends(4));
        let after = table(&backends(5));
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let ideal = MAGLEV_TABLE_SIZE / 5;
        // The new backend takes ~M/5 slots; a few more move between old ones.
        assert!(
            moved >= ideal && moved < ideal * 12 / 10,
            "moved {moved}, ideal {ideal}"
        );
    }

    #[test]
    fn same_names_same_table_on_every_node() {
        // A vector pinned from this implementation (it proves stability, not
        // correctness): the table must not change between builds or
        // releases, or nodes (and restarts) would disagree on backends.
        let t = table_of_size(&backends(3), 13);
        assert_eq!(
            t, GOLDEN_13,
            "the Maglev hash changed: nodes would disagree"
        );
    }

    const GOLDEN_13: [u32; 13] = [2, 3, 3, 1, 1, 1, 3, 2, 1, 2, 3, 2, 1];
}
