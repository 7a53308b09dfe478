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
        &NamespaceLabels::new(),
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
        endpoint_policy(
            [&p],
            &ids,
            &none,
            &NamespaceLabels::new(),
            &pod("shop", "client", "red")
        ),
        None
    );
    // Same labels in another namespace: the policy is namespaced.
    assert_eq!(
        endpoint_policy(
            [&p],
            &ids,
            &none,
            &NamespaceLabels::new(),
            &pod("ops", "server", "red")
        ),
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
        &NamespaceLabels::new(),
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
        &NamespaceLabels::new(),
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
    let got = endpoint_policy(
        [&deny],
        &ids,
        &none,
        &NamespaceLabels::new(),
        &pod("shop", "other", "red"),
    )
    .unwrap();
    assert!(got.ingress_selected && got.egress_selected);
    assert!(got.rules.is_empty(), "selected, nothing allowed");

    let dns = policy(
        r#"{"namespace":"shop","name":"dns","egress":[{"ports":[{"protocol":"udp","port":53},
            {"protocol":"icmp"}]}]}"#,
    );
    let both = [&deny, &dns, &dns];
    let got = endpoint_policy(
        both,
        &ids,
        &none,
        &NamespaceLabels::new(),
        &pod("shop", "other", "red"),
    )
    .unwrap();
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
    let got = endpoint_policy(
        [&p],
        &identities(),
        &ids,
        &NamespaceLabels::new(),
        &pod("shop", "x", "red"),
    )
    .unwrap();
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
        "ingress[0].from[0]: a peer has exactly one of selector/namespace_selector or cidr; split it into two peers"
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

/// A NetworkPolicy manifest as `ironctl apply` takes it, turned into a record.
fn netpol(yaml: &str) -> PolicyRecord {
    let docs = resources::parse_manifests(yaml).unwrap();
    let o = resources::decode(&docs[0]).unwrap();
    let resources::Spec::NetworkPolicy(spec) = &o.spec else {
        panic!("not a NetworkPolicy")
    };
    PolicyRecord::from_network_policy(o.namespace(), &o.meta.name, spec).unwrap()
}

fn ids_of(rules: &[Rule], dir: Direction) -> BTreeSet<u32> {
    rules
        .iter()
        .filter(|r| r.direction == dir)
        .filter_map(|r| match r.peer {
            Peer::Identity(i) => Some(i),
            Peer::Any => None,
        })
        .collect()
}

#[test]
fn network_policy_selectors_namespace_labels_and_expressions_pick_the_peers() {
    // Namespaces shop (team=a) and ops (team=b) in red; green's shop has no Namespace object.
    let mut namespaces = NamespaceLabels::new();
    namespaces.insert(("red".into(), "shop".into()), labels(&[("team", "a")]));
    namespaces.insert(("red".into(), "ops".into()), labels(&[("team", "b")]));
    let p = netpol(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-in, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [server, db]}]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: b}}
      podSelector: {matchLabels: {app: client}}
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [shop]}]
      podSelector:
        matchExpressions: [{key: app, operator: NotIn, values: [server, other]}]
"#,
    );
    let got = endpoint_policy(
        [&p],
        &identities(),
        &CidrIdentities::default(),
        &namespaces,
        &pod("shop", "server", "red"),
    )
    .unwrap();
    // ops' client (team=b); shop's clients of both clusters (by the namespace's name label);
    // never shop's server or other (NotIn).
    assert_eq!(
        ids_of(&got.rules, Direction::Ingress),
        BTreeSet::from([65795, 65792, 131328])
    );
    // The expression also decides who is selected.
    assert!(
        endpoint_policy(
            [&p],
            &identities(),
            &CidrIdentities::default(),
            &namespaces,
            &pod("shop", "other", "red"),
        )
        .is_none()
    );
}

#[test]
fn network_policy_ip_blocks_except_and_port_ranges() {
    let p = netpol(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}
    ports:
    - {protocol: TCP, port: 32000, endPort: 32003}
"#,
    );
    let mut cids = CidrIdentities::default();
    let mut wanted = cidrs([&p]);
    // Another policy names a longer prefix inside the allowed part: it is allowed too.
    wanted.insert("198.51.100.16/28".parse().unwrap());
    cids.assign(&wanted);
    let id = |c: &str| cids.by_cidr[&c.parse::<ipnet::IpNet>().unwrap()];
    let got = endpoint_policy(
        [&p],
        &identities(),
        &cids,
        &NamespaceLabels::new(),
        &pod("shop", "x", "red"),
    )
    .unwrap();
    assert!(got.egress_selected && !got.ingress_selected);
    let peers = ids_of(&got.rules, Direction::Egress);
    assert_eq!(
        peers,
        BTreeSet::from([id("198.51.100.0/24"), id("198.51.100.16/28")]),
        "the except prefix has its own identity, which is not allowed"
    );
    let ports: BTreeSet<u16> = got
        .rules
        .iter()
        .map(|r| match r.ports {
            PortMatch::Port(6, p) => p,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ports,
        (32000..=32003).collect(),
        "endPort: every port of the range"
    );
}

