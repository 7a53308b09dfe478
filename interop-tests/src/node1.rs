//! One node as a user runs it: `node` (192.0.2.2, linked to `tor`) with a one-member etcd, the
//! meshd binary owning the node's eBPF datapath at a per-test pin root, its PodCIDR allocated
//! by meshd from `10.244.0.0/16`, the service CIDR `10.96.0.0/16`, pods added by the real
//! `ironmesh-cni` plugin (which takes the PodCIDR from the file meshd writes), and resources
//! given by `ironctl apply`. Nothing is written into etcd by hand. meshd keeps the node's flow
//! records (`datapath.flows`, read with `ironctl observe`).
//!
//! Dropping it stops meshd, then etcd, removes the pins and the lab's namespaces, also when
//! the test panics.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use datapath::Datapath;

use crate::cmd::wait_for;
use crate::datapath_lab::Pins;
use crate::error::{LabError, Result};
use crate::{EtcdCluster, Host, Lab, Process, bgpd, cni};

/// The node's name and cluster.
pub const NODE: &str = "n1";
pub const CLUSTER: &str = "red";
/// The node's address on the ToR link.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The pool meshd allocates the node's PodCIDR from.
pub const POD_POOL: &str = "10.244.0.0/16";
/// Every pod's app port; the pods name it `app` (`runtimeConfig.ports`), so Services and
/// NetworkPolicies can use the name.
pub const POD_PORT: u16 = 7000;

const T: Duration = Duration::from_secs(30);
/// meshd's metrics address, inside the node's namespace.
const METRICS: &str = "192.0.2.2:9464";

/// The node; see the module docs.
#[allow(missing_debug_implementations)] // Datapath and Process hold OS handles
pub struct Node1 {
    // Dropped first: meshd, then etcd, the observer, the pins, the lab (namespaces) last.
    pub meshd: Process,
    pub etcd: EtcdCluster,
    observer: Mutex<Option<Datapath>>,
    pins: Pins,
    pub tor: Host,
    pub node: Host,
    pub sock: PathBuf,
    pub data_dir: PathBuf,
    pub cni: PathBuf,
    pub ironctl: PathBuf,
    pub lab: Lab,
}

impl Node1 {
    /// The lab `name`; the ToR has `tor_addrs` on the link.
    pub fn start(name: &str, tor_addrs: &[&str]) -> Result<Node1> {
        Node1::start_with(name, tor_addrs, &|_| String::new())
    }

    /// [`Node1::start`] with `mesh_extra(node)` (TOML lines) added to meshd's `[mesh]` table,
    /// e.g. `bgpd_socket`.
    pub fn start_with(
        name: &str,
        tor_addrs: &[&str],
        mesh_extra: &dyn Fn(&Host) -> String,
    ) -> Result<Node1> {
        let bins = bgpd::build_binaries(&[
            ("ironmesh-meshd", "meshd"),
            ("ironmesh-cni", "ironmesh-cni"),
            ("ironctl", "ironctl"),
        ])?;
        let lab = Lab::new(name)?;
        let tor = lab.host("tor")?;
        let node = lab.host("node")?;
        lab.link(&tor, tor_addrs, &node, &[&format!("{NODE_IP}/24")])?;
        let pins = Pins::mounted(format!("/sys/fs/bpf/{}-node", lab.id()))?;
        let etcd = EtcdCluster::start(&[(&node, IpAddr::V4(NODE_IP))])?;
        // The CNI's data dir exists (as on a node with the plugin installed): meshd writes
        // the PodCIDR file into it.
        let data_dir = lab.dir().join("node-cni");
        std::fs::create_dir_all(&data_dir)
            .map_err(crate::error::io_err("creating the CNI data dir"))?;
        let extra = mesh_extra(&node);
        let conf = meshd_config(&node, &etcd, pins.root().path(), &data_dir, &extra);
        let sock = node.path("meshd.sock");
        let meshd = start_meshd(&node, &bins[0], &conf, &sock)?;
        let n = Node1 {
            meshd,
            etcd,
            observer: Mutex::new(None),
            pins,
            tor,
            node,
            sock,
            data_dir,
            cni: bins[1].clone(),
            ironctl: bins[2].clone(),
            lab,
        };
        // meshd writes the PodCIDR file for the CNI once registered; pods wait for it.
        let for_cni = n.data_dir.join("mesh/pod-cidrs.json");
        wait_for(
            "meshd's PodCIDR file for the CNI",
            T,
            Duration::from_millis(50),
            |_| {
                n.alive()?;
                Ok(for_cni.exists().then_some(()))
            },
        )?;
        Ok(n)
    }

    /// An error with meshd's log when meshd is not running.
    pub fn alive(&self) -> Result<()> {
        if self.meshd.is_running() {
            Ok(())
        } else {
            Err(LabError::Invalid(format!(
                "meshd died: {}",
                self.meshd.log_tail(4000)
            )))
        }
    }

