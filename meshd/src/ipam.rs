//! Cluster-pool IPAM: each node gets one PodCIDR per address family, carved from the cluster's
//! pools (IPv4 and IPv6, each with its own per-node mask size; pools are tried in order, so
//! adding a pool grows the cluster).
//!
//! Two keys hold an allocation (see docs/etcd-schema.md):
//!
//! ```text
//! clusters/<c>/ipam/podcidrs/<cidr>           {"node": "worker-1", "pool": "10.244.0.0/16"}
//! clusters/<c>/ipam/podcidrs-by-node/<node>   {"cidrs": ["10.244.3.0/24", "fd00:10:0:3::/64"]}
//! ```
//!
//! Allocation is one transaction: *if the CIDR's key does not exist and the node's index is
//! unchanged since we read it, write both*. The CIDR key makes two nodes racing for one CIDR
//! meet (one loses and picks the next), the index guard makes two allocators racing for one node
//! meet (one loses and re-reads the winner's CIDR). A node is looked up first, so a restarted
//! node gets its CIDRs back, and a request with an unknown outcome is retried from that lookup.
//!
//! Every allocator of a cluster must use the same pools and mask sizes (they come from the
//! cluster config); the keys name exact CIDRs, so the transaction cannot see an overlap between
//! *different* mask sizes of one pool. Carving checks overlaps against every allocated CIDR it
//! knows, which covers pools changed between releases.
//!
//! Release after a grace period: [`crate::gc::PodCidrGc`] calls
//! [`PodCidrAllocator::release_if_node_absent`] once a node's record (leased) has been gone for
//! the grace period; the transaction is guarded by the keys' mod_revisions and by the node record
//! still being absent, so a node that came back in the meantime keeps its CIDRs.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use common::{ClusterName, NodeName};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::kvstore::{Kv, KvError, KvStore};
use crate::schema::{Key, Resource, ResourceKind, Scope};

#[derive(Debug, Clone, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("pool {cidr} has host bits set; write {network}")]
    PoolHostBits { cidr: String, network: IpNet },
    #[error("pool {cidr}: node mask /{mask} must be between the pool's /{pool_len} and /{max}")]
    PoolMask {
        cidr: IpNet,
        mask: u8,
        pool_len: u8,
        max: u8,
    },
    #[error("pools {a} and {b} overlap; pools must be disjoint")]
    PoolOverlap { a: IpNet, b: IpNet },
    #[error("no pool configured")]
    NoPools,
    #[error("every {family} pool is exhausted ({used} CIDRs allocated); add a pool to grow")]
    Exhausted { family: Family, used: usize },
    #[error("gave up allocating for node {node} after {attempts} conflicting attempts")]
    Contention { node: String, attempts: u32 },
    #[error(
        "the value at {key} is malformed ({detail}); refusing to overwrite it: fix it or delete it (etcdctl del {key}) and meshd carries on"
    )]
    Malformed { key: String, detail: String },
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub fn family(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

/// A pool and the prefix length of the CIDRs carved from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    cidr: IpNet,
    node_mask: u8,
}

impl Pool {
    pub fn new(cidr: IpNet, node_mask: u8) -> Result<Self, IpamError> {
        if cidr.trunc() != cidr {
            return Err(IpamError::PoolHostBits {
                cidr: cidr.to_string(),
                network: cidr.trunc(),
            });
        }
        if node_mask < cidr.prefix_len() || node_mask > cidr.max_prefix_len() {
            return Err(IpamError::PoolMask {
                cidr,
                mask: node_mask,
                pool_len: cidr.prefix_len(),
                max: cidr.max_prefix_len(),
            });
        }
        Ok(Self { cidr, node_mask })
    }

    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    pub fn node_mask(&self) -> u8 {
        self.node_mask
    }

    pub fn family(&self) -> Family {
        family(&self.cidr)
    }
}

