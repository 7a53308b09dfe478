//! The etcd key schema, version 1 (see docs/etcd-schema.md).
//!
//! ```text
//! ironmesh/v1/clusters/<cluster>/<resource>   written by the cluster's own nodes
//! ironmesh/v1/mirror/<remote>/<resource>      a remote cluster's state, mirrored
//! ironmesh/v1/mirror/<remote>/synced          the mirror's initial sync is done
//! ironmesh/v1/mirror/<remote>/status          the mirror's health (stale or not)
//! ```
//!
//! Keys are built with [`Key`]'s `Display` and read back with [`Key::parse`],
//! which accepts only the canonical spelling, so each value has one key.

mod escape;

use std::fmt;
use std::net::IpAddr;

use common::{ClusterName, Identity, Labels, NodeName, ServiceKey};
use ipnet::IpNet;

pub use escape::{escape, unescape};

/// Everything ironmesh stores lives under this prefix.
pub const ROOT: &str = "ironmesh/";
pub const VERSION: &str = "v1";
/// The segment that stands for the empty label set.
pub const EMPTY_LABELS: &str = "_empty";

/// Why a key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("key is not UTF-8")]
    NotUtf8,
    #[error("key {key:?} is not an ironmesh key (expected prefix \"ironmesh/v1/\")")]
    Foreign { key: String },
    #[error("key {key:?} has schema version {version:?}; this build reads only v1")]
    Version { key: String, version: String },
    /// A kind this build does not know, e.g. written by a newer minor release;
    /// readers may skip such keys.
    #[error("key {key:?} has unknown resource kind {kind:?}")]
    UnknownKind { key: String, kind: String },
    #[error("key {key:?} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    #[error("key {key:?} is not in canonical form; the canonical key is {canonical:?}")]
    NonCanonical { key: String, canonical: String },
}

/// Whose state a key holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A cluster's own state, in its own etcd.
    Cluster(ClusterName),
    /// A remote cluster's state, mirrored into the local etcd.
    Mirror(ClusterName),
}

impl Scope {
    /// `ironmesh/v1/clusters/<c>/` or `ironmesh/v1/mirror/<c>/`: watch this
    /// prefix for all of a scope's keys.
    pub fn prefix(&self) -> String {
        match self {
            Scope::Cluster(c) => format!("{ROOT}{VERSION}/clusters/{c}/"),
            Scope::Mirror(c) => format!("{ROOT}{VERSION}/mirror/{c}/"),
        }
    }

    /// The prefix of one kind of resource in this scope.
    pub fn kind_prefix(&self, kind: ResourceKind) -> String {
        format!("{}{}/", self.prefix(), kind.segment())
    }
}

