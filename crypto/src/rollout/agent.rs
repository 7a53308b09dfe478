//! One node's encryption agent: peers, tunnel routes and the plaintext filter, driven by the
//! node list and the mode, one idempotent [`step`](NodeEncryption::step) at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::EncryptionMode;
use super::filter::{FilterError, PlaintextCounters, PlaintextFilter};
use super::plan::{self, PeerPath};
use super::routes::{RouteError, TunnelRoutes};
use super::status::{EncryptionStatus, PeerStatus, unix};
use crate::keys::PublicKey;
use crate::store::KeyStore;
use crate::wireguard::{
    MeshNode, ReconcileReport, Reconciler, RotateError, WgError, WireGuardBackend, desired_peers,
    rotate_key,
};

/// Why a step did not complete; the next step retries from the actual state.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Device(#[from] WgError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Rotate(#[from] RotateError),
}

/// What one step changed.
#[derive(Debug)]
pub struct StepReport {
    pub mode: EncryptionMode,
    pub peers: ReconcileReport,
    pub routes_added: Vec<IpNet>,
    pub routes_removed: Vec<IpNet>,
    pub filter_changed: bool,
    pub paths: BTreeMap<String, PeerPath>,
}

impl StepReport {
    /// True when the step changed nothing on the node.
    pub fn is_quiet(&self) -> bool {
        self.peers.changes.is_empty()
            && self.routes_added.is_empty()
            && self.routes_removed.is_empty()
            && !self.filter_changed
    }

    /// Remote nodes whose traffic waits for a handshake before it moves into the tunnel.
    pub fn awaiting_handshake(&self) -> usize {
        self.paths
            .values()
            .filter(|p| **p == PeerPath::PlainAwaitingHandshake)
            .count()
    }
}

/// The encryption of one node.
#[derive(Debug)]
pub struct NodeEncryption<B, R, F> {
    reconciler: Reconciler<B>,
    routes: R,
    filter: F,
    mode: EncryptionMode,
    last_counters: Option<PlaintextCounters>,
    /// When this node last rotated its key: older handshakes do not count.
    rotated_at: Option<SystemTime>,
    /// Opportunistic, on the way to off: nothing routed into the tunnel, peers kept.
    draining: bool,
}

impl<B: WireGuardBackend, R: TunnelRoutes, F: PlaintextFilter> NodeEncryption<B, R, F> {
    /// Starts in `off`; the device's key and port are set by [`crate::wireguard::ensure_device`].
    pub fn new(reconciler: Reconciler<B>, routes: R, filter: F) -> Self {
        Self {
            reconciler,
            routes,
            filter,
            mode: EncryptionMode::Off,
            last_counters: None,
            rotated_at: None,
            draining: false,
        }
    }

    /// Draining (only in opportunistic): every peer's traffic leaves the tunnel while the
    /// peers stay, so a cluster can go off without loss: once every node drains, none sends
    /// through the tunnel, and each can remove its peers ([`super::gate`]).
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    pub fn draining(&self) -> bool {
        self.draining && self.mode == EncryptionMode::Opportunistic
    }

    /// The per-node paths, drained when draining.
    #[allow(clippy::type_complexity)]
    fn paths_now(
        &self,
        local: &str,
        nodes: &[MeshNode],
        peers: &BTreeMap<PublicKey, String>,
        device: &crate::wireguard::DeviceState,
        now: SystemTime,
    ) -> (BTreeMap<String, PeerPath>, BTreeSet<IpNet>) {
        let p = plan::paths(self.mode, local, nodes, peers, device, now, self.rotated_at);
        if self.draining() { plan::drain(p) } else { p }
    }

    pub fn mode(&self) -> EncryptionMode {
        self.mode
    }

    /// Takes effect at the next [`step`](Self::step). The node publishes its public key in its
    /// record only after a step in a mode other than off has run (its device then accepts).
    pub fn set_mode(&mut self, mode: EncryptionMode) {
        self.mode = mode;
    }

    /// Handshakes before `t` do not count (made with an older key). A restarted agent passes
    /// the key file's mtime: after a rotation its predecessor did, the handshakes made with the
    /// old key must not move traffic back into the tunnel before the peers have the new one.
    pub fn set_key_written(&mut self, t: Option<SystemTime>) {
        self.rotated_at = t;
    }

    /// Whether the node record should carry the public key now.
    pub fn publishes_key(&self) -> bool {
        self.mode != EncryptionMode::Off
    }

    pub fn reconciler(&self) -> &Reconciler<B> {
        &self.reconciler
    }

    pub fn routes(&self) -> &R {
        &self.routes
    }

    fn local(&self) -> &str {
        self.reconciler.local_node()
    }

    /// Adds the routes of `want`, removes those in neither `want` nor `keep`.
    fn sync_routes(
        &self,
        want: &BTreeSet<IpNet>,
        keep: &BTreeSet<IpNet>,
        added: &mut Vec<IpNet>,
        removed: &mut Vec<IpNet>,
    ) -> Result<(), RouteError> {
        let have = self.routes.current()?;
        for p in want.iter().filter(|p| have.get(p) != Some(&true)) {
            self.routes.put(*p)?;
            added.push(*p);
        }
        for p in have
            .keys()
            .filter(|p| !want.contains(p) && !keep.contains(p))
        {
            self.routes.delete(*p)?;
            removed.push(*p);
        }
        Ok(())
    }

