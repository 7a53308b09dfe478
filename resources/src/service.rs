//! `v1 Service` with Kubernetes' semantics and validation rules (core/v1 validation), plus
//! ironmesh's global-service annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Errors, Obj, join};
use common::port::iana_svc_name;

use crate::meta::{ObjectMeta, check_labels, dns1123_label, unique};

/// `ironmesh.io/global: "true"`: the service is one across every cluster of the mesh that
/// marks it global.
pub const ANNOTATION_GLOBAL: &str = "ironmesh.io/global";
/// `ironmesh.io/affinity: local|remote|none`: which cluster's backends a global service
/// prefers.
pub const ANNOTATION_AFFINITY: &str = "ironmesh.io/affinity";
/// `ironmesh.io/health-check: tcp` or `http:/path`: every node checks its own backends of the
/// service (each target port, every second); a backend failing 3 checks in a row is
/// quarantined (no new connections, on every node) until 2 checks in a row pass.
pub const ANNOTATION_HEALTH_CHECK: &str = "ironmesh.io/health-check";

/// An active health check of a service's backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthCheck {
    /// A TCP connection to the backend's port is accepted.
    Tcp,
    /// `GET <path>` on the backend's port answers 2xx or 3xx.
    Http(String),
}

/// The `spec.loadBalancerClass` ironmesh serves; a service naming another class is left to
/// that class's controller (no VIP from ironmesh's pools).
pub const LOAD_BALANCER_CLASS: &str = "ironmesh.io/lb";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// `targetPort` (services) or `port` (network policies): a number or a named container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: PortRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// Which clusters' backends a global service prefers (`ironmesh.io/affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalAffinity {
    #[default]
    None,
    Local,
    Remote,
}

/// What `spec.clusterIP` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClusterIpRequest {
    /// Absent or "": meshd allocates one from the service CIDR (or keeps the one it has).
    #[default]
    Allocate,
    /// "None": a headless service (no virtual IP, no load balancing).
    Headless,
    /// A specific address inside the service CIDR.
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// `None`: no selector, so no backends are computed (Kubernetes: endpoints managed by
    /// someone else); `Some(empty)` is refused at validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Vec<ServicePort>,
    /// The allocated (or requested) cluster IPs; `["None"]` spelled as `headless`.
    #[serde(rename = "clusterIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    pub ip_family_policy: IpFamilyPolicy,
    #[serde(rename = "externalIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    pub session_affinity: SessionAffinity,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout_seconds: Option<u32>,
    #[serde(
        rename = "loadBalancerIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_not_ready_addresses: bool,
    /// From the annotations: one service across the clusters that mark it global.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global: bool,
    pub affinity: GlobalAffinity,
    /// From `ironmesh.io/health-check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl ServiceSpec {
    /// Whether ironmesh allocates and announces a LoadBalancer VIP for it.
    pub fn wants_vip(&self) -> bool {
        self.type_ == ServiceType::LoadBalancer
            && self
                .load_balancer_class
                .as_deref()
                .is_none_or(|c| c == LOAD_BALANCER_CLASS)
    }
}