/// Checks pools are pairwise disjoint.
pub fn check_pools(pools: &[Pool]) -> Result<(), IpamError> {
    if pools.is_empty() {
        return Err(IpamError::NoPools);
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if overlaps(&a.cidr, &b.cidr) {
                return Err(IpamError::PoolOverlap {
                    a: a.cidr,
                    b: b.cidr,
                });
            }
        }
    }
    Ok(())
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The lowest free CIDR of `family` (sans-IO): the first pool of that family with room, its
/// first node-sized subnet that overlaps nothing in `used`.
pub fn carve(pools: &[Pool], family: Family, used: &BTreeSet<IpNet>) -> Option<(IpNet, Pool)> {
    for pool in pools.iter().filter(|p| p.family() == family) {
        let inside: Vec<&IpNet> = used.iter().filter(|u| overlaps(u, &pool.cidr)).collect();
        let Ok(mut subnets) = pool.cidr.subnets(pool.node_mask) else {
            continue;
        };
        if let Some(free) = subnets.find(|s| !inside.iter().any(|u| overlaps(u, s))) {
            return Some((free, *pool));
        }
    }
    None
}

/// Value of `ipam/podcidrs/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCidrValue {
    pub node: NodeName,
    pub pool: IpNet,
}

/// Value of `ipam/podcidrs-by-node/<node>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCidrsValue {
    pub cidrs: Vec<IpNet>,
}

/// What a node's index still lacks: a block of a family, carved from these pools (`None`:
/// nothing, the index is complete).
type Want<'p> = dyn Fn(&NodeCidrsValue) -> Option<(Family, &'p [Pool])> + Sync + 'p;

/// Allocates PodCIDRs in one cluster's etcd. Share one per process.
#[derive(Debug)]
pub struct PodCidrAllocator {
    store: KvStore,
    scope: Scope,
    pools: Vec<Pool>,
    families: Vec<Family>,
    deadline: Duration,
    max_conflicts: u32,
    used: Mutex<Option<BTreeSet<IpNet>>>,
}

