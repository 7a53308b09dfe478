//! Apply, get and delete of resources in the local cluster's etcd: meshd's API is the gate.
//! Every document is checked before anything is written; a Service gets its ClusterIPs
//! (from `mesh.service_cidrs`) and its LoadBalancer VIP (from the IPPools that select it) by
//! etcd transaction, and both are released when it is deleted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{ClusterName, ServiceKey};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ipnet::IpNet;
use resources::{Condition, Kind, Object, ServiceSpec, Spec, Stored};
use serde_json::{Value, json};

use crate::ipam::Family;
use crate::kvstore::{KvError, KvStore};
use crate::lbipam::{AddressSpace, LbIpamError, VipAllocator};
use crate::schema::{Key, ObjectName, Resource, ResourceKind, Scope};

/// Why an apply or delete failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Bad input: nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    /// An address could not be allocated (the object was not written).
    #[error("{0}")]
    Allocation(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// "created", "configured", "unchanged".
    pub action: &'static str,
    pub warning: String,
}

/// The cluster's resources in its own etcd.
#[derive(Debug, Clone)]
pub struct Objects {
    store: KvStore,
    cluster: ClusterName,
    service_cidrs: Vec<IpNet>,
    /// `mesh.pod_cidr_pools`: no IPPool may overlap them.
    pod_pools: Vec<IpNet>,
    /// Where what happened to an object is told (`kubectl describe`'s events).
    events: Option<std::sync::Arc<crate::events::Recorder>>,
    /// One ClusterIP allocator for every apply of this value (it lists the keys once).
    cluster_ips: std::sync::Arc<std::sync::OnceLock<Option<VipAllocator>>>,
}

const MAX_CONFLICTS: usize = 16;

impl Objects {
    pub fn new(store: KvStore, cluster: ClusterName, service_cidrs: Vec<IpNet>) -> Self {
        Objects {
            store,
            cluster,
            service_cidrs,
            pod_pools: Vec::new(),
            events: None,
            cluster_ips: Default::default(),
        }
    }

    /// Records events of what applies do (addresses assigned, why one is pending).
    pub fn with_events(mut self, events: Option<std::sync::Arc<crate::events::Recorder>>) -> Self {
        self.events = events;
        self
    }

    /// The PodCIDR pools of meshd's config (`mesh.pod_cidr_pools`).
    pub fn with_pod_pools(mut self, pools: Vec<IpNet>) -> Self {
        self.pod_pools = pools;
        self
    }

    fn key(&self, name: &ObjectName) -> String {
        Key::cluster(&self.cluster, Resource::Object(name.clone())).to_string()
    }

    fn name_of(o: &Object) -> Result<ObjectName, ApplyError> {
        ObjectName::new(o.kind(), o.meta.namespace.as_deref(), &o.meta.name)
            .map_err(ApplyError::Invalid)
    }

    /// Checks every document of `manifest`, then writes them in order.
    pub async fn apply(&self, manifest: &str, dry_run: bool) -> Result<Vec<Outcome>, ApplyError> {
        let docs =
            resources::parse_manifests(manifest).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if docs.is_empty() {
            return Err(ApplyError::Invalid(
                "no objects passed to apply: the manifest holds no document".into(),
            ));
        }
        let mut objects = Vec::new();
        let mut invalid = Vec::new();
        for d in &docs {
            match resources::decode(d) {
                Ok(o) => {
                    // What the datapath cannot enforce is refused here, not dropped later.
                    if let Spec::NetworkPolicy(spec) = &o.spec
                        && let Err(e) = crate::policy::PolicyRecord::from_network_policy(
                            o.namespace(),
                            &o.meta.name,
                            spec,
                        )
                    {
                        invalid.push(format!(
                            "The NetworkPolicy {:?} is invalid: {e}",
                            o.meta.name
                        ));
                        continue;
                    }
                    objects.push(o);
                }
                Err(e) => invalid.push(e.to_string()),
            }
        }
        if !invalid.is_empty() {
            return Err(ApplyError::Invalid(invalid.join("\n")));
        }
        let mut out = Vec::new();
        for o in objects {
            out.push(self.apply_one(o, dry_run).await?);
        }
        Ok(out)
    }