fn enum_field<T: Copy>(
    o: &mut Obj<'_>,
    name: &'static str,
    choices: &[(&str, T)],
    errs: &mut Errors,
) -> Option<T> {
    let path = o.field_path(name);
    let v = o.get(name)?;
    if let Value::String(s) = v
        && let Some((_, t)) = choices.iter().find(|(n, _)| n == s)
    {
        return Some(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    errs.unsupported(&path, v, &names);
    None
}

pub(crate) fn read_protocol(o: &mut Obj<'_>, errs: &mut Errors) -> Protocol {
    enum_field(
        o,
        "protocol",
        &[
            ("TCP", Protocol::Tcp),
            ("UDP", Protocol::Udp),
            ("SCTP", Protocol::Sctp),
        ],
        errs,
    )
    .unwrap_or_default()
}

/// A number 1-65535 or an IANA service name.
pub(crate) fn read_port_ref(v: &Value, path: &str, errs: &mut Errors) -> Option<PortRef> {
    match v {
        Value::Number(_) => {
            crate::fields::int(v, path, 1, 65535, errs).map(|n| PortRef::Number(n as u16))
        }
        Value::String(s) => match iana_svc_name(s) {
            Ok(()) => Some(PortRef::Name(s.clone())),
            Err(why) => {
                errs.invalid(path, v, why);
                None
            }
        },
        other => {
            errs.invalid(
                path,
                other,
                "must be a port number (1-65535) or a port name",
            );
            None
        }
    }
}

fn read_ip(v: &Value, path: &str, errs: &mut Errors) -> Option<IpAddr> {
    match v.as_str().map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => Some(ip),
        _ => {
            errs.invalid(
                path,
                v,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
            None
        }
    }
}

pub(crate) fn read_service(
    root: &mut Obj<'_>,
    meta: &ObjectMeta,
    errs: &mut Errors,
) -> ServiceSpec {
    let mut spec = ServiceSpec::default();
    let Some(mut s) = root.obj("spec", errs) else {
        errs.required("spec.ports");
        return spec;
    };
    if s.has("externalName")
        || matches!(s.get("type"), Some(Value::String(t)) if t == "ExternalName")
    {
        errs.forbidden(
            "spec.type",
            "ExternalName services are DNS aliases, which ironmesh does not serve; use a ClusterIP service with a selector",
        );
        s.ignore(&["externalName"]);
    } else {
        spec.type_ = enum_field(
            &mut s,
            "type",
            &[
                ("ClusterIP", ServiceType::ClusterIP),
                ("NodePort", ServiceType::NodePort),
                ("LoadBalancer", ServiceType::LoadBalancer),
            ],
            errs,
        )
        .unwrap_or_default();
    }
    // The selector: absent means no automatic backends; empty is refused (it would select
    // every pod of the namespace, which Kubernetes also treats as "no selector").
    if s.has("selector") {
        let sel = s.string_map("selector", errs);
        check_labels(&sel, "spec.selector", errs);
        spec.selector = if sel.is_empty() { None } else { Some(sel) };
    }
    let ports = s.list("ports", errs).unwrap_or_default();
    let headless_request = matches!(s.get("clusterIP"), Some(Value::String(c)) if c == "None");
    if ports.is_empty() && !headless_request {
        errs.required("spec.ports");
    }
    let several = ports.len() > 1;
    for (p, v) in ports {
        let Some(mut o) = Obj::new(v, &p, errs) else {
            continue;
        };
        let name = o.string("name", errs);
        if let Some(n) = &name
            && let Err(why) = dns1123_label(n)
        {
            errs.invalid(&join(&p, "name"), &Value::String(n.clone()), why);
        }
        if several && name.as_deref().is_none_or(str::is_empty) {
            errs.required(&join(&p, "name"));
        }
        let protocol = read_protocol(&mut o, errs);
        let port = o.int("port", 1, 65535, errs).map(|n| n as u16);
        if port.is_none() && !o.has("port") {
            errs.required(&join(&p, "port"));
        }
        let target_path = join(&p, "targetPort");
        let target_port = match o.get("targetPort") {
            // Kubernetes: targetPort 0 or absent means "the same as port".
            Some(Value::Number(n)) if n.as_i64() == Some(0) => port.map(PortRef::Number),
            Some(v) => read_port_ref(v, &target_path, errs),
            None => port.map(PortRef::Number),
        };
        let node_port = o.int("nodePort", 30000, 32767, errs).map(|n| n as u16);
        if node_port.is_some() && spec.type_ == ServiceType::ClusterIP {
            errs.forbidden(
                &join(&p, "nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            );
        }
        let app_protocol = o.string("appProtocol", errs);
        o.finish(errs);
        if let (Some(port), Some(target_port)) = (port, target_port) {
            spec.ports.push(ServicePort {
                name: name.filter(|n| !n.is_empty()),
                protocol,
                port,
                target_port,
                node_port,
                app_protocol,
            });
        }
    }
    unique(
        spec.ports.iter().enumerate().filter_map(|(i, p)| {
            p.name
                .as_deref()
                .map(|n| (format!("spec.ports[{i}].name"), n))
        }),
        errs,
    );
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if !seen.insert((p.port, p.protocol)) {
            errs.duplicate(
                &format!("spec.ports[{i}]"),
                &Value::String(format!("{}/{}", p.port, p.protocol.as_str())),
            );
        }
    }
    let mut node_ports = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(np) = p.node_port
            && !node_ports.insert((np, p.protocol))
        {
            errs.duplicate(&format!("spec.ports[{i}].nodePort"), &Value::from(np));
        }
    }

    // clusterIP / clusterIPs: "None" (headless), "" (allocate) or addresses.
    let mut requested: Vec<ClusterIpRequest> = Vec::new();
    if let Some(c) = s.string("clusterIP", errs) {
        requested.push(parse_cluster_ip(&c, "spec.clusterIP", errs));
    }
    if let Some(list) = s.strings("clusterIPs", errs) {
        let ips: Vec<ClusterIpRequest> = list
            .iter()
            .map(|(p, c)| parse_cluster_ip(c, p, errs))
            .collect();
        if let (Some(first), Some(single)) = (ips.first(), requested.first())
            && first != single
        {
            errs.invalid(
                "spec.clusterIPs[0]",
                &Value::String(list[0].1.clone()),
                "must match `spec.clusterIP`",
            );
        }
        if ips.len() > 2 {
            errs.invalid(
                "spec.clusterIPs",
                &Value::from(ips.len()),
                "may have at most 2 entries (one per IP family)",
            );
        }
        requested = ips;
    }
    for r in &requested {
        match r {
            ClusterIpRequest::Headless => spec.headless = true,
            ClusterIpRequest::Ip(ip) => spec.cluster_ips.push(*ip),
            ClusterIpRequest::Allocate => {}
        }
    }
    if spec.headless && spec.type_ != ServiceType::ClusterIP {
        errs.invalid(
            "spec.clusterIP",
            &Value::String("None".into()),
            "may not be set to 'None' for LoadBalancer or NodePort services",
        );
    }
    if spec.cluster_ips.len() == 2 && spec.cluster_ips[0].is_ipv4() == spec.cluster_ips[1].is_ipv4()
    {
        errs.invalid(
            "spec.clusterIPs[1]",
            &Value::String(spec.cluster_ips[1].to_string()),
            "may specify no more than one IP for each IP family",
        );
    }
    if let Some(fams) = s.strings("ipFamilies", errs) {
        for (p, f) in &fams {
            if f != "IPv4" && f != "IPv6" {
                errs.unsupported(p, &Value::String(f.clone()), &["IPv4", "IPv6"]);
            }
        }
        unique(fams.iter().map(|(p, f)| (p.clone(), f.as_str())), errs);
        spec.ip_families = fams.into_iter().map(|(_, f)| f).collect();
    }
    spec.ip_family_policy = enum_field(
        &mut s,
        "ipFamilyPolicy",
        &[
            ("SingleStack", IpFamilyPolicy::SingleStack),
            ("PreferDualStack", IpFamilyPolicy::PreferDualStack),
            ("RequireDualStack", IpFamilyPolicy::RequireDualStack),
        ],
        errs,
    )
    .unwrap_or_default();
    if spec.ip_family_policy == IpFamilyPolicy::SingleStack && spec.ip_families.len() > 1 {
        errs.invalid(
            "spec.ipFamilies",
            &Value::from(spec.ip_families.clone()),
            "when `ipFamilyPolicy` is 'SingleStack' only one family may be given",
        );
    }
    for (p, v) in s.list("externalIPs", errs).unwrap_or_default() {
        if let Some(ip) = read_ip(v, &p, errs) {
            spec.external_ips.push(ip);
        }
    }
    let traffic = [
        ("Cluster", TrafficPolicy::Cluster),
        ("Local", TrafficPolicy::Local),
    ];
    if let Some(etp) = enum_field(&mut s, "externalTrafficPolicy", &traffic, errs) {
        if spec.type_ == ServiceType::ClusterIP && spec.external_ips.is_empty() {
            errs.invalid(
                "spec.externalTrafficPolicy",
                &Value::String(format!("{etp:?}")),
                "may only be set for services with external traffic (`type` NodePort or LoadBalancer, or externalIPs)",
            );
        }
        spec.external_traffic_policy = etp;
    }
    spec.internal_traffic_policy =
        enum_field(&mut s, "internalTrafficPolicy", &traffic, errs).unwrap_or_default();
    spec.session_affinity = enum_field(
        &mut s,
        "sessionAffinity",
        &[
            ("None", SessionAffinity::None),
            ("ClientIP", SessionAffinity::ClientIP),
        ],
        errs,
    )
    .unwrap_or_default();
    if let Some(mut cfg) = s.obj("sessionAffinityConfig", errs) {
        if let Some(mut cip) = cfg.obj("clientIP", errs) {
            spec.session_affinity_timeout_seconds =
                cip.int("timeoutSeconds", 1, 86400, errs).map(|n| n as u32);
            cip.finish(errs);
        }
        cfg.finish(errs);
        if spec.session_affinity != SessionAffinity::ClientIP {
            errs.forbidden(
                "spec.sessionAffinityConfig",
                "must not be set when `sessionAffinity` is None",
            );
        }
    }
    if spec.session_affinity == SessionAffinity::ClientIP
        && spec.session_affinity_timeout_seconds.is_none()
    {
        spec.session_affinity_timeout_seconds = Some(10800);
    }
    if let Some(v) = s.get("loadBalancerIP") {
        if let Some(ip) = read_ip(v, "spec.loadBalancerIP", errs) {
            spec.load_balancer_ip = Some(ip);
        }
        if spec.type_ != ServiceType::LoadBalancer {
            errs.forbidden(
                "spec.loadBalancerIP",
                "may only be used when `type` is 'LoadBalancer'",
            );
        }
    }
    if let Some(c) = s.string("loadBalancerClass", errs) {
        if spec.type_ != ServiceType::LoadBalancer {
            errs.forbidden(
                "spec.loadBalancerClass",
                "may only be used when `type` is 'LoadBalancer'",
            );
        }
        spec.load_balancer_class = Some(c);
    }
    for (p, c) in s
        .strings("loadBalancerSourceRanges", errs)
        .unwrap_or_default()
    {
        match c.parse::<IpNet>() {
            Ok(n) => spec.load_balancer_source_ranges.push(n),
            Err(_) => errs.invalid(&p, &Value::String(c), "must be a CIDR, e.g. 192.0.2.0/24"),
        }
    }
    spec.publish_not_ready_addresses = s.bool("publishNotReadyAddresses", errs).unwrap_or(false);
    // Accepted for compatibility with manifests written for kube-proxy: node ports are
    // always allocated per port, health-check node ports are not used.
    s.ignore(&[
        "allocateLoadBalancerNodePorts",
        "healthCheckNodePort",
        "trafficDistribution",
    ]);
    s.finish(errs);

    // The global-service annotations (as Cilium's service.cilium.io/global).
    match meta.annotations.get(ANNOTATION_GLOBAL).map(String::as_str) {
        None | Some("false") => {}
        Some("true") => spec.global = true,
        Some(other) => errs.unsupported(
            &format!("metadata.annotations[{ANNOTATION_GLOBAL}]"),
            &Value::String(other.into()),
            &["true", "false"],
        ),
    }
    match meta
        .annotations
        .get(ANNOTATION_AFFINITY)
        .map(String::as_str)
    {
        None | Some("none") => {}
        Some("local") => spec.affinity = GlobalAffinity::Local,
        Some("remote") => spec.affinity = GlobalAffinity::Remote,
        Some(other) => errs.unsupported(
            &format!("metadata.annotations[{ANNOTATION_AFFINITY}]"),
            &Value::String(other.into()),
            &["local", "remote", "none"],
        ),
    }
    if let Some(h) = meta.annotations.get(ANNOTATION_HEALTH_CHECK) {
        let path = format!("metadata.annotations[{ANNOTATION_HEALTH_CHECK}]");
        match h.as_str() {
            "tcp" => spec.health_check = Some(HealthCheck::Tcp),
            other => match other.strip_prefix("http:") {
                Some(p)
                    if p.starts_with('/')
                        && p.len() <= 256
                        && p.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    spec.health_check = Some(HealthCheck::Http(p.to_string()));
                }
                _ => errs.invalid(
                    &path,
                    &Value::String(other.into()),
                    "use \"tcp\" or \"http:/path\" (a path of at most 256 printable characters)",
                ),
            },
        }
    }
    if meta.annotations.contains_key(ANNOTATION_AFFINITY) && !spec.global {
        errs.forbidden(
            &format!("metadata.annotations[{ANNOTATION_AFFINITY}]"),
            format!("applies to global services only: also set {ANNOTATION_GLOBAL}: \"true\""),
        );
    }
    spec
}

fn parse_cluster_ip(c: &str, path: &str, errs: &mut Errors) -> ClusterIpRequest {
    match c {
        "" => ClusterIpRequest::Allocate,
        "None" => ClusterIpRequest::Headless,
        other => match other.parse::<IpAddr>() {
            Ok(ip) => ClusterIpRequest::Ip(ip),
            Err(_) => {
                errs.invalid(
                    path,
                    &Value::String(other.into()),
                    "must be empty, 'None', or a valid IP address",
                );
                ClusterIpRequest::Allocate
            }
        },
    }
}

/// `status` of a Service, written by meshd.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerIngress {
    pub ip: IpAddr,
}
