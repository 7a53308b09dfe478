//! The peer reconciler: node records → desired peers → diff against the device → apply only
//! the differences. Desired state wins: a peer changed by hand is put back, a peer no node
//! claims is removed (the reconciler owns the device's peer list).
//!
//! Validation is per node: a record with a bad key (or no address, or a key or prefix another
//! node already has) is rejected with an error naming it, and every other node's peer is
//! programmed as usual.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::SystemTime;

use ipnet::IpNet;

use super::contact::FirstContact;
use super::diff::diff;
use super::{PeerChange, PeerConfig, WgError, WireGuardBackend};
use crate::keys::{KeyError, PublicKey};

/// What the reconciler needs of a node: the WireGuard-related fields of meshd's `NodeRecord`.
/// (crypto is driven by meshd, so it cannot depend on it; meshd converts its records.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNode {
    /// Unique in the mesh; meshd passes `cluster/node` for nodes of remote clusters.
    pub name: String,
    /// Base64, as published in the node record; validated here.
    pub wireguard_public_key: Option<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// Cluster-wide WireGuard settings that shape every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The UDP port every node's device listens on (the peer endpoint's port).
    pub listen_port: u16,
    /// Also encrypt node-to-node traffic: the node IPs join the peer's allowed IPs.
    pub node_encryption: bool,
    /// Seconds, 0 = off. On, it also makes a new or re-keyed peer handshake at once. 1–5 are
    /// programmed as 6 ([`super::effective_keepalive`]).
    pub persistent_keepalive: u16,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self {
            listen_port: 51871,
            node_encryption: false,
            persistent_keepalive: 25,
        }
    }
}

/// Why a node gets no peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The node has not published a key yet (it may still be starting).
    MissingKey,
    InvalidKey(KeyError),
    /// Neither an IPv4 nor an IPv6 address: no endpoint.
    NoAddress,
    /// Another node (earlier by name) publishes the same key.
    DuplicateKey {
        other: String,
    },
    /// Another node (earlier by name) already claims this prefix; WireGuard routes a prefix to
    /// one peer only.
    PrefixConflict {
        prefix: IpNet,
        other: String,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::MissingKey => f.write_str("has no WireGuard public key yet"),
            RejectReason::InvalidKey(e) => write!(f, "invalid WireGuard public key: {e}"),
            RejectReason::NoAddress => f.write_str("has no IPv4 or IPv6 address for an endpoint"),
            RejectReason::DuplicateKey { other } => {
                write!(f, "publishes the same WireGuard public key as node {other}")
            }
            RejectReason::PrefixConflict { prefix, other } => {
                write!(f, "claims {prefix}, which node {other} already has")
            }
        }
    }
}

/// A node that gets no peer, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: {reason}; it gets no WireGuard peer (other nodes are unaffected)")]
pub struct NodeRejected {
    pub node: String,
    pub reason: RejectReason,
}

/// The peers the device should have, and the nodes that were rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub peers: BTreeMap<PublicKey, PeerConfig>,
    /// Which node each peer is for.
    pub nodes: BTreeMap<PublicKey, String>,
    pub rejected: Vec<NodeRejected>,
}

/// The peers node `local` should have for `nodes` (the local node itself is skipped). Nodes
/// are taken in name order, so which of two conflicting nodes wins does not depend on the
/// order of the list.
pub fn desired_peers(local: &str, nodes: &[MeshNode], policy: &PeerPolicy) -> Desired {
    let mut sorted: Vec<&MeshNode> = nodes.iter().filter(|n| n.name != local).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Desired::default();
    let mut prefix_owner: BTreeMap<IpNet, &str> = BTreeMap::new();
    for node in sorted {
        match peer_for(node, policy, &out.nodes, &prefix_owner) {
            Ok(peer) => {
                for p in &peer.allowed_ips {
                    prefix_owner.insert(*p, &node.name);
                }
                out.nodes.insert(peer.public_key, node.name.clone());
                out.peers.insert(peer.public_key, peer);
            }
            Err(reason) => out.rejected.push(NodeRejected {
                node: node.name.clone(),
                reason,
            }),
        }
    }
    out
}