/// The kinds of resource, each a directory under a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Nodes,
    Identities,
    IdentitiesByLabels,
    PodCidrs,
    /// The reverse index of pod CIDRs: node to its CIDRs (the per-node
    /// allocation lock of the IPAM).
    PodCidrsByNode,
    Endpoints,
    Services,
    /// A LoadBalancer VIP allocated to a service (LB-IPAM).
    Vips,
    /// The reverse index of VIPs: service to its VIPs (the per-service allocation lock).
    VipsByService,
    /// A node's reference to an identity it uses (under a pooled lease of the node); the
    /// identity GC never deletes an identity that has one. Local coordination: not mirrored.
    IdentityRefs,
    /// Which meshd of the cluster mirrors a remote cluster (election key, under the
    /// leader's lease). Coordination, not state: the mirror does not copy it.
    MirrorLeader,
    /// A network policy (`policies/<namespace>/<name>`), enforced by the cluster's own nodes.
    Policies,
    /// An applied resource (`objects/<plural>/<namespace>/<name>`, or
    /// `objects/<plural>/<name>` for a cluster-scoped kind): the document as applied plus
    /// meshd's fields and status (`ironctl apply`).
    Objects,
    /// A ClusterIP allocated to a service (`ipam/clusterips/<ip>`).
    ClusterIps,
    /// The reverse index: service to its ClusterIPs (the per-service allocation lock).
    ClusterIpsByService,
    /// A backend's failing health checks (`health/<ip>`), written by the backend's node under
    /// its leases while a check fails (absent: healthy).
    Health,
    /// What happened to an applied object (`events/<plural>/[<namespace>/]<name>/<id>`), as
    /// `kubectl describe` lists them; under an events lease of the writing node (about an
    /// hour). Local: not mirrored.
    Events,
    /// The encryption rollout (`encryption/desired`: the cluster's desired mode, set by
    /// `ironctl encryption rollout`; `encryption/nodes/<node>`: what each node runs and
    /// whether it is ready for strict, under the node's lease). Each cluster rolls out on
    /// its own: not mirrored.
    Encryption,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 18] = [
        Self::Nodes,
        Self::Identities,
        Self::IdentitiesByLabels,
        Self::PodCidrs,
        Self::PodCidrsByNode,
        Self::Endpoints,
        Self::Services,
        Self::Vips,
        Self::VipsByService,
        Self::IdentityRefs,
        Self::MirrorLeader,
        Self::Policies,
        Self::Objects,
        Self::ClusterIps,
        Self::ClusterIpsByService,
        Self::Health,
        Self::Events,
        Self::Encryption,
    ];

    /// Whether the local cluster's merged view holds this kind: the mirrored kinds, and the
    /// encryption rollout (local coordination every node reads).
    pub fn in_local_view(self) -> bool {
        self.is_mirrored() || self == Self::Encryption
    }

    /// Whether the federation mirror copies this kind to other clusters (coordination keys,
    /// the election and identity references, and events stay local).
    pub fn is_mirrored(self) -> bool {
        !matches!(
            self,
            Self::MirrorLeader | Self::IdentityRefs | Self::Events | Self::Encryption
        )
    }

    /// The path segment(s) of this kind, without slashes at the ends.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Nodes => "nodes",
            Self::Identities => "identities",
            Self::IdentitiesByLabels => "identities-by-labels",
            Self::PodCidrs => "ipam/podcidrs",
            Self::PodCidrsByNode => "ipam/podcidrs-by-node",
            Self::Endpoints => "endpoints",
            Self::Services => "services",
            Self::Vips => "ipam/vips",
            Self::VipsByService => "ipam/vips-by-service",
            Self::IdentityRefs => "identity-refs",
            Self::MirrorLeader => "mirror-leader",
            Self::Policies => "policies",
            Self::Objects => "objects",
            Self::ClusterIps => "ipam/clusterips",
            Self::ClusterIpsByService => "ipam/clusterips-by-service",
            Self::Health => "health",
            Self::Events => "events",
            Self::Encryption => "encryption",
        }
    }
}

/// One stored object, named by what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A node's record (addresses, pod CIDRs, encryption keys).
    Node(NodeName),
    /// The labels of an allocated identity.
    Identity(Identity),
    /// The reverse index: labels to identity (the allocation lock).
    IdentityByLabels(Labels),
    /// A pod CIDR allocated to a node.
    PodCidr(IpNet),
    /// The pod CIDRs allocated to a node (the reverse index).
    PodCidrsOfNode(NodeName),
    /// An endpoint (pod) IP to its identity and node.
    Endpoint(IpAddr),
    Service(ServiceKey),
    /// A LoadBalancer VIP allocated to a service.
    Vip(IpAddr),
    /// The VIPs allocated to a service (the reverse index).
    VipsOfService(ServiceKey),
    /// Node `.1` uses identity `.0`.
    IdentityRef(Identity, NodeName),
    /// The election key of the mirror of remote cluster `.0`.
    MirrorLeader(ClusterName),
    /// A network policy, named `<namespace>/<name>` as a service is.
    Policy(ServiceKey),
    /// An applied resource of `kind`, named by namespace (None: cluster-scoped) and name.
    Object(ObjectName),
    /// A ClusterIP allocated to a service.
    ClusterIp(IpAddr),
    /// The ClusterIPs allocated to a service (the reverse index).
    ClusterIpsOfService(ServiceKey),
    /// The failing health checks of the backend at this address.
    Health(IpAddr),
    /// An event of an object: the object, and the event's id (`[a-z0-9.-]`, unique per
    /// writer: the node name and a time).
    Event(ObjectName, String),
    /// The cluster's desired encryption mode (`encryption/desired`).
    EncryptionDesired,
    /// What a node runs in the encryption rollout (`encryption/nodes/<node>`).
    EncryptionNode(NodeName),
}

