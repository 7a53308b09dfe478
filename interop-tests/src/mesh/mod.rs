//! The two-cluster lab (issue 8): what the README's demo shows and the `e2e_mesh_*` tests break.
//!
//! ```text
//!                client 172.16.1.10
//!                   |
//!   red ToR (BIRD, AS 65010) ---- 172.16.0.0/30 ---- blue ToR (FRR, AS 65020)
//!        | switch 192.0.2.0/24                            | switch 198.51.100.0/24
//!   red-n1 .11 (AS 65011)  red-n2 .12 (AS 65012)     blue-n1 .11 (AS 65021)  blue-n2 .12
//!   red-etcd1..3 .21-.23                              blue-etcd1..3 .21-.23
//! ```
//!
//! Each node runs bgpd (peering with its ToR, learned routes into the kernel), meshd (its
//! cluster's 3-member etcd, the other cluster's etcd as a remote, opportunistic WireGuard on a
//! wireguard-go device, bgpd's adverts, the datapath's IP cache and services) and pods attached
//! by the real CNI plugin. PodCIDRs come from meshd (red 10.1.0.0/16, blue 10.2.0.0/16); pod
//! traffic between nodes is routed by what bgpd learned from the ToRs and, once a WireGuard
//! handshake completed, goes through the tunnel. Services: `shop/web`, global with affinity
//! local (ClusterIP 10.96.0.10:8080, a backend in every web pod of both clusters) and
//! `shop/front`, a LoadBalancer VIP 203.0.113.10:80 on red's web pods, announced by every red
//! node with a local backend (ECMP at the BIRD ToR).
//!
//! meshd loads the datapath (host_ingress on the uplink, native routing), registers the pods
//! from the CNI's endpoint records and programs blue web's NetworkPolicy (in mesh-blue.yaml,
//! applied with `ironctl apply`: only app=client may reach it); the lab only waits for it
//! ([`plane`]). The VIP is
//! translated for the external client by the datapath too: host_ingress on a red node's uplink
//! DNATs it to that node's web pod (the external entry meshd programs for a LoadBalancer VIP),
//! and the pod's pod_egress restores VIP:80 on the reply. No VIP address on any node, no
//! nftables NAT, the client's address preserved ([`services::vip_flow`] shows the flow).

pub mod churn;
mod cluster;
mod node;
pub mod plane;
pub mod probe;
pub mod services;
pub mod soak;
mod tor;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use cluster::Cluster;
pub use node::{Node, Pod};
pub use tor::{Tor, TorKind};

use crate::bgpd::{build_binaries, cargo_binary};
use crate::cmd::wait_for;
use crate::error::{LabError, Result};
use crate::etcd::EtcdCluster;
use crate::etcd_auth::EtcdAuthLab;
use crate::lab::{Host, Lab};

/// The WireGuard port of every node.
pub const WG_PORT: u16 = 51820;
/// The port every web pod answers on (its name: `<cluster>/<node>/<pod>`).
pub const APP_PORT: u16 = 8080;
/// The external client, behind the red ToR.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 10);
/// Readiness waits: generous for a loaded 2-core machine, still bounded.
pub const T: Duration = Duration::from_secs(60);

/// The binaries the lab runs besides the peers (bgpd is `lab-bgpd`, built with interop-tests).
#[derive(Debug, Clone)]
pub struct Bins {
    pub meshd: PathBuf,
    pub cni: PathBuf,
    pub ironctl: PathBuf,
}

impl Bins {
    /// Builds meshd, the CNI plugin and ironctl with the profile of the running binary.
    pub fn build() -> Result<Bins> {
        let b = build_binaries(&[
            ("ironmesh-meshd", "meshd"),
            ("ironmesh-cni", "ironmesh-cni"),
            ("ironctl", "ironctl"),
        ])?;
        Ok(Bins {
            meshd: b[0].clone(),
            cni: b[1].clone(),
            ironctl: b[2].clone(),
        })
    }

    /// Finds them already built next to the running binary (the demo's script builds them).
    pub fn find() -> Result<Bins> {
        cargo_binary("lab-bgpd")?;
        Ok(Bins {
            meshd: cargo_binary("meshd")?,
            cni: cargo_binary("ironmesh-cni")?,
            ironctl: cargo_binary("ironctl")?,
        })
    }
}

/// Which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Red,
    Blue,
}

