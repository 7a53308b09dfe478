//! Garbage collection of one cluster's allocations, safe to run on several meshd at once (every
//! delete is a guarded transaction; the worst a duplicate collector does is lose a race).
//!
//! - Identities: a node using an identity holds `identity-refs/<id>/<node>` under its pooled
//!   leases ([`IdentityRefs`]), written only while the identity exists. [`IdentityGc`] deletes an
//!   identity's two keys once it has had no reference for the grace period, in a transaction
//!   that requires the refs range to be empty and both keys unchanged: it never deletes an
//!   identity a node references, even one whose reference appeared a moment ago.
//! - PodCIDRs: [`PodCidrGc`] releases a node's CIDRs once its (leased) node record has been gone
//!   for the grace period, guarded by the record still being absent.
//!
//! The grace clocks ([`GraceTracker`]) are in memory: a collector that restarts waits a full
//! grace period again, which errs on the side of keeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{ClusterName, Identity, Labels, NodeName};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnet::IpNet;
use tokio::time::Instant;

use crate::identity::{IdentityAllocError, IdentityAllocator, IdentityValue};
use crate::ipam::{IpamError, PodCidrAllocator};
use crate::kvstore::{KvError, KvStore, prefix_end};
use crate::leases::LeasedKeys;
use crate::schema::{Key, Resource, ResourceKind, Scope};

/// Since when each candidate has been unused (sans-IO).
#[derive(Debug)]
pub struct GraceTracker<K> {
    grace: Duration,
    since: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> GraceTracker<K> {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: BTreeMap::new(),
        }
    }

    /// Takes the current set of unused candidates; returns those unused for the whole grace
    /// period. A candidate that was used in between starts over.
    pub fn observe(&mut self, unused: impl IntoIterator<Item = K>, now: Instant) -> Vec<K> {
        let unused: BTreeSet<K> = unused.into_iter().collect();
        self.since.retain(|k, _| unused.contains(k));
        let mut due = Vec::new();
        for k in unused {
            let since = *self.since.entry(k.clone()).or_insert(now);
            if now.duration_since(since) >= self.grace {
                due.push(k);
            }
        }
        due
    }

    pub fn forget(&mut self, k: &K) {
        self.since.remove(k);
    }

    /// Candidates currently waiting.
    pub fn waiting(&self) -> usize {
        self.since.len()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Identity(#[from] IdentityAllocError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(
        "identity for {labels} was garbage-collected {attempts} times while node {node} tried to reference it"
    )]
    RefRace {
        labels: String,
        node: String,
        attempts: u32,
    },
}

/// A node's references to the identities it uses.
#[derive(Debug)]
pub struct IdentityRefs<'a> {
    scope: Scope,
    node: NodeName,
    keys: &'a LeasedKeys,
}

impl<'a> IdentityRefs<'a> {
    pub fn new(cluster: ClusterName, node: NodeName, keys: &'a LeasedKeys) -> Self {
        Self {
            scope: Scope::Cluster(cluster),
            node,
            keys,
        }
    }

    fn key(&self, r: Resource) -> String {
        Key::Resource {
            scope: self.scope.clone(),
            resource: r,
        }
        .to_string()
    }

