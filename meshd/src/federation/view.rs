//! What a node agent sees: its own cluster's state and every remote's mirror, from the local
//! etcd only (one watch), merged into one view labelled by cluster.
//!
//! Remote-derived entries are not garbage-collected before the remote's `synced` marker
//! exists: a delete of a mirrored key seen while the marker is absent (a mirror being rebuilt,
//! a relist during which the marker is missing) is held back, and applied once the marker
//! appears if the key is still absent. So a restart or a mirror rebuild never drops state (and
//! the policy built on it) for a remote cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ClusterName, NodeName, ServiceKey};
use tokio::sync::watch;

use super::mirror::{MirrorStatusValue, SyncedValue};
use super::trust::{self, Refusal, Trust};
use crate::endpoints::EndpointRecord;
use crate::kvstore::{
    Decoder, KvStore, Reflector, ReflectorConfig, ReflectorEvent, ReflectorStatus,
};
use crate::nodes::NodeRecord;
use crate::schema::{Key, ROOT, Resource, ResourceKind, Scope, VERSION};
use crate::services::{Backend, MergedService, ServiceRecord, merge_global};

/// A key of the merged view.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViewKey {
    /// A resource of `cluster` (the local one, or a mirrored remote).
    Entry {
        cluster: ClusterName,
        resource: Resource,
    },
    Synced(ClusterName),
    Status(ClusterName),
}

/// Decodes the local cluster's keys and the configured remotes' mirrors.
#[derive(Debug, Clone)]
pub struct MergedDecoder {
    pub local: ClusterName,
    pub remotes: BTreeSet<ClusterName>,
}

impl MergedDecoder {
    fn wanted(&self, key: &Key) -> bool {
        match key {
            Key::Resource {
                scope: Scope::Cluster(c),
                resource,
            } => *c == self.local && resource.kind().in_local_view(),
            Key::Resource {
                scope: Scope::Mirror(r),
                resource,
            } => self.remotes.contains(r) && resource.kind().is_mirrored(),
            Key::MirrorSynced { remote } | Key::MirrorStatus { remote } => {
                self.remotes.contains(remote)
            }
        }
    }

    fn scope_of(key: &[u8]) -> Option<(&str, &str)> {
        let s = std::str::from_utf8(key).ok()?;
        let rest = s
            .strip_prefix(ROOT)?
            .strip_prefix(VERSION)?
            .strip_prefix('/')?;
        let (scope, rest) = rest.split_once('/')?;
        let (name, _) = rest.split_once('/')?;
        Some((scope, name))
    }
}

impl Decoder for MergedDecoder {
    type Key = ViewKey;
    type Value = Vec<u8>;

    fn ignore(&self, key: &[u8]) -> bool {
        // Other clusters' scopes, and election keys, are not this view's business; only
        // malformed keys inside our scopes are worth a log line.
        match Self::scope_of(key) {
            Some(("clusters", c)) if c == self.local.as_ref() => {
                matches!(
                    Key::parse_bytes(key),
                    Ok(Key::Resource { resource, .. }) if !resource.kind().in_local_view()
                )
            }
            Some(("mirror", r)) => !self.remotes.iter().any(|x| x.as_ref() == r),
            _ => true,
        }
    }

    fn decode_key(&self, key: &[u8]) -> Result<ViewKey, String> {
        let k = Key::parse_bytes(key).map_err(|e| e.to_string())?;
        if !self.wanted(&k) {
            return Err(format!("not in the merged view: {k}"));
        }
        Ok(match k {
            Key::Resource { scope, resource } => ViewKey::Entry {
                cluster: match scope {
                    Scope::Cluster(c) | Scope::Mirror(c) => c,
                },
                resource,
            },
            Key::MirrorSynced { remote } => ViewKey::Synced(remote),
            Key::MirrorStatus { remote } => ViewKey::Status(remote),
        })
    }

    fn decode_value(&self, key: &ViewKey, value: &[u8]) -> Result<Vec<u8>, String> {
        match key {
            ViewKey::Entry { cluster, resource } => {
                crate::records::check_value(cluster, resource, value)?;
            }
            ViewKey::Synced(_) => {
                serde_json::from_slice::<SyncedValue>(value).map_err(|e| e.to_string())?;
            }
            ViewKey::Status(_) => {
                serde_json::from_slice::<MirrorStatusValue>(value).map_err(|e| e.to_string())?;
            }
        }
        Ok(value.to_vec())
    }
}

/// A change of the merged view, for reconcilers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewChange {
    Upsert {
        cluster: ClusterName,
        resource: Resource,
        value: Vec<u8>,
    },
    Delete {
        cluster: ClusterName,
        resource: Resource,
    },
    /// The remote's mirror is complete (its marker appeared); held deletes were applied.
    RemoteSynced(ClusterName),
}

