//! The desired state of crypto, datapath and bgpd, maintained from merged-view changes
//! (sans-IO).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::{
    ClusterName, Community, Identity, LargeCommunity, NodeName, ReservedIdentity, ServiceKey,
};
use ipnet::IpNet;
use resources::{AdvertisementType, BgpAdvertisementSpec, BgpAttributes, Kind, Spec};

use super::{FlushReport, Reconciler, Sink};
use crate::endpoints::EndpointRecord;
use crate::federation::ViewChange;
use crate::lbipam::VipValue;
use crate::nodes::NodeRecord;
use crate::objects::{RecordChange, ServiceController};
use crate::schema::Resource;
use crate::services::{
    BackendState, Frontend, FrontendSpec, ServiceRecord, frontends, merge_global,
};

/// A node of the mesh.
pub type PeerKey = (ClusterName, NodeName);

/// One IP cache entry: what the datapath needs to send to and police an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCacheEntry {
    pub identity: Identity,
    pub cluster: ClusterName,
    pub node: Option<NodeName>,
    /// Where to tunnel packets for this IP (absent: native routing / this node).
    pub tunnel_endpoint: Option<IpAddr>,
    pub encrypt_key: u8,
}

/// A prefix to advertise: why, and with which path attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub source: AdvertSource,
    pub attributes: AdvertAttributes,
}

/// Why a prefix is advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertSource {
    /// This node's PodCIDR.
    PodCidr,
    /// A LoadBalancer VIP of a service of this cluster (host route).
    LoadBalancerVip(ServiceKey),
}

/// Path attributes of an advert: the union of the communities of every BGPAdvertisement that
/// selects it, and the highest LOCAL_PREF among those that set one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdvertAttributes {
    pub communities: BTreeSet<Community>,
    pub large_communities: BTreeSet<LargeCommunity>,
    pub local_pref: Option<u32>,
}

impl AdvertAttributes {
    fn add(&mut self, a: &BgpAttributes) {
        self.communities.extend(a.communities.iter().copied());
        self.large_communities
            .extend(a.large_communities.iter().copied());
        self.local_pref = self.local_pref.max(a.local_preference);
    }
}

/// Which LoadBalancer VIPs of the cluster this node advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VipAdverts {
    /// Every VIP allocated in the cluster.
    #[default]
    All,
    /// Only VIPs of services with an active backend on this node, so each ToR spreads the
    /// VIP's traffic over the nodes that serve it (ECMP) and a node that loses its last
    /// backend withdraws its announcement.
    LocalBackends,
}

/// The four desired states of one node agent.
#[derive(Debug)]
pub struct MeshDesired {
    local: ClusterName,
    me: NodeName,
    nodes: BTreeMap<PeerKey, NodeRecord>,
    /// Node addresses: ip -> the nodes that claim it.
    node_ips: BTreeMap<IpAddr, BTreeMap<PeerKey, ()>>,
    endpoints: BTreeMap<IpAddr, BTreeMap<ClusterName, EndpointRecord>>,
    services: BTreeMap<ServiceKey, BTreeMap<ClusterName, ServiceRecord>>,
    /// Records written as `services/` keys (by hand or by older tools); a record derived from
    /// a Service object of the same cluster and name wins over one.
    written_services: BTreeMap<(ServiceKey, ClusterName), ServiceRecord>,
    /// Derives records from Service objects and the endpoints that exist.
    controller: ServiceController,
    frontends_of: BTreeMap<ServiceKey, Vec<Frontend>>,
    vip_adverts: VipAdverts,
    /// The cluster's LoadBalancer VIPs (`ipam/vips/<ip>`) and their services.
    lb_vips: BTreeMap<IpAddr, ServiceKey>,
    /// The local cluster's BGPAdvertisement objects. None at all: the implicit default (the
    /// PodCIDRs and every LoadBalancer VIP, without attributes).
    bgp_adverts: BTreeMap<String, BgpAdvertisementSpec>,
    pub peers: Reconciler<PeerKey, NodeRecord>,
    pub ipcache: Reconciler<IpAddr, IpCacheEntry>,
    pub services_out: Reconciler<Frontend, FrontendSpec>,
    pub adverts: Reconciler<IpNet, Advert>,
}

fn node_addrs(n: &NodeRecord) -> Vec<IpAddr> {
    n.ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(n.ipv6.map(IpAddr::V6))
        .collect()
}

