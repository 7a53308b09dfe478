//! Churn for the soak run (`lab-soak`), each change made the way the real actor makes it:
//!
//! - pods: CNI ADD (with labels) and later DEL of the real plugin, as a runtime calls it, in
//!   pod namespaces reused as slots (each slot's `who` server answers `<cluster>/<node>/<slot>`
//!   whichever pod holds it);
//! - services: Service manifests (namespace `soak`) applied with `ironctl apply` and deleted
//!   with `ironctl delete` through the cluster's meshd, as an operator does; each selects the
//!   churned pods of one generation (or all of them), so its backends follow the pods; the
//!   LoadBalancer one asks for its VIP (`loadBalancerIP`) from red's IPPool;
//! - a NetworkPolicy applied and deleted with `ironctl apply` / `ironctl delete`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ironmesh_meshd::services::Affinity;

use super::{APP_PORT, CLIENT_IP, MeshLab, Node, Side, probe};
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;

/// The app label of every churned pod (`app=churn`); each also has `gen=g<N>`.
pub const APP: &str = "churn";
/// The Kubernetes namespace of the churned pods, services and policy.
pub const NAMESPACE: &str = "soak";
/// The churned NetworkPolicy (`soak/soak-churn`): app=churn admits app=client and app=web of
/// any namespace and the external client's subnet.
pub const POLICY: &str = "soak-churn";

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
    let (ip, _) = crate::cni::add_in(&mesh.bins.cni, &node.host, &slot.host, &id, NAMESPACE, &c)?;
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
    /// A LoadBalancer VIP from red's IPPool, announced by nodes with a local backend.
    LoadBalancer,
}

/// Which churned pods a service selects: those of one generation (`gen=g<N>`) or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Generation(u32),
    All,
}

impl Pick {
    pub fn selects(self, generation: u32) -> bool {
        match self {
            Pick::Generation(g) => g == generation,
            Pick::All => true,
        }
    }
}

/// A churned service; `pick` is what was applied last (`None`: it does not exist).
#[derive(Debug, Clone)]
pub struct ChurnSvc {
    pub side: Side,
    /// The name in namespace [`NAMESPACE`].
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub kind: SvcKind,
    pub pick: Option<Pick>,
    /// The last apply or delete of the service.
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
        pick: None,
        changed: Instant::now(),
    };
    vec![
        s(
            Side::Red,
            "svc-a",
            [10, 96, 1, 1],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Red,
            "svc-b",
            [10, 96, 1, 2],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Red,
            "global",
            [10, 96, 1, 100],
            APP_PORT,
            SvcKind::Global,
        ),
        s(
            Side::Red,
            "lb",
            [203, 0, 113, 11],
            80,
            SvcKind::LoadBalancer,
        ),
        s(
            Side::Blue,
            "svc-a",
            [10, 96, 2, 1],
            APP_PORT,
            SvcKind::ClusterIp,
        ),
        s(
            Side::Blue,
            "global",
            [10, 96, 1, 100],
            APP_PORT,
            SvcKind::Global,
        ),
    ]
}

/// The Service manifest of `svc` selecting `pick`.
pub fn manifest(svc: &ChurnSvc, pick: Pick, affinity: Affinity) -> String {
    let annotations = if svc.kind == SvcKind::Global {
        let a = match affinity {
            Affinity::Local => "local",
            Affinity::Remote => "remote",
            Affinity::None => "none",
        };
        format!("  annotations:\n    ironmesh.io/global: \"true\"\n    ironmesh.io/affinity: {a}\n")
    } else {
        String::new()
    };
    let address = match svc.kind {
        SvcKind::LoadBalancer => format!(
            "  type: LoadBalancer\n  loadBalancerIP: {}\n  externalTrafficPolicy: Local\n",
            svc.vip
        ),
        _ => format!("  clusterIP: {}\n", svc.vip),
    };
    let generation = match pick {
        Pick::Generation(g) => format!("\n    gen: g{g}"),
        Pick::All => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {NAMESPACE}\n{annotations}\
         spec:\n{address}  selector:\n    app: {APP}{generation}\n  ports:\n  - port: {}\n    targetPort: {APP_PORT}\n",
        svc.name, svc.port
    )
}

/// `ironctl ARGS --meshd <the first node of side's meshd>`.
fn ctl(mesh: &MeshLab, side: Side, args: &[&str]) -> Result<String> {
    let api = mesh.cluster(side).nodes[0].api.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--meshd", &api]);
    mesh.ironctl(&all)
}

/// Applies `manifest` (written under the lab's dir as `file`) through `side`'s meshd.
fn apply(mesh: &MeshLab, side: Side, file: &str, manifest: &str) -> Result<()> {
    let path = mesh.dir().join(file);
    std::fs::write(&path, manifest).map_err(io_err(format!("writing {file}")))?;
    ctl(mesh, side, &["apply", "-f", &path.display().to_string()]).map(drop)
}

/// Creates or changes the service (`ironctl apply`).
pub fn put_service(
    mesh: &MeshLab,
    svc: &mut ChurnSvc,
    pick: Pick,
    affinity: Affinity,
) -> Result<()> {
    let c = mesh.cluster(svc.side).name;
    apply(
        mesh,
        svc.side,
        &format!("soak-svc-{c}-{}.yaml", svc.name),
        &manifest(svc, pick, affinity),
    )?;
    svc.pick = Some(pick);
    svc.changed = Instant::now();
    Ok(())
}

/// Deletes the service (`ironctl delete svc`): meshd frees its addresses.
pub fn delete_service(mesh: &MeshLab, svc: &mut ChurnSvc) -> Result<()> {
    ctl(
        mesh,
        svc.side,
        &["delete", "svc", svc.name, "-n", NAMESPACE],
    )?;
    svc.pick = None;
    svc.changed = Instant::now();
    Ok(())
}

/// Applies `soak/soak-churn` through the first node's meshd of `side`.
pub fn apply_policy(mesh: &MeshLab, side: Side) -> Result<()> {
    let c = mesh.cluster(side).name;
    let [a, b, d, _] = CLIENT_IP.octets();
    let policy = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {POLICY}\n  \
         namespace: {NAMESPACE}\nspec:\n  podSelector:\n    matchLabels: {{app: {APP}}}\n  ingress:\n  \
         - from:\n    - namespaceSelector: {{}}\n      podSelector:\n        matchExpressions:\n        \
         - {{key: app, operator: In, values: [client, web]}}\n    - ipBlock: {{cidr: {a}.{b}.{d}.0/24}}\n    \
         ports:\n    - {{protocol: TCP, port: {APP_PORT}}}\n"
    );
    apply(mesh, side, &format!("soak-policy-{c}.yaml"), &policy)
}

/// Deletes `soak/soak-churn` through the first node's meshd of `side`.
pub fn delete_policy(mesh: &MeshLab, side: Side) -> Result<()> {
    ctl(mesh, side, &["delete", "netpol", POLICY, "-n", NAMESPACE]).map(drop)
}
