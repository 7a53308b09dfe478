//! A node of the mesh lab (wireguard-go, meshd, bgpd, the datapath) and its pods, attached by
//! the CNI plugin and registered with their identities.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::cluster::{Plan, toml_list};
use super::plane::{self, NodeDatapath};
use super::{APP_PORT, Bins, T, WG_PORT, probe};
use crate::bgpd::{Bgpd, BgpdConfig, BgpdPeer};
use crate::cmd::wait_for;
use crate::error::{LabError, Result, io_err};
use crate::etcd::EtcdCluster;
use crate::etcd_auth::NodeCreds;
use crate::lab::{Host, Lab};
use crate::process::Process;
use crate::wireguard::WgDevice;

/// A node: wireguard-go, meshd, bgpd, the datapath and its pods.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub cluster: &'static str,
    pub host: Host,
    pub ip: Ipv4Addr,
    pub asn: u32,
    pub wg: WgDevice,
    pub meshd: Process,
    /// meshd's API socket (`ironctl mesh --meshd <api>`).
    pub api: PathBuf,
    pub bgpd: Bgpd,
    pub pod_cidr: Ipv4Net,
    /// The CNI plugin's data dir (endpoint records under `mesh/endpoints`).
    pub cni_dir: PathBuf,
    pub pods: Vec<Pod>,
    pub dp: NodeDatapath,
}

/// A pod: a namespace attached by the CNI plugin, registered with its identity.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub app: String,
    pub node: String,
    pub cluster: &'static str,
    pub host: Host,
    pub ip: Ipv4Addr,
    pub host_if: String,
    pub identity: u32,
    /// The datapath's endpoint id on its node.
    pub endpoint_id: u32,
}

