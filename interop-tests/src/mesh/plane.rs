//! Who owns the node's datapath, pods and policy: [`Plane::Meshd`] (meshd loads the datapath
//! with `[datapath] load = true`, registers the pods from the CNI's endpoint records under
//! `mesh.cni_endpoints_dir` and programs the policy applied with `ironctl mesh policy apply`)
//! or [`Plane::Lab`], where the lab stands in for meshd, each part behind one function:
//!
//! - [`NodeDatapath::load`]: load the eBPF datapath into a per-node pin root, attach it to the
//!   pods' veths (`Routing::Stack`: the kernel FIB decides, i.e. what bgpd learned and the
//!   WireGuard routes of table 202); meshd gets `[datapath] bpffs` to program the IP cache and
//!   services into those maps ([`NodeDatapath::meshd_config`]);
//! - [`register_pod`]: a pod's identity allocated in its cluster's etcd (meshd's allocator,
//!   as meshd's endpoint reconciler will) and its endpoint record written there;
//! - [`install_policy`]: blue web admits only app=client (TCP 8080 and ICMP), written straight
//!   into the blue web pods' policy maps;
//!
//! Either way [`north_south`] translates the VIP on the node (nftables DNAT to the node's local
//! web pod): the datapath has no uplink service translation yet.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{ClusterId, ClusterName, IdentityLayout, Labels};
use datapath::pin::{PinRoot, bpffs_mounted};
use datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use datapath::{Config, Datapath, Endpoint, EndpointPolicy, EventReader};
use ironmesh_meshd::endpoints::EndpointRecord;
use ironmesh_meshd::identity::IdentityAllocator;
use ironmesh_meshd::kvstore::{KvConfig, KvStore};

use std::time::Duration;

use ironmesh_meshd::schema::{Key, Resource};

use super::cluster::Plan;
use super::node::Pod;
use super::{APP_PORT, MeshLab, T, services};
use crate::cmd::wait_for;
use crate::error::{LabError, Result};
use crate::etcd::EtcdCluster;
use crate::lab::Host;
use crate::process::Process;

/// Who programs the node's datapath, registers pods and enforces policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// meshd itself.
    Meshd,
    /// The lab, standing in for meshd.
    Lab,
}

impl Plane {
    /// `IRONMESH_MESH_PLANE=lab|meshd`; meshd by default.
    pub fn from_env() -> Plane {
        match std::env::var("IRONMESH_MESH_PLANE").as_deref() {
            Ok("lab") => Plane::Lab,
            _ => Plane::Meshd,
        }
    }
}

fn dp_err(what: &str) -> impl FnOnce(datapath::DatapathError) -> LabError + '_ {
    move |e| LabError::Invalid(format!("datapath: {what}: {e}"))
}

/// A node's datapath at its pin root `/sys/fs/bpf/<lab id>-<host>`; the pins go when this is
/// dropped. With [`Plane::Lab`] the lab loaded it; with [`Plane::Meshd`] this is an observer
/// handle on meshd's pins, opened once meshd registered the first pod.
#[derive(Debug)]
pub struct NodeDatapath {
    plane: Plane,
    root: PinRoot,
    dp: Mutex<Option<Datapath>>,
}

impl NodeDatapath {
    /// The node's pin root; with [`Plane::Lab`], the programs and maps loaded into it
    /// (config: stack routing, default policy mode).
    pub fn new(plane: Plane, host: &Host, lab_id: &str) -> Result<NodeDatapath> {
        let root = PinRoot::new(format!("/sys/fs/bpf/{lab_id}-{}", host.name()))
            .map_err(|e| LabError::Invalid(format!("pin root: {e}")))?;
        if !bpffs_mounted(root.path()).unwrap_or(false) {
            return Err(LabError::Invalid(
                "bpffs is not mounted on /sys/fs/bpf: run `sudo scripts/setup`".into(),
            ));
        }
        if plane == Plane::Meshd {
            remove_pins(root.path());
            return Ok(NodeDatapath {
                plane,
                root,
                dp: Mutex::new(None),
            });
        }
        let mut dp = Datapath::load(&root);
        if dp.is_err() {
            // A half-made pin root of a crashed run with the same name: start clean.
            remove_pins(root.path());
            dp = Datapath::load(&root);
        }
        let mut dp = dp.map_err(dp_err("load"))?;
        dp.set_config(&Config::default())
            .map_err(dp_err("config"))?;
        Ok(NodeDatapath {
            plane,
            root,
            dp: Mutex::new(Some(dp)),
        })
    }

    pub fn plane(&self) -> Plane {
        self.plane
    }

    /// Runs `f` on the datapath handle (opening an observer on meshd's pins if needed).
    pub fn with<T>(&self, f: impl FnOnce(&mut Datapath) -> Result<T>) -> Result<T> {
        let mut guard = self.dp.lock().unwrap();
        if guard.is_none() {
            *guard = Some(Datapath::load(&self.root).map_err(dp_err("opening meshd's pins"))?);
        }
        f(guard.as_mut().expect("opened"))
    }

