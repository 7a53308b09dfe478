//! The lab's services, written into etcd as records (as an operator or a Kubernetes
//! controller would): `shop/web`, global with affinity local, a ClusterIP and a backend in
//! every web pod of both clusters; `shop/front`, red's LoadBalancer VIP on red's web pods.

use std::net::{IpAddr, Ipv4Addr};

use ironmesh_meshd::lbipam::VipValue;
use ironmesh_meshd::schema::{Key, Resource};
use ironmesh_meshd::services::{
    Affinity, Backend, BackendState, Protocol, ServicePort, ServiceRecord,
};

use super::cluster::Cluster;
use super::node::Pod;
use super::{APP_PORT, MeshLab, plane};
use crate::error::Result;

/// `shop/web`'s ClusterIP (the same in both clusters).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// `shop/front`'s LoadBalancer VIP, announced by red's nodes with a local backend.
pub const LB_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const LB_PORT: u16 = 80;
const LB_POOL: &str = "203.0.113.0/28";

fn record(
    cluster: &Cluster,
    service: &str,
    vip: Ipv4Addr,
    port: u16,
    backends: &[(&Pod, BackendState)],
) -> ServiceRecord {
    ServiceRecord {
        service: service.parse().expect("service name"),
        cluster: cluster.name.parse().expect("cluster name"),
        vips: vec![IpAddr::V4(vip)],
        ports: vec![ServicePort {
            name: None,
            port,
            protocol: Protocol::Tcp,
        }],
        backends: backends
            .iter()
            .map(|(p, state)| Backend {
                ip: IpAddr::V4(p.ip),
                port: APP_PORT,
                port_name: None,
                node: Some(p.node.parse().expect("node name")),
                cluster: None,
                zone: None,
                state: *state,
            })
            .collect(),
        global: false,
        affinity: Affinity::None,
    }
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

/// Every service of the lab, the VIP's LB-IPAM key and its north-south translation.
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
    for n in &mesh.red.nodes {
        if let Some(web) = n.pods.iter().find(|p| p.app == "web") {
            plane::north_south(&n.host, n.ip, web.ip)?;
        }
    }
    Ok(())
}
