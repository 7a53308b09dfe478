//! Security identities: a canonical label set gets one numeric [`Identity`] per cluster, with the
//! cluster ID in its high bits ([`IdentityLayout`]), so identities of different clusters never
//! collide.
//!
//! Two keys hold an allocation (see docs/etcd-schema.md):
//!
//! ```text
//! clusters/<c>/identities-by-labels/<labels>  {"identity": 65792}       the lock and lookup
//! clusters/<c>/identities/<id>                {"labels": {"app": "web"}} the reverse index
//! ```
//!
//! Allocation is one etcd transaction: *if neither key exists, write both*. Both keys have one
//! spelling per value ([`crate::schema`]), so two allocators racing for the same label set meet
//! on the same by-labels key (the loser reads the winner's identity) and two racing for the same
//! number meet on the same by-id key (the loser picks another number). A request whose outcome is
//! unknown (leader lost mid-commit) is retried from the lookup, which finds a committed write, so
//! retries never allocate twice.
//!
//! Reserved identities (1..=255, cluster 0) are never allocated: local IDs start at
//! [`IdentityLayout::MIN_LOCAL_ID`] and the cluster ID is at least 1.
//!
//! Garbage collection ([`crate::gc`]): each node writes `identity-refs/<id>/<node>` under its
//! pooled leases while it uses an identity, guarded by the identity existing; the collector
//! deletes both allocation keys of an identity unreferenced for a grace period, in a
//! transaction requiring the refs range to be empty, so a node's reference always wins.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use common::{ClusterId, ClusterName, Identity, IdentityLayout, Labels};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::kvstore::{KvError, KvStore, retry_transient};
use crate::schema::{Key, Resource, ResourceKind, Scope};

/// Why an identity could not be allocated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityAllocError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(
        "no free identity left in cluster {cluster} ({used} of {capacity} local IDs in use with cluster_bits = {bits})"
    )]
    Exhausted {
        cluster: ClusterId,
        used: usize,
        capacity: u32,
        bits: u8,
    },
    #[error("gave up allocating an identity for {labels:?} after {attempts} conflicting attempts")]
    Contention { labels: String, attempts: u32 },
    #[error("the value at {key} is malformed ({detail}); refusing to overwrite it")]
    Malformed { key: String, detail: String },
}

/// Value of `identities-by-labels/<labels>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByLabelsValue {
    pub identity: Identity,
}

/// Value of `identities/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityValue {
    pub labels: Labels,
}

/// The numbering rule (sans-IO): which identity numbers a cluster may hand out, and which free
/// one to try next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub layout: IdentityLayout,
    pub cluster: ClusterId,
}

impl Numbering {
    /// How many local IDs the cluster can allocate.
    pub fn capacity(self) -> u32 {
        self.layout.max_local_id() - IdentityLayout::MIN_LOCAL_ID + 1
    }

    /// The first free local ID at or after a position derived from `seed` (wrapping), as an
    /// identity. Starting at a random spot keeps concurrent allocators from all racing for the
    /// same number. `used` holds local IDs.
    pub fn candidate(self, used: &BTreeSet<u32>, seed: u64) -> Option<Identity> {
        let (min, max) = (IdentityLayout::MIN_LOCAL_ID, self.layout.max_local_id());
        let start = min + (seed % u64::from(self.capacity())) as u32;
        let free = |range: std::ops::RangeInclusive<u32>| {
            let mut expect = *range.start();
            for &u in used.range(range.clone()) {
                if u != expect {
                    return Some(expect);
                }
                expect = u + 1;
            }
            (expect <= *range.end()).then_some(expect)
        };
        let local =
            free(start..=max).or_else(|| (start > min).then(|| free(min..=start - 1))?)?;
        self.layout.identity(self.cluster, local).ok()
    }

    /// The local part of an identity of this cluster; `None` for other clusters and reserved.
    pub fn local_of(self, id: Identity) -> Option<u32> {
        (id.cluster(self.layout) == Some(self.cluster))
            .then(|| id.local(self.layout))
            .flatten()
    }
}

/// A small xorshift generator for candidate positions (no need for cryptographic quality).
#[derive(Debug)]
struct Seed(u64);