/// The name of an applied resource: kind, namespace (namespaced kinds only), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub kind: resources::Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectName {
    /// Checks the parts: namespace present exactly for namespaced kinds, both DNS names.
    pub fn new(kind: resources::Kind, namespace: Option<&str>, name: &str) -> Result<Self, String> {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        let subdomain = |s: &str| s.len() <= 253 && s.split('.').all(label);
        match (kind.namespaced(), namespace) {
            (true, Some(ns)) if label(ns) => {}
            (true, _) => {
                return Err(format!(
                    "{} objects need a namespace (a DNS label)",
                    kind.plural()
                ));
            }
            (false, None) => {}
            (false, Some(_)) => return Err(format!("{} objects have no namespace", kind.plural())),
        }
        if !subdomain(name) {
            return Err(format!(
                "{name:?} is not a valid object name (a DNS subdomain)"
            ));
        }
        Ok(ObjectName {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The service key of a Service object.
    pub fn service_key(&self) -> Option<ServiceKey> {
        match (self.kind, &self.namespace) {
            (resources::Kind::Service, Some(ns)) => ServiceKey::new(ns, &self.name).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind.plural(), self.name),
            None => write!(f, "{}/{}", self.kind.plural(), self.name),
        }
    }
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Node(_) => ResourceKind::Nodes,
            Resource::Identity(_) => ResourceKind::Identities,
            Resource::IdentityByLabels(_) => ResourceKind::IdentitiesByLabels,
            Resource::PodCidr(_) => ResourceKind::PodCidrs,
            Resource::PodCidrsOfNode(_) => ResourceKind::PodCidrsByNode,
            Resource::Endpoint(_) => ResourceKind::Endpoints,
            Resource::Service(_) => ResourceKind::Services,
            Resource::Vip(_) => ResourceKind::Vips,
            Resource::VipsOfService(_) => ResourceKind::VipsByService,
            Resource::IdentityRef(..) => ResourceKind::IdentityRefs,
            Resource::MirrorLeader(_) => ResourceKind::MirrorLeader,
            Resource::Policy(_) => ResourceKind::Policies,
            Resource::Object(_) => ResourceKind::Objects,
            Resource::ClusterIp(_) => ResourceKind::ClusterIps,
            Resource::ClusterIpsOfService(_) => ResourceKind::ClusterIpsByService,
            Resource::Health(_) => ResourceKind::Health,
            Resource::Event(..) => ResourceKind::Events,
            Resource::EncryptionDesired | Resource::EncryptionNode(_) => ResourceKind::Encryption,
        }
    }
}

impl fmt::Display for Resource {
    /// The part after the kind: `worker-1`, `65792`, `app=web`, `10.0.0.0%2F24`...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Node(n) | Resource::PodCidrsOfNode(n) => write!(f, "{n}"),
            Resource::Identity(id) => write!(f, "{id}"),
            Resource::IdentityByLabels(l) if l.is_empty() => f.write_str(EMPTY_LABELS),
            Resource::IdentityByLabels(l) => f.write_str(&escape(&l.to_string())),
            Resource::PodCidr(net) => f.write_str(&escape(&net.to_string())),
            Resource::Endpoint(ip)
            | Resource::Vip(ip)
            | Resource::ClusterIp(ip)
            | Resource::Health(ip) => write!(f, "{ip}"),
            Resource::Object(o) => write!(f, "{o}"),
            Resource::Event(o, id) => write!(f, "{o}/{id}"),
            Resource::Service(s)
            | Resource::VipsOfService(s)
            | Resource::Policy(s)
            | Resource::ClusterIpsOfService(s) => {
                write!(f, "{}/{}", s.namespace(), s.name())
            }
            Resource::IdentityRef(id, node) => write!(f, "{id}/{node}"),
            Resource::MirrorLeader(c) => write!(f, "{c}"),
            Resource::EncryptionDesired => f.write_str("desired"),
            Resource::EncryptionNode(n) => write!(f, "nodes/{n}"),
        }
    }
}

/// A parsed ironmesh etcd key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Resource {
        scope: Scope,
        resource: Resource,
    },
    /// `ironmesh/v1/mirror/<remote>/synced`: written once the mirror of
    /// `remote` holds a complete first listing of every kind.
    MirrorSynced {
        remote: ClusterName,
    },
    /// `ironmesh/v1/mirror/<remote>/status`: the mirror's health, written by the elected
    /// mirror (stale while the remote etcd is unreachable).
    MirrorStatus {
        remote: ClusterName,
    },
}

impl Key {
    pub fn cluster(cluster: &ClusterName, resource: Resource) -> Self {
        Key::Resource {
            scope: Scope::Cluster(cluster.clone()),
            resource,
        }
    }

    pub fn mirror(remote: &ClusterName, resource: Resource) -> Self {
        Key::Resource {
            scope: Scope::Mirror(remote.clone()),
            resource,
        }
    }

    /// Parses raw etcd key bytes.
    pub fn parse_bytes(key: &[u8]) -> Result<Self, SchemaError> {
        Self::parse(std::str::from_utf8(key).map_err(|_| SchemaError::NotUtf8)?)
    }

