//! Host-scope IPAM: addresses from the node's PodCIDRs, one file per allocated address.
//!
//! Layout under `<dataDir>/<network>/ipam/`:
//! - `<ip>`: allocated; contents `<container id>\n<ifname>\n`. Created with `O_CREAT|O_EXCL`,
//!   so two allocators can never both own an address, and it survives restarts.
//! - `last_reserved_ip.<pool>`: where the next search starts (round robin, so a just-released
//!   address is not handed out again at once while peers may still have it in caches).
//! - `lock`: an exclusive `flock` held for a whole allocate/release, so "does this container
//!   already have an address" and "take the next free one" are one step.
//!
//! The first address of a pool is the gateway; pods get addresses from the second one on
//! (IPv4: up to the one before broadcast).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::error::{CniError, Code, Result};

/// One address handed to an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub pool: IpNet,
    pub address: IpAddr,
    pub gateway: IpAddr,
}

/// What [`Ipam::allocate_groups`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// One address per group, and whether any is new.
    Done(Vec<Allocation>, bool),
    /// The `n`th group has no free address in any of its blocks (or no block at all):
    /// nothing was taken.
    Full(usize),
}

/// An allocated address and its owner, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub address: IpAddr,
    pub container_id: String,
    pub ifname: String,
}

/// The gateway of a pool: its first address after the network address.
pub fn gateway(pool: IpNet) -> IpAddr {
    let (first, _) = host_range(pool);
    from_u128(pool.addr(), first - 1)
}

/// The pod address range of `pool` as integers (inclusive).
fn host_range(pool: IpNet) -> (u128, u128) {
    let net = to_u128(pool.network());
    let last = to_u128(pool.broadcast());
    match pool {
        // network, gateway ... broadcast
        IpNet::V4(_) => (net + 2, last - 1),
        IpNet::V6(_) => (net + 2, last),
    }
}

/// Whether `ip` is a pod address of `pool`: inside it and not its network, gateway or
/// (IPv4) broadcast address. Nothing else is ever handed out or taken back as held.
pub fn is_pod_address(pool: IpNet, ip: IpAddr) -> bool {
    let (first, last) = host_range(pool);
    pool.contains(&ip) && (first..=last).contains(&to_u128(ip))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Every pod address of `blocks` is allocated.
pub fn no_free_address(blocks: &[IpNet]) -> CniError {
    let names: Vec<String> = blocks.iter().map(ToString::to_string).collect();
    let size: u128 = blocks
        .iter()
        .map(|b| {
            let (first, last) = host_range(*b);
            last.saturating_sub(first) + 1
        })
        .sum();
    CniError::new(
        Code::TryAgainLater,
        format!("ipam: no free address in {}", names.join(", ")),
    )
    .with_details(format!(
        "all {size} pod addresses are allocated; retry after a DEL"
    ))
}

/// The allocator over one network's directory.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
}

