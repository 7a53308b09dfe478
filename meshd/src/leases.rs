//! Keys that live as long as their writer, on a pool of etcd leases with a bounded number of
//! keys each.
//!
//! etcd's put-with-lease and lease expiry cost grows with the keys attached to one lease, so a
//! node with thousands of endpoints must not hang them all on its node lease. [`LeasedKeys`]
//! attaches each key to a lease that has fewer than `max_keys_per_lease` keys (granting a new one
//! when all are full), keeps every lease alive, and when a lease has expired anyway (the node was
//! cut off for longer than the TTL) writes that lease's keys again under a new lease.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp};
use tokio::sync::Mutex;

use crate::kvstore::{KvError, KvStore};

/// Operations per transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS: usize = 100;

/// Lease pool settings.
#[derive(Debug, Clone, Copy)]
pub struct LeasePoolConfig {
    pub ttl_secs: i64,
    /// At most this many keys on one lease (Cilium uses 1000 per lease for the same reason).
    pub max_keys_per_lease: usize,
    /// How often every lease is renewed (default TTL/4: one failed renewal plus a failover
    /// to another etcd member still lands before the TTL).
    pub keepalive_interval: Duration,
}

impl LeasePoolConfig {
    pub fn new(ttl_secs: i64, max_keys_per_lease: usize) -> Self {
        let ttl_secs = ttl_secs.max(2);
        Self {
            ttl_secs,
            max_keys_per_lease: max_keys_per_lease.max(1),
            keepalive_interval: Duration::from_millis(ttl_secs as u64 * 1000 / 4),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// lease -> its keys.
    leases: BTreeMap<i64, BTreeSet<String>>,
    /// key -> (value, lease).
    keys: HashMap<String, (Vec<u8>, i64)>,
    /// Open keep-alive streams, per lease.
    keepers: HashMap<i64, Keeper>,
    regrants: u64,
}

/// Counters of a [`LeasedKeys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStats {
    pub leases: usize,
    pub keys: usize,
    /// The most keys on any one lease (never above `max_keys_per_lease`).
    pub max_keys_on_a_lease: usize,
    /// Leases found expired and replaced (their keys written again).
    pub regrants: u64,
}

/// A writer's leased keys. Dropping it stops the renewals (the keys vanish after the TTL, as
/// when the node dies); [`revoke_all`](Self::revoke_all) removes them at once.
pub struct LeasedKeys {
    store: KvStore,
    cfg: LeasePoolConfig,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LeasedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedKeys")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Drop for LeasedKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeasedKeys {
    pub fn new(store: KvStore, cfg: LeasePoolConfig) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let task = tokio::spawn(renew(store.clone(), cfg, inner.clone()));
        Self {
            store,
            cfg,
            inner,
            task,
        }
    }

    pub async fn stats(&self) -> LeaseStats {
        let g = self.inner.lock().await;
        LeaseStats {
            leases: g.leases.len(),
            keys: g.keys.len(),
            max_keys_on_a_lease: g.leases.values().map(BTreeSet::len).max().unwrap_or(0),
            regrants: g.regrants,
        }
    }

    /// The leases in use (for status and tests).
    pub async fn lease_ids(&self) -> Vec<i64> {
        self.inner.lock().await.leases.keys().copied().collect()
    }