impl MeshDesired {
    pub fn new(local: ClusterName, me: NodeName) -> Self {
        Self {
            local,
            me,
            nodes: BTreeMap::new(),
            node_ips: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            services: BTreeMap::new(),
            written_services: BTreeMap::new(),
            controller: ServiceController::new(),
            frontends_of: BTreeMap::new(),
            vip_adverts: VipAdverts::default(),
            lb_vips: BTreeMap::new(),
            bgp_adverts: BTreeMap::new(),
            peers: Reconciler::default(),
            ipcache: Reconciler::default(),
            services_out: Reconciler::default(),
            adverts: Reconciler::default(),
        }
    }

    /// Chooses which VIPs are advertised (default: [`VipAdverts::All`]).
    pub fn with_vip_adverts(mut self, mode: VipAdverts) -> Self {
        self.vip_adverts = mode;
        self
    }

    /// Applies one merged-view change. Values that do not decode are skipped (the view
    /// checked them already; this is belt and braces).
    pub fn apply(&mut self, change: &ViewChange) {
        match change {
            ViewChange::Upsert {
                cluster,
                resource,
                value,
            } => self.upsert(cluster, resource, value),
            ViewChange::Delete { cluster, resource } => self.delete(cluster, resource),
            ViewChange::RemoteSynced(_) => {}
        }
    }

    fn upsert(&mut self, cluster: &ClusterName, resource: &Resource, value: &[u8]) {
        let derived = self.controller.upsert(cluster, resource, value);
        self.apply_derived(derived);
        match resource {
            Resource::Object(name) if *cluster == self.local => match name.kind {
                // A Service's labels decide which BGPAdvertisements take its VIPs.
                Kind::Service => {
                    if let Some(key) = name.service_key() {
                        self.refresh_vips_of(&key);
                    }
                }
                Kind::BgpAdvertisement => {
                    let spec = crate::objects::decode(name, value).ok().and_then(|s| {
                        match s.object.spec {
                            Spec::BgpAdvertisement(b) => Some(b),
                            _ => None,
                        }
                    });
                    match spec {
                        Some(b) => self.bgp_adverts.insert(name.name.clone(), b),
                        None => self.bgp_adverts.remove(&name.name),
                    };
                    self.refresh_adverts();
                }
                _ => {}
            },
            Resource::Node(n) => {
                if let Ok(rec) = NodeRecord::decode(cluster, n, value) {
                    self.set_node(cluster, n, Some(rec));
                }
            }
            Resource::Endpoint(ip) => {
                if let Ok(rec) = EndpointRecord::decode(cluster, *ip, value) {
                    self.endpoints
                        .entry(*ip)
                        .or_default()
                        .insert(cluster.clone(), rec);
                    self.refresh_ip(*ip);
                }
            }
            Resource::Service(s) => {
                if let Ok(rec) = ServiceRecord::decode(cluster, s, value) {
                    self.written_services
                        .insert((s.clone(), cluster.clone()), rec);
                    self.set_service(cluster, s);
                }
            }
            Resource::Vip(ip) if *cluster == self.local => {
                if let Ok(v) = serde_json::from_slice::<VipValue>(value) {
                    let old = self.lb_vips.insert(*ip, v.service.clone());
                    self.refresh_vip(*ip);
                    if let Some(old) = old.filter(|o| *o != v.service) {
                        self.refresh_service(&old);
                    }
                    self.refresh_service(&v.service);
                }
            }
            _ => {}
        }
    }

    fn delete(&mut self, cluster: &ClusterName, resource: &Resource) {
        let derived = self.controller.delete(cluster, resource);
        self.apply_derived(derived);
        match resource {
            Resource::Object(name) if *cluster == self.local => match name.kind {
                Kind::Service => {
                    if let Some(key) = name.service_key() {
                        self.refresh_vips_of(&key);
                    }
                }
                Kind::BgpAdvertisement => {
                    self.bgp_adverts.remove(&name.name);
                    self.refresh_adverts();
                }
                _ => {}
            },
            Resource::Node(n) => self.set_node(cluster, n, None),
            Resource::Endpoint(ip) => {
                if let Some(m) = self.endpoints.get_mut(ip) {
                    m.remove(cluster);
                    if m.is_empty() {
                        self.endpoints.remove(ip);
                    }
                }
                self.refresh_ip(*ip);
            }
            Resource::Service(s) => {
                self.written_services.remove(&(s.clone(), cluster.clone()));
                self.set_service(cluster, s);
            }
            Resource::Vip(ip) if *cluster == self.local => {
                let old = self.lb_vips.remove(ip);
                self.refresh_vip(*ip);
                if let Some(old) = old {
                    self.refresh_service(&old);
                }
            }
            _ => {}
        }
    }

