//! Value checks per resource kind, for readers of keys written by others (the mirror, the
//! merged view): a value that fails is skipped with a log line and the last good one is kept.

use common::ClusterName;

use crate::endpoints::EndpointRecord;
use crate::identity::{ByLabelsValue, IdentityValue};
use crate::ipam::{NodeCidrsValue, PodCidrValue};
use crate::lbipam::{ServiceVipsValue, VipValue};
use crate::nodes::NodeRecord;
use crate::schema::Resource;
use crate::services::ServiceRecord;

fn json<T: for<'de> serde::Deserialize<'de>>(value: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks that `value` is a valid value of `resource` in `cluster`'s scope.
pub fn check_value(cluster: &ClusterName, resource: &Resource, value: &[u8]) -> Result<(), String> {
    match resource {
        Resource::Node(n) => NodeRecord::decode(cluster, n, value).map(drop),
        Resource::Endpoint(ip) => EndpointRecord::decode(cluster, *ip, value).map(drop),
        Resource::Service(s) => ServiceRecord::decode(cluster, s, value).map(drop),
        Resource::Identity(_) => json::<IdentityValue>(value),
        Resource::IdentityByLabels(_) => json::<ByLabelsValue>(value),
        Resource::PodCidr(_) => json::<PodCidrValue>(value),
        Resource::PodCidrsOfNode(_) => json::<NodeCidrsValue>(value),
        Resource::Vip(_) => json::<VipValue>(value),
        Resource::VipsOfService(_) => json::<ServiceVipsValue>(value),
        Resource::Policy(k) => crate::policy::PolicyRecord::decode(k, value)
            .map(drop)
            .map_err(|e| e.to_string()),
        Resource::ClusterIp(_) => json::<VipValue>(value),
        Resource::ClusterIpsOfService(_) => json::<ServiceVipsValue>(value),
        Resource::Object(name) => crate::objects::decode(name, value).map(drop),
        Resource::Health(ip) => crate::objects::HealthValue::decode(*ip, value).map(drop),
        Resource::Event(..) => json::<crate::events::Event>(value),
        Resource::EncryptionDesired => json::<crate::rollout::DesiredValue>(value),
        Resource::EncryptionNode(_) => json::<crypto::rollout::NodeRollout>(value),
        Resource::IdentityRef(..) | Resource::MirrorLeader(_) => json::<serde_json::Value>(value),
    }
}
