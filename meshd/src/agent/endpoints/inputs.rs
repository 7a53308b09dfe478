//! What policy is computed from, taken off the merged view's change stream on its way to the
//! reconcile driver: the local cluster's policies and every identity with its labels (local
//! and mirrored remote clusters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{ClusterName, Identity, Labels, ServiceKey};
use tokio::sync::{mpsc, watch};

use crate::federation::ViewChange;
use crate::identity::IdentityValue;
use crate::policy::{LABEL_CLUSTER, NamespaceLabels, PolicyRecord};
use crate::schema::{ObjectName, Resource};

/// Where a policy came from: a policy record (`ironctl mesh policy apply`) or an applied
/// NetworkPolicy object (`ironctl apply`); the two never replace each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicySource {
    Record(ServiceKey),
    NetworkPolicy { namespace: String, name: String },
}

/// Policies, identities and namespace labels, as of the last change seen.
#[derive(Debug, Default, Clone)]
pub struct PolicyInputs {
    pub policies: BTreeMap<PolicySource, PolicyRecord>,
    pub identities: BTreeMap<Identity, Labels>,
    /// Labels of the Namespace objects of every cluster, by (cluster, namespace).
    pub namespaces: NamespaceLabels,
    /// The pods' named ports (from endpoint records of every cluster), for egress rules'
    /// named ports.
    pub named_ports: crate::policy::NamedPorts,
    /// The identity of each endpoint with named ports, to forget them on delete.
    ported: BTreeMap<(ClusterName, std::net::IpAddr), u32>,
}

impl PolicyInputs {
    fn set_policy(&mut self, k: PolicySource, p: Option<PolicyRecord>) -> bool {
        match p {
            Some(p) => self.policies.insert(k.clone(), p).as_ref() != self.policies.get(&k),
            None => self.policies.remove(&k).is_some(),
        }
    }

    fn object(
        &mut self,
        local: &ClusterName,
        cluster: &ClusterName,
        name: &ObjectName,
        value: Option<&[u8]>,
    ) -> bool {
        match (name.kind, &name.namespace) {
            (resources::Kind::NetworkPolicy, Some(ns)) if cluster == local => {
                let k = PolicySource::NetworkPolicy {
                    namespace: ns.clone(),
                    name: name.name.clone(),
                };
                let Some(value) = value else {
                    return self.set_policy(k, None);
                };
                let record = crate::objects::decode(name, value)
                    .map_err(|e| e.to_string())
                    .and_then(|s| match &s.object.spec {
                        resources::Spec::NetworkPolicy(spec) => {
                            PolicyRecord::from_network_policy(ns, &name.name, spec)
                                .map_err(|e| e.to_string())
                        }
                        _ => Err("not a NetworkPolicy".into()),
                    });
                match record {
                    Ok(p) => self.set_policy(k, Some(p)),
                    Err(e) => {
                        tracing::warn!(object = %name, error = %e, "bad NetworkPolicy object; the last good one stays");
                        false
                    }
                }
            }
            (resources::Kind::Namespace, None) => {
                let k = (cluster.to_string(), name.name.clone());
                let labels = value
                    .and_then(|v| crate::objects::decode(name, v).ok())
                    .and_then(|s| Labels::from_pairs(s.object.meta.labels).ok());
                match labels {
                    Some(l) => self.namespaces.insert(k.clone(), l.clone()) != Some(l),
                    None => self.namespaces.remove(&k).is_some(),
                }
            }
            _ => false,
        }
    }