    pub fn pin_root(&self) -> &Path {
        self.root.path()
    }

    /// meshd's `[datapath]` section: with [`Plane::Meshd`] meshd loads the datapath (uplink
    /// eth0), otherwise it programs the IP cache and services into the lab's maps.
    pub fn meshd_config(&self) -> String {
        let load = match self.plane {
            Plane::Meshd => "load = true\nuplinks = [\"eth0\"]\n",
            Plane::Lab => "",
        };
        format!(
            "[datapath]\nmode = \"native\"\nbpffs = {:?}\n{load}",
            self.root.path()
        )
    }

    /// The pod as a local endpoint (its identity, its veth) and the programs on its veth
    /// ([`Plane::Lab`] only: meshd does it from the CNI's record).
    pub fn attach_pod(&self, node: &Host, pod: &Pod) -> Result<()> {
        if self.plane == Plane::Meshd {
            return Ok(());
        }
        let out = node.ip(&["-o", "link", "show", &pod.host_if])?;
        let ifindex = out
            .split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .ok_or_else(|| LabError::Parse {
                what: "ifindex".into(),
                detail: out.clone(),
            })?;
        self.with(|dp| {
            dp.upsert_endpoint(&Endpoint {
                id: pod.endpoint_id,
                identity: pod.identity,
                ifindex,
                addresses: vec![IpAddr::V4(pod.ip)],
            })
            .map_err(dp_err("endpoint"))?;
            node.in_netns(|| dp.attach(&pod.host_if))?
                .map_err(dp_err("attach"))
        })
    }

    /// The datapath's event ring (drops, verdicts), read from now on.
    pub fn events(&self) -> Result<EventReader> {
        EventReader::open(&self.root).map_err(|e| LabError::Invalid(format!("events: {e}")))
    }
}

impl Drop for NodeDatapath {
    fn drop(&mut self) {
        remove_pins(self.root.path());
    }
}

/// Removes pin roots (`/sys/fs/bpf/im-<pid>-...`) of labs whose process is gone (a run killed
/// by SIGKILL, which no Drop cleans), as `Lab::new` sweeps their namespaces.
pub fn sweep_stale_pins() {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("im-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !crate::sys::alive(pid)) {
            remove_pins(&e.path());
        }
    }
}

fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Starts meshd in `host`. `ip netns exec` gives a daemon a private mount namespace with a
/// fresh /sys (no bpffs); nsenter puts meshd back into this process's mount namespace (the
/// netns stays) so it sees the pins. nsenter execs: the PID is meshd's.
pub fn spawn_meshd(host: &Host, meshd: &Path, conf: &Path, api: &Path) -> Result<Process> {
    let args: Vec<String> = vec![
        format!("--mount=/proc/{}/ns/mnt", std::process::id()),
        "--".into(),
        meshd.display().to_string(),
        "--config".into(),
        conf.display().to_string(),
        "--api".into(),
        api.display().to_string(),
        "--log".into(),
        "info,ironmesh_meshd=debug".into(),
    ];
    host.spawn("meshd", "nsenter", &args)
}

/// The labels a pod's identity is derived from.
pub fn identity_labels(pod: &Pod) -> Labels {
    Labels::from_pairs([
        ("app", pod.app.as_str()),
        ("io.kubernetes.pod.namespace", "default"),
    ])
    .expect("valid labels")
}

/// Registers the pod; returns its (identity, endpoint id). With [`Plane::Meshd`]: waits until
/// meshd registered it from the CNI's record (endpoint record in etcd, the same identity in
/// the endpoints map). With [`Plane::Lab`]: allocates the identity with meshd's allocator in the
/// cluster's etcd and writes the endpoint record (from the node's netns, where etcd is
/// reachable); the lab's datapath gets it from [`NodeDatapath::attach_pod`].
pub(super) fn register_pod(
    node: &Host,
    dp: &NodeDatapath,
    plan: &Plan,
    etcd: &EtcdCluster,
    pod: &Pod,
) -> Result<(u32, u32)> {
    let cluster: ClusterName = plan.name.parse().expect("cluster name");
    let ip = IpAddr::V4(pod.ip);
    if dp.plane == Plane::Meshd {
        let key = Key::cluster(&cluster, Resource::Endpoint(ip)).to_string();
        return wait_for(
            &format!("meshd registering pod {}", pod.host.name()),
            T,
            Duration::from_millis(100),
            |last| {
                let Some(v) = etcd.get(0, &key)? else {
                    return Ok(None);
                };
                let rec = EndpointRecord::decode(&cluster, ip, v.as_bytes()).map_err(|e| {
                    LabError::Parse {
                        what: key.clone(),
                        detail: e,
                    }
                })?;
                let info = dp.with(|d| d.endpoint(ip).map_err(dp_err("endpoint")))?;
                *last = format!("record {rec:?}, map {info:?}");
                Ok(info
                    .filter(|i| i.identity == rec.identity.raw())
                    .map(|i| (i.identity, i.id)))
            },
        );
    }
    let id = ClusterId::new(plan.id).expect("cluster id");
    let kv = KvConfig::new(etcd.endpoints().split(','));
    let labels = identity_labels(pod);
    let rec_node = pod.node.parse().expect("node name");
    let identity = node
        .block_on(async move {
            let store = KvStore::connect(&kv).await.map_err(|e| e.to_string())?;
            let alloc = IdentityAllocator::new(
                store.clone(),
                cluster.clone(),
                id,
                IdentityLayout::default(),
            );
            let identity = alloc.allocate(&labels).await.map_err(|e| e.to_string())?;
            let rec = EndpointRecord {
                ip,
                cluster,
                node: rec_node,
                identity,
                tunnel_endpoint: None,
                encrypt_key: 0,
            };
            store
                .put(&rec.key(), rec.encode(), None)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u32, String>(identity.raw())
        })?
        .map_err(|e| LabError::Invalid(format!("registering pod {}: {e}", pod.host.name())))?;
    Ok((identity, pod.endpoint_id))
}

