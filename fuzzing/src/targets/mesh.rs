//! meshd: etcd keys and values as read from a remote cluster (the mirror and the merged view
//! check every value with `records::check_value`), and the CNI plugin's endpoint records as
//! meshd reads them.

use std::net::IpAddr;

use common::{ClusterName, Identity, Labels, NodeName, ServiceKey};
use ipnet::IpNet;
use meshd::agent::endpoints::cni as cni_records;
use meshd::schema::{Key, ObjectName, Resource, ResourceKind};
use serde_json::json;

use crate::Outcome;

fn cluster() -> ClusterName {
    ClusterName::new("blue").expect("valid")
}

fn node() -> NodeName {
    NodeName::new("n1").expect("valid")
}

fn service() -> ServiceKey {
    ServiceKey::new("shop", "web").expect("valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("valid")
}

fn labels() -> Labels {
    Labels::from_pairs([("app", "web"), ("io.ironmesh.cluster", "blue")]).expect("valid")
}

fn identity() -> Identity {
    Identity::from_raw(0x0002_0100).expect("valid")
}

/// One key of every kind, with a valid value made by meshd's own types: what a remote
/// cluster's etcd holds.
pub fn records() -> Vec<(Resource, Vec<u8>)> {
    let c = cluster();
    let mut node_record = meshd::nodes::NodeRecord::new(c.clone(), node());
    node_record.ipv4 = Some("198.51.100.11".parse().expect("valid"));
    node_record.pod_cidrs = vec![net("10.2.1.0/24"), net("fd00:2:1::/64")];
    node_record.wireguard_public_key = Some("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into());
    node_record.ipsec_key_index = Some(3);
    node_record.ipsec_node_id = Some(2);
    node_record.labels = labels();
    let endpoint = meshd::endpoints::EndpointRecord {
        ip: ip("10.2.1.5"),
        cluster: c.clone(),
        node: node(),
        identity: identity(),
        tunnel_endpoint: Some(ip("198.51.100.11")),
        encrypt_key: 3,
        ports: Vec::new(),
        pod: Some("default/web-7d9f".into()),
    };
    let service_record = json!({
        "service": service(),
        "cluster": "blue",
        "vips": ["10.96.0.10", "203.0.113.10"],
        "ports": [
            {"name": "http", "port": 80, "protocol": "tcp"},
            {"name": "dns", "port": 53, "protocol": "udp"}
        ],
        "backends": [
            {"ip": "10.2.1.5", "port": 8080, "port_name": "http", "node": "n1", "zone": "a"},
            {"ip": "fd00:2:1::5", "port": 53, "port_name": "dns", "cluster": "blue", "state": "terminating"}
        ],
        "global": true,
        "affinity": "local"
    });
    let policy = json!({
        "namespace": "shop",
        "name": "web",
        "endpoint_selector": {"match_labels": {"app": "web"}},
        "policy_types": ["ingress", "egress"],
        "ingress": [{
            "from": [
                {"selector": {"match_labels": {"app": "client"}}},
                {"cidr": "172.16.0.0/12"}
            ],
            "ports": [{"protocol": "tcp", "port": 8080}, {"protocol": "icmp"}]
        }],
        "egress": [{"to": [{"selector": {"match_labels": {}}, "namespaces": ["*"]}]}]
    });
    let vip = meshd::lbipam::VipValue {
        service: service(),
        pool: net("203.0.113.0/28"),
    };
    let vips = meshd::lbipam::ServiceVipsValue {
        vips: vec![ip("203.0.113.10"), ip("2001:db8:f::10")],
    };
    let mut out = vec![
        (Resource::Node(node()), node_record.encode()),
        (
            Resource::Identity(identity()),
            to(&meshd::identity::IdentityValue { labels: labels() }),
        ),
        (
            Resource::IdentityByLabels(labels()),
            to(&meshd::identity::ByLabelsValue {
                identity: identity(),
            }),
        ),
        (
            Resource::PodCidr(net("10.2.1.0/24")),
            to(&meshd::ipam::PodCidrValue {
                node: node(),
                pool: net("10.2.0.0/16"),
            }),
        ),
        (
            Resource::PodCidrsOfNode(node()),
            to(&meshd::ipam::NodeCidrsValue {
                cidrs: vec![net("10.2.1.0/24"), net("fd00:2:1::/64")],
            }),
        ),
        (Resource::Endpoint(endpoint.ip), endpoint.encode()),
        (Resource::Service(service()), to(&service_record)),
        (Resource::Vip(ip("203.0.113.10")), to(&vip)),
        (Resource::VipsOfService(service()), to(&vips)),
        (Resource::IdentityRef(identity(), node()), b"{}".to_vec()),
        (
            Resource::MirrorLeader(ClusterName::new("red").expect("valid")),
            to(&json!({"node": "n1"})),
        ),
        (Resource::Policy(service()), to(&policy)),
        (Resource::ClusterIp(ip("10.96.0.10")), to(&vip)),
        (Resource::ClusterIpsOfService(service()), to(&vips)),
        (
            Resource::Health(ip("10.2.1.5")),
            meshd::objects::HealthValue {
                ip: ip("10.2.1.5"),
                node: node(),
                ports: vec![8080],
                reason: "connect: refused".into(),
            }
            .encode(),
        ),
        (
            Resource::EncryptionDesired,
            to(&json!({"mode": "strict", "set_at_unix_ms": 1, "set_by": "n1"})),
        ),
        (
            Resource::EncryptionNode(node()),
            to(&json!({
                "node": "n1", "mode": "opportunistic", "ready_for_strict": false,
                "peers_ready": 1, "peers_expected": 2, "not_ready": "waiting for n2",
                "draining": false
            })),
        ),
    ];
    for stored in super::resources::stored_objects() {
        let o = &stored.object;
        let name = ObjectName::new(o.kind(), o.meta.namespace.as_deref(), &o.meta.name)
            .expect("a decoded object has a valid name");
        out.push((Resource::Object(name), stored.encode()));
    }
    out
}

fn to<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializes")
}

/// What the fuzzed remote `blue` (cluster ID 2) may claim, as a local cluster `red` declares it.
fn trust() -> meshd::federation::Trust {
    use meshd::federation::{RemoteClaims, Trust};
    let blue = RemoteClaims {
        name: cluster(),
        id: common::ClusterId::new(2).expect("valid"),
        pod_cidrs: vec![net("10.2.0.0/16")],
        node_cidrs: vec![net("192.0.2.0/24")],
        service_cidrs: vec![net("10.96.0.0/16")],
    };
    Trust {
        local: ClusterName::new("red").expect("valid"),
        local_id: common::ClusterId::new(1).expect("valid"),
        layout: common::IdentityLayout::default(),
        local_pools: vec![net("10.1.0.0/16")],
        remotes: [(cluster(), blue)].into(),
    }
}

/// `etcd_record`: the first byte picks a key (one of every kind, as [`records`]); the rest is
/// the value, checked by `records::check_value` in the remote cluster's scope as the mirror
/// and the merged view do. A value accepted for a node, endpoint or service names that key.
/// An accepted value then arrives at a checked mirror (`MirrorState::checked`, the claims of
/// [`trust`]): refused, nothing is written; accepted, exactly its own key is.
pub fn record(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Some((&which, value)) = data.split_first() else {
        return o;
    };
    let resource = &key_of(which);
    o.note(resource.kind());
    let c = cluster();
    let r = meshd::records::check_value(&c, resource, value);
    o.step("value", &r);
    if r.is_ok() {
        match resource {
            Resource::Node(n) => {
                let rec = meshd::nodes::NodeRecord::decode(&c, n, value).expect("checked");
                assert_eq!((&rec.cluster, &rec.name), (&c, n));
            }
            Resource::Endpoint(ip) => {
                let rec =
                    meshd::endpoints::EndpointRecord::decode(&c, *ip, value).expect("checked");
                assert_eq!((&rec.cluster, rec.ip), (&c, *ip));
            }
            Resource::Object(name) => {
                let s = meshd::objects::decode(name, value).expect("checked");
                assert_eq!(s.object.kind(), name.kind);
            }
            _ => {}
        }
        if resource.kind().is_mirrored() {
            use meshd::federation::{MirrorOp, MirrorState};
            let mut m = MirrorState::checked(c.clone(), trust());
            let ops = m.on_event(
                meshd::kvstore::ReflectorEvent::Upsert {
                    key: resource.clone(),
                    value: value.to_vec(),
                },
                "fuzz",
            );
            let refused = m.refused().contains_key(resource);
            // A note, not a step: `accepted` stays the value decoder's verdict.
            o.note(("claims", refused));
            let key = Key::mirror(&c, resource.clone()).to_string();
            let put = MirrorOp::Put {
                key,
                value: value.to_vec(),
            };
            if refused {
                assert!(ops.is_empty(), "a refused record was written: {ops:?}");
                assert!(!m.mirrored().contains_key(resource));
            } else {
                assert_eq!(ops, [put], "an accepted record is written as it is");
            }
        }
    }
    o
}

/// The key `which` picks (the table is made once per thread).
fn key_of(which: u8) -> Resource {
    thread_local! {
        static KEYS: Vec<Resource> = records().into_iter().map(|(r, _)| r).collect();
    }
    KEYS.with(|k| k[usize::from(which) % k.len()].clone())
}

pub fn record_seeds() -> Vec<Vec<u8>> {
    records()
        .into_iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let mut s = vec![i as u8];
            s.extend(v);
            s
        })
        .collect()
}