/// The running two-cluster lab. Dropping it tears everything down.
#[derive(Debug)]
pub struct MeshLab {
    pub red: Cluster,
    pub blue: Cluster,
    pub red_tor: Tor,
    pub blue_tor: Tor,
    pub client: Host,
    pub bins: Bins,
    /// The etcds' CA, the lab's root client certificate and every password file.
    pub auth: EtcdAuthLab,
    /// How long [`MeshLab::start`] took.
    pub startup: Duration,
    stop: Arc<AtomicBool>,
    // Last: dropped after the daemons' handles (the lab kills them and deletes the namespaces).
    pub lab: Lab,
}

impl MeshLab {
    /// Builds the whole topology and waits until it is ready: BGP sessions up, every PodCIDR at
    /// both ToRs, the VIP with one path per red node at the BIRD ToR, and every node encrypting
    /// to every other node of both clusters. On failure the daemons' logs are printed before
    /// teardown.
    pub fn start(name: &str, bins: Bins) -> Result<MeshLab> {
        Self::start_with(name, bins, &AtomicBool::new(false))
    }

    /// [`MeshLab::start`], giving up between steps once `cancel` is set (the demo's Ctrl-C);
    /// what was started is torn down.
    pub fn start_with(name: &str, bins: Bins, cancel: &AtomicBool) -> Result<MeshLab> {
        let step = |what: &str| {
            if cancel.load(Ordering::SeqCst) {
                Err(LabError::Invalid(format!("interrupted before {what}")))
            } else {
                Ok(())
            }
        };
        let started = Instant::now();
        let lab = Lab::new(name)?;
        plane::sweep_stale_pins();
        let stop = Arc::new(AtomicBool::new(false));
        let dump = |lab: &Lab| {
            if !cancel.load(Ordering::SeqCst) {
                lab.dump_logs();
            }
        };
        let (red_tor, blue_tor, client, red, blue, auth) = match build(&lab, &bins, &stop, &step) {
            Ok(parts) => parts,
            Err(e) => {
                dump(&lab);
                return Err(e);
            }
        };
        let mut mesh = MeshLab {
            red,
            blue,
            red_tor,
            blue_tor,
            client,
            bins,
            auth,
            startup: Duration::ZERO,
            stop,
            lab,
        };
        let ready = services::install(&mesh)
            .and_then(|()| plane::install_policy(&mesh))
            .and_then(|()| step("the readiness wait"))
            .and_then(|()| mesh.wait_ready());
        if let Err(e) = ready {
            dump(&mesh.lab);
            return Err(e);
        }
        mesh.startup = started.elapsed();
        Ok(mesh)
    }

    /// Waits for the BGP sessions, the routes at both ToRs and the tunnels.
    pub fn wait_ready(&self) -> Result<()> {
        self.red_tor.wait_sessions(T)?;
        self.blue_tor.wait_sessions(T)?;
        let cidrs: Vec<String> = self.nodes().map(|n| n.pod_cidr.to_string()).collect();
        for tor in [&self.red_tor, &self.blue_tor] {
            tor.wait_kernel_routes(&cidrs, T)?;
        }
        self.wait_vip_paths(self.red.nodes.len(), T)?;
        let peers = self.nodes().count() as u64 - 1;
        for n in self.nodes() {
            n.wait_encrypted(&self.bins.ironctl, peers, T)?;
        }
        Ok(())
    }

    /// Waits until the BIRD ToR installed the VIP with `paths` next hops (0: gone).
    pub fn wait_vip_paths(&self, paths: usize, timeout: Duration) -> Result<Vec<Ipv4Addr>> {
        wait_for(
            &format!("{paths} path(s) to the VIP at the red ToR"),
            timeout,
            Duration::from_millis(20),
            |last| {
                let hops = self.red_tor.vip_next_hops()?;
                *last = format!("{hops:?}");
                Ok((hops.len() == paths).then_some(hops))
            },
        )
    }

    pub fn cluster(&self, side: Side) -> &Cluster {
        match side {
            Side::Red => &self.red,
            Side::Blue => &self.blue,
        }
    }

    pub fn tor(&self, side: Side) -> &Tor {
        match side {
            Side::Red => &self.red_tor,
            Side::Blue => &self.blue_tor,
        }
    }