fn peer_for(
    node: &MeshNode,
    policy: &PeerPolicy,
    taken_keys: &BTreeMap<PublicKey, String>,
    prefix_owner: &BTreeMap<IpNet, &str>,
) -> Result<PeerConfig, RejectReason> {
    let key: PublicKey = node
        .wireguard_public_key
        .as_deref()
        .ok_or(RejectReason::MissingKey)?
        .trim()
        .parse()
        .map_err(RejectReason::InvalidKey)?;
    if let Some(other) = taken_keys.get(&key) {
        return Err(RejectReason::DuplicateKey {
            other: other.clone(),
        });
    }
    let ip = node
        .ipv4
        .map(IpAddr::V4)
        .or(node.ipv6.map(IpAddr::V6))
        .ok_or(RejectReason::NoAddress)?;
    let mut allowed_ips: BTreeSet<IpNet> = node.pod_cidrs.iter().map(IpNet::trunc).collect();
    if policy.node_encryption {
        allowed_ips.extend(node.ipv4.map(|a| IpNet::from(IpAddr::V4(a))));
        allowed_ips.extend(node.ipv6.map(|a| IpNet::from(IpAddr::V6(a))));
    }
    if let Some((prefix, other)) = allowed_ips
        .iter()
        .find_map(|p| prefix_owner.get(p).map(|o| (*p, *o)))
    {
        return Err(RejectReason::PrefixConflict {
            prefix,
            other: other.to_string(),
        });
    }
    Ok(PeerConfig {
        public_key: key,
        endpoint: Some(SocketAddr::new(ip, policy.listen_port)),
        allowed_ips,
        persistent_keepalive: super::effective_keepalive(policy.persistent_keepalive),
    })
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// The changes sent to the device (empty when it already matched).
    pub changes: Vec<PeerChange>,
    /// Nodes that got no peer.
    pub rejected: Vec<NodeRejected>,
    /// Changes the device refused (only after a batch was refused and retried one by one).
    pub failed: Vec<(PeerChange, WgError)>,
    /// Peers the device should now have.
    pub desired_peers: usize,
    /// New peers this node does not initiate to yet ([`super::contact`]).
    pub held: usize,
    /// When the earliest first-contact hold ends: reconcile again then.
    pub wake_at: Option<SystemTime>,
}

impl ReconcileReport {
    fn count(&self, f: impl Fn(&PeerChange) -> bool) -> usize {
        self.changes.iter().filter(|c| f(c)).count()
    }
    pub fn added(&self) -> usize {
        self.count(|c| matches!(c, PeerChange::Add(_)))
    }
    pub fn updated(&self) -> usize {
        self.count(|c| matches!(c, PeerChange::Update { .. }))
    }
    pub fn removed(&self) -> usize {
        self.count(|c| matches!(c, PeerChange::Remove(_)))
    }
    /// True when nothing had to change and nothing was rejected or failed.
    pub fn is_clean(&self) -> bool {
        self.changes.is_empty() && self.rejected.is_empty() && self.failed.is_empty()
    }
}

/// Keeps one device's peers equal to what the node records say.
#[derive(Debug)]
pub struct Reconciler<B> {
    backend: B,
    local_node: String,
    policy: PeerPolicy,
    contact: Mutex<FirstContact>,
}

impl<B: WireGuardBackend> Reconciler<B> {
    pub fn new(backend: B, local_node: impl Into<String>, policy: PeerPolicy) -> Self {
        let k = policy.persistent_keepalive;
        if k != super::effective_keepalive(k) {
            tracing::warn!(
                configured = k,
                programmed = super::effective_keepalive(k),
                "persistent keepalive at or below 5 s (REKEY_TIMEOUT) can stall handshakes; raised"
            );
        }
        Self {
            backend,
            local_node: local_node.into(),
            policy,
            contact: Mutex::new(FirstContact::default()),
        }
    }

