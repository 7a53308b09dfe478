//! Runs [`MeshDesired`] on a merged view's change stream and flushes into the sinks.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ClusterName, NodeName};
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};

use super::{Advert, FlushReport, IpCacheEntry, MeshDesired, NodeRecord, PeerKey, Sink};
use crate::federation::ViewChange;
use crate::services::{Frontend, FrontendSpec};

/// The four consumers.
pub struct Sinks {
    pub peers: Box<dyn Sink<PeerKey, NodeRecord>>,
    pub ipcache: Box<dyn Sink<IpAddr, IpCacheEntry>>,
    pub services: Box<dyn Sink<Frontend, FrontendSpec>>,
    pub adverts: Box<dyn Sink<IpNet, Advert>>,
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sinks { peers, ipcache, services, adverts }")
    }
}

/// Drives the reconcilers. Dropping it stops the task.
#[derive(Debug)]
pub struct ReconcileDriver {
    desired: Arc<Mutex<MeshDesired>>,
    flushes: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReconcileDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReconcileDriver {
    /// `changes` is the receiving end of the channel given to
    /// [`MergedView::spawn`](crate::federation::MergedView::spawn). Changes queued together
    /// are applied as one batch, then flushed; keys a sink refused are retried every
    /// `retry_interval`.
    pub fn spawn(
        local: ClusterName,
        me: NodeName,
        changes: mpsc::UnboundedReceiver<ViewChange>,
        sinks: Sinks,
        retry_interval: Duration,
    ) -> Self {
        Self::spawn_with(MeshDesired::new(local, me), changes, sinks, retry_interval)
    }

    /// As [`spawn`](Self::spawn), from a configured (e.g. [`MeshDesired::with_vip_adverts`])
    /// and empty desired state.
    pub fn spawn_with(
        desired: MeshDesired,
        mut changes: mpsc::UnboundedReceiver<ViewChange>,
        mut sinks: Sinks,
        retry_interval: Duration,
    ) -> Self {
        let desired = Arc::new(Mutex::new(desired));
        let (tx, flushes) = watch::channel(0u64);
        let d = desired.clone();
        let task = tokio::spawn(async move {
            loop {
                let pending = d.lock().expect("desired lock").pending() > 0;
                let first = if pending {
                    match tokio::time::timeout(retry_interval, changes.recv()).await {
                        Ok(c) => c.map(Some),
                        Err(_) => Some(None),
                    }
                } else {
                    changes.recv().await.map(Some)
                };
                let Some(first) = first else { return };
                let mut g = d.lock().expect("desired lock");
                if let Some(c) = first {
                    g.apply(&c);
                    while let Ok(c) = changes.try_recv() {
                        g.apply(&c);
                    }
                }
                let reports: [FlushReport; 4] = g.flush(
                    sinks.peers.as_mut(),
                    sinks.ipcache.as_mut(),
                    sinks.services.as_mut(),
                    sinks.adverts.as_mut(),
                );
                drop(g);
                tracing::trace!(?reports, "reconciled");
                tx.send_modify(|n| *n += 1);
            }
        });
        Self {
            desired,
            flushes,
            task,
        }
    }

    /// Reads the desired state.
    pub fn with<T>(&self, f: impl FnOnce(&MeshDesired) -> T) -> T {
        f(&self.desired.lock().expect("desired lock"))
    }

    /// Flushes done so far.
    pub fn flushes(&self) -> u64 {
        *self.flushes.borrow()
    }
}
