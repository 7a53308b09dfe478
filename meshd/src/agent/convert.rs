//! Merged-view state to API messages (pure functions, unit-tested).

use api::mesh as pb;
use common::{ClusterId, ClusterName, Labels, NodeName};

use crate::federation::{
    MAX_REFUSAL_LEN, MergedState, MirrorRole, MirrorStatus, MirrorStatusValue, bounded,
};
use crate::identity::IdentityValue;
use crate::nodes::{NodeHealth, NodeRecord};
use crate::schema::{Resource, ResourceKind};
use crate::services::{Affinity, Backend, BackendState, Protocol, ServiceRecord, select_backends};

/// Entry counts of one cluster in the merged view.
/// One etcd member's health as the API shows it.
pub fn etcd_member(m: &crate::kvstore::members::MemberView) -> pb::EtcdMemberStatus {
    pb::EtcdMemberStatus {
        endpoint: m.endpoint.clone(),
        health: m.health.as_str().into(),
        reachable: m.reachable,
        has_leader: m.has_leader,
        last_error: m.last_error.clone().unwrap_or_default(),
        rtt_us: m.rtt.map(|d| d.as_micros() as u64).unwrap_or(0),
        failures: m.failures,
        since_secs: m.since.elapsed().as_secs(),
    }
}

pub fn counts(st: &MergedState, cluster: &ClusterName) -> pb::Counts {
    let n = |k| st.count(cluster, k) as u64;
    pb::Counts {
        nodes: n(ResourceKind::Nodes),
        endpoints: n(ResourceKind::Endpoints),
        identities: n(ResourceKind::Identities),
        services: n(ResourceKind::Services),
    }
}

/// One remote as this node sees it: from the mirror's keys in the local etcd (`st`; `None`
/// before the local etcd answered) and this meshd's own mirror controller (`mirror`).
pub fn remote_status(
    name: &ClusterName,
    id: ClusterId,
    st: Option<&MergedState>,
    mirror: Option<&MirrorStatus>,
) -> pb::RemoteClusterStatus {
    let synced = st.and_then(|s| s.synced(name));
    let status = st.and_then(|s| s.mirror_status(name));
    let stale = status.is_some_and(|s| s.stale);
    let local_is_mirror = mirror.is_some_and(|m| m.role == MirrorRole::Leader);
    let error = status
        .and_then(|s| s.error.clone())
        .or_else(|| {
            mirror
                .and_then(|m| m.last_error.clone())
                .filter(|_| local_is_mirror)
        })
        .unwrap_or_default();
    let refused = st.map_or_else(|| (Vec::new(), 0), |s| refusals(s, status, name));
    pb::RemoteClusterStatus {
        name: name.to_string(),
        id: u32::from(id.get()),
        connected: synced.is_some() && status.is_some() && !stale,
        stale,
        synced: synced.is_some(),
        last_sync_unix_ms: synced.map_or(0, |s| s.at_unix_ms),
        stale_since_unix_ms: status.and_then(|s| s.stale_since_unix_ms).unwrap_or(0),
        mirror_leader: status.map(|s| s.leader.clone()).unwrap_or_default(),
        local_is_mirror,
        counts: st.map(|s| counts(s, name)),
        error: if stale || !local_is_mirror {
            error
        } else {
            String::new()
        },
        refused: refused.0,
        refused_count: refused.1,
    }
}

/// The refused records of one remote, listed (at most [`MAX_REFUSALS_SHOWN`]) and counted:
/// those the mirror refused on arrival (published by the mirror leader in the status key, so
/// every node sees them) and those this node's merged view refuses on use (checks against the
/// local records). A record the mirror refused is never in the mirror, so the two do not
/// overlap; a reason listed by both (a mirror written before the checks) counts once.
fn refusals(
    st: &MergedState,
    status: Option<&MirrorStatusValue>,
    name: &ClusterName,
) -> (Vec<String>, u64) {
    let mut listed: Vec<String> = status
        .map(|s| {
            s.refused
                .iter()
                .take(MAX_REFUSALS_SHOWN)
                .map(|r| bounded(r, MAX_REFUSAL_LEN))
                .collect()
        })
        .unwrap_or_default();
    let published = listed.len() as u64;
    let mut count = status.map_or(0, |s| s.refused_count.max(published));
    for r in st.refusals(name) {
        let r = bounded(&r.to_string(), MAX_REFUSAL_LEN);
        if !listed.contains(&r) {
            count += 1;
            if listed.len() < MAX_REFUSALS_SHOWN {
                listed.push(r);
            }
        }
    }
    (listed, count)
}

/// How many refused records of one remote the status lists (all are counted).
pub const MAX_REFUSALS_SHOWN: usize = 20;