    /// Writes one key (see [`put_many`](Self::put_many)).
    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.put_many(vec![(key, value)]).await
    }

    /// Writes keys under leases with room, in transactions of [`TXN_OPS`] puts. A key already
    /// written keeps its lease.
    pub async fn put_many(&self, kvs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        let mut g = self.inner.lock().await;
        let mut placed: Vec<(String, Vec<u8>, i64)> = Vec::with_capacity(kvs.len());
        let mut fresh: BTreeMap<i64, usize> = BTreeMap::new();
        for (k, v) in kvs {
            let lease = match g.keys.get(&k) {
                Some((_, l)) => *l,
                None => {
                    let with_room = g
                        .leases
                        .iter()
                        .find(|(l, ks)| {
                            ks.len() + fresh.get(l).copied().unwrap_or(0)
                                < self.cfg.max_keys_per_lease
                        })
                        .map(|(l, _)| *l);
                    match with_room {
                        Some(l) => l,
                        None => {
                            let l = self.store.lease_grant(self.cfg.ttl_secs).await?;
                            g.leases.insert(l, BTreeSet::new());
                            l
                        }
                    }
                }
            };
            *fresh.entry(lease).or_default() += usize::from(!g.keys.contains_key(&k));
            placed.push((k, v, lease));
        }
        for chunk in placed.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v, l)| {
                    TxnOp::put(
                        k.clone(),
                        v.clone(),
                        Some(etcd_client::PutOptions::new().with_lease(*l)),
                    )
                })
                .collect();
            self.store.txn(Txn::new().and_then(ops)).await?;
            for (k, v, l) in chunk {
                g.leases.entry(*l).or_default().insert(k.clone());
                g.keys.insert(k.clone(), (v.clone(), *l));
            }
        }
        Ok(())
    }

    /// Writes one key only if `guard` holds (one transaction); `Ok(false)` when it did not.
    pub async fn put_guarded(
        &self,
        key: String,
        value: Vec<u8>,
        guard: etcd_client::Compare,
    ) -> Result<bool, KvError> {
        let mut g = self.inner.lock().await;
        let lease = match g.keys.get(&key) {
            Some((_, l)) => *l,
            None => {
                let room = g
                    .leases
                    .iter()
                    .find(|(_, ks)| ks.len() < self.cfg.max_keys_per_lease)
                    .map(|(l, _)| *l);
                match room {
                    Some(l) => l,
                    None => {
                        let l = self.store.lease_grant(self.cfg.ttl_secs).await?;
                        g.leases.insert(l, BTreeSet::new());
                        l
                    }
                }
            }
        };
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(
            key.clone(),
            value.clone(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )]);
        if !self.store.txn(txn).await?.succeeded() {
            return Ok(false);
        }
        g.leases.entry(lease).or_default().insert(key.clone());
        g.keys.insert(key, (value, lease));
        Ok(true)
    }

    /// Deletes keys (in transactions of [`TXN_OPS`]); unknown keys are deleted too.
    pub async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        let mut g = self.inner.lock().await;
        for chunk in keys.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::delete(k.clone(), None))
                .collect();
            self.store.txn(Txn::new().and_then(ops)).await?;
            for k in chunk {
                if let Some((_, l)) = g.keys.remove(k)
                    && let Some(ks) = g.leases.get_mut(&l)
                {
                    ks.remove(k);
                }
            }
        }
        Ok(())
    }

    pub async fn delete(&self, key: String) -> Result<(), KvError> {
        self.delete_many(vec![key]).await
    }

    /// Revokes every lease: all keys go at once.
    pub async fn revoke_all(&self) -> Result<(), KvError> {
        let mut g = self.inner.lock().await;
        let leases: Vec<i64> = g.leases.keys().copied().collect();
        for l in leases {
            self.store.lease_revoke(l).await?;
            if let Some(ks) = g.leases.remove(&l) {
                for k in ks {
                    g.keys.remove(&k);
                }
            }
            g.keepers.remove(&l);
        }
        Ok(())
    }
}

/// Renews each lease every interval; replaces expired ones and rewrites their keys. The lock
/// is not held while a renewal waits on etcd, so writers of keys are not held up by an etcd
/// member that does not answer.
async fn renew(store: KvStore, cfg: LeasePoolConfig, inner: Arc<Mutex<Inner>>) {
    let mut failed = false;
    loop {
        // After a failed round (no member could renew: an election), try again soon.
        let pause = if failed {
            cfg.keepalive_interval.min(Duration::from_millis(250))
        } else {
            cfg.keepalive_interval
        };
        tokio::time::sleep(pause).await;
        failed = false;
        let leases: Vec<i64> = inner.lock().await.leases.keys().copied().collect();
        for lease in leases {
            // A failed attempt takes its member out of rotation: once more at once, on
            // another member. If that fails too, etcd is unreachable or electing: end the
            // round rather than wait a timeout per lease.
            let mut outcome = None;
            for attempt in 0..2 {
                let keeper = inner.lock().await.keepers.remove(&lease);
                match keep_alive_once(&store, keeper, lease).await {
                    Ok(r) => {
                        outcome = Some(r);
                        break;
                    }
                    Err(e) if attempt == 0 => {
                        tracing::warn!(lease, error = %e, "lease keep-alive failed; retrying through another member");
                    }
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "lease keep-alive failed again; retrying soon");
                    }
                }
            }
            match outcome {
                Some(Some(keeper)) => {
                    let mut g = inner.lock().await;
                    // Unless the lease went meanwhile (revoked, its keys deleted).
                    if g.leases.contains_key(&lease) {
                        g.keepers.insert(lease, keeper);
                    }
                }
                Some(None) => {
                    let mut g = inner.lock().await;
                    if g.leases.contains_key(&lease)
                        && let Err(e) = regrant(&store, &cfg, &mut g, lease).await
                    {
                        tracing::warn!(lease, error = %e, "re-granting an expired lease failed; retrying");
                    }
                }
                None => {
                    failed = true;
                    break;
                }
            }
        }
    }
}

