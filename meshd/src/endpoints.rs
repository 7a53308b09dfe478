//! Endpoints, the IP cache's source: `clusters/<c>/endpoints/<ip>` maps an endpoint (pod) IP
//! to its security identity, its node, the tunnel endpoint to reach it and the encryption key
//! index. A node publishes its own endpoints under pooled leases ([`crate::leases`]), so they
//! vanish when the node dies and no lease carries more than a bounded number of keys.

use std::net::IpAddr;

use common::{ClusterName, Identity, NodeName};
use serde::{Deserialize, Serialize};

use crate::kvstore::KvError;
use crate::leases::LeasedKeys;
use crate::schema::{Key, Resource};

/// The value of `clusters/<c>/endpoints/<ip>` (JSON; unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ip: IpAddr,
    pub cluster: ClusterName,
    pub node: NodeName,
    pub identity: Identity,
    /// The node address packets to this endpoint are tunnelled to (absent: native routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_endpoint: Option<IpAddr>,
    /// The encryption key index in use for this endpoint's node (0: not encrypted).
    #[serde(default)]
    pub encrypt_key: u8,
    /// The pod's named container ports (from the CNI's `runtimeConfig.ports`): Services'
    /// named target ports and NetworkPolicies' named ports resolve through them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<common::ContainerPort>,
    /// The pod's `namespace/name` (from the CNI's K8S_POD_NAMESPACE and K8S_POD_NAME), so
    /// every node and cluster can name it (`ironctl observe`); absent when the runtime did
    /// not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl EndpointRecord {
    pub fn key(&self) -> String {
        Key::cluster(&self.cluster, Resource::Endpoint(self.ip)).to_string()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an endpoint record always serializes")
    }

    /// Decodes the value stored at `(cluster, ip)`; the record must name both.
    pub fn decode(cluster: &ClusterName, ip: IpAddr, value: &[u8]) -> Result<Self, String> {
        let r: EndpointRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if r.ip != ip || &r.cluster != cluster {
            return Err(format!(
                "endpoint record names {}/{} but is stored under {cluster}/{ip}",
                r.cluster, r.ip
            ));
        }
        common::port::check_container_ports(&r.ports).map_err(|e| format!("ports{e}"))?;
        if let Some(p) = &r.pod {
            check_pod_name(p)?;
        }
        Ok(r)
    }
}

/// `namespace/name` as Kubernetes names them: the namespace an RFC 1123 label, the name an
/// RFC 1123 subdomain (the resources crate's checks, as `ironctl apply` applies them).
pub fn check_pod_name(p: &str) -> Result<(), String> {
    let why = match p.split_once('/') {
        Some((ns, name)) => resources::dns1123_label(ns)
            .map_err(|e| format!("the namespace: {e}"))
            .and_then(|()| {
                resources::dns1123_subdomain(name).map_err(|e| format!("the name: {e}"))
            }),
        None => Err("no '/'".to_string()),
    };
    why.map_err(|why| {
        format!(
            "pod {p:?}: use namespace/name, each lowercase letters, digits, '-' and '.' ({why})"
        )
    })
}

/// Publishes one node's endpoints under its pooled leases.
#[derive(Debug)]
pub struct EndpointPublisher {
    cluster: ClusterName,
    node: NodeName,
    keys: LeasedKeys,
}

/// A record handed to a publisher that belongs to another node or cluster.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(
        "endpoint {ip} names node {record_cluster}/{record_node}, but this publisher writes only {cluster}/{node}'s endpoints; set `cluster` and `node` of the record to this node"
    )]
    NotOurs {
        ip: IpAddr,
        record_cluster: ClusterName,
        record_node: NodeName,
        cluster: ClusterName,
        node: NodeName,
    },
}

impl EndpointPublisher {
    pub fn new(cluster: ClusterName, node: NodeName, keys: LeasedKeys) -> Self {
        Self {
            cluster,
            node,
            keys,
        }
    }