    fn apply_derived(&mut self, changes: Vec<RecordChange>) {
        for (cluster, key, _) in changes {
            self.set_service(&cluster, &key);
        }
    }

    /// The record of `(cluster, s)` in use: the one derived from a Service object, else a
    /// written one.
    fn set_service(&mut self, cluster: &ClusterName, s: &ServiceKey) {
        let rec = self
            .controller
            .record(cluster, s)
            .or_else(|| self.written_services.get(&(s.clone(), cluster.clone())))
            .cloned();
        match rec {
            Some(r) => {
                self.services
                    .entry(s.clone())
                    .or_default()
                    .insert(cluster.clone(), r);
            }
            None => {
                if let Some(m) = self.services.get_mut(s) {
                    m.remove(cluster);
                    if m.is_empty() {
                        self.services.remove(s);
                    }
                }
            }
        }
        self.refresh_service(s);
        self.refresh_vips_of(s);
    }

    fn set_node(&mut self, cluster: &ClusterName, name: &NodeName, rec: Option<NodeRecord>) {
        let key = (cluster.clone(), name.clone());
        let is_me = *cluster == self.local && *name == self.me;
        let old = match &rec {
            Some(r) => self.nodes.insert(key.clone(), r.clone()),
            None => self.nodes.remove(&key),
        };
        let mut touched: Vec<IpAddr> = Vec::new();
        if let Some(o) = &old {
            for ip in node_addrs(o) {
                if let Some(m) = self.node_ips.get_mut(&ip) {
                    m.remove(&key);
                    if m.is_empty() {
                        self.node_ips.remove(&ip);
                    }
                }
                touched.push(ip);
            }
            if is_me {
                for c in &o.pod_cidrs {
                    self.adverts.set(*c, None);
                }
            }
        }
        if let Some(r) = &rec {
            for ip in node_addrs(r) {
                self.node_ips.entry(ip).or_default().insert(key.clone(), ());
                touched.push(ip);
            }
            if is_me {
                let advert = self.pod_cidr_advert();
                for c in &r.pod_cidrs {
                    self.adverts.set(*c, advert.clone());
                }
            }
        }
        if !is_me {
            self.peers.set(key, rec);
        }
        for ip in touched {
            self.refresh_ip(ip);
        }
    }

    /// The IP cache entry of `ip`: an endpoint wins over a node address; among clusters the
    /// local one wins, then the first by name (overlapping PodCIDRs are refused at config time
    /// unless allowed, so this only orders a conflict deterministically).
    fn refresh_ip(&mut self, ip: IpAddr) {
        let pick = |m: Vec<&ClusterName>| -> Option<ClusterName> {
            m.iter()
                .find(|c| ***c == self.local)
                .or_else(|| m.first())
                .map(|c| (*c).clone())
        };
        let entry = if let Some(eps) = self.endpoints.get(&ip) {
            pick(eps.keys().collect()).map(|c| {
                let e = &eps[&c];
                IpCacheEntry {
                    identity: e.identity,
                    cluster: c,
                    node: Some(e.node.clone()),
                    tunnel_endpoint: e.tunnel_endpoint,
                    encrypt_key: e.encrypt_key,
                }
            })
        } else if let Some(nodes) = self.node_ips.get(&ip) {
            let key = nodes
                .keys()
                .find(|(c, _)| *c == self.local)
                .or_else(|| nodes.keys().next())
                .cloned();
            key.map(|(c, n)| {
                let me = c == self.local && n == self.me;
                let rec = &self.nodes[&(c.clone(), n.clone())];
                IpCacheEntry {
                    identity: if me {
                        ReservedIdentity::Host.into()
                    } else {
                        ReservedIdentity::RemoteNode.into()
                    },
                    encrypt_key: rec.ipsec_key_index.unwrap_or(0),
                    cluster: c,
                    node: Some(n),
                    tunnel_endpoint: (!me).then_some(ip),
                }
            })
        } else {
            None
        };
        self.ipcache.set(ip, entry);
    }

    /// Whether this node hosts an active backend of the local cluster's record of `s`.
    fn has_local_backend(&self, s: &ServiceKey) -> bool {
        self.services
            .get(s)
            .and_then(|m| m.get(&self.local))
            .is_some_and(|r| {
                r.backends
                    .iter()
                    .any(|b| b.state == BackendState::Active && b.node.as_ref() == Some(&self.me))
            })
    }

