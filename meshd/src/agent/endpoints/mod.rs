//! The node's local endpoints, from the CNI plugin's records (`mesh.cni_endpoints_dir`), and
//! their network policy.
//!
//! Every `poll` (and on each policy/identity change) the directory is read. A new or changed
//! record: its labels (pod name left out, cluster label added) get an identity with this
//! node's reference on it ([`crate::gc::IdentityRefs`]), its addresses are published as
//! endpoint records (pooled leases), and with a datapath the endpoint goes into the endpoints
//! map and the pod programs onto its host veth. A removed record undoes all of that. A bad
//! file is logged (path and why) and skipped; what it was before stays.
//!
//! A ledger (`<state_dir>/endpoints.json`) holds what was registered, so a restarted meshd
//! removes what went while it was away and re-registers the rest (new leases, programs
//! replaced without a gap). Policy is recomputed for every endpoint once the merged view has
//! listed etcd, and swapped in only where it changed; until then the pinned policies of the
//! previous run stay in force.

pub mod cni;
pub mod inputs;
mod ledger;
mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{ClusterId, ClusterName, Identity, IdentityLayout, NodeName};
use datapath::Endpoint;
use tokio::sync::watch;

use super::datapath_owner::ifindex;
use super::sinks::datapath::DatapathMaps;
use crate::endpoints::{EndpointPublisher, EndpointRecord};
use crate::federation::MergedView;
use crate::gc::IdentityRefs;
use crate::identity::IdentityAllocator;
use crate::kvstore::KvStore;
use crate::leases::{LeasePoolConfig, LeasedKeys};
use cni::CniEndpoint;
use inputs::InputsHandle;
pub use ledger::Tracked;

/// What the controller needs from the agent config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub layout: IdentityLayout,
    pub node: NodeName,
    /// The tunnel endpoint written into endpoint records (VXLAN mode).
    pub tunnel_endpoint: Option<IpAddr>,
    pub ledger: PathBuf,
    pub poll: Duration,
    pub lease_ttl_secs: i64,
    /// This node's PodCIDRs: a CNI record with an address outside them is refused. Empty
    /// (meshd allocates no PodCIDRs here): the CNI's own IPAM config is the only authority.
    pub pod_cidrs: watch::Receiver<Vec<ipnet::IpNet>>,
}

/// The running controller; stops when dropped.
#[derive(Debug)]
pub struct LocalEndpoints(tokio::task::JoinHandle<()>);

impl Drop for LocalEndpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Controller {
    s: Settings,
    alloc: IdentityAllocator,
    publisher: EndpointPublisher,
    dp: Option<DatapathMaps>,
    tracked: BTreeMap<String, Tracked>,
    /// Stems registered by this run (a ledger entry from before is re-registered once).
    fresh: BTreeSet<String>,
    bad_logged: BTreeMap<PathBuf, String>,
    /// Registrations failing (logged once per reason).
    failing: BTreeMap<PathBuf, String>,
    policy: policy::Applied,
}

