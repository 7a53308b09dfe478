use common::{Identity, Labels, ServiceKey};

use super::*;
use crate::federation::{MirrorStatusValue, SyncedValue, ViewKey};
use crate::kvstore::ReflectorEvent;
use crate::services::{BackendState, ServicePort};

fn c(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn put(st: &mut MergedState, key: ViewKey, value: Vec<u8>) {
    st.apply(ReflectorEvent::Upsert { key, value });
}

fn entry(st: &mut MergedState, cluster: &str, resource: Resource, value: Vec<u8>) {
    put(
        st,
        ViewKey::Entry {
            cluster: c(cluster),
            resource,
        },
        value,
    );
}

fn node_rec(cluster: &str, name: &str, ip: &str) -> NodeRecord {
    let mut r = NodeRecord::new(c(cluster), name.parse().unwrap());
    r.ipv4 = Some(ip.parse().unwrap());
    r.pod_cidrs = vec!["10.1.0.0/24".parse().unwrap()];
    r
}

fn service(cluster: &str, ip: &str, global: bool, affinity: Affinity) -> ServiceRecord {
    ServiceRecord {
        service: ServiceKey::new("shop", "web").unwrap(),
        cluster: c(cluster),
        vips: vec!["10.96.0.10".parse().unwrap()],
        ports: vec![ServicePort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
        backends: vec![Backend {
            ip: ip.parse().unwrap(),
            port: 8080,
            port_name: None,
            node: None,
            cluster: None,
            zone: None,
            state: BackendState::Active,
        }],
        global,
        affinity,
    }
}

/// Red (local) with one node, green (remote) with two, one identity each, a global service.
fn state() -> MergedState {
    let mut st = MergedState::new(c("red"));
    for (cl, n, ip) in [
        ("red", "r1", "192.0.2.1"),
        ("green", "g1", "198.51.100.1"),
        ("green", "g2", "198.51.100.2"),
    ] {
        let r = node_rec(cl, n, ip);
        entry(&mut st, cl, Resource::Node(r.name.clone()), r.encode());
    }
    let labels = Labels::from_pairs([("app", "web")]).unwrap();
    let v = serde_json::to_vec(&IdentityValue { labels }).unwrap();
    entry(
        &mut st,
        "red",
        Resource::Identity(Identity::from_raw(65_792).unwrap()),
        v.clone(),
    );
    entry(
        &mut st,
        "green",
        Resource::Identity(Identity::from_raw(131_328).unwrap()),
        v,
    );
    let key = ServiceKey::new("shop", "web").unwrap();
    entry(
        &mut st,
        "red",
        Resource::Service(key.clone()),
        service("red", "10.1.0.5", true, Affinity::Local).encode(),
    );
    entry(
        &mut st,
        "green",
        Resource::Service(key),
        service("green", "10.2.0.7", true, Affinity::None).encode(),
    );
    st
}

#[test]
fn nodes_are_labelled_by_cluster_and_mark_this_node() {
    let st = state();
    let me: NodeName = "r1".parse().unwrap();
    let nodes: Vec<pb::Node> = st.nodes().iter().map(|n| node(n, &c("red"), &me)).collect();
    assert_eq!(nodes.len(), 3);
    let r1 = nodes.iter().find(|n| n.name == "r1").unwrap();
    assert!(r1.local);
    assert_eq!(
        (r1.cluster.as_str(), r1.ipv4.as_str(), r1.health.as_str()),
        ("red", "192.0.2.1", "ready")
    );
    assert_eq!(r1.pod_cidrs, ["10.1.0.0/24"]);
    let g1 = nodes.iter().find(|n| n.name == "g1").unwrap();
    assert!(!g1.local);
    assert_eq!(g1.cluster, "green");
}

#[test]
fn identities_carry_cluster_and_labels() {
    let ids = identities(&state());
    assert_eq!(ids.len(), 2);
    let green = ids.iter().find(|i| i.cluster == "green").unwrap();
    assert_eq!(green.id, 131_328);
    assert_eq!(green.labels.get("app").map(String::as_str), Some("web"));
}

#[test]
fn local_global_service_has_merged_and_selected_backends() {
    let out = services(&state(), &c("red"));
    assert_eq!(out.len(), 2);
    let red = out.iter().find(|s| s.cluster == "red").unwrap();
    let mut all: Vec<(String, String)> = red
        .global_backends
        .iter()
        .map(|b| (b.ip.clone(), b.cluster.clone()))
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            ("10.1.0.5".into(), "red".into()),
            ("10.2.0.7".into(), "green".into())
        ]
    );
    // Affinity local: the local active backend only.
    let sel: Vec<&str> = red
        .selected_backends
        .iter()
        .map(|b| b.ip.as_str())
        .collect();
    assert_eq!(sel, ["10.1.0.5"]);
    assert_eq!(
        (red.affinity.as_str(), red.ports[0].protocol.as_str()),
        ("local", "tcp")
    );
    let green = out.iter().find(|s| s.cluster == "green").unwrap();
    assert!(green.global_backends.is_empty() && green.selected_backends.is_empty());
    assert_eq!(green.backends.len(), 1);
}

