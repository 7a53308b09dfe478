//! Kubernetes-shaped resources, as `kubectl apply -f` takes them: `v1 Namespace`,
//! `v1 Service`, `networking.k8s.io/v1 NetworkPolicy`, `ironmesh.io/v1 IPPool` and
//! `ironmesh.io/v1 BGPAdvertisement`.
//!
//! A manifest (YAML with several documents, or JSON; `kind: List` is unrolled) is read into
//! JSON values ([`parse_manifests`]), and each value is checked strictly ([`decode`]):
//! unknown fields, wrong types and bad values are all reported at once, each with its
//! path as kubectl shows it (`spec.ports[1].targetPort: Invalid value: ...`).
//!
//! What is stored is what was applied (the document, minus `status`) plus the fields meshd
//! fills in (`metadata.uid`, allocated `spec.clusterIP`) plus `status` ([`Stored`]).

mod bgpadvert;
mod fields;
mod ippool;
mod meta;
mod netpol;
mod service;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use bgpadvert::{
    Advertisement, AdvertisementType, BgpAdvertisementSpec, BgpAttributes, SERVICE_NAME_LABEL,
    SERVICE_NAMESPACE_LABEL,
};
pub use fields::FieldError;
pub use ippool::{IpPoolSpec, MAX_NODE_MASK_V4, MAX_NODE_MASK_V6, NodeMaskSize, PoolType};
pub use meta::{
    LabelSelector, ObjectMeta, Operator, Requirement, dns1123_label, dns1123_subdomain,
};
pub use netpol::{IpBlock, NetworkPolicySpec, Peer, PolicyPort, PolicyType, Rule};
pub use service::{
    ANNOTATION_AFFINITY, ANNOTATION_GLOBAL, ANNOTATION_HEALTH_CHECK, ClusterIpRequest,
    GlobalAffinity, HealthCheck, IpFamilyPolicy, LOAD_BALANCER_CLASS, LoadBalancerIngress,
    LoadBalancerStatus, PortRef, Protocol, ServicePort, ServiceSpec, ServiceStatus, ServiceType,
    SessionAffinity, TrafficPolicy,
};

use fields::{Errors, Obj};
use meta::NameRule;

/// The largest manifest one apply takes (kubectl's own limit for a request is 3 MiB).
pub const MAX_MANIFEST_BYTES: usize = 3 * 1024 * 1024;
/// The largest single object (etcd's default request limit is 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// The kinds ironmesh serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Service,
    NetworkPolicy,
    IpPool,
    BgpAdvertisement,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Namespace,
        Kind::Service,
        Kind::NetworkPolicy,
        Kind::IpPool,
        Kind::BgpAdvertisement,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Service => "v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::IpPool | Kind::BgpAdvertisement => "ironmesh.io/v1",
        }
    }

    /// `kind:` as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::IpPool => "IPPool",
            Kind::BgpAdvertisement => "BGPAdvertisement",
        }
    }

    /// Lowercase plural: the etcd key segment and what `get` prints (`service/web`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Service => "services",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::IpPool => "ippools",
            Kind::BgpAdvertisement => "bgpadvertisements",
        }
    }

    /// `kind/name` prefix as kubectl prints it: `service/web`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Service => "service",
            Kind::NetworkPolicy => "networkpolicy.networking.k8s.io",
            Kind::IpPool => "ippool.ironmesh.io",
            Kind::BgpAdvertisement => "bgpadvertisement.ironmesh.io",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Service | Kind::NetworkPolicy)
    }

    fn name_rule(self) -> NameRule {
        match self {
            Kind::Namespace => NameRule::Dns1123Label,
            Kind::Service => NameRule::Dns1035Label,
            Kind::NetworkPolicy | Kind::IpPool | Kind::BgpAdvertisement => {
                NameRule::Dns1123Subdomain
            }
        }
    }

    /// From what a user types: `svc`, `services`, `Service`, `netpol`, `ns`, `ippool`...
    pub fn from_cli(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        let l = l.split('.').next().unwrap_or("");
        Some(match l {
            "ns" | "namespace" | "namespaces" => Kind::Namespace,
            "svc" | "service" | "services" => Kind::Service,
            "netpol" | "networkpolicy" | "networkpolicies" => Kind::NetworkPolicy,
            "ippool" | "ippools" => Kind::IpPool,
            "bgpadvertisement" | "bgpadvertisements" | "bgpadv" => Kind::BgpAdvertisement,
            _ => return None,
        })
    }

    pub fn from_plural(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Namespace,
    Service(ServiceSpec),
    NetworkPolicy(NetworkPolicySpec),
    IpPool(IpPoolSpec),
    BgpAdvertisement(BgpAdvertisementSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Namespace => Kind::Namespace,
            Spec::Service(_) => Kind::Service,
            Spec::NetworkPolicy(_) => Kind::NetworkPolicy,
            Spec::IpPool(_) => Kind::IpPool,
            Spec::BgpAdvertisement(_) => Kind::BgpAdvertisement,
        }
    }
}

