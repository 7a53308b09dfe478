//! A WireGuard mesh in the lab for the `wireguard_*` tests: nodes on one underlay switch, a pod
//! (netns behind a veth) per node, a wireguard-go device per node programmed by ironmesh's
//! reconciler from meshd node records. Userspace WireGuard only: this kernel has no module.

#![allow(dead_code)] // each test file uses a different part

pub mod flows;
pub mod meshd;
pub mod rollout;

use std::time::Duration;

use common::{ClusterName, NodeName};
use crypto::KeyStore;
use crypto::wireguard::{
    MeshNode, PeerPolicy, ReconcileReport, Reconciler, UserspaceBackend, WireGuardBackend,
    ensure_device,
};
use interop_tests::*;
use ironmesh_meshd::nodes::NodeRecord;

pub const WG_PORT: u16 = 51820;

pub const POLICY: PeerPolicy = PeerPolicy {
    listen_port: WG_PORT,
    node_encryption: true,
    persistent_keepalive: 25,
};

/// One node of the mesh.
#[derive(Debug)]
pub struct MeshHost {
    pub host: Host,
    pub pod: Host,
    /// The underlay interface (towards the switch).
    pub underlay_if: String,
    /// The node's interface towards its pod.
    pub pod_if: String,
    pub dev: WgDevice,
    pub store: KeyStore,
    pub record: NodeRecord,
    pub reconciler: Reconciler<UserspaceBackend>,
}

impl MeshHost {
    pub fn pod_ip(&self) -> String {
        pod_ip(self.index())
    }

    fn index(&self) -> u8 {
        self.record.ipv4.expect("lab nodes have IPv4").octets()[3]
    }

    pub fn public_key(&self) -> String {
        self.store.public_key().to_string()
    }

    pub fn reconcile(&self, records: &[NodeRecord]) -> ReconcileReport {
        let nodes: Vec<MeshNode> = records.iter().map(mesh_node).collect();
        self.reconciler
            .reconcile(&nodes)
            .unwrap_or_else(|e| panic!("reconcile on {}: {e}", self.host.name()))
    }

    /// `wg show <if> <what>` in the node.
    pub fn wg_show(&self, what: &str) -> String {
        self.host
            .exec("wg", &["show", &self.dev.ifname, what])
            .unwrap()
    }
}

pub fn pod_ip(i: u8) -> String {
    format!("10.244.{i}.2")
}

/// meshd's node record → what the reconciler takes (meshd will own this conversion).
pub fn mesh_node(r: &NodeRecord) -> MeshNode {
    MeshNode {
        name: r.name.to_string(),
        wireguard_public_key: r.wireguard_public_key.clone(),
        ipv4: r.ipv4,
        ipv6: r.ipv6,
        pod_cidrs: r.pod_cidrs.clone(),
    }
}

pub fn record(i: u8, public_key: Option<String>) -> NodeRecord {
    let mut r = NodeRecord::new(
        ClusterName::new("c1").unwrap(),
        NodeName::new(&format!("n{i}")).unwrap(),
    );
    r.ipv4 = Some(format!("192.0.2.{i}").parse().unwrap());
    r.pod_cidrs = vec![format!("10.244.{i}.0/24").parse().unwrap()];
    r.wireguard_public_key = public_key;
    r
}

