//! LB-IPAM: LoadBalancer VIPs from the cluster's VIP pools, one etcd transaction per
//! allocation, as the PodCIDR IPAM does (see docs/etcd-schema.md):
//!
//! ```text
//! clusters/<c>/ipam/vips/<ip>                       {"service": {...}, "pool": "203.0.113.0/28"}
//! clusters/<c>/ipam/vips-by-service/<ns>/<name>     {"vips": ["203.0.113.1"]}
//! ```
//!
//! *If the VIP's key does not exist and the service's index is unchanged since we read it, write
//! both.* The VIP key makes two services racing for one address meet (the loser takes the next
//! free one, or, when it asked for that address explicitly, gets [`LbIpamError::Taken`]); the
//! index makes two allocators for one service agree. Release deletes both keys in a transaction
//! guarded by the index's mod_revision.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::{ClusterName, ServiceKey};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipam::{Family, family, overlaps};
use crate::kvstore::{Kv, KvError, KvStore};
use crate::schema::{Key, Resource, ResourceKind, Scope};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LbIpamError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("VIP pool {cidr} has host bits set; write {network}")]
    PoolHostBits { cidr: IpNet, network: IpNet },
    #[error("VIP pools {a} and {b} overlap; VIP pools must be disjoint")]
    PoolOverlap { a: IpNet, b: IpNet },
    #[error("no VIP pool configured; add one to the cluster's lb_ipam.pools")]
    NoPools,
    #[error("every {family} VIP pool is exhausted ({used} VIPs allocated); add a VIP pool")]
    Exhausted { family: Family, used: usize },
    #[error(
        "requested VIP {ip} for {service} is outside every VIP pool ({pools}); request an address of a pool or add a pool"
    )]
    OutsidePools {
        ip: IpAddr,
        service: String,
        pools: String,
    },
    #[error(
        "requested VIP {ip} for {service} is already allocated to {owner}; request another address or release it from {owner} first"
    )]
    Taken {
        ip: IpAddr,
        service: String,
        owner: String,
    },
    #[error("gave up allocating a VIP for {service} after {attempts} conflicting attempts")]
    Contention { service: String, attempts: u32 },
    #[error("the value at {key} is malformed ({detail}); refusing to overwrite it")]
    Malformed { key: String, detail: String },
}

/// Value of `ipam/vips/<ip>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipValue {
    pub service: ServiceKey,
    pub pool: IpNet,
}

/// Value of `ipam/vips-by-service/<ns>/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceVipsValue {
    pub vips: Vec<IpAddr>,
}

/// Checks VIP pools: network addresses, pairwise disjoint.
pub fn check_vip_pools(pools: &[IpNet]) -> Result<(), LbIpamError> {
    if pools.is_empty() {
        return Err(LbIpamError::NoPools);
    }
    for (i, a) in pools.iter().enumerate() {
        if a.trunc() != *a {
            return Err(LbIpamError::PoolHostBits {
                cidr: *a,
                network: a.trunc(),
            });
        }
        for b in &pools[i + 1..] {
            if overlaps(a, b) {
                return Err(LbIpamError::PoolOverlap { a: *a, b: *b });
            }
        }
    }
    Ok(())
}

/// The lowest free address of `family` in the pools (sans-IO). IPv4 pools shorter than /31
/// skip their network and broadcast addresses.
pub fn first_free(
    pools: &[IpNet],
    family_: Family,
    used: &BTreeSet<IpAddr>,
) -> Option<(IpAddr, IpNet)> {
    pools
        .iter()
        .filter(|p| family(p) == family_)
        .find_map(|p| p.hosts().find(|ip| !used.contains(ip)).map(|ip| (ip, *p)))
}

/// Which addresses an allocator hands out: LoadBalancer VIPs (`ipam/vips`) or ClusterIPs
/// (`ipam/clusterips`, from `mesh.service_cidrs`). Same transactions, separate keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpace {
    LoadBalancer,
    ClusterIp,
}

impl AddressSpace {
    fn addr(self, ip: IpAddr) -> Resource {
        match self {
            AddressSpace::LoadBalancer => Resource::Vip(ip),
            AddressSpace::ClusterIp => Resource::ClusterIp(ip),
        }
    }

    fn index(self, s: ServiceKey) -> Resource {
        match self {
            AddressSpace::LoadBalancer => Resource::VipsOfService(s),
            AddressSpace::ClusterIp => Resource::ClusterIpsOfService(s),
        }
    }

    fn kind(self) -> ResourceKind {
        match self {
            AddressSpace::LoadBalancer => ResourceKind::Vips,
            AddressSpace::ClusterIp => ResourceKind::ClusterIps,
        }
    }
}

