//! Reconcilers: meshd's merged view turned into desired state for the components that act on
//! it, applied as differences through sink traits those components implement.
//!
//! | consumer | sink | key → value |
//! |---|---|---|
//! | crypto (WireGuard / IPsec peers) | [`PeerSink`] | (cluster, node) → [`NodeRecord`] (every node but this one) |
//! | datapath IP cache | [`IpCacheSink`] | IP → [`IpCacheEntry`] (endpoints and node addresses) |
//! | datapath services | [`ServiceSink`] | [`Frontend`] → [`FrontendSpec`] (global services merged, affinity applied) |
//! | bgpd adverts | [`AdvertSink`] | prefix → [`Advert`] (this node's PodCIDRs, the cluster's LB VIPs, with the attributes of the BGPAdvertisements that select them) |
//!
//! [`Reconciler`] keeps the desired and the applied state of one sink; only keys whose desired
//! value differs from the applied one are sent, a failed key is retried at the next flush, and
//! [`Reconciler::resync`] re-sends everything after the consumer restarted.
//! [`MeshDesired`] (sans-IO) maintains the four desired states from [`ViewChange`]s;
//! [`ReconcileDriver`] runs it on a merged view's change stream.

mod desired;
mod driver;
mod recording;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

pub use desired::{
    Advert, AdvertAttributes, AdvertSource, IpCacheEntry, MeshDesired, PeerKey, VipAdverts,
};
pub use driver::{ReconcileDriver, Sinks};
pub use recording::{Recorded, RecordingSink};

pub use crate::federation::ViewChange;
pub use crate::nodes::NodeRecord;
pub use crate::services::{Frontend, FrontendSpec};

/// A consumer's failure to apply one key; the key is retried at the next flush.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where desired state goes: a component's actual state (WireGuard peers, eBPF maps, adverts).
/// Both calls must be idempotent.
pub trait Sink<K, V>: Send {
    fn upsert(&mut self, key: &K, value: &V) -> Result<(), SinkError>;
    fn remove(&mut self, key: &K) -> Result<(), SinkError>;
}

/// crypto's view: the peers to program.
pub trait PeerSink: Sink<PeerKey, NodeRecord> {}
impl<T: Sink<PeerKey, NodeRecord>> PeerSink for T {}

/// The datapath's IP cache.
pub trait IpCacheSink: Sink<std::net::IpAddr, IpCacheEntry> {}
impl<T: Sink<std::net::IpAddr, IpCacheEntry>> IpCacheSink for T {}

/// The datapath's service (load-balancing) table.
pub trait ServiceSink: Sink<Frontend, FrontendSpec> {}
impl<T: Sink<Frontend, FrontendSpec>> ServiceSink for T {}

/// bgpd's desired adverts.
pub trait AdvertSink: Sink<ipnet::IpNet, Advert> {}
impl<T: Sink<ipnet::IpNet, Advert>> AdvertSink for T {}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub upserts: usize,
    pub removes: usize,
    /// Keys the sink refused; retried next time.
    pub failed: usize,
}

/// Desired vs applied state of one sink.
#[derive(Debug)]
pub struct Reconciler<K, V> {
    desired: BTreeMap<K, V>,
    applied: BTreeMap<K, V>,
    dirty: BTreeSet<K>,
}

impl<K, V> Default for Reconciler<K, V> {
    fn default() -> Self {
        Self {
            desired: BTreeMap::new(),
            applied: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone + Debug, V: PartialEq + Clone + Debug> Reconciler<K, V> {
    /// Sets (`Some`) or clears (`None`) the desired value of a key.
    pub fn set(&mut self, key: K, value: Option<V>) {
        let changed = match &value {
            Some(v) => self.desired.get(&key) != Some(v),
            None => self.desired.contains_key(&key),
        };
        if !changed {
            return;
        }
        match value {
            Some(v) => self.desired.insert(key.clone(), v),
            None => self.desired.remove(&key),
        };
        if self.desired.get(&key) == self.applied.get(&key) {
            self.dirty.remove(&key);
        } else {
            self.dirty.insert(key);
        }
    }

    pub fn desired(&self) -> &BTreeMap<K, V> {
        &self.desired
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.desired.get(key)
    }

    /// Keys waiting to be applied (changed or failed).
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Sends the differences to `sink`.
    pub fn flush(&mut self, sink: &mut dyn Sink<K, V>) -> FlushReport {
        let mut report = FlushReport::default();
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            let result = match self.desired.get(&key) {
                Some(v) => sink.upsert(&key, v).map(|()| {
                    report.upserts += 1;
                    self.applied.insert(key.clone(), v.clone());
                }),
                None => sink.remove(&key).map(|()| {
                    report.removes += 1;
                    self.applied.remove(&key);
                }),
            };
            if let Err(e) = result {
                tracing::warn!(?key, error = %e, "sink refused a change; will retry");
                report.failed += 1;
                self.dirty.insert(key);
            }
        }
        report
    }

    /// The consumer lost its state (restart): everything desired is sent again, and whatever
    /// was applied and is no longer desired is removed.
    pub fn resync(&mut self) {
        self.dirty.extend(self.desired.keys().cloned());
        self.dirty.extend(self.applied.keys().cloned());
        self.applied.clear();
    }
}

#[cfg(test)]
mod tests;