    /// How this node's PodCIDRs are advertised: by the implicit default when the cluster has
    /// no BGPAdvertisement, else only when a PodCIDR advertisement exists, with its attributes.
    fn pod_cidr_advert(&self) -> Option<Advert> {
        let mut attributes = AdvertAttributes::default();
        let mut any = self.bgp_adverts.is_empty();
        for a in self.bgp_adverts.values().flat_map(|b| &b.advertisements) {
            if a.type_ == AdvertisementType::PodCidr {
                any = true;
                attributes.add(&a.attributes);
            }
        }
        any.then_some(Advert {
            source: AdvertSource::PodCidr,
            attributes,
        })
    }

    /// The attributes of service `s`'s LoadBalancer VIPs, `None` when no BGPAdvertisement
    /// selects it (the implicit default takes every service).
    fn vip_attributes(&self, s: &ServiceKey) -> Option<AdvertAttributes> {
        let mut attributes = AdvertAttributes::default();
        let mut any = self.bgp_adverts.is_empty();
        let obj = self.controller.object(&self.local, s);
        for a in self.bgp_adverts.values().flat_map(|b| &b.advertisements) {
            let labels = |k: &str| obj.and_then(|o| o.labels.get(k)).map(String::as_str);
            if a.selects_service(s.namespace(), s.name(), labels) {
                any = true;
                attributes.add(&a.attributes);
            }
        }
        any.then_some(attributes)
    }

    fn refresh_vip(&mut self, ip: IpAddr) {
        let advert = self.lb_vips.get(&ip).and_then(|s| {
            let on = match self.vip_adverts {
                VipAdverts::All => true,
                VipAdverts::LocalBackends => self.has_local_backend(s),
            };
            if !on {
                return None;
            }
            self.vip_attributes(s).map(|attributes| Advert {
                source: AdvertSource::LoadBalancerVip(s.clone()),
                attributes,
            })
        });
        self.adverts.set(IpNet::from(ip), advert);
    }

    /// Re-derives every advert (a BGPAdvertisement changed).
    fn refresh_adverts(&mut self) {
        let me = (self.local.clone(), self.me.clone());
        let cidrs = self
            .nodes
            .get(&me)
            .map(|r| r.pod_cidrs.clone())
            .unwrap_or_default();
        let advert = self.pod_cidr_advert();
        for c in cidrs {
            self.adverts.set(c, advert.clone());
        }
        let ips: Vec<IpAddr> = self.lb_vips.keys().copied().collect();
        for ip in ips {
            self.refresh_vip(ip);
        }
    }

    fn refresh_vips_of(&mut self, s: &ServiceKey) {
        let ips: Vec<IpAddr> = self
            .lb_vips
            .iter()
            .filter(|(_, svc)| *svc == s)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.refresh_vip(ip);
        }
    }

    fn refresh_service(&mut self, s: &ServiceKey) {
        let next: BTreeMap<Frontend, FrontendSpec> = match self.services.get(s) {
            Some(m) => match m.get(&self.local) {
                Some(local) => frontends(&merge_global(local, m.values()), &self.local),
                None => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
        for old in self.frontends_of.remove(s).unwrap_or_default() {
            if !next.contains_key(&old) {
                self.services_out.set(old, None);
            }
        }
        self.frontends_of
            .insert(s.clone(), next.keys().copied().collect());
        for (f, mut spec) in next {
            // A LoadBalancer VIP (LB-IPAM) is also reached from outside the cluster.
            spec.load_balancer = self.lb_vips.get(&f.vip) == Some(s);
            self.services_out.set(f, Some(spec));
        }
    }

    /// Flushes all four reconcilers.
    pub fn flush(
        &mut self,
        peers: &mut dyn Sink<PeerKey, NodeRecord>,
        ipcache: &mut dyn Sink<IpAddr, IpCacheEntry>,
        services: &mut dyn Sink<Frontend, FrontendSpec>,
        adverts: &mut dyn Sink<IpNet, Advert>,
    ) -> [FlushReport; 4] {
        [
            self.peers.flush(peers),
            self.ipcache.flush(ipcache),
            self.services_out.flush(services),
            self.adverts.flush(adverts),
        ]
    }

    pub fn pending(&self) -> usize {
        self.peers.pending()
            + self.ipcache.pending()
            + self.services_out.pending()
            + self.adverts.pending()
    }
}