    /// Applies one change; `true` if the inputs changed.
    pub fn apply(&mut self, local: &ClusterName, change: &ViewChange) -> bool {
        match change {
            ViewChange::Upsert {
                cluster,
                resource: Resource::Object(name),
                value,
            } => self.object(local, cluster, name, Some(value)),
            ViewChange::Delete {
                cluster,
                resource: Resource::Object(name),
            } => self.object(local, cluster, name, None),
            ViewChange::Upsert {
                cluster,
                resource: Resource::Policy(k),
                value,
            } if cluster == local => match PolicyRecord::decode(k, value) {
                Ok(p) => self.set_policy(PolicySource::Record(k.clone()), Some(p)),
                Err(e) => {
                    tracing::warn!(policy = %k, error = %e, "bad policy record; the last good one stays");
                    false
                }
            },
            ViewChange::Delete {
                cluster,
                resource: Resource::Policy(k),
            } if cluster == local => self.set_policy(PolicySource::Record(k.clone()), None),
            ViewChange::Upsert {
                cluster,
                resource: Resource::Identity(id),
                value,
            } => match serde_json::from_slice::<IdentityValue>(value) {
                Ok(v) => {
                    let mut labels = v.labels;
                    // Identities allocated without the cluster label still carry their cluster.
                    if labels.get(LABEL_CLUSTER).is_none() {
                        let _ = labels.insert(LABEL_CLUSTER, cluster.as_ref());
                    }
                    self.identities.insert(*id, labels.clone()) != Some(labels)
                }
                Err(_) => false,
            },
            ViewChange::Delete {
                resource: Resource::Identity(id),
                ..
            } => self.identities.remove(id).is_some(),
            ViewChange::Upsert {
                cluster,
                resource: Resource::Endpoint(ip),
                value,
            } => match crate::endpoints::EndpointRecord::decode(cluster, *ip, value) {
                Ok(r) => {
                    let k = (cluster.clone(), *ip);
                    let id = r.identity.raw();
                    let mut changed = false;
                    if let Some(old) = self.ported.get(&k).copied()
                        && old != id
                    {
                        changed |= self.named_ports.set(old, *ip, None);
                    }
                    if r.ports.is_empty() {
                        self.ported.remove(&k);
                    } else {
                        self.ported.insert(k, id);
                    }
                    changed | self.named_ports.set(id, *ip, Some(r.ports))
                }
                Err(_) => false,
            },
            ViewChange::Delete {
                cluster,
                resource: Resource::Endpoint(ip),
            } => match self.ported.remove(&(cluster.clone(), *ip)) {
                Some(id) => self.named_ports.set(id, *ip, None),
                None => false,
            },
            _ => false,
        }
    }
}

/// The shared inputs and a generation counter bumped on each change.
#[derive(Debug, Clone)]
pub struct InputsHandle {
    pub inputs: Arc<Mutex<PolicyInputs>>,
    pub generation: watch::Receiver<u64>,
}

/// Sits between the merged view and the driver (`next`, if any): returns the sender the view
/// feeds and the handle on the inputs.
pub fn tap(
    local: ClusterName,
    next: Option<mpsc::UnboundedSender<ViewChange>>,
) -> (mpsc::UnboundedSender<ViewChange>, InputsHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<ViewChange>();
    let inputs = Arc::new(Mutex::new(PolicyInputs::default()));
    let (gen_tx, generation) = watch::channel(0u64);
    let shared = inputs.clone();
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            let changed = shared.lock().expect("inputs lock").apply(&local, &change);
            if changed {
                gen_tx.send_modify(|g| *g += 1);
            }
            if let Some(n) = &next
                && n.send(change).is_err()
            {
                tracing::debug!("the reconcile driver is gone");
            }
        }
    });
    (tx, InputsHandle { inputs, generation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_identities_get_their_cluster_label_and_only_local_policies_count() {
        let red: ClusterName = "red".parse().unwrap();
        let green: ClusterName = "green".parse().unwrap();
        let mut i = PolicyInputs::default();
        let id = Identity::from_raw(131328).unwrap();
        let up = ViewChange::Upsert {
            cluster: green.clone(),
            resource: Resource::Identity(id),
            value: br#"{"labels":{"app":"client"}}"#.to_vec(),
        };
        assert!(i.apply(&red, &up));
        assert!(!i.apply(&red, &up), "same value: no change");
        assert_eq!(i.identities[&id].get(LABEL_CLUSTER), Some("green"));
        let k: ServiceKey = "shop/p".parse().unwrap();
        let value = br#"{"namespace":"shop","name":"p"}"#.to_vec();
        let remote = ViewChange::Upsert {
            cluster: green,
            resource: Resource::Policy(k.clone()),
            value: value.clone(),
        };
        assert!(
            !i.apply(&red, &remote),
            "a remote cluster's policy is not ours"
        );
        let local = ViewChange::Upsert {
            cluster: red.clone(),
            resource: Resource::Policy(k.clone()),
            value,
        };
        assert!(i.apply(&red, &local));
        let bad = ViewChange::Upsert {
            cluster: red.clone(),
            resource: Resource::Policy(k.clone()),
            value: b"{}".to_vec(),
        };
        assert!(!i.apply(&red, &bad));
        assert!(
            i.policies.contains_key(&PolicySource::Record(k.clone())),
            "a bad record keeps the last good one"
        );
        let del = ViewChange::Delete {
            cluster: red.clone(),
            resource: Resource::Policy(k),
        };
        assert!(i.apply(&red, &del));
        assert!(i.policies.is_empty());
    }
}
