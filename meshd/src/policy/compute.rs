//! The pure part of policy: which policies select an endpoint, and its whole datapath policy
//! (peer identities resolved from every identity known, local and remote clusters). No I/O.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::{ContainerPort, Identity, Labels, PortProtocol};
use datapath::EndpointPolicy;
use datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use ipnet::IpNet;

use super::{
    LABEL_CLUSTER, LABEL_NAMESPACE, LABEL_NAMESPACE_NAME, NamespaceLabels, PolicyPeer, PolicyPort,
    PolicyRecord,
};

/// First and end (exclusive) of the node-local CIDR identities: cluster bits 0 with a local
/// part of at least 256 is never allocated by any cluster (cluster ids start at 1), and stays
/// below 2^14 for every identity layout.
pub const CIDR_IDENTITY_FIRST: u32 = 0x0100;
pub const CIDR_IDENTITY_END: u32 = 0x4000;

/// Node-local identities for the CIDR peers of the policies (the IP cache maps each CIDR to
/// its identity). Stable: a CIDR keeps its number while it is in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrIdentities {
    pub by_cidr: BTreeMap<IpNet, u32>,
}

fn fnv(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl CidrIdentities {
    /// Keeps the numbers of CIDRs still wanted, numbers new ones (hash, then probing);
    /// returns the CIDRs dropped. CIDRs beyond the range's capacity get no identity.
    pub fn assign(&mut self, wanted: &BTreeSet<IpNet>) -> Vec<IpNet> {
        let gone: Vec<IpNet> = self
            .by_cidr
            .keys()
            .filter(|c| !wanted.contains(c))
            .copied()
            .collect();
        for c in &gone {
            self.by_cidr.remove(c);
        }
        let mut used: BTreeSet<u32> = self.by_cidr.values().copied().collect();
        let span = CIDR_IDENTITY_END - CIDR_IDENTITY_FIRST;
        for c in wanted {
            if self.by_cidr.contains_key(c) || used.len() as u32 >= span {
                continue;
            }
            let mut n = fnv(c.to_string().as_bytes()) % span;
            while used.contains(&(CIDR_IDENTITY_FIRST + n)) {
                n = (n + 1) % span;
            }
            used.insert(CIDR_IDENTITY_FIRST + n);
            self.by_cidr.insert(*c, CIDR_IDENTITY_FIRST + n);
        }
        gone
    }
}

/// Every CIDR the policies name.
pub fn cidrs<'a>(policies: impl IntoIterator<Item = &'a PolicyRecord>) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for p in policies {
        let peers = p
            .ingress
            .iter()
            .flat_map(|r| &r.from)
            .chain(p.egress.iter().flat_map(|r| &r.to));
        for x in peers {
            out.extend(x.cidr);
            // Each except gets its own identity (a longer prefix in the IP cache), which the
            // rule does not allow.
            out.extend(x.except.iter().copied());
        }
    }
    out
}

/// Whether `policy` applies to an endpoint with `labels` (same namespace, selector matches).
pub fn selects(policy: &PolicyRecord, labels: &Labels) -> bool {
    labels.get(LABEL_NAMESPACE) == Some(policy.namespace.as_str())
        && policy.endpoint_selector.matches(labels)
}

/// The labels of namespace `ns` of `cluster`: its Namespace object's, or only its name.
fn namespace_labels(namespaces: &NamespaceLabels, cluster: &str, ns: &str) -> Labels {
    let mut l = namespaces
        .get(&(cluster.to_string(), ns.to_string()))
        .cloned()
        .unwrap_or_default();
    let _ = l.insert(LABEL_NAMESPACE_NAME, ns);
    l
}

