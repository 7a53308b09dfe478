//! What policy is computed from, taken off the merged view's change stream on its way to the
//! reconcile driver: the local cluster's policies and every identity with its labels (local
//! and mirrored remote clusters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{ClusterName, Identity, Labels, ServiceKey};
use tokio::sync::{mpsc, watch};

use crate::federation::ViewChange;
use crate::identity::IdentityValue;
use crate::policy::{LABEL_CLUSTER, PolicyRecord};
use crate::schema::Resource;

/// Policies and identities, as of the last change seen.
#[derive(Debug, Default, Clone)]
pub struct PolicyInputs {
    pub policies: BTreeMap<ServiceKey, PolicyRecord>,
    pub identities: BTreeMap<Identity, Labels>,
}

impl PolicyInputs {
    /// Applies one change; `true` if the inputs changed.
    pub fn apply(&mut self, local: &ClusterName, change: &ViewChange) -> bool {
        match change {
            ViewChange::Upsert {
                cluster,
                resource: Resource::Policy(k),
                value,
            } if cluster == local => match PolicyRecord::decode(k, value) {
                Ok(p) => self.policies.insert(k.clone(), p).as_ref() != self.policies.get(k),
                Err(e) => {
                    tracing::warn!(policy = %k, error = %e, "bad policy record; the last good one stays");
                    false
                }
            },
            ViewChange::Delete {
                cluster,
                resource: Resource::Policy(k),
            } if cluster == local => self.policies.remove(k).is_some(),
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
            i.policies.contains_key(&k),
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