/// One checked object: its metadata, typed spec, and the document as applied (without
/// `status`), which is what gets stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub document: Value,
}

impl Object {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// `service/web`, as kubectl names an object in its messages.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind().singular(), self.meta.name)
    }

    /// The namespace ("" for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("")
    }
}

/// A document that failed its checks: every problem, each with its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// `Service "web"`, or a position when the kind or name is unknown (`document 3`).
    pub what: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "The {} is invalid:", self.what)?;
        if let [one] = self.errors.as_slice() {
            return write!(f, " {one}");
        }
        for e in &self.errors {
            write!(f, "\n* {e}")?;
        }
        Ok(())
    }
}

/// Why a manifest file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "the manifest has {size} bytes, more than the {MAX_MANIFEST_BYTES} one apply takes; split it into several files"
    )]
    TooLarge { size: usize },
    #[error("the manifest is not valid JSON: {0}")]
    Json(String),
    #[error("the manifest is not valid YAML: {0}")]
    Yaml(String),
    #[error(
        "document {index}: a manifest document must be an object with apiVersion and kind, got {got}"
    )]
    NotAnObject { index: usize, got: String },
}

/// Reads a manifest: JSON (one object, or a list of objects) or YAML (any number of
/// `---`-separated documents; empty ones are skipped). Objects of `kind: List` (as
/// `kubectl get -o yaml` writes several objects) are unrolled into their items.
pub fn parse_manifests(text: &str) -> Result<Vec<Value>, ParseError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ParseError::TooLarge { size: text.len() });
    }
    let trimmed = text.trim_start();
    let docs: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| ParseError::Json(e.to_string()))?;
        match v {
            Value::Array(items) => items,
            other => vec![other],
        }
    } else {
        serde_saphyr::from_multiple::<Value>(text)
            .map_err(|e| ParseError::Yaml(bounded(&e.to_string(), 400)))?
            .into_iter()
            .filter(|d| !d.is_null())
            .collect()
    };
    let mut out = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        match d {
            Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = m.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            Value::Object(_) => out.push(d),
            other => {
                return Err(ParseError::NotAnObject {
                    index: i + 1,
                    got: fields::quote(&other),
                });
            }
        }
    }
    Ok(out)
}

fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The kind a document names, checked against its apiVersion.
pub fn kind_of(doc: &Value) -> Result<Kind, FieldError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let err = |path: &str, detail: String| FieldError {
        path: path.into(),
        detail,
    };
    if kind.is_empty() {
        return Err(err("kind", "Required value".into()));
    }
    let Some(k) = Kind::ALL.into_iter().find(|k| k.name() == kind) else {
        let known: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.name()))
            .collect();
        return Err(err(
            "kind",
            format!(
                "Unsupported value: {kind:?}: ironmesh serves {}",
                known.join(", ")
            ),
        ));
    };
    if api.is_empty() {
        return Err(err("apiVersion", "Required value".into()));
    }
    if api != k.api_version() {
        return Err(err(
            "apiVersion",
            format!(
                "Unsupported value: {api:?}: kind {kind} is served as apiVersion {:?}",
                k.api_version()
            ),
        ));
    }
    Ok(k)
}