    pub fn leases(&self) -> &LeasedKeys {
        &self.keys
    }

    /// Writes (or updates) endpoints of this node.
    pub async fn upsert(&self, records: &[EndpointRecord]) -> Result<(), EndpointError> {
        for r in records {
            if r.cluster != self.cluster || r.node != self.node {
                return Err(EndpointError::NotOurs {
                    ip: r.ip,
                    record_cluster: r.cluster.clone(),
                    record_node: r.node.clone(),
                    cluster: self.cluster.clone(),
                    node: self.node.clone(),
                });
            }
        }
        let kvs = records.iter().map(|r| (r.key(), r.encode())).collect();
        Ok(self.keys.put_many(kvs).await?)
    }

    /// Removes endpoints of this node.
    pub async fn remove(&self, ips: &[IpAddr]) -> Result<(), EndpointError> {
        let keys = ips
            .iter()
            .map(|ip| Key::cluster(&self.cluster, Resource::Endpoint(*ip)).to_string())
            .collect();
        Ok(self.keys.delete_many(keys).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_must_match_its_key() {
        let r = EndpointRecord {
            ip: "10.1.0.7".parse().unwrap(),
            cluster: "red".parse().unwrap(),
            node: "r1".parse().unwrap(),
            identity: Identity::from_raw(65792).unwrap(),
            tunnel_endpoint: Some("192.0.2.1".parse().unwrap()),
            encrypt_key: 1,
            ports: Vec::new(),
            pod: None,
        };
        assert_eq!(r.key(), "ironmesh/v1/clusters/red/endpoints/10.1.0.7");
        let red = "red".parse().unwrap();
        assert_eq!(
            EndpointRecord::decode(&red, r.ip, &r.encode()),
            Ok(r.clone())
        );
        let err = EndpointRecord::decode(&red, "10.1.0.8".parse().unwrap(), &r.encode());
        assert!(err.unwrap_err().contains("stored under red/10.1.0.8"));
        let green = "green".parse().unwrap();
        assert!(EndpointRecord::decode(&green, r.ip, &r.encode()).is_err());
        // Older writers without the optional fields are read.
        let minimal = br#"{"ip":"10.1.0.7","cluster":"red","node":"r1","identity":65792}"#;
        let m = EndpointRecord::decode(&red, r.ip, minimal).unwrap();
        assert_eq!((m.tunnel_endpoint, m.encrypt_key), (None, 0));
        assert!(EndpointRecord::decode(&red, r.ip, br#"{"ip":"10.1.0.7"}"#).is_err());
        // Named ports round-trip; a record (possibly a remote cluster's) with bad ones is
        // refused, naming the entry.
        let mut p = r.clone();
        p.ports = vec![common::ContainerPort {
            name: "http".into(),
            container_port: 8080,
            protocol: common::PortProtocol::Tcp,
        }];
        assert_eq!(
            EndpointRecord::decode(&red, r.ip, &p.encode()),
            Ok(p.clone())
        );
        p.ports.push(p.ports[0].clone());
        let err = EndpointRecord::decode(&red, r.ip, &p.encode()).unwrap_err();
        assert!(
            err.starts_with("ports[1].name: \"http\" is used twice"),
            "{err}"
        );
        // The pod's name round-trips; a bad one (possibly a remote cluster's) is refused.
        let mut n = r.clone();
        n.pod = Some("shop/web-7d9f".into());
        assert_eq!(
            EndpointRecord::decode(&red, r.ip, &n.encode()),
            Ok(n.clone())
        );
        for bad in [
            "web",
            "shop/",
            "/web",
            "Shop/web",
            "shop/web\u{1b}[31m",
            "a/b/c",
            "shop/-web",
        ] {
            n.pod = Some(bad.into());
            let err = EndpointRecord::decode(&red, r.ip, &n.encode()).unwrap_err();
            assert!(err.contains("use namespace/name"), "{bad}: {err}");
        }
    }
}