/// The merged state (sans-IO).
#[derive(Debug)]
pub struct MergedState {
    local: ClusterName,
    entries: BTreeMap<(ClusterName, Resource), Vec<u8>>,
    synced: BTreeMap<ClusterName, SyncedValue>,
    status: BTreeMap<ClusterName, MirrorStatusValue>,
    /// Remote entries whose delete waits for the remote's synced marker.
    held: BTreeSet<(ClusterName, Resource)>,
    listed: bool,
    /// The remotes' records are checked against their claims (`None`: shape only).
    checks: Option<Checks>,
    /// Bumped by every event applied.
    generation: u64,
    /// [`MergedState::services`] as of a generation: derived once per change, however often
    /// it is read (the health checker reads it every second, the API on every call).
    services_cache: std::sync::Mutex<Option<(u64, Arc<Vec<ServiceRecord>>)>>,
}

/// Remote records not applied: refused (with the reason), or waiting (an endpoint whose node
/// is not in the view yet).
type Rejected = BTreeMap<(ClusterName, Resource), (Vec<u8>, Option<Refusal>)>;

/// What the checks of remote records need besides the entries.
#[derive(Debug)]
struct Checks {
    trust: Trust,
    rejected: Rejected,
    /// Local node records (accepted as they are: local state is trusted), and their addresses.
    local_nodes: BTreeMap<NodeName, NodeRecord>,
    local_node_ips: BTreeMap<IpAddr, NodeName>,
    /// Applied remote node records.
    remote_nodes: BTreeMap<(ClusterName, NodeName), NodeRecord>,
    /// Remote endpoints (applied or not) by the node they name, and the reverse.
    eps_of_node: BTreeMap<(ClusterName, NodeName), BTreeSet<IpAddr>>,
    ep_node: BTreeMap<(ClusterName, IpAddr), NodeName>,
    refused_total: u64,
}

impl MergedState {
    pub fn new(local: ClusterName) -> Self {
        Self {
            local,
            entries: BTreeMap::new(),
            synced: BTreeMap::new(),
            status: BTreeMap::new(),
            held: BTreeSet::new(),
            listed: false,
            checks: None,
            generation: 0,
            services_cache: std::sync::Mutex::new(None),
        }
    }

    /// A state that applies remote records only once checked against `trust`: the remotes'
    /// claims, the local pools and the local records (local state wins).
    pub fn checked(trust: Trust) -> Self {
        let mut s = Self::new(trust.local.clone());
        s.checks = Some(Checks {
            trust,
            rejected: BTreeMap::new(),
            local_nodes: BTreeMap::new(),
            local_node_ips: BTreeMap::new(),
            remote_nodes: BTreeMap::new(),
            eps_of_node: BTreeMap::new(),
            ep_node: BTreeMap::new(),
            refused_total: 0,
        });
        s
    }

    /// The remote records refused now, of `cluster` (the reasons; none without checks).
    pub fn refusals(&self, cluster: &ClusterName) -> Vec<&Refusal> {
        self.checks.as_ref().map_or_else(Vec::new, |ch| {
            ch.rejected
                .iter()
                .filter(|((c, _), _)| c == cluster)
                .filter_map(|(_, (_, r))| r.as_ref())
                .collect()
        })
    }

    /// Remote endpoints of `cluster` not applied because their node is not in the view.
    pub fn waiting(&self, cluster: &ClusterName) -> usize {
        self.checks.as_ref().map_or(0, |ch| {
            ch.rejected
                .iter()
                .filter(|((c, _), (_, r))| c == cluster && r.is_none())
                .count()
        })
    }

    /// How many times a remote record was refused (a record refused again for another reason
    /// counts again).
    pub fn refused_total(&self) -> u64 {
        self.checks.as_ref().map_or(0, |ch| ch.refused_total)
    }

    fn addrs(n: &NodeRecord) -> impl Iterator<Item = IpAddr> {
        n.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(n.ipv6.map(IpAddr::V6))
    }

    /// Whether `(cluster, resource)` with `value` may be applied: `Ok(false)` waits.
    fn evaluate(
        &self,
        cluster: &ClusterName,
        resource: &Resource,
        value: &[u8],
    ) -> Result<bool, Refusal> {
        let Some(ch) = &self.checks else {
            return Ok(true);
        };
        let Some(claims) = ch.trust.remotes.get(cluster) else {
            return Ok(true);
        };
        trust::check_static(&ch.trust, claims, resource, value)?;
        match resource {
            Resource::Node(n) => match NodeRecord::decode(cluster, n, value) {
                Ok(rec) => {
                    trust::check_node_against_local(&rec, ch.local_nodes.values()).map(|()| true)
                }
                Err(_) => Ok(true),
            },
            Resource::Endpoint(ip) => match EndpointRecord::decode(cluster, *ip, value) {
                Ok(rec) => trust::check_endpoint_placement(
                    &rec,
                    self.entries
                        .contains_key(&(self.local.clone(), Resource::Endpoint(*ip))),
                    ch.local_node_ips.get(ip),
                    ch.remote_nodes.get(&(cluster.clone(), rec.node.clone())),
                ),
                Err(_) => Ok(true),
            },
            _ => Ok(true),
        }
    }

