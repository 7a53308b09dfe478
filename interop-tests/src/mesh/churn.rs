//! Churn for the soak run (`lab-soak`), each change made the way the real actor makes it:
//!
//! - pods: CNI ADD (with labels) and later DEL of the real plugin, as a runtime calls it, in
//!   pod namespaces reused as slots (each slot's `who` server answers `<cluster>/<node>/<slot>`
//!   whichever pod holds it);
//! - services: records written into (and deleted from) the cluster's etcd, as the lab's
//!   services and an operator do; the LoadBalancer VIP requested from and released to
//!   meshd's LB-IPAM (`ipam/vips/...`);
//! - a policy applied and deleted with `ironctl mesh policy` through the cluster's meshd.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{ClusterName, ServiceKey};
use ironmesh_meshd::kvstore::KvStore;
use ironmesh_meshd::lbipam::VipAllocator;
use ironmesh_meshd::services::{Affinity, BackendState, ServiceRecord};

use super::{APP_PORT, MeshLab, Node, Side, probe};
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;

/// The app label of every churned pod (`app=churn`); each also has `gen=g<N>`.
pub const APP: &str = "churn";
/// The churned policy (`default/soak-churn`): app=churn admits app=client and app=web.
pub const POLICY: &str = "default/soak-churn";
const LB_POOL: &str = "203.0.113.0/28";

/// A pod namespace that holds one churned pod at a time.
#[derive(Debug)]
pub struct Slot {
    pub side: Side,
    /// Index of the node in its cluster.
    pub node: usize,
    pub name: String,
    pub host: Host,
    pub pod: Option<LivePod>,
}

/// The pod a slot holds now.
#[derive(Debug, Clone)]
pub struct LivePod {
    pub id: String,
    pub ip: Ipv4Addr,
    pub generation: u32,
    pub since: Instant,
}

impl Slot {
    pub fn node<'a>(&self, mesh: &'a MeshLab) -> &'a Node {
        &mesh.cluster(self.side).nodes[self.node]
    }

    /// What its server answers.
    pub fn answer(&self, mesh: &MeshLab) -> String {
        let n = self.node(mesh);
        format!("{}/{}/{}", n.cluster, n.name, self.name)
    }
}

/// `per_node` slots on every node, their servers running until `stop`.
pub fn slots(mesh: &MeshLab, per_node: usize, stop: &Arc<AtomicBool>) -> Result<Vec<Slot>> {
    let mut out = Vec::new();
    for side in [Side::Red, Side::Blue] {
        for (i, n) in mesh.cluster(side).nodes.iter().enumerate() {
            for k in 0..per_node {
                let name = format!("s{k}");
                let host = mesh.lab.host(&format!("{}-{}-{name}", n.cluster, n.name))?;
                let slot = Slot {
                    side,
                    node: i,
                    name,
                    host,
                    pod: None,
                };
                probe::serve(&slot.host, slot.answer(mesh), stop.clone())?;
                out.push(slot);
            }
        }
    }
    Ok(out)
}

fn conf(node: &Node, generation: u32) -> serde_json::Value {
    crate::cni::conf(
        &node.cni_dir,
        &node.pod_cidr.to_string(),
        1400,
        &[("app", APP), ("gen", &format!("g{generation}"))],
    )
}

/// CNI ADD of a new pod (container id `soak-<cluster>-<node>-<seq>`) into an empty slot.
pub fn add_pod(mesh: &MeshLab, slot: &mut Slot, generation: u32, seq: u64) -> Result<Ipv4Addr> {
    let node = slot.node(mesh);
    let id = format!("soak-{}-{}-{seq}", node.cluster, node.name);
    let c = conf(node, generation);
    let (ip, _) = crate::cni::add(&mesh.bins.cni, &node.host, &slot.host, &id, &c)?;
    slot.pod = Some(LivePod {
        id,
        ip,
        generation,
        since: Instant::now(),
    });
    Ok(ip)
}

/// CNI DEL of the slot's pod; on failure the pod stays in the slot (to be retried).
pub fn del_pod(mesh: &MeshLab, slot: &mut Slot) -> Result<LivePod> {
    let pod = slot
        .pod
        .clone()
        .ok_or_else(|| LabError::Invalid(format!("slot {} is empty", slot.name)))?;
    let node = slot.node(mesh);
    crate::cni::del(
        &mesh.bins.cni,
        &node.host,
        &slot.host,
        &pod.id,
        &conf(node, pod.generation),
    )?;
    slot.pod = None;
    Ok(pod)
}

/// What kind of service a churned one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcKind {
    ClusterIp,
    /// Global (same name in both clusters), with a changing affinity.
    Global,
    /// A LoadBalancer VIP from LB-IPAM, announced by nodes with a local active backend.
    LoadBalancer,
}

/// A backend as the churn writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcBackend {
    pub ip: Ipv4Addr,
    pub node: String,
    pub state: BackendState,
}

/// A churned service; `backends` is what was written last (`None`: it does not exist).
#[derive(Debug, Clone)]
pub struct ChurnSvc {
    pub side: Side,
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub kind: SvcKind,
    pub backends: Option<Vec<SvcBackend>>,
    pub changed: Instant,
}

