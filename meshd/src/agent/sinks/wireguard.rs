//! WireGuard peers from meshd: every node of every cluster (from the merged view) becomes a
//! peer of this node's device through `crypto::rollout::NodeEncryption`, which also owns the
//! tunnel routes (table 202) and the nftables filter of the `[encryption]` mode.
//!
//! The [`NodeSink`] half records the node list and wakes a worker thread (the device, netlink and
//! `nft` calls are blocking); the worker steps the node's encryption on every change and every
//! second (handshakes move peers into the tunnel, see the rollout module), and answers the
//! `EncryptionStatus` RPC. It steps only once the driver applied the first listing of the node
//! records ([`WireGuardPeers::set_complete`]): a restarted meshd stepping with only its own
//! record would remove every peer (and, in strict mode, every tunnel route) for that moment.
//!
//! Key rotation (`RotateKey`, or `encryption.wireguard.rotate_every`): [`rotation`]. The key
//! the node record should carry is handed to the node's publisher ([`publish`]).
//!
//! The device is a userspace one (wireguard-go's UAPI socket
//! `/var/run/wireguard/<device>.sock`), started by the operator or the node's service manager.

pub mod publish;
pub mod rotation;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use api::mesh as pb;
use common::{ClusterName, NodeName};
use crypto::KeyStore;
use crypto::rollout::{EncryptionMode, NetlinkRoutes, NftFilter, NodeEncryption};
use crypto::wireguard::{
    MeshNode, PeerPolicy, Reconciler, WireGuardBackend, backend_for, ensure_device,
};

use super::{NodeSink, NodeTable};
use crate::nodes::NodeRecord;

/// How often the encryption is stepped without a node change.
const TICK: Duration = Duration::from_secs(1);

type Agent = NodeEncryption<Box<dyn WireGuardBackend>, NetlinkRoutes, NftFilter>;

/// How this node encrypts (from `[encryption]` and `[mesh] wireguard_device`).
#[derive(Debug, Clone)]
pub struct WireGuardSettings {
    pub mode: EncryptionMode,
    pub device: String,
    pub listen_port: u16,
    pub persistent_keepalive: u16,
    /// `encryption.wireguard.rotate_every`; `None`: only on command.
    pub rotate_every: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireGuardSinkError {
    #[error(
        "WireGuard device {device}: {detail}; start it first (wireguard-go {device}) or set mesh.wireguard_device"
    )]
    Device { device: String, detail: String },
    #[error("cannot start the encryption thread: {0}")]
    Thread(String),
}

#[derive(Debug)]
struct Inner {
    local: ClusterName,
    me: NodeName,
    settings: WireGuardSettings,
    nodes: Arc<NodeTable>,
    /// `None` until the device answered.
    agent: Mutex<Option<Agent>>,
    /// Locked after `agent` when both are needed.
    store: Mutex<KeyStore>,
    last_error: Mutex<Option<String>>,
    /// The driver applied the first listing: the node list is whole.
    complete: AtomicBool,
    /// The public key the node record should carry (read by [`publish`]).
    key_want: watch::Sender<String>,
    /// The public key last written to the node record.
    key_published: watch::Sender<Option<String>>,
    /// When the schedule last failed to rotate (retried after [`schedule::RETRY`]).
    schedule_failed: Mutex<Option<SystemTime>>,
}

/// The node's WireGuard encryption. The worker ends once this and every sink clone are
/// dropped (peers, routes and filter stay, so traffic keeps flowing while meshd restarts).
#[derive(Debug)]
pub struct WireGuardPeers {
    inner: Arc<Inner>,
    sink: NodeSink,
    _thread: std::thread::JoinHandle<()>,
}

fn mesh_node(local: &ClusterName, r: &NodeRecord) -> MeshNode {
    MeshNode {
        name: peer_name(local, &r.cluster, &r.name),
        wireguard_public_key: r.wireguard_public_key.clone(),
        ipv4: r.ipv4,
        ipv6: r.ipv6,
        pod_cidrs: r.pod_cidrs.clone(),
    }
}

