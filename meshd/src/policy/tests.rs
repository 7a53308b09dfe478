//! Policy stories: records as an operator writes them, endpoints and identities as meshd
//! sees them, the datapath policy that results.

use std::collections::{BTreeMap, BTreeSet};

use common::{Identity, Labels};
use datapath::policy::{Action, Direction, Peer, PortMatch, Rule};

use super::compute::{CIDR_IDENTITY_END, CIDR_IDENTITY_FIRST, cidrs};
use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn pod(ns: &str, app: &str, cluster: &str) -> Labels {
    labels(&[
        ("app", app),
        (LABEL_NAMESPACE, ns),
        (LABEL_CLUSTER, cluster),
    ])
}

fn policy(json: &str) -> PolicyRecord {
    PolicyRecord::parse(json.as_bytes()).unwrap()
}

/// client (red), server (red), other (red), client in green, client in namespace "ops".
fn identities() -> BTreeMap<Identity, Labels> {
    [
        (65792, pod("shop", "client", "red")),
        (65793, pod("shop", "server", "red")),
        (65794, pod("shop", "other", "red")),
        (131328, pod("shop", "client", "green")),
        (65795, pod("ops", "client", "red")),
    ]
    .into_iter()
    .map(|(id, l)| (Identity::from_raw(id).unwrap(), l))
    .collect()
}

const CLIENT_TO_SERVER: &str = r#"{"namespace":"shop","name":"allow-client",
  "endpoint_selector":{"match_labels":{"app":"server"}},
  "ingress":[{"from":[{"selector":{"match_labels":{"app":"client"}}}],
              "ports":[{"protocol":"tcp","port":8080}]}]}"#;

fn ingress(peer: u32, ports: PortMatch) -> Rule {
    Rule {
        direction: Direction::Ingress,
        peer: Peer::Identity(peer),
        ports,
        action: Action::Allow,
    }
}

#[test]
fn a_server_accepts_clients_of_its_namespace_from_every_cluster() {
    let p = policy(CLIENT_TO_SERVER);
    let ids = identities();
    let got = endpoint_policy(
        [&p],
        &ids,
        &CidrIdentities::default(),
        &pod("shop", "server", "red"),
    )
    .expect("the server is selected");
    assert!(got.ingress_selected);
    assert!(!got.egress_selected, "no egress rules: egress not isolated");
    // The red and green clients of shop; not ops' client, not the other pod.
    assert_eq!(
        got.rules,
        vec![
            ingress(65792, PortMatch::Port(6, 8080)),
            ingress(131328, PortMatch::Port(6, 8080)),
        ]
    );
    got.entries().expect("the datapath accepts it");
}

#[test]
fn an_endpoint_no_policy_selects_is_not_policed() {
    let p = policy(CLIENT_TO_SERVER);
    let ids = identities();
    let none = CidrIdentities::default();
    assert_eq!(
        endpoint_policy([&p], &ids, &none, &pod("shop", "client", "red")),
        None
    );
    // Same labels in another namespace: the policy is namespaced.
    assert_eq!(
        endpoint_policy([&p], &ids, &none, &pod("ops", "server", "red")),
        None
    );
}

#[test]
fn the_cluster_label_limits_peers_to_one_cluster_and_namespaces_widen() {
    let p = policy(
        r#"{"namespace":"shop","name":"green-only","endpoint_selector":{},
        "ingress":[{"from":[{"selector":{"match_labels":{"io.ironmesh.cluster":"green"}},
                             "namespaces":["*"]}]}]}"#,
    );
    let got = endpoint_policy(
        [&p],
        &identities(),
        &CidrIdentities::default(),
        &pod("shop", "other", "red"),
    )
    .unwrap();
    assert_eq!(got.rules, vec![ingress(131328, PortMatch::Any)]);
    let p = policy(
        r#"{"namespace":"shop","name":"ops","ingress":[{"from":[
            {"selector":{"match_labels":{"app":"client"}},"namespaces":["ops"]}]}]}"#,
    );
    let got = endpoint_policy(
        [&p],
        &identities(),
        &CidrIdentities::default(),
        &pod("shop", "server", "red"),
    )
    .unwrap();
    assert_eq!(got.rules, vec![ingress(65795, PortMatch::Any)]);
}