/// The churned services: red has two ClusterIPs, the global one and a LoadBalancer VIP; blue
/// one ClusterIP and the global one.
pub fn services() -> Vec<ChurnSvc> {
    let s = |side, name, vip: [u8; 4], port, kind| ChurnSvc {
        side,
        name,
        vip: vip.into(),
        port,
        kind,
        backends: None,
        changed: Instant::now(),
    };
    vec![
        s(
            Side::Red,
            "soak/svc-a",
            [10, 96, 1, 1],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Red,
            "soak/svc-b",
            [10, 96, 1, 2],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Red,
            "soak/global",
            [10, 96, 1, 100],
            APP_PORT,
            SvcKind::Global,
        ),
        s(
            Side::Red,
            "soak/lb",
            [203, 0, 113, 11],
            80,
            SvcKind::LoadBalancer,
        ),
        s(
            Side::Blue,
            "soak/svc-a",
            [10, 96, 2, 1],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Blue,
            "soak/global",
            [10, 96, 1, 100],
            APP_PORT,
            SvcKind::Global,
        ),
    ]
}

fn record(mesh: &MeshLab, svc: &ChurnSvc, backends: &[SvcBackend], a: Affinity) -> ServiceRecord {
    let cluster = mesh.cluster(svc.side).name;
    let backends = backends
        .iter()
        .map(|b| (IpAddr::V4(b.ip), APP_PORT, b.node.as_str(), b.state));
    let vip = IpAddr::V4(svc.vip);
    ServiceRecord {
        global: svc.kind == SvcKind::Global,
        affinity: a,
        ..super::services::tcp_record(svc.name, cluster, vip, svc.port, backends)
    }
}

/// Creates or changes the service (a LoadBalancer's VIP is requested on create).
pub fn put_service(
    mesh: &MeshLab,
    svc: &mut ChurnSvc,
    backends: Vec<SvcBackend>,
    affinity: Affinity,
) -> Result<()> {
    if svc.kind == SvcKind::LoadBalancer && svc.backends.is_none() {
        lbipam(mesh, svc, true)?;
    }
    let rec = record(mesh, svc, &backends, affinity);
    let value = String::from_utf8(rec.encode()).expect("JSON record");
    mesh.cluster(svc.side).etcd.put(0, &rec.key(), &value)?;
    svc.backends = Some(backends);
    svc.changed = Instant::now();
    Ok(())
}

/// Deletes the service record (and releases a LoadBalancer's VIP).
pub fn delete_service(mesh: &MeshLab, svc: &mut ChurnSvc) -> Result<()> {
    let key = record(mesh, svc, &[], Affinity::None).key();
    mesh.cluster(svc.side).etcd.etcdctl(0, &["del", &key])?;
    if svc.kind == SvcKind::LoadBalancer {
        lbipam(mesh, svc, false)?;
    }
    svc.backends = None;
    svc.changed = Instant::now();
    Ok(())
}

/// Requests (or releases) the service's VIP with meshd's LB-IPAM, from a node of its cluster.
fn lbipam(mesh: &MeshLab, svc: &ChurnSvc, request: bool) -> Result<()> {
    let c = mesh.cluster(svc.side);
    let kv = crate::etcd_lab::kv_config(&c.etcd, Duration::from_secs(5), Duration::from_secs(3));
    let cluster: ClusterName = c.name.parse().expect("cluster name");
    let key: ServiceKey = svc.name.parse().expect("service name");
    let ip = IpAddr::V4(svc.vip);
    c.nodes[0]
        .host
        .block_on(async move {
            let store = KvStore::connect(&kv).await.map_err(|e| e.to_string())?;
            let pools = vec![LB_POOL.parse().expect("pool")];
            let a = VipAllocator::new(store, cluster, pools).map_err(|e| e.to_string())?;
            if request {
                a.request(&key, ip).await.map(drop)
            } else {
                a.release(&key).await.map(drop)
            }
            .map_err(|e| e.to_string())
        })?
        .map_err(|e| LabError::Invalid(format!("LB-IPAM for {}: {e}", svc.name)))
}

/// Applies `default/soak-churn` through the first node's meshd of `side`.
pub fn apply_policy(mesh: &MeshLab, side: Side) -> Result<()> {
    let c = mesh.cluster(side);
    let file = mesh.dir().join(format!("soak-policy-{}.json", c.name));
    let from = |app: &str| serde_json::json!({"selector": {"match_labels": {"app": app}}});
    let policy = serde_json::json!({
        "namespace": "default",
        "name": "soak-churn",
        "endpoint_selector": {"match_labels": {"app": APP}},
        "ingress": [{
            "from": [from("client"), from("web")],
            "ports": [{"protocol": "tcp", "port": APP_PORT}, {"protocol": "icmp"}],
        }],
    });
    std::fs::write(&file, policy.to_string()).map_err(io_err("writing the soak policy"))?;
    let api = c.nodes[0].api.display().to_string();
    let file = file.display().to_string();
    mesh.ironctl(&["mesh", "--meshd", &api, "policy", "apply", "-f", &file])
        .map(drop)
}

/// Deletes `default/soak-churn` through the first node's meshd of `side`.
pub fn delete_policy(mesh: &MeshLab, side: Side) -> Result<()> {
    let api = mesh.cluster(side).nodes[0].api.display().to_string();
    mesh.ironctl(&["mesh", "--meshd", &api, "policy", "delete", POLICY])
        .map(drop)
}