fn labels(l: &Labels) -> std::collections::HashMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn node(r: &NodeRecord, local_cluster: &ClusterName, me: &NodeName) -> pb::Node {
    pb::Node {
        name: r.name.to_string(),
        cluster: r.cluster.to_string(),
        ipv4: r.ipv4.map(|a| a.to_string()).unwrap_or_default(),
        ipv6: r.ipv6.map(|a| a.to_string()).unwrap_or_default(),
        pod_cidrs: r.pod_cidrs.iter().map(ToString::to_string).collect(),
        wireguard_public_key: r.wireguard_public_key.clone().unwrap_or_default(),
        ipsec_key_index: r.ipsec_key_index.map(u32::from),
        labels: labels(&r.labels),
        health: match r.health {
            NodeHealth::Ready => "ready",
            NodeHealth::NotReady => "not-ready",
        }
        .into(),
        local: &r.cluster == local_cluster && &r.name == me,
    }
}

/// Identities of every cluster, ordered by cluster then number (malformed values skipped).
pub fn identities(st: &MergedState) -> Vec<pb::Identity> {
    st.entries()
        .filter_map(|(c, r, v)| match r {
            Resource::Identity(id) => {
                let v: IdentityValue = serde_json::from_slice(v).ok()?;
                Some(pb::Identity {
                    id: id.raw(),
                    cluster: c.to_string(),
                    labels: labels(&v.labels),
                })
            }
            _ => None,
        })
        .collect()
}

/// The endpoints (pods) of every cluster, as `get pods` shows them: a Pod-shaped JSON object
/// each (namespace and labels from the identity, node, IP, cluster, identity), optionally of
/// one namespace only.
pub fn pods(st: &MergedState, namespace: Option<&str>) -> Vec<serde_json::Value> {
    let mut labels_of = std::collections::BTreeMap::new();
    for (c, r, v) in st.entries() {
        if let Resource::Identity(id) = r
            && let Ok(v) = serde_json::from_slice::<IdentityValue>(v)
        {
            labels_of.insert((c.clone(), *id), v.labels);
        }
    }
    let mut out = Vec::new();
    for ep in st.endpoints() {
        let l = labels_of.get(&(ep.cluster.clone(), ep.identity));
        let ns = l
            .and_then(|l| l.get(crate::objects::NAMESPACE_LABEL))
            .unwrap_or("");
        if namespace.is_some_and(|want| want != ns) {
            continue;
        }
        let labels: std::collections::BTreeMap<&str, &str> =
            l.map(|l| l.iter().collect()).unwrap_or_default();
        let name = ep
            .pod
            .as_deref()
            .and_then(|p| p.split_once('/'))
            .map(|(_, n)| n)
            .unwrap_or("");
        out.push(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": ep.node.to_string()},
            "status": {"podIP": ep.ip.to_string()},
            "cluster": ep.cluster.to_string(),
            "identity": ep.identity.raw(),
        }));
    }
    out
}

pub fn backend(b: &Backend) -> pb::Backend {
    pb::Backend {
        ip: b.ip.to_string(),
        port: u32::from(b.port),
        port_name: b.port_name.clone().unwrap_or_default(),
        node: b.node.as_ref().map(ToString::to_string).unwrap_or_default(),
        cluster: b
            .cluster
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        zone: b.zone.clone().unwrap_or_default(),
        state: match b.state {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
        }
        .into(),
    }
}

fn record(s: &ServiceRecord) -> pb::Service {
    pb::Service {
        namespace: s.service.namespace().to_string(),
        name: s.service.name().to_string(),
        cluster: s.cluster.to_string(),
        vips: s.vips.iter().map(ToString::to_string).collect(),
        ports: s
            .ports
            .iter()
            .map(|p| pb::ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u32::from(p.port),
                protocol: match p.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                }
                .into(),
            })
            .collect(),
        backends: s.backends.iter().map(backend).collect(),
        global: s.global,
        affinity: match s.affinity {
            Affinity::None => "none",
            Affinity::Local => "local",
            Affinity::Remote => "remote",
        }
        .into(),
        global_backends: Vec::new(),
        selected_backends: Vec::new(),
    }
}

/// Services of every cluster; the local cluster's carry their merged (global) and selected
/// (after affinity) backends.
pub fn services(st: &MergedState, local: &ClusterName) -> Vec<pb::Service> {
    let merged = st.merged_services();
    st.services()
        .iter()
        .map(|s| {
            let mut out = record(s);
            if &s.cluster == local
                && let Some(m) = merged.iter().find(|m| m.service == s.service)
            {
                if m.global {
                    out.global_backends = m.backends.iter().map(backend).collect();
                }
                out.selected_backends = select_backends(m, local).iter().map(backend).collect();
            }
            out
        })
        .collect()
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