/// `node` in the own cluster, `cluster/node` for the others (names are unique per cluster).
fn peer_name(local: &ClusterName, cluster: &ClusterName, node: &NodeName) -> String {
    if cluster == local {
        node.to_string()
    } else {
        format!("{cluster}/{node}")
    }
}

impl Inner {
    fn mesh(&self) -> Vec<MeshNode> {
        self.nodes
            .lock()
            .expect("nodes lock")
            .values()
            .map(|r| mesh_node(&self.local, r))
            .collect()
    }

    fn set_error(&self, e: Option<String>) {
        let mut last = self.last_error.lock().expect("error lock");
        if let Some(msg) = &e
            && last.as_ref() != Some(msg)
        {
            tracing::warn!("{msg}; retrying every {}s", TICK.as_secs());
        }
        *last = e;
    }

    /// The device with our key and port, and the encryption agent on it.
    fn open(&self) -> Result<Agent, WireGuardSinkError> {
        let s = &self.settings;
        let backend = backend_for(&s.device);
        let kind = backend.kind();
        let store = self.store.lock().expect("store lock");
        ensure_device(&backend, store.private_key(), s.listen_port).map_err(|e| {
            WireGuardSinkError::Device {
                device: s.device.clone(),
                detail: e.to_string(),
            }
        })?;
        // The device has the stored key: the record may carry it (after a rotation whose
        // device step failed, this is where the new key gets published).
        let public = store.public_key().to_string();
        self.key_want.send_if_modified(|k| {
            let changed = *k != public;
            k.clone_from(&public);
            changed
        });
        let written = rotation::key_written(&store);
        drop(store);
        let policy = PeerPolicy {
            listen_port: s.listen_port,
            node_encryption: false,
            persistent_keepalive: s.persistent_keepalive,
        };
        let mut agent = NodeEncryption::new(
            Reconciler::new(backend, self.me.to_string(), policy),
            NetlinkRoutes::new(&s.device),
            NftFilter,
        );
        agent.set_mode(s.mode);
        agent.set_key_written(written);
        tracing::info!(device = %s.device, mode = %s.mode, backend = kind, "WireGuard encryption started");
        Ok(agent)
    }

    /// Opens the device if needed, then steps the encryption once. Returns how soon to step
    /// again when that is before the tick (a first-contact hold ends then).
    fn step(&self) -> Option<Duration> {
        let mut agent = self.agent.lock().expect("agent lock");
        if agent.is_none() {
            match self.open() {
                Ok(a) => *agent = Some(a),
                Err(e) => {
                    self.set_error(Some(e.to_string()));
                    return None;
                }
            }
        }
        if !self.complete.load(Ordering::Acquire) {
            return None;
        }
        self.scheduled_rotation(&mut agent);
        let agent = agent.as_ref()?;
        let now = SystemTime::now();
        match agent.step(&self.mesh(), now) {
            Ok(rep) => {
                if !rep.is_quiet() {
                    tracing::info!(
                        peers = ?rep.peers.changes.len(), routes_added = ?rep.routes_added,
                        routes_removed = ?rep.routes_removed, filter = rep.filter_changed,
                        "encryption stepped"
                    );
                }
                self.set_error(None);
                // A few ms past the end, so the hold is over when the step runs.
                rep.peers
                    .wake_at
                    .map(|t| t.duration_since(now).unwrap_or_default() + Duration::from_millis(5))
            }
            Err(e) => {
                self.set_error(Some(format!("encryption step failed: {e}")));
                None
            }
        }
    }
}

