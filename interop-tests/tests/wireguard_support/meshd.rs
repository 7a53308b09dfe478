//! A mesh of real meshd processes driving wireguard-go (as `e2e_encryption` builds it): one
//! etcd, `n` nodes on one switch, a pod per node in the PodCIDR meshd allocated, clear routes
//! between the nodes' PodCIDRs in `main` (native routing), `ironctl` against each meshd.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use interop_tests::bgpd;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use serde_json::Value;

use super::WG_PORT;

pub const T: Duration = Duration::from_secs(30);

pub struct MeshdNode {
    pub index: usize,
    pub host: Host,
    pub sock: PathBuf,
    pub conf: PathBuf,
    pub state: PathBuf,
    pub meshd: Process,
    pub dev: WgDevice,
    pub underlay_if: String,
    pub cidr: String,
    pub pod_ip: String,
    pub pod: Option<Host>,
}

/// The lab; drop order tears the nodes down before etcd and the namespaces.
pub struct MeshdLab {
    pub nodes: Vec<MeshdNode>,
    pub etcd: EtcdCluster,
    pub ironctl: PathBuf,
    pub lab: Lab,
}

/// meshd's config for node `n`; `rotate_every` adds the schedule.
pub fn config(n: &MeshdNode, mode: &str, etcd: &str, rotate_every: Option<&str>) -> String {
    config_for(n.index, &n.state, &n.dev.ifname, mode, etcd, rotate_every)
}

