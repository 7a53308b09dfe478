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

/// The value of `health/<ip>`: the backend's target ports whose health check fails now, as its
/// node (`node`) sees them. Absent: healthy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthValue {
    pub ip: IpAddr,
    pub node: common::NodeName,
    pub ports: Vec<u16>,
    #[serde(default)]
    pub reason: String,
}

impl HealthValue {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a health value always serializes")
    }

    /// Decodes the value stored at `health/<ip>`; it must name that address.
    pub fn decode(ip: IpAddr, value: &[u8]) -> Result<Self, String> {
        let v: HealthValue = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if v.ip != ip {
            return Err(format!("health of {} stored under {ip}", v.ip));
        }
        if v.reason.len() > 1024 {
            return Err("reason: more than 1024 bytes".into());
        }
        Ok(v)
    }
}

/// What a Service object contributes: its spec and VIPs (allocated ClusterIPs and the
/// LoadBalancer VIPs in its status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceObject {
    pub key: ServiceKey,
    /// The Service's own labels (BGPAdvertisement selectors choose services by them).
    pub labels: BTreeMap<String, String>,
    pub spec: resources::ServiceSpec,
    pub vips: Vec<IpAddr>,
}

impl ServiceObject {
    /// Whether a pod with `labels` (its identity's) backs this service: the service's
    /// namespace, every selector label. No selector: no pod (Kubernetes: endpoints are
    /// someone else's then).
    pub fn selects(&self, labels: &Labels) -> bool {
        self.spec.selector.as_ref().is_some_and(|selector| {
            labels.get(NAMESPACE_LABEL) == Some(self.key.namespace())
                && selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v.as_str()))
        })
    }

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
            labels: s.object.meta.labels.clone(),
            spec: spec.clone(),
            vips,
        })
    }
}

fn port_protocol(p: resources::Protocol) -> common::PortProtocol {
    match p {
        resources::Protocol::Tcp => common::PortProtocol::Tcp,
        resources::Protocol::Udp => common::PortProtocol::Udp,
        resources::Protocol::Sctp => common::PortProtocol::Sctp,
    }
}

fn protocol(p: resources::Protocol) -> Protocol {
    match p {
        resources::Protocol::Tcp => Protocol::Tcp,
        resources::Protocol::Udp => Protocol::Udp,
        resources::Protocol::Sctp => Protocol::Sctp,
    }
}

