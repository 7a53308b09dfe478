//! One cluster of the mesh lab: its switch, its 3-member etcd and its two nodes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Bins;
use super::node::{Node, Pod, start_node};
use crate::error::{LabError, Result};
use crate::etcd::{EtcdCluster, EtcdTls};
use crate::etcd_auth::NodeCreds;
use crate::lab::{Host, Lab};

/// Addresses, ASNs and pods of one cluster.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub name: &'static str,
    pub id: u16,
    pub tor_asn: u32,
    pub node_asns: [u32; 2],
    /// The first three octets of the cluster's /24 segment.
    pub segment: [u8; 3],
    pub pool: &'static str,
    /// The range the cluster's `IPPool`s of type PodCIDR take from (the remote is told the
    /// cluster may claim it, beside `pool`).
    pub ippools: &'static str,
    /// (pod name, app label) per node.
    pub pods: [&'static [(&'static str, &'static str)]; 2],
    pub remote: (&'static str, u16),
}

impl Plan {
    pub fn red() -> Plan {
        Plan {
            name: "red",
            id: 1,
            tor_asn: 65010,
            node_asns: [65011, 65012],
            segment: [192, 0, 2],
            pool: "10.1.0.0/16",
            ippools: "10.11.0.0/16",
            pods: [
                &[("client", "client"), ("web", "web")],
                &[("web", "web"), ("other", "other")],
            ],
            remote: ("blue", 2),
        }
    }

    pub fn blue() -> Plan {
        Plan {
            name: "blue",
            id: 2,
            tor_asn: 65020,
            node_asns: [65021, 65022],
            segment: [198, 51, 100],
            pool: "10.2.0.0/16",
            ippools: "10.12.0.0/16",
            pods: [&[("web", "web")], &[("web", "web")]],
            remote: ("red", 1),
        }
    }

    pub fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.segment;
        Ipv4Addr::new(a, b, c, last)
    }

    pub fn tor_ip(&self) -> Ipv4Addr {
        self.addr(1)
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.addr(11 + i as u8)
    }

    pub fn segment_cidr(&self) -> String {
        format!("{}/24", self.addr(0))
    }
}

/// The hosts of a cluster, made before any daemon starts.
#[derive(Debug)]
pub(super) struct Hosts {
    pub switch: Host,
    pub nodes: Vec<Host>,
    pub etcd: Vec<(Host, IpAddr)>,
}

impl Hosts {
    pub fn make(lab: &Lab, plan: &Plan, tor: &Host) -> Result<Hosts> {
        let switch = lab.switch(&format!("{}-sw", plan.name))?;
        lab.attach(tor, &[&format!("{}/24", plan.tor_ip())], &switch)?;
        let mut nodes = Vec::new();
        for i in 0..2 {
            let h = lab.host(&format!("{}-n{}", plan.name, i + 1))?;
            // The node's eth0 is its uplink.
            lab.attach(&h, &[&format!("{}/24", plan.node_ip(i))], &switch)?;
            nodes.push(h);
        }
        let mut etcd = Vec::new();
        for i in 0..3u8 {
            let h = lab.host(&format!("{}-etcd{}", plan.name, i + 1))?;
            let ip = plan.addr(21 + i);
            lab.attach(&h, &[&format!("{ip}/24")], &switch)?;
            // Clients on other segments (the other cluster's meshd) reach it through the ToR.
            h.route_add(&format!("default via {}", plan.tor_ip()))?;
            etcd.push((h, IpAddr::V4(ip)));
        }
        Ok(Hosts {
            switch,
            nodes,
            etcd,
        })
    }

    pub fn etcd_ips(&self) -> Vec<IpAddr> {
        self.etcd.iter().map(|(_, ip)| *ip).collect()
    }

    pub fn start_etcd(&self, tls: EtcdTls) -> Result<EtcdCluster> {
        let members: Vec<(&Host, IpAddr)> = self.etcd.iter().map(|(h, ip)| (h, *ip)).collect();
        EtcdCluster::start_tls(&members, tls)
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub name: &'static str,
    pub id: u16,
    pub etcd: EtcdCluster,
    pub nodes: Vec<Node>,
    pub switch: Host,
    /// What its nodes log in to the etcds with (TLS client certificate, own user, readers).
    pub creds: NodeCreds,
    /// What `ironctl mesh provision` printed for its etcd at the lab's start.
    pub provisioned: String,
}

impl Cluster {
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in {}", self.name))
    }

    /// Every pod of the cluster running app `app`.
    pub fn pods(&self, app: &str) -> impl Iterator<Item = &Pod> {
        let app = app.to_string();
        self.nodes
            .iter()
            .flat_map(|n| &n.pods)
            .filter(move |p| p.app == app)
    }

    /// The cluster's etcd client URLs as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        toml_list(&self.etcd.endpoints())
    }
}

pub(super) fn toml_list(comma_separated: &str) -> String {
    let q: Vec<String> = comma_separated
        .split(',')
        .map(|e| format!("{e:?}"))
        .collect();
    format!("[{}]", q.join(", "))
}

/// What every node start needs from the lab.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub lab: &'a Lab,
    pub bins: &'a Bins,
    pub stop: &'a Arc<AtomicBool>,
}

/// Starts both nodes of a cluster (in parallel) and their pods.
pub(super) fn start(
    ctx: Ctx<'_>,
    plan: Plan,
    hosts: Hosts,
    etcd: EtcdCluster,
    remote_endpoints: &str,
    creds: NodeCreds,
) -> Result<Cluster> {
    let Ctx { lab, bins, stop } = ctx;
    let nodes = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .nodes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (plan, etcd, creds) = (&plan, &etcd, &creds);
                s.spawn(move || {
                    start_node(lab, bins, plan, i, h, etcd, remote_endpoints, creds, stop)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LabError::Invalid("a node start thread panicked".into()))
                })
            })
            .collect::<Result<Vec<Node>>>()
    })?;
    Ok(Cluster {
        name: plan.name,
        id: plan.id,
        etcd,
        nodes,
        switch: hosts.switch,
        creds,
        provisioned: String::new(),
    })
}
