//! Applied resources (`clusters/<c>/objects/<kind>/[<ns>/]<name>`, written through meshd's
//! API by `ironctl apply`) and the service controller that turns a Service object and the
//! endpoints that exist into the service record the datapath serves (the job of Kubernetes'
//! EndpointSlice controller), sans-IO.
//!
//! Every node derives the records itself from what its merged view holds (Service objects,
//! endpoint records, identities with their labels), for every cluster: nothing is written
//! back, so a deleted pod or a dead node's expired endpoints leave every node's services as
//! soon as the view sees the endpoint go, with no controller to elect or fail over.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::{ClusterName, Identity, Labels, ServiceKey};
use resources::{PortRef, Spec, Stored};

mod apply;

pub use apply::{ApplyError, Objects, Outcome, rfc3339, wanted_families};

use crate::endpoints::EndpointRecord;
use crate::identity::IdentityValue;
use crate::schema::{ObjectName, Resource};
use crate::services::{Affinity, Backend, BackendState, Protocol, ServicePort, ServiceRecord};

/// The label carrying a pod's namespace in its identity labels (set by the CNI records).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Decodes a stored object and checks it is the one its key names.
pub fn decode(name: &ObjectName, value: &[u8]) -> Result<Stored, String> {
    let s = Stored::decode(value).map_err(|e| e.to_string())?;
    let o = &s.object;
    if o.kind() != name.kind
        || o.meta.namespace.as_deref() != name.namespace.as_deref()
        || o.meta.name != name.name
    {
        return Err(format!(
            "the object is {} {}/{} but is stored under {name}",
            o.kind(),
            o.namespace(),
            o.meta.name
        ));
    }
    Ok(s)
}

/// What a Service object contributes: its spec and VIPs (allocated ClusterIPs and the
/// LoadBalancer VIPs in its status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceObject {
    pub key: ServiceKey,
    pub spec: resources::ServiceSpec,
    pub vips: Vec<IpAddr>,
}

impl ServiceObject {
    pub fn from_stored(key: ServiceKey, s: &Stored) -> Option<ServiceObject> {
        let Spec::Service(spec) = &s.object.spec else {
            return None;
        };
        let mut vips = spec.cluster_ips.clone();
        let st: resources::ServiceStatus = s.status_as();
        vips.extend(st.load_balancer.ingress.iter().map(|i| i.ip));
        vips.extend(spec.external_ips.iter().copied());
        vips.sort();
        vips.dedup();
        Some(ServiceObject {
            key,
            spec: spec.clone(),
            vips,
        })
    }
}

fn protocol(p: resources::Protocol) -> Protocol {
    match p {
        resources::Protocol::Tcp => Protocol::Tcp,
        resources::Protocol::Udp => Protocol::Udp,
        resources::Protocol::Sctp => Protocol::Sctp,
    }
}

/// The service record of `svc` in `cluster`, with a backend for every endpoint of the
/// service's namespace whose labels its selector matches, per port. Endpoints are given with
/// their labels. A service without a selector, or a headless one, has no record (`None`).
/// A named target port needs the pod's named ports, which endpoint records do not carry
/// yet: such a port gets no backends.
pub fn derive_record<'a>(
    cluster: &ClusterName,
    svc: &ServiceObject,
    endpoints: impl IntoIterator<Item = (&'a EndpointRecord, &'a Labels)>,
) -> Option<ServiceRecord> {
    if svc.spec.headless || svc.vips.is_empty() {
        return None;
    }
    let several = svc.spec.ports.len() > 1;
    let ports: Vec<ServicePort> = svc
        .spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: if several { p.name.clone() } else { None },
            port: p.port,
            protocol: protocol(p.protocol),
        })
        .collect();
    let mut backends = Vec::new();
    if let Some(selector) = &svc.spec.selector {
        for (ep, labels) in endpoints {
            if labels.get(NAMESPACE_LABEL) != Some(svc.key.namespace())
                || !selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v.as_str()))
            {
                continue;
            }
            for p in &svc.spec.ports {
                let PortRef::Number(target) = p.target_port else {
                    continue;
                };
                backends.push(Backend {
                    ip: ep.ip,
                    port: target,
                    port_name: if several { p.name.clone() } else { None },
                    node: Some(ep.node.clone()),
                    cluster: Some(cluster.clone()),
                    zone: None,
                    state: BackendState::Active,
                });
            }
        }
    }
    backends.sort();
    backends.dedup();
    Some(ServiceRecord {
        service: svc.key.clone(),
        cluster: cluster.clone(),
        vips: svc.vips.clone(),
        ports,
        backends,
        global: svc.spec.global,
        affinity: match svc.spec.affinity {
            resources::GlobalAffinity::None => Affinity::None,
            resources::GlobalAffinity::Local => Affinity::Local,
            resources::GlobalAffinity::Remote => Affinity::Remote,
        },
    })
}

/// The service controller, fed the merged view's changes: keeps Service objects, endpoints
/// and identity labels per cluster, and says which service records changed.
#[derive(Debug, Default)]
pub struct ServiceController {
    services: BTreeMap<(ClusterName, ServiceKey), ServiceObject>,
    endpoints: BTreeMap<(ClusterName, IpAddr), EndpointRecord>,
    labels: BTreeMap<(ClusterName, Identity), Labels>,
    /// (cluster, identity) -> its endpoints, to re-derive when labels arrive late.
    by_identity: BTreeMap<(ClusterName, Identity), BTreeSet<IpAddr>>,
    /// What was last derived, so only changes are reported.
    derived: BTreeMap<(ClusterName, ServiceKey), ServiceRecord>,
}