fn peer_matches(
    policy: &PolicyRecord,
    peer: &PolicyPeer,
    labels: &Labels,
    namespaces: &NamespaceLabels,
) -> bool {
    if peer.cidr.is_some() || (peer.selector.is_none() && peer.namespace_selector.is_none()) {
        return false;
    }
    let ns = labels.get(LABEL_NAMESPACE);
    let ns_ok = match (&peer.namespace_selector, &peer.namespaces) {
        (Some(sel), _) => ns.is_some_and(|ns| {
            let cluster = labels.get(LABEL_CLUSTER).unwrap_or("");
            sel.matches(&namespace_labels(namespaces, cluster, ns))
        }),
        (None, None) => ns == Some(policy.namespace.as_str()),
        (None, Some(list)) => list.iter().any(|n| n == "*" || Some(n.as_str()) == ns),
    };
    ns_ok && peer.selector.as_ref().is_none_or(|s| s.matches(labels))
}

/// Whether `inner` lies inside `outer` (equal counts).
fn within(inner: &IpNet, outer: &IpNet) -> bool {
    inner.prefix_len() >= outer.prefix_len() && outer.contains(&inner.network())
}

fn peers(
    policy: &PolicyRecord,
    list: &[PolicyPeer],
    identities: &BTreeMap<Identity, Labels>,
    cidr_ids: &CidrIdentities,
    namespaces: &NamespaceLabels,
) -> Vec<Peer> {
    if list.is_empty() {
        return vec![Peer::Any];
    }
    let mut out = Vec::new();
    for p in list {
        if let Some(net) = p.cidr {
            // The IP cache gives an address the identity of the longest CIDR holding it: the
            // rule allows every CIDR identity inside its cidr and outside its excepts.
            out.extend(
                cidr_ids
                    .by_cidr
                    .iter()
                    .filter(|(c, _)| within(c, &net) && !p.except.iter().any(|e| within(c, e)))
                    .map(|(_, id)| Peer::Identity(*id)),
            );
            continue;
        }
        out.extend(
            identities
                .iter()
                .filter(|(_, l)| peer_matches(policy, p, l, namespaces))
                .map(|(id, _)| Peer::Identity(id.raw())),
        );
    }
    out
}

/// The named container ports of the pods of every cluster, by identity and address: what a
/// NetworkPolicy's named port resolves through (ingress: the selected pod's own; egress: the
/// destination's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedPorts {
    pub by_identity: BTreeMap<u32, BTreeMap<std::net::IpAddr, Vec<ContainerPort>>>,
}

impl NamedPorts {
    /// Records the ports of the pod at `ip` (`None` or empty: it has none); whether anything
    /// changed.
    pub fn set(
        &mut self,
        identity: u32,
        ip: std::net::IpAddr,
        ports: Option<Vec<ContainerPort>>,
    ) -> bool {
        match ports.filter(|p| !p.is_empty()) {
            Some(p) => {
                self.by_identity
                    .entry(identity)
                    .or_default()
                    .insert(ip, p.clone())
                    != Some(p)
            }
            None => {
                let Some(m) = self.by_identity.get_mut(&identity) else {
                    return false;
                };
                let gone = m.remove(&ip).is_some();
                if m.is_empty() {
                    self.by_identity.remove(&identity);
                }
                gone
            }
        }
    }

    /// Every number the pods of `peer` give `name` with `protocol` (every pod's, for any peer).
    fn resolve(&self, peer: Peer, name: &str, protocol: PortProtocol) -> BTreeSet<u16> {
        let pods: Box<dyn Iterator<Item = &BTreeMap<std::net::IpAddr, Vec<ContainerPort>>>> =
            match peer {
                Peer::Any => Box::new(self.by_identity.values()),
                Peer::Identity(id) => Box::new(self.by_identity.get(&id).into_iter()),
            };
        pods.flat_map(|m| m.values())
            .filter_map(|ports| common::port::find_port(ports, name, protocol))
            .collect()
    }
}