    /// `ironctl ARGS` against this node's meshd.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&self.ironctl)
            .args(args)
            .env("IRONMESH_MESHD_SOCKET", &self.sock)
            .output()
            .expect("running ironctl")
    }

    /// `ironctl ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "ironctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `text` to a file of the lab's dir; its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.lab.dir().join(name);
        std::fs::write(&path, text).expect("writing a lab file");
        path.display().to_string()
    }

    /// `ironctl apply -f` of `text` (saved as `name`), which must succeed: its stdout.
    pub fn apply(&self, name: &str, text: &str) -> String {
        let f = self.file(name, text);
        self.ok(&["apply", "-f", &f])
    }

    /// The CNI network config of a pod labelled `app=<app>` (its port 7000 named `app`).
    pub fn cni_conf(&self, app: &str) -> serde_json::Value {
        let mut c = cni::conf_from_meshd(&self.data_dir, 1500, &[("app", app)]);
        c["runtimeConfig"]["ports"] =
            serde_json::json!([{"name": "app", "containerPort": POD_PORT}]);
        c
    }

    /// Pods (name, Kubernetes namespace, app label) through the CNI, then waits until meshd
    /// lists them all (it reached etcd and registered them). Each: its netns and address.
    pub fn add_pods(&self, pods: &[(&str, &str, &str)]) -> Result<Vec<(Host, Ipv4Addr)>> {
        let mut out = Vec::new();
        for (name, ns, app) in pods {
            let host = self.lab.host(name)?;
            let conf = self.cni_conf(app);
            let (ip, _) = cni::add_in(&self.cni, &self.node, &host, name, ns, &conf)?;
            out.push((host, ip));
        }
        self.wait_listed(&out.iter().map(|(_, ip)| *ip).collect::<Vec<_>>())?;
        Ok(out)
    }

    /// Waits until `ironctl get pods -A` lists every one of `ips`.
    pub fn wait_listed(&self, ips: &[Ipv4Addr]) -> Result<()> {
        wait_for(
            "meshd lists the pods",
            T,
            Duration::from_millis(50),
            |last| {
                self.alive()?;
                let listed = self.ctl(&["get", "pods", "-A"]);
                let text = String::from_utf8_lossy(&listed.stdout).into_owned();
                let all =
                    listed.status.success() && ips.iter().all(|ip| text.contains(&ip.to_string()));
                *last = text;
                Ok(all.then_some(()))
            },
        )
    }

    /// CNI DEL of pod `name` (added by [`Node1::add_pods`] with app label `app`).
    pub fn del_pod(&self, pod: &Host, name: &str, app: &str) -> Result<()> {
        cni::del(&self.cni, &self.node, pod, name, &self.cni_conf(app))
    }

    /// The node's first PodCIDR, as meshd allocated it in etcd.
    pub fn pod_cidr(&self) -> Result<ipnet::IpNet> {
        let key = format!("ironmesh/v1/clusters/{CLUSTER}/ipam/podcidrs-by-node/{NODE}");
        let v = self
            .etcd
            .get(0, &key)?
            .ok_or_else(|| LabError::Invalid(format!("no {key} in etcd")))?;
        serde_json::from_str::<serde_json::Value>(&v)
            .ok()
            .and_then(|j| j["cidrs"][0].as_str()?.parse().ok())
            .ok_or_else(|| LabError::Parse {
                what: "podcidrs-by-node".into(),
                detail: v,
            })
    }

    /// Runs `f` on an observer of meshd's pinned maps (opened on first use).
    pub fn dp<T>(&self, f: impl FnOnce(&Datapath) -> T) -> T {
        let mut guard = self.observer.lock().expect("observer lock");
        if guard.is_none() {
            *guard = Some(Datapath::load(self.pins.root()).expect("opening meshd's pins"));
        }
        f(guard.as_ref().expect("opened"))
    }

    /// `GET /metrics` of meshd (from inside the node's namespace): the exposition text.
    pub fn metrics(&self) -> Result<String> {
        crate::scrape::get(&self.node, METRICS)
    }

    /// The pin root meshd programs.
    pub fn pin_root(&self) -> &Path {
        self.pins.root().path()
    }
}

fn meshd_config(
    node: &Host,
    etcd: &EtcdCluster,
    root: &Path,
    data_dir: &Path,
    extra: &str,
) -> PathBuf {
    let state = node.path("meshd-state");
    let conf = node.path("meshd.toml");
    let eps = data_dir.join("mesh/endpoints");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"{NODE}\"\ncluster = \"{CLUSTER}\"\nstate_dir = {state:?}\n\n\
             [mesh]\netcd_endpoints = [\"{}\"]\ncluster_id = 1\nlease_ttl = 4\n\
             node_ipv4 = \"{NODE_IP}\"\ncni_endpoints_dir = {eps:?}\n\
             service_cidrs = [\"10.96.0.0/16\"]\n\
             pod_cidr_pools = [{{ cidr = \"{POD_POOL}\", node_mask = 24 }}]\n{extra}\n\n\
             [datapath]\nbpffs = {root:?}\nload = true\nuplinks = [\"eth0\"]\nmode = \"native\"\n\
             flows = 4096\n",
            etcd.endpoints(),
        ),
    )
    .expect("writing meshd.toml");
    conf
}

/// meshd in `node`'s netns, in this test's mount namespace: `ip netns exec` would give it a
/// private mount namespace with a fresh /sys (no bpffs there); nsenter puts it back into this
/// test's (the netns stays), so it sees the pin root. nsenter execs: the PID is meshd's.
fn start_meshd(node: &Host, bin: &Path, conf: &Path, sock: &Path) -> Result<Process> {
    let args: Vec<String> = [
        format!("--mount=/proc/{}/ns/mnt", std::process::id()),
        "--".into(),
        bin.display().to_string(),
        "--config".into(),
        conf.display().to_string(),
        "--api".into(),
        sock.display().to_string(),
        "--log".into(),
        "info,ironmesh_meshd=debug".into(),
        "--metrics".into(),
        METRICS.into(),
    ]
    .into();
    node.spawn("meshd", "nsenter", &args)
}
