//! IPsec from meshd, as [`super::wireguard`] does for WireGuard: every other node of every
//! cluster (from the merged view) gets XFRM policies and ESP SAs on this node, computed by
//! [`plan`] from the node records, the key file and the SPI rotation
//! (`crypto::ipsec::rotation`); this node's announce (SPI it sends with, SPIs it accepts)
//! goes into its own node record, next to its node number ([`ids`]), which makes the SPIs on
//! the wire unique per receiver.
//!
//! The [`Sink`] half records the node list and wakes a worker thread (netlink is blocking);
//! the worker steps on every change and every [`TICK`]: re-reads the key file when it changed
//! (a bad file is reported by path and line and changes nothing), removes SAs no longer
//! wanted, adds missing ones (a failure, e.g. a kernel without ESP, is kept per peer and
//! retried at the next step), then makes ironmesh's policies (priority 1000) equal the
//! desired set: policies deleted or edited by hand are put back within a tick.

pub mod ids;
pub mod plan;
mod status;
mod worker;

#[cfg(test)]
mod plan_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crypto::ipsec::rotation::Announce;
use crypto::rollout::EncryptionMode;
use tokio::sync::watch;

use crate::nodes::NodeRecord;
use crate::reconcile::{PeerKey, Sink, SinkError};

pub use status::IpsecStatusSource;
use worker::Inner;

/// How often the worker steps without a node change (drift repair, SA retries, key file).
pub const TICK: Duration = Duration::from_secs(1);

/// How this node encrypts with IPsec (from `[encryption]`).
#[derive(Debug, Clone)]
pub struct IpsecSettings {
    pub mode: EncryptionMode,
    /// `encryption.ipsec.key_file` (Cilium's format, mode 0600).
    pub key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum IpsecSinkError {
    #[error("cannot start the IPsec thread: {0}")]
    Thread(String),
}

/// The sink the reconcile driver writes peers to.
#[derive(Debug, Clone)]
pub struct IpsecPeerSink {
    inner: Arc<Inner>,
    wake: mpsc::Sender<()>,
}

impl Sink<PeerKey, NodeRecord> for IpsecPeerSink {
    fn upsert(&mut self, key: &PeerKey, value: &NodeRecord) -> Result<(), SinkError> {
        self.inner
            .nodes
            .lock()
            .expect("nodes lock")
            .insert(key.clone(), value.clone());
        let _ = self.wake.send(());
        Ok(())
    }

    fn remove(&mut self, key: &PeerKey) -> Result<(), SinkError> {
        self.inner.nodes.lock().expect("nodes lock").remove(key);
        let _ = self.wake.send(());
        Ok(())
    }
}

/// The node's IPsec. The worker ends once this and every sink clone are dropped (policies
/// and SAs stay, so traffic keeps flowing while meshd restarts).
#[derive(Debug)]
pub struct IpsecPeers {
    sink: IpsecPeerSink,
    announce: watch::Receiver<Option<Announce>>,
    _thread: std::thread::JoinHandle<()>,
}

impl IpsecPeers {
    /// Starts the worker; `own` is this node's record (addresses and PodCIDRs of the local
    /// side of every policy).
    pub fn spawn(settings: &IpsecSettings, own: NodeRecord) -> Result<Self, IpsecSinkError> {
        let (publish, announce) = watch::channel(None);
        let inner = Arc::new(Inner::new(settings.clone(), own, publish));
        let (wake, rx) = mpsc::channel::<()>();
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("ipsec".into())
            .spawn(move || {
                loop {
                    worker.step();
                    match rx.recv_timeout(TICK) {
                        Ok(()) => while rx.try_recv().is_ok() {},
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| IpsecSinkError::Thread(e.to_string()))?;
        tracing::info!(mode = %settings.mode, key_file = %settings.key_file.display(), "IPsec encryption started");
        Ok(Self {
            sink: IpsecPeerSink {
                inner,
                wake: wake.clone(),
            },
            announce,
            _thread: thread,
        })
    }

    pub fn sink(&self) -> IpsecPeerSink {
        self.sink.clone()
    }

    /// This node's announce, to publish in its node record (`None` until a key is loaded).
    pub fn announce(&self) -> watch::Receiver<Option<Announce>> {
        self.announce.clone()
    }

    pub fn status_source(&self) -> IpsecStatusSource {
        IpsecStatusSource(self.sink.inner.clone())
    }
}

/// The node records the worker reconciles to (own included under its key).
pub(super) type Nodes = Mutex<BTreeMap<PeerKey, NodeRecord>>;
