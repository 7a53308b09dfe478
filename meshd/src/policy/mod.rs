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

pub use compute::{CidrIdentities, NamedPorts, endpoint_policy, endpoint_policy_with, selects};

/// The identity label naming the pod's namespace (set by the CNI from `CNI_ARGS`).
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The identity label naming the pod's cluster (added by meshd), so a selector can pick the
/// pods of one cluster (`io.ironmesh.cluster=green`).
pub const LABEL_CLUSTER: &str = "io.ironmesh.cluster";

/// `match_labels`: every label listed must be present with that value; `match_expressions`:
/// every requirement must hold (Kubernetes semantics: `NotIn`/`DoesNotExist` hold when the key
/// is absent). Both empty: all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<resources::Requirement>,
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        resources::LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
        .matches(|k| labels.get(k))
    }

    fn from_resource(s: &resources::LabelSelector) -> Self {
        Selector {
            match_labels: s.match_labels.clone(),
            match_expressions: s.match_expressions.clone(),
        }
    }
}

/// The label every namespace has: its name (as Kubernetes sets `kubernetes.io/metadata.name`).
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// The labels of the namespaces known, per (cluster, namespace): from applied Namespace
/// objects; a namespace without one has only [`LABEL_NAMESPACE_NAME`].
pub type NamespaceLabels = BTreeMap<(String, String), Labels>;

/// The most ports one `port`..`end_port` range may span: the datapath matches exact ports, so a
/// range is one entry per port and peer.
pub const MAX_PORT_RANGE: u32 = 1024;

/// A peer of a rule: pods by labels (in `namespaces`, by default the policy's own; `"*"`:
/// every namespace; or in the namespaces `namespace_selector` picks by their labels; any
/// cluster unless the selector names `io.ironmesh.cluster`; no `selector` with a
/// `namespace_selector`: every pod of those namespaces), or a CIDR minus its `except`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
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

/// A destination port (TCP/UDP), a range `port..=end_port`, a named port (`port_name`: the
/// destination pod's container port of that name and protocol), or every port of a protocol
/// (none of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPort {
    pub protocol: PolicyProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
}