#[test]
fn network_policy_absent_and_empty_rules_differ_and_unsupported_parts_are_refused() {
    let deny = netpol(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n",
    );
    let got = endpoint_policy(
        [&deny],
        &identities(),
        &CidrIdentities::default(),
        &NamespaceLabels::new(),
        &pod("shop", "x", "red"),
    )
    .unwrap();
    assert!(got.ingress_selected && got.egress_selected && got.rules.is_empty());
    let allow = netpol(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: shop}\nspec: {podSelector: {}, ingress: [{}]}\n",
    );
    let got = endpoint_policy(
        [&allow],
        &identities(),
        &CidrIdentities::default(),
        &NamespaceLabels::new(),
        &pod("shop", "x", "red"),
    )
    .unwrap();
    assert_eq!(
        got.rules,
        vec![Rule {
            direction: Direction::Ingress,
            peer: Peer::Any,
            ports: PortMatch::Any,
            action: Action::Allow,
        }]
    );
    // Huge ranges are refused with the field and the reason; named ports are kept by name.
    let docs = resources::parse_manifests(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}]}]\n  egress: [{ports: [{port: 1000, endPort: 60000}]}]\n",
    )
    .unwrap();
    let o = resources::decode(&docs[0]).unwrap();
    let resources::Spec::NetworkPolicy(spec) = &o.spec else {
        panic!()
    };
    let e = PolicyRecord::from_network_policy("shop", "n", spec).unwrap_err();
    assert!(e.to_string().contains("59001 ports"), "{e}");
    let mut spec = spec.clone();
    spec.egress.clear();
    let r = PolicyRecord::from_network_policy("shop", "n", &spec).unwrap();
    assert_eq!(r.ingress[0].ports[0].port_name.as_deref(), Some("http"));
    assert_eq!(r.ingress[0].ports[0].port, None);
}

fn ports(list: &[(&str, u16)]) -> Vec<common::ContainerPort> {
    list.iter()
        .map(|(n, p)| common::ContainerPort {
            name: n.to_string(),
            container_port: *p,
            protocol: common::PortProtocol::Tcp,
        })
        .collect()
}

#[test]
fn named_ports_resolve_to_the_selected_pods_own_on_ingress_and_the_destinations_on_egress() {
    let p = policy(
        r#"{"namespace":"shop","name":"named",
  "endpoint_selector":{"match_labels":{"app":"server"}},
  "ingress":[{"from":[{"selector":{"match_labels":{"app":"client"}}}],
              "ports":[{"protocol":"tcp","port_name":"http"},{"protocol":"udp","port_name":"http"}]}],
  "egress":[{"to":[{"selector":{"match_labels":{"app":"other"}}}],
             "ports":[{"protocol":"tcp","port_name":"metrics"}]}]}"#,
    );
    let ids = identities();
    // Two "other" pods name metrics differently; the client names it too (not a destination).
    let mut named = NamedPorts::default();
    assert!(named.set(
        65794,
        "10.1.0.8".parse().unwrap(),
        Some(ports(&[("metrics", 9100)]))
    ));
    assert!(named.set(
        65794,
        "10.1.0.9".parse().unwrap(),
        Some(ports(&[("metrics", 9200)]))
    ));
    assert!(!named.set(
        65794,
        "10.1.0.9".parse().unwrap(),
        Some(ports(&[("metrics", 9200)]))
    ));
    named.set(
        65792,
        "10.1.0.2".parse().unwrap(),
        Some(ports(&[("metrics", 9999)])),
    );
    let got = endpoint_policy_with(
        [&p],
        &ids,
        &CidrIdentities::default(),
        &NamespaceLabels::new(),
        &pod("shop", "server", "red"),
        &ports(&[("http", 8080)]),
        &named,
    )
    .unwrap();
    let egress = |port| Rule {
        direction: Direction::Egress,
        peer: Peer::Identity(65794),
        ports: PortMatch::Port(6, port),
        action: Action::Allow,
    };
    // Ingress: the server's own http (TCP only: it has no UDP port of that name); egress: the
    // metrics ports of the "other" pods, not the client's.
    assert_eq!(
        got.rules,
        vec![
            ingress(65792, PortMatch::Port(6, 8080)),
            ingress(131328, PortMatch::Port(6, 8080)),
            egress(9100),
            egress(9200),
        ]
    );
    // A server without a port of that name allows nothing on ingress (it is still isolated).
    let got = endpoint_policy_with(
        [&p],
        &ids,
        &CidrIdentities::default(),
        &NamespaceLabels::new(),
        &pod("shop", "server", "red"),
        &[],
        &named,
    )
    .unwrap();
    assert!(got.ingress_selected);
    assert!(got.rules.iter().all(|r| r.direction == Direction::Egress));
    // A pod goes: its port goes with it.
    assert!(named.set(65794, "10.1.0.8".parse().unwrap(), None));
    assert!(!named.set(65794, "10.1.0.8".parse().unwrap(), None));
    // A bad name and a name with a number are refused in records.
    let bad = PolicyRecord::parse(
        br#"{"namespace":"shop","name":"b","ingress":[{"ports":[{"protocol":"tcp","port_name":"HTTP"}]}]}"#,
    )
    .unwrap_err();
    assert!(bad.to_string().contains("port_name"), "{bad}");
    let both = PolicyRecord::parse(
        br#"{"namespace":"shop","name":"b","ingress":[{"ports":[{"protocol":"tcp","port":80,"port_name":"http"}]}]}"#,
    )
    .unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
}
