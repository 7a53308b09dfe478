//! What a remote cluster may claim, and the checks of its mirrored records against that
//! (pure functions). A remote cluster speaks only for itself: its node PodCIDRs inside its
//! declared pools, its node addresses and tunnel endpoints inside its node ranges, its endpoint
//! IPs inside its pools (and the PodCIDR of the node that claims them), its identities inside
//! its own cluster ID's range and never reserved, its global-service backends inside its pools.
//! A kind it declares nothing of is never accepted from it. Local state always wins: a remote
//! record that takes a local node's PodCIDR or address, or a local endpoint's IP, is refused.
//!
//! [`check_static`] judges one record alone; [`check_endpoint_placement`] and
//! [`check_node_against_local`] judge it against the other records of the merged view, which
//! applies all of them ([`super::view::MergedState`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use common::{ClusterId, ClusterName, Identity, IdentityKind, IdentityLayout, NodeName};
use ipnet::IpNet;

use crate::endpoints::EndpointRecord;
use crate::identity::ByLabelsValue;
use crate::ipam::{NodeCidrsValue, overlaps};
use crate::nodes::NodeRecord;
use crate::schema::Resource;
use crate::services::ServiceRecord;

/// What one remote cluster may claim (`[[mesh.remote_clusters]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteClaims {
    pub name: ClusterName,
    pub id: ClusterId,
    /// `pod_cidrs`: its PodCIDR pools (node PodCIDRs, endpoint IPs, service backends).
    pub pod_cidrs: Vec<IpNet>,
    /// `node_cidrs`: where its node addresses and tunnel endpoints are.
    pub node_cidrs: Vec<IpNet>,
    /// `service_cidrs`: its ClusterIP ranges and LoadBalancer VIP pools.
    pub service_cidrs: Vec<IpNet>,
}

/// The local cluster and every remote's claims: what the merged view checks records against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub local: ClusterName,
    pub local_id: ClusterId,
    pub layout: IdentityLayout,
    /// The local cluster's PodCIDR pools: no remote node may claim inside them.
    pub local_pools: Vec<IpNet>,
    pub remotes: BTreeMap<ClusterName, RemoteClaims>,
}

/// A kind of claim, named as its config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// `pod_cidrs`
    Pods,
    /// `node_cidrs`
    Nodes,
    /// `service_cidrs`
    Services,
}

impl ClaimKind {
    pub fn field(self) -> &'static str {
        match self {
            ClaimKind::Pods => "pod_cidrs",
            ClaimKind::Nodes => "node_cidrs",
            ClaimKind::Services => "service_cidrs",
        }
    }

    fn what(self) -> &'static str {
        match self {
            ClaimKind::Pods => "pools",
            ClaimKind::Nodes => "node ranges",
            ClaimKind::Services => "service ranges",
        }
    }
}

fn list(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a value of a record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("{value} outside {cluster}'s {} ({})", .kind.what(), claimed(.kind, .claim))]
    OutsideClaim {
        value: String,
        cluster: ClusterName,
        kind: ClaimKind,
        claim: Vec<IpNet>,
    },
    #[error("{value} overlaps {owner}; local state wins")]
    TakenByLocal { value: String, owner: String },
    #[error("{identity} is the reserved identity {name}; a remote cluster may not use it")]
    ReservedIdentity {
        identity: Identity,
        name: &'static str,
    },
    #[error("{identity} is not an identity of {cluster} (cluster ID {id}): it belongs to {owner}")]
    ForeignIdentity {
        identity: Identity,
        cluster: ClusterName,
        id: ClusterId,
        owner: String,
    },
    #[error("{ip} outside the PodCIDRs of its node {node} ({})", list(.cidrs))]
    OutsideNode {
        ip: IpAddr,
        node: NodeName,
        cidrs: Vec<IpNet>,
    },
}

fn claimed(kind: &ClaimKind, claim: &[IpNet]) -> String {
    if claim.is_empty() {
        format!(
            "none declared; list them in mesh.remote_clusters[].{}",
            kind.field()
        )
    } else {
        list(claim)
    }
}

/// A refused record: which one, which field, why. Displays as
/// `node evil pod_cidrs 0.0.0.0/0 outside blue's pools (10.2.0.0/16)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{record} {field} {reason}")]
pub struct Refusal {
    /// `node evil`, `endpoint 10.2.1.5`, `service shop/web`...
    pub record: String,
    pub field: &'static str,
    pub reason: Reason,
}

