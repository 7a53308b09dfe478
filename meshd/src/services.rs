//! Services: `clusters/<c>/services/<namespace>/<name>` holds a service's VIPs and ports and
//! the backends in that cluster. A service marked `global` in several clusters is one service:
//! its backends are merged across clusters by namespace/name ([`merge_global`]), and the local
//! service's affinity picks which of them the datapath uses ([`select_backends`]), as Cilium's
//! global services with `service.cilium.io/affinity` do.

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{ClusterName, NodeName, ServiceKey};
use serde::{Deserialize, Serialize};

use crate::schema::{Key, Resource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A port of the service's VIPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Needed when the service has several ports; backends name the port they serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A backend's state: only active backends get new connections; terminating ones keep
/// existing connections; quarantined ones (failed health checks) get nothing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    #[default]
    Active,
    Terminating,
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    /// The service port this backend serves (absent: the service's only port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    /// The backend's cluster; must be the service record's cluster (absent: the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub state: BackendState,
}

/// Which cluster's backends a global service prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// All active backends of all clusters.
    #[default]
    None,
    /// Local active backends while there are any, remote ones otherwise.
    Local,
    /// Remote active backends while there are any, local ones otherwise.
    Remote,
}

/// The value of `clusters/<c>/services/<namespace>/<name>` (JSON; unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: ServiceKey,
    pub cluster: ClusterName,
    /// ClusterIP and LoadBalancer VIPs (LoadBalancer ones from [`crate::lbipam`]).
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Merge with the same namespace/name of the other clusters.
    #[serde(default)]
    pub global: bool,
    #[serde(default)]
    pub affinity: Affinity,
}

impl ServiceRecord {
    pub fn key(&self) -> String {
        Key::cluster(&self.cluster, Resource::Service(self.service.clone())).to_string()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a service record always serializes")
    }

    /// Decodes and checks the value stored at `(cluster, service)`: the record names both,
    /// every backend is in the record's cluster and serves a port of the service.
    pub fn decode(cluster: &ClusterName, key: &ServiceKey, value: &[u8]) -> Result<Self, String> {
        let mut r: ServiceRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if &r.service != key || &r.cluster != cluster {
            return Err(format!(
                "service record names {}/{}/{} but is stored under {cluster}/{}/{}",
                r.cluster,
                r.service.namespace(),
                r.service.name(),
                key.namespace(),
                key.name()
            ));
        }
        if r.ports.len() > 1 && r.ports.iter().any(|p| p.name.is_none()) {
            return Err("ports: a service with several ports must name each port".into());
        }
        for (i, b) in r.backends.iter_mut().enumerate() {
            match &b.cluster {
                Some(c) if c != cluster => {
                    return Err(format!(
                        "backends[{i}].cluster is {c}; a record of {cluster} lists only its own backends"
                    ));
                }
                _ => b.cluster = Some(cluster.clone()),
            }
            if let Some(n) = &b.port_name
                && !r.ports.iter().any(|p| p.name.as_ref() == Some(n))
            {
                return Err(format!(
                    "backends[{i}].port_name {n:?} is not a port of the service"
                ));
            }
        }
        Ok(r)
    }

    /// The backends of port `p` of this record.
    fn backends_of<'a>(&'a self, p: &'a ServicePort) -> impl Iterator<Item = &'a Backend> + 'a {
        self.backends
            .iter()
            .filter(move |b| b.port_name.is_none() || b.port_name == p.name)
    }
}

/// One frontend (VIP, port, protocol) as the datapath programs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

/// What a frontend forwards to: the backends in use (after affinity), each labelled by cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendSpec {
    pub service: ServiceKey,
    pub backends: Vec<Backend>,
    /// The VIP is a LoadBalancer VIP of the service (LB-IPAM): reached from outside the
    /// cluster too, so the datapath also programs its external entry (this node's backends).
    pub load_balancer: bool,
}

/// A service as the local cluster serves it, backends of every cluster merged for a global one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedService {
    pub service: ServiceKey,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub global: bool,
    pub affinity: Affinity,
    /// Every backend known, labelled by cluster (`Backend::cluster` is always set).
    pub backends: Vec<Backend>,
}

/// Merges a service's records: `local` is the local cluster's record (it defines the VIPs,
/// ports and affinity), `remotes` the records of the same namespace/name of other clusters.
/// Remote records join only when both sides are global. Without a local record there is no
/// service to serve (the VIPs are per cluster).
pub fn merge_global<'a>(
    local: &ServiceRecord,
    remotes: impl IntoIterator<Item = &'a ServiceRecord>,
) -> MergedService {
    let mut backends: Vec<Backend> = local.backends.clone();
    if local.global {
        for r in remotes {
            if r.global && r.cluster != local.cluster && r.service == local.service {
                // Remote backends serve the local port of the same name.
                backends.extend(r.backends.iter().cloned());
            }
        }
    }
    backends.sort();
    backends.dedup();
    MergedService {
        service: local.service.clone(),
        vips: local.vips.clone(),
        ports: local.ports.clone(),
        global: local.global,
        affinity: local.affinity,
        backends,
    }
}

/// The backends the datapath uses for a merged service, by affinity: active ones of the
/// preferred side while there are any, else active ones of the other side; terminating
/// backends are kept (they finish existing connections), quarantined ones never are.
pub fn select_backends(s: &MergedService, local: &ClusterName) -> Vec<Backend> {
    let active = |b: &&Backend| b.state == BackendState::Active;
    let is_local = |b: &&Backend| b.cluster.as_ref() == Some(local);
    let preferred: Option<bool> = match s.affinity {
        Affinity::None => None,
        Affinity::Local => Some(true),
        Affinity::Remote => Some(false),
    };
    let side = match preferred {
        Some(want_local)
            if s.backends
                .iter()
                .any(|b| active(&b) && is_local(&b) == want_local) =>
        {
            Some(want_local)
        }
        _ => None,
    };
    s.backends
        .iter()
        .filter(|b| b.state != BackendState::Quarantined)
        .filter(|b| side.is_none_or(|want_local| is_local(b) == want_local))
        .cloned()
        .collect()
}

/// The frontends of a merged service and their backends (per port, per VIP).
pub fn frontends(s: &MergedService, local: &ClusterName) -> BTreeMap<Frontend, FrontendSpec> {
    let selected = select_backends(s, local);
    let record = ServiceRecord {
        service: s.service.clone(),
        cluster: local.clone(),
        vips: Vec::new(),
        ports: Vec::new(),
        backends: selected,
        global: s.global,
        affinity: s.affinity,
    };
    let mut out = BTreeMap::new();
    for p in &s.ports {
        let backends: Vec<Backend> = record.backends_of(p).cloned().collect();
        for vip in &s.vips {
            out.insert(
                Frontend {
                    vip: *vip,
                    port: p.port,
                    protocol: p.protocol,
                },
                FrontendSpec {
                    service: s.service.clone(),
                    backends: backends.clone(),
                    load_balancer: false,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
