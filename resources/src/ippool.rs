//! `ironmesh.io/v1 IPPool`: address pools, shaped like Cilium's CiliumLoadBalancerIPPool /
//! CiliumPodIPPool and Calico's IPPool. A LoadBalancer pool gives VIPs to LoadBalancer
//! services (LB-IPAM), chosen by the service's and its namespace's labels. A PodCIDR pool gives
//! nodes blocks of `nodeMaskSize` (per family) for the pods of the namespaces its
//! `namespaceSelector` takes (multi-pool IPAM); a node gets another block of a pool when the
//! ones it has are full.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Errors, Obj};
use crate::meta::{LabelSelector, read_selector};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PoolType {
    #[default]
    LoadBalancer,
    #[serde(rename = "PodCIDR")]
    PodCidr,
}

/// The prefix length of the blocks a PodCIDR pool gives nodes, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMaskSize {
    pub ipv4: u8,
    pub ipv6: u8,
}

/// Kubernetes' (and Cilium's cluster-pool) defaults: a /24 and a /64 per node.
impl Default for NodeMaskSize {
    fn default() -> Self {
        NodeMaskSize { ipv4: 24, ipv6: 64 }
    }
}

impl NodeMaskSize {
    /// The mask for a CIDR of `net`'s family.
    pub fn for_net(&self, net: &IpNet) -> u8 {
        match net {
            IpNet::V4(_) => self.ipv4,
            IpNet::V6(_) => self.ipv6,
        }
    }
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
    /// PodCIDR pools: the size of a node's block per family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mask_size: Option<NodeMaskSize>,
}

impl IpPoolSpec {
    /// The node mask of a PodCIDR pool (its defaults when the spec names none).
    pub fn masks(&self) -> NodeMaskSize {
        self.node_mask_size.unwrap_or_default()
    }
}

/// The smallest node block the CNI can use: a gateway and at least one pod besides the
/// network (and IPv4 broadcast) address.
pub const MAX_NODE_MASK_V4: u8 = 30;
pub const MAX_NODE_MASK_V6: u8 = 126;

pub(crate) fn read_ip_pool(root: &mut Obj<'_>, errs: &mut Errors) -> IpPoolSpec {
    let mut spec = IpPoolSpec::default();
    let Some(mut s) = root.obj("spec", errs) else {
        errs.required("spec.cidrs");
        return spec;
    };
    match s.get("type") {
        None => {}
        Some(Value::String(t)) if t == "LoadBalancer" => spec.type_ = PoolType::LoadBalancer,
        Some(Value::String(t)) if t == "PodCIDR" => spec.type_ = PoolType::PodCidr,
        Some(other) => errs.unsupported("spec.type", other, &["LoadBalancer", "PodCIDR"]),
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
    let masks = s.obj("nodeMaskSize", errs).map(|mut m| {
        let d = NodeMaskSize::default();
        let v = NodeMaskSize {
            ipv4: m
                .int("ipv4", 0, MAX_NODE_MASK_V4.into(), errs)
                .map_or(d.ipv4, |n| n as u8),
            ipv6: m
                .int("ipv6", 0, MAX_NODE_MASK_V6.into(), errs)
                .map_or(d.ipv6, |n| n as u8),
        };
        m.finish(errs);
        v
    });
    match spec.type_ {
        PoolType::LoadBalancer => {
            if masks.is_some() {
                errs.forbidden(
                    "spec.nodeMaskSize",
                    "only a PodCIDR pool has node blocks; remove it or set spec.type: PodCIDR",
                );
            }
        }
        PoolType::PodCidr => {
            if spec.service_selector.is_some() {
                errs.forbidden(
                    "spec.serviceSelector",
                    "a PodCIDR pool is chosen by its pods' namespaces (spec.namespaceSelector), not by services",
                );
            }
            let m = masks.unwrap_or_default();
            for (i, c) in spec.cidrs.iter().enumerate() {
                let (mask, fam) = match c {
                    IpNet::V4(_) => (m.ipv4, "ipv4"),
                    IpNet::V6(_) => (m.ipv6, "ipv6"),
                };
                if mask < c.prefix_len() {
                    errs.invalid(
                        &format!("spec.nodeMaskSize.{fam}"),
                        &Value::from(mask),
                        format!(
                            "a node block /{mask} is larger than spec.cidrs[{i}] {c}; use /{} or longer",
                            c.prefix_len()
                        ),
                    );
                }
            }
            spec.node_mask_size = Some(m);
        }
    }
    s.finish(errs);
    spec
}