impl WireGuardPeers {
    /// Starts the worker: it sets the device's key and port (retrying every second while the
    /// device is missing), then steps. `own` is this node's record (its PodCIDRs shape the
    /// filter); the sink adds every other node.
    pub fn spawn(
        settings: &WireGuardSettings,
        own: NodeRecord,
        store: KeyStore,
    ) -> Result<Self, WireGuardSinkError> {
        let local = own.cluster.clone();
        let me = own.name.clone();
        let mut nodes = BTreeMap::new();
        nodes.insert((local.clone(), me.clone()), own);
        let (key_want, _) = watch::channel(store.public_key().to_string());
        let (key_published, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            local,
            me,
            settings: settings.clone(),
            nodes: Arc::new(Mutex::new(nodes)),
            agent: Mutex::new(None),
            store: Mutex::new(store),
            last_error: Mutex::new(None),
            complete: AtomicBool::new(false),
            key_want,
            key_published,
            schedule_failed: Mutex::new(None),
        });
        let worker = inner.clone();
        let (sink, thread) =
            NodeSink::spawn_worker("encryption", inner.nodes.clone(), TICK, move || {
                worker.step()
            })
            .map_err(|e| WireGuardSinkError::Thread(e.to_string()))?;
        Ok(Self {
            inner,
            sink,
            _thread: thread,
        })
    }

    pub fn sink(&self) -> NodeSink {
        self.sink.clone()
    }

    /// What tells the worker the node list is whole.
    pub fn completion(&self) -> Completion {
        Completion(self.inner.clone(), self.sink.clone())
    }

    /// What the node's publisher needs to keep the record's public key current.
    pub fn publication(&self) -> publish::KeyPublication {
        publish::KeyPublication::new(&self.inner)
    }

    /// A status source for the API (shares the worker's state).
    pub fn status_source(&self) -> EncryptionStatusSource {
        EncryptionStatusSource(self.inner.clone())
    }

    /// What the cluster rollout moves (the worker's mode) and reads (its readiness).
    pub fn rollout(&self) -> RolloutSource {
        RolloutSource(self.inner.clone(), self.sink.clone())
    }
}

/// The node's side of the cluster rollout ([`crate::rollout`]): the gate's mode goes to the
/// worker's agent (no restart), the node's state comes back for `encryption/nodes/<node>`.
#[derive(Debug, Clone)]
pub struct RolloutSource(Arc<Inner>, NodeSink);

impl RolloutSource {
    /// Blocking (reads the device). Moves the agent to the gate's mode for `desired` (None:
    /// no rollout, the configured mode stays) and returns what this node publishes, with the
    /// reason the node is not at `desired` yet. None until the device first answered; a
    /// device that stops answering makes the node not ready (it blocks strict, named).
    pub fn step(
        &self,
        desired: Option<EncryptionMode>,
        expected: &[String],
        published: &[crypto::rollout::NodeRollout],
    ) -> Option<(crypto::rollout::NodeRollout, Option<String>)> {
        let inner = &self.0;
        let nodes = inner.mesh();
        let now = SystemTime::now();
        let mut agent = inner.agent.lock().expect("agent lock");
        let agent = agent.as_mut()?;
        let me = inner.me.to_string();
        let (current, draining) = (agent.mode(), agent.draining());
        let mut blocked = None;
        if let Some(desired) = desired {
            let gate =
                crypto::rollout::next_mode(desired, current, draining, &me, expected, published);
            blocked = gate.blocked;
            if gate.mode != current || gate.drain != draining {
                tracing::info!(from = %current, to = %gate.mode, drain = gate.drain, %desired, "encryption mode changes (cluster rollout)");
                agent.set_mode(gate.mode);
                agent.set_draining(gate.drain);
                self.1.wake();
            }
        }
        let st = match agent.status(&nodes, None, now) {
            Ok(st) => st,
            // The device is gone (its daemon stopped): not ready, and says why.
            Err(e) => {
                let state = crypto::rollout::NodeRollout {
                    node: me,
                    mode: agent.mode(),
                    ready_for_strict: false,
                    peers_ready: 0,
                    peers_expected: nodes.len().saturating_sub(1),
                    not_ready: format!("cannot read the WireGuard device: {e}"),
                    draining: agent.draining(),
                };
                return Some((state, blocked));
            }
        };
        let waiting: Vec<&str> = st
            .peers
            .iter()
            .filter(|p| p.path != crypto::rollout::PeerPath::Tunnel)
            .map(|p| p.node.as_str())
            .collect();
        let not_ready = if st.ready_for_strict {
            String::new()
        } else if agent.draining() {
            "draining: sends in clear on its way to off".into()
        } else if !waiting.is_empty() {
            format!(
                "{}/{} peers in the tunnel; waiting for {}",
                st.peers_expected - waiting.len(),
                st.peers_expected,
                waiting.join(", ")
            )
        } else if st.mode == EncryptionMode::Off {
            "encryption is off".into()
        } else {
            "plaintext pod packets counted since the last check".into()
        };
        let state = crypto::rollout::NodeRollout {
            node: me,
            mode: agent.mode(),
            ready_for_strict: st.ready_for_strict,
            peers_ready: st.peers_expected - waiting.len(),
            peers_expected: st.peers_expected,
            not_ready,
            draining: agent.draining(),
        };
        Some((state, blocked))
    }
}