/// `n` nodes (n1..), each with a pod and a wireguard-go device keyed from its own KeyStore.
/// Peers are not programmed yet: call [`MeshHost::reconcile`].
pub fn mesh(lab: &Lab, n: u8) -> Result<Vec<MeshHost>> {
    let sw = lab.switch("sw")?;
    let mut out = Vec::new();
    for i in 1..=n {
        let host = lab.host(&format!("n{i}"))?;
        let underlay = lab.attach(&host, &[&format!("192.0.2.{i}/24")], &sw)?;
        let pod = lab.host(&format!("p{i}"))?;
        let pod_link = lab.link(
            &pod,
            &[&format!("10.244.{i}.2/24")],
            &host,
            &[&format!("10.244.{i}.1/24")],
        )?;
        pod.route_add(&format!("default via 10.244.{i}.1"))?;
        let dev = WgDevice::start(&host, WG_PORT)?;
        // The lab helper gave the device a key of its own; ironmesh's store replaces it.
        let store = KeyStore::load_or_create(lab.dir().join(format!("n{i}-state")))
            .map_err(|e| LabError::Invalid(e.to_string()))?;
        let backend = UserspaceBackend::new(&dev.ifname);
        ensure_device(&backend, store.private_key(), WG_PORT)
            .map_err(|e| LabError::Invalid(e.to_string()))?;
        host.ip(&["link", "set", &dev.ifname, "up"])?;
        for j in (1..=n).filter(|&j| j != i) {
            host.route_add(&format!("10.244.{j}.0/24 dev {}", dev.ifname))?;
        }
        let record = record(i, Some(store.public_key().to_string()));
        out.push(MeshHost {
            host,
            pod,
            underlay_if: underlay.a_if,
            pod_if: pod_link.b_if,
            dev,
            reconciler: Reconciler::new(backend, format!("n{i}"), POLICY),
            store,
            record,
        });
    }
    Ok(out)
}

pub fn records(nodes: &[MeshHost]) -> Vec<NodeRecord> {
    nodes.iter().map(|n| n.record.clone()).collect()
}

/// Waits until every node has completed a handshake with every peer; returns the time taken.
///
/// Two nodes that add each other at once may cross their first initiations: both end up as
/// responders and neither can send until the retransmit (REKEY_TIMEOUT 5 s + jitter, see
/// `wireguard_handshake_crossing`). A ping window of one second cannot cover that, so tests
/// that check traffic on a freshly programmed mesh wait here first; 15 s allows two retries.
pub fn wait_handshakes(nodes: &[MeshHost]) -> Result<Duration> {
    let t = std::time::Instant::now();
    interop_tests::cmd::wait_for(
        "a handshake between every pair of nodes",
        Duration::from_secs(15),
        Duration::from_millis(100),
        |last| {
            let pending: Vec<String> = nodes
                .iter()
                .flat_map(|n| {
                    let dev = n.reconciler.backend().device().unwrap();
                    dev.peers
                        .iter()
                        .filter(|(_, p)| p.last_handshake.is_none())
                        .map(|(k, _)| format!("{} peer {k}", n.host.name()))
                        .collect::<Vec<_>>()
                })
                .collect();
            *last = format!("no handshake yet: {pending:?}");
            Ok(pending.is_empty().then_some(()))
        },
    )?;
    Ok(t.elapsed())
}

/// Reconciles every node again until no first-contact hold is left (the responder of a new
/// pair withholds its endpoint for up to `FIRST_CONTACT_HOLD`, then initiates itself), as
/// meshd's worker does when a report's `wake_at` comes. Returns the time taken.
pub fn settle_first_contact(nodes: &[MeshHost], records: &[NodeRecord]) -> Result<Duration> {
    let t = std::time::Instant::now();
    interop_tests::cmd::wait_for(
        "the first-contact holds to end",
        Duration::from_secs(3),
        Duration::from_millis(20),
        |last| {
            let held: Vec<String> = nodes
                .iter()
                .filter(|n| n.reconcile(records).held > 0)
                .map(|n| n.host.name().to_string())
                .collect();
            *last = format!("still holding: {held:?}");
            Ok(held.is_empty().then_some(()))
        },
    )?;
    Ok(t.elapsed())
}

/// Pings from every pod to every other pod; returns the failures.
pub fn ping_all_pairs(nodes: &[MeshHost], count: u32) -> Vec<String> {
    let mut bad = Vec::new();
    for a in nodes {
        for b in nodes.iter().filter(|b| b.host.name() != a.host.name()) {
            let stats = a
                .pod
                .ping(&b.pod_ip(), count, Duration::from_millis(50))
                .unwrap();
            if stats.received + 1 < count || stats.received == 0 {
                bad.push(format!("{} -> {}: {stats:?}", a.pod.name(), b.pod.name()));
            }
        }
    }
    bad
}

/// The device's peers as the reconciler's backend reads them.
pub fn peers_of(node: &MeshHost) -> Vec<String> {
    node.reconciler
        .backend()
        .device()
        .unwrap()
        .peers
        .keys()
        .map(|k| k.to_string())
        .collect()
}