/// Allocates LoadBalancer VIPs (or ClusterIPs) in one cluster's etcd.
#[derive(Debug)]
pub struct VipAllocator {
    store: KvStore,
    scope: Scope,
    space: AddressSpace,
    pools: Vec<IpNet>,
    deadline: Duration,
    max_conflicts: u32,
    /// The addresses this allocator saw in use (listed once, then kept up to date by its own
    /// allocations and lost races), so a batch of allocations lists the keys once, not once
    /// each. Stale only in what others freed meanwhile: re-listed before "exhausted".
    known_used: std::sync::Mutex<Option<BTreeSet<IpAddr>>>,
}

enum Want {
    Any(Family),
    Exact(IpAddr),
}

impl VipAllocator {
    pub fn new(
        store: KvStore,
        cluster: ClusterName,
        pools: Vec<IpNet>,
    ) -> Result<Self, LbIpamError> {
        check_vip_pools(&pools)?;
        Ok(Self {
            store,
            scope: Scope::Cluster(cluster),
            space: AddressSpace::LoadBalancer,
            pools,
            deadline: Duration::from_secs(30),
            max_conflicts: 256,
            known_used: std::sync::Mutex::new(None),
        })
    }

    /// An allocator of ClusterIPs from the service CIDRs (`ipam/clusterips`).
    pub fn cluster_ips(
        store: KvStore,
        cluster: ClusterName,
        cidrs: Vec<IpNet>,
    ) -> Result<Self, LbIpamError> {
        let mut a = Self::new(store, cluster, cidrs)?;
        a.space = AddressSpace::ClusterIp;
        Ok(a)
    }

    /// A service's addresses in `space`, for [`VipAllocator::lookup`] and
    /// [`VipAllocator::release`] only: with no pool it allocates nothing.
    pub fn holdings(store: KvStore, cluster: ClusterName, space: AddressSpace) -> Self {
        Self {
            store,
            scope: Scope::Cluster(cluster),
            space,
            pools: Vec::new(),
            deadline: Duration::from_secs(30),
            max_conflicts: 256,
            known_used: std::sync::Mutex::new(None),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<IpAddr>>> {
        self.known_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, r: Resource) -> String {
        Key::Resource {
            scope: self.scope.clone(),
            resource: r,
        }
        .to_string()
    }

    /// The service's VIPs.
    pub async fn lookup(&self, service: &ServiceKey) -> Result<Vec<IpAddr>, LbIpamError> {
        let k = self.key(self.space.index(service.clone()));
        Ok(match self.store.get(&k).await? {
            Some(kv) => decode::<ServiceVipsValue>(&k, &kv)?.vips,
            None => Vec::new(),
        })
    }

    /// A VIP of `family` for the service: its existing one, or the lowest free one.
    pub async fn allocate(&self, service: &ServiceKey, f: Family) -> Result<IpAddr, LbIpamError> {
        self.retrying(service, Want::Any(f)).await
    }

    /// Exactly `ip` for the service, refused if it is outside the pools or someone else's.
    pub async fn request(&self, service: &ServiceKey, ip: IpAddr) -> Result<IpAddr, LbIpamError> {
        if !self.pools.iter().any(|p| p.contains(&ip)) {
            return Err(LbIpamError::OutsidePools {
                ip,
                service: service.to_string(),
                pools: self
                    .pools
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.retrying(service, Want::Exact(ip)).await
    }

    async fn retrying(&self, service: &ServiceKey, want: Want) -> Result<IpAddr, LbIpamError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.try_allocate(service, &want).await {
                Err(LbIpamError::Kv(e))
                    if e.is_transient() && started.elapsed() + backoff < self.deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    async fn used(&self) -> Result<BTreeSet<IpAddr>, KvError> {
        let (kvs, _) = self
            .store
            .list(&self.scope.kind_prefix(self.space.kind()), true)
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                Ok(Key::Resource {
                    resource: Resource::Vip(ip) | Resource::ClusterIp(ip),
                    ..
                }) => Some(ip),
                _ => None,
            })
            .collect())
    }

    async fn try_allocate(&self, service: &ServiceKey, want: &Want) -> Result<IpAddr, LbIpamError> {
        let svc_key = self.key(self.space.index(service.clone()));
        let mut used: Option<BTreeSet<IpAddr>> = None;
        for _ in 0..self.max_conflicts {
            let current = self.store.get(&svc_key).await?;
            let (have, guard) = match &current {
                Some(kv) => (
                    decode::<ServiceVipsValue>(&svc_key, kv)?,
                    Compare::mod_revision(svc_key.clone(), CompareOp::Equal, kv.mod_revision),
                ),
                None => (
                    ServiceVipsValue::default(),
                    Compare::create_revision(svc_key.clone(), CompareOp::Equal, 0),
                ),
            };
            let (ip, pool) = match want {
                Want::Exact(ip) if have.vips.contains(ip) => return Ok(*ip),
                Want::Any(f) => {
                    if let Some(ip) = have.vips.iter().find(|v| family_of(v) == *f) {
                        return Ok(*ip);
                    }
                    let cached = self.known().clone();
                    let fresh = used.is_none() && cached.is_none();
                    if used.is_none() {
                        used = Some(match cached {
                            Some(c) => c,
                            None => self.used().await?,
                        });
                    }
                    let found = first_free(&self.pools, *f, used.as_ref().expect("loaded"));
                    match found {
                        Some(x) => x,
                        None if !fresh => {
                            // The cache may hold addresses freed meanwhile: list again.
                            let u = self.used().await?;
                            *self.known() = Some(u.clone());
                            let found = first_free(&self.pools, *f, &u);
                            let n = u.len();
                            used = Some(u);
                            found.ok_or(LbIpamError::Exhausted {
                                family: *f,
                                used: n,
                            })?
                        }
                        None => {
                            return Err(LbIpamError::Exhausted {
                                family: *f,
                                used: used.as_ref().map_or(0, BTreeSet::len),
                            });
                        }
                    }
                }
                Want::Exact(ip) => (
                    *ip,
                    *self.pools.iter().find(|p| p.contains(ip)).expect("checked"),
                ),
            };
            let vip_key = self.key(self.space.addr(ip));
            let mut next = have.clone();
            next.vips.push(ip);
            let value = VipValue {
                service: service.clone(),
                pool,
            };
            let txn = Txn::new()
                .when([
                    Compare::create_revision(vip_key.clone(), CompareOp::Equal, 0),
                    guard,
                ])
                .and_then([
                    TxnOp::put(vip_key.clone(), to_json(&value), None),
                    TxnOp::put(svc_key.clone(), to_json(&next), None),
                ]);
            if self.store.txn(txn).await?.succeeded() {
                tracing::info!(%service, %ip, "allocated VIP");
                if let Some(k) = self.known().as_mut() {
                    k.insert(ip);
                } else if let Some(mut u) = used {
                    u.insert(ip);
                    *self.known() = Some(u);
                }
                return Ok(ip);
            }
            // Lost: the VIP is someone's, or the service's index changed.
            if let Some(kv) = self.store.get(&vip_key).await? {
                let owner = decode::<VipValue>(&vip_key, &kv)?.service;
                if &owner != service {
                    match want {
                        Want::Exact(_) => {
                            return Err(LbIpamError::Taken {
                                ip,
                                service: service.to_string(),
                                owner: owner.to_string(),
                            });
                        }
                        Want::Any(_) => {
                            used.get_or_insert_default().insert(ip);
                            if let Some(k) = self.known().as_mut() {
                                k.insert(ip);
                            }
                        }
                    }
                }
            }
        }
        Err(LbIpamError::Contention {
            service: service.to_string(),
            attempts: self.max_conflicts,
        })
    }

    /// Releases every VIP of the service (on service delete); returns them.
    pub async fn release(&self, service: &ServiceKey) -> Result<Vec<IpAddr>, LbIpamError> {
        let svc_key = self.key(self.space.index(service.clone()));
        for _ in 0..self.max_conflicts {
            let Some(kv) = self.store.get(&svc_key).await? else {
                return Ok(Vec::new());
            };
            let have = decode::<ServiceVipsValue>(&svc_key, &kv)?;
            let mut ops = vec![TxnOp::delete(svc_key.clone(), None)];
            ops.extend(
                have.vips
                    .iter()
                    .map(|ip| TxnOp::delete(self.key(self.space.addr(*ip)), None)),
            );
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    svc_key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision,
                )])
                .and_then(ops);
            if self.store.txn(txn).await?.succeeded() {
                tracing::info!(%service, vips = ?have.vips, "released VIPs");
                return Ok(have.vips);
            }
        }
        Err(LbIpamError::Contention {
            service: service.to_string(),
            attempts: self.max_conflicts,
        })
    }
}