#[test]
fn deny_all_and_egress_and_merging_of_two_policies() {
    let deny =
        policy(r#"{"namespace":"shop","name":"deny-all","policy_types":["ingress","egress"]}"#);
    let ids = identities();
    let none = CidrIdentities::default();
    let got = endpoint_policy([&deny], &ids, &none, &pod("shop", "other", "red")).unwrap();
    assert!(got.ingress_selected && got.egress_selected);
    assert!(got.rules.is_empty(), "selected, nothing allowed");

    let dns = policy(
        r#"{"namespace":"shop","name":"dns","egress":[{"ports":[{"protocol":"udp","port":53},
            {"protocol":"icmp"}]}]}"#,
    );
    let both = [&deny, &dns, &dns];
    let got = endpoint_policy(both, &ids, &none, &pod("shop", "other", "red")).unwrap();
    let egress = |ports| Rule {
        direction: Direction::Egress,
        peer: Peer::Any,
        ports,
        action: Action::Allow,
    };
    assert_eq!(
        got.rules,
        vec![egress(PortMatch::Port(17, 53)), egress(PortMatch::Proto(1))],
        "deduplicated"
    );
}

#[test]
fn cidr_peers_get_stable_node_local_identities() {
    let p = policy(
        r#"{"namespace":"shop","name":"ext","ingress":[{"from":[{"cidr":"198.51.100.0/24"}]}]}"#,
    );
    let mut ids = CidrIdentities::default();
    assert!(ids.assign(&cidrs([&p])).is_empty());
    let n = ids.by_cidr[&"198.51.100.0/24".parse().unwrap()];
    assert!((CIDR_IDENTITY_FIRST..CIDR_IDENTITY_END).contains(&n));
    let got = endpoint_policy([&p], &identities(), &ids, &pod("shop", "x", "red")).unwrap();
    assert_eq!(got.rules, vec![ingress(n, PortMatch::Any)]);
    // Another CIDR arrives: the first keeps its number; dropping it reports it.
    let mut both: BTreeSet<_> = cidrs([&p]);
    both.insert("203.0.113.0/24".parse().unwrap());
    ids.assign(&both);
    assert_eq!(ids.by_cidr[&"198.51.100.0/24".parse().unwrap()], n);
    let gone = ids.assign(&BTreeSet::new());
    assert_eq!(gone.len(), 2);
}

#[test]
fn records_are_checked_with_the_field_and_the_fix() {
    let err = |json: &str| {
        PolicyRecord::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    };
    assert!(err(r#"{"namespace":"shop","name":"a","ingres":[]}"#).contains("unknown field"));
    assert_eq!(
        err(r#"{"namespace":"shop","name":"a","ingress":[{"from":[{}]}]}"#),
        "ingress[0].from[0]: a peer has exactly one of selector or cidr; split it into two peers"
    );
    assert_eq!(
        err(r#"{"namespace":"shop","name":"a","ingress":[{"from":[{"cidr":"10.0.0.1/8"}]}]}"#),
        "ingress[0].from[0].cidr: 10.0.0.1/8 has host bits set; write 10.0.0.0/8"
    );
    assert_eq!(
        err(
            r#"{"namespace":"shop","name":"a","egress":[{"ports":[{"protocol":"icmp","port":3}]}]}"#
        ),
        "egress[0].ports[0].port: Icmp has no ports the datapath matches; omit port"
    );
    assert!(err(r#"{"namespace":"Shop","name":"a"}"#).starts_with("namespace/name: "));
    let p = policy(CLIENT_TO_SERVER);
    let red = "red".parse().unwrap();
    assert_eq!(
        p.key(&red).unwrap(),
        "ironmesh/v1/clusters/red/policies/shop/allow-client"
    );
    let k = p.key_of().unwrap();
    assert_eq!(PolicyRecord::decode(&k, &p.encode()).unwrap(), p);
    let other: common::ServiceKey = "shop/b".parse().unwrap();
    assert!(PolicyRecord::decode(&other, &p.encode()).is_err());
}
