//! The agent's reconciler sinks: meshd's desired state applied to the real components.
//!
//! | sink | component | how |
//! |---|---|---|
//! | [`bgp::BgpAdverts`] | bgpd | `AddAdverts`/`RemoveAdverts` over bgpd's API socket, resynced after every reconnect |
//! | [`wireguard::WireGuardPeers`] | crypto | `NodeEncryption` steps: WireGuard peers, tunnel routes, nftables filter |
//! | [`ipsec::IpsecPeers`] | crypto | XFRM policies and ESP SAs per peer, SPI rotation via node records |
//! | [`datapath::DatapathMaps`] | datapath | IP cache and service entries written to the maps pinned under `datapath.bpffs` |
//!
//! A component that is not configured gets a [`NullSink`].

pub mod bgp;
pub mod datapath;
pub mod ipsec;
pub mod wireguard;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use api::mesh as pb;

use crate::nodes::NodeRecord;
use crate::reconcile::{PeerKey, Sink, SinkError};

/// The node records an encryption worker reconciles to, by peer (its own record included).
pub type NodeTable = Mutex<BTreeMap<PeerKey, NodeRecord>>;

/// The sink the reconcile driver writes node records to for a worker thread (the crypto
/// sinks: device, netlink and `nft` calls block): each change lands in the worker's table and
/// wakes it. The worker ends once every clone is dropped.
#[derive(Debug, Clone)]
pub struct NodeSink {
    nodes: Arc<NodeTable>,
    wake: mpsc::Sender<()>,
}

impl NodeSink {
    /// Starts the worker thread `name`: `step` runs at once, after every change (wakes that
    /// pile up meanwhile count once) and at least every `tick`, sooner when `step` returns a
    /// shorter wait (a WireGuard first-contact hold ending).
    pub fn spawn_worker(
        name: &str,
        nodes: Arc<NodeTable>,
        tick: Duration,
        step: impl Fn() -> Option<Duration> + Send + 'static,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (wake, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                loop {
                    let wait = step().map_or(tick, |w| w.min(tick));
                    match rx.recv_timeout(wait) {
                        Ok(()) => while rx.try_recv().is_ok() {},
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok((Self { nodes, wake }, thread))
    }

    /// Makes the worker step soon.
    pub fn wake(&self) {
        let _ = self.wake.send(());
    }
}

impl Sink<PeerKey, NodeRecord> for NodeSink {
    fn upsert(&mut self, key: &PeerKey, value: &NodeRecord) -> Result<(), SinkError> {
        self.nodes
            .lock()
            .expect("nodes lock")
            .insert(key.clone(), value.clone());
        self.wake();
        Ok(())
    }

    fn remove(&mut self, key: &PeerKey) -> Result<(), SinkError> {
        self.nodes.lock().expect("nodes lock").remove(key);
        self.wake();
        Ok(())
    }
}

/// Where `EncryptionStatus` comes from: the backend this node runs.
#[derive(Debug, Clone)]
pub enum EncryptionStatusSource {
    WireGuard(wireguard::EncryptionStatusSource),
    Ipsec(ipsec::IpsecStatusSource),
}

impl EncryptionStatusSource {
    /// Blocking (WireGuard reads the device over its UAPI socket).
    pub fn status(&self) -> pb::EncryptionStatusResponse {
        match self {
            Self::WireGuard(w) => w.status(),
            Self::Ipsec(i) => i.status(),
        }
    }
}

/// Accepts everything and does nothing: the sink of a component this node does not run.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl<K, V> Sink<K, V> for NullSink {
    fn upsert(&mut self, _key: &K, _value: &V) -> Result<(), SinkError> {
        Ok(())
    }

    fn remove(&mut self, _key: &K) -> Result<(), SinkError> {
        Ok(())
    }
}