impl Pod {
    /// What this pod's server answers: `<cluster>/<node>/<pod>`.
    pub fn answer(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.node, self.name)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), APP_PORT)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn start_node(
    lab: &Lab,
    bins: &Bins,
    plan: &Plan,
    i: usize,
    host: &Host,
    etcd: &EtcdCluster,
    remote_endpoints: &str,
    creds: &NodeCreds,
    stop: &Arc<AtomicBool>,
) -> Result<Node> {
    let name = format!("n{}", i + 1);
    let ip = plan.node_ip(i);
    // meshd loads the datapath into this (emptied) pin root and attaches it.
    let dp = NodeDatapath::new(host, lab.id())?;
    let wg = WgDevice::start(host, WG_PORT)?;
    host.ip(&["link", "set", &wg.ifname, "up"])?;
    let api = host.path("meshd.sock");
    let cni_dir = host.path("cni");
    // The CNI's dataDir exists (as an installed plugin's does): meshd writes the node's
    // PodCIDRs into it for the plugin.
    std::fs::create_dir_all(&cni_dir).map_err(io_err("creating the CNI data dir"))?;
    let bgpd_sock = host.path("bgpd.sock");
    let conf = host.path("meshd.toml");
    let (remote, remote_id) = plan.remote;
    // What the remote may claim: its pool, its nodes' segment, the services' ranges.
    let remote_plan = if remote == "red" {
        Plan::red()
    } else {
        Plan::blue()
    };
    let text = format!(
        "[node]\nname = \"{name}\"\ncluster = \"{c}\"\nstate_dir = {state:?}\n\n\
         [encryption]\nmode = \"opportunistic\"\n\n\
         [encryption.wireguard]\nlisten_port = {WG_PORT}\npersistent_keepalive = 5\n\n\
         [mesh]\netcd_endpoints = {eps}\ncluster_id = {id}\nlease_ttl = 4\n\
         node_ipv4 = \"{ip}\"\nbgpd_socket = {bgpd_sock:?}\nwireguard_device = \"{wg}\"\n\
         pod_cidr_pools = [{{ cidr = \"{pool}\", node_mask = 24 }}]\n\
         service_cidrs = [\"10.96.0.0/16\"]\npod_cidr_block_idle = \"2s\"\n\
         cni_endpoints_dir = {cni_eps:?}\n\n{local_auth}\n\
         [[mesh.remote_clusters]]\nname = \"{remote}\"\nid = {remote_id}\nendpoints = {reps}\n\
         pod_cidrs = [\"{rpool}\", \"{rippools}\"]\nnode_cidrs = [\"{rseg}\"]\n\
         service_cidrs = [\"10.96.0.0/16\", \"203.0.113.0/24\"]\n{remote_auth}\n\
         {datapath}",
        local_auth = creds.local_toml(),
        remote_auth = creds.remote_toml(remote),
        c = plan.name,
        state = host.path("meshd-state"),
        eps = toml_list(&etcd.endpoints()),
        id = plan.id,
        wg = wg.ifname,
        pool = plan.pool,
        reps = toml_list(remote_endpoints),
        rpool = remote_plan.pool,
        rippools = remote_plan.ippools,
        rseg = remote_plan.segment_cidr(),
        datapath = dp.meshd_config(),
        cni_eps = cni_dir.join("mesh/endpoints"),
    );
    std::fs::write(&conf, text).map_err(io_err("writing meshd.toml"))?;
    let meshd = plane::spawn_meshd(host, &bins.meshd, &conf, &api)?;

    let bgpd_conf = BgpdConfig::new(plan.node_asns[i], &ip.to_string())
        .peer(BgpdPeer::new(
            "tor",
            &plan.tor_ip().to_string(),
            plan.tor_asn,
        ))
        .render();
    // Learned routes (the other nodes' PodCIDRs, the other cluster's segment) into the kernel.
    let bgpd = Bgpd::start_with_args(
        host,
        &format!("{bgpd_conf}\n[bgp.fib]\ntable = 254\n"),
        &["--metrics", crate::scrape::BGPD_METRICS],
    )?;

    let key = format!(
        "ironmesh/v1/clusters/{}/ipam/podcidrs-by-node/{name}",
        plan.name
    );
    // A meshd that exits (a bad config) ends the wait at once.
    let v = wait_for(
        &format!("{}/{name}'s PodCIDR in etcd", plan.name),
        T,
        Duration::from_millis(200),
        |_| {
            if !meshd.is_running() {
                return Ok(Some(None));
            }
            Ok(etcd.get(0, &key)?.map(Some))
        },
    )?
    .ok_or_else(|| LabError::Invalid(format!("meshd exited: {}", meshd.log_tail(3000))))?;
    let pod_cidr = serde_json::from_str::<Value>(&v)
        .ok()
        .and_then(|v| v["cidrs"][0].as_str()?.parse::<Ipv4Net>().ok())
        .ok_or_else(|| LabError::Parse {
            what: "podcidrs-by-node".into(),
            detail: v.clone(),
        })?;

    // meshd writes the PodCIDR for the CNI plugin once registered.
    let for_cni = cni_dir.join("mesh/pod-cidrs.json");
    wait_for(
        &format!("{}/{name}'s PodCIDR file for the CNI", plan.name),
        T,
        Duration::from_millis(50),
        |_| Ok(for_cni.exists().then_some(())),
    )?;
    let mut pods = Vec::new();
    for (k, (pod_name, app)) in plan.pods[i].iter().enumerate() {
        let ph = lab.host(&format!("{}-{name}-{pod_name}", plan.name))?;
        // No PodCIDR in the CNI config: the plugin reads the one meshd wrote.
        let conf = crate::cni::conf_from_meshd(&cni_dir, 1400, &[("app", app)]);
        let id = format!("{}-{name}-{pod_name}", plan.name);
        let (pod_ip, host_if) = crate::cni::add(&bins.cni, host, &ph, &id, &conf)?;
        let mut pod = Pod {
            name: pod_name.to_string(),
            app: app.to_string(),
            node: name.clone(),
            cluster: plan.name,
            host: ph,
            ip: pod_ip,
            host_if,
            identity: 0,
            endpoint_id: k as u32 + 1,
        };
        (pod.identity, pod.endpoint_id) = plane::register_pod(&dp, plan, etcd, &pod)?;
        if *app == "web" {
            probe::serve(&pod.host, pod.answer(), stop.clone())?;
        }
        pods.push(pod);
    }
    Ok(Node {
        name,
        cluster: plan.name,
        host: host.clone(),
        ip,
        asn: plan.node_asns[i],
        wg,
        meshd,
        api,
        bgpd,
        pod_cidr,
        cni_dir,
        pods,
        dp,
    })
}