    /// Brings peers, routes and filter to what `mode` and `nodes` ask. Idempotent; run it on
    /// every node list change and periodically (handshakes move peers into the tunnel).
    pub fn step(&self, nodes: &[MeshNode], now: SystemTime) -> Result<StepReport, RolloutError> {
        let (mode, local) = (self.mode, self.local());
        let backend = self.reconciler.backend();
        let keyed = plan::keyed_nodes(mode, local, nodes);
        let desired = desired_peers(local, &keyed, self.reconciler.policy());
        let target = plan::filter(mode, local, nodes, backend.device_name());
        let enforce = target.as_ref().is_some_and(|f| f.enforce);
        let (mut added, mut removed) = (Vec::new(), Vec::new());

        // Loosening first: the filter, then routes away from peers that are going.
        let mut filter_changed = !enforce && self.filter.apply(target.as_ref())?;
        if mode != EncryptionMode::Off {
            self.routes.rules(true)?;
        }
        let before = backend.device()?;
        let (_, tunnel) = self.paths_now(local, nodes, &desired.nodes, &before, now);
        // Strict: a peer being re-keyed keeps its route while the reconcile replaces it.
        let held = plan::held_through_reconcile(mode, nodes, &desired.nodes);
        self.sync_routes(&tunnel, &held, &mut added, &mut removed)?;
        // Peers, then routes to peers that are now ready, then tightening the filter.
        let peers = self.reconciler.reconcile_at(&keyed, now)?;
        let after = backend.device()?;
        let (paths, tunnel) = self.paths_now(local, nodes, &desired.nodes, &after, now);
        self.sync_routes(&tunnel, &BTreeSet::new(), &mut added, &mut removed)?;
        if mode == EncryptionMode::Off {
            self.routes.rules(false)?;
        }
        if enforce {
            filter_changed |= self.filter.apply(target.as_ref())?;
        }
        Ok(StepReport {
            mode,
            peers,
            routes_added: added,
            routes_removed: removed,
            filter_changed,
            paths,
        })
    }

    /// Rotates the node's key. Opportunistic: every peer's traffic first leaves the tunnel
    /// (handshakes older than now stop counting), then the device takes the new key; each peer
    /// moves back into the tunnel after its first handshake with the new key. Strict: the routes
    /// stay; this node's traffic waits in the daemon's staging queue (128 packets per peer)
    /// until each peer has the new record and handshakes, while the peers' traffic still
    /// arrives on the old sessions. Publish the returned key at once: the propagation time is
    /// what the staging queue must absorb.
    pub fn rotate_key(
        &mut self,
        store: &mut KeyStore,
        nodes: &[MeshNode],
        now: SystemTime,
    ) -> Result<PublicKey, RolloutError> {
        self.rotated_at = Some(now);
        self.step(nodes, now)?;
        Ok(rotate_key(store, self.reconciler.backend())?)
    }

    /// The node's status. `ready_for_strict` also needs no plaintext pod packet counted since
    /// the previous call, so call it twice, some seconds apart, before going strict.
    pub fn status(
        &mut self,
        nodes: &[MeshNode],
        key_age: Option<Duration>,
        now: SystemTime,
    ) -> Result<EncryptionStatus, RolloutError> {
        let (mode, local) = (self.mode, self.local().to_string());
        let backend = self.reconciler.backend();
        let keyed = plan::keyed_nodes(mode, &local, nodes);
        let desired = desired_peers(&local, &keyed, self.reconciler.policy());
        let dev = backend.device()?;
        let (paths, tunnel) = self.paths_now(&local, nodes, &desired.nodes, &dev, now);
        let fresh = |t: Option<SystemTime>| {
            t.is_some_and(|t| now.duration_since(t).unwrap_or_default() < plan::HANDSHAKE_FRESH)
        };
        let key_of: BTreeMap<&str, _> =
            desired.nodes.iter().map(|(k, n)| (n.as_str(), k)).collect();
        let peers: Vec<PeerStatus> = paths
            .iter()
            .map(|(node, path)| {
                let key = key_of.get(node.as_str()).copied();
                let st = key.and_then(|k| dev.peers.get(k));
                PeerStatus {
                    node: node.clone(),
                    path: *path,
                    public_key: key.map(|k| k.to_string()),
                    last_handshake_unix: st.and_then(|s| s.last_handshake).map(unix),
                    rx_bytes: st.map_or(0, |s| s.rx_bytes),
                    tx_bytes: st.map_or(0, |s| s.tx_bytes),
                }
            })
            .collect();
        let plaintext = self.filter.counters()?;
        let quiet = match (plaintext, self.last_counters) {
            (Some(now_c), Some(before)) => now_c == before,
            _ => false,
        };
        self.last_counters = plaintext;
        let all_tunnel = paths.values().all(|p| *p == PeerPath::Tunnel);
        Ok(EncryptionStatus {
            node: local,
            mode,
            backend: backend.kind().into(),
            device: backend.device_name().into(),
            public_key: dev.public_key.map(|k| k.to_string()).unwrap_or_default(),
            key_age_seconds: key_age.map(|d| d.as_secs()),
            peers_configured: dev.peers.len(),
            peers_expected: paths.len(),
            peers_handshaked: dev
                .peers
                .values()
                .filter(|p| fresh(p.last_handshake))
                .count(),
            last_handshake_unix: dev
                .peers
                .values()
                .filter_map(|p| p.last_handshake)
                .max()
                .map(unix),
            tunnel_prefixes: tunnel.len(),
            plaintext,
            ready_for_strict: mode != EncryptionMode::Off && all_tunnel && quiet,
            peers,
            rejected: desired.rejected.iter().map(ToString::to_string).collect(),
        })
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