/// The record's name as a refusal shows it.
pub fn record_name(resource: &Resource) -> String {
    let kind = match resource {
        Resource::Node(_) => "node",
        Resource::Endpoint(_) => "endpoint",
        Resource::Service(_) => "service",
        Resource::Identity(_) => "identity",
        Resource::IdentityByLabels(_) => "identity of labels",
        Resource::PodCidr(_) => "podcidr",
        Resource::PodCidrsOfNode(_) => "podcidrs of node",
        Resource::Vip(_) => "vip",
        Resource::ClusterIp(_) => "clusterip",
        other => return format!("{:?} {other}", other.kind()),
    };
    format!("{kind} {resource}")
}

impl RemoteClaims {
    fn claim(&self, kind: ClaimKind) -> &[IpNet] {
        match kind {
            ClaimKind::Pods => &self.pod_cidrs,
            ClaimKind::Nodes => &self.node_cidrs,
            ClaimKind::Services => &self.service_cidrs,
        }
    }

    /// `net` lies inside one of the claimed CIDRs of `kind`.
    pub fn covers(&self, kind: ClaimKind, net: &IpNet) -> bool {
        self.claim(kind)
            .iter()
            .any(|c| c.contains(net) && c.prefix_len() <= net.prefix_len())
    }

    fn inside(&self, kind: ClaimKind, net: IpNet, value: String) -> Result<(), Reason> {
        if self.covers(kind, &net) {
            Ok(())
        } else {
            Err(Reason::OutsideClaim {
                value,
                cluster: self.name.clone(),
                kind,
                claim: self.claim(kind).to_vec(),
            })
        }
    }

    fn inside_ip(&self, kind: ClaimKind, ip: IpAddr) -> Result<(), Reason> {
        self.inside(kind, IpNet::from(ip), ip.to_string())
    }
}

/// An identity a remote cluster may use: in its own cluster ID's range, never reserved.
pub fn check_identity(
    claims: &RemoteClaims,
    layout: IdentityLayout,
    identity: Identity,
) -> Result<(), Reason> {
    let owner = match layout.decode(identity) {
        Ok(IdentityKind::Reserved(r)) => {
            return Err(Reason::ReservedIdentity {
                identity,
                name: r.name(),
            });
        }
        Ok(IdentityKind::Cluster { cluster, .. }) if cluster == claims.id => return Ok(()),
        Ok(IdentityKind::Cluster { cluster, .. }) => format!("cluster ID {cluster}"),
        Err(e) => format!("no cluster ({e})"),
    };
    Err(Reason::ForeignIdentity {
        identity,
        cluster: claims.name.clone(),
        id: claims.id,
        owner,
    })
}

/// A remote node record alone: PodCIDRs inside its pools and outside the local pools,
/// addresses inside its node ranges.
pub fn check_node(trust: &Trust, claims: &RemoteClaims, n: &NodeRecord) -> Result<(), Refusal> {
    let refuse = |field, reason| Refusal {
        record: format!("node {}", n.name),
        field,
        reason,
    };
    for c in &n.pod_cidrs {
        claims
            .inside(ClaimKind::Pods, *c, c.to_string())
            .map_err(|r| refuse("pod_cidrs", r))?;
        if let Some(p) = trust.local_pools.iter().find(|p| overlaps(p, c)) {
            return Err(refuse(
                "pod_cidrs",
                Reason::TakenByLocal {
                    value: c.to_string(),
                    owner: format!("the local cluster {}'s pool {p}", trust.local),
                },
            ));
        }
    }
    if let Some(a) = n.ipv4 {
        claims
            .inside_ip(ClaimKind::Nodes, a.into())
            .map_err(|r| refuse("ipv4", r))?;
    }
    if let Some(a) = n.ipv6 {
        claims
            .inside_ip(ClaimKind::Nodes, a.into())
            .map_err(|r| refuse("ipv6", r))?;
    }
    Ok(())
}

/// A remote endpoint record alone: IP inside its pools, identity its own, tunnel endpoint
/// inside its node ranges.
pub fn check_endpoint(
    layout: IdentityLayout,
    claims: &RemoteClaims,
    e: &EndpointRecord,
) -> Result<(), Refusal> {
    let refuse = |field, reason| Refusal {
        record: format!("endpoint {}", e.ip),
        field,
        reason,
    };
    claims
        .inside_ip(ClaimKind::Pods, e.ip)
        .map_err(|r| refuse("ip", r))?;
    check_identity(claims, layout, e.identity).map_err(|r| refuse("identity", r))?;
    if let Some(t) = e.tunnel_endpoint {
        claims
            .inside_ip(ClaimKind::Nodes, t)
            .map_err(|r| refuse("tunnel_endpoint", r))?;
    }
    Ok(())
}