    /// The identity of `labels`, allocated if needed, with this node's reference on it. If the
    /// collector deleted the identity between allocation and reference, allocates again.
    pub async fn acquire(
        &self,
        alloc: &IdentityAllocator,
        labels: &Labels,
    ) -> Result<Identity, GcError> {
        const ATTEMPTS: u32 = 5;
        for _ in 0..ATTEMPTS {
            let id = alloc.allocate(labels).await?;
            let by_id = self.key(Resource::Identity(id));
            let r = self.key(Resource::IdentityRef(id, self.node.clone()));
            let guard = Compare::create_revision(by_id, CompareOp::Greater, 0);
            if self.keys.put_guarded(r, b"{}".to_vec(), guard).await? {
                return Ok(id);
            }
            alloc.forget(labels);
        }
        Err(GcError::RefRace {
            labels: labels.to_string(),
            node: self.node.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// Drops this node's reference (the identity becomes collectable when no node has one).
    pub async fn release(&self, id: Identity) -> Result<(), GcError> {
        let r = self.key(Resource::IdentityRef(id, self.node.clone()));
        Ok(self.keys.delete(r).await?)
    }
}

/// What one collection round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Identities (or nodes, for PodCIDRs) unused but still within the grace period.
    pub waiting: usize,
    pub deleted_identities: Vec<Identity>,
    pub released: Vec<(NodeName, Vec<IpNet>)>,
    /// Deletes that lost a race (something changed: kept).
    pub kept_by_race: usize,
}

/// The identity collector of one cluster.
#[derive(Debug)]
pub struct IdentityGc {
    store: KvStore,
    scope: Scope,
    tracker: GraceTracker<Identity>,
}

impl IdentityGc {
    pub fn new(store: KvStore, cluster: ClusterName, grace: Duration) -> Self {
        Self {
            store,
            scope: Scope::Cluster(cluster),
            tracker: GraceTracker::new(grace),
        }
    }

    /// One round: lists identities and references, deletes those unreferenced for the grace.
    pub async fn run_once(&mut self) -> Result<GcReport, GcError> {
        let (ids, _) = self
            .store
            .list(&self.scope.kind_prefix(ResourceKind::Identities), false)
            .await?;
        let (refs, _) = self
            .store
            .list(&self.scope.kind_prefix(ResourceKind::IdentityRefs), true)
            .await?;
        let referenced: BTreeSet<Identity> = refs
            .iter()
            .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                Ok(Key::Resource {
                    resource: Resource::IdentityRef(id, _),
                    ..
                }) => Some(id),
                _ => None,
            })
            .collect();
        let mut known: BTreeMap<Identity, (i64, Option<Labels>)> = BTreeMap::new();
        for kv in &ids {
            if let Ok(Key::Resource {
                resource: Resource::Identity(id),
                ..
            }) = Key::parse_bytes(&kv.key)
            {
                let labels = serde_json::from_slice::<IdentityValue>(&kv.value)
                    .ok()
                    .map(|v| v.labels);
                known.insert(id, (kv.mod_revision, labels));
            }
        }
        let unused = known.keys().filter(|id| !referenced.contains(id)).copied();
        let due = self.tracker.observe(unused, Instant::now());
        let mut report = GcReport::default();
        for id in due {
            let (by_id_rev, labels) = &known[&id];
            let Some(labels) = labels else {
                tracing::warn!(%id, "identity value malformed; not collecting it");
                continue;
            };
            if self.delete(id, *by_id_rev, labels).await? {
                report.deleted_identities.push(id);
                self.tracker.forget(&id);
            } else {
                report.kept_by_race += 1;
            }
        }
        report.waiting = self.tracker.waiting();
        Ok(report)
    }

    async fn delete(&self, id: Identity, by_id_rev: i64, labels: &Labels) -> Result<bool, GcError> {
        let key = |r| {
            Key::Resource {
                scope: self.scope.clone(),
                resource: r,
            }
            .to_string()
        };
        let by_id = key(Resource::Identity(id));
        let by_labels = key(Resource::IdentityByLabels(labels.clone()));
        // The by-labels key must still point at this identity.
        let mut when = vec![Compare::mod_revision(
            by_id.clone(),
            CompareOp::Equal,
            by_id_rev,
        )];
        let mut ops = vec![TxnOp::delete(by_id, None)];
        if let Some(kv) = self.store.get(&by_labels).await?
            && serde_json::from_slice::<crate::identity::ByLabelsValue>(&kv.value)
                .is_ok_and(|v| v.identity == id)
        {
            when.push(Compare::mod_revision(
                by_labels.clone(),
                CompareOp::Equal,
                kv.mod_revision,
            ));
            ops.push(TxnOp::delete(by_labels, None));
        }
        // No reference may exist (etcd 3.3+ compares every key of a range; an empty range
        // compares as version 0).
        let refs = format!(
            "{}{}/",
            self.scope.kind_prefix(ResourceKind::IdentityRefs),
            id
        );
        when.push(
            Compare::version(refs.clone(), CompareOp::Equal, 0)
                .with_range(prefix_end(refs.as_bytes())),
        );
        let ok = self
            .store
            .txn(Txn::new().when(when).and_then(ops))
            .await?
            .succeeded();
        if ok {
            tracing::info!(%id, %labels, "garbage-collected an unreferenced identity");
        }
        Ok(ok)
    }
}