fn config_for(
    i: usize,
    state: &Path,
    ifname: &str,
    mode: &str,
    etcd: &str,
    rotate_every: Option<&str>,
) -> String {
    let rotate = rotate_every
        .map(|r| format!("rotate_every = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "[node]\nname = \"n{i}\"\ncluster = \"red\"\nstate_dir = {:?}\n\n\
         [encryption]\nmode = \"{mode}\"\n\n\
         [encryption.wireguard]\nlisten_port = {WG_PORT}\npersistent_keepalive = 5\n{rotate}\n\
         [mesh]\netcd_endpoints = [\"{etcd}\"]\ncluster_id = 1\nlease_ttl = 4\n\
         node_ipv4 = \"192.0.2.{i}\"\nwireguard_device = \"{}\"\n\
         pod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 24 }}]\n",
        state, ifname
    )
}

impl MeshdLab {
    /// Starts etcd, `n` nodes with meshd in `mode`, and the pods; returns once every node
    /// tunnels to every other (status and table 202).
    pub fn start(test: &str, n: usize, mode: &str) -> Result<Self> {
        let me = Self::launch(test, n, mode)?;
        for n in &me.nodes {
            me.wait_status(n, "encrypted to every peer", |s| {
                s["peers_configured"] == (me.nodes.len() - 1) as u64
                    && s["peers"]
                        .as_array()
                        .is_some_and(|p| p.iter().all(|p| p["path"] == "tunnel"))
            });
            let want: Vec<&str> = me
                .nodes
                .iter()
                .filter(|o| o.index != n.index)
                .map(|o| o.cidr.as_str())
                .collect();
            wait_for("tunnel routes", T, Duration::from_millis(200), |last| {
                let t = n.host.ip(&["route", "show", "table", "202"])?;
                *last = t.clone();
                Ok(want.iter().all(|c| t.contains(c)).then_some(()))
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", me.diag()));
        }
        Ok(me)
    }

    /// Starts etcd, `n` nodes with meshd in `mode`, and the pods (each node's PodCIDR as meshd
    /// allocated it); returns without waiting for the tunnels.
    pub fn launch(test: &str, n: usize, mode: &str) -> Result<Self> {
        let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")])?;
        let (meshd_bin, ironctl) = (b[0].clone(), b[1].clone());
        let lab = Lab::new(test)?;
        let sw = lab.switch("sw")?;
        let eh = lab.host("etcd")?;
        lab.attach(&eh, &["192.0.2.100/24"], &sw)?;
        let etcd = EtcdCluster::start(&[(&eh, "192.0.2.100".parse::<IpAddr>().unwrap())])?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            let host = lab.host(&format!("n{i}"))?;
            let link = lab.attach(&host, &[&format!("192.0.2.{i}/24")], &sw)?;
            let dev = WgDevice::start(&host, WG_PORT)?;
            host.ip(&["link", "set", &dev.ifname, "up"])?;
            let sock = host.path("meshd.sock");
            let conf = host.path("meshd.toml");
            let args: Vec<String> = vec![
                "--config".into(),
                conf.display().to_string(),
                "--api".into(),
                sock.display().to_string(),
                "--log".into(),
                "info,ironmesh_meshd=debug".into(),
            ];
            let state = host.path("meshd-state");
            let text = config_for(i, &state, &dev.ifname, mode, &etcd.endpoints(), None);
            std::fs::write(&conf, text).unwrap();
            let meshd = host.spawn("meshd", &meshd_bin.display().to_string(), &args)?;
            nodes.push(MeshdNode {
                index: i,
                state,
                sock,
                conf,
                meshd,
                dev,
                underlay_if: link.a_if.clone(),
                cidr: String::new(),
                pod_ip: String::new(),
                pod: None,
                host,
            });
        }
        attach_pods(&lab, &etcd, &mut nodes)?;
        Ok(MeshdLab {
            nodes,
            etcd,
            ironctl,
            lab,
        })
    }

    pub fn status(&self, n: &MeshdNode) -> std::result::Result<Value, String> {
        self.ironctl_json(n, "status")
    }

    /// `ironctl encryption -o json rotate` on `n`.
    pub fn rotate(&self, n: &MeshdNode) -> std::result::Result<Value, String> {
        self.ironctl_json(n, "rotate")
    }

    fn ironctl_json(&self, n: &MeshdNode, what: &str) -> std::result::Result<Value, String> {
        cmd::ironctl_json(&self.ironctl, "encryption", &n.sock, what)
    }

    pub fn wait_status(&self, n: &MeshdNode, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, T, Duration::from_millis(200), |last| {
            match self.status(n) {
                Ok(s) => {
                    *last = s.to_string();
                    Ok(ok(&s).then_some(s))
                }
                Err(e) => {
                    *last = e;
                    Ok(None)
                }
            }
        })
        .unwrap_or_else(|e| panic!("n{}: {e}\n{}", n.index, self.diag()))
    }

    /// Node `i`'s (1-based) public key as its etcd record carries it.
    pub fn record_key(&self, i: usize) -> Option<String> {
        let key = format!("ironmesh/v1/clusters/red/nodes/n{i}");
        let v: Value = serde_json::from_str(&self.etcd.get(0, &key).ok()??).ok()?;
        v["wireguard_public_key"].as_str().map(String::from)
    }

    /// Every node's rules, table 202, `wg show` and nft table, and its meshd log tail.
    pub fn diag(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "== n{}: {}\nmeshd log:\n{}\nwireguard-go log:\n{}",
                    n.index,
                    n.tunnel_diag(),
                    n.meshd.log_tail(3000),
                    n.dev.process.log_tail(4000)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Each node's PodCIDR as meshd allocated it, a pod in it, clear routes between the nodes.
fn attach_pods(lab: &Lab, etcd: &EtcdCluster, nodes: &mut [MeshdNode]) -> Result<()> {
    let mut cidrs = Vec::new();
    for n in nodes.iter() {
        let key = format!(
            "ironmesh/v1/clusters/red/ipam/podcidrs-by-node/n{}",
            n.index
        );
        let v = wait_for("PodCIDR in etcd", T, Duration::from_millis(200), |_| {
            etcd.get(0, &key)
        })
        .unwrap_or_else(|e| panic!("{e}\nmeshd log:\n{}", n.meshd.log_tail(3000)));
        let v: Value = serde_json::from_str(&v).unwrap();
        let cidr: ipnet::Ipv4Net = v["cidrs"][0].as_str().unwrap().parse().unwrap();
        cidrs.push(cidr);
    }
    for (idx, n) in nodes.iter_mut().enumerate() {
        let cidr = cidrs[idx];
        let base = u32::from(cidr.network());
        let gw = std::net::Ipv4Addr::from(base + 1);
        let pod_ip = std::net::Ipv4Addr::from(base + 2);
        let pod = lab.host(&format!("p{}", n.index))?;
        let link = lab.link(
            &pod,
            &[&format!("{pod_ip}/{}", cidr.prefix_len())],
            &n.host,
            &[&format!("{gw}/{}", cidr.prefix_len())],
        )?;
        pod.ip(&["link", "set", &link.a_if, "mtu", "1420"])?;
        n.host.ip(&["link", "set", &link.b_if, "mtu", "1420"])?;
        pod.route_add(&format!("default via {gw}"))?;
        for (j, other) in cidrs.iter().enumerate().filter(|(j, _)| *j != idx) {
            n.host
                .route_add(&format!("{other} via 192.0.2.{}", j + 1))?;
        }
        n.cidr = cidr.to_string();
        n.pod_ip = pod_ip.to_string();
        n.pod = Some(pod);
    }
    Ok(())
}

impl MeshdNode {
    /// Table 202, the device as `wg` shows it (public keys only) and the nft counters.
    pub fn tunnel_diag(&self) -> String {
        format!(
            "table 202:\n{}\nwg:\n{}\nnft:\n{}",
            self.host
                .ip(&["route", "show", "table", "202"])
                .unwrap_or_default(),
            self.host
                .exec("wg", &["show", &self.dev.ifname])
                .unwrap_or_default(),
            self.host
                .exec("nft", &["list", "table", "inet", "ironmesh_crypto"])
                .unwrap_or_default()
        )
    }

    pub fn key_path(&self) -> PathBuf {
        self.state.join(crypto::KEY_FILE)
    }

    /// The device's own public key (`wg show <if> public-key`).
    pub fn device_key(&self) -> String {
        self.host
            .exec("wg", &["show", &self.dev.ifname, "public-key"])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The public keys of the device's peers.
    pub fn peer_keys(&self) -> Vec<String> {
        self.host
            .exec("wg", &["show", &self.dev.ifname, "peers"])
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    pub fn pod(&self) -> &Host {
        self.pod.as_ref().expect("pods attached")
    }
}

/// The key file's mtime and mode.
pub fn key_file(path: &Path) -> (std::time::SystemTime, u32) {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(path).unwrap();
    (m.modified().unwrap(), m.permissions().mode() & 0o7777)
}
