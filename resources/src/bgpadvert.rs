//! `ironmesh.io/v1 BGPAdvertisement`: which of the node's prefixes bgpd announces and with which
//! path attributes, shaped like Cilium's CiliumBGPAdvertisement (cluster-scoped):
//!
//! ```yaml
//! apiVersion: ironmesh.io/v1
//! kind: BGPAdvertisement
//! metadata: {name: vips}
//! spec:
//!   advertisements:
//!   - advertisementType: Service        # or PodCIDR
//!     service: {addresses: [LoadBalancerIP]}
//!     selector: {matchLabels: {expose: bgp}}
//!     attributes:
//!       communities: {standard: ["65001:100"], large: ["65001:1:1"], wellKnown: [no-export]}
//!       localPreference: 200
//! ```
//!
//! A Service advertisement selects services by their labels and by the pseudo labels
//! `io.kubernetes.service.namespace` and `io.kubernetes.service.name` (as Cilium does); its
//! selector is required (`{}` selects every service), so an advertisement never selects
//! nothing by a forgotten field.

use common::{Community, LargeCommunity};
use serde_json::Value;

use crate::fields::{Errors, Obj, join};
use crate::meta::{LabelSelector, read_selector};

/// The pseudo label of a service's namespace in a Service advertisement's selector.
pub const SERVICE_NAMESPACE_LABEL: &str = "io.kubernetes.service.namespace";
/// The pseudo label of a service's name in a Service advertisement's selector.
pub const SERVICE_NAME_LABEL: &str = "io.kubernetes.service.name";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpAdvertisementSpec {
    pub advertisements: Vec<Advertisement>,
}

/// What one advertisement announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertisementType {
    /// The node's PodCIDRs.
    PodCidr,
    /// The LoadBalancer addresses of the services the selector takes.
    Service { selector: LabelSelector },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub type_: AdvertisementType,
    pub attributes: BgpAttributes,
}

/// Path attributes added to the announced prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpAttributes {
    /// Standard and well-known communities (RFC 1997).
    pub communities: Vec<Community>,
    /// Large communities (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF (sent to iBGP peers only, RFC 4271 §5.1.5).
    pub local_preference: Option<u32>,
}

impl Advertisement {
    /// Whether this advertisement takes the service `namespace/name` with `labels`.
    pub fn selects_service<'a>(
        &self,
        namespace: &'a str,
        name: &'a str,
        labels: impl Fn(&str) -> Option<&'a str>,
    ) -> bool {
        match &self.type_ {
            AdvertisementType::PodCidr => false,
            AdvertisementType::Service { selector } => selector.matches(|k| match k {
                SERVICE_NAMESPACE_LABEL => Some(namespace),
                SERVICE_NAME_LABEL => Some(name),
                _ => labels(k),
            }),
        }
    }
}

pub(crate) fn read_bgp_advertisement(
    root: &mut Obj<'_>,
    errs: &mut Errors,
) -> BgpAdvertisementSpec {
    let mut spec = BgpAdvertisementSpec::default();
    let Some(mut s) = root.obj("spec", errs) else {
        errs.required("spec.advertisements");
        return spec;
    };
    let items = s.list("advertisements", errs).unwrap_or_default();
    if items.is_empty() {
        errs.required("spec.advertisements");
    }
    for (p, v) in items {
        let Some(mut a) = Obj::new(v, &p, errs) else {
            continue;
        };
        if let Some(adv) = read_advertisement(&mut a, &p, errs) {
            spec.advertisements.push(adv);
        }
        a.finish(errs);
    }
    s.finish(errs);
    spec
}

fn read_advertisement(a: &mut Obj<'_>, p: &str, errs: &mut Errors) -> Option<Advertisement> {
    let type_path = join(p, "advertisementType");
    let kind = match a.get("advertisementType") {
        None => {
            errs.required(&type_path);
            None
        }
        Some(Value::String(t)) if t == "PodCIDR" => Some(false),
        Some(Value::String(t)) if t == "Service" => Some(true),
        Some(other) => {
            errs.unsupported(&type_path, other, &["PodCIDR", "Service"]);
            None
        }
    };
    let service = a.obj("service", errs);
    let selector = a.obj("selector", errs).map(|o| read_selector(o, errs));
    let attributes = a
        .obj("attributes", errs)
        .map(|o| read_attributes(o, errs))
        .unwrap_or_default();
    match kind? {
        false => {
            if service.is_some() {
                errs.forbidden(&join(p, "service"), "only for advertisementType Service");
            }
            if selector.is_some() {
                errs.forbidden(
                    &join(p, "selector"),
                    "only for advertisementType Service: a node announces its own PodCIDRs",
                );
            }
            Some(Advertisement {
                type_: AdvertisementType::PodCidr,
                attributes,
            })
        }
        true => {
            match service {
                Some(svc) => read_service_addresses(svc, errs),
                None => errs.required(&join(p, "service.addresses")),
            }
            let Some(selector) = selector else {
                errs.push(
                    &join(p, "selector"),
                    "Required value: which services to announce; `selector: {}` selects every service",
                );
                return None;
            };
            Some(Advertisement {
                type_: AdvertisementType::Service { selector },
                attributes,
            })
        }
    }
}

fn read_service_addresses(mut svc: Obj<'_>, errs: &mut Errors) {
    let path = svc.field_path("addresses");
    let addrs = svc.strings("addresses", errs).unwrap_or_default();
    if addrs.is_empty() {
        errs.required(&path);
    }
    for (ap, a) in addrs {
        match a.as_str() {
            "LoadBalancerIP" => {}
            "ClusterIP" | "ExternalIP" => errs.forbidden(
                &ap,
                format!(
                    "ironmesh announces LoadBalancer addresses only; a {a} reaches the service \
                     from inside the cluster (use a LoadBalancer service to expose it)"
                ),
            ),
            _ => errs.unsupported(&ap, &Value::String(a.clone()), &["LoadBalancerIP"]),
        }
    }
    svc.finish(errs);
}

fn read_attributes(mut o: Obj<'_>, errs: &mut Errors) -> BgpAttributes {
    let mut attrs = BgpAttributes::default();
    if let Some(mut c) = o.obj("communities", errs) {
        for field in ["standard", "wellKnown"] {
            for (p, s) in c.strings(field, errs).unwrap_or_default() {
                match s.parse::<Community>() {
                    Ok(v) if field == "wellKnown" && v.0 < 0xFFFF_0000 => errs.invalid(
                        &p,
                        &Value::String(s),
                        "is not a well-known community; put ASN:VALUE communities under `standard`",
                    ),
                    Ok(v) => attrs.communities.push(v),
                    Err(e) => errs.invalid(&p, &Value::String(s), e),
                }
            }
        }
        for (p, s) in c.strings("large", errs).unwrap_or_default() {
            match s.parse::<LargeCommunity>() {
                Ok(v) => attrs.large_communities.push(v),
                Err(e) => errs.invalid(&p, &Value::String(s), e),
            }
        }
        c.finish(errs);
    }
    attrs.local_preference = o
        .int("localPreference", 0, i64::from(u32::MAX), errs)
        .and_then(|n| u32::try_from(n).ok());
    o.finish(errs);
    attrs.communities.sort();
    attrs.communities.dedup();
    attrs.large_communities.sort();
    attrs.large_communities.dedup();
    attrs
}