type Keeper = (usize, LeaseKeeper, LeaseKeepAliveStream);

/// Renews `lease` through `keeper` (or a new stream on a healthy member); `Ok(None)`: the
/// lease has expired. A failure is reported to the member health, so the next attempt goes
/// to another member when this one has no leader or does not answer.
async fn keep_alive_once(
    store: &KvStore,
    keeper: Option<Keeper>,
    lease: i64,
) -> Result<Option<Keeper>, KvError> {
    // Half the op timeout: a failed attempt leaves time for one on another member.
    let timeout = store.op_timeout() / 2;
    let Some((member, mut keeper, mut stream)) = keeper else {
        let (member, mut client) = store.member_client();
        return match tokio::time::timeout(timeout, client.lease_keep_alive(lease)).await {
            // Opening the stream renewed the lease.
            Ok(Ok((k, s))) => {
                store.report_ok(member);
                Ok(Some((member, k, s)))
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                Ok(None)
            }
            Ok(Err(e)) => {
                let e = KvError::from_etcd("lease keep-alive", e);
                store.report_failure(member, &e);
                Err(e)
            }
            Err(_) => {
                let e = timed_out(store);
                store.report_failure(member, &e);
                Err(e)
            }
        };
    };
    let fail = |e: KvError| {
        store.report_failure(member, &e);
        e
    };
    keeper
        .keep_alive()
        .await
        .map_err(|e| fail(KvError::from_etcd("lease keep-alive", e)))?;
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(r))) if r.ttl() > 0 => Ok(Some((member, keeper, stream))),
        Ok(Ok(Some(_))) => Ok(None),
        Ok(Ok(None)) => Err(KvError::Etcd {
            op: "lease keep-alive".into(),
            detail: "stream ended".into(),
            transient: true,
            kind: crate::kvstore::ErrorKind::Transport,
        }),
        Ok(Err(e)) => Err(fail(KvError::from_etcd("lease keep-alive", e))),
        Err(_) => Err(fail(timed_out(store))),
    }
}

fn timed_out(store: &KvStore) -> KvError {
    KvError::Timeout {
        op: "lease keep-alive".into(),
        timeout: store.op_timeout() / 2,
        endpoints: store.endpoints().into(),
    }
}

async fn regrant(
    store: &KvStore,
    cfg: &LeasePoolConfig,
    g: &mut Inner,
    old: i64,
) -> Result<(), KvError> {
    let new = store.lease_grant(cfg.ttl_secs).await?;
    let keys: Vec<String> = g
        .leases
        .get(&old)
        .map(|k| k.iter().cloned().collect())
        .unwrap_or_default();
    for chunk in keys.chunks(TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .filter_map(|k| g.keys.get(k).map(|(v, _)| (k, v)))
            .map(|(k, v)| {
                TxnOp::put(
                    k.clone(),
                    v.clone(),
                    Some(etcd_client::PutOptions::new().with_lease(new)),
                )
            })
            .collect();
        store.txn(Txn::new().and_then(ops)).await?;
    }
    g.keepers.remove(&old);
    let set = g.leases.remove(&old).unwrap_or_default();
    for k in &set {
        if let Some(e) = g.keys.get_mut(k) {
            e.1 = new;
        }
    }
    g.leases.insert(new, set);
    g.regrants += 1;
    tracing::info!(
        old,
        new,
        keys = keys.len(),
        "lease had expired; keys written again"
    );
    Ok(())
}