/// The service record of `svc` in `cluster`, with a backend per port for every endpoint of
/// `members` (the endpoints [`ServiceObject::selects`]). A headless service, or one without a
/// VIP yet, has no record (`None`). A named target port resolves through each pod's named
/// ports (its endpoint record's `ports`, with the port's protocol): a pod without that name
/// is no backend of that port, as Kubernetes' EndpointSlice controller has it.
pub fn derive_record<'a>(
    cluster: &ClusterName,
    svc: &ServiceObject,
    members: impl IntoIterator<Item = &'a EndpointRecord>,
    failing: impl Fn(IpAddr) -> Option<&'a BTreeSet<u16>>,
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
    for ep in members {
        for p in &svc.spec.ports {
            let target = match &p.target_port {
                PortRef::Number(n) => *n,
                PortRef::Name(name) => {
                    match common::port::find_port(&ep.ports, name, port_protocol(p.protocol)) {
                        Some(n) => n,
                        None => continue,
                    }
                }
            };
            // A failing health check quarantines the backend (only with a check).
            let quarantined = svc.spec.health_check.is_some()
                && failing(ep.ip).is_some_and(|ports| ports.contains(&target));
            backends.push(Backend {
                ip: ep.ip,
                port: target,
                port_name: if several { p.name.clone() } else { None },
                node: Some(ep.node.clone()),
                cluster: Some(cluster.clone()),
                zone: None,
                state: if quarantined {
                    BackendState::Quarantined
                } else {
                    BackendState::Active
                },
            });
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
/// and identity labels per cluster, and says which service records changed. Incremental: an
/// endpoint change touches only the services of its namespace, each by one selector check,
/// and a record is rebuilt from its own members only.
#[derive(Debug, Default)]
pub struct ServiceController {
    services: BTreeMap<(ClusterName, ServiceKey), ServiceObject>,
    /// (cluster, namespace) -> its services.
    by_namespace: BTreeMap<(ClusterName, String), BTreeSet<ServiceKey>>,
    endpoints: BTreeMap<(ClusterName, IpAddr), EndpointRecord>,
    labels: BTreeMap<(ClusterName, Identity), Labels>,
    /// (cluster, identity) -> its endpoints, to re-derive when labels arrive late.
    by_identity: BTreeMap<(ClusterName, Identity), BTreeSet<IpAddr>>,
    /// (cluster, namespace) -> the endpoints in it (by their identity's labels).
    ns_endpoints: BTreeMap<(ClusterName, String), BTreeSet<IpAddr>>,
    /// The endpoints each service's selector matches now.
    members: BTreeMap<(ClusterName, ServiceKey), BTreeSet<IpAddr>>,
    /// Backends' failing health-checked ports (`health/<ip>`).
    health: BTreeMap<(ClusterName, IpAddr), BTreeSet<u16>>,
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
                self.set_service(cluster, &key, obj)
            }
            Resource::Endpoint(ip) => match EndpointRecord::decode(cluster, *ip, value) {
                Ok(rec) => self.set_endpoint(cluster, *ip, Some(rec)),
                Err(_) => Vec::new(),
            },
            Resource::Identity(id) => match serde_json::from_slice::<IdentityValue>(value) {
                Ok(v) => self.set_labels(cluster, *id, Some(v.labels)),
                Err(_) => Vec::new(),
            },
            Resource::Health(ip) => match HealthValue::decode(*ip, value) {
                Ok(v) => self.set_health(cluster, *ip, v.ports.into_iter().collect()),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn set_health(
        &mut self,
        cluster: &ClusterName,
        ip: IpAddr,
        ports: BTreeSet<u16>,
    ) -> Vec<RecordChange> {
        let k = (cluster.clone(), ip);
        if ports.is_empty() {
            self.health.remove(&k);
        } else {
            self.health.insert(k, ports);
        }
        let touched: Vec<ServiceKey> = self
            .services_of(cluster, ip)
            .into_iter()
            .filter(|s| {
                self.members
                    .get(&(cluster.clone(), s.clone()))
                    .is_some_and(|m| m.contains(&ip))
            })
            .collect();
        self.rebuild(cluster, touched)
    }

    pub fn delete(&mut self, cluster: &ClusterName, resource: &Resource) -> Vec<RecordChange> {
        match resource {
            Resource::Object(name) => match name.service_key() {
                Some(key) => self.set_service(cluster, &key, None),
                None => Vec::new(),
            },
            Resource::Endpoint(ip) => self.set_endpoint(cluster, *ip, None),
            Resource::Identity(id) => self.set_labels(cluster, *id, None),
            Resource::Health(ip) => self.set_health(cluster, *ip, BTreeSet::new()),
            _ => Vec::new(),
        }
    }

    fn namespace_of(&self, cluster: &ClusterName, id: Identity) -> Option<String> {
        self.labels
            .get(&(cluster.clone(), id))
            .and_then(|l| l.get(NAMESPACE_LABEL))
            .map(str::to_string)
    }

    /// Whether the endpoint `ip` of `cluster` is a member of service `key` now.
    fn is_member(&self, cluster: &ClusterName, key: &ServiceKey, ip: IpAddr) -> bool {
        let Some(svc) = self.services.get(&(cluster.clone(), key.clone())) else {
            return false;
        };
        let Some(ep) = self.endpoints.get(&(cluster.clone(), ip)) else {
            return false;
        };
        self.labels
            .get(&(cluster.clone(), ep.identity))
            .is_some_and(|labels| svc.selects(labels))
    }

    fn set_service(
        &mut self,
        cluster: &ClusterName,
        key: &ServiceKey,
        obj: Option<ServiceObject>,
    ) -> Vec<RecordChange> {
        let id = (cluster.clone(), key.clone());
        let ns = (cluster.clone(), key.namespace().to_string());
        match obj {
            Some(o) => {
                self.services.insert(id.clone(), o);
                self.by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .insert(key.clone());
                let candidates: Vec<IpAddr> = self
                    .ns_endpoints
                    .get(&ns)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                let members: BTreeSet<IpAddr> = candidates
                    .into_iter()
                    .filter(|ip| self.is_member(cluster, key, *ip))
                    .collect();
                self.members.insert(id, members);
            }
            None => {
                self.services.remove(&id);
                self.members.remove(&id);
                if let Some(s) = self.by_namespace.get_mut(&ns) {
                    s.remove(key);
                    if s.is_empty() {
                        self.by_namespace.remove(&ns);
                    }
                }
            }
        }
        self.rebuild(cluster, [key.clone()])
    }

    fn index_endpoint(&mut self, cluster: &ClusterName, ip: IpAddr, add: bool) {
        let Some(ep) = self.endpoints.get(&(cluster.clone(), ip)) else {
            return;
        };
        let idk = (cluster.clone(), ep.identity);
        let ns = self.namespace_of(cluster, ep.identity);
        if add {
            self.by_identity.entry(idk).or_default().insert(ip);
            if let Some(ns) = ns {
                self.ns_endpoints
                    .entry((cluster.clone(), ns))
                    .or_default()
                    .insert(ip);
            }
        } else {
            if let Some(s) = self.by_identity.get_mut(&idk) {
                s.remove(&ip);
                if s.is_empty() {
                    self.by_identity.remove(&idk);
                }
            }
            if let Some(ns) = ns {
                let k = (cluster.clone(), ns);
                if let Some(s) = self.ns_endpoints.get_mut(&k) {
                    s.remove(&ip);
                    if s.is_empty() {
                        self.ns_endpoints.remove(&k);
                    }
                }
            }
        }
    }

    /// The services of the namespace an endpoint is in (by its labels now).
    fn services_of(&self, cluster: &ClusterName, ip: IpAddr) -> BTreeSet<ServiceKey> {
        let ns = self
            .endpoints
            .get(&(cluster.clone(), ip))
            .and_then(|ep| self.namespace_of(cluster, ep.identity));
        ns.and_then(|ns| self.by_namespace.get(&(cluster.clone(), ns)).cloned())
            .unwrap_or_default()
    }

    /// Re-checks endpoint `ip` against the services of its namespace (before and after).
    fn recheck(&mut self, cluster: &ClusterName, ip: IpAddr, touched: &mut BTreeSet<ServiceKey>) {
        let mut candidates = self.services_of(cluster, ip);
        // Services it was a member of (its namespace or labels may have changed).
        for key in touched.iter() {
            candidates.insert(key.clone());
        }
        for key in candidates {
            let member = self.is_member(cluster, &key, ip);
            let id = (cluster.clone(), key.clone());
            let set = self.members.entry(id).or_default();
            let was = set.contains(&ip);
            if member {
                set.insert(ip);
            } else {
                set.remove(&ip);
            }
            if member || was {
                touched.insert(key);
            }
        }
    }

    fn set_endpoint(
        &mut self,
        cluster: &ClusterName,
        ip: IpAddr,
        rec: Option<EndpointRecord>,
    ) -> Vec<RecordChange> {
        // Services it is in now (so a move or a delete takes it out).
        let mut touched = self.services_of(cluster, ip);
        touched.retain(|k| {
            self.members
                .get(&(cluster.clone(), k.clone()))
                .is_some_and(|m| m.contains(&ip))
        });
        self.index_endpoint(cluster, ip, false);
        match rec {
            Some(r) => {
                self.endpoints.insert((cluster.clone(), ip), r);
                self.index_endpoint(cluster, ip, true);
            }
            None => {
                self.endpoints.remove(&(cluster.clone(), ip));
            }
        }
        self.recheck(cluster, ip, &mut touched);
        self.rebuild(cluster, touched)
    }

    fn set_labels(
        &mut self,
        cluster: &ClusterName,
        id: Identity,
        labels: Option<Labels>,
    ) -> Vec<RecordChange> {
        let ips: Vec<IpAddr> = self
            .by_identity
            .get(&(cluster.clone(), id))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut touched = BTreeSet::new();
        for ip in &ips {
            touched.extend(self.services_of(cluster, *ip).into_iter().filter(|k| {
                self.members
                    .get(&(cluster.clone(), k.clone()))
                    .is_some_and(|m| m.contains(ip))
            }));
            self.index_endpoint(cluster, *ip, false);
        }
        match labels {
            Some(l) => {
                self.labels.insert((cluster.clone(), id), l);
            }
            None => {
                self.labels.remove(&(cluster.clone(), id));
            }
        }
        for ip in &ips {
            self.index_endpoint(cluster, *ip, true);
            self.recheck(cluster, *ip, &mut touched);
        }
        self.rebuild(cluster, touched)
    }

    /// Re-derives the records of `keys` from their members; returns those that changed.
    fn rebuild(
        &mut self,
        cluster: &ClusterName,
        keys: impl IntoIterator<Item = ServiceKey>,
    ) -> Vec<RecordChange> {
        let mut out = Vec::new();
        for key in keys {
            let id = (cluster.clone(), key.clone());
            let rec = self.services.get(&id).and_then(|svc| {
                let eps = self
                    .members
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| self.endpoints.get(&(cluster.clone(), *ip)));
                let health = &self.health;
                derive_record(cluster, svc, eps, |ip| health.get(&(cluster.clone(), ip)))
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
    /// The Service object `key` of `cluster`, when one exists.
    pub fn object(&self, cluster: &ClusterName, key: &ServiceKey) -> Option<&ServiceObject> {
        self.services.get(&(cluster.clone(), key.clone()))
    }

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