impl LocalEndpoints {
    pub fn spawn(
        s: Settings,
        store: KvStore,
        dp: Option<DatapathMaps>,
        view: Arc<MergedView>,
        inputs: InputsHandle,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let alloc =
            IdentityAllocator::new(store.clone(), s.cluster.clone(), s.cluster_id, s.layout)
                .with_deadline(Duration::from_secs(5));
        let keys = LeasedKeys::new(store, LeasePoolConfig::new(s.lease_ttl_secs, 1000));
        let publisher = EndpointPublisher::new(s.cluster.clone(), s.node.clone(), keys);
        let tracked = ledger::load(&s.ledger);
        tracing::info!(dir = %s.dir.display(), known = tracked.len(), "watching CNI endpoint records");
        let mut c = Controller {
            s,
            alloc,
            publisher,
            dp,
            tracked,
            fresh: BTreeSet::new(),
            bad_logged: BTreeMap::new(),
            failing: BTreeMap::new(),
            policy: policy::Applied::default(),
        };
        let mut generation = inputs.generation.clone();
        Self(tokio::spawn(async move {
            loop {
                c.sync_files().await;
                if view.with(|v| v.listed()) {
                    c.apply_policy(&inputs);
                }
                tokio::select! {
                    _ = tokio::time::sleep(c.s.poll) => {}
                    r = generation.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
        }))
    }
}

impl Controller {
    fn save(&self) {
        if let Err(e) = ledger::save(&self.s.ledger, &self.tracked) {
            tracing::warn!(path = %self.s.ledger.display(), error = %e, "cannot write the endpoint ledger");
        }
    }

    async fn sync_files(&mut self) {
        let cidrs = self.s.pod_cidrs.borrow().clone();
        let scan = if cidrs.is_empty() {
            cni::scan(&self.s.dir)
        } else {
            cni::scan_within(&self.s.dir, &cidrs)
        };
        let scan = match scan {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.s.dir.display(), error = %e, "cannot read the CNI endpoint dir");
                return;
            }
        };
        for (path, why) in &scan.bad {
            if self.bad_logged.get(path) != Some(why) {
                tracing::warn!(path = %path.display(), why = %why, "skipping a bad CNI endpoint record");
            }
        }
        self.bad_logged = scan.bad;
        for (stem, rec) in scan.records {
            let same = self.tracked.get(&stem).is_some_and(|t| t.record == rec);
            if same && self.fresh.contains(&stem) {
                continue;
            }
            if let Err(why) = self.register(&stem, rec).await {
                let path = self.s.dir.join(format!("{stem}.json"));
                if self.failing.get(&path) != Some(&why) {
                    tracing::warn!(path = %path.display(), why = %why, "cannot register the endpoint; retrying");
                    self.failing.insert(path, why);
                }
            }
        }
        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|s| !self.s.dir.join(format!("{s}.json")).exists())
            .cloned()
            .collect();
        for stem in gone {
            if let Err(why) = self.unregister(&stem).await {
                tracing::warn!(endpoint = %stem, why = %why, "cannot remove the endpoint; retrying");
            }
        }
    }

    fn endpoint_id(&self, stem: &str) -> u32 {
        if let Some(t) = self.tracked.get(stem) {
            return t.endpoint_id;
        }
        let used: BTreeSet<u32> = self.tracked.values().map(|t| t.endpoint_id).collect();
        let mut id = ledger::hash_id(stem);
        while used.contains(&id) {
            id = id.wrapping_add(1).max(1);
        }
        id
    }

    async fn register(&mut self, stem: &str, rec: CniEndpoint) -> Result<(), String> {
        let labels = rec.identity_labels(&self.s.cluster)?;
        let refs = IdentityRefs::new(
            self.s.cluster.clone(),
            self.s.node.clone(),
            self.publisher.leases(),
        );
        let identity = refs
            .acquire(&self.alloc, &labels)
            .await
            .map_err(|e| format!("identity for {labels}: {e}"))?;
        let records: Vec<EndpointRecord> = rec
            .addresses
            .iter()
            .map(|ip| EndpointRecord {
                ip: *ip,
                cluster: self.s.cluster.clone(),
                node: self.s.node.clone(),
                identity,
                tunnel_endpoint: self.s.tunnel_endpoint,
                encrypt_key: 0,
                ports: rec.ports.clone(),
                pod: rec.pod_name(),
            })
            .collect();
        self.publisher
            .upsert(&records)
            .await
            .map_err(|e| format!("publishing the endpoint: {e}"))?;
        let id = self.endpoint_id(stem);
        let old = self.tracked.get(stem).cloned();
        if let Some(old) = &old {
            let dropped: Vec<IpAddr> = old
                .record
                .addresses
                .iter()
                .filter(|a| !rec.addresses.contains(a))
                .copied()
                .collect();
            if !dropped.is_empty() {
                self.publisher
                    .remove(&dropped)
                    .await
                    .map_err(|e| format!("removing old addresses: {e}"))?;
            }
        }
        if let Some(dp) = &self.dp {
            let ifindex = ifindex(&rec.host_ifname);
            if ifindex == 0 {
                return Err(format!("host veth {:?} does not exist", rec.host_ifname));
            }
            let ep = Endpoint {
                id,
                identity: identity.raw(),
                ifindex,
                addresses: rec.addresses.clone(),
            };
            let readd = old.as_ref().is_some_and(|o| {
                o.record
                    .addresses
                    .iter()
                    .any(|a| !rec.addresses.contains(a))
            });
            dp.with_mut(|d| -> Result<(), String> {
                if let (true, Some(o)) = (readd, &old) {
                    // Addresses changed: drop the old entries (and the policy: re-applied).
                    let old_ep = Endpoint {
                        addresses: o.record.addresses.clone(),
                        ..ep.clone()
                    };
                    d.remove_endpoint(&old_ep)
                        .map_err(|e| format!("endpoints map: {e}"))?;
                }
                d.upsert_endpoint(&ep)
                    .map_err(|e| format!("endpoints map: {e}"))?;
                d.attach(&rec.host_ifname)
                    .map_err(|e| format!("attaching to {}: {e}", rec.host_ifname))
            })?;
        }
        if old.as_ref().is_some_and(|o| {
            o.record
                .addresses
                .iter()
                .any(|a| !rec.addresses.contains(a))
        }) {
            self.policy.forget(id);
        }
        tracing::info!(endpoint = %stem, identity = identity.raw(), addresses = ?rec.addresses,
            host_if = %rec.host_ifname, id, "endpoint registered");
        let old_identity = old.map(|o| o.identity);
        self.tracked.insert(
            stem.to_string(),
            Tracked {
                record: rec,
                identity: identity.raw(),
                endpoint_id: id,
            },
        );
        self.fresh.insert(stem.to_string());
        self.failing
            .remove(&self.s.dir.join(format!("{stem}.json")));
        self.policy.dirty = true;
        self.save();
        if let Some(o) = old_identity.filter(|o| *o != identity.raw()) {
            self.release(o).await;
        }
        Ok(())
    }

    /// Drops this node's reference on an identity no tracked endpoint uses any more.
    async fn release(&self, identity: u32) {
        if self.tracked.values().any(|t| t.identity == identity) {
            return;
        }
        let Ok(id) = Identity::from_raw(identity) else {
            return;
        };
        let refs = IdentityRefs::new(
            self.s.cluster.clone(),
            self.s.node.clone(),
            self.publisher.leases(),
        );
        if let Err(e) = refs.release(id).await {
            tracing::warn!(identity, error = %e, "cannot drop the identity reference; its lease will");
        }
    }

    async fn unregister(&mut self, stem: &str) -> Result<(), String> {
        let Some(t) = self.tracked.get(stem).cloned() else {
            return Ok(());
        };
        self.publisher
            .remove(&t.record.addresses)
            .await
            .map_err(|e| format!("removing the endpoint records: {e}"))?;
        if let Some(dp) = &self.dp {
            let ep = Endpoint {
                id: t.endpoint_id,
                identity: t.identity,
                ifindex: 0,
                addresses: t.record.addresses.clone(),
            };
            dp.with_mut(|d| -> Result<(), String> {
                d.remove_endpoint(&ep)
                    .map_err(|e| format!("endpoints map: {e}"))?;
                match d.detach(&t.record.host_ifname) {
                    Ok(()) | Err(datapath::DatapathError::NotAttached(_)) => Ok(()),
                    Err(e) => Err(format!("detaching from {}: {e}", t.record.host_ifname)),
                }
            })?;
        }
        tracing::info!(endpoint = %stem, addresses = ?t.record.addresses, "endpoint removed");
        self.tracked.remove(stem);
        self.fresh.remove(stem);
        self.policy.forget(t.endpoint_id);
        self.save();
        self.release(t.identity).await;
        Ok(())
    }
}