/// A remote service record alone: VIPs inside its service ranges, backends inside its pools.
pub fn check_service(claims: &RemoteClaims, s: &ServiceRecord) -> Result<(), Refusal> {
    let refuse = |field, reason| Refusal {
        record: format!("service {}", s.service),
        field,
        reason,
    };
    for v in &s.vips {
        claims
            .inside_ip(ClaimKind::Services, *v)
            .map_err(|r| refuse("vips", r))?;
    }
    for b in &s.backends {
        claims
            .inside_ip(ClaimKind::Pods, b.ip)
            .map_err(|r| refuse("backends", r))?;
    }
    Ok(())
}

/// Where a remote endpoint may go, given the view: not onto a local endpoint's IP or a local
/// node's address (local state wins), and inside the PodCIDRs of the node that claims it.
/// `Ok(false)`: the node is not (or not yet, or no longer) in the view: the endpoint waits.
pub fn check_endpoint_placement(
    e: &EndpointRecord,
    local_endpoint: bool,
    local_node_with_ip: Option<&NodeName>,
    node: Option<&NodeRecord>,
) -> Result<bool, Refusal> {
    let refuse = |field, reason| Refusal {
        record: format!("endpoint {}", e.ip),
        field,
        reason,
    };
    if local_endpoint {
        return Err(refuse(
            "ip",
            Reason::TakenByLocal {
                value: e.ip.to_string(),
                owner: "a local endpoint's IP".into(),
            },
        ));
    }
    if let Some(n) = local_node_with_ip {
        return Err(refuse(
            "ip",
            Reason::TakenByLocal {
                value: e.ip.to_string(),
                owner: format!("the address of local node {n}"),
            },
        ));
    }
    let Some(node) = node else { return Ok(false) };
    if node.pod_cidrs.iter().any(|c| c.contains(&e.ip)) {
        Ok(true)
    } else {
        Err(refuse(
            "ip",
            Reason::OutsideNode {
                ip: e.ip,
                node: node.name.clone(),
                cidrs: node.pod_cidrs.clone(),
            },
        ))
    }
}