#[test]
fn remote_status_from_marker_status_and_role() {
    let mut st = state();
    let id = common::ClusterId::new(2).unwrap();
    // Before the mirror wrote anything: not synced, not connected, not stale.
    let s = remote_status(&c("green"), id, Some(&st), None);
    assert!(!s.synced && !s.connected && !s.stale);
    assert_eq!(s.counts.as_ref().unwrap().nodes, 2);
    let synced = SyncedValue {
        remote_revision: 9,
        entries: 5,
        at_unix_ms: 1_000,
    };
    put(
        &mut st,
        ViewKey::Synced(c("green")),
        serde_json::to_vec(&synced).unwrap(),
    );
    let mut status = MirrorStatusValue {
        stale: false,
        stale_since_unix_ms: None,
        remote_revision: 9,
        leader: "r2".into(),
        error: None,
        updated_unix_ms: 1_000,
        ..Default::default()
    };
    put(
        &mut st,
        ViewKey::Status(c("green")),
        serde_json::to_vec(&status).unwrap(),
    );
    let s = remote_status(&c("green"), id, Some(&st), None);
    assert!(s.synced && s.connected && !s.stale && !s.local_is_mirror);
    assert_eq!(
        (s.last_sync_unix_ms, s.mirror_leader.as_str(), s.id),
        (1_000, "r2", 2)
    );
    // Cut off: stale, not connected, the error and `since` shown; we lead now.
    status.stale = true;
    status.stale_since_unix_ms = Some(2_000);
    status.error = Some("etcd is unreachable".into());
    put(
        &mut st,
        ViewKey::Status(c("green")),
        serde_json::to_vec(&status).unwrap(),
    );
    let lead = MirrorStatus {
        role: MirrorRole::Leader,
        terms: 1,
        puts: 0,
        deletes: 0,
        syncs: 1,
        stale: true,
        last_error: None,
    };
    let s = remote_status(&c("green"), id, Some(&st), Some(&lead));
    assert!(s.stale && !s.connected && s.synced && s.local_is_mirror);
    assert_eq!(
        (s.stale_since_unix_ms, s.error.as_str()),
        (2_000, "etcd is unreachable")
    );
    // Before the local etcd answered there is nothing to say.
    let s = remote_status(&c("green"), id, None, None);
    assert!(!s.synced && s.counts.is_none());
}

#[test]
fn remote_status_lists_refused_records() {
    use crate::federation::{RemoteClaims, Trust};
    let green = RemoteClaims {
        name: c("green"),
        id: common::ClusterId::new(2).unwrap(),
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        node_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
        service_cidrs: vec![],
    };
    let mut st = MergedState::checked(Trust {
        local: c("red"),
        local_id: common::ClusterId::new(1).unwrap(),
        layout: common::IdentityLayout::default(),
        local_pools: vec!["10.1.0.0/16".parse().unwrap()],
        remotes: [(c("green"), green)].into(),
    });
    let mut evil = node_rec("green", "evil", "198.51.100.9");
    evil.pod_cidrs = vec!["0.0.0.0/0".parse().unwrap()];
    entry(
        &mut st,
        "green",
        Resource::Node("evil".parse().unwrap()),
        evil.encode(),
    );
    let id = common::ClusterId::new(2).unwrap();
    let s = remote_status(&c("green"), id, Some(&st), None);
    assert_eq!(s.refused_count, 1);
    assert_eq!(
        s.refused,
        ["node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)"]
    );
    assert_eq!(s.counts.unwrap().nodes, 0);
}

#[test]
fn remote_status_lists_the_mirrors_refusals_and_its_own_once() {
    use crate::federation::{RemoteClaims, Trust};
    let green = RemoteClaims {
        name: c("green"),
        id: common::ClusterId::new(2).unwrap(),
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        node_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
        service_cidrs: vec![],
    };
    let mut st = MergedState::checked(Trust {
        local: c("red"),
        local_id: common::ClusterId::new(1).unwrap(),
        layout: common::IdentityLayout::default(),
        local_pools: vec!["10.1.0.0/16".parse().unwrap()],
        remotes: [(c("green"), green)].into(),
    });
    // Refused on use by this node (also, from an older mirror, listed by the leader).
    let mut evil = node_rec("green", "evil", "198.51.100.9");
    evil.pod_cidrs = vec!["0.0.0.0/0".parse().unwrap()];
    entry(
        &mut st,
        "green",
        Resource::Node("evil".parse().unwrap()),
        evil.encode(),
    );
    let evil_why = "node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)";
    // The leader refused two on arrival (listing one of them, and a hostile long reason).
    let long = format!("node x {}", "y".repeat(5_000));
    let status = MirrorStatusValue {
        remote_revision: 9,
        leader: "r2".into(),
        updated_unix_ms: 1_000,
        refused: vec![evil_why.into(), long],
        refused_count: 3,
        ..Default::default()
    };
    put(
        &mut st,
        ViewKey::Status(c("green")),
        serde_json::to_vec(&status).unwrap(),
    );
    let s = remote_status(
        &c("green"),
        common::ClusterId::new(2).unwrap(),
        Some(&st),
        None,
    );
    assert_eq!(s.refused_count, 3, "the one refused by both counts once");
    assert_eq!(s.refused.len(), 2);
    assert_eq!(s.refused[0], evil_why);
    assert!(
        s.refused[1].len() <= crate::federation::MAX_REFUSAL_LEN,
        "bounded"
    );
    assert!(s.refused[1].starts_with("node x yyy") && s.refused[1].ends_with('…'));
}