/// The port matches of a rule's `list`; a named port becomes the numbers `resolve` gives it
/// (none: the named port allows nothing, as in Kubernetes).
fn ports(
    list: &[PolicyPort],
    resolve: &dyn Fn(&str, PortProtocol) -> BTreeSet<u16>,
) -> Vec<PortMatch> {
    if list.is_empty() {
        return vec![PortMatch::Any];
    }
    let mut out = Vec::new();
    for p in list {
        if let Some(name) = &p.port_name {
            if let Some(proto) = p.protocol.port_protocol() {
                out.extend(
                    resolve(name, proto)
                        .into_iter()
                        .map(|port| PortMatch::Port(p.protocol.number(), port)),
                );
            }
            continue;
        }
        match (p.port, p.end_port) {
            (Some(start), Some(end)) => {
                out.extend((start..=end).map(|port| PortMatch::Port(p.protocol.number(), port)));
            }
            (Some(port), None) => out.push(PortMatch::Port(p.protocol.number(), port)),
            (None, _) => out.push(PortMatch::Proto(p.protocol.number())),
        }
    }
    out
}

/// The whole policy of an endpoint with `labels`; `None` when no policy selects it (the
/// endpoint is then not policed in the default enforcement mode). Rules are in a stable
/// order (policies by name, identities by number), without duplicates. Named ports allow
/// nothing here: see [`endpoint_policy_with`].
pub fn endpoint_policy<'a>(
    policies: impl IntoIterator<Item = &'a PolicyRecord>,
    identities: &BTreeMap<Identity, Labels>,
    cidr_ids: &CidrIdentities,
    namespaces: &NamespaceLabels,
    labels: &Labels,
) -> Option<EndpointPolicy> {
    endpoint_policy_with(
        policies,
        identities,
        cidr_ids,
        namespaces,
        labels,
        &[],
        &NamedPorts::default(),
    )
}

/// [`endpoint_policy`] with named ports: an ingress rule's named port is the endpoint's own
/// port of that name (`own_ports`), an egress rule's the destination pods' (`named`).
pub fn endpoint_policy_with<'a>(
    policies: impl IntoIterator<Item = &'a PolicyRecord>,
    identities: &BTreeMap<Identity, Labels>,
    cidr_ids: &CidrIdentities,
    namespaces: &NamespaceLabels,
    labels: &Labels,
    own_ports: &[ContainerPort],
    named: &NamedPorts,
) -> Option<EndpointPolicy> {
    let own = |name: &str, proto: PortProtocol| -> BTreeSet<u16> {
        common::port::find_port(own_ports, name, proto)
            .into_iter()
            .collect()
    };
    let mut out = EndpointPolicy::default();
    let mut selected = false;
    let mut seen = HashSet::new();
    let mut add = |out: &mut EndpointPolicy, r: Rule| {
        if seen.insert(r) {
            out.rules.push(r);
        }
    };
    for p in policies {
        if !selects(p, labels) {
            continue;
        }
        selected = true;
        let (ingress, egress) = p.types();
        if ingress {
            out.ingress_selected = true;
            for r in &p.ingress {
                let pms = ports(&r.ports, &own);
                for peer in peers(p, &r.from, identities, cidr_ids, namespaces) {
                    for pm in pms.iter().copied() {
                        let rule = Rule {
                            direction: Direction::Ingress,
                            peer,
                            ports: pm,
                            action: Action::Allow,
                        };
                        add(&mut out, rule);
                    }
                }
            }
        }
        if egress {
            out.egress_selected = true;
            for r in &p.egress {
                for peer in peers(p, &r.to, identities, cidr_ids, namespaces) {
                    let theirs = |name: &str, proto| named.resolve(peer, name, proto);
                    for pm in ports(&r.ports, &theirs) {
                        let rule = Rule {
                            direction: Direction::Egress,
                            peer,
                            ports: pm,
                            action: Action::Allow,
                        };
                        add(&mut out, rule);
                    }
                }
            }
        }
    }
    selected.then_some(out)
}
