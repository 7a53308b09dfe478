//! A mesh for the rollout tests: nodes start in `off` with plaintext routes to the other nodes'
//! PodCIDRs in the main table (as native routing would leave them), a wireguard-go device
//! each, and ironmesh's [`NodeEncryption`] (UAPI backend, netlink tunnel routes, nft filter)
//! stepping in the node's namespace.

use std::time::{Duration, Instant, SystemTime};

use crypto::KeyStore;
use crypto::rollout::{
    EncryptionMode, EncryptionStatus, NetlinkRoutes, NftFilter, NodeEncryption, StepReport,
};
use crypto::wireguard::{Reconciler, UserspaceBackend, ensure_device};
use interop_tests::*;
use ironmesh_meshd::nodes::NodeRecord;

use super::{POLICY, WG_PORT, mesh_node, pod_ip, record};

/// Pod links get WireGuard's MTU (1420) from the start, as a CNI does when encryption may be
/// turned on: a flow then never meets a smaller MTU when it moves into the tunnel.
pub const POD_MTU: &str = "1420";

pub type Agent = NodeEncryption<UserspaceBackend, NetlinkRoutes, NftFilter>;

#[derive(Debug)]
pub struct RolloutHost {
    pub host: Host,
    pub pod: Host,
    pub underlay_if: String,
    pub dev: WgDevice,
    pub store: KeyStore,
    pub agent: Agent,
    pub index: u8,
}

impl RolloutHost {
    /// The node record as meshd would publish it: the key only once the node accepts.
    pub fn record(&self) -> NodeRecord {
        let key = self
            .agent
            .publishes_key()
            .then(|| self.store.public_key().to_string());
        record(self.index, key)
    }

    /// `wg show <if> peers` in the node: what the daemon itself has.
    pub fn wg_peers(&self) -> String {
        self.host
            .exec("wg", &["show", &self.dev.ifname, "peers"])
            .unwrap()
            .trim()
            .to_string()
    }

    /// `wg show <if> public-key` in the node: the key the daemon really uses.
    pub fn wg_public_key(&self) -> String {
        self.host
            .exec("wg", &["show", &self.dev.ifname, "public-key"])
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn pod_ip(&self) -> String {
        pod_ip(self.index)
    }

    pub fn step(&self, records: &[NodeRecord]) -> StepReport {
        let nodes: Vec<_> = records.iter().map(mesh_node).collect();
        self.host
            .in_netns(|| self.agent.step(&nodes, SystemTime::now()))
            .unwrap()
            .unwrap_or_else(|e| panic!("step on {}: {e}", self.host.name()))
    }

    pub fn status(&mut self, records: &[NodeRecord]) -> EncryptionStatus {
        let nodes: Vec<_> = records.iter().map(mesh_node).collect();
        let age = self.store.key_age(SystemTime::now());
        let agent = &mut self.agent;
        self.host
            .in_netns(|| agent.status(&nodes, age, SystemTime::now()))
            .unwrap()
            .unwrap_or_else(|e| panic!("status of {}: {e}", self.host.name()))
    }

    /// Rotates this node's key through its agent (see `NodeEncryption::rotate_key`).
    pub fn rotate_key(&mut self, records: &[NodeRecord]) -> crypto::PublicKey {
        let nodes: Vec<_> = records.iter().map(mesh_node).collect();
        let Self {
            host, agent, store, ..
        } = self;
        host.in_netns(|| agent.rotate_key(store, &nodes, SystemTime::now()))
            .unwrap()
            .unwrap_or_else(|e| panic!("rotate on {}: {e}", host.name()))
    }

    /// Sets the mode and applies it on this node alone (its record changes after).
    pub fn set_mode(&mut self, mode: EncryptionMode, records: &[NodeRecord]) -> StepReport {
        self.agent.set_mode(mode);
        self.step(records)
    }
}

/// Node `i`'s status with the mesh's current records.
pub fn status_of(nodes: &mut [RolloutHost], i: usize) -> EncryptionStatus {
    let records = rollout_records(nodes);
    nodes[i].status(&records)
}

pub fn rollout_records(nodes: &[RolloutHost]) -> Vec<NodeRecord> {
    nodes.iter().map(RolloutHost::record).collect()
}

/// `n` nodes on one switch, all `off`, pods reachable in clear.
pub fn rollout_mesh(lab: &Lab, n: u8) -> Result<Vec<RolloutHost>> {
    rollout_mesh_on(lab, &lab.switch("sw")?, n)
}

/// The same on a given switch (so a test can attach more hosts to the underlay).
pub fn rollout_mesh_on(lab: &Lab, sw: &Host, n: u8) -> Result<Vec<RolloutHost>> {
    let mut out = Vec::new();
    for i in 1..=n {
        let host = lab.host(&format!("n{i}"))?;
        let underlay = lab.attach(&host, &[&format!("192.0.2.{i}/24")], sw)?;
        let pod = lab.host(&format!("p{i}"))?;
        let link = lab.link(
            &pod,
            &[&format!("10.244.{i}.2/24")],
            &host,
            &[&format!("10.244.{i}.1/24")],
        )?;
        pod.ip(&["link", "set", &link.a_if, "mtu", POD_MTU])?;
        host.ip(&["link", "set", &link.b_if, "mtu", POD_MTU])?;
        pod.route_add(&format!("default via 10.244.{i}.1"))?;
        for j in (1..=n).filter(|&j| j != i) {
            host.route_add(&format!("10.244.{j}.0/24 via 192.0.2.{j}"))?;
        }
        let dev = WgDevice::start(&host, WG_PORT)?;
        let store = KeyStore::load_or_create(lab.dir().join(format!("n{i}-state")))
            .map_err(|e| LabError::Invalid(e.to_string()))?;
        let backend = UserspaceBackend::new(&dev.ifname);
        ensure_device(&backend, store.private_key(), WG_PORT)
            .map_err(|e| LabError::Invalid(e.to_string()))?;
        host.ip(&["link", "set", &dev.ifname, "up"])?;
        let agent = NodeEncryption::new(
            Reconciler::new(backend, format!("n{i}"), POLICY),
            NetlinkRoutes::new(&dev.ifname),
            NftFilter,
        );
        out.push(RolloutHost {
            host,
            pod,
            underlay_if: underlay.a_if,
            dev,
            store,
            agent,
            index: i,
        });
    }
    Ok(out)
}

/// Steps every node with the current records until two rounds in a row change nothing and
/// no node waits for a handshake (as agents watching etcd would); bounded by 15 s.
pub fn converge(nodes: &[RolloutHost]) -> Duration {
    let t = Instant::now();
    let mut quiet_rounds = 0;
    let mut last = Vec::new();
    while quiet_rounds < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no convergence in 15 s; last step reports: {last:#?}"
        );
        last.clear();
        let records = rollout_records(nodes);
        let mut quiet = true;
        for n in nodes {
            let r = n.step(&records);
            assert!(
                r.peers.rejected.is_empty() && r.peers.failed.is_empty(),
                "{}: {r:?}",
                n.host.name()
            );
            quiet &= r.is_quiet() && r.awaiting_handshake() == 0;
            last.push(r);
        }
        quiet_rounds = if quiet { quiet_rounds + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Reads an nft counter rule's packets from `nft -j list table <family> <table>` in `host`.
pub fn nft_rule_packets(host: &Host, family: &str, table: &str) -> u64 {
    let out = host
        .exec("nft", &["-j", "list", "table", family, table])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        .sum()
}
