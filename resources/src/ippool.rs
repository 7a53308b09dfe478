//! `ironmesh.io/v1 IPPool`: address pools, shaped like Cilium's CiliumLoadBalancerIPPool and
//! Calico's IPPool. A LoadBalancer pool gives VIPs to LoadBalancer services (LB-IPAM), chosen
//! by the service's and its namespace's labels.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Errors, Obj};
use crate::meta::{LabelSelector, read_selector};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PoolType {
    #[default]
    LoadBalancer,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(rename = "type")]
    pub type_: PoolType,
    pub cidrs: Vec<IpNet>,
    /// Services (by their labels) that may take addresses from this pool; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Namespaces (by their labels) whose services may use this pool; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// A disabled pool gives no new addresses; existing ones stay.
    #[serde(default)]
    pub disabled: bool,
}

pub(crate) fn read_ip_pool(root: &mut Obj<'_>, errs: &mut Errors) -> IpPoolSpec {
    let mut spec = IpPoolSpec::default();
    let Some(mut s) = root.obj("spec", errs) else {
        errs.required("spec.cidrs");
        return spec;
    };
    match s.get("type") {
        None => {}
        Some(Value::String(t)) if t == "LoadBalancer" => spec.type_ = PoolType::LoadBalancer,
        Some(Value::String(t)) if t == "PodCIDR" => errs.forbidden(
            "spec.type",
            "PodCIDR pools are not served from resources yet: set them in meshd's config (mesh.pod_cidr_pools)",
        ),
        Some(other) => errs.unsupported("spec.type", other, &["LoadBalancer"]),
    }
    let cidrs = s.strings("cidrs", errs).unwrap_or_default();
    if cidrs.is_empty() {
        errs.required("spec.cidrs");
    }
    for (p, c) in cidrs {
        match c.parse::<IpNet>() {
            Ok(n) if n.trunc() != n => errs.invalid(
                &p,
                &Value::String(c),
                format!("has host bits set; write {}", n.trunc()),
            ),
            Ok(n) => {
                if let Some(prev) = spec
                    .cidrs
                    .iter()
                    .find(|o| o.contains(&n.network()) || n.contains(&o.network()))
                {
                    errs.invalid(
                        &p,
                        &Value::String(c),
                        format!("overlaps {prev} of this pool"),
                    );
                } else {
                    spec.cidrs.push(n);
                }
            }
            Err(_) => errs.invalid(&p, &Value::String(c), "must be a CIDR, e.g. 203.0.113.0/28"),
        }
    }
    spec.service_selector = s
        .obj("serviceSelector", errs)
        .map(|o| read_selector(o, errs));
    spec.namespace_selector = s
        .obj("namespaceSelector", errs)
        .map(|o| read_selector(o, errs));
    spec.disabled = s.bool("disabled", errs).unwrap_or(false);
    s.finish(errs);
    spec
}
