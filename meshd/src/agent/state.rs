//! What the agent shares with its API and metrics: the parts that exist once the local etcd
//! answered (merged view, mirror controllers' status, the registered record), and why not yet.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use api::mesh as pb;
use common::{ClusterId, ClusterName, NodeName};
use tokio::sync::watch;

use super::convert;
use super::sinks::EncryptionStatusSource;
use crate::federation::{MergedView, MirrorStatus};
use crate::kvstore::{KvStore, SyncState};
use crate::nodes::NodeRecord;

#[derive(Debug, Default)]
struct Inner {
    /// Why the local etcd is not (yet) usable.
    etcd_error: Option<String>,
    view: Option<Arc<MergedView>>,
    mirrors: BTreeMap<ClusterName, watch::Receiver<MirrorStatus>>,
    record: Option<NodeRecord>,
    /// The local etcd, once connected (policy writes from the API).
    store: Option<KvStore>,
    events: Option<std::sync::Arc<crate::events::Recorder>>,
    encryption: Option<EncryptionStatusSource>,
    /// Why there is no encryption status (mode off, not started yet, device missing).
    encryption_off: String,
    /// Remotes refused at start (`federation::admit`), with the reason.
    refused_remotes: BTreeMap<ClusterName, String>,
    /// The node registration's status (its lease).
    lease: Option<watch::Receiver<crate::nodes::RegistrationStatus>>,
    /// The node's flow records (`datapath.flows`).
    flows: Option<Arc<super::flows::FlowStore>>,
}