/// Tells the worker that the driver applied the first listing: it may step.
#[derive(Debug)]
pub struct Completion(Arc<Inner>, NodeSink);

impl Completion {
    pub fn set_complete(&self) {
        if !self.0.complete.swap(true, Ordering::AcqRel) {
            tracing::info!("node records loaded: stepping the encryption");
            self.1.wake();
        }
    }
}

/// Answers `EncryptionStatus` from the worker's state.
#[derive(Debug, Clone)]
pub struct EncryptionStatusSource(Arc<Inner>);

impl EncryptionStatusSource {
    /// Blocking (reads the device over its UAPI socket).
    pub fn status(&self) -> pb::EncryptionStatusResponse {
        let inner = &self.0;
        let nodes = inner.mesh();
        let now = SystemTime::now();
        let age = inner.store.lock().expect("store lock").key_age(now);
        let mut agent = inner.agent.lock().expect("agent lock");
        let Some(agent) = agent.as_mut() else {
            return pb::EncryptionStatusResponse {
                node: inner.me.to_string(),
                enabled: true,
                reason: format!("waiting for WireGuard device {}", inner.settings.device),
                mode: inner.settings.mode.to_string(),
                device: inner.settings.device.clone(),
                last_error: inner
                    .last_error
                    .lock()
                    .expect("error lock")
                    .clone()
                    .unwrap_or_default(),
                ..Default::default()
            };
        };
        let st = agent.status(&nodes, age, now);
        let last_error = inner
            .last_error
            .lock()
            .expect("error lock")
            .clone()
            .unwrap_or_default();
        match st {
            Ok(s) => pb::EncryptionStatusResponse {
                node: inner.me.to_string(),
                enabled: s.mode != EncryptionMode::Off,
                reason: String::new(),
                mode: s.mode.to_string(),
                backend: s.backend,
                device: s.device,
                public_key: s.public_key,
                key_age_seconds: s.key_age_seconds,
                peers_configured: s.peers_configured as u32,
                peers_expected: s.peers_expected as u32,
                peers_handshaked: s.peers_handshaked as u32,
                last_handshake_unix: s.last_handshake_unix,
                tunnel_prefixes: s.tunnel_prefixes as u32,
                ready_for_strict: s.ready_for_strict,
                peers: s
                    .peers
                    .into_iter()
                    .map(|p| pb::EncryptionPeer {
                        node: p.node,
                        path: serde_json::to_value(p.path)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        public_key: p.public_key.unwrap_or_default(),
                        last_handshake_unix: p.last_handshake_unix,
                        rx_bytes: p.rx_bytes,
                        tx_bytes: p.tx_bytes,
                    })
                    .collect(),
                rejected: s.rejected,
                last_error,
            },
            Err(e) => pb::EncryptionStatusResponse {
                node: inner.me.to_string(),
                enabled: true,
                reason: format!("cannot read the encryption state: {e}"),
                last_error,
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_of_other_clusters_are_named_by_cluster() {
        let red: ClusterName = "red".parse().unwrap();
        let green: ClusterName = "green".parse().unwrap();
        let mut r = NodeRecord::new(green.clone(), "g1".parse().unwrap());
        r.ipv4 = Some("198.51.100.1".parse().unwrap());
        r.pod_cidrs = vec!["10.2.1.0/24".parse().unwrap()];
        r.wireguard_public_key = Some("k".into());
        let n = mesh_node(&red, &r);
        assert_eq!(n.name, "green/g1");
        assert_eq!(n.pod_cidrs, r.pod_cidrs);
        assert_eq!(n.wireguard_public_key.as_deref(), Some("k"));
        assert_eq!(
            peer_name(&red, &red, &"r2".parse().unwrap()),
            "r2",
            "own cluster: the bare node name, as the local node is named"
        );
    }
}