    /// Applies (or rejects) a remote record's value after checking it, then what depends on it.
    fn place(
        &mut self,
        cluster: ClusterName,
        resource: Resource,
        value: Vec<u8>,
        out: &mut Vec<ViewChange>,
    ) {
        let verdict = self.evaluate(&cluster, &resource, &value);
        let k = (cluster.clone(), resource.clone());
        let Some(ch) = self.checks.as_mut() else {
            return;
        };
        let applied_changed = match verdict {
            Ok(true) => {
                ch.rejected.remove(&k);
                if let Resource::Node(n) = &resource
                    && let Ok(rec) = NodeRecord::decode(&cluster, n, &value)
                {
                    ch.remote_nodes.insert((cluster.clone(), n.clone()), rec);
                }
                if self.entries.get(&k) != Some(&value) {
                    self.entries.insert(k, value.clone());
                    out.push(ViewChange::Upsert {
                        cluster: cluster.clone(),
                        resource: resource.clone(),
                        value,
                    });
                    true
                } else {
                    false
                }
            }
            verdict => {
                let refusal = verdict.err();
                let again = ch.rejected.get(&k).and_then(|(_, r)| r.as_ref());
                if let Some(r) = &refusal
                    && again != Some(r)
                {
                    ch.refused_total += 1;
                    tracing::warn!(remote = %cluster, refusal = %r, "remote record refused; skipped");
                }
                ch.rejected.insert(k.clone(), (value, refusal));
                if let Resource::Node(n) = &resource {
                    ch.remote_nodes.remove(&(cluster.clone(), n.clone()));
                }
                if self.entries.remove(&k).is_some() {
                    out.push(ViewChange::Delete {
                        cluster: cluster.clone(),
                        resource: resource.clone(),
                    });
                    true
                } else {
                    false
                }
            }
        };
        if let Resource::Node(n) = &resource
            && applied_changed
        {
            self.recheck_endpoints_of(&cluster, n, out);
        }
    }

