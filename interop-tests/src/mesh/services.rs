//! The lab's services, written into etcd as records (as an operator or a Kubernetes
//! controller would): `shop/web`, global with affinity local, a ClusterIP and a backend in
//! every web pod of both clusters; `shop/front`, red's LoadBalancer VIP on red's web pods.
//! The VIP is translated for the external client by the datapath meshd programs (the external
//! entry on each red node, its local web pod): [`vip_flow`] and [`stand_ins`] show it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::ipcache::FAMILY_IPV4;
use datapath::lb::{CT_DIR_FORWARD, CT_F_EXTERNAL, CtKey, Proto};

use ironmesh_meshd::lbipam::VipValue;
use ironmesh_meshd::schema::{Key, Resource};
use ironmesh_meshd::services::{
    Affinity, Backend, BackendState, Protocol, ServicePort, ServiceRecord,
};

use super::cluster::Cluster;
use super::node::{Node, Pod};
use super::{APP_PORT, MeshLab};
use crate::error::{LabError, Result};

/// `shop/web`'s ClusterIP (the same in both clusters).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// `shop/front`'s LoadBalancer VIP, announced by red's nodes with a local backend.
pub const LB_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const LB_PORT: u16 = 80;
const LB_POOL: &str = "203.0.113.0/28";

/// A TCP service record: `service` of `cluster` on `vip:port`, a backend per
/// (address, port, node, state); neither global nor with affinity (set those on the result).
pub fn tcp_record<'a>(
    service: &str,
    cluster: &str,
    vip: IpAddr,
    port: u16,
    backends: impl IntoIterator<Item = (IpAddr, u16, &'a str, BackendState)>,
) -> ServiceRecord {
    ServiceRecord {
        service: service.parse().expect("service name"),
        cluster: cluster.parse().expect("cluster name"),
        vips: vec![vip],
        ports: vec![ServicePort {
            name: None,
            port,
            protocol: Protocol::Tcp,
        }],
        backends: backends
            .into_iter()
            .map(|(ip, port, node, state)| Backend {
                ip,
                port,
                port_name: None,
                node: Some(node.parse().expect("node name")),
                cluster: None,
                zone: None,
                state,
            })
            .collect(),
        global: false,
        affinity: Affinity::None,
    }
}

fn record(
    cluster: &Cluster,
    service: &str,
    vip: Ipv4Addr,
    port: u16,
    backends: &[(&Pod, BackendState)],
) -> ServiceRecord {
    let backends = backends
        .iter()
        .map(|(p, state)| (IpAddr::V4(p.ip), APP_PORT, p.node.as_str(), *state));
    tcp_record(service, cluster.name, IpAddr::V4(vip), port, backends)
}

/// `shop/web` of `cluster` with its web pods in the given states (global, affinity local).
pub fn web(cluster: &Cluster, state: impl Fn(&Pod) -> BackendState) -> ServiceRecord {
    let pods: Vec<(&Pod, BackendState)> = cluster.pods("web").map(|p| (p, state(p))).collect();
    ServiceRecord {
        global: true,
        affinity: Affinity::Local,
        ..record(cluster, "shop/web", WEB_VIP, APP_PORT, &pods)
    }
}

/// `shop/front` of `cluster` (the LoadBalancer VIP) with its web pods in the given states.
pub fn front(cluster: &Cluster, state: impl Fn(&Pod) -> BackendState) -> ServiceRecord {
    let pods: Vec<(&Pod, BackendState)> = cluster.pods("web").map(|p| (p, state(p))).collect();
    record(cluster, "shop/front", LB_VIP, LB_PORT, &pods)
}

/// Writes a service record into its cluster's etcd.
pub fn put(cluster: &Cluster, s: &ServiceRecord) -> Result<()> {
    let value = String::from_utf8(s.encode()).expect("JSON record");
    cluster.etcd.put(0, &s.key(), &value)
}

/// Every service of the lab and the VIP's LB-IPAM key.
pub(super) fn install(mesh: &MeshLab) -> Result<()> {
    let active = |_: &Pod| BackendState::Active;
    put(&mesh.red, &web(&mesh.red, active))?;
    put(&mesh.blue, &web(&mesh.blue, active))?;
    put(&mesh.red, &front(&mesh.red, active))?;
    let key = Key::cluster(
        &mesh.red.name.parse().expect("cluster name"),
        Resource::Vip(IpAddr::V4(LB_VIP)),
    )
    .to_string();
    let value = VipValue {
        service: "shop/front".parse().expect("service name"),
        pool: LB_POOL.parse().expect("pool"),
    };
    mesh.red
        .etcd
        .put(0, &key, &serde_json::to_string(&value).expect("JSON value"))?;
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