impl Node {
    /// The CNI config of one of this node's pods (as at its ADD).
    fn pod_conf(&self, pod: &Pod) -> serde_json::Value {
        crate::cni::conf_from_meshd(&self.cni_dir, 1400, &[("app", &pod.app)])
    }

    fn pod_named(&self, name: &str) -> Result<&Pod> {
        self.pods.iter().find(|p| p.name == name).ok_or_else(|| {
            LabError::Invalid(format!("{}/{}: no pod {name}", self.cluster, self.name))
        })
    }

    /// CNI DEL of one of this node's pods, as a runtime deletes a pod: its endpoint record,
    /// and so its backends, go. Its namespace (and server) stay for [`Node::readd_pod`].
    pub fn delete_pod(&self, cni: &std::path::Path, name: &str) -> Result<()> {
        let pod = self.pod_named(name)?;
        let id = format!("{}-{}-{name}", self.cluster, self.name);
        crate::cni::del(cni, &self.host, &pod.host, &id, &self.pod_conf(pod))
    }

    /// CNI ADD of a deleted pod again (same namespace, labels and server): the pod is back;
    /// its address may differ. Returns it.
    pub fn readd_pod(&self, cni: &std::path::Path, name: &str) -> Result<std::net::Ipv4Addr> {
        let pod = self.pod_named(name)?;
        let id = format!("{}-{}-{name}", self.cluster, self.name);
        crate::cni::add(cni, &self.host, &pod.host, &id, &self.pod_conf(pod)).map(|(ip, _)| ip)
    }

    /// `ironctl encryption status -o json` of this node.
    pub fn encryption_status(&self, ironctl: &std::path::Path) -> Result<Value> {
        let api = self.api.display().to_string();
        let out = probe::ironctl(
            ironctl,
            &["encryption", "--meshd", &api, "-o", "json", "status"],
        )?;
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            what: "ironctl encryption status".into(),
            detail: format!("{e}: {out}"),
        })
    }

    /// Waits until meshd encrypts to `peers` peers, all in the tunnel, with their routes in
    /// table 202.
    pub fn wait_encrypted(
        &self,
        ironctl: &std::path::Path,
        peers: u64,
        timeout: Duration,
    ) -> Result<()> {
        wait_for(
            &format!("{}/{} encrypting to {peers} peers", self.cluster, self.name),
            timeout,
            Duration::from_millis(300),
            |last| {
                let s = self.encryption_status(ironctl)?;
                let tunnel = s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p["path"] == "tunnel"));
                let routes = self.host.ip(&["route", "show", "table", "202"])?;
                // What a stuck handshake needs to be understood: the device's own view
                // (peer keys, endpoints, handshakes, transfer; `wg show` hides the private key).
                let wg = self.host.exec("wg", &["show", &self.wg.ifname])?;
                *last = format!("{s}\ntable 202: {routes}\n{wg}");
                let ok = s["peers_expected"] == peers
                    && s["peers_configured"] == peers
                    && tunnel
                    && routes.lines().count() as u64 == peers;
                Ok(ok.then_some(()))
            },
        )
    }

    /// Bytes the WireGuard device sent, summed over its peers.
    pub fn wg_tx_bytes(&self) -> Result<u64> {
        let out = self
            .host
            .exec("wg", &["show", &self.wg.ifname, "transfer"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .sum())
    }
}
