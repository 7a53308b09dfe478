//! What a node agent sees: its own cluster's state and every remote's mirror, from the local
//! etcd only (one watch), merged into one view labelled by cluster.
//!
//! Remote-derived entries are not garbage-collected before the remote's `synced` marker
//! exists: a delete of a mirrored key seen while the marker is absent (a mirror being rebuilt,
//! a relist during which the marker is missing) is held back, and applied once the marker
//! appears if the key is still absent. So a restart or a mirror rebuild never drops state (and
//! the policy built on it) for a remote cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ClusterName, ServiceKey};
use tokio::sync::watch;

use super::mirror::{MirrorStatusValue, SyncedValue};
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
            } => *c == self.local && resource.kind().is_mirrored(),
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
                    Ok(Key::Resource { resource, .. }) if !resource.kind().is_mirrored()
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
        }
    }

    /// Applies one reflector event; returns the changes for reconcilers.
    pub fn apply(&mut self, ev: ReflectorEvent<ViewKey, Vec<u8>>) -> Vec<ViewChange> {
        let mut out = Vec::new();
        match ev {
            ReflectorEvent::Upsert { key, value } => match key {
                ViewKey::Entry { cluster, resource } => {
                    let k = (cluster.clone(), resource.clone());
                    self.held.remove(&k);
                    self.entries.insert(k, value.clone());
                    out.push(ViewChange::Upsert {
                        cluster,
                        resource,
                        value,
                    });
                }
                ViewKey::Synced(r) => {
                    if let Ok(v) = serde_json::from_slice(&value) {
                        let first = self.synced.insert(r.clone(), v).is_none();
                        if first {
                            let held: Vec<_> =
                                self.held.iter().filter(|(c, _)| *c == r).cloned().collect();
                            for k in held {
                                self.held.remove(&k);
                                if self.entries.remove(&k).is_some() {
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
                    if cluster != self.local && !self.synced.contains_key(&cluster) {
                        tracing::info!(remote = %cluster, %resource, "remote not synced yet; delete held back");
                        self.held.insert(k);
                    } else if self.entries.remove(&k).is_some() {
                        out.push(ViewChange::Delete { cluster, resource });
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
        out
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
    pub fn services(&self) -> Vec<ServiceRecord> {
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
            .into_iter()
            .filter(|s| s.global && &s.service == service)
            .flat_map(|s| s.backends)
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
        let mut cfg = ReflectorConfig::new(format!("{ROOT}{VERSION}/"));
        cfg.probe_interval = probe_interval;
        let (reflector, mut rx) = Reflector::spawn(local_store, cfg, decoder);
        let state = Arc::new(Mutex::new(MergedState::new(local)));
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
