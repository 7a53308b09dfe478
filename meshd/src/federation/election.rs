//! Lease-based leader election on one etcd key (no home-made consensus: etcd's transaction and
//! lease expiry decide).
//!
//! A candidate that finds the key absent grants a lease and writes the key with it in a
//! transaction guarded by `create_revision == 0`; exactly one candidate wins. The winner keeps
//! the lease alive and steps down on its own before the lease can have expired in etcd when it
//! cannot renew it (so two leaders never act at once for longer than clock drift). The others
//! watch the key and campaign again as soon as it is deleted (the leader died: its lease
//! expired; or it resigned: it revoked its lease). Writes done as the leader are fenced by
//! comparing the key's `create_revision` in the same transaction.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::Instant;

use crate::kvstore::{KvError, KvStore};

/// One election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The election key, e.g. `ironmesh/v1/clusters/red/mirror-leader/green`.
    pub key: String,
    /// Who we are (this meshd's node name); the key's value while we lead.
    pub candidate: String,
    /// Lease TTL in seconds: a dead leader is replaced within about this long.
    pub ttl_secs: i64,
}

impl ElectionConfig {
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.max(1) as u64)
    }
}

/// We hold the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub lease: i64,
    /// The key's create revision: fences writes made as the leader.
    pub create_revision: i64,
    /// When the lease was granted (it cannot expire in etcd before `granted + ttl`).
    pub granted: Instant,
}

impl Leadership {
    /// The guard that makes a transaction apply only while we still hold the key.
    pub fn fence(&self, key: &str) -> Compare {
        Compare::create_revision(key, CompareOp::Equal, self.create_revision)
    }
}

/// The outcome of one campaign attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Campaign {
    Won(Leadership),
    /// Someone holds the key (`holder` is its value); watch from `revision + 1`.
    Held {
        holder: Option<String>,
        revision: i64,
    },
}

/// One attempt: takes the key if it is vacant.
pub async fn campaign(store: &KvStore, cfg: &ElectionConfig) -> Result<Campaign, KvError> {
    let (kvs, revision) = store.list(&cfg.key, false).await?;
    if let Some(kv) = kvs.iter().find(|kv| kv.key == cfg.key.as_bytes()) {
        return Ok(Campaign::Held {
            holder: Some(String::from_utf8_lossy(&kv.value).into_owned()),
            revision,
        });
    }
    let granted = Instant::now();
    let lease = store.lease_grant(cfg.ttl_secs.max(1)).await?;
    let txn = Txn::new()
        .when([Compare::create_revision(
            cfg.key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            cfg.key.clone(),
            cfg.candidate.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(cfg.key.clone(), None)]);
    let resp = match store.txn(txn).await {
        Ok(r) => r,
        Err(e) => {
            let _ = store.lease_revoke(lease).await;
            return Err(e);
        }
    };
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    if resp.succeeded() {
        return Ok(Campaign::Won(Leadership {
            lease,
            create_revision: revision,
            granted,
        }));
    }
    // Lost the race: the lease is of no use.
    let _ = store.lease_revoke(lease).await;
    let holder = match resp.op_responses().first() {
        Some(TxnOpResponse::Get(g)) => g
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    };
    Ok(Campaign::Held { holder, revision })
}

/// Waits until the key is deleted after `revision` (then returns true), or `max_wait` passed
/// or the watch failed (false; the caller campaigns again anyway, which re-reads the key).
pub async fn wait_vacant(store: &KvStore, key: &str, revision: i64, max_wait: Duration) -> bool {
    let mut client = store.client();
    let opts = WatchOptions::new().with_start_revision(revision + 1);
    let wait = async {
        let Ok(mut stream) = client.watch(key, Some(opts)).await else {
            return false;
        };
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    if r.canceled() || r.compact_revision() > 0 {
                        return false;
                    }
                    if r.events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return true;
                    }
                }
                _ => return false,
            }
        }
    };
    tokio::time::timeout(max_wait, wait).await.unwrap_or(false)
}

/// Keeps the lease of `lead` alive; returns (with the reason) when leadership is lost or can
/// no longer be proven: the lease expired, or no renewal succeeded and the lease may expire
/// within a safety margin. Runs forever while all is well; cancel it to resign (then revoke).
pub async fn hold(store: &KvStore, lead: Leadership, ttl: Duration) -> String {
    let interval = (ttl / 3).max(Duration::from_millis(100));
    let margin = ttl / 4;
    // The lease cannot expire in etcd before `valid_until + margin`.
    let mut valid_until = lead.granted + ttl - margin;
    loop {
        let mut client = store.client();
        let opened =
            tokio::time::timeout_at(valid_until, client.lease_keep_alive(lead.lease)).await;
        let (mut keeper, mut responses) = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                return format!("lease {} expired", lead.lease);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "opening the election keep-alive failed; retrying");
                if Instant::now() + Duration::from_millis(100) >= valid_until {
                    return format!("could not renew lease {}: {e}", lead.lease);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => return format!("could not renew lease {} in time", lead.lease),
        };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout_at(valid_until, responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    valid_until = sent + Duration::from_secs(r.ttl() as u64) - margin;
                }
                Ok(Ok(Some(_))) => return format!("lease {} expired", lead.lease),
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => return format!("no renewal of lease {} in time", lead.lease),
            }
            tokio::time::sleep_until(sent + interval).await;
        }
        if Instant::now() >= valid_until {
            return format!("could not renew lease {} in time", lead.lease);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