/// Releases the PodCIDRs of nodes gone for the grace period.
#[derive(Debug)]
pub struct PodCidrGc {
    store: KvStore,
    scope: Scope,
    ipam: Arc<PodCidrAllocator>,
    tracker: GraceTracker<NodeName>,
}

impl PodCidrGc {
    pub fn new(
        store: KvStore,
        cluster: ClusterName,
        ipam: Arc<PodCidrAllocator>,
        grace: Duration,
    ) -> Self {
        Self {
            store,
            scope: Scope::Cluster(cluster),
            ipam,
            tracker: GraceTracker::new(grace),
        }
    }

    pub async fn run_once(&mut self) -> Result<GcReport, GcError> {
        let names = |kvs: Vec<crate::kvstore::Kv>| -> BTreeSet<NodeName> {
            kvs.iter()
                .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                    Ok(Key::Resource {
                        resource: Resource::Node(n) | Resource::PodCidrsOfNode(n),
                        ..
                    }) => Some(n),
                    _ => None,
                })
                .collect()
        };
        // Allocations first: a node registering between the two listings is then seen alive.
        let (allocs, _) = self
            .store
            .list(&self.scope.kind_prefix(ResourceKind::PodCidrsByNode), true)
            .await?;
        let (nodes, _) = self
            .store
            .list(&self.scope.kind_prefix(ResourceKind::Nodes), true)
            .await?;
        let allocated = names(allocs);
        let alive = names(nodes);
        let gone: Vec<NodeName> = allocated.difference(&alive).cloned().collect();
        let due = self.tracker.observe(gone, Instant::now());
        let mut report = GcReport::default();
        for node in due {
            match self.ipam.release_if_node_absent(&node).await? {
                Some(cidrs) => {
                    tracing::info!(%node, ?cidrs, "released the PodCIDRs of a node gone for the grace period");
                    report.released.push((node.clone(), cidrs));
                    self.tracker.forget(&node);
                }
                None => report.kept_by_race += 1,
            }
        }
        report.waiting = self.tracker.waiting();
        Ok(report)
    }
}

/// Runs both collectors every `interval` until dropped (several meshd may run them: every
/// delete is guarded). The latest report of each is published.
#[derive(Debug)]
pub struct GcController {
    reports: tokio::sync::watch::Receiver<(GcReport, GcReport)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GcController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GcController {
    pub fn spawn(mut identities: IdentityGc, mut cidrs: PodCidrGc, interval: Duration) -> Self {
        let (tx, reports) = tokio::sync::watch::channel(Default::default());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let ids = identities.run_once().await;
                let nets = cidrs.run_once().await;
                match (ids, nets) {
                    (Ok(a), Ok(b)) => {
                        tx.send_replace((a, b));
                    }
                    (a, b) => {
                        for e in [a.err(), b.err()].into_iter().flatten() {
                            tracing::warn!(error = %e, "garbage collection round failed; retrying");
                        }
                    }
                }
            }
        });
        Self { reports, task }
    }

    /// The last successful round: (identities, PodCIDRs).
    pub fn last(&self) -> (GcReport, GcReport) {
        self.reports.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_tracker_waits_and_restarts_when_used() {
        let t0 = Instant::now();
        let mut g = GraceTracker::new(Duration::from_secs(10));
        assert!(g.observe([1, 2], t0).is_empty());
        assert_eq!(
            g.observe([1, 2], t0 + Duration::from_secs(9)),
            Vec::<i32>::new()
        );
        // 2 was used again in between: its clock restarts.
        assert_eq!(g.observe([1], t0 + Duration::from_secs(10)), vec![1]);
        assert!(g.observe([1, 2], t0 + Duration::from_secs(11)).contains(&1));
        assert!(!g.observe([2], t0 + Duration::from_secs(20)).contains(&2));
        assert_eq!(g.observe([2], t0 + Duration::from_secs(21)), vec![2]);
        g.forget(&2);
        assert_eq!(g.waiting(), 0);
    }
}
