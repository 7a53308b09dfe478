//! Network policy records: `clusters/<c>/policies/<namespace>/<name>` (docs/etcd-schema.md),
//! with Kubernetes NetworkPolicy semantics over identity labels, and [`compute`], the pure
//! part turning policies and known identities into one endpoint's datapath policy.
//!
//! A record is strict (unknown fields are an error): a reader that ignored a field it does not
//! know might enforce less than the writer meant.

pub mod compute;

use std::collections::BTreeMap;

use common::{ClusterName, Labels, ServiceKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::schema::{Key, Resource};

pub use compute::{CidrIdentities, endpoint_policy, selects};

/// The identity label naming the pod's namespace (set by the CNI from `CNI_ARGS`).
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The identity label naming the pod's cluster (added by meshd), so a selector can pick the
/// pods of one cluster (`io.ironmesh.cluster=green`).
pub const LABEL_CLUSTER: &str = "io.ironmesh.cluster";

/// `match_labels`: every label listed must be present with that value (empty: all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v.as_str()))
    }
}

/// A peer of a rule: pods by labels (in `namespaces`, by default the policy's own; `"*"`:
/// every namespace; any cluster unless the selector names `io.ironmesh.cluster`), or a CIDR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyProtocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl PolicyProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            PolicyProtocol::Tcp => 6,
            PolicyProtocol::Udp => 17,
            PolicyProtocol::Sctp => 132,
            PolicyProtocol::Icmp => 1,
            PolicyProtocol::Icmpv6 => 58,
        }
    }
}

/// A destination port (TCP/UDP), or every port of a protocol (`port` absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPort {
    pub protocol: PolicyProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An ingress rule: traffic from any of `from` (empty: from anywhere) to any of `ports`
/// (empty: every port) is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default)]
    pub from: Vec<PolicyPeer>,
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

/// An egress rule: traffic to any of `to` (empty: anywhere) on `ports` is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default)]
    pub to: Vec<PolicyPeer>,
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// The value of `clusters/<c>/policies/<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRecord {
    pub namespace: String,
    pub name: String,
    /// The pods of `namespace` the policy applies to (empty: all of them).
    #[serde(default)]
    pub endpoint_selector: Selector,
    /// As Kubernetes: absent means `ingress`, plus `egress` when there are egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

/// Why a policy record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRecordError {
    #[error("not a policy record: {0}")]
    Json(String),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> PolicyRecordError {
    PolicyRecordError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

fn check_peer(field: &str, p: &PolicyPeer) -> Result<(), PolicyRecordError> {
    match (&p.selector, &p.cidr) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                field,
                "a peer has exactly one of selector or cidr; split it into two peers",
            ));
        }
        (None, Some(net)) if net.trunc() != *net => {
            return Err(invalid(
                format!("{field}.cidr"),
                format!("{net} has host bits set; write {}", net.trunc()),
            ));
        }
        (None, Some(_)) if p.namespaces.is_some() => {
            return Err(invalid(
                format!("{field}.namespaces"),
                "applies to selector peers only; remove it from the cidr peer",
            ));
        }
        _ => {}
    }
    Ok(())
}

fn check_port(field: &str, p: &PolicyPort) -> Result<(), PolicyRecordError> {
    match (p.protocol, p.port) {
        (_, Some(0)) => Err(invalid(
            format!("{field}.port"),
            "0 is not a port; omit port for every port",
        )),
        (PolicyProtocol::Tcp | PolicyProtocol::Udp, _) | (_, None) => Ok(()),
        (proto, Some(_)) => Err(invalid(
            format!("{field}.port"),
            format!("{proto:?} has no ports the datapath matches; omit port"),
        )),
    }
}

impl PolicyRecord {
    pub fn key_of(&self) -> Result<ServiceKey, PolicyRecordError> {
        ServiceKey::new(&self.namespace, &self.name)
            .map_err(|e| invalid("namespace/name", e.to_string()))
    }

    pub fn key(&self, cluster: &ClusterName) -> Result<String, PolicyRecordError> {
        Ok(Key::cluster(cluster, Resource::Policy(self.key_of()?)).to_string())
    }

    /// Checks what serde cannot: names, peers, ports.
    pub fn validate(&self) -> Result<(), PolicyRecordError> {
        self.key_of()?;
        for (i, r) in self.ingress.iter().enumerate() {
            for (j, p) in r.from.iter().enumerate() {
                check_peer(&format!("ingress[{i}].from[{j}]"), p)?;
            }
            for (j, p) in r.ports.iter().enumerate() {
                check_port(&format!("ingress[{i}].ports[{j}]"), p)?;
            }
        }
        for (i, r) in self.egress.iter().enumerate() {
            for (j, p) in r.to.iter().enumerate() {
                check_peer(&format!("egress[{i}].to[{j}]"), p)?;
            }
            for (j, p) in r.ports.iter().enumerate() {
                check_port(&format!("egress[{i}].ports[{j}]"), p)?;
            }
        }
        Ok(())
    }

    /// Parses and validates a record (from etcd or an operator's file).
    pub fn parse(value: &[u8]) -> Result<Self, PolicyRecordError> {
        let r: PolicyRecord =
            serde_json::from_slice(value).map_err(|e| PolicyRecordError::Json(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    /// Decodes the value stored at `key`; the record must name it.
    pub fn decode(key: &ServiceKey, value: &[u8]) -> Result<Self, PolicyRecordError> {
        let r = Self::parse(value)?;
        if r.key_of()? != *key {
            return Err(invalid(
                "namespace/name",
                format!(
                    "the record names {}/{} but is stored under {key}",
                    r.namespace, r.name
                ),
            ));
        }
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a policy record always serializes")
    }

    /// Which directions the policy isolates: (ingress, egress).
    pub fn types(&self) -> (bool, bool) {
        match &self.policy_types {
            Some(t) => (
                t.contains(&PolicyType::Ingress),
                t.contains(&PolicyType::Egress),
            ),
            None => (true, !self.egress.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests;