fn family_of(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializes")
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, kv: &Kv) -> Result<T, LbIpamError> {
    serde_json::from_slice(&kv.value).map_err(|e| LbIpamError::Malformed {
        key: key.into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn pools_are_checked() {
        assert!(matches!(check_vip_pools(&[]), Err(LbIpamError::NoPools)));
        let e = check_vip_pools(&nets(&["203.0.113.1/28"])).unwrap_err();
        assert!(e.to_string().contains("203.0.113.0/28"), "{e}");
        let e = check_vip_pools(&nets(&["203.0.113.0/28", "203.0.113.8/29"])).unwrap_err();
        assert!(matches!(e, LbIpamError::PoolOverlap { .. }));
        check_vip_pools(&nets(&["203.0.113.0/28", "fd00:30::/120"])).unwrap();
    }

    #[test]
    fn first_free_skips_used_and_v4_network_broadcast() {
        let pools = nets(&["203.0.113.0/30", "203.0.113.8/32", "fd00:30::/127"]);
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Some((ip, _)) = first_free(&pools, Family::V4, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got, ["203.0.113.1", "203.0.113.2", "203.0.113.8"]);
        let (v6, pool) = first_free(&pools, Family::V6, &used).unwrap();
        assert_eq!(
            (v6.to_string(), pool.to_string()),
            ("fd00:30::".into(), "fd00:30::/127".into())
        );
    }
}
