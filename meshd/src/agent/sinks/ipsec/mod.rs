//! IPsec from meshd, as [`super::wireguard`] does for WireGuard: every other node of every
//! cluster (from the merged view) gets XFRM policies and ESP SAs on this node, computed by
//! [`plan`] from the node records, the key file and the SPI rotation
//! (`crypto::ipsec::rotation`); this node's announce (SPI it sends with, SPIs it accepts)
//! goes into its own node record, next to its node number ([`ids`]), which makes the SPIs on
//! the wire unique per receiver.
//!
//! The [`NodeSink`] half records the node list and wakes a worker thread (netlink is blocking);
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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crypto::ipsec::rotation::Announce;
use crypto::rollout::EncryptionMode;
use tokio::sync::watch;

use super::NodeSink;
use crate::nodes::NodeRecord;

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

/// The node's IPsec. The worker ends once this and every sink clone are dropped (policies
/// and SAs stay, so traffic keeps flowing while meshd restarts).
#[derive(Debug)]
pub struct IpsecPeers {
    inner: Arc<Inner>,
    sink: NodeSink,
    announce: watch::Receiver<Option<Announce>>,
    _thread: std::thread::JoinHandle<()>,
}

impl IpsecPeers {
    /// Starts the worker; `own` is this node's record (addresses and PodCIDRs of the local
    /// side of every policy).
    pub fn spawn(settings: &IpsecSettings, own: NodeRecord) -> Result<Self, IpsecSinkError> {
        let (publish, announce) = watch::channel(None);
        let inner = Arc::new(Inner::new(settings.clone(), own, publish));
        let worker = inner.clone();
        let (sink, thread) =
            NodeSink::spawn_worker("ipsec", inner.nodes.clone(), TICK, move || {
                worker.step();
                None
            })
            .map_err(|e| IpsecSinkError::Thread(e.to_string()))?;
        tracing::info!(mode = %settings.mode, key_file = %settings.key_file.display(), "IPsec encryption started");
        Ok(Self {
            inner,
            sink,
            announce,
            _thread: thread,
        })
    }

    pub fn sink(&self) -> NodeSink {
        self.sink.clone()
    }

    /// This node's announce, to publish in its node record (`None` until a key is loaded).
    pub fn announce(&self) -> watch::Receiver<Option<Announce>> {
        self.announce.clone()
    }

    pub fn status_source(&self) -> IpsecStatusSource {
        IpsecStatusSource(self.inner.clone())
    }
}