    /// Parses a key; only the canonical spelling of a key is accepted.
    pub fn parse(key: &str) -> Result<Self, SchemaError> {
        let parsed = parse_any(key)?;
        let canonical = parsed.to_string();
        if canonical != key {
            return Err(SchemaError::NonCanonical {
                key: key.into(),
                canonical,
            });
        }
        Ok(parsed)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Resource { scope, resource } => {
                write!(
                    f,
                    "{}{}/{resource}",
                    scope.prefix(),
                    resource.kind().segment()
                )
            }
            Key::MirrorSynced { remote } => {
                write!(f, "{}synced", Scope::Mirror(remote.clone()).prefix())
            }
            Key::MirrorStatus { remote } => {
                write!(f, "{}status", Scope::Mirror(remote.clone()).prefix())
            }
        }
    }
}

fn parse_any(key: &str) -> Result<Key, SchemaError> {
    let malformed = |reason: String| SchemaError::Malformed {
        key: key.into(),
        reason,
    };
    let rest = key
        .strip_prefix(ROOT)
        .ok_or_else(|| SchemaError::Foreign { key: key.into() })?;
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if version != VERSION {
        return Err(SchemaError::Version {
            key: key.into(),
            version: version.into(),
        });
    }
    let (scope_kind, rest) = rest
        .split_once('/')
        .ok_or_else(|| malformed("expected clusters/<cluster>/ or mirror/<cluster>/".into()))?;
    let (name, rest) = rest
        .split_once('/')
        .ok_or_else(|| malformed("the cluster name must be followed by '/'".into()))?;
    let name = ClusterName::new(name).map_err(|e| malformed(e.to_string()))?;
    let scope = match scope_kind {
        "clusters" => Scope::Cluster(name),
        "mirror" if rest == "synced" => return Ok(Key::MirrorSynced { remote: name }),
        "mirror" if rest.starts_with("synced/") => {
            return Err(malformed("the synced marker has nothing after it".into()));
        }
        "mirror" if rest == "status" => return Ok(Key::MirrorStatus { remote: name }),
        "mirror" if rest.starts_with("status/") => {
            return Err(malformed("the mirror status has nothing after it".into()));
        }
        "mirror" => Scope::Mirror(name),
        other => {
            return Err(malformed(format!(
                "unknown scope {other:?}; expected clusters or mirror"
            )));
        }
    };
    let (kind, tail) = rest
        .split_once('/')
        .ok_or_else(|| malformed("expected <kind>/<name> after the cluster".into()))?;
    let (kind, tail) = match kind {
        "ipam" => match tail.split_once('/') {
            Some(("podcidrs", t)) => (ResourceKind::PodCidrs, t),
            Some(("podcidrs-by-node", t)) => (ResourceKind::PodCidrsByNode, t),
            Some(("vips", t)) => (ResourceKind::Vips, t),
            Some(("vips-by-service", t)) => (ResourceKind::VipsByService, t),
            Some(("clusterips", t)) => (ResourceKind::ClusterIps, t),
            Some(("clusterips-by-service", t)) => (ResourceKind::ClusterIpsByService, t),
            _ => {
                return Err(SchemaError::UnknownKind {
                    key: key.into(),
                    kind: format!("ipam/{}", tail.split('/').next().unwrap_or("")),
                });
            }
        },
        other => match ResourceKind::ALL.into_iter().find(|k| k.segment() == other) {
            Some(k) => (k, tail),
            None => {
                return Err(SchemaError::UnknownKind {
                    key: key.into(),
                    kind: other.into(),
                });
            }
        },
    };
    let resource = parse_resource(kind, tail).map_err(malformed)?;
    Ok(Key::Resource { scope, resource })
}