    /// Every node of both clusters.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.red.nodes.iter().chain(&self.blue.nodes)
    }

    /// The pod `name` on `node` of `side` (e.g. `(Red, "n1", "client")`).
    pub fn pod(&self, side: Side, node: &str, name: &str) -> &Pod {
        self.cluster(side)
            .node(node)
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} on {node}"))
    }

    /// Runs `ironctl args` and returns its stdout; a failure carries its stderr.
    pub fn ironctl(&self, args: &[&str]) -> Result<String> {
        probe::ironctl(&self.bins.ironctl, args)
    }

    /// `ironctl observe -o json ARGS` through `node`'s meshd: the flows, and what ironctl
    /// said on stderr (nodes that do not answer).
    pub fn observe(
        &self,
        node: &Node,
        args: &[&str],
    ) -> Result<(Vec<common::flows::Flow>, String)> {
        let out = std::process::Command::new(&self.bins.ironctl)
            .args(["observe", "-o", "json", "--meshd"])
            .arg(&node.api)
            .args(args)
            .output()
            .map_err(crate::error::io_err("running ironctl observe"))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("ironctl observe {}", args.join(" ")),
                status: out.status.to_string(),
                stderr,
            });
        }
        let flows = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| LabError::Parse {
                    what: "ironctl observe -o json".into(),
                    detail: format!("{e}: {l}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((flows, stderr))
    }

    pub fn dir(&self) -> &Path {
        self.lab.dir()
    }
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The hosts, links, ToRs, etcds (TLS with client certificates, users and roles made by
/// `ironctl mesh provision`) and both clusters' nodes.
fn build(
    lab: &Lab,
    bins: &Bins,
    stop: &Arc<AtomicBool>,
    step: &dyn Fn(&str) -> Result<()>,
) -> Result<(Tor, Tor, Host, Cluster, Cluster, EtcdAuthLab)> {
    step("the ToRs")?;
    let (red_tor_h, blue_tor_h, client) = (
        lab.host("red-tor")?,
        lab.host("blue-tor")?,
        lab.host("client")?,
    );
    lab.link(
        &red_tor_h,
        &["172.16.0.1/30"],
        &blue_tor_h,
        &["172.16.0.2/30"],
    )?;
    lab.link(
        &client,
        &[&format!("{CLIENT_IP}/24")],
        &red_tor_h,
        &["172.16.1.1/24"],
    )?;
    client.route_add("default via 172.16.1.1")?;
    let red_plan = cluster::Plan::red();
    let blue_plan = cluster::Plan::blue();
    let red_hosts = cluster::Hosts::make(lab, &red_plan, &red_tor_h)?;
    let blue_hosts = cluster::Hosts::make(lab, &blue_plan, &blue_tor_h)?;
    let auth = EtcdAuthLab::new(&lab.dir().join("secrets"))?;
    let red_tls = auth.etcd_tls(red_plan.name, &red_hosts.etcd_ips())?;
    let blue_tls = auth.etcd_tls(blue_plan.name, &blue_hosts.etcd_ips())?;
    let (red_creds, blue_creds) = (
        auth.node_creds(red_plan.name)?,
        auth.node_creds(blue_plan.name)?,
    );

    // Each etcd is provisioned as soon as it is up: users, roles, auth on.
    let provision =
        |hosts: &cluster::Hosts, tls, plan: &cluster::Plan| -> Result<(EtcdCluster, String)> {
            let etcd = hosts.start_etcd(tls)?;
            let remote = [plan.remote.0];
            let out = auth.provision(&bins.ironctl, &hosts.etcd[0].0, &etcd, plan.name, &remote)?;
            Ok((etcd, out))
        };
    // ToRs and both etcds at once (each takes seconds to become ready).
    let (red_tor, blue_tor, red_etcd, blue_etcd) = std::thread::scope(|s| {
        let a = s.spawn(|| Tor::start_bird(&red_tor_h, &red_plan, &blue_plan));
        let b = s.spawn(|| Tor::start_frr(&blue_tor_h, &blue_plan, &red_plan));
        let c = s.spawn(|| provision(&red_hosts, red_tls, &red_plan));
        let d = s.spawn(|| provision(&blue_hosts, blue_tls, &blue_plan));
        (join(a), join(b), join(c), join(d))
    });
    let (red_tor, blue_tor) = (red_tor?, blue_tor?);
    let ((red_etcd, red_provisioned), (blue_etcd, blue_provisioned)) = (red_etcd?, blue_etcd?);
    step("the nodes")?;

    let red_ep = red_etcd.endpoints();
    let blue_ep = blue_etcd.endpoints();
    let ctx = cluster::Ctx { lab, bins, stop };
    let (red, blue) = std::thread::scope(|s| {
        let a = s.spawn(|| cluster::start(ctx, red_plan, red_hosts, red_etcd, &blue_ep, red_creds));
        let b =
            s.spawn(|| cluster::start(ctx, blue_plan, blue_hosts, blue_etcd, &red_ep, blue_creds));
        (join(a), join(b))
    });
    let (mut red, mut blue) = (red?, blue?);
    red.provisioned = red_provisioned;
    blue.provisioned = blue_provisioned;
    step("the services")?;
    Ok((red_tor, blue_tor, client, red, blue, auth))
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(LabError::Invalid("a lab start thread panicked".into())))
}