/// The exclusive lock, released on drop (also when the process dies).
#[derive(Debug)]
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Ipam {
    /// Opens (creating) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Ipam> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CniError::io(format!("creating IPAM dir {}", dir.display()), e))?;
        Ok(Ipam { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Lock> {
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CniError::io(format!("opening {}", path.display()), e))?;
        f.lock()
            .map_err(|e| CniError::io(format!("locking {}", path.display()), e))?;
        Ok(Lock(f))
    }

    /// Every allocation on record.
    pub fn owners(&self) -> Result<Vec<Owner>> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("reading {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(address) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            // An entry that vanished under us was released concurrently: skip it.
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = text.lines();
            out.push(Owner {
                address,
                container_id: lines.next().unwrap_or_default().to_string(),
                ifname: lines.next().unwrap_or_default().to_string(),
            });
        }
        out.sort_by_key(|o| o.address);
        Ok(out)
    }

    /// The addresses `container_id`/`ifname` holds.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .owners()?
            .into_iter()
            .filter(|o| o.container_id == container_id && o.ifname == ifname)
            .map(|o| o.address)
            .collect())
    }

    /// One address from each of `pools` for the attachment. Idempotent: an attachment that
    /// already holds an address in a pool gets that one back. All or nothing: when one pool
    /// is exhausted the addresses newly taken from the others are given back.
    /// Returns the allocations and whether any of them is new.
    pub fn allocate(
        &self,
        pools: &[IpNet],
        container_id: &str,
        ifname: &str,
    ) -> Result<(Vec<Allocation>, bool)> {
        self.allocate_with(pools, &[], container_id, ifname)
    }

    /// [`Ipam::allocate`], taking the `requested` address of a pool (static addresses the
    /// runtime asked for, already checked to be pod addresses) instead of the next free one.
    /// An address held already is only ever one of a pool's pod addresses: one left over
    /// from another PodCIDR (the node's changed) is not handed out again.
    pub fn allocate_with(
        &self,
        pools: &[IpNet],
        requested: &[IpAddr],
        container_id: &str,
        ifname: &str,
    ) -> Result<(Vec<Allocation>, bool)> {
        let groups: Vec<Vec<IpNet>> = pools.iter().map(|p| vec![*p]).collect();
        match self.allocate_groups(&groups, requested, container_id, ifname)? {
            Outcome::Done(a, fresh) => Ok((a, fresh)),
            Outcome::Full(i) => Err(no_free_address(&groups[i])),
        }
    }

    /// One address from each group of blocks (a family of the pod's pool: the node's blocks
    /// of it, the first with room first). As [`Ipam::allocate_with`] otherwise: idempotent,
    /// all or nothing, requested addresses taken exactly.
    pub fn allocate_groups(
        &self,
        groups: &[Vec<IpNet>],
        requested: &[IpAddr],
        container_id: &str,
        ifname: &str,
    ) -> Result<Outcome> {
        let _lock = self.lock()?;
        let held = self.lookup(container_id, ifname)?;
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        let give_back = |fresh: &[IpAddr]| {
            for a in fresh {
                let _ = std::fs::remove_file(self.dir.join(a.to_string()));
            }
        };
        for (gi, group) in groups.iter().enumerate() {
            let blocks: Vec<IpNet> = group.iter().map(IpNet::trunc).collect();
            let held_here = held
                .iter()
                .copied()
                .find(|a| blocks.iter().any(|b| is_pod_address(*b, *a)));
            let wanted = requested
                .iter()
                .copied()
                .find(|a| blocks.iter().any(|b| b.contains(a)));
            let got = match (wanted, held_here) {
                (None, None) => match self.take_first(&blocks, container_id, ifname)? {
                    Some(a) => Ok((a, true)),
                    None => {
                        give_back(&fresh);
                        return Ok(Outcome::Full(gi));
                    }
                },
                (w, h) => {
                    let pool = w
                        .or(h)
                        .and_then(|a| blocks.iter().copied().find(|b| b.contains(&a)))
                        .expect("the address is in one of the blocks");
                    self.one(pool, w, h, container_id, ifname)
                }
            };
            let address = match got {
                Ok((a, new)) => {
                    if new {
                        fresh.push(a);
                    }
                    a
                }
                Err(e) => {
                    give_back(&fresh);
                    return Err(e);
                }
            };
            let pool = blocks
                .iter()
                .copied()
                .find(|b| b.contains(&address))
                .expect("allocated inside a block");
            out.push(Allocation {
                pool,
                address,
                gateway: gateway(pool),
            });
        }
        Ok(Outcome::Done(out, !fresh.is_empty()))
    }

    /// The next free address of the first of `blocks` with one; `None`: all are full.
    fn take_first(
        &self,
        blocks: &[IpNet],
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<IpAddr>> {
        for b in blocks {
            match self.take(*b, container_id, ifname) {
                Ok(a) => return Ok(Some(a)),
                Err(e) if e.code == Code::TryAgainLater => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// A requested (`wanted`) or already held address of `pool`.
    fn one(
        &self,
        pool: IpNet,
        wanted: Option<IpAddr>,
        held_here: Option<IpAddr>,
        container_id: &str,
        ifname: &str,
    ) -> Result<(IpAddr, bool)> {
        match (wanted, held_here) {
                (Some(w), _) if !is_pod_address(pool, w) => Err(CniError::new(
                    Code::InvalidNetworkConfig,
                    format!("ipam: requested address {w} is not a pod address of {pool}"),
                )),
                (Some(w), Some(h)) if w != h => Err(CniError::new(
                    Code::InvalidNetworkConfig,
                    format!(
                        "ipam: requested address {w}, but container {container_id} interface {ifname} already holds {h} of {pool}"
                    ),
                )
                .with_details("DEL the attachment first to change its address")),
                (_, Some(h)) => Ok((h, false)),
                (Some(w), None) => self.take_exact(w, container_id, ifname).map(|a| (a, true)),
                (None, None) => Err(CniError::new(
                    Code::Internal,
                    format!("ipam: neither a requested nor a held address of {pool}"),
                )),
            }
    }

    /// Takes exactly `address` (a static request), if no one holds it.
    fn take_exact(&self, address: IpAddr, container_id: &str, ifname: &str) -> Result<IpAddr> {
        let path = self.dir.join(address.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| CniError::io(format!("writing {}", path.display()), e))?;
                Ok(address)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let mut lines = owner.lines();
                Err(CniError::new(
                    Code::TryAgainLater,
                    format!(
                        "ipam: requested address {address} is allocated to container {} interface {}",
                        lines.next().unwrap_or("?"),
                        lines.next().unwrap_or("?")
                    ),
                )
                .with_details("request a free address, or retry after that attachment's DEL"))
            }
            Err(e) => Err(CniError::io(format!("creating {}", path.display()), e)),
        }
    }

    /// Takes the next free address of `pool` (round robin from the pool's cursor).
    fn take(&self, pool: IpNet, container_id: &str, ifname: &str) -> Result<IpAddr> {
        let (first, last) = host_range(pool);
        let cursor_path = self.dir.join(format!(
            "last_reserved_ip.{}-{}",
            pool.network(),
            pool.prefix_len()
        ));
        let start = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .filter(|a| pool.contains(a))
            .map(to_u128)
            .filter(|n| (first..last).contains(n))
            .map_or(first, |n| n + 1);
        let size = last - first + 1;
        let mut n = start;
        let mut tried: u128 = 0;
        while tried < size {
            let address = from_u128(pool.addr(), n);
            let path = self.dir.join(address.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{container_id}\n{ifname}\n").as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| CniError::io(format!("writing {}", path.display()), e))?;
                    let _ = std::fs::write(&cursor_path, address.to_string());
                    return Ok(address);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CniError::io(format!("creating {}", path.display()), e)),
            }
            n = if n == last { first } else { n + 1 };
            tried += 1;
        }
        Err(no_free_address(&[pool]))
    }

    /// Releases everything `container_id`/`ifname` holds (nothing held is not an error).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let _lock = self.lock()?;
        let held = self.lookup(container_id, ifname)?;
        for a in &held {
            let path = self.dir.join(a.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CniError::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    fn pools() -> Vec<IpNet> {
        vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:244:1::/64".parse().unwrap(),
        ]
    }

    #[test]
    fn gateway_is_first_and_pods_start_at_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let (a, new) = ipam.allocate(&pools(), "c1", "eth0").unwrap();
        assert!(new);
        assert_eq!(a[0].gateway, "10.244.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(a[0].address, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(a[1].gateway, "fd00:244:1::1".parse::<IpAddr>().unwrap());
        assert_eq!(a[1].address, "fd00:244:1::2".parse::<IpAddr>().unwrap());
        // Same attachment again: same addresses, nothing new.
        let (again, new) = ipam.allocate(&pools(), "c1", "eth0").unwrap();
        assert_eq!((again, new), (a.clone(), false));
        // Another interface of the same container is another attachment.
        let (b, _) = ipam.allocate(&pools(), "c1", "net1").unwrap();
        assert_ne!(a[0].address, b[0].address);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let pool: IpNet = "10.9.0.0/24".parse().unwrap();
        let path = Arc::new(dir.path().to_path_buf());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each thread opens its own allocator, like separate plugin processes.
                    let ipam = Ipam::open(path.as_path()).unwrap();
                    (0..10)
                        .map(|i| {
                            let (a, _) = ipam
                                .allocate(&[pool], &format!("c{t}-{i}"), "eth0")
                                .unwrap();
                            a[0].address
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<IpAddr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(all.len(), 160);
        assert_eq!(unique.len(), 160, "an address was handed out twice");
        assert_eq!(Ipam::open(dir.path()).unwrap().owners().unwrap().len(), 160);
    }

    #[test]
    fn allocations_survive_a_restart_and_release_frees() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ipam::open(dir.path())
            .unwrap()
            .allocate(&pools(), "c1", "eth0")
            .unwrap()
            .0;
        // A new process (new allocator over the same dir) sees the old allocation.
        let ipam = Ipam::open(dir.path()).unwrap();
        assert_eq!(ipam.allocate(&pools(), "c1", "eth0").unwrap().0, a);
        let b = ipam.allocate(&pools(), "c2", "eth0").unwrap().0;
        assert_ne!(a[0].address, b[0].address);
        assert_eq!(
            ipam.release("c1", "eth0").unwrap(),
            vec![a[0].address, a[1].address]
        );
        assert_eq!(ipam.release("c1", "eth0").unwrap(), Vec::<IpAddr>::new());
        assert_eq!(ipam.lookup("c1", "eth0").unwrap(), Vec::<IpAddr>::new());
        // Round robin: the freed address is not the next one handed out.
        let c = ipam.allocate(&pools(), "c3", "eth0").unwrap().0;
        assert_ne!(c[0].address, a[0].address);
    }

    #[test]
    fn exhaustion_is_try_again_later_and_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        // /29: network .0, gateway .1, pods .2–.6, broadcast .7.
        let small: IpNet = "10.0.0.0/29".parse().unwrap();
        let v6: IpNet = "fd00::/64".parse().unwrap();
        for i in 0..5 {
            ipam.allocate(&[small], &format!("c{i}"), "eth0").unwrap();
        }
        let got: Vec<_> = ipam
            .owners()
            .unwrap()
            .iter()
            .map(|o| o.address.to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let err = ipam.allocate(&[v6, small], "late", "eth0").unwrap_err();
        assert_eq!(err.code, Code::TryAgainLater);
        assert!(err.msg.contains("10.0.0.0/29"), "{err}");
        // The v6 address taken before the v4 pool failed was given back.
        assert_eq!(ipam.lookup("late", "eth0").unwrap(), Vec::<IpAddr>::new());
        ipam.release("c3", "eth0").unwrap();
        let (a, _) = ipam.allocate(&[small], "late", "eth0").unwrap();
        assert_eq!(a[0].address, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn only_pod_addresses_of_the_pool_are_handed_out_or_taken_as_held() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let pool: IpNet = "10.0.0.0/29".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!is_pod_address(pool, ip("10.0.0.0")));
        assert!(!is_pod_address(pool, ip("10.0.0.1")));
        assert!(is_pod_address(pool, ip("10.0.0.2")));
        assert!(is_pod_address(pool, ip("10.0.0.6")));
        assert!(!is_pod_address(pool, ip("10.0.0.7")));
        assert!(!is_pod_address(pool, ip("10.0.0.9")));
        // Left over from another PodCIDR, or the gateway on file: not "held" in this pool.
        for stale in ["10.9.0.5", "10.0.0.1"] {
            std::fs::write(dir.path().join(stale), "c1\neth0\n").unwrap();
        }
        let (a, fresh) = ipam.allocate(&[pool], "c1", "eth0").unwrap();
        assert!(fresh);
        assert_eq!(a[0].address, ip("10.0.0.2"));
        // A static request takes exactly that address; held ones stay held.
        let (b, _) = ipam
            .allocate_with(&[pool], &[ip("10.0.0.5")], "c2", "eth0")
            .unwrap();
        assert_eq!(b[0].address, ip("10.0.0.5"));
        let (b2, fresh) = ipam
            .allocate_with(&[pool], &[ip("10.0.0.5")], "c2", "eth0")
            .unwrap();
        assert_eq!((b2, fresh), (b, false));
        let e = ipam
            .allocate_with(&[pool], &[ip("10.0.0.6")], "c2", "eth0")
            .unwrap_err();
        assert!(e.msg.contains("already holds 10.0.0.5"), "{e}");
        let e = ipam
            .allocate_with(&[pool], &[ip("10.0.0.5")], "c3", "eth0")
            .unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater);
        assert!(
            e.msg.contains("allocated to container c2 interface eth0"),
            "{e}"
        );
        let e = ipam
            .allocate_with(&[pool], &[ip("10.0.0.7")], "c3", "eth0")
            .unwrap_err();
        assert!(e.msg.contains("not a pod address"), "{e}");
        assert_eq!(ipam.lookup("c3", "eth0").unwrap(), Vec::<IpAddr>::new());
    }

    #[test]
    fn a_group_fills_its_first_block_then_the_next_and_says_which_group_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let a: IpNet = "10.9.0.8/29".parse().unwrap();
        let b: IpNet = "10.9.0.16/29".parse().unwrap();
        let v6: IpNet = "fd00:9::/120".parse().unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            match ipam
                .allocate_groups(&[vec![a], vec![v6]], &[], &format!("c{i}"), "eth0")
                .unwrap()
            {
                Outcome::Done(al, true) => got.push(al[0].address),
                other => panic!("{other:?}"),
            }
        }
        assert!(got.iter().all(|ip| a.contains(ip)));
        // The /29 is full: group 0 is reported, and the IPv6 address is not kept.
        assert_eq!(
            ipam.allocate_groups(&[vec![v6], vec![a]], &[], "c5", "eth0")
                .unwrap(),
            Outcome::Full(1)
        );
        assert_eq!(ipam.lookup("c5", "eth0").unwrap(), Vec::<IpAddr>::new());
        // With a second block the next pod lands there, its gateway that block's.
        let Outcome::Done(al, true) = ipam
            .allocate_groups(&[vec![a, b]], &[], "c5", "eth0")
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(al[0].pool, b);
        assert_eq!(al[0].gateway, "10.9.0.17".parse::<IpAddr>().unwrap());
        // Held addresses come back whatever block they are in; an empty group is full.
        let Outcome::Done(again, false) = ipam
            .allocate_groups(&[vec![a, b]], &[], "c0", "eth0")
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(again[0].address, got[0]);
        assert_eq!(
            ipam.allocate_groups(&[vec![]], &[], "c9", "eth0").unwrap(),
            Outcome::Full(0)
        );
    }
}