/// Checks one document and reads it into an [`Object`]. `status` is ignored (as the API
/// server ignores it on apply: it belongs to ironmesh).
pub fn decode(doc: &Value) -> Result<Object, Invalid> {
    let what_unknown = || {
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
        format!("{kind} {name:?}")
    };
    let size = serde_json::to_vec(doc).map(|v| v.len()).unwrap_or(0);
    if size > MAX_OBJECT_BYTES {
        return Err(Invalid {
            what: what_unknown(),
            errors: vec![FieldError {
                path: String::new(),
                detail: format!(
                    "Too long: the object has {size} bytes, more than {MAX_OBJECT_BYTES}"
                ),
            }],
        });
    }
    let kind = kind_of(doc).map_err(|e| Invalid {
        what: what_unknown(),
        errors: vec![e],
    })?;
    let mut errs = Errors::default();
    let Some(mut root) = Obj::new(doc, "", &mut errs) else {
        return Err(Invalid {
            what: what_unknown(),
            errors: errs.0,
        });
    };
    root.ignore(&["apiVersion", "kind", "status"]);
    let meta = meta::read_meta(&mut root, kind.name_rule(), kind.namespaced(), &mut errs);
    let spec = match kind {
        Kind::Namespace => {
            // `spec.finalizers` is the only field of a Namespace's spec.
            if let Some(mut s) = root.obj("spec", &mut errs) {
                let _ = s.strings("finalizers", &mut errs);
                s.finish(&mut errs);
            }
            Spec::Namespace
        }
        Kind::Service => Spec::Service(service::read_service(&mut root, &meta, &mut errs)),
        Kind::NetworkPolicy => {
            Spec::NetworkPolicy(netpol::read_network_policy(&mut root, &mut errs))
        }
        Kind::IpPool => Spec::IpPool(ippool::read_ip_pool(&mut root, &mut errs)),
        Kind::BgpAdvertisement => {
            Spec::BgpAdvertisement(bgpadvert::read_bgp_advertisement(&mut root, &mut errs))
        }
    };
    root.finish(&mut errs);
    if !errs.0.is_empty() {
        return Err(Invalid {
            what: format!("{} {:?}", kind.name(), meta.name),
            errors: errs.0,
        });
    }
    let mut document = doc.clone();
    if let Value::Object(m) = &mut document {
        m.remove("status");
        // The namespace is explicit in what is stored.
        if let Some(ns) = &meta.namespace
            && let Some(Value::Object(md)) = m.get_mut("metadata")
        {
            md.insert("namespace".into(), Value::String(ns.clone()));
        }
    }
    Ok(Object {
        meta,
        spec,
        document,
    })
}

/// A condition, as Kubernetes objects report them in `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

/// An object as stored in etcd: the applied document (with meshd's metadata and allocated
/// fields) and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub object: Object,
    pub status: Value,
}

impl Stored {
    /// The etcd value: the document with `status` added.
    pub fn encode(&self) -> Vec<u8> {
        let mut doc = self.object.document.clone();
        if let Value::Object(m) = &mut doc
            && !self.status.is_null()
        {
            m.insert("status".into(), self.status.clone());
        }
        serde_json::to_vec(&doc).expect("a JSON value always serializes")
    }

    /// Reads a stored value back, checking it as strictly as an apply (a stored object is
    /// input too: it may come from a remote cluster's etcd).
    pub fn decode(bytes: &[u8]) -> Result<Stored, Invalid> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| Invalid {
            what: "stored object".into(),
            errors: vec![FieldError {
                path: String::new(),
                detail: format!("not JSON: {e}"),
            }],
        })?;
        let status = doc.get("status").cloned().unwrap_or(Value::Null);
        let mut object = decode(&doc)?;
        if let Some(md) = doc.get("metadata") {
            let s = |k: &str| md.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            object.meta.uid = s("uid");
            object.meta.creation_timestamp = s("creationTimestamp");
            object.meta.generation = md.get("generation").and_then(Value::as_u64).unwrap_or(0);
        }
        Ok(Stored { object, status })
    }

    /// The status as a type (a status that does not read gives the default).
    pub fn status_as<T: for<'de> Deserialize<'de> + Default>(&self) -> T {
        serde_json::from_value(self.status.clone()).unwrap_or_default()
    }
}

/// Sets a metadata field of a document (uid, generation, creationTimestamp).
pub fn set_metadata(doc: &mut Value, field: &str, value: Value) {
    if let Value::Object(m) = doc {
        let md = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(md) = md {
            md.insert(field.into(), value);
        }
    }
}

/// Sets `spec.<field>` of a document (allocated `clusterIP`/`clusterIPs`).
pub fn set_spec(doc: &mut Value, field: &str, value: Value) {
    if let Value::Object(m) = doc {
        let spec = m.entry("spec").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(spec) = spec {
            spec.insert(field.into(), value);
        }
    }
}

/// Renders a value as YAML (for `get -o yaml`).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# cannot render as YAML: {e}\n"))
}
