//! Applying policy to the local endpoints: each endpoint's whole policy computed
//! ([`crate::policy::compute`]) and swapped in where it changed; CIDR peers' identities put
//! into the IP cache.

use std::collections::BTreeMap;

use datapath::EndpointPolicy;
use datapath::ipcache::IpcacheValue;
use ipnet::IpNet;

use super::Controller;
use super::inputs::InputsHandle;
use crate::policy::compute::{self, CidrIdentities};

/// What is in force: per endpoint id its policy (`None`: none, not policed).
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub dirty: bool,
    generation: Option<u64>,
    by_endpoint: BTreeMap<u32, Option<EndpointPolicy>>,
    cidrs: CidrIdentities,
    cidrs_in_ipcache: BTreeMap<IpNet, u32>,
}

impl Applied {
    pub fn forget(&mut self, endpoint_id: u32) {
        self.by_endpoint.remove(&endpoint_id);
    }
}

impl Controller {
    pub(super) fn apply_policy(&mut self, inputs: &InputsHandle) {
        let generation = *inputs.generation.borrow();
        if !self.policy.dirty && self.policy.generation == Some(generation) {
            return;
        }
        let Some(dp) = self.dp.clone() else {
            return;
        };
        let inputs = inputs.inputs.lock().expect("inputs lock");
        let ap = &mut self.policy;
        let mut ok = true;
        ap.cidrs.assign(&compute::cidrs(inputs.policies.values()));
        dp.with_mut(|d| {
            for (net, id) in &ap.cidrs.by_cidr {
                if ap.cidrs_in_ipcache.get(net) != Some(id) {
                    match d.ipcache_upsert(*net, IpcacheValue::new(common::Identity::from_raw(*id).expect("CIDR identities are in range"))) {
                        Ok(()) => {
                            ap.cidrs_in_ipcache.insert(*net, *id);
                        }
                        Err(e) => {
                            tracing::warn!(cidr = %net, error = %e, "datapath map ipcache: CIDR peer");
                            ok = false;
                        }
                    }
                }
            }
        });
        for (stem, t) in &self.tracked {
            let Ok(labels) = t.record.identity_labels(&self.s.cluster) else {
                continue;
            };
            let want = compute::endpoint_policy_with(
                inputs.policies.values(),
                &inputs.identities,
                &ap.cidrs,
                &inputs.namespaces,
                &labels,
                &t.record.ports,
                &inputs.named_ports,
            );
            if ap.by_endpoint.get(&t.endpoint_id) == Some(&want) {
                continue;
            }
            let r = dp.with_mut(|d| match &want {
                Some(p) => d.set_policy(t.endpoint_id, p),
                None => d.remove_policy(t.endpoint_id),
            });
            match r {
                Ok(()) => {
                    tracing::info!(endpoint = %stem, id = t.endpoint_id,
                        rules = want.as_ref().map(|p| p.rules.len()),
                        "endpoint policy in force");
                    ap.by_endpoint.insert(t.endpoint_id, want);
                }
                Err(e) => {
                    tracing::warn!(endpoint = %stem, error = %e, "datapath map policy; retrying");
                    ok = false;
                }
            }
        }
        let stale: Vec<IpNet> = ap
            .cidrs_in_ipcache
            .keys()
            .filter(|n| !ap.cidrs.by_cidr.contains_key(n))
            .copied()
            .collect();
        dp.with_mut(|d| {
            for net in stale {
                match d.ipcache_remove(net) {
                    Ok(()) => {
                        ap.cidrs_in_ipcache.remove(&net);
                    }
                    Err(e) => {
                        tracing::warn!(cidr = %net, error = %e, "datapath map ipcache: CIDR peer");
                        ok = false;
                    }
                }
            }
        });
        ap.dirty = !ok;
        ap.generation = Some(generation);
    }
}
