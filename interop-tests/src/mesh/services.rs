//! The lab's services, applied as manifests with `ironctl apply` (configs/examples/manifests):
//! `default/web`, global with affinity local, its ClusterIP served by every web pod of both
//! clusters (meshd derives the backends from the pods its selector matches);
//! `default/front`, red's LoadBalancer VIP from red's IPPool on red's web pods.
//! The VIP is translated for the external client by the datapath meshd programs (the external
//! entry on each red node, its local web pod): [`vip_flow`] and [`stand_ins`] show it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::ipcache::FAMILY_IPV4;
use datapath::lb::{CT_DIR_FORWARD, CT_F_EXTERNAL, CtKey, Proto};

use std::time::Duration;

use super::node::Node;
use super::{APP_PORT, MeshLab};
use crate::cmd::wait_for;
use crate::error::{LabError, Result};

/// `default/web`'s ClusterIP (the same in both clusters).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// `default/front`'s LoadBalancer VIP, announced by red's nodes with a local backend.
pub const LB_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const LB_PORT: u16 = 80;

/// The lab's manifests (`configs/examples/manifests/`): red's IPPool, `default/web` and
/// `default/front`; blue's `default/web`.
pub const RED_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/examples/manifests/mesh-red.yaml"
);
pub const BLUE_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/examples/manifests/mesh-blue.yaml"
);

/// Applies each cluster's manifest with `ironctl apply -f` through its first node's meshd
/// (as an operator does), then waits until every node's datapath serves `default/web`'s
/// ClusterIP with its cluster's web pods (red: the LoadBalancer VIP's paths are waited for by
/// [`MeshLab::wait_ready`]).
pub(super) fn install(mesh: &MeshLab) -> Result<()> {
    for (cluster, file) in [(&mesh.red, RED_MANIFEST), (&mesh.blue, BLUE_MANIFEST)] {
        let api = cluster.nodes[0].api.display().to_string();
        mesh.ironctl(&["apply", "--meshd", &api, "-f", file])?;
    }
    for n in mesh.nodes() {
        let webs = mesh
            .red
            .nodes
            .iter()
            .chain(&mesh.blue.nodes)
            .filter(|m| m.cluster == n.cluster)
            .flat_map(|m| m.pods.iter())
            .filter(|p| p.app == "web")
            .count() as u32;
        wait_for(
            &format!(
                "{}/{}: default/web's ClusterIP with {webs} backends in the datapath",
                n.cluster, n.name
            ),
            super::T,
            Duration::from_millis(50),
            |last| {
                let svc = n.dp.with(|d| {
                    d.service(IpAddr::V4(WEB_VIP), APP_PORT, Proto::Tcp)
                        .map_err(|e| LabError::Invalid(format!("datapath: {e}")))
                })?;
                *last = format!("{svc:?}");
                Ok(svc.filter(|s| u32::from(s.backend_count) >= webs).map(drop))
            },
        )?;
    }
    Ok(())
}

/// A flow from outside to the VIP as `node`'s datapath holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipFlow {
    /// The id of the VIP's external entry (host_ingress's) on the node.
    pub external_id: u32,
    /// Its conntrack entry's service id: the external entry's.
    pub svc_id: u32,
    /// The backend the flow was DNATed to.
    pub backend: SocketAddr,
    /// The entry is marked external (the reply gets VIP:port back in pod_egress).
    pub external: bool,
}

/// The datapath's view on `node` of the flow from `client` (as the client sees its socket)
/// to the VIP: `None` if the node has no conntrack entry for it (it did not translate it).
pub fn vip_flow(node: &Node, client: SocketAddr) -> Result<Option<VipFlow>> {
    let dp_err = |e: datapath::DatapathError| LabError::Invalid(format!("datapath: {e}"));
    node.dp.with(|d| {
        let key = CtKey::new(
            (client.ip(), client.port()),
            (IpAddr::V4(LB_VIP), LB_PORT),
            Proto::Tcp,
            CT_DIR_FORWARD,
        );
        let Some(ct) = d.conntrack_get(&key).map_err(dp_err)? else {
            return Ok(None);
        };
        let ext = d
            .external_service(IpAddr::V4(LB_VIP), LB_PORT, Proto::Tcp)
            .map_err(dp_err)?;
        let ip = datapath::lb::addr_from(&ct.nat_addr, FAMILY_IPV4)
            .ok_or_else(|| LabError::Invalid(format!("conntrack entry {ct:?}")))?;
        Ok(Some(VipFlow {
            external_id: ext.map_or(0, |e| e.id),
            svc_id: ct.svc_id,
            backend: SocketAddr::new(ip, ct.nat_port()),
            external: ct.flags & CT_F_EXTERNAL != 0,
        }))
    })
}

/// What a lab stand-in for the datapath's VIP translation would leave on `node`: the VIP as
/// a local address, or an nftables NAT chain or rule. Empty: none.
pub fn stand_ins(node: &Node) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let addrs = node.host.ip(&["-4", "-o", "addr"])?;
    let vip = format!(" {LB_VIP}/");
    found.extend(
        addrs
            .lines()
            .filter(|l| l.contains(&vip))
            .map(|l| format!("address: {}", l.trim())),
    );
    let rules = node.host.exec("nft", &["list", "ruleset"])?;
    found.extend(
        rules
            .lines()
            .filter(|l| {
                ["type nat", "dnat", "snat", "masquerade", "redirect"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .map(|l| format!("nftables: {}", l.trim())),
    );
    Ok(found)
}