    async fn apply_one(&self, o: Object, dry_run: bool) -> Result<Outcome, ApplyError> {
        let name = Self::name_of(&o)?;
        let key = self.key(&name);
        for _ in 0..MAX_CONFLICTS {
            let current = self.store.get(&key).await?;
            let old: Option<Stored> = match &current {
                Some(kv) => match super::decode(&name, &kv.value) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "stored object unreadable; replacing it");
                        None
                    }
                },
                None => None,
            };
            let mut next = Stored {
                object: o.clone(),
                status: Value::Null,
            };
            let warning = self.fill(&mut next, old.as_ref(), dry_run).await?;
            let value = next.encode();
            let action = match &current {
                None => "created",
                Some(kv) if kv.value == value => "unchanged",
                Some(_) => "configured",
            };
            let outcome = Outcome {
                kind: o.kind(),
                namespace: o.namespace().to_string(),
                name: o.meta.name.clone(),
                action,
                warning,
            };
            if dry_run || action == "unchanged" {
                return Ok(outcome);
            }
            let guard = match &current {
                Some(kv) => Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if self.store.txn(txn).await?.succeeded() {
                tracing::info!(%key, action, "object applied");
                if let Some(rec) = &self.events {
                    for (t, reason, msg) in service_events(old.as_ref(), &next) {
                        rec.record(&name, t, reason, msg).await;
                    }
                }
                if o.kind() == Kind::IpPool {
                    self.retry_pending_vips().await;
                }
                return Ok(outcome);
            }
        }
        Err(ApplyError::Allocation(format!(
            "{} changed {MAX_CONFLICTS} times while it was being applied; try again",
            o.display_name()
        )))
    }

    /// Sets meshd's fields: uid, creation time, generation, allocated addresses and status.
    async fn fill(
        &self,
        next: &mut Stored,
        old: Option<&Stored>,
        dry_run: bool,
    ) -> Result<String, ApplyError> {
        let (uid, created) = match old {
            Some(o) => (
                o.object.meta.uid.clone(),
                o.object.meta.creation_timestamp.clone(),
            ),
            None => (new_uid(), rfc3339(SystemTime::now())),
        };
        let mut warning = String::new();
        if let Spec::IpPool(spec) = &next.object.spec {
            self.check_pool(&next.object.meta.name, spec, old).await?;
        }
        if let Spec::Service(spec) = next.object.spec.clone() {
            let key = ServiceKey::new(next.object.namespace(), &next.object.meta.name)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            let old_spec = old.and_then(|o| match &o.object.spec {
                Spec::Service(s) => Some(s.clone()),
                _ => None,
            });
            let ips = self
                .cluster_ips(&key, &spec, old_spec.as_ref(), dry_run)
                .await?;
            if !ips.is_empty() {
                let strs: Vec<Value> = ips.iter().map(|ip| json!(ip.to_string())).collect();
                resources::set_spec(&mut next.object.document, "clusterIP", strs[0].clone());
                resources::set_spec(&mut next.object.document, "clusterIPs", Value::Array(strs));
            }
            let (status, w) = self
                .load_balancer(&key, &next.object, &spec, old.is_some(), dry_run)
                .await?;
            next.status = status;
            warning = w;
        }
        // Compared with the spec as stored, allocated fields included: a re-apply of the same
        // manifest keeps the generation.
        let generation = match old {
            Some(o) if o.object.document.get("spec") == next.object.document.get("spec") => {
                o.object.meta.generation
            }
            Some(o) => o.object.meta.generation + 1,
            None => 1,
        };
        resources::set_metadata(&mut next.object.document, "generation", json!(generation));
        resources::set_metadata(&mut next.object.document, "uid", json!(uid));
        resources::set_metadata(
            &mut next.object.document,
            "creationTimestamp",
            json!(created),
        );
        next.object.meta.uid = uid;
        next.object.meta.creation_timestamp = created;
        Ok(warning)
    }

    /// The service's ClusterIPs: kept across applies (immutable, as in Kubernetes), requested
    /// ones checked, the others allocated from `mesh.service_cidrs` by transaction.
    async fn cluster_ips(
        &self,
        key: &ServiceKey,
        spec: &ServiceSpec,
        old: Option<&ServiceSpec>,
        dry_run: bool,
    ) -> Result<Vec<IpAddr>, ApplyError> {
        let had: Vec<IpAddr> = old.map(|o| o.cluster_ips.clone()).unwrap_or_default();
        let was_headless = old.is_some_and(|o| o.headless);
        if old.is_some() && spec.headless != was_headless {
            return Err(ApplyError::Invalid(format!(
                "The Service {:?} is invalid: spec.clusterIP: Invalid value: {:?}: field is immutable (delete and re-create the service)",
                key.name(),
                if spec.headless { "None" } else { "" }
            )));
        }
        if spec.headless {
            return Ok(Vec::new());
        }
        if !spec.cluster_ips.is_empty() && !had.is_empty() && spec.cluster_ips != had {
            return Err(ApplyError::Invalid(format!(
                "The Service {:?} is invalid: spec.clusterIPs: Invalid value: {:?}: field is immutable (it is {:?}; delete and re-create the service)",
                key.name(),
                spec.cluster_ips,
                had
            )));
        }
        if !had.is_empty() {
            return Ok(had);
        }
        if self.service_cidrs.is_empty() {
            return Err(ApplyError::Invalid(format!(
                "The Service {:?} is invalid: spec.clusterIP: this cluster has no service CIDR: set mesh.service_cidrs in meshd's config (e.g. [\"10.96.0.0/16\"]), or make the service headless (clusterIP: None)",
                key.name()
            )));
        }
        for ip in &spec.cluster_ips {
            if !self.service_cidrs.iter().any(|c| c.contains(ip)) {
                return Err(ApplyError::Invalid(format!(
                    "The Service {:?} is invalid: spec.clusterIPs: Invalid value: \"{ip}\": provided IP is not in the valid range; the service CIDRs are {}",
                    key.name(),
                    join(&self.service_cidrs)
                )));
            }
        }
        let families = wanted_families(spec, &self.service_cidrs).map_err(|e| {
            ApplyError::Invalid(format!("The Service {:?} is invalid: {e}", key.name()))
        })?;
        if dry_run {
            return Ok(spec.cluster_ips.clone());
        }
        let alloc = self
            .cluster_ips
            .get_or_init(|| {
                VipAllocator::cluster_ips(
                    self.store.clone(),
                    self.cluster.clone(),
                    self.service_cidrs.clone(),
                )
                .ok()
            })
            .as_ref()
            .ok_or_else(|| {
                ApplyError::Allocation(format!(
                    "mesh.service_cidrs {} cannot be used for ClusterIPs (overlapping or with host bits)",
                    join(&self.service_cidrs)
                ))
            })?;
        let mut out = Vec::new();
        for f in families {
            let requested = spec.cluster_ips.iter().find(|ip| family(ip) == f);
            let ip = match requested {
                Some(ip) => alloc.request(key, *ip).await,
                None => alloc.allocate(key, f).await,
            }
            .map_err(|e| match e {
                LbIpamError::Kv(k) => ApplyError::Kv(k),
                other => ApplyError::Allocation(format!(
                    "failed to allocate a ClusterIP for service {key}: {other}"
                )),
            })?;
            out.push(ip);
        }
        Ok(out)
    }

    /// The LoadBalancer VIP of a service that wants one: from the IPPools whose selectors
    /// take it; released when it no longer wants one. Returns the status and a warning when
    /// the VIP is pending.
    async fn load_balancer(
        &self,
        key: &ServiceKey,
        o: &Object,
        spec: &ServiceSpec,
        had_object: bool,
        dry_run: bool,
    ) -> Result<(Value, String), ApplyError> {
        if !spec.wants_vip() && !had_object {
            // A new service that wants no VIP has none to release.
            return Ok((Value::Null, String::new()));
        }
        let lb = VipAllocator::holdings(
            self.store.clone(),
            self.cluster.clone(),
            AddressSpace::LoadBalancer,
        );
        let have = lb.lookup(key).await.map_err(lb_err)?;
        if !spec.wants_vip() {
            if !have.is_empty() && !dry_run {
                lb.release(key).await.map_err(lb_err)?;
            }
            return Ok((Value::Null, String::new()));
        }
        let pools = self.pools_for(o).await?;
        let pending = |reason: &str, message: String| {
            let status = resources::ServiceStatus {
                load_balancer: Default::default(),
                conditions: vec![Condition {
                    type_: "LoadBalancerReady".into(),
                    status: "False".into(),
                    reason: reason.into(),
                    message: message.clone(),
                    last_transition_time: rfc3339(SystemTime::now()),
                }],
            };
            (serde_json::to_value(status).expect("serializes"), message)
        };
        // A VIP it already has stays while it is still wanted.
        let keep: Vec<IpAddr> = have
            .iter()
            .copied()
            .filter(|ip| spec.load_balancer_ip.is_none_or(|want| want == *ip))
            .collect();
        let ip = if let Some(ip) = keep.first() {
            Some(*ip)
        } else {
            if !have.is_empty() && !dry_run {
                lb.release(key).await.map_err(lb_err)?;
            }
            if pools.is_empty() {
                return Ok(pending(
                    "NoPool",
                    format!(
                        "no IPPool of type LoadBalancer selects service {key}: apply an ironmesh.io/v1 IPPool whose serviceSelector/namespaceSelector match it"
                    ),
                ));
            }
            if dry_run {
                None
            } else {
                let alloc = match VipAllocator::new(
                    self.store.clone(),
                    self.cluster.clone(),
                    pools.clone(),
                ) {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(pending(
                            "PoolConflict",
                            format!("the IPPools that select {key} cannot be used together: {e}"),
                        ));
                    }
                };
                let family = spec
                    .load_balancer_ip
                    .map(|ip| family(&ip))
                    .or_else(|| spec.cluster_ips.first().map(family))
                    .filter(|f| pools.iter().any(|p| family(&p.network()) == *f))
                    .unwrap_or_else(|| family(&pools[0].network()));
                let got = match spec.load_balancer_ip {
                    Some(ip) => alloc.request(key, ip).await,
                    None => alloc.allocate(key, family).await,
                };
                match got {
                    Ok(ip) => Some(ip),
                    Err(LbIpamError::Kv(e)) => return Err(ApplyError::Kv(e)),
                    Err(e @ LbIpamError::Exhausted { .. }) => {
                        return Ok(pending(
                            "PoolExhausted",
                            format!("{e} (pools selecting {key}: {})", join(&pools)),
                        ));
                    }
                    Err(e) => return Ok(pending("AllocationFailed", e.to_string())),
                }
            }
        };
        let status = resources::ServiceStatus {
            load_balancer: resources::LoadBalancerStatus {
                ingress: ip
                    .map(|ip| resources::LoadBalancerIngress { ip })
                    .into_iter()
                    .collect(),
            },
            conditions: Vec::new(),
        };
        Ok((
            serde_json::to_value(status).expect("serializes"),
            String::new(),
        ))
    }

    /// An IPPool overlaps no other address range of the cluster (the service CIDRs, the
    /// config's PodCIDR pools, other IPPools), and a PodCIDR pool keeps what nodes hold: a CIDR
    /// with node blocks stays, its family's node mask and the pool's type do not change.
    async fn check_pool(
        &self,
        name: &str,
        spec: &resources::IpPoolSpec,
        old: Option<&Stored>,
    ) -> Result<(), ApplyError> {
        let mut errs = Vec::new();
        let mut taken: Vec<(IpNet, String)> = Vec::new();
        taken.extend(
            self.service_cidrs
                .iter()
                .map(|c| (*c, "mesh.service_cidrs".to_string())),
        );
        taken.extend(
            self.pod_pools
                .iter()
                .map(|c| (*c, "mesh.pod_cidr_pools".to_string())),
        );
        for s in self.list(Kind::IpPool, None).await? {
            if let Spec::IpPool(p) = &s.object.spec
                && s.object.meta.name != name
            {
                taken.extend(
                    p.cidrs
                        .iter()
                        .map(|c| (*c, format!("IPPool {:?}", s.object.meta.name))),
                );
            }
        }
        for (i, c) in spec.cidrs.iter().enumerate() {
            if let Some((o, by)) = taken.iter().find(|(o, _)| crate::ipam::overlaps(o, c)) {
                errs.push(format!(
                    "spec.cidrs[{i}]: Invalid value: \"{c}\": overlaps {o} of {by}; address ranges of a cluster must be disjoint"
                ));
            }
        }
        let old_spec = old.and_then(|o| match &o.object.spec {
            Spec::IpPool(p) => Some(p.clone()),
            _ => None,
        });
        if let Some(o) = &old_spec
            && o.type_ != spec.type_
        {
            errs.push(format!(
                "spec.type: Invalid value: {:?}: field is immutable (it was {:?}); delete the pool and create it again",
                spec.type_, o.type_
            ));
        }
        if let Some(o) = old_spec.filter(|o| o.type_ == resources::PoolType::PodCidr) {
            let blocks = self.pod_blocks().await?;
            for c in &o.cidrs {
                let held: Vec<&IpNet> = blocks
                    .iter()
                    .filter(|(_, v)| v.pool == *c)
                    .map(|(b, _)| b)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                if !spec.cidrs.contains(c) {
                    errs.push(format!(
                        "spec.cidrs: Forbidden: {c} has {} node block(s) allocated (e.g. {}); it can be removed once no node holds one",
                        held.len(),
                        held[0]
                    ));
                } else if o.masks().for_net(c) != spec.masks().for_net(c) {
                    errs.push(format!(
                        "spec.nodeMaskSize: Forbidden: {c} has {} node block(s) of /{}; the mask of a family cannot change while nodes hold blocks",
                        held.len(),
                        o.masks().for_net(c)
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Invalid(format!(
                "The IPPool {name:?} is invalid: {}",
                errs.join(", ")
            )))
        }
    }

    /// Every allocated node block (`ipam/podcidrs/<cidr>`) with its holder and pool.
    async fn pod_blocks(&self) -> Result<Vec<(IpNet, crate::ipam::PodCidrValue)>, ApplyError> {
        let prefix = Scope::Cluster(self.cluster.clone()).kind_prefix(ResourceKind::PodCidrs);
        let (kvs, _) = self.store.list(&prefix, false).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                Ok(Key::Resource {
                    resource: Resource::PodCidr(net),
                    ..
                }) => serde_json::from_slice(&kv.value).ok().map(|v| (net, v)),
                _ => None,
            })
            .collect())
    }

    /// The CIDRs of the enabled LoadBalancer IPPools whose selectors take the service.
    async fn pools_for(&self, o: &Object) -> Result<Vec<IpNet>, ApplyError> {
        let ns_labels: BTreeMap<String, String> =
            match self.get_one(Kind::Namespace, None, o.namespace()).await? {
                Some(s) => s.object.meta.labels,
                None => BTreeMap::new(),
            };
        let mut ns_labels = ns_labels;
        ns_labels.insert(
            "kubernetes.io/metadata.name".into(),
            o.namespace().to_string(),
        );
        let mut out = Vec::new();
        for s in self.list(Kind::IpPool, None).await? {
            let Spec::IpPool(p) = &s.object.spec else {
                continue;
            };
            let svc_ok = p
                .service_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(|k| o.meta.labels.get(k).map(String::as_str)));
            let ns_ok = p
                .namespace_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(|k| ns_labels.get(k).map(String::as_str)));
            if !p.disabled && svc_ok && ns_ok && p.type_ == resources::PoolType::LoadBalancer {
                out.extend(p.cidrs.iter().copied());
            }
        }
        Ok(out)
    }

    /// After an IPPool changed: gives pending LoadBalancer services their VIP.
    async fn retry_pending_vips(&self) {
        let Ok(services) = self.list(Kind::Service, None).await else {
            return;
        };
        for s in services {
            let Spec::Service(spec) = &s.object.spec else {
                continue;
            };
            let st: resources::ServiceStatus = s.status_as();
            if spec.wants_vip() && st.load_balancer.ingress.is_empty() {
                let mut doc = s.object.document.clone();
                if let Value::Object(m) = &mut doc {
                    m.remove("status");
                }
                let Ok(manifest) = serde_json::to_string(&doc) else {
                    continue;
                };
                if let Err(e) = Box::pin(self.apply(&manifest, false)).await {
                    tracing::warn!(service = %s.object.display_name(), error = %e, "VIP retry failed");
                }
            }
        }
    }

    async fn get_one(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Stored>, ApplyError> {
        let n = ObjectName::new(kind, namespace, name).map_err(ApplyError::Invalid)?;
        let key = self.key(&n);
        Ok(match self.store.get(&key).await? {
            Some(kv) => super::decode(&n, &kv.value).ok(),
            None => None,
        })
    }

    /// Objects of `kind` (in `namespace`, or all), sorted by namespace and name. Unreadable
    /// ones are skipped with a log line.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<Stored>, ApplyError> {
        let mut prefix = format!(
            "{}{}/",
            Scope::Cluster(self.cluster.clone()).kind_prefix(ResourceKind::Objects),
            kind.plural()
        );
        if let (true, Some(ns)) = (kind.namespaced(), namespace) {
            prefix.push_str(ns);
            prefix.push('/');
        }
        let (kvs, _) = self.store.list(&prefix, false).await?;
        let mut out = Vec::new();
        for kv in kvs {
            let Ok(Key::Resource {
                resource: Resource::Object(n),
                ..
            }) = Key::parse_bytes(&kv.key)
            else {
                continue;
            };
            match super::decode(&n, &kv.value) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(object = %n, error = %e, "skipping an unreadable object"),
            }
        }
        Ok(out)
    }

    /// `get`: one object or all of a kind. IPPools get their use in `status` (addresses
    /// allocated from each CIDR, and how many the CIDR has), counted now.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Stored>, ApplyError> {
        let mut objs = self.get_raw(kind, namespace, name).await?;
        if kind == Kind::IpPool {
            let (kvs, _) = self
                .store
                .list(
                    &Scope::Cluster(self.cluster.clone()).kind_prefix(ResourceKind::Vips),
                    true,
                )
                .await?;
            let used: Vec<IpAddr> = kvs
                .iter()
                .filter_map(|kv| match Key::parse_bytes(&kv.key) {
                    Ok(Key::Resource {
                        resource: Resource::Vip(ip),
                        ..
                    }) => Some(ip),
                    _ => None,
                })
                .collect();
            let blocks = self.pod_blocks().await?;
            for s in &mut objs {
                if let Spec::IpPool(p) = &s.object.spec
                    && p.type_ == resources::PoolType::PodCidr
                {
                    s.status = pod_pool_status(p, &blocks);
                } else if let Spec::IpPool(p) = &s.object.spec {
                    let n = used
                        .iter()
                        .filter(|ip| p.cidrs.iter().any(|c| c.contains(*ip)))
                        .count();
                    let total: u128 = p.cidrs.iter().map(pool_size).sum();
                    s.status = json!({"used": n, "total": total.min(u128::from(u64::MAX)) as u64});
                }
            }
        }
        Ok(objs)
    }

    async fn get_raw(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Stored>, ApplyError> {
        let ns = kind.namespaced().then(|| namespace.unwrap_or("default"));
        match name {
            Some(n) => match self.get_one(kind, ns, n).await? {
                Some(s) => Ok(vec![s]),
                None => Err(ApplyError::NotFound(format!(
                    "{} {n:?}{}",
                    kind.singular(),
                    ns.map(|ns| format!(" in namespace {ns:?}"))
                        .unwrap_or_default()
                ))),
            },
            None => self.list(kind, namespace).await,
        }
    }

    /// Deletes one object (a Service releases its ClusterIPs and VIPs; a Namespace takes its
    /// objects with it). Returns what was deleted.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Vec<String>, ApplyError> {
        let ns = kind.namespaced().then(|| namespace.unwrap_or("default"));
        let n = ObjectName::new(kind, ns, name).map_err(ApplyError::Invalid)?;
        let mut deleted = Vec::new();
        if kind == Kind::Namespace {
            for k in [Kind::Service, Kind::NetworkPolicy] {
                for s in self.list(k, Some(name)).await? {
                    deleted
                        .extend(Box::pin(self.delete(k, Some(name), &s.object.meta.name)).await?);
                }
            }
        }
        if kind == Kind::IpPool
            && let Some(s) = self.get_one(kind, None, name).await?
            && let Spec::IpPool(p) = &s.object.spec
            && p.type_ == resources::PoolType::PodCidr
        {
            let blocks = self.pod_blocks().await?;
            let held: Vec<String> = blocks
                .iter()
                .filter(|(_, v)| p.cidrs.contains(&v.pool))
                .map(|(b, v)| format!("{b} ({})", v.node))
                .collect();
            if !held.is_empty() {
                return Err(ApplyError::Invalid(format!(
                    "IPPool {name:?} still has {} node block(s): {}; a node's blocks are freed when the node is gone (after mesh.pod_cidr_release_grace), an extra block when it held no pod for mesh.pod_cidr_block_idle",
                    held.len(),
                    held.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let key = self.key(&n);
        if !self.store.delete(&key).await? {
            if deleted.is_empty() {
                return Err(ApplyError::NotFound(format!(
                    "{} {name:?}{}",
                    kind.singular(),
                    ns.map(|ns| format!(" in namespace {ns:?}"))
                        .unwrap_or_default()
                )));
            }
            return Ok(deleted);
        }
        if let Some(svc) = n.service_key() {
            let held =
                |space| VipAllocator::holdings(self.store.clone(), self.cluster.clone(), space);
            let freed = held(AddressSpace::LoadBalancer)
                .release(&svc)
                .await
                .map_err(lb_err)?;
            let freed_c = held(AddressSpace::ClusterIp)
                .release(&svc)
                .await
                .map_err(lb_err)?;
            tracing::info!(service = %svc, vips = ?freed, cluster_ips = ?freed_c, "service deleted, addresses released");
        }
        deleted.push(format!("{}/{name}", kind.singular()));
        Ok(deleted)
    }
}

/// What an apply did to a Service, as events: ClusterIPs and LoadBalancer IPs assigned or
/// released (MetalLB's words), and a condition that turned False (why a VIP is pending).
pub fn service_events(
    old: Option<&Stored>,
    next: &Stored,
) -> Vec<(crate::events::EventType, &'static str, String)> {
    use crate::events::EventType::{Normal, Warning};
    if !matches!(next.object.spec, Spec::Service(_)) {
        return Vec::new();
    }
    // From the documents: the allocated ClusterIPs are set there (`spec.clusterIPs`).
    let cluster_ips = |s: &Stored| -> Vec<String> {
        s.object
            .document
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let old_ips = old.map(cluster_ips).unwrap_or_default();
    let ips = cluster_ips(next);
    if old_ips.is_empty() && !ips.is_empty() && ips != ["None"] {
        out.push((
            Normal,
            "ClusterIPAllocated",
            format!(
                "Allocated ClusterIP {} from mesh.service_cidrs",
                ips.join(",")
            ),
        ));
    }
    let old_st: resources::ServiceStatus = old.map(Stored::status_as).unwrap_or_default();
    let next_st: resources::ServiceStatus = next.status_as();
    let ingress = |st: &resources::ServiceStatus| -> Vec<String> {
        st.load_balancer
            .ingress
            .iter()
            .map(|i| i.ip.to_string())
            .collect()
    };
    let before = ingress(&old_st);
    let now = ingress(&next_st);
    let added: Vec<&String> = now.iter().filter(|ip| !before.contains(ip)).collect();
    let gone: Vec<&String> = before.iter().filter(|ip| !now.contains(ip)).collect();
    if !added.is_empty() {
        out.push((Normal, "IPAllocated", format!("Assigned IP {added:?}")));
    }
    if !gone.is_empty() {
        out.push((Normal, "IPReleased", format!("Released IP {gone:?}")));
    }
    for c in &next_st.conditions {
        let same = old_st
            .conditions
            .iter()
            .any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason);
        if c.status == "False" && !same {
            let reason = match c.reason.as_str() {
                "NoPool" => "NoPool",
                "PoolExhausted" => "PoolExhausted",
                _ => "Pending",
            };
            out.push((Warning, reason, c.message.clone()));
        }
    }
    out
}

/// A PodCIDR pool's use: node blocks allocated and how many its CIDRs have, and which
/// nodes hold them.
fn pod_pool_status(
    p: &resources::IpPoolSpec,
    blocks: &[(IpNet, crate::ipam::PodCidrValue)],
) -> Value {
    let mine: Vec<&(IpNet, crate::ipam::PodCidrValue)> = blocks
        .iter()
        .filter(|(_, v)| p.cidrs.contains(&v.pool))
        .collect();
    let total: u128 = p
        .cidrs
        .iter()
        .map(|c| {
            let bits = u32::from(p.masks().for_net(c).saturating_sub(c.prefix_len()));
            1u128.checked_shl(bits).unwrap_or(u128::MAX)
        })
        .fold(0u128, u128::saturating_add);
    let mut nodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (b, v) in &mine {
        nodes
            .entry(v.node.to_string())
            .or_default()
            .push(b.to_string());
    }
    json!({
        "used": mine.len(),
        "total": total.min(u128::from(u64::MAX)) as u64,
        "nodes": nodes,
    })
}

/// How many addresses a pool hands out (IPv4 pools shorter than /31 skip the network and
/// broadcast addresses, as the allocator does).
fn pool_size(c: &IpNet) -> u128 {
    let bits = u32::from(c.max_prefix_len() - c.prefix_len());
    let n = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    match c {
        IpNet::V4(v) if v.prefix_len() < 31 => n - 2,
        _ => n,
    }
}

fn lb_err(e: LbIpamError) -> ApplyError {
    match e {
        LbIpamError::Kv(k) => ApplyError::Kv(k),
        other => ApplyError::Allocation(other.to_string()),
    }
}

fn family(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The families a service's ClusterIPs come in (Kubernetes' ipFamilies / ipFamilyPolicy):
/// single stack takes the first family given (or the first service CIDR's); dual stack both.
pub fn wanted_families(spec: &ServiceSpec, cidrs: &[IpNet]) -> Result<Vec<Family>, String> {
    let have = |f: Family| cidrs.iter().any(|c| family(&c.network()) == f);
    let mut order: Vec<Family> = spec
        .ip_families
        .iter()
        .map(|f| if f == "IPv6" { Family::V6 } else { Family::V4 })
        .collect();
    for ip in &spec.cluster_ips {
        if !order.contains(&family(ip)) {
            order.push(family(ip));
        }
    }
    for c in cidrs {
        let f = family(&c.network());
        if !order.contains(&f) {
            order.push(f);
        }
    }
    use resources::IpFamilyPolicy as P;
    match spec.ip_family_policy {
        P::SingleStack => {
            let f = order[0];
            if !have(f) {
                return Err(format!(
                    "spec.ipFamilies: Invalid value: {f:?}: this cluster has no service CIDR of that family (mesh.service_cidrs: {})",
                    join(cidrs)
                ));
            }
            Ok(vec![f])
        }
        P::PreferDualStack => Ok(order.into_iter().filter(|f| have(*f)).collect()),
        P::RequireDualStack => {
            if !(have(Family::V4) && have(Family::V6)) {
                return Err(format!(
                    "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not dual-stack (mesh.service_cidrs: {})",
                    join(cidrs)
                ));
            }
            Ok(order)
        }
    }
}

/// A unique id for an object (128 random-enough bits: time, process, a counter).
fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for part in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed) ^ part);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    format!(
        "{}-{}-{}-{}-{}",
        &out[0..8],
        &out[8..12],
        &out[12..16],
        &out[16..20],
        &out[20..32]
    )
}

/// RFC 3339 in UTC, seconds: `2026-12-07T13:45:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(cluster_ip: Option<&str>, status: serde_json::Value) -> Stored {
        let mut spec = json!({"type": "LoadBalancer", "selector": {"app": "web"},
            "ports": [{"port": 80}]});
        if let Some(ip) = cluster_ip {
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
        }
        let doc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "front", "namespace": "shop"}, "spec": spec, "status": status});
        Stored::decode(&serde_json::to_vec(&doc).unwrap()).unwrap()
    }

    #[test]
    fn service_events_say_what_was_assigned_and_why_a_vip_is_pending_once() {
        use crate::events::EventType::{Normal, Warning};
        let pending = json!({"conditions": [{"type": "LoadBalancerReady", "status": "False",
            "reason": "PoolExhausted", "message": "every address of IPPool red-public is taken"}]});
        let first = svc(Some("10.96.0.10"), pending.clone());
        let ev = service_events(None, &first);
        assert_eq!(
            ev,
            vec![
                (
                    Normal,
                    "ClusterIPAllocated",
                    "Allocated ClusterIP 10.96.0.10 from mesh.service_cidrs".to_string()
                ),
                (
                    Warning,
                    "PoolExhausted",
                    "every address of IPPool red-public is taken".to_string()
                ),
            ]
        );
        // Applied again, still pending: nothing new to tell.
        assert_eq!(service_events(Some(&first), &first), vec![]);
        let served = svc(
            Some("10.96.0.10"),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}),
        );
        assert_eq!(
            service_events(Some(&first), &served),
            vec![(
                Normal,
                "IPAllocated",
                "Assigned IP [\"203.0.113.1\"]".to_string()
            )]
        );
        let none = svc(Some("10.96.0.10"), json!({}));
        assert_eq!(
            service_events(Some(&served), &none),
            vec![(
                Normal,
                "IPReleased",
                "Released IP [\"203.0.113.1\"]".to_string()
            )]
        );
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_796_651_100);
        assert_eq!(rfc3339(t), "2026-12-07T13:45:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ip_families_follow_the_policy_and_the_cidrs() {
        let cidrs: Vec<IpNet> = vec![
            "10.96.0.0/16".parse().unwrap(),
            "fd00:96::/112".parse().unwrap(),
        ];
        let mut spec = ServiceSpec::default();
        assert_eq!(wanted_families(&spec, &cidrs).unwrap(), vec![Family::V4]);
        spec.ip_families = vec!["IPv6".into()];
        assert_eq!(wanted_families(&spec, &cidrs).unwrap(), vec![Family::V6]);
        spec.ip_family_policy = resources::IpFamilyPolicy::RequireDualStack;
        assert_eq!(
            wanted_families(&spec, &cidrs).unwrap(),
            vec![Family::V6, Family::V4]
        );
        let v4: Vec<IpNet> = vec!["10.96.0.0/16".parse().unwrap()];
        let e = wanted_families(&spec, &v4).unwrap_err();
        assert!(e.contains("not dual-stack"), "{e}");
        spec.ip_family_policy = resources::IpFamilyPolicy::PreferDualStack;
        assert_eq!(wanted_families(&spec, &v4).unwrap(), vec![Family::V4]);
        spec.ip_family_policy = resources::IpFamilyPolicy::SingleStack;
        let e = wanted_families(&spec, &v4).unwrap_err();
        assert!(e.contains("spec.ipFamilies"), "{e}");
    }

    #[test]
    fn uids_differ() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}