    /// Checks again a remote record already seen (applied or rejected).
    fn recheck(&mut self, cluster: &ClusterName, resource: &Resource, out: &mut Vec<ViewChange>) {
        let k = (cluster.clone(), resource.clone());
        let value = match (self.entries.get(&k), &self.checks) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(ch)) => ch.rejected.get(&k).map(|(v, _)| v.clone()),
            (None, None) => None,
        };
        if let Some(v) = value {
            self.place(k.0, k.1, v, out);
        }
    }

    fn recheck_endpoints_of(
        &mut self,
        cluster: &ClusterName,
        node: &NodeName,
        out: &mut Vec<ViewChange>,
    ) {
        let ips: Vec<IpAddr> = self
            .checks
            .as_ref()
            .and_then(|ch| ch.eps_of_node.get(&(cluster.clone(), node.clone())))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for ip in ips {
            self.recheck(cluster, &Resource::Endpoint(ip), out);
        }
    }

    /// Remote endpoints at `ip`, of every remote.
    fn recheck_remote_ip(&mut self, ip: IpAddr, out: &mut Vec<ViewChange>) {
        let remotes: Vec<ClusterName> = self
            .checks
            .as_ref()
            .map(|ch| ch.trust.remotes.keys().cloned().collect())
            .unwrap_or_default();
        for r in remotes {
            self.recheck(&r, &Resource::Endpoint(ip), out);
        }
    }

    /// Keeps the endpoint-by-node index of a remote endpoint (`value` `None`: deleted).
    fn index_endpoint(&mut self, cluster: &ClusterName, ip: IpAddr, value: Option<&[u8]>) {
        let Some(ch) = self.checks.as_mut() else {
            return;
        };
        let k = (cluster.clone(), ip);
        if let Some(old) = ch.ep_node.remove(&k)
            && let Some(s) = ch.eps_of_node.get_mut(&(cluster.clone(), old.clone()))
        {
            s.remove(&ip);
            if s.is_empty() {
                ch.eps_of_node.remove(&(cluster.clone(), old));
            }
        }
        if let Some(rec) = value.and_then(|v| EndpointRecord::decode(cluster, ip, v).ok()) {
            ch.eps_of_node
                .entry((cluster.clone(), rec.node.clone()))
                .or_default()
                .insert(ip);
            ch.ep_node.insert(k, rec.node);
        }
    }

    /// A remote record upserted: checked, then applied or rejected.
    fn remote_upsert(
        &mut self,
        cluster: ClusterName,
        resource: Resource,
        value: Vec<u8>,
        out: &mut Vec<ViewChange>,
    ) {
        self.held.remove(&(cluster.clone(), resource.clone()));
        if let Resource::Endpoint(ip) = &resource {
            self.index_endpoint(&cluster, *ip, Some(&value));
        }
        self.place(cluster, resource, value, out);
    }

    /// A remote record gone (its delete not held back).
    fn remote_remove(&mut self, k: (ClusterName, Resource), out: &mut Vec<ViewChange>) {
        if let Some(ch) = self.checks.as_mut() {
            ch.rejected.remove(&k);
            if let Resource::Node(n) = &k.1 {
                ch.remote_nodes.remove(&(k.0.clone(), n.clone()));
            }
        }
        if let Resource::Endpoint(ip) = &k.1 {
            self.index_endpoint(&k.0, *ip, None);
        }
        if self.entries.remove(&k).is_some() {
            out.push(ViewChange::Delete {
                cluster: k.0.clone(),
                resource: k.1.clone(),
            });
            if let Resource::Node(n) = &k.1 {
                self.recheck_endpoints_of(&k.0, n, out);
            }
        }
    }

    /// A local record changed (`None`: deleted): remote records it may conflict with are
    /// checked again.
    fn local_changed(
        &mut self,
        resource: &Resource,
        value: Option<&[u8]>,
        out: &mut Vec<ViewChange>,
    ) {
        let local = self.local.clone();
        match resource {
            Resource::Node(n) => {
                let Some(ch) = self.checks.as_mut() else {
                    return;
                };
                let mut touched: Vec<IpAddr> = Vec::new();
                if let Some(old) = ch.local_nodes.remove(n) {
                    for a in Self::addrs(&old) {
                        if ch.local_node_ips.get(&a) == Some(n) {
                            ch.local_node_ips.remove(&a);
                        }
                        touched.push(a);
                    }
                }
                if let Some(rec) = value.and_then(|v| NodeRecord::decode(&local, n, v).ok()) {
                    for a in Self::addrs(&rec) {
                        ch.local_node_ips.entry(a).or_insert_with(|| n.clone());
                        touched.push(a);
                    }
                    ch.local_nodes.insert(n.clone(), rec);
                }
                let remote_nodes: Vec<(ClusterName, Resource)> = self
                    .entries
                    .keys()
                    .chain(ch.rejected.keys())
                    .filter(|(c, r)| *c != local && matches!(r, Resource::Node(_)))
                    .cloned()
                    .collect();
                for (c, r) in remote_nodes {
                    self.recheck(&c, &r, out);
                }
                for a in touched {
                    self.recheck_remote_ip(a, out);
                }
            }
            Resource::Endpoint(ip) => self.recheck_remote_ip(*ip, out),
            _ => {}
        }
    }

    /// Applies one reflector event; returns the changes for reconcilers.
    pub fn apply(&mut self, ev: ReflectorEvent<ViewKey, Vec<u8>>) -> Vec<ViewChange> {
        let mut out = Vec::new();
        match ev {
            ReflectorEvent::Upsert { key, value } => match key {
                ViewKey::Entry { cluster, resource }
                    if self.checks.is_some() && cluster != self.local =>
                {
                    self.remote_upsert(cluster, resource, value, &mut out);
                }
                ViewKey::Entry { cluster, resource } => {
                    let k = (cluster.clone(), resource.clone());
                    self.held.remove(&k);
                    self.entries.insert(k, value.clone());
                    out.push(ViewChange::Upsert {
                        cluster,
                        resource: resource.clone(),
                        value: value.clone(),
                    });
                    if self.checks.is_some() {
                        self.local_changed(&resource, Some(&value), &mut out);
                    }
                }
                ViewKey::Synced(r) => {
                    if let Ok(v) = serde_json::from_slice(&value) {
                        let first = self.synced.insert(r.clone(), v).is_none();
                        if first {
                            let held: Vec<_> =
                                self.held.iter().filter(|(c, _)| *c == r).cloned().collect();
                            for k in held {
                                self.held.remove(&k);
                                if self.checks.is_some() {
                                    self.remote_remove(k, &mut out);
                                } else if self.entries.remove(&k).is_some() {
                                    out.push(ViewChange::Delete {
                                        cluster: k.0,
                                        resource: k.1,
                                    });
                                }
                            }
                            out.push(ViewChange::RemoteSynced(r));
                        }
                    }
                }
                ViewKey::Status(r) => {
                    if let Ok(v) = serde_json::from_slice(&value) {
                        self.status.insert(r, v);
                    }
                }
            },
            ReflectorEvent::Delete { key, .. } => match key {
                ViewKey::Entry { cluster, resource } => {
                    let k = (cluster.clone(), resource.clone());
                    let remote = cluster != self.local;
                    if remote && self.checks.is_some() && !self.entries.contains_key(&k) {
                        // Never applied (refused or waiting): nothing to hold back.
                        self.remote_remove(k, &mut out);
                    } else if remote && !self.synced.contains_key(&cluster) {
                        tracing::info!(remote = %cluster, %resource, "remote not synced yet; delete held back");
                        self.held.insert(k);
                    } else if remote && self.checks.is_some() {
                        self.remote_remove(k, &mut out);
                    } else if self.entries.remove(&k).is_some() {
                        out.push(ViewChange::Delete {
                            cluster,
                            resource: resource.clone(),
                        });
                        if self.checks.is_some() {
                            self.local_changed(&resource, None, &mut out);
                        }
                    }
                }
                ViewKey::Synced(r) => {
                    self.synced.remove(&r);
                }
                ViewKey::Status(r) => {
                    self.status.remove(&r);
                }
            },
            ReflectorEvent::Synced { .. } => self.listed = true,
        }
        // Any event may have changed what services() derives from (entries, and the checks'
        // state behind them): the next read derives again.
        self.generation += 1;
        out
    }

    /// Changes with every event applied: what was derived from the state at one generation
    /// holds until it moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The local etcd has been listed once.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The remote's mirror has its synced marker.
    pub fn is_synced(&self, remote: &ClusterName) -> bool {
        self.synced.contains_key(remote)
    }

    pub fn synced(&self, remote: &ClusterName) -> Option<&SyncedValue> {
        self.synced.get(remote)
    }

    pub fn mirror_status(&self, remote: &ClusterName) -> Option<&MirrorStatusValue> {
        self.status.get(remote)
    }

    /// Entries of every cluster: (cluster, resource, raw JSON value).
    pub fn entries(&self) -> impl Iterator<Item = (&ClusterName, &Resource, &[u8])> {
        self.entries.iter().map(|((c, r), v)| (c, r, v.as_slice()))
    }

    /// Deletes held back for remotes that have not synced.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Node records of every cluster, labelled by their `cluster` field.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.entries()
            .filter_map(|(c, r, v)| match r {
                Resource::Node(n) => NodeRecord::decode(c, n, v).ok(),
                _ => None,
            })
            .collect()
    }

    /// How many entries of `kind` each cluster has.
    pub fn count(&self, cluster: &ClusterName, kind: ResourceKind) -> usize {
        self.entries
            .keys()
            .filter(|(c, r)| c == cluster && r.kind() == kind)
            .count()
    }

    /// Endpoint (IP cache) records of every cluster, labelled by their `cluster` field.
    pub fn endpoints(&self) -> Vec<EndpointRecord> {
        self.entries()
            .filter_map(|(c, r, v)| match r {
                Resource::Endpoint(ip) => EndpointRecord::decode(c, *ip, v).ok(),
                _ => None,
            })
            .collect()
    }

    /// Service records of every cluster (backends labelled by cluster): those derived from
    /// Service objects and the endpoints that exist, and written `services/` records where no
    /// object of the same cluster and name exists.
    pub fn services(&self) -> Arc<Vec<ServiceRecord>> {
        let mut cache = self
            .services_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((g, s)) = cache.as_ref()
            && *g == self.generation
        {
            return s.clone();
        }
        let s = Arc::new(self.derive_services());
        *cache = Some((self.generation, s.clone()));
        s
    }

    fn derive_services(&self) -> Vec<ServiceRecord> {
        let mut ctl = crate::objects::ServiceController::new();
        for (c, r, v) in self.entries() {
            if matches!(
                r,
                Resource::Object(_) | Resource::Endpoint(_) | Resource::Identity(_)
            ) {
                ctl.upsert(c, r, v);
            }
        }
        let mut out: Vec<ServiceRecord> = ctl.records().cloned().collect();
        let derived: BTreeSet<(ClusterName, ServiceKey)> = out
            .iter()
            .map(|r| (r.cluster.clone(), r.service.clone()))
            .collect();
        out.extend(self.entries().filter_map(|(c, r, v)| match r {
            Resource::Service(s) if !derived.contains(&(c.clone(), s.clone())) => {
                ServiceRecord::decode(c, s, v).ok()
            }
            _ => None,
        }));
        out
    }

    /// The local cluster's services as served here: a global one with the backends of every
    /// cluster that marks the same namespace/name global.
    pub fn merged_services(&self) -> Vec<MergedService> {
        let all = self.services();
        all.iter()
            .filter(|s| s.cluster == self.local)
            .map(|l| merge_global(l, all.iter().filter(|r| r.service == l.service)))
            .collect()
    }

    /// Every backend of a global service, in every cluster that marks it global.
    pub fn global_backends(&self, service: &ServiceKey) -> Vec<Backend> {
        let mut out: Vec<Backend> = self
            .services()
            .iter()
            .filter(|s| s.global && &s.service == service)
            .flat_map(|s| s.backends.iter().cloned())
            .collect();
        out.sort();
        out
    }
}