/// A remote node against the local nodes: none of its PodCIDRs overlaps a local node's, none
/// of its addresses is a local node's.
pub fn check_node_against_local<'a>(
    n: &NodeRecord,
    local_nodes: impl IntoIterator<Item = &'a NodeRecord>,
) -> Result<(), Refusal> {
    let refuse = |field, reason| Refusal {
        record: format!("node {}", n.name),
        field,
        reason,
    };
    for l in local_nodes {
        for c in &n.pod_cidrs {
            if let Some(lc) = l.pod_cidrs.iter().find(|lc| overlaps(lc, c)) {
                return Err(refuse(
                    "pod_cidrs",
                    Reason::TakenByLocal {
                        value: c.to_string(),
                        owner: format!("local node {}'s PodCIDR {lc}", l.name),
                    },
                ));
            }
        }
        let mine = [n.ipv4.map(IpAddr::V4), n.ipv6.map(IpAddr::V6)];
        let theirs = [l.ipv4.map(IpAddr::V4), l.ipv6.map(IpAddr::V6)];
        for a in mine.into_iter().flatten() {
            if theirs.contains(&Some(a)) {
                let field = if a.is_ipv4() { "ipv4" } else { "ipv6" };
                return Err(refuse(
                    field,
                    Reason::TakenByLocal {
                        value: a.to_string(),
                        owner: format!("the address of local node {}", l.name),
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Checks one mirrored record of `claims`' cluster alone (its value already decoded by
/// [`crate::records::check_value`]); kinds that carry no claim pass.
pub fn check_static(
    trust: &Trust,
    claims: &RemoteClaims,
    resource: &Resource,
    value: &[u8],
) -> Result<(), Refusal> {
    let c = &claims.name;
    let refuse = |field, reason| Refusal {
        record: record_name(resource),
        field,
        reason,
    };
    match resource {
        Resource::Node(n) => match NodeRecord::decode(c, n, value) {
            Ok(r) => check_node(trust, claims, &r),
            Err(_) => Ok(()),
        },
        Resource::Endpoint(ip) => match EndpointRecord::decode(c, *ip, value) {
            Ok(r) => check_endpoint(trust.layout, claims, &r),
            Err(_) => Ok(()),
        },
        Resource::Service(s) => match ServiceRecord::decode(c, s, value) {
            Ok(r) => check_service(claims, &r),
            Err(_) => Ok(()),
        },
        Resource::Identity(id) => {
            check_identity(claims, trust.layout, *id).map_err(|r| refuse("key", r))
        }
        Resource::IdentityByLabels(_) => match serde_json::from_slice::<ByLabelsValue>(value) {
            Ok(v) => {
                check_identity(claims, trust.layout, v.identity).map_err(|r| refuse("identity", r))
            }
            Err(_) => Ok(()),
        },
        Resource::PodCidr(net) => claims
            .inside(ClaimKind::Pods, *net, net.to_string())
            .map_err(|r| refuse("key", r)),
        Resource::PodCidrsOfNode(_) => match serde_json::from_slice::<NodeCidrsValue>(value) {
            Ok(v) => v.cidrs.iter().try_for_each(|n| {
                claims
                    .inside(ClaimKind::Pods, *n, n.to_string())
                    .map_err(|r| refuse("cidrs", r))
            }),
            Err(_) => Ok(()),
        },
        Resource::Vip(ip) | Resource::ClusterIp(ip) => claims
            .inside_ip(ClaimKind::Services, *ip)
            .map_err(|r| refuse("key", r)),
        // A health state may only be about one of its own pods.
        Resource::Health(ip) => claims
            .inside_ip(ClaimKind::Pods, *ip)
            .map_err(|r| refuse("key", r)),
        // A Service object's addresses become frontends of a global service here: its
        // ClusterIPs, LoadBalancer ingress and external IPs must be the remote's own.
        Resource::Object(name) => match name
            .service_key()
            .and_then(|key| Some((key, crate::objects::decode(name, value).ok()?)))
        {
            Some((key, stored)) => match crate::objects::ServiceObject::from_stored(key, &stored) {
                Some(svc) => svc.vips.iter().try_for_each(|ip| {
                    claims
                        .inside_ip(ClaimKind::Services, *ip)
                        .map_err(|r| Refusal {
                            record: format!("service object {}", svc.key),
                            field: "addresses",
                            reason: r,
                        })
                }),
                None => Ok(()),
            },
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

impl fmt::Display for ClaimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ReservedIdentity;

    fn c(s: &str) -> ClusterName {
        s.parse().unwrap()
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn blue() -> RemoteClaims {
        RemoteClaims {
            name: c("blue"),
            id: ClusterId::new(2).unwrap(),
            pod_cidrs: nets(&["10.2.0.0/16"]),
            node_cidrs: nets(&["198.51.100.0/24"]),
            service_cidrs: nets(&["10.96.0.0/16"]),
        }
    }

    fn trust() -> Trust {
        Trust {
            local: c("red"),
            local_id: ClusterId::new(1).unwrap(),
            layout: IdentityLayout::default(),
            local_pools: nets(&["10.1.0.0/16"]),
            remotes: [(c("blue"), blue())].into(),
        }
    }

    fn node(cluster: &str, name: &str, ip: &str, cidrs: &[&str]) -> NodeRecord {
        let mut n = NodeRecord::new(c(cluster), name.parse().unwrap());
        n.ipv4 = Some(ip.parse().unwrap());
        n.pod_cidrs = nets(cidrs);
        n
    }

    fn ep(ip: &str, node: &str, identity: u32) -> EndpointRecord {
        EndpointRecord {
            ip: ip.parse().unwrap(),
            cluster: c("blue"),
            node: node.parse().unwrap(),
            identity: Identity::from_raw(identity).unwrap(),
            tunnel_endpoint: None,
            encrypt_key: 0,
            ports: Vec::new(),
            pod: None,
        }
    }

    fn blue_id(local: u32) -> u32 {
        IdentityLayout::default()
            .identity(ClusterId::new(2).unwrap(), local)
            .unwrap()
            .raw()
    }

    #[test]
    fn node_pod_cidrs_must_be_inside_the_remote_pools() {
        let t = trust();
        assert!(
            check_node(
                &t,
                &blue(),
                &node("blue", "b1", "198.51.100.11", &["10.2.1.0/24"])
            )
            .is_ok()
        );
        let e = check_node(
            &t,
            &blue(),
            &node("blue", "evil", "198.51.100.66", &["0.0.0.0/0"]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node evil pod_cidrs 0.0.0.0/0 outside blue's pools (10.2.0.0/16)"
        );
        // A pool itself is fine; a supernet of it is not.
        assert!(
            check_node(
                &t,
                &blue(),
                &node("blue", "b", "198.51.100.1", &["10.2.0.0/16"])
            )
            .is_ok()
        );
        assert!(
            check_node(
                &t,
                &blue(),
                &node("blue", "b", "198.51.100.1", &["10.2.0.0/15"])
            )
            .is_err()
        );
        // Nothing declared: nothing accepted, and the error names the field to set.
        let mut none = blue();
        none.pod_cidrs.clear();
        let e = check_node(
            &t,
            &none,
            &node("blue", "b1", "198.51.100.11", &["10.2.1.0/24"]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("mesh.remote_clusters[].pod_cidrs"),
            "{e}"
        );
    }

    #[test]
    fn node_pod_cidrs_must_not_overlap_local_pools_or_nodes() {
        // Even when the remote declares the local pool (a configuration mistake).
        let mut greedy = blue();
        greedy.pod_cidrs.push("10.1.0.0/16".parse().unwrap());
        let e = check_node(
            &trust(),
            &greedy,
            &node("blue", "red2", "198.51.100.9", &["10.1.5.0/24"]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "10.1.5.0/24 overlaps the local cluster red's pool 10.1.0.0/16; local state wins"
            ),
            "{e}"
        );
        let local = [node("red", "n1", "192.0.2.11", &["10.2.7.0/24"])];
        let e = check_node_against_local(
            &node("blue", "b7", "198.51.100.7", &["10.2.7.0/24"]),
            &local,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node b7 pod_cidrs 10.2.7.0/24 overlaps local node n1's PodCIDR 10.2.7.0/24; local state wins"
        );
        assert!(
            check_node_against_local(
                &node("blue", "b8", "198.51.100.8", &["10.2.8.0/24"]),
                &local
            )
            .is_ok()
        );
    }

    #[test]
    fn node_addresses_must_be_inside_node_ranges_and_not_local() {
        let e = check_node(
            &trust(),
            &blue(),
            &node("blue", "b1", "192.0.2.11", &["10.2.1.0/24"]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node b1 ipv4 192.0.2.11 outside blue's node ranges (198.51.100.0/24)"
        );
        let local = [node("red", "n1", "198.51.100.11", &["10.1.1.0/24"])];
        let e = check_node_against_local(&node("blue", "b1", "198.51.100.11", &[]), &local)
            .unwrap_err();
        assert!(
            e.to_string().contains("the address of local node n1"),
            "{e}"
        );
    }

    #[test]
    fn identities_must_be_the_remote_clusters_own_and_never_reserved() {
        let l = IdentityLayout::default();
        assert!(check_identity(&blue(), l, Identity::from_raw(blue_id(300)).unwrap()).is_ok());
        let e = check_identity(&blue(), l, ReservedIdentity::Host.into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 is the reserved identity host; a remote cluster may not use it"
        );
        let red = l.identity(ClusterId::new(1).unwrap(), 300).unwrap();
        let e = check_identity(&blue(), l, red).unwrap_err();
        assert!(e.to_string().contains("belongs to cluster ID 1"), "{e}");
        let e = check_endpoint(l, &blue(), &ep("10.2.1.5", "b1", 1)).unwrap_err();
        assert_eq!(e.field, "identity");
    }

    #[test]
    fn endpoint_ip_and_tunnel_must_be_inside_the_claims() {
        let l = IdentityLayout::default();
        assert!(check_endpoint(l, &blue(), &ep("10.2.1.5", "b1", blue_id(300))).is_ok());
        let e = check_endpoint(l, &blue(), &ep("10.1.1.5", "b1", blue_id(300))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoint 10.1.1.5 ip 10.1.1.5 outside blue's pools (10.2.0.0/16)"
        );
        let mut t = ep("10.2.1.5", "b1", blue_id(300));
        t.tunnel_endpoint = Some("192.0.2.11".parse().unwrap());
        assert_eq!(
            check_endpoint(l, &blue(), &t).unwrap_err().field,
            "tunnel_endpoint"
        );
    }

    #[test]
    fn endpoint_ip_must_be_inside_its_nodes_pod_cidr_and_not_local() {
        let b1 = node("blue", "b1", "198.51.100.11", &["10.2.1.0/24"]);
        let e = ep("10.2.1.5", "b1", blue_id(300));
        assert_eq!(
            check_endpoint_placement(&e, false, None, Some(&b1)),
            Ok(true)
        );
        assert_eq!(check_endpoint_placement(&e, false, None, None), Ok(false));
        let far = ep("10.2.9.5", "b1", blue_id(300));
        let r = check_endpoint_placement(&far, false, None, Some(&b1)).unwrap_err();
        assert_eq!(
            r.to_string(),
            "endpoint 10.2.9.5 ip 10.2.9.5 outside the PodCIDRs of its node b1 (10.2.1.0/24)"
        );
        let r = check_endpoint_placement(&e, true, None, Some(&b1)).unwrap_err();
        assert!(
            r.to_string()
                .contains("a local endpoint's IP; local state wins"),
            "{r}"
        );
        let n1: NodeName = "n1".parse().unwrap();
        let r = check_endpoint_placement(&e, false, Some(&n1), Some(&b1)).unwrap_err();
        assert!(
            r.to_string().contains("the address of local node n1"),
            "{r}"
        );
    }

    #[test]
    fn service_backends_inside_pools_and_vips_inside_service_ranges() {
        let rec = |vip: &str, backend: &str| {
            let v = format!(
                r#"{{"service":{{"namespace":"shop","name":"web"}},"cluster":"blue","vips":["{vip}"],"ports":[{{"port":80,"protocol":"tcp"}}],"backends":[{{"ip":"{backend}","port":8080}}],"global":true}}"#
            );
            ServiceRecord::decode(&c("blue"), &"shop/web".parse().unwrap(), v.as_bytes()).unwrap()
        };
        assert!(check_service(&blue(), &rec("10.96.0.10", "10.2.1.5")).is_ok());
        let e = check_service(&blue(), &rec("10.96.0.10", "192.0.2.11")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service shop/web backends 192.0.2.11 outside blue's pools (10.2.0.0/16)"
        );
        assert_eq!(
            check_service(&blue(), &rec("8.8.8.8", "10.2.1.5"))
                .unwrap_err()
                .field,
            "vips"
        );
    }

    #[test]
    fn a_remote_service_objects_addresses_must_be_inside_its_service_ranges() {
        let t = trust();
        let b = blue();
        let obj = |cluster_ip: &str, extra: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n\
                 spec: {{clusterIP: {cluster_ip}, selector: {{app: web}}, ports: [{{port: 80}}]{extra}}}\n"
            );
            let docs = resources::parse_manifests(&yaml).unwrap();
            let o = resources::decode(&docs[0]).unwrap();
            let name =
                crate::schema::ObjectName::new(o.kind(), o.meta.namespace.as_deref(), &o.meta.name)
                    .unwrap();
            let stored = resources::Stored {
                object: o,
                status: serde_json::Value::Null,
            };
            (Resource::Object(name), stored.encode())
        };
        let inside = b.service_cidrs[0].hosts().next().unwrap().to_string();
        let (r, v) = obj(&inside, "");
        assert_eq!(check_static(&t, &b, &r, &v), Ok(()));
        // A ClusterIP outside blue's service ranges (here: a local node's address), or an
        // external IP that is not blue's: refused, naming the address.
        let (r, v) = obj("192.0.2.1", "");
        let e = check_static(&t, &b, &r, &v).unwrap_err();
        assert_eq!(e.record, "service object shop/web");
        assert!(e.to_string().contains("192.0.2.1"), "{e}");
        let (r, v) = obj(&inside, ", externalIPs: [10.1.0.9]");
        assert!(check_static(&t, &b, &r, &v).is_err());
    }

    #[test]
    fn static_checks_of_the_other_kinds() {
        let t = trust();
        let b = blue();
        let r = Resource::PodCidr("10.1.0.0/24".parse().unwrap());
        assert!(check_static(&t, &b, &r, b"{}").is_err());
        let r = Resource::IdentityByLabels(Default::default());
        assert!(check_static(&t, &b, &r, br#"{"identity":1}"#).is_err());
        let ok = format!(r#"{{"identity":{}}}"#, blue_id(300));
        assert!(check_static(&t, &b, &r, ok.as_bytes()).is_ok());
        let r = Resource::Identity(Identity::from_raw(blue_id(301)).unwrap());
        assert!(check_static(&t, &b, &r, b"{}").is_ok());
    }
}