    /// Replaces the first-contact tracker (e.g. `FirstContact::new(Duration::ZERO)`: no hold).
    pub fn with_first_contact(mut self, contact: FirstContact) -> Self {
        self.contact = Mutex::new(contact);
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    pub fn local_node(&self) -> &str {
        &self.local_node
    }

    /// [`reconcile_at`](Self::reconcile_at) now.
    pub fn reconcile(&self, nodes: &[MeshNode]) -> Result<ReconcileReport, WgError> {
        self.reconcile_at(nodes, SystemTime::now())
    }

    /// Reads the device, applies the difference to the desired peers of `nodes` stage by stage
    /// ([`diff`]), reports. New peers this node is the responder for are held (no endpoint, no
    /// keepalive) until a handshake or the hold's end ([`super::contact`]): call again at the
    /// report's `wake_at`. Errors only when the device cannot be read or a whole stage fails to
    /// reach it; a refused stage is retried change by change so one bad change does not block
    /// the rest.
    pub fn reconcile_at(
        &self,
        nodes: &[MeshNode],
        now: SystemTime,
    ) -> Result<ReconcileReport, WgError> {
        let mut desired = desired_peers(&self.local_node, nodes, &self.policy);
        for r in &desired.rejected {
            tracing::warn!(device = self.backend.device_name(), "{r}");
        }
        let mut actual = self.backend.device()?;
        let (plan, held) = {
            let mut contact = self.contact.lock().unwrap_or_else(|p| p.into_inner());
            let plan = contact.hold(
                actual.public_key.as_ref(),
                &mut desired.peers,
                &actual.peers,
                now,
            );
            (plan, contact.held().len())
        };
        // A hold that ended without a handshake: the peer goes and comes back whole, so the
        // device initiates at once (`contact`); the diff then sees it as new.
        let restart: Vec<PeerChange> = plan
            .restart
            .iter()
            .filter(|k| actual.peers.remove(k).is_some())
            .map(|k| PeerChange::Remove(*k))
            .collect();
        let mut stages = diff(&desired.peers, &actual.peers);
        if !restart.is_empty() {
            stages.insert(0, restart);
        }
        let mut failed = Vec::new();
        let mut changes = Vec::new();
        for stage in stages {
            match self.backend.apply(&stage) {
                Ok(()) => {}
                Err(WgError::Refused { .. }) if stage.len() > 1 => {
                    for c in &stage {
                        if let Err(e) = self.backend.apply(std::slice::from_ref(c)) {
                            failed.push((c.clone(), e));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
            changes.extend(stage);
        }
        for c in &changes {
            let node = desired
                .nodes
                .get(c.public_key())
                .map_or("(no node)", String::as_str);
            tracing::info!(device = self.backend.device_name(), node, "{c}");
        }
        Ok(ReconcileReport {
            changes,
            rejected: desired.rejected,
            failed,
            desired_peers: desired.peers.len(),
            held,
            wake_at: plan.wake_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::keys::PrivateKey;
    use crate::wireguard::{DeviceSettings, DeviceState, PeerState, UapiErrno};

    /// A device in memory with the UAPI semantics the reconciler relies on.
    #[derive(Debug, Default)]
    struct FakeDevice {
        state: Mutex<DeviceState>,
        /// Requests that contain a change for this key are refused (EINVAL).
        refuse: Option<PublicKey>,
        requests: Mutex<usize>,
        /// The peers after each request.
        history: Mutex<Vec<BTreeMap<PublicKey, PeerState>>>,
    }

    impl WireGuardBackend for FakeDevice {
        fn device_name(&self) -> &str {
            "wgtest"
        }
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn device(&self) -> Result<DeviceState, WgError> {
            Ok(self.state.lock().unwrap().clone())
        }
        fn configure(&self, _: &DeviceSettings<'_>) -> Result<(), WgError> {
            Ok(())
        }
        fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError> {
            *self.requests.lock().unwrap() += 1;
            if changes.iter().any(|c| Some(*c.public_key()) == self.refuse) {
                return Err(WgError::Refused {
                    device: "wgtest".into(),
                    op: "set peers",
                    errno: UapiErrno::InvalidArgument,
                });
            }
            let mut st = self.state.lock().unwrap();
            for c in changes {
                crate::wireguard::fake::apply(&mut st, c);
            }
            self.history.lock().unwrap().push(st.peers.clone());
            Ok(())
        }
    }

    fn state(config: PeerConfig) -> PeerState {
        PeerState {
            config,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    fn node(name: &str, i: u8) -> (MeshNode, PublicKey) {
        let key = PrivateKey::generate().public_key();
        (
            MeshNode {
                name: name.into(),
                wireguard_public_key: Some(key.to_string()),
                ipv4: Some(Ipv4Addr::new(192, 0, 2, i)),
                ipv6: None,
                pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
            },
            key,
        )
    }

    fn nets(s: &[&str]) -> BTreeSet<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    const POLICY: PeerPolicy = PeerPolicy {
        listen_port: 51820,
        node_encryption: true,
        persistent_keepalive: 25,
    };

    /// Three nodes; n1 programs the other two, a second pass changes nothing.
    #[test]
    fn programs_peers_from_node_records_and_is_idempotent() {
        let (n1, _) = node("n1", 1);
        let (n2, k2) = node("n2", 2);
        let (n3, k3) = node("n3", 3);
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        let report = r.reconcile(&[n3.clone(), n1.clone(), n2.clone()]).unwrap();
        assert_eq!(
            (report.added(), report.updated(), report.removed()),
            (2, 0, 0)
        );
        assert!(report.rejected.is_empty());
        let dev = r.backend().device().unwrap();
        let p2 = &dev.peers[&k2].config;
        assert_eq!(p2.endpoint, Some("192.0.2.2:51820".parse().unwrap()));
        assert_eq!(p2.allowed_ips, nets(&["10.244.2.0/24", "192.0.2.2/32"]));
        assert_eq!(p2.persistent_keepalive, 25);
        assert!(dev.peers.contains_key(&k3));

        let again = r.reconcile(&[n1, n2, n3]).unwrap();
        assert!(again.is_clean(), "{again:?}");
        assert_eq!(
            *r.backend().requests.lock().unwrap(),
            1,
            "no empty set sent"
        );
    }

    #[test]
    fn without_node_encryption_only_pod_cidrs_and_v6_endpoint() {
        let (mut n2, k2) = node("n2", 2);
        n2.ipv4 = None;
        n2.ipv6 = Some("2001:db8::2".parse().unwrap());
        n2.pod_cidrs.push("2001:db8:2::7/64".parse().unwrap());
        let policy = PeerPolicy {
            node_encryption: false,
            ..POLICY
        };
        let d = desired_peers("n1", &[n2], &policy);
        let p = &d.peers[&k2];
        assert_eq!(p.allowed_ips, nets(&["10.244.2.0/24", "2001:db8:2::/64"]));
        assert_eq!(p.endpoint, Some("[2001:db8::2]:51820".parse().unwrap()));
    }

    /// A node leaves the list: its peer goes, nothing else is touched.
    #[test]
    fn removed_node_loses_its_peer() {
        let (n2, _) = node("n2", 2);
        let (n3, k3) = node("n3", 3);
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        r.reconcile(&[n2.clone(), n3]).unwrap();
        let report = r.reconcile(&[n2]).unwrap();
        assert_eq!(report.changes, [PeerChange::Remove(k3)]);
        assert_eq!(r.backend().device().unwrap().peers.len(), 1);
    }

    /// Someone edits the device by hand; the next reconcile puts back exactly what drifted.
    #[test]
    fn drift_is_repaired_field_by_field() {
        let (n2, k2) = node("n2", 2);
        let (n3, k3) = node("n3", 3);
        let nodes = [n2, n3];
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        r.reconcile(&nodes).unwrap();
        let stranger = PrivateKey::generate().public_key();
        {
            let mut st = r.backend().state.lock().unwrap();
            let p2 = &mut st.peers.get_mut(&k2).unwrap().config;
            p2.allowed_ips = nets(&["10.9.9.0/24"]);
            st.peers.get_mut(&k3).unwrap().config.endpoint = Some("203.0.113.9:1".parse().unwrap());
            st.peers.insert(
                stranger,
                state(PeerConfig {
                    public_key: stranger,
                    endpoint: None,
                    allowed_ips: nets(&["0.0.0.0/0"]),
                    persistent_keepalive: 0,
                }),
            );
        }
        let report = r.reconcile(&nodes).unwrap();
        assert_eq!(report.changes.last(), Some(&PeerChange::Remove(stranger)));
        let mut updates = report.changes[..2].to_vec();
        updates.sort_by_key(|c| c.to_string().contains("endpoint"));
        assert_eq!(
            updates,
            [
                PeerChange::Update {
                    public_key: k2,
                    endpoint: None,
                    allowed_ips: Some(nets(&["10.244.2.0/24", "192.0.2.2/32"])),
                    persistent_keepalive: None,
                },
                PeerChange::Update {
                    public_key: k3,
                    endpoint: Some("192.0.2.3:51820".parse().unwrap()),
                    allowed_ips: None,
                    persistent_keepalive: None,
                },
            ]
        );
        assert!(r.reconcile(&nodes).unwrap().is_clean());
    }

    /// A record with a broken key is rejected by name; the others are programmed.
    #[test]
    fn invalid_key_rejects_only_that_node() {
        let (n2, k2) = node("n2", 2);
        let (mut bad, _) = node("n4", 4);
        bad.wireguard_public_key = Some("not-a-key".into());
        let (mut short, _) = node("n5", 5);
        short.wireguard_public_key = Some("AAAA".into());
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        let report = r.reconcile(&[bad, n2, short]).unwrap();
        assert_eq!(report.changes.len(), 1);
        assert!(r.backend().device().unwrap().peers.contains_key(&k2));
        let msgs: Vec<String> = report.rejected.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2);
        assert!(
            msgs[0].starts_with(
                "node n4: invalid WireGuard public key: public key is not valid base64"
            ),
            "{}",
            msgs[0]
        );
        assert!(msgs[0].ends_with("it gets no WireGuard peer (other nodes are unaffected)"));
        assert_eq!(
            msgs[1],
            "node n5: invalid WireGuard public key: public key decodes to 3 bytes; WireGuard keys \
             are 32 bytes (44 base64 characters); it gets no WireGuard peer (other nodes are unaffected)"
        );
    }

    #[test]
    fn conflicts_and_incomplete_records_are_rejected_deterministically() {
        let (a, ka) = node("a", 2);
        let (mut b, _) = node("b", 3);
        b.wireguard_public_key = a.wireguard_public_key.clone();
        let (mut c, _) = node("c", 4);
        c.pod_cidrs = a.pod_cidrs.clone();
        let (mut d, _) = node("d", 5);
        d.ipv4 = None;
        let (mut e, _) = node("e", 6);
        e.wireguard_public_key = None;
        // Order of the list does not matter: "a" wins by name.
        let got = desired_peers("n1", &[e, d, c, b, a], &POLICY);
        assert_eq!(got.peers.keys().collect::<Vec<_>>(), [&ka]);
        let reasons: Vec<_> = got
            .rejected
            .iter()
            .map(|r| (r.node.as_str(), r.reason.clone()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("b", RejectReason::DuplicateKey { other: "a".into() }),
                (
                    "c",
                    RejectReason::PrefixConflict {
                        prefix: "10.244.2.0/24".parse().unwrap(),
                        other: "a".into()
                    }
                ),
                ("d", RejectReason::NoAddress),
                ("e", RejectReason::MissingKey),
            ]
        );
    }

    /// A node rotates its key: make before break. The new peer is added bare (running, no
    /// prefixes, no keepalive), then takes the prefixes and turns its keepalive on in one
    /// change, then the old peer goes. After every request each prefix has a peer.
    #[test]
    fn key_rotation_hands_the_prefixes_over_before_removing_the_old_peer() {
        let (mut n2, old) = node("n2", 2);
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        r.reconcile(std::slice::from_ref(&n2)).unwrap();
        let prefixes = nets(&["10.244.2.0/24", "192.0.2.2/32"]);
        let new = PrivateKey::generate().public_key();
        n2.wireguard_public_key = Some(new.to_string());
        r.backend().history.lock().unwrap().clear();
        let report = r.reconcile(&[n2.clone()]).unwrap();
        let [PeerChange::Add(bare), handover, PeerChange::Remove(gone)] = report.changes.as_slice()
        else {
            panic!("{:?}", report.changes);
        };
        assert_eq!((bare.public_key, *gone), (new, old));
        assert!(bare.allowed_ips.is_empty() && bare.persistent_keepalive == 0);
        assert_eq!(
            *handover,
            PeerChange::Update {
                public_key: new,
                endpoint: None,
                allowed_ips: Some(prefixes.clone()),
                persistent_keepalive: Some(POLICY.persistent_keepalive),
            }
        );
        let history = r.backend().history.lock().unwrap().clone();
        assert_eq!(history.len(), 3, "one request per stage");
        for (i, peers) in history.iter().enumerate() {
            let owned: BTreeSet<IpNet> = peers
                .values()
                .flat_map(|p| p.config.allowed_ips.iter().copied())
                .collect();
            assert_eq!(owned, prefixes, "request {i}: a prefix without a peer");
        }
        assert_eq!(history[2].keys().collect::<Vec<_>>(), [&new]);
        assert!(r.reconcile(&[n2]).unwrap().is_clean());
    }

    /// A new peer whose prefixes nobody holds is added whole, in one request.
    #[test]
    fn new_peer_without_takeover_is_added_whole() {
        let (n2, k2) = node("n2", 2);
        let (n3, k3) = node("n3", 3);
        let r = Reconciler::new(FakeDevice::default(), "n1", POLICY);
        r.reconcile(std::slice::from_ref(&n2)).unwrap();
        let report = r.reconcile(&[n2, n3]).unwrap();
        let [PeerChange::Add(c)] = report.changes.as_slice() else {
            panic!("{:?}", report.changes);
        };
        assert_eq!(c.public_key, k3);
        assert_eq!(c.persistent_keepalive, POLICY.persistent_keepalive);
        assert_eq!(c.allowed_ips, nets(&["10.244.3.0/24", "192.0.2.3/32"]));
        assert!(r.backend().device().unwrap().peers.contains_key(&k2));
    }

    /// First contact on a keyed device: the peer with the higher key is added whole (this node
    /// initiates to it); the one with the lower key initiates to us, so its peer is added
    /// without endpoint and keepalive, and is restarted whole when the hold ends.
    #[test]
    fn first_contact_holds_only_peers_with_a_lower_key_until_the_hold_ends() {
        use crate::wireguard::contact::{ContactRole, FIRST_CONTACT_HOLD, role};
        use std::time::{Duration, UNIX_EPOCH};

        // Three keys in order: the local device holds the middle one.
        let mut nodes: Vec<(MeshNode, PublicKey)> =
            (1..=3).map(|i| node(&format!("n{i}"), i)).collect();
        nodes.sort_by_key(|(_, k)| *k.as_bytes());
        let local = nodes.remove(1).1;
        let (waits, initiated) = (nodes[0].1, nodes[1].1);
        assert_eq!(role(&local, &initiated), ContactRole::Initiator);
        assert_eq!(role(&local, &waits), ContactRole::Responder);
        let nodes: Vec<MeshNode> = nodes.into_iter().map(|(n, _)| n).collect();
        let dev = FakeDevice::default();
        dev.state.lock().unwrap().public_key = Some(local);
        let r = Reconciler::new(dev, "local", POLICY);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let report = r.reconcile_at(&nodes, t0).unwrap();
        assert_eq!((report.added(), report.held), (2, 1));
        assert_eq!(report.wake_at, Some(t0 + FIRST_CONTACT_HOLD));
        let peers = r.backend().device().unwrap().peers;
        let (whole, held) = (&peers[&initiated].config, &peers[&waits].config);
        assert!(whole.endpoint.is_some() && whole.persistent_keepalive == 25);
        assert!(held.endpoint.is_none() && held.persistent_keepalive == 0);
        assert!(!held.allowed_ips.is_empty());

        assert!(
            r.reconcile_at(&nodes, t0 + FIRST_CONTACT_HOLD / 2)
                .unwrap()
                .is_clean()
        );
        // No handshake came: the peer is restarted whole (a fresh peer initiates at once).
        let report = r.reconcile_at(&nodes, t0 + FIRST_CONTACT_HOLD).unwrap();
        let [PeerChange::Remove(gone), PeerChange::Add(whole)] = report.changes.as_slice() else {
            panic!("{:?}", report.changes);
        };
        assert_eq!((*gone, whole.public_key), (waits, waits));
        assert!(whole.endpoint.is_some() && whole.persistent_keepalive == 25);
        assert_eq!((report.held, report.wake_at), (0, None));
        assert!(
            r.reconcile_at(&nodes, t0 + FIRST_CONTACT_HOLD * 2)
                .unwrap()
                .is_clean()
        );
    }

    /// The device refuses one change: the batch is retried one by one, the rest lands.
    #[test]
    fn refused_change_does_not_block_the_others() {
        let (n2, k2) = node("n2", 2);
        let (n3, k3) = node("n3", 3);
        let dev = FakeDevice {
            refuse: Some(k3),
            ..Default::default()
        };
        let r = Reconciler::new(dev, "n1", POLICY);
        let report = r.reconcile(&[n2, n3]).unwrap();
        assert_eq!(report.failed.len(), 1);
        assert_eq!(*report.failed[0].0.public_key(), k3);
        let peers = r.backend().device().unwrap().peers;
        assert!(peers.contains_key(&k2) && !peers.contains_key(&k3));
    }
}