/// Blue's web pods admit only app=client (TCP to the app port, and ICMP): red's app=other is
/// denied. With [`Plane::Meshd`], a policy record applied with `ironctl mesh policy apply`
/// through blue/n1's meshd, waited for in every blue web pod's policy map; with
/// [`Plane::Lab`], the same written straight into those maps.
pub fn install_policy(mesh: &MeshLab) -> Result<()> {
    let webs = || {
        mesh.blue.nodes.iter().flat_map(|n| {
            n.pods
                .iter()
                .filter(|p| p.app == "web")
                .map(move |p| (n, p))
        })
    };
    if mesh.plane == Plane::Meshd {
        let file = mesh.dir().join("blue-web-policy.json");
        let policy = serde_json::json!({
            "namespace": "default",
            "name": "web-from-client",
            "endpoint_selector": {"match_labels": {"app": "web"}},
            "ingress": [{
                "from": [{"selector": {"match_labels": {"app": "client"}}}],
                "ports": [{"protocol": "tcp", "port": APP_PORT}, {"protocol": "icmp"}],
            }],
        });
        std::fs::write(&file, policy.to_string())
            .map_err(|e| LabError::Invalid(format!("writing {}: {e}", file.display())))?;
        let api = mesh.blue.nodes[0].api.display().to_string();
        let file = file.display().to_string();
        mesh.ironctl(&["mesh", "--meshd", &api, "policy", "apply", "-f", &file])?;
        for (n, p) in webs() {
            wait_for(
                &format!("the policy in blue/{}/{}'s map", n.name, p.name),
                T,
                Duration::from_millis(100),
                |_| {
                    n.dp.with(|d| {
                        d.policy_entries(p.endpoint_id)
                            .map_err(dp_err("policy"))
                            .map(|e| e.map(drop))
                    })
                },
            )?;
        }
        return Ok(());
    }
    let client = mesh.pod(super::Side::Red, "n1", "client").identity;
    let policy = EndpointPolicy {
        ingress_selected: true,
        rules: [PortMatch::Port(6, APP_PORT), PortMatch::Proto(1)]
            .into_iter()
            .map(|ports| Rule {
                direction: Direction::Ingress,
                peer: Peer::Identity(client),
                ports,
                action: Action::Allow,
            })
            .collect(),
        ..Default::default()
    };
    for (n, p) in webs() {
        n.dp.with(|d| {
            d.set_policy(p.endpoint_id, &policy)
                .map_err(dp_err("policy"))
        })?;
    }
    Ok(())
}

/// The LoadBalancer VIP translated on `node` to its local web pod (nftables DNAT), and the
/// source to the node's address (SNAT, as kube-proxy does without DSR): the pod's reply is then
/// for the node itself and goes back through conntrack, which a native-routing FIB redirect
/// of the datapath would otherwise bypass. The client's address is not preserved.
pub fn north_south(
    node: &Host,
    node_ip: std::net::Ipv4Addr,
    backend: std::net::Ipv4Addr,
) -> Result<()> {
    let script = format!(
        "table ip ironmesh_lab_lb {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  \
         ip daddr {} tcp dport {} dnat to {backend}:{APP_PORT}\n }}\n \
         chain postrouting {{\n  type nat hook postrouting priority srcnat; policy accept;\n  \
         ct status dnat ip daddr {backend} tcp dport {APP_PORT} snat to {node_ip}\n }}\n}}\n",
        services::LB_VIP,
        services::LB_PORT
    );
    let path: PathBuf = node.path("lb.nft");
    std::fs::write(&path, script)
        .map_err(|e| LabError::Invalid(format!("writing {}: {e}", path.display())))?;
    crate::cmd::require_binary("nft", "nftables")?;
    node.exec("nft", &["-f", &path.display().to_string()])
        .map(drop)
}
