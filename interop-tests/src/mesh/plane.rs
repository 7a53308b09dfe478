//! meshd's part of a node, as the lab drives and observes it: meshd loads the datapath
//! (`[datapath] load = true`, host_ingress on the uplink eth0, native routing), registers the
//! pods from the CNI's endpoint records under `mesh.cni_endpoints_dir`, programs the IP cache,
//! the services (a LoadBalancer VIP's external entry included: the datapath translates it for
//! clients outside the cluster) and blue web's NetworkPolicy applied with `ironctl apply`.
//! The lab only waits for it and reads the pinned maps ([`NodeDatapath`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use common::ClusterName;
use datapath::Datapath;
use datapath::pin::{PinRoot, bpffs_mounted};
use ironmesh_meshd::endpoints::EndpointRecord;
use ironmesh_meshd::schema::{Key, Resource};

use super::cluster::Plan;
use super::node::Pod;
use super::{MeshLab, T};
use crate::cmd::wait_for;
use crate::datapath_lab::remove_pins;
use crate::error::{LabError, Result};
use crate::etcd::EtcdCluster;
use crate::lab::Host;
use crate::process::Process;

fn dp_err(what: &str) -> impl FnOnce(datapath::DatapathError) -> LabError + '_ {
    move |e| LabError::Invalid(format!("datapath: {what}: {e}"))
}

/// A node's datapath at its pin root `/sys/fs/bpf/<lab id>-<host>`, loaded by meshd; this is
/// an observer handle on meshd's pins, opened on first use. The pins go when it is dropped.
#[derive(Debug)]
pub struct NodeDatapath {
    root: PinRoot,
    dp: Mutex<Option<Datapath>>,
}

impl NodeDatapath {
    /// The node's pin root, emptied of a crashed run's pins of the same name.
    pub fn new(host: &Host, lab_id: &str) -> Result<NodeDatapath> {
        let root = PinRoot::new(format!("/sys/fs/bpf/{lab_id}-{}", host.name()))
            .map_err(|e| LabError::Invalid(format!("pin root: {e}")))?;
        if !bpffs_mounted(root.path()).unwrap_or(false) {
            return Err(LabError::Invalid(
                "bpffs is not mounted on /sys/fs/bpf: run `sudo scripts/setup`".into(),
            ));
        }
        remove_pins(root.path());
        Ok(NodeDatapath {
            root,
            dp: Mutex::new(None),
        })
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

    /// meshd's `[datapath]` section: meshd loads the datapath into this pin root, native
    /// routing, host_ingress on the uplink eth0 (north-south load balancing of the VIP); it
    /// keeps the node's flow records (the events are read with `ironctl observe`), serves
    /// them to relays and relays the mesh's (`[observe]`).
    pub fn meshd_config(&self) -> String {
        format!(
            "[datapath]\nmode = \"native\"\nbpffs = {:?}\nload = true\nuplinks = [\"eth0\"]\n\
             flows = 4096\n\n[observe]\nserve = true\nrelay = true\nui = \"0.0.0.0:4245\"\n",
            self.root.path()
        )
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
        "--metrics".into(),
        crate::scrape::MESHD_METRICS.into(),
    ];
    host.spawn("meshd", "nsenter", &args)
}

/// Waits until meshd registered the pod from the CNI's record (endpoint record in etcd, the
/// same identity in the endpoints map); its (identity, endpoint id).
pub(super) fn register_pod(
    dp: &NodeDatapath,
    plan: &Plan,
    etcd: &EtcdCluster,
    pod: &Pod,
) -> Result<(u32, u32)> {
    let cluster: ClusterName = plan.name.parse().expect("cluster name");
    let ip = IpAddr::V4(pod.ip);
    let key = Key::cluster(&cluster, Resource::Endpoint(ip)).to_string();
    wait_for(
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
    )
}

/// Blue's web pods admit only app=client (the NetworkPolicy `default/web-from-client` of
/// configs/examples/manifests/mesh-blue.yaml, applied with `ironctl apply` before this): red's
/// app=other is denied. Waits for it in every blue web pod's policy map.
pub fn install_policy(mesh: &MeshLab) -> Result<()> {
    let webs = mesh.blue.nodes.iter().flat_map(|n| {
        n.pods
            .iter()
            .filter(|p| p.app == "web")
            .map(move |p| (n, p))
    });
    for (n, p) in webs {
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
    Ok(())
}