impl PodCidrAllocator {
    pub fn new(store: KvStore, cluster: ClusterName, pools: Vec<Pool>) -> Result<Self, IpamError> {
        check_pools(&pools)?;
        let mut families: Vec<Family> = pools.iter().map(Pool::family).collect();
        families.sort();
        families.dedup();
        Ok(Self {
            store,
            scope: Scope::Cluster(cluster),
            pools,
            families,
            deadline: Duration::from_secs(30),
            max_conflicts: 1024,
            used: Mutex::new(None),
        })
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn key(&self, r: Resource) -> String {
        Key::Resource {
            scope: self.scope.clone(),
            resource: r,
        }
        .to_string()
    }

    /// The node's CIDRs, if it has any.
    pub async fn lookup(&self, node: &NodeName) -> Result<Option<Vec<IpNet>>, IpamError> {
        let k = self.key(Resource::PodCidrsOfNode(node.clone()));
        Ok(self
            .store
            .get(&k)
            .await?
            .map(|kv| decode_node(&k, &kv))
            .transpose()?
            .map(|v| v.cidrs))
    }

    /// The node's CIDRs, one per configured family, allocating the missing ones.
    pub async fn allocate(&self, node: &NodeName) -> Result<Vec<IpNet>, IpamError> {
        let want = |have: &NodeCidrsValue| {
            self.families
                .iter()
                .find(|f| !have.cidrs.iter().any(|c| family(c) == **f))
                .map(|f| (*f, self.pools.as_slice()))
        };
        self.add_retrying(node, &want).await
    }

    /// Adds one more block of `fam` carved from `pools` to the node's CIDRs: a node whose
    /// blocks of a pool are full, or its first block of an `IPPool` of type PodCIDR. The same
    /// transaction as [`allocate`](Self::allocate), so two nodes never get one block. Returns
    /// the node's CIDRs with the new one last.
    pub async fn grow(
        &self,
        node: &NodeName,
        pools: &[Pool],
        fam: Family,
    ) -> Result<Vec<IpNet>, IpamError> {
        check_pools(pools)?;
        let target = std::sync::OnceLock::new();
        let want = |have: &NodeCidrsValue| {
            let t = *target.get_or_init(|| have.cidrs.len() + 1);
            (have.cidrs.len() < t).then_some((fam, pools))
        };
        self.add_retrying(node, &want).await
    }

    async fn add_retrying<'p>(
        &self,
        node: &NodeName,
        want: &Want<'p>,
    ) -> Result<Vec<IpNet>, IpamError> {
        let started = tokio::time::Instant::now();
        let mut conflicts = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.try_allocate(node, &mut conflicts, want).await {
                Err(IpamError::Kv(e))
                    if e.is_transient() && started.elapsed() + backoff < self.deadline =>
                {
                    tracing::debug!(error = %e, %node, "PodCIDR allocation: transient error, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    async fn load_used(&self) -> Result<BTreeSet<IpNet>, KvError> {
        if let Some(u) = self.used.lock().unwrap().as_ref() {
            return Ok(u.clone());
        }
        let prefix = self.scope.kind_prefix(ResourceKind::PodCidrs);
        let (kvs, _) = self.store.list(&prefix, true).await?;
        let used: BTreeSet<IpNet> = kvs
            .iter()
            .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                Ok(Key::Resource {
                    resource: Resource::PodCidr(net),
                    ..
                }) => Some(net),
                _ => None,
            })
            .collect();
        *self.used.lock().unwrap() = Some(used.clone());
        Ok(used)
    }

    fn mark_used(&self, net: IpNet) {
        if let Some(u) = self.used.lock().unwrap().as_mut() {
            u.insert(net);
        }
    }

    async fn try_allocate<'p>(
        &self,
        node: &NodeName,
        conflicts: &mut u32,
        want: &Want<'p>,
    ) -> Result<Vec<IpNet>, IpamError> {
        let node_key = self.key(Resource::PodCidrsOfNode(node.clone()));
        loop {
            let current = self.store.get(&node_key).await?;
            let (have, guard) = match &current {
                Some(kv) => (
                    decode_node(&node_key, kv)?,
                    Compare::mod_revision(node_key.clone(), CompareOp::Equal, kv.mod_revision),
                ),
                None => (
                    NodeCidrsValue::default(),
                    Compare::create_revision(node_key.clone(), CompareOp::Equal, 0),
                ),
            };
            let Some((missing, pools)) = want(&have) else {
                return Ok(have.cidrs);
            };
            let mut used = self.load_used().await?;
            used.extend(have.cidrs.iter().copied());
            let (cidr, pool) = carve(pools, missing, &used).ok_or(IpamError::Exhausted {
                family: missing,
                used: used.len(),
            })?;
            let cidr_key = self.key(Resource::PodCidr(cidr));
            let mut next = have.clone();
            next.cidrs.push(cidr);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(cidr_key.clone(), CompareOp::Equal, 0),
                    guard,
                ])
                .and_then([
                    TxnOp::put(
                        cidr_key.clone(),
                        serde_json::to_vec(&PodCidrValue {
                            node: node.clone(),
                            pool: pool.cidr(),
                        })
                        .expect("serializes"),
                        None,
                    ),
                    TxnOp::put(
                        node_key.clone(),
                        serde_json::to_vec(&next).expect("serializes"),
                        None,
                    ),
                ])
                .or_else([TxnOp::get(cidr_key.clone(), None)]);
            let resp = self.store.txn(txn).await?;
            self.mark_used(cidr);
            if resp.succeeded() {
                tracing::debug!(%node, %cidr, "allocated PodCIDR");
                continue; // next family, if any
            }
            // Lost: the CIDR went to someone else, or the node's index changed under us.
            if let [TxnOpResponse::Get(g)] = resp.op_responses().as_slice()
                && g.kvs().is_empty()
            {
                tracing::debug!(%node, "node index changed concurrently; re-reading");
            }
            *conflicts += 1;
            if *conflicts >= self.max_conflicts {
                return Err(IpamError::Contention {
                    node: node.to_string(),
                    attempts: *conflicts,
                });
            }
        }
    }

    /// Releases all of the node's CIDRs now (no grace period: the caller decides when).
    /// Returns what was released.
    pub async fn release(&self, node: &NodeName) -> Result<Vec<IpNet>, IpamError> {
        self.release_guarded(node, Vec::new()).await
    }

    /// Releases the node's CIDRs only if its node record is absent when the transaction
    /// applies (a node that came back keeps them): the grace-period controller's release.
    /// `Ok(None)`: the node record exists.
    pub async fn release_if_node_absent(
        &self,
        node: &NodeName,
    ) -> Result<Option<Vec<IpNet>>, IpamError> {
        let record = self.key(Resource::Node(node.clone()));
        if self.store.get(&record).await?.is_some() {
            return Ok(None);
        }
        let guard = Compare::create_revision(record, CompareOp::Equal, 0);
        match self.release_guarded(node, vec![guard]).await {
            Ok(v) => Ok(Some(v)),
            Err(IpamError::Contention { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn release_guarded(
        &self,
        node: &NodeName,
        extra: Vec<Compare>,
    ) -> Result<Vec<IpNet>, IpamError> {
        Ok(self.release_where(node, extra, |_| true).await?.0)
    }

    /// Gives one block of the node back (a grown node whose extra block has been empty for a
    /// while): the block's key goes if this node holds it, and the node's index loses it, in
    /// one transaction guarded by both keys' revisions. Returns the node's CIDRs after.
    pub async fn release_block(
        &self,
        node: &NodeName,
        block: IpNet,
    ) -> Result<Vec<IpNet>, IpamError> {
        Ok(self
            .release_where(node, Vec::new(), |c| *c == block)
            .await?
            .1)
    }

    /// Releases the node's CIDRs that `which` picks in one transaction: guarded by the index's
    /// revision (and `extra`), each picked CIDR's key deleted only if this node holds it
    /// (guarded by its revision too), the index rewritten with the rest or deleted when none
    /// is left. Nothing picked (and some left): nothing written. Returns (released, kept).
    async fn release_where(
        &self,
        node: &NodeName,
        extra: Vec<Compare>,
        which: impl Fn(&IpNet) -> bool,
    ) -> Result<(Vec<IpNet>, Vec<IpNet>), IpamError> {
        let node_key = self.key(Resource::PodCidrsOfNode(node.clone()));
        let Some(kv) = self.store.get(&node_key).await? else {
            return Ok((Vec::new(), Vec::new()));
        };
        let (released, kept): (Vec<IpNet>, Vec<IpNet>) = decode_node(&node_key, &kv)?
            .cidrs
            .into_iter()
            .partition(|c| which(c));
        if released.is_empty() && !kept.is_empty() {
            return Ok((released, kept));
        }
        let mut when = vec![Compare::mod_revision(
            node_key.clone(),
            CompareOp::Equal,
            kv.mod_revision,
        )];
        when.extend(extra);
        let mut ops = vec![if kept.is_empty() {
            TxnOp::delete(node_key.clone(), None)
        } else {
            let rest = NodeCidrsValue {
                cidrs: kept.clone(),
            };
            TxnOp::put(
                node_key.clone(),
                serde_json::to_vec(&rest).expect("serializes"),
                None,
            )
        }];
        for cidr in &released {
            let k = self.key(Resource::PodCidr(*cidr));
            // Delete a CIDR key only if this node holds it.
            if let Some(ckv) = self.store.get(&k).await?
                && serde_json::from_slice::<PodCidrValue>(&ckv.value).is_ok_and(|v| &v.node == node)
            {
                when.push(Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    ckv.mod_revision,
                ));
                ops.push(TxnOp::delete(k, None));
            }
        }
        let resp = self.store.txn(Txn::new().when(when).and_then(ops)).await?;
        if !resp.succeeded() {
            return Err(IpamError::Contention {
                node: node.to_string(),
                attempts: 1,
            });
        }
        if let Some(u) = self.used.lock().unwrap().as_mut() {
            for c in &released {
                u.remove(c);
            }
        }
        Ok((released, kept))
    }
}

fn decode_node(key: &str, kv: &Kv) -> Result<NodeCidrsValue, IpamError> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Malformed {
        key: key.into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pool_validation() {
        assert!(Pool::new(net("10.244.0.0/16"), 24).is_ok());
        assert!(matches!(
            Pool::new(net("10.244.1.0/16"), 24),
            Err(IpamError::PoolHostBits { .. })
        ));
        let e = Pool::new(net("10.244.0.0/16"), 8).unwrap_err().to_string();
        assert_eq!(
            e,
            "pool 10.244.0.0/16: node mask /8 must be between the pool's /16 and /32"
        );
        assert!(Pool::new(net("fd00::/48"), 129).is_err());
        let a = Pool::new(net("10.0.0.0/8"), 24).unwrap();
        let b = Pool::new(net("10.244.0.0/16"), 24).unwrap();
        assert!(matches!(
            check_pools(&[a, b]),
            Err(IpamError::PoolOverlap { .. })
        ));
        assert!(matches!(check_pools(&[]), Err(IpamError::NoPools)));
    }

    #[test]
    fn carving_is_lowest_first_and_skips_overlaps() {
        let pools = [
            Pool::new(net("10.244.0.0/22"), 24).unwrap(),
            Pool::new(net("fd00:10::/48"), 64).unwrap(),
            Pool::new(net("10.245.0.0/23"), 25).unwrap(),
        ];
        let mut used = BTreeSet::new();
        assert_eq!(
            carve(&pools, Family::V4, &used).unwrap().0,
            net("10.244.0.0/24")
        );
        assert_eq!(
            carve(&pools, Family::V6, &used).unwrap().0,
            net("fd00:10::/64")
        );
        // A used CIDR of another size still blocks what it overlaps.
        used.insert(net("10.244.0.0/23"));
        used.insert(net("10.244.3.128/25"));
        assert_eq!(
            carve(&pools, Family::V4, &used).unwrap().0,
            net("10.244.2.0/24")
        );
        used.insert(net("10.244.2.0/24"));
        // The first pool is full: the second IPv4 pool grows the cluster.
        let (c, p) = carve(&pools, Family::V4, &used).unwrap();
        assert_eq!((c, p.cidr()), (net("10.245.0.0/25"), net("10.245.0.0/23")));
        for s in [
            "10.245.0.0/25",
            "10.245.0.128/25",
            "10.245.1.0/25",
            "10.245.1.128/25",
        ] {
            used.insert(net(s));
        }
        assert_eq!(carve(&pools, Family::V4, &used), None);
    }

    #[test]
    fn values_round_trip() {
        let v = PodCidrValue {
            node: "worker-1".parse().unwrap(),
            pool: net("10.244.0.0/16"),
        };
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(j, r#"{"node":"worker-1","pool":"10.244.0.0/16"}"#);
        assert_eq!(serde_json::from_str::<PodCidrValue>(&j).unwrap(), v);
        let n = NodeCidrsValue {
            cidrs: vec![net("10.244.1.0/24"), net("fd00:10:0:1::/64")],
        };
        let j = serde_json::to_string(&n).unwrap();
        assert_eq!(j, r#"{"cidrs":["10.244.1.0/24","fd00:10:0:1::/64"]}"#);
    }

    proptest! {
        /// Carving repeatedly never yields overlapping CIDRs, and fills the pool exactly.
        #[test]
        fn repeated_carving_never_overlaps(pre in proptest::collection::btree_set(0u32..64, 0..20), mask in 26u8..=28) {
            let pool = Pool::new(net("10.1.0.0/24"), mask).unwrap();
            let mut used: BTreeSet<IpNet> = pre
                .iter()
                .map(|i| IpNet::new(std::net::Ipv4Addr::from(0x0a01_0000 + i * 4).into(), 30).unwrap())
                .collect();
            let mut got: Vec<IpNet> = Vec::new();
            while let Some((c, _)) = carve(&[pool], Family::V4, &used) {
                prop_assert!(used.iter().all(|u| !overlaps(u, &c)));
                prop_assert_eq!(c.prefix_len(), mask);
                used.insert(c);
                got.push(c);
                prop_assert!(got.len() <= 64);
            }
            if pre.is_empty() {
                prop_assert_eq!(got.len(), 1usize << (mask - 24));
            }
        }
    }
}