impl Seed {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Allocates identities in one cluster's etcd. Share one per process (it caches).
#[derive(Debug)]
pub struct IdentityAllocator {
    store: KvStore,
    scope: Scope,
    numbering: Numbering,
    /// Overall time budget of one allocation, retries included.
    deadline: Duration,
    max_conflicts: u32,
    state: Mutex<AllocState>,
}

#[derive(Debug)]
struct AllocState {
    by_labels: HashMap<Labels, Identity>,
    used: BTreeSet<u32>,
    used_loaded: bool,
    seed: Seed,
}

impl IdentityAllocator {
    pub fn new(
        store: KvStore,
        cluster: ClusterName,
        cluster_id: ClusterId,
        layout: IdentityLayout,
    ) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32)
            ^ INSTANCES
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            store,
            scope: Scope::Cluster(cluster),
            numbering: Numbering {
                layout,
                cluster: cluster_id,
            },
            deadline: Duration::from_secs(30),
            max_conflicts: 256,
            state: Mutex::new(AllocState {
                by_labels: HashMap::new(),
                used: BTreeSet::new(),
                used_loaded: false,
                seed: Seed(seed | 1),
            }),
        }
    }

    /// Changes the time budget of one allocation (default 30 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn numbering(&self) -> Numbering {
        self.numbering
    }

    fn by_labels_key(&self, labels: &Labels) -> String {
        key(&self.scope, Resource::IdentityByLabels(labels.clone()))
    }

    fn by_id_key(&self, id: Identity) -> String {
        key(&self.scope, Resource::Identity(id))
    }

    /// The identity of `labels`, if allocated.
    pub async fn lookup(&self, labels: &Labels) -> Result<Option<Identity>, IdentityAllocError> {
        if let Some(id) = self.state.lock().unwrap().by_labels.get(labels) {
            return Ok(Some(*id));
        }
        let k = self.by_labels_key(labels);
        let found =
            retry_transient("identity lookup", self.deadline, || self.store.get(&k)).await?;
        match found {
            None => Ok(None),
            Some(kv) => {
                let id = decode_by_labels(&k, &kv.value)?;
                self.remember(labels, id);
                Ok(Some(id))
            }
        }
    }

    /// Drops a cached identity (it was garbage-collected; the next allocation looks it up or
    /// allocates again).
    pub fn forget(&self, labels: &Labels) {
        let mut st = self.state.lock().unwrap();
        if let Some(id) = st.by_labels.remove(labels)
            && let Some(local) = self.numbering.local_of(id)
        {
            st.used.remove(&local);
        }
    }

    fn remember(&self, labels: &Labels, id: Identity) {
        let mut st = self.state.lock().unwrap();
        st.by_labels.insert(labels.clone(), id);
        if let Some(local) = self.numbering.local_of(id) {
            st.used.insert(local);
        }
    }

    /// Loads the numbers in use once (keys only), so candidates mostly hit free numbers.
    async fn load_used(&self) -> Result<(), KvError> {
        if self.state.lock().unwrap().used_loaded {
            return Ok(());
        }
        let prefix = self.scope.kind_prefix(ResourceKind::Identities);
        let (kvs, _) = self.store.list(&prefix, true).await?;
        let mut st = self.state.lock().unwrap();
        for kv in kvs {
            if let Ok(Key::Resource {
                resource: Resource::Identity(id),
                ..
            }) = Key::parse_bytes(&kv.key)
                && let Some(local) = self.numbering.local_of(id)
            {
                st.used.insert(local);
            }
        }
        st.used_loaded = true;
        Ok(())
    }

    /// The identity of `labels`, allocating one if the set has none yet. The same label set
    /// always gets the same identity, from any allocator in the cluster.
    pub async fn allocate(&self, labels: &Labels) -> Result<Identity, IdentityAllocError> {
        let started = tokio::time::Instant::now();
        let mut conflicts = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.try_allocate(labels, &mut conflicts).await {
                Err(IdentityAllocError::Kv(e))
                    if e.is_transient() && started.elapsed() + backoff < self.deadline =>
                {
                    tracing::debug!(error = %e, "identity allocation: transient error, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    async fn try_allocate(
        &self,
        labels: &Labels,
        conflicts: &mut u32,
    ) -> Result<Identity, IdentityAllocError> {
        if let Some(id) = self.lookup_once(labels).await? {
            return Ok(id);
        }
        self.load_used().await?;
        let by_labels = self.by_labels_key(labels);
        let labels_value = serde_json::to_vec(&IdentityValue {
            labels: labels.clone(),
        })
        .expect("labels serialize");
        loop {
            let candidate = {
                let mut st = self.state.lock().unwrap();
                let seed = st.seed.next();
                self.numbering.candidate(&st.used, seed).ok_or_else(|| {
                    IdentityAllocError::Exhausted {
                        cluster: self.numbering.cluster,
                        used: st.used.len(),
                        capacity: self.numbering.capacity(),
                        bits: self.numbering.layout.cluster_bits(),
                    }
                })?
            };
            let by_id = self.by_id_key(candidate);
            let id_value = serde_json::to_vec(&ByLabelsValue {
                identity: candidate,
            })
            .expect("identity serializes");
            let txn = Txn::new()
                .when([
                    Compare::create_revision(by_labels.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(by_id.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(by_id.clone(), labels_value.clone(), None),
                    TxnOp::put(by_labels.clone(), id_value, None),
                ])
                .or_else([
                    TxnOp::get(by_labels.clone(), None),
                    TxnOp::get(by_id.clone(), None),
                ]);
            let resp = self.store.txn(txn).await?;
            if resp.succeeded() {
                self.remember(labels, candidate);
                tracing::debug!(%labels, identity = %candidate, "allocated identity");
                return Ok(candidate);
            }
            let (got_labels, got_id) = match resp.op_responses().as_slice() {
                [TxnOpResponse::Get(a), TxnOpResponse::Get(b)] => {
                    (a.kvs().first().cloned(), b.kvs().first().cloned())
                }
                other => {
                    return Err(KvError::Etcd {
                        op: "identity txn".into(),
                        detail: format!("unexpected txn responses {other:?}"),
                        transient: false,
                        kind: crate::kvstore::ErrorKind::Other,
                    }
                    .into());
                }
            };
            if let Some(kv) = got_labels {
                // Someone allocated this label set first: theirs is ours.
                let id = decode_by_labels(&by_labels, kv.value())?;
                self.remember(labels, id);
                return Ok(id);
            }
            if got_id.is_some()
                && let Some(local) = self.numbering.local_of(candidate)
            {
                self.state.lock().unwrap().used.insert(local);
            }
            *conflicts += 1;
            if *conflicts >= self.max_conflicts {
                return Err(IdentityAllocError::Contention {
                    labels: labels.to_string(),
                    attempts: *conflicts,
                });
            }
        }
    }

    async fn lookup_once(&self, labels: &Labels) -> Result<Option<Identity>, IdentityAllocError> {
        if let Some(id) = self.state.lock().unwrap().by_labels.get(labels) {
            return Ok(Some(*id));
        }
        let k = self.by_labels_key(labels);
        match self.store.get(&k).await? {
            None => Ok(None),
            Some(kv) => {
                let id = decode_by_labels(&k, &kv.value)?;
                self.remember(labels, id);
                Ok(Some(id))
            }
        }
    }
}

fn key(scope: &Scope, resource: Resource) -> String {
    Key::Resource {
        scope: scope.clone(),
        resource,
    }
    .to_string()
}

fn decode_by_labels(key: &str, value: &[u8]) -> Result<Identity, IdentityAllocError> {
    serde_json::from_slice::<ByLabelsValue>(value)
        .map(|v| v.identity)
        .map_err(|e| IdentityAllocError::Malformed {
            key: key.into(),
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numbering(bits: u8, cluster: u16) -> Numbering {
        Numbering {
            layout: IdentityLayout::new(bits).unwrap(),
            cluster: ClusterId::new(cluster).unwrap(),
        }
    }

    #[test]
    fn candidates_skip_used_and_wrap() {
        let n = numbering(8, 3);
        assert_eq!(n.capacity(), 65280);
        let mut used = BTreeSet::new();
        let first = n.candidate(&used, 0).unwrap();
        assert_eq!(first.raw(), (3 << 16) | 256);
        used.extend([256, 257, 259]);
        assert_eq!(n.local_of(n.candidate(&used, 0).unwrap()), Some(258));
        // Start near the top: the last number is free, then wrap to the bottom.
        let top = u64::from(n.capacity() - 1);
        assert_eq!(n.local_of(n.candidate(&used, top).unwrap()), Some(65535));
        used.insert(65535);
        assert_eq!(n.local_of(n.candidate(&used, top).unwrap()), Some(258));
    }

    #[test]
    fn exhaustion_is_none() {
        let n = numbering(10, 1);
        let used: BTreeSet<u32> =
            (IdentityLayout::MIN_LOCAL_ID..=n.layout.max_local_id()).collect();
        assert_eq!(used.len() as u32, n.capacity());
        assert_eq!(n.candidate(&used, 12345), None);
    }

    #[test]
    fn values_round_trip() {
        let v = ByLabelsValue {
            identity: Identity::from_raw(65792).unwrap(),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"identity":65792}"#);
        assert_eq!(serde_json::from_str::<ByLabelsValue>(&json).unwrap(), v);
        let l = IdentityValue {
            labels: "app=web,tier=fe".parse().unwrap(),
        };
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"{"labels":{"app":"web","tier":"fe"}}"#);
        assert!(serde_json::from_str::<ByLabelsValue>(r#"{"identity":0}"#).is_err());
        assert!(decode_by_labels("k", b"garbage").is_err());
    }

    proptest! {
        #[test]
        fn candidate_is_free_in_cluster_and_never_reserved(
            bits in 8u8..=10,
            cluster in 1u16..=255,
            used in proptest::collection::btree_set(256u32..1024, 0..200),
            seed in any::<u64>(),
        ) {
            let n = numbering(bits, cluster);
            let id = n.candidate(&used, seed).unwrap();
            prop_assert!(id.reserved().is_none());
            prop_assert_eq!(id.cluster(n.layout), Some(n.cluster));
            let local = n.local_of(id).unwrap();
            prop_assert!(!used.contains(&local));
            prop_assert!(local >= IdentityLayout::MIN_LOCAL_ID);
        }
    }
}