/// A derived record that changed: `None` means it is gone.
pub type RecordChange = (ClusterName, ServiceKey, Option<ServiceRecord>);

impl ServiceController {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change of the view; returns the records that changed.
    pub fn upsert(
        &mut self,
        cluster: &ClusterName,
        resource: &Resource,
        value: &[u8],
    ) -> Vec<RecordChange> {
        match resource {
            Resource::Object(name) => {
                let Some(key) = name.service_key() else {
                    return Vec::new();
                };
                let obj = decode(name, value)
                    .ok()
                    .and_then(|s| ServiceObject::from_stored(key.clone(), &s));
                match obj {
                    Some(o) => {
                        self.services.insert((cluster.clone(), key.clone()), o);
                    }
                    None => {
                        self.services.remove(&(cluster.clone(), key.clone()));
                    }
                }
                self.refresh(cluster, |k| *k == key)
            }
            Resource::Endpoint(ip) => {
                let Ok(rec) = EndpointRecord::decode(cluster, *ip, value) else {
                    return Vec::new();
                };
                let old = self.endpoints.insert((cluster.clone(), *ip), rec.clone());
                let mut namespaces = BTreeSet::new();
                if let Some(o) = &old {
                    self.unindex(cluster, o);
                    namespaces.extend(self.namespace_of(cluster, o.identity));
                }
                self.by_identity
                    .entry((cluster.clone(), rec.identity))
                    .or_default()
                    .insert(*ip);
                namespaces.extend(self.namespace_of(cluster, rec.identity));
                self.refresh(cluster, |k| namespaces.contains(k.namespace()))
            }
            Resource::Identity(id) => {
                let Ok(v) = serde_json::from_slice::<IdentityValue>(value) else {
                    return Vec::new();
                };
                let mut namespaces: BTreeSet<String> =
                    self.namespace_of(cluster, *id).into_iter().collect();
                namespaces.extend(v.labels.get(NAMESPACE_LABEL).map(str::to_string));
                self.labels.insert((cluster.clone(), *id), v.labels);
                self.refresh(cluster, |k| namespaces.contains(k.namespace()))
            }
            _ => Vec::new(),
        }
    }

    pub fn delete(&mut self, cluster: &ClusterName, resource: &Resource) -> Vec<RecordChange> {
        match resource {
            Resource::Object(name) => {
                let Some(key) = name.service_key() else {
                    return Vec::new();
                };
                self.services.remove(&(cluster.clone(), key.clone()));
                self.refresh(cluster, |k| *k == key)
            }
            Resource::Endpoint(ip) => {
                let Some(old) = self.endpoints.remove(&(cluster.clone(), *ip)) else {
                    return Vec::new();
                };
                self.unindex(cluster, &old);
                let ns = self.namespace_of(cluster, old.identity);
                self.refresh(cluster, |k| ns.as_deref() == Some(k.namespace()))
            }
            Resource::Identity(id) => {
                let ns = self.namespace_of(cluster, *id);
                self.labels.remove(&(cluster.clone(), *id));
                self.refresh(cluster, |k| ns.as_deref() == Some(k.namespace()))
            }
            _ => Vec::new(),
        }
    }

    fn unindex(&mut self, cluster: &ClusterName, ep: &EndpointRecord) {
        let k = (cluster.clone(), ep.identity);
        if let Some(s) = self.by_identity.get_mut(&k) {
            s.remove(&ep.ip);
            if s.is_empty() {
                self.by_identity.remove(&k);
            }
        }
    }

    fn namespace_of(&self, cluster: &ClusterName, id: Identity) -> Option<String> {
        self.labels
            .get(&(cluster.clone(), id))
            .and_then(|l| l.get(NAMESPACE_LABEL))
            .map(str::to_string)
    }

    /// Re-derives the services of `cluster` that `which` picks; returns those that changed.
    fn refresh(
        &mut self,
        cluster: &ClusterName,
        which: impl Fn(&ServiceKey) -> bool,
    ) -> Vec<RecordChange> {
        let mut keys: BTreeSet<ServiceKey> = self
            .services
            .keys()
            .filter(|(c, k)| c == cluster && which(k))
            .map(|(_, k)| k.clone())
            .collect();
        keys.extend(
            self.derived
                .keys()
                .filter(|(c, k)| c == cluster && which(k))
                .map(|(_, k)| k.clone()),
        );
        let mut out = Vec::new();
        for key in keys {
            let id = (cluster.clone(), key.clone());
            let rec = self.services.get(&id).and_then(|svc| {
                let eps = self
                    .endpoints
                    .range((cluster.clone(), IpAddr::from([0u8; 4]))..)
                    .take_while(|((c, _), _)| c == cluster)
                    .filter_map(|(_, ep)| {
                        self.labels
                            .get(&(cluster.clone(), ep.identity))
                            .map(|l| (ep, l))
                    });
                derive_record(cluster, svc, eps)
            });
            if self.derived.get(&id) == rec.as_ref() {
                continue;
            }
            match &rec {
                Some(r) => self.derived.insert(id, r.clone()),
                None => self.derived.remove(&id),
            };
            out.push((cluster.clone(), key, rec));
        }
        out
    }

    /// The derived record of a service, if any.
    pub fn record(&self, cluster: &ClusterName, key: &ServiceKey) -> Option<&ServiceRecord> {
        self.derived.get(&(cluster.clone(), key.clone()))
    }

    /// Every derived record.
    pub fn records(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.derived.values()
    }
}

#[cfg(test)]
mod tests;