/// The agent's state as the API and metrics read it.
#[derive(Debug)]
pub struct Shared {
    pub node: NodeName,
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub etcd_endpoints: String,
    pub remotes: Vec<(ClusterName, ClusterId)>,
    /// `mesh.service_cidrs`: the ClusterIP ranges of applied Services.
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// `mesh.pod_cidr_pools`: IPPools may not overlap them.
    pub pod_pools: Vec<ipnet::IpNet>,
    observe: configs::Observe,
    started: Instant,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(
        node: NodeName,
        cluster: ClusterName,
        cluster_id: ClusterId,
        etcd_endpoints: String,
        remotes: Vec<(ClusterName, ClusterId)>,
    ) -> Self {
        Shared {
            node,
            cluster,
            cluster_id,
            etcd_endpoints,
            remotes,
            service_cidrs: Vec::new(),
            pod_pools: Vec::new(),
            observe: configs::Observe::default(),
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Sets `mesh.service_cidrs` (the API allocates ClusterIPs from them).
    pub fn with_service_cidrs(mut self, cidrs: Vec<ipnet::IpNet>) -> Self {
        self.service_cidrs = cidrs;
        self
    }

    /// Sets `mesh.pod_cidr_pools` (applied IPPools are checked against them).
    pub fn with_pod_pools(mut self, pools: Vec<ipnet::IpNet>) -> Self {
        self.pod_pools = pools;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_etcd_error(&self, e: Option<String>) {
        self.lock().etcd_error = e;
    }

    pub fn set_store(&self, s: KvStore) {
        let rec = crate::events::Recorder::new(s.clone(), self.cluster.clone(), self.node.clone());
        let mut g = self.lock();
        g.events = Some(std::sync::Arc::new(rec));
        g.store = Some(s);
    }

    /// This meshd's event recorder (once it reached its etcd).
    pub fn events(&self) -> Option<std::sync::Arc<crate::events::Recorder>> {
        self.lock().events.clone()
    }

    /// `[observe]`: whether this meshd relays, and the port nodes serve their flows on.
    pub fn with_observe(mut self, o: configs::Observe) -> Self {
        self.observe = o;
        self
    }

    pub fn observe(&self) -> configs::Observe {
        self.observe.clone()
    }

    /// Node records of every cluster in the merged view (none before it exists).
    pub fn node_records(&self) -> Vec<crate::nodes::NodeRecord> {
        self.view()
            .map(|v| v.with(|st| st.nodes()))
            .unwrap_or_default()
    }

    pub fn set_flows(&self, f: Option<Arc<super::flows::FlowStore>>) {
        self.lock().flows = f;
    }

    pub fn flows(&self) -> Option<Arc<super::flows::FlowStore>> {
        self.lock().flows.clone()
    }

    pub fn set_lease(&self, l: Option<watch::Receiver<crate::nodes::RegistrationStatus>>) {
        self.lock().lease = l;
    }

    pub fn store(&self) -> Option<KvStore> {
        self.lock().store.clone()
    }

    /// This cluster's policies from the merged view: (namespace, name, JSON).
    pub fn policies(&self) -> Vec<pb::Policy> {
        let Some(v) = self.view() else {
            return Vec::new();
        };
        v.with(|st| {
            st.entries()
                .filter_map(|(c, r, value)| match r {
                    crate::schema::Resource::Policy(k) if *c == self.cluster => Some(pb::Policy {
                        namespace: k.namespace().to_string(),
                        name: k.name().to_string(),
                        json: String::from_utf8_lossy(value).into_owned(),
                    }),
                    _ => None,
                })
                .collect()
        })
    }

    pub fn set_view(&self, v: Arc<MergedView>) {
        self.lock().view = Some(v);
    }

    pub fn add_mirror(&self, remote: ClusterName, status: watch::Receiver<MirrorStatus>) {
        self.lock().mirrors.insert(remote, status);
    }

    /// `remote` is refused as a whole (neither mirrored nor read): its status says why.
    pub fn refuse_remote(&self, remote: ClusterName, why: String) {
        self.lock().refused_remotes.insert(remote, why);
    }

    pub fn set_record(&self, r: Option<NodeRecord>) {
        self.lock().record = r;
    }

    pub fn set_encryption(&self, e: Option<EncryptionStatusSource>) {
        self.lock().encryption = e;
    }

    pub fn encryption(&self) -> Option<EncryptionStatusSource> {
        self.lock().encryption.clone()
    }

    pub fn set_encryption_off(&self, why: impl Into<String>) {
        self.lock().encryption_off = why.into();
    }

    pub fn encryption_off(&self) -> String {
        self.lock().encryption_off.clone()
    }

    fn view(&self) -> Option<Arc<MergedView>> {
        self.lock().view.clone()
    }

    /// This cluster's encryption rollout as the merged view holds it.
    pub fn rollout(&self) -> Option<crate::rollout::Published> {
        self.view()
            .map(|v| v.with(|st| crate::rollout::Published::read(st, &self.cluster)))
    }

    /// The whole status, as the API returns it (and metrics render it).
    pub fn status(&self) -> pb::StatusResponse {
        let (etcd_members, lease_ttl_remaining_ms) = {
            let g = self.lock();
            let members = g
                .store
                .as_ref()
                .map(|s| s.members().iter().map(convert::etcd_member).collect())
                .unwrap_or_default();
            let lease = g
                .lease
                .as_ref()
                .and_then(|l| l.borrow().lease_expires)
                .map(|t| {
                    let now = Instant::now();
                    if t >= now {
                        (t - now).as_millis() as i64
                    } else {
                        -((now - t).as_millis() as i64)
                    }
                });
            (members, lease)
        };
        let (etcd_error, view, mirrors, record, refused_remotes) = {
            let g = self.lock();
            let mirrors: BTreeMap<ClusterName, MirrorStatus> = g
                .mirrors
                .iter()
                .map(|(c, rx)| (c.clone(), rx.borrow().clone()))
                .collect();
            (
                g.etcd_error.clone(),
                g.view.clone(),
                mirrors,
                g.record.clone(),
                g.refused_remotes.clone(),
            )
        };
        let reflector = view.as_ref().map(|v| v.reflector_status());
        let etcd_connected = reflector
            .as_ref()
            .is_some_and(|r| r.state == SyncState::Synced);
        let etcd_error = match (&reflector, etcd_error) {
            (_, Some(e)) => e,
            (Some(r), None) if !etcd_connected => r
                .last_error
                .clone()
                .unwrap_or_else(|| "listing the local etcd".into()),
            _ => String::new(),
        };
        let remotes_of = |st: Option<&crate::federation::MergedState>| {
            self.remotes
                .iter()
                .map(|(name, id)| {
                    let mut r = convert::remote_status(name, *id, st, mirrors.get(name));
                    if let Some(why) = refused_remotes.get(name) {
                        r.error = format!("remote refused (neither mirrored nor read): {why}");
                        r.refused = vec![r.error.clone()];
                    }
                    r
                })
                .collect::<Vec<_>>()
        };
        let (local_counts, remotes) = match &view {
            Some(v) => v.with(|st| {
                (
                    Some(convert::counts(st, &self.cluster)),
                    remotes_of(Some(st)),
                )
            }),
            None => (None, remotes_of(None)),
        };
        pb::StatusResponse {
            node: self.node.to_string(),
            cluster: self.cluster.to_string(),
            cluster_id: u32::from(self.cluster_id.get()),
            etcd_connected,
            etcd_endpoints: self.etcd_endpoints.clone(),
            etcd_error,
            pod_cidrs: record
                .as_ref()
                .map(|r| r.pod_cidrs.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            ipv4: record
                .as_ref()
                .and_then(|r| r.ipv4)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            ipv6: record
                .as_ref()
                .and_then(|r| r.ipv6)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            registered: record.is_some(),
            local_counts,
            remotes,
            uptime_secs: self.started.elapsed().as_secs(),
            etcd_members,
            lease_ttl_remaining_ms: record.as_ref().and(lease_ttl_remaining_ms),
        }
    }

    pub fn nodes(&self) -> Vec<pb::Node> {
        self.view()
            .map(|v| {
                v.with(|st| {
                    st.nodes()
                        .iter()
                        .map(|n| convert::node(n, &self.cluster, &self.node))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    pub fn identities(&self) -> Vec<pb::Identity> {
        self.view()
            .map(|v| v.with(convert::identities))
            .unwrap_or_default()
    }

    pub fn services(&self) -> Vec<pb::Service> {
        self.view()
            .map(|v| v.with(|st| convert::services(st, &self.cluster)))
            .unwrap_or_default()
    }

    /// Endpoints (pods) of every cluster as Pod-shaped JSON (`ironctl get pods`).
    pub fn pods(&self, namespace: Option<&str>) -> Vec<serde_json::Value> {
        self.view()
            .map(|v| v.with(|st| convert::pods(st, namespace)))
            .unwrap_or_default()
    }

    /// The merged view exists (the local etcd answered once).
    pub fn ready(&self) -> bool {
        self.view().is_some()
    }
}