impl PolicyProtocol {
    /// The protocol of a container port, `None` for ICMP (no ports).
    pub fn port_protocol(self) -> Option<common::PortProtocol> {
        match self {
            PolicyProtocol::Tcp => Some(common::PortProtocol::Tcp),
            PolicyProtocol::Udp => Some(common::PortProtocol::Udp),
            PolicyProtocol::Sctp => Some(common::PortProtocol::Sctp),
            PolicyProtocol::Icmp | PolicyProtocol::Icmpv6 => None,
        }
    }
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
    let pods = p.selector.is_some() || p.namespace_selector.is_some();
    if p.namespaces.is_some() && p.namespace_selector.is_some() {
        return Err(invalid(
            format!("{field}.namespaces"),
            "give namespaces by name or by namespace_selector, not both",
        ));
    }
    if let Some(net) = &p.cidr {
        for (i, e) in p.except.iter().enumerate() {
            if !(net.contains(&e.network()) && e.prefix_len() > net.prefix_len()) {
                return Err(invalid(
                    format!("{field}.except[{i}]"),
                    format!("{e} must be a strict subset of the cidr {net}"),
                ));
            }
        }
    } else if !p.except.is_empty() {
        return Err(invalid(
            format!("{field}.except"),
            "applies to cidr peers only",
        ));
    }
    match (pods, &p.cidr) {
        (true, Some(_)) | (false, None) => {
            return Err(invalid(
                field,
                "a peer has exactly one of selector/namespace_selector or cidr; split it into two peers",
            ));
        }
        (false, Some(net)) if net.trunc() != *net => {
            return Err(invalid(
                format!("{field}.cidr"),
                format!("{net} has host bits set; write {}", net.trunc()),
            ));
        }
        (false, Some(_)) if p.namespaces.is_some() => {
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
    if let Some(name) = &p.port_name {
        common::port::iana_svc_name(name)
            .map_err(|e| invalid(format!("{field}.port_name"), format!("{name:?} {e}")))?;
        if p.port.is_some() || p.end_port.is_some() {
            return Err(invalid(
                format!("{field}.port_name"),
                "names the port: set port_name or port (and end_port), not both",
            ));
        }
        if p.protocol.port_protocol().is_none() {
            return Err(invalid(
                format!("{field}.port_name"),
                format!("{:?} has no ports; omit port_name", p.protocol),
            ));
        }
    }
    if let Some(end) = p.end_port {
        match p.port {
            None => {
                return Err(invalid(
                    format!("{field}.end_port"),
                    "needs a port to start the range",
                ));
            }
            Some(start) if end < start => {
                return Err(invalid(
                    format!("{field}.end_port"),
                    format!("{end} is below port {start}"),
                ));
            }
            Some(start) if u32::from(end - start) >= MAX_PORT_RANGE => {
                return Err(invalid(
                    format!("{field}.end_port"),
                    format!(
                        "the range {start}-{end} has {} ports; ironmesh enforces ranges of at most {MAX_PORT_RANGE} (the datapath holds one entry per port and peer): split the rule or allow every port",
                        u32::from(end - start) + 1
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match (p.protocol, p.port) {
        (_, Some(0)) => Err(invalid(
            format!("{field}.port"),
            "0 is not a port; omit port for every port",
        )),
        (PolicyProtocol::Tcp | PolicyProtocol::Udp | PolicyProtocol::Sctp, _) | (_, None) => Ok(()),
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
        self.validate_rules()
    }

    /// Checks peers and ports.
    fn validate_rules(&self) -> Result<(), PolicyRecordError> {
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

    /// A Kubernetes NetworkPolicy (`ironctl apply`) as a record of this model: the pod
    /// selector, namespace selectors, ipBlocks with except, port ranges, named ports (resolved
    /// per destination pod when the policy is computed, [`compute::endpoint_policy_with`]).
    pub fn from_network_policy(
        namespace: &str,
        name: &str,
        spec: &resources::NetworkPolicySpec,
    ) -> Result<Self, PolicyRecordError> {
        let peers = |rule: &resources::Rule, field: &str| -> Vec<PolicyPeer> {
            let _ = field;
            rule.peers
                .iter()
                .flatten()
                .map(|p| match p {
                    resources::Peer::Pods { pods, namespaces } => PolicyPeer {
                        selector: match (pods, namespaces) {
                            (Some(s), _) => Some(Selector::from_resource(s)),
                            (None, _) => None,
                        },
                        namespace_selector: namespaces.as_ref().map(Selector::from_resource),
                        ..Default::default()
                    },
                    resources::Peer::IpBlock(b) => PolicyPeer {
                        cidr: Some(b.cidr),
                        except: b.except.clone(),
                        ..Default::default()
                    },
                })
                .collect()
        };
        let ports =
            |rule: &resources::Rule, field: &str| -> Result<Vec<PolicyPort>, PolicyRecordError> {
                rule.ports
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, p)| {
                        let protocol = match p.protocol {
                            resources::Protocol::Tcp => PolicyProtocol::Tcp,
                            resources::Protocol::Udp => PolicyProtocol::Udp,
                            resources::Protocol::Sctp => PolicyProtocol::Sctp,
                        };
                        let (port, port_name) = match &p.port {
                            None => (None, None),
                            Some(resources::PortRef::Number(n)) => (Some(*n), None),
                            Some(resources::PortRef::Name(n)) if p.end_port.is_some() => {
                                return Err(invalid(
                                    format!("{field}.ports[{i}].endPort"),
                                    format!("may not be set with the named port {n:?}"),
                                ));
                            }
                            Some(resources::PortRef::Name(n)) => (None, Some(n.clone())),
                        };
                        Ok(PolicyPort {
                            protocol,
                            port,
                            end_port: p.end_port,
                            port_name,
                        })
                    })
                    .collect()
            };
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().enumerate() {
            let f = format!("spec.ingress[{i}]");
            ingress.push(IngressRule {
                from: peers(r, &f),
                ports: ports(r, &f)?,
            });
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().enumerate() {
            let f = format!("spec.egress[{i}]");
            egress.push(EgressRule {
                to: peers(r, &f),
                ports: ports(r, &f)?,
            });
        }
        let types = spec
            .effective_types()
            .into_iter()
            .map(|t| match t {
                resources::PolicyType::Ingress => PolicyType::Ingress,
                resources::PolicyType::Egress => PolicyType::Egress,
            })
            .collect();
        let r = PolicyRecord {
            namespace: namespace.into(),
            name: name.into(),
            endpoint_selector: Selector::from_resource(&spec.pod_selector),
            policy_types: Some(types),
            ingress,
            egress,
        };
        r.validate_rules()?;
        Ok(r)
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