/// `etcd_key`: any bytes as an etcd key (`schema::Key::parse_bytes`, which every reader of
/// remote keys calls first): only the canonical spelling parses, so a parsed key prints back
/// as its input.
pub fn key(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let r = Key::parse_bytes(data);
    o.step("key", &r);
    if let Ok(k) = &r {
        assert_eq!(k.to_string().as_bytes(), data, "a parsed key is canonical");
        if let Key::Resource { resource, .. } = k {
            o.note(resource.kind());
        }
    }
    o
}

pub fn key_seeds() -> Vec<Vec<u8>> {
    let c = cluster();
    let mut out: Vec<Vec<u8>> = records()
        .into_iter()
        .flat_map(|(r, _)| {
            [
                Key::cluster(&c, r.clone()).to_string().into_bytes(),
                Key::mirror(&c, r).to_string().into_bytes(),
            ]
        })
        .collect();
    out.push(
        Key::MirrorSynced { remote: c.clone() }
            .to_string()
            .into_bytes(),
    );
    out.push(Key::MirrorStatus { remote: c }.to_string().into_bytes());
    assert!(ResourceKind::ALL.len() <= out.len());
    out
}

/// `cni_record`: a CNI endpoint record file (`<containerID>-<ifname>.json`) as meshd reads it
/// (`agent::endpoints::cni::parse`), then its PodCIDR check and identity labels; and the same
/// bytes as the plugin reads its own records back (`cni::endpoint::Endpoint`).
pub fn cni_record(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let r = cni_records::parse("c1-eth0", data);
    o.step("record", &r);
    if let Ok(ep) = &r {
        assert!(!ep.addresses.is_empty());
        assert_eq!(format!("{}-{}", ep.container_id, ep.ifname), "c1-eth0");
        let pods = [net("10.244.1.0/24"), net("fd00:244:1::/64")];
        let inside = ep.check_pod_cidrs(&pods);
        o.step("pod cidrs", &inside);
        if inside.is_ok() {
            assert!(
                ep.addresses
                    .iter()
                    .all(|a| pods.iter().any(|p| p.contains(a)))
            );
        }
        o.step("labels", &ep.identity_labels(&cluster()));
    }
    let own: Result<cni::endpoint::Endpoint, _> = serde_json::from_slice(data);
    o.step("plugin", &own);
    o
}

pub fn cni_record_seeds() -> Vec<Vec<u8>> {
    let ep = cni::endpoint::Endpoint {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/pod-1".into(),
        host_ifname: cni::endpoint::host_ifname("c1", "eth0"),
        addresses: vec![ip("10.244.1.2"), ip("fd00:244:1::2")],
        labels: [
            ("app", "web"),
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "web-0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        pod_uid: Some("6f1f5a4e-0000-4000-8000-000000000001".into()),
        ports: vec![common::ContainerPort {
            name: "http".into(),
            container_port: 8080,
            protocol: common::PortProtocol::Tcp,
        }],
    };
    let mut other = ep.clone();
    other.addresses = vec![ip("10.244.1.3")];
    other.labels.clear();
    other.pod_uid = None;
    vec![
        serde_json::to_vec_pretty(&ep).expect("serializes"),
        serde_json::to_vec(&other).expect("serializes"),
    ]
}