/// The merged view of a node agent, kept current by one reflector on the local etcd.
/// Dropping it stops the reflector.
#[derive(Debug)]
pub struct MergedView {
    state: Arc<Mutex<MergedState>>,
    version: watch::Receiver<u64>,
    reflector: Reflector,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MergedView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MergedView {
    /// Starts watching `ironmesh/v1/` in the local etcd for `local`'s state and the mirrors
    /// of `remotes`. `changes` (if any) receives every change in order (for reconcilers).
    ///
    /// The remotes' records are checked for their shape only; a node agent uses
    /// [`MergedView::spawn_checked`], which also checks them against what each remote may claim.
    pub fn spawn(
        local_store: KvStore,
        local: ClusterName,
        remotes: impl IntoIterator<Item = ClusterName>,
        probe_interval: Duration,
        changes: Option<tokio::sync::mpsc::UnboundedSender<ViewChange>>,
    ) -> Self {
        let decoder = MergedDecoder {
            local: local.clone(),
            remotes: remotes.into_iter().collect(),
        };
        Self::spawn_state(
            local_store,
            decoder,
            MergedState::new(local),
            probe_interval,
            changes,
        )
    }

    /// As [`MergedView::spawn`], for the remotes of `trust`, whose records are applied only
    /// once checked against their claims and the local state ([`MergedState::checked`]).
    pub fn spawn_checked(
        local_store: KvStore,
        trust: Trust,
        probe_interval: Duration,
        changes: Option<tokio::sync::mpsc::UnboundedSender<ViewChange>>,
    ) -> Self {
        let decoder = MergedDecoder {
            local: trust.local.clone(),
            remotes: trust.remotes.keys().cloned().collect(),
        };
        Self::spawn_state(
            local_store,
            decoder,
            MergedState::checked(trust),
            probe_interval,
            changes,
        )
    }

    fn spawn_state(
        local_store: KvStore,
        decoder: MergedDecoder,
        state: MergedState,
        probe_interval: Duration,
        changes: Option<tokio::sync::mpsc::UnboundedSender<ViewChange>>,
    ) -> Self {
        let mut cfg = ReflectorConfig::new(format!("{ROOT}{VERSION}/"));
        cfg.probe_interval = probe_interval;
        let (reflector, mut rx) = Reflector::spawn(local_store, cfg, decoder);
        let state = Arc::new(Mutex::new(state));
        let (vtx, version) = watch::channel(0u64);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let out = st.lock().expect("view lock").apply(ev);
                if let Some(tx) = &changes {
                    for c in out {
                        let _ = tx.send(c);
                    }
                }
                vtx.send_modify(|v| *v += 1);
            }
        });
        Self {
            state,
            version,
            reflector,
            task,
        }
    }

    /// Reads the state under its lock.
    pub fn with<T>(&self, f: impl FnOnce(&MergedState) -> T) -> T {
        f(&self.state.lock().expect("view lock"))
    }

    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.with(MergedState::nodes)
    }

    /// The local etcd watch's own status.
    pub fn reflector_status(&self) -> ReflectorStatus {
        self.reflector.status()
    }

    /// Waits until `pred` holds (checked after each change), at most `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&MergedState) -> bool,
    ) -> bool {
        let mut v = self.version.clone();
        let wait = async {
            loop {
                if self.with(&mut pred) {
                    return;
                }
                if v.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> ClusterName {
        s.parse().unwrap()
    }

    fn dec() -> MergedDecoder {
        MergedDecoder {
            local: c("red"),
            remotes: [c("green")].into(),
        }
    }

    fn node_ev(cluster: &str, name: &str, put: bool) -> ReflectorEvent<ViewKey, Vec<u8>> {
        let r = NodeRecord::new(c(cluster), name.parse().unwrap());
        let key = ViewKey::Entry {
            cluster: c(cluster),
            resource: Resource::Node(name.parse().unwrap()),
        };
        if put {
            ReflectorEvent::Upsert {
                key,
                value: r.encode(),
            }
        } else {
            ReflectorEvent::Delete {
                key,
                last: r.encode(),
            }
        }
    }

    fn synced_ev(remote: &str) -> ReflectorEvent<ViewKey, Vec<u8>> {
        ReflectorEvent::Upsert {
            key: ViewKey::Synced(c(remote)),
            value: br#"{"remote_revision":7,"entries":1,"at_unix_ms":1}"#.to_vec(),
        }
    }

    #[test]
    fn decoder_scopes() {
        let d = dec();
        assert!(d.decode_key(b"ironmesh/v1/clusters/red/nodes/a").is_ok());
        assert!(d.decode_key(b"ironmesh/v1/mirror/green/nodes/a").is_ok());
        assert_eq!(
            d.decode_key(b"ironmesh/v1/mirror/green/synced").unwrap(),
            ViewKey::Synced(c("green"))
        );
        for other in [
            &b"ironmesh/v1/mirror/blue/nodes/a"[..],
            b"ironmesh/v1/clusters/green/nodes/a",
            b"ironmesh/v1/clusters/red/mirror-leader/green",
            b"ironmesh/v2/x",
        ] {
            assert!(d.ignore(other), "{}", String::from_utf8_lossy(other));
            assert!(d.decode_key(other).is_err());
        }
        // A malformed key in our own scope is not ignored (it gets logged).
        assert!(!d.ignore(b"ironmesh/v1/clusters/red/nodes/Bad_Name"));
    }

    #[test]
    fn merges_by_cluster_and_holds_remote_deletes_until_synced() {
        let mut s = MergedState::new(c("red"));
        s.apply(node_ev("red", "r1", true));
        s.apply(node_ev("green", "g1", true));
        s.apply(node_ev("green", "g2", true));
        let mut names: Vec<String> = s
            .nodes()
            .iter()
            .map(|n| format!("{}/{}", n.cluster, n.name))
            .collect();
        names.sort();
        assert_eq!(names, ["green/g1", "green/g2", "red/r1"]);

        // green has no synced marker: its deletes are held, local deletes are not.
        assert!(s.apply(node_ev("green", "g1", false)).is_empty());
        assert_eq!(s.held(), 1);
        assert_eq!(s.nodes().len(), 3);
        assert_eq!(s.apply(node_ev("red", "r1", false)).len(), 1);

        // The marker arrives: the held delete is applied.
        let out = s.apply(synced_ev("green"));
        assert_eq!(
            out,
            vec![
                ViewChange::Delete {
                    cluster: c("green"),
                    resource: Resource::Node("g1".parse().unwrap())
                },
                ViewChange::RemoteSynced(c("green"))
            ]
        );
        assert_eq!(s.held(), 0);
        // Now synced: deletes apply at once.
        assert_eq!(s.apply(node_ev("green", "g2", false)).len(), 1);
        assert!(s.nodes().is_empty());
    }

    #[test]
    fn a_held_entry_that_comes_back_is_kept() {
        let mut s = MergedState::new(c("red"));
        s.apply(node_ev("green", "g1", true));
        s.apply(node_ev("green", "g1", false));
        s.apply(node_ev("green", "g1", true));
        s.apply(synced_ev("green"));
        assert_eq!(s.nodes().len(), 1);
    }

    fn svc_ev(cluster: &str, backend: &str, global: bool) -> ReflectorEvent<ViewKey, Vec<u8>> {
        let v = format!(
            r#"{{"service":{{"namespace":"shop","name":"web"}},"cluster":"{cluster}","vips":["172.20.0.10"],"ports":[{{"port":80,"protocol":"tcp"}}],"backends":[{{"ip":"{backend}","port":8080}}],"global":{global},"affinity":"local"}}"#
        );
        ReflectorEvent::Upsert {
            key: ViewKey::Entry {
                cluster: c(cluster),
                resource: Resource::Service("shop/web".parse().unwrap()),
            },
            value: v.into_bytes(),
        }
    }

    #[test]
    fn services_are_derived_once_per_change_and_follow_every_change() {
        let mut s = MergedState::new(c("red"));
        s.apply(svc_ev("red", "10.1.0.5", false));
        let a = s.services();
        let b = s.services();
        assert!(Arc::ptr_eq(&a, &b), "no change: the same derivation");
        assert_eq!(a[0].backends[0].ip.to_string(), "10.1.0.5");
        s.apply(svc_ev("red", "10.1.0.6", false));
        let c2 = s.services();
        assert!(!Arc::ptr_eq(&a, &c2));
        assert_eq!(c2[0].backends[0].ip.to_string(), "10.1.0.6");
        s.apply(ReflectorEvent::Delete {
            key: ViewKey::Entry {
                cluster: c("red"),
                resource: Resource::Service("shop/web".parse().unwrap()),
            },
            last: Vec::new(),
        });
        assert!(s.services().is_empty());
    }

    #[test]
    fn services_merge_across_clusters_labelled() {
        let mut s = MergedState::new(c("red"));
        s.apply(svc_ev("red", "10.1.0.5", true));
        s.apply(svc_ev("green", "10.2.0.5", true));
        let web: ServiceKey = "shop/web".parse().unwrap();
        let all: Vec<String> = s
            .global_backends(&web)
            .iter()
            .map(|b| format!("{}/{}", b.cluster.as_ref().unwrap(), b.ip))
            .collect();
        assert_eq!(all, ["red/10.1.0.5", "green/10.2.0.5"]);
        let merged = s.merged_services();
        assert_eq!(merged.len(), 1, "only the local record is served");
        assert_eq!(merged[0].backends.len(), 2);
        // Green stops marking it global: its backends leave red's service.
        s.apply(svc_ev("green", "10.2.0.5", false));
        assert_eq!(s.merged_services()[0].backends.len(), 1);
        assert_eq!(s.count(&c("green"), ResourceKind::Services), 1);
    }

    fn trust() -> Trust {
        use super::super::trust::RemoteClaims;
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<_>>();
        Trust {
            local: c("red"),
            local_id: common::ClusterId::new(1).unwrap(),
            layout: common::IdentityLayout::default(),
            local_pools: nets(&["10.1.0.0/16"]),
            remotes: [(
                c("green"),
                RemoteClaims {
                    name: c("green"),
                    id: common::ClusterId::new(2).unwrap(),
                    pod_cidrs: nets(&["10.2.0.0/16"]),
                    node_cidrs: nets(&["198.51.100.0/24"]),
                    service_cidrs: nets(&["10.96.0.0/16"]),
                },
            )]
            .into(),
        }
    }

    fn node_at(
        cluster: &str,
        name: &str,
        ip: &str,
        cidr: &str,
    ) -> ReflectorEvent<ViewKey, Vec<u8>> {
        let mut r = NodeRecord::new(c(cluster), name.parse().unwrap());
        r.ipv4 = Some(ip.parse().unwrap());
        r.pod_cidrs = vec![cidr.parse().unwrap()];
        ReflectorEvent::Upsert {
            key: ViewKey::Entry {
                cluster: c(cluster),
                resource: Resource::Node(name.parse().unwrap()),
            },
            value: r.encode(),
        }
    }

    fn ep_at(
        cluster: &str,
        ip: &str,
        node: &str,
        identity: u32,
    ) -> ReflectorEvent<ViewKey, Vec<u8>> {
        let v = format!(
            r#"{{"ip":"{ip}","cluster":"{cluster}","node":"{node}","identity":{identity}}}"#
        );
        ReflectorEvent::Upsert {
            key: ViewKey::Entry {
                cluster: c(cluster),
                resource: Resource::Endpoint(ip.parse().unwrap()),
            },
            value: v.into_bytes(),
        }
    }

    const GREEN_ID: u32 = (2 << 16) | 300;

    #[test]
    fn checked_view_applies_good_records_and_lists_refused_ones() {
        let mut s = MergedState::checked(trust());
        assert_eq!(
            s.apply(node_at("red", "r1", "192.0.2.11", "10.1.1.0/24"))
                .len(),
            1
        );
        // An endpoint before its node waits (the mirror lists endpoints first).
        assert!(
            s.apply(ep_at("green", "10.2.1.5", "g1", GREEN_ID))
                .is_empty()
        );
        assert_eq!(s.waiting(&c("green")), 1);
        let out = s.apply(node_at("green", "g1", "198.51.100.11", "10.2.1.0/24"));
        assert_eq!(out.len(), 2, "the node, then its waiting endpoint: {out:?}");
        assert_eq!(s.endpoints().len(), 1);
        // Bad records: none applied, each listed.
        assert!(
            s.apply(node_at("green", "evil", "198.51.100.66", "0.0.0.0/0"))
                .is_empty()
        );
        assert!(s.apply(ep_at("green", "10.2.1.6", "g1", 1)).is_empty());
        assert!(
            s.apply(ep_at("green", "10.2.9.6", "g1", GREEN_ID))
                .is_empty()
        );
        let why: Vec<String> = s
            .refusals(&c("green"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w == "node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)"),
            "{why:?}"
        );
        assert_eq!(s.refused_total(), 3);
        assert_eq!(s.nodes().len(), 2);
        // Refused again for the same reason: counted once.
        s.apply(node_at("green", "evil", "198.51.100.66", "0.0.0.0/0"));
        assert_eq!(s.refused_total(), 3);
        // A good node turning bad leaves the view, with its endpoints.
        let out = s.apply(node_at("green", "g1", "198.51.100.11", "10.1.1.0/24"));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(s.endpoints().is_empty());
        // Deleting a refused record clears it (held-back deletes are for applied ones).
        s.apply(ReflectorEvent::Delete {
            key: ViewKey::Entry {
                cluster: c("green"),
                resource: Resource::Node("evil".parse().unwrap()),
            },
            last: vec![],
        });
        assert!(
            !s.refusals(&c("green"))
                .iter()
                .any(|r| r.record == "node evil")
        );
    }

    #[test]
    fn local_state_wins_over_remote_records() {
        let mut s = MergedState::checked(trust());
        s.apply(node_at("green", "g1", "198.51.100.11", "10.2.1.0/24"));
        s.apply(ep_at("green", "10.2.1.5", "g1", GREEN_ID));
        assert_eq!(s.endpoints().len(), 1);
        // A local endpoint (or node) appears at the remote endpoint's IP: the remote one goes.
        let out = s.apply(ep_at("red", "10.2.1.5", "r1", (1 << 16) | 300));
        assert!(
            out.contains(&ViewChange::Delete {
                cluster: c("green"),
                resource: Resource::Endpoint("10.2.1.5".parse().unwrap())
            }),
            "{out:?}"
        );
        assert_eq!(s.endpoints().len(), 1);
        assert_eq!(s.endpoints()[0].cluster, c("red"));
        // A local node with the remote node's PodCIDR (no local pools were checked for it).
        s.apply(node_at("red", "r9", "192.0.2.19", "10.2.1.0/24"));
        assert!(
            s.nodes().iter().all(|n| n.cluster == c("red")),
            "{:?}",
            s.nodes()
        );
        // Gone again: the remote node is back.
        s.apply(ReflectorEvent::Delete {
            key: ViewKey::Entry {
                cluster: c("red"),
                resource: Resource::Node("r9".parse().unwrap()),
            },
            last: vec![],
        });
        assert_eq!(s.nodes().len(), 1);
    }

    #[test]
    fn decoder_rejects_records_of_another_cluster() {
        let d = dec();
        let key = ViewKey::Entry {
            cluster: c("green"),
            resource: Resource::Endpoint("10.1.0.7".parse().unwrap()),
        };
        let red_ep = br#"{"ip":"10.1.0.7","cluster":"red","node":"r1","identity":65792}"#;
        assert!(d.decode_value(&key, red_ep).is_err());
        let green_ep = br#"{"ip":"10.1.0.7","cluster":"green","node":"g1","identity":131328}"#;
        assert!(d.decode_value(&key, green_ep).is_ok());
    }
}