fn parse_resource(kind: ResourceKind, tail: &str) -> Result<Resource, String> {
    let two_segments = matches!(
        kind,
        ResourceKind::Services
            | ResourceKind::VipsByService
            | ResourceKind::IdentityRefs
            | ResourceKind::Policies
            | ResourceKind::ClusterIpsByService
            | ResourceKind::Objects
            | ResourceKind::Events
            | ResourceKind::Encryption
    );
    if !two_segments && tail.contains('/') {
        return Err(format!(
            "{} keys have one segment after the kind",
            kind.segment()
        ));
    }
    Ok(match kind {
        ResourceKind::Nodes => Resource::Node(NodeName::new(tail).map_err(|e| e.to_string())?),
        ResourceKind::PodCidrsByNode => {
            Resource::PodCidrsOfNode(NodeName::new(tail).map_err(|e| e.to_string())?)
        }
        ResourceKind::Identities => {
            let raw: u32 = tail
                .parse()
                .map_err(|_| format!("identity {tail:?} is not a decimal number"))?;
            Resource::Identity(Identity::from_raw(raw).map_err(|e| e.to_string())?)
        }
        ResourceKind::IdentitiesByLabels if tail == EMPTY_LABELS => {
            Resource::IdentityByLabels(Labels::new())
        }
        ResourceKind::IdentitiesByLabels => {
            let labels: Labels = unescape(tail)?
                .parse()
                .map_err(|e: common::LabelError| e.to_string())?;
            if labels.is_empty() {
                return Err(format!("the empty label set is spelled {EMPTY_LABELS:?}"));
            }
            Resource::IdentityByLabels(labels)
        }
        ResourceKind::PodCidrs => {
            let net: IpNet = unescape(tail)?
                .parse()
                .map_err(|_| format!("{tail:?} is not an escaped CIDR like 10.0.0.0%2F24"))?;
            if net.trunc() != net {
                return Err(format!(
                    "pod CIDR {net} has host bits set; the key is {}",
                    escape(&net.trunc().to_string())
                ));
            }
            Resource::PodCidr(net)
        }
        ResourceKind::Endpoints => Resource::Endpoint(parse_ip(tail)?),
        ResourceKind::Vips => Resource::Vip(parse_ip(tail)?),
        ResourceKind::Services => Resource::Service(parse_service(tail)?),
        ResourceKind::VipsByService => Resource::VipsOfService(parse_service(tail)?),
        ResourceKind::Policies => Resource::Policy(parse_service(tail)?),
        ResourceKind::ClusterIps => Resource::ClusterIp(parse_ip(tail)?),
        ResourceKind::Health => Resource::Health(parse_ip(tail)?),
        ResourceKind::ClusterIpsByService => Resource::ClusterIpsOfService(parse_service(tail)?),
        ResourceKind::Events => {
            let (object, id) = tail
                .rsplit_once('/')
                .ok_or_else(|| "events keys are <kind>/[<namespace>/]<name>/<id>".to_string())?;
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
            {
                return Err(format!("event id {id:?} must be [a-z0-9.-], at most 128"));
            }
            match parse_resource(ResourceKind::Objects, object)? {
                Resource::Object(o) => Resource::Event(o, id.to_string()),
                other => return Err(format!("{other} is not an object")),
            }
        }
        ResourceKind::Objects => {
            let (plural, rest) = tail
                .split_once('/')
                .ok_or_else(|| "objects keys are <kind>/[<namespace>/]<name>".to_string())?;
            let kind = resources::Kind::from_plural(plural)
                .ok_or_else(|| format!("unknown object kind {plural:?}"))?;
            let (ns, name) = if kind.namespaced() {
                let (ns, name) = rest
                    .split_once('/')
                    .ok_or_else(|| format!("{plural} keys are {plural}/<namespace>/<name>"))?;
                (Some(ns), name)
            } else {
                (None, rest)
            };
            Resource::Object(ObjectName::new(kind, ns, name)?)
        }
        ResourceKind::IdentityRefs => {
            let (id, node) = tail
                .split_once('/')
                .ok_or_else(|| "identity-refs keys are <identity>/<node>".to_string())?;
            let raw: u32 = id
                .parse()
                .map_err(|_| format!("identity {id:?} is not a decimal number"))?;
            Resource::IdentityRef(
                Identity::from_raw(raw).map_err(|e| e.to_string())?,
                NodeName::new(node).map_err(|e| e.to_string())?,
            )
        }
        ResourceKind::MirrorLeader => {
            Resource::MirrorLeader(ClusterName::new(tail).map_err(|e| e.to_string())?)
        }
        ResourceKind::Encryption => match tail.split_once('/') {
            None if tail == "desired" => Resource::EncryptionDesired,
            Some(("nodes", node)) => {
                Resource::EncryptionNode(NodeName::new(node).map_err(|e| e.to_string())?)
            }
            _ => {
                return Err(
                    "encryption keys are encryption/desired or encryption/nodes/<node>".into(),
                );
            }
        },
    })
}

fn parse_ip(tail: &str) -> Result<IpAddr, String> {
    tail.parse()
        .map_err(|_| format!("{tail:?} is not an IP address"))
}

fn parse_service(tail: &str) -> Result<ServiceKey, String> {
    tail.parse()
        .map_err(|e: common::ServiceKeyError| e.to_string())
}

#[cfg(test)]
mod tests;
