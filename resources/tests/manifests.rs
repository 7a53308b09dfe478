//! Manifests as users write them: the Kubernetes documentation's examples load unchanged, and
//! bad ones are refused with every error and its kubectl-style path.

use ironmesh_resources::{
    AdvertisementType, ClusterIpRequest, Kind, Operator, Peer, PolicyType, PortRef, Protocol,
    ServiceType, SessionAffinity, Spec, Stored, TrafficPolicy, decode, parse_manifests,
};
use serde_json::json;

fn one(text: &str) -> ironmesh_resources::Object {
    let docs = parse_manifests(text).expect("parses");
    assert_eq!(docs.len(), 1, "{docs:?}");
    decode(&docs[0]).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<String> {
    let docs = parse_manifests(text).expect("parses");
    let e = decode(&docs[0]).expect_err("must be refused");
    e.errors.iter().map(|e| e.to_string()).collect()
}

// https://kubernetes.io/docs/concepts/services-networking/service/ (Defining a Service)
const DOC_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"#;

#[test]
fn the_kubernetes_documentation_service_loads_unchanged() {
    let o = one(DOC_SERVICE);
    assert_eq!(o.kind(), Kind::Service);
    assert_eq!(o.meta.name, "my-service");
    assert_eq!(o.namespace(), "default");
    let Spec::Service(s) = &o.spec else { panic!() };
    assert_eq!(s.type_, ServiceType::ClusterIP);
    assert_eq!(
        s.selector
            .as_ref()
            .unwrap()
            .get("app.kubernetes.io/name")
            .unwrap(),
        "MyApp"
    );
    assert_eq!(s.ports[0].port, 80);
    assert_eq!(s.ports[0].target_port, PortRef::Number(9376));
    assert_eq!(s.ports[0].protocol, Protocol::Tcp);
    assert!(s.cluster_ips.is_empty() && !s.headless);
    // What is stored is what was applied (plus the namespace made explicit).
    assert_eq!(o.document["spec"]["ports"][0]["targetPort"], json!(9376));
    assert_eq!(o.document["metadata"]["namespace"], json!("default"));
}

// Same page: named target ports, multi-port services, LoadBalancer with a class.
const DOC_NAMED_AND_LB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx-service
  namespace: shop
  labels: {tier: front}
  annotations:
    ironmesh.io/global: "true"
    ironmesh.io/affinity: local
spec:
  type: LoadBalancer
  loadBalancerClass: ironmesh.io/lb
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  selector:
    app.kubernetes.io/name: proxy
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: http-web-svc
  - name: https
    protocol: TCP
    port: 443
    targetPort: 8443
    nodePort: 30443
"#;

#[test]
fn named_target_ports_load_balancer_fields_and_global_annotations_are_read() {
    let o = one(DOC_NAMED_AND_LB);
    let Spec::Service(s) = &o.spec else { panic!() };
    assert_eq!(s.type_, ServiceType::LoadBalancer);
    assert!(s.wants_vip());
    assert_eq!(s.ports[0].target_port, PortRef::Name("http-web-svc".into()));
    assert_eq!(s.ports[1].node_port, Some(30443));
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.session_affinity, SessionAffinity::ClientIP);
    assert_eq!(s.session_affinity_timeout_seconds, Some(10800));
    assert!(s.global);
    assert_eq!(s.affinity, ironmesh_resources::GlobalAffinity::Local);
}

#[test]
fn another_load_balancer_class_gets_no_vip_from_ironmesh() {
    let o = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/other\n  ports: [{port: 80}]\n",
    );
    let Spec::Service(s) = &o.spec else { panic!() };
    assert!(!s.wants_vip());
}

#[test]
fn headless_and_fixed_cluster_ips_are_understood() {
    let o = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n",
    );
    let Spec::Service(s) = &o.spec else { panic!() };
    assert!(s.headless && s.ports.is_empty());
    let o = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, 'fd00:96::a']\n  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 53, protocol: UDP, name: dns}, {port: 53, protocol: TCP, name: dns-tcp}]\n",
    );
    let Spec::Service(s) = &o.spec else { panic!() };
    assert_eq!(s.cluster_ips.len(), 2);
    assert_eq!(s.ports[0].protocol, Protocol::Udp);
    let _ = ClusterIpRequest::Allocate;
}

// https://kubernetes.io/docs/concepts/services-networking/network-policies/ (the example)
const DOC_NETPOL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: multi-port-egress
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Egress
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 32000
          endPort: 32768
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
spec:
  podSelector: {}
  ingress:
  - {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: expressions
spec:
  podSelector:
    matchExpressions:
    - {key: tier, operator: In, values: [cache, db]}
    - {key: legacy, operator: DoesNotExist}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {team: a}
      podSelector:
        matchLabels: {role: client}
    ports:
    - port: http
"#;

#[test]
fn the_kubernetes_documentation_network_policies_load_unchanged() {
    let docs = parse_manifests(DOC_NETPOL).unwrap();
    assert_eq!(docs.len(), 5);
    let objs: Vec<_> = docs
        .iter()
        .map(|d| decode(d).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let Spec::NetworkPolicy(p) = &objs[0].spec else {
        panic!()
    };
    assert_eq!(p.pod_selector.match_labels["role"], "db");
    let from = p.ingress[0].peers.as_ref().unwrap();
    assert_eq!(from.len(), 3);
    match &from[0] {
        Peer::IpBlock(b) => {
            assert_eq!(b.cidr.to_string(), "172.17.0.0/16");
            assert_eq!(b.except[0].to_string(), "172.17.1.0/24");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &from[1],
        Peer::Pods {
            pods: None,
            namespaces: Some(_)
        }
    ));
    assert!(matches!(
        &from[2],
        Peer::Pods {
            pods: Some(_),
            namespaces: None
        }
    ));
    assert_eq!(
        p.effective_types(),
        vec![PolicyType::Ingress, PolicyType::Egress]
    );

    let Spec::NetworkPolicy(p) = &objs[1].spec else {
        panic!()
    };
    let port = &p.egress[0].ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.port.clone(), port.end_port),
        (Some(PortRef::Number(32000)), Some(32768))
    );

    // Default deny: a selected direction with no rules.
    let Spec::NetworkPolicy(p) = &objs[2].spec else {
        panic!()
    };
    assert!(p.pod_selector.is_empty() && p.ingress.is_empty());
    assert_eq!(p.effective_types(), vec![PolicyType::Ingress]);
    // Allow all: one empty rule (no peers, no ports = everything).
    let Spec::NetworkPolicy(p) = &objs[3].spec else {
        panic!()
    };
    assert_eq!(p.ingress.len(), 1);
    assert!(p.ingress[0].peers.is_none() && p.ingress[0].ports.is_none());

    let Spec::NetworkPolicy(p) = &objs[4].spec else {
        panic!()
    };
    assert_eq!(p.pod_selector.match_expressions[0].operator, Operator::In);
    let l = |k: &str| match k {
        "tier" => Some("db"),
        _ => None,
    };
    assert!(p.pod_selector.matches(l));
    let legacy = |k: &str| match k {
        "tier" => Some("db"),
        "legacy" => Some("yes"),
        _ => None,
    };
    assert!(!p.pod_selector.matches(legacy));
    assert!(matches!(
        &p.ingress[0].peers.as_ref().unwrap()[0],
        Peer::Pods {
            pods: Some(_),
            namespaces: Some(_)
        }
    ));
    assert_eq!(
        p.ingress[0].ports.as_ref().unwrap()[0].port,
        Some(PortRef::Name("http".into()))
    );
    // Without policyTypes and without egress rules: Ingress only.
    assert_eq!(p.effective_types(), vec![PolicyType::Ingress]);
}

#[test]
fn every_error_of_a_bad_service_is_reported_at_once_with_its_path() {
    let errs = errors(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: Web_1
  labels: {"bad key!": x}
spec:
  type: Balancer
  selector: {app: web}
  sessionAfinity: ClientIP
  ports:
  - name: http
    port: 80
    targetPort: "not a port name because too long"
  - port: 0
    protocol: tcp
    nodePort: 80
"#,
    );
    let has = |p: &str| errs.iter().any(|e| e.starts_with(p));
    for p in [
        "metadata.name: Invalid value: \"Web_1\"",
        "metadata.labels[bad key!]",
        "spec.type: Unsupported value: \"Balancer\"",
        "spec.sessionAfinity: unknown field",
        "spec.ports[0].targetPort: Invalid value",
        "spec.ports[1].name: Required value",
        "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535",
        "spec.ports[1].protocol: Unsupported value: \"tcp\"",
        "spec.ports[1].nodePort: Invalid value: 80",
    ] {
        assert!(has(p), "missing {p:?} in {errs:#?}");
    }
}

#[test]
fn bad_network_policies_are_refused_with_the_field_path() {
    let errs = errors(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad}
spec:
  podSelector:
    matchExpressions:
    - {key: tier, operator: In}
    - {key: x, operator: Exists, values: [a]}
    - {key: y, operator: Near, values: [a]}
  policyTypes: [Ingress, Ingress, Sideways]
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}
      podSelector: {}
    - {}
    ports:
    - {port: 90, endPort: 80}
    - {port: http, endPort: 90}
    - {endPort: 90}
"#,
    );
    let has = |p: &str| errs.iter().any(|e| e.starts_with(p));
    for p in [
        "spec.podSelector.matchExpressions[0].values: Required value",
        "spec.podSelector.matchExpressions[1].values: Forbidden",
        "spec.podSelector.matchExpressions[2].operator: Unsupported value: \"Near\"",
        "spec.policyTypes[1]: Duplicate value",
        "spec.policyTypes[2]: Unsupported value",
        "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset",
        "spec.ingress[0].from[0]: Forbidden: may not specify more than 1 peer",
        "spec.ingress[0].from[1]: Required value",
        "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
        "spec.ingress[0].ports[2].port: Required value",
    ] {
        assert!(has(p), "missing {p:?} in {errs:#?}");
    }
}

#[test]
fn kind_and_api_version_mismatches_name_the_fix() {
    let errs = errors(
        "apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}}\n",
    );
    assert!(errs[0].contains("networking.k8s.io/v1"), "{errs:?}");
    let errs = errors("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    assert!(
        errs[0].starts_with("kind: Unsupported value: \"Deployment\""),
        "{errs:?}"
    );
}

#[test]
fn json_lists_and_yaml_documents_all_load() {
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"team":"a"}}},
        {"apiVersion":"ironmesh.io/v1","kind":"IPPool","metadata":{"name":"public"},
         "spec":{"cidrs":["203.0.113.0/28"],"serviceSelector":{"matchLabels":{"expose":"yes"}}}}]}"#;
    let docs = parse_manifests(json).unwrap();
    assert_eq!(docs.len(), 2);
    let ns = decode(&docs[0]).unwrap();
    assert_eq!((ns.kind(), ns.namespace()), (Kind::Namespace, ""));
    let pool = decode(&docs[1]).unwrap();
    let Spec::IpPool(p) = &pool.spec else {
        panic!()
    };
    assert_eq!(p.cidrs[0].to_string(), "203.0.113.0/28");
    let yaml = "---\n# nothing\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n";
    assert_eq!(parse_manifests(yaml).unwrap().len(), 1);
}

#[test]
fn a_namespace_on_a_cluster_scoped_kind_and_host_bits_in_a_pool_are_refused() {
    let errs = errors(
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: p, namespace: shop}\nspec: {cidrs: [203.0.113.1/28, 203.0.113.0/29]}\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("metadata.namespace: Forbidden")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.cidrs[0]: Invalid value: \"203.0.113.1/28\": has host bits set; write 203.0.113.0/28")),
        "{errs:?}"
    );
}

#[test]
fn a_bgp_advertisement_of_cilium_shape_loads_with_its_attributes() {
    let doc = r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata:
  name: bgp-advertisements
spec:
  advertisements:
  - advertisementType: PodCIDR
    attributes:
      communities:
        standard: ["65101:100"]
  - advertisementType: Service
    service:
      addresses: [LoadBalancerIP]
    selector:
      matchExpressions:
      - {key: expose, operator: In, values: [bgp]}
    attributes:
      communities:
        standard: ["65101:200", "65101:200"]
        large: ["65101:2:1"]
        wellKnown: [no-export]
      localPreference: 150
"#;
    let docs = parse_manifests(doc).unwrap();
    let o = decode(&docs[0]).unwrap();
    assert_eq!((o.kind(), o.namespace()), (Kind::BgpAdvertisement, ""));
    let Spec::BgpAdvertisement(spec) = &o.spec else {
        panic!("{o:?}")
    };
    assert_eq!(spec.advertisements.len(), 2);
    let pod = &spec.advertisements[0];
    assert_eq!(pod.type_, AdvertisementType::PodCidr);
    assert_eq!(
        pod.attributes.communities,
        vec!["65101:100".parse().unwrap()]
    );
    let svc = &spec.advertisements[1];
    let a = &svc.attributes;
    // Repeats collapse; well-known ones are communities too.
    assert_eq!(
        a.communities,
        vec!["65101:200".parse().unwrap(), common::Community::NO_EXPORT]
    );
    assert_eq!(a.large_communities, vec!["65101:2:1".parse().unwrap()]);
    assert_eq!(a.local_preference, Some(150));
    let labels = |m: &'static [(&'static str, &'static str)]| {
        move |k: &str| m.iter().find(|(mk, _)| *mk == k).map(|(_, v)| *v)
    };
    assert!(svc.selects_service("shop", "web", labels(&[("expose", "bgp")])));
    assert!(!svc.selects_service("shop", "web", labels(&[("expose", "no")])));
    assert!(!pod.selects_service("shop", "web", labels(&[("expose", "bgp")])));
    // The namespace and name pseudo labels, as Cilium has them.
    let by_ns = r#"{"apiVersion":"ironmesh.io/v1","kind":"BGPAdvertisement","metadata":{"name":"a"},
        "spec":{"advertisements":[{"advertisementType":"Service","service":{"addresses":["LoadBalancerIP"]},
        "selector":{"matchLabels":{"io.kubernetes.service.namespace":"shop"}}}]}}"#;
    let o = decode(&parse_manifests(by_ns).unwrap()[0]).unwrap();
    let Spec::BgpAdvertisement(spec) = &o.spec else {
        panic!()
    };
    assert!(spec.advertisements[0].selects_service("shop", "x", |_| None));
    assert!(!spec.advertisements[0].selects_service("other", "x", |_| None));
}

#[test]
fn bgp_advertisement_mistakes_are_named_with_their_path() {
    let errs = errors(
        r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata: {name: bad}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [ClusterIP]}
  - advertisementType: PodCIDR
    selector: {}
    attributes:
      communities: {standard: ["65536:1"], wellKnown: ["65000:1"], large: ["1:2"]}
      localPreference: -1
      med: 5
  - advertisementType: Route
"#,
    );
    let want = [
        "spec.advertisements[0].service.addresses[0]: Forbidden: ironmesh announces LoadBalancer addresses only",
        "spec.advertisements[0].selector: Required value: which services to announce; `selector: {}` selects every service",
        "spec.advertisements[1].selector: Forbidden: only for advertisementType Service",
        "spec.advertisements[1].attributes.communities.standard[0]: Invalid value: \"65536:1\": \"65536:1\" is not a community",
        "spec.advertisements[1].attributes.communities.wellKnown[0]: Invalid value: \"65000:1\": is not a well-known community",
        "spec.advertisements[1].attributes.communities.large[0]: Invalid value: \"1:2\": \"1:2\" is not a large community",
        "spec.advertisements[1].attributes.localPreference: Invalid value: -1: must be between 0 and 4294967295",
        "spec.advertisements[1].attributes.med: unknown field",
        "spec.advertisements[2].advertisementType: Unsupported value: \"Route\"",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "{w:?} not in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn yaml_that_is_not_a_manifest_is_refused_without_panicking() {
    assert!(parse_manifests("a: [1, 2").is_err());
    assert!(parse_manifests("- 1\n- 2\n").is_err());
    let big = "x".repeat(ironmesh_resources::MAX_MANIFEST_BYTES + 1);
    assert!(matches!(
        parse_manifests(&big),
        Err(ironmesh_resources::ParseError::TooLarge { .. })
    ));
    // A "billion laughs" document is stopped by the parser's budget.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        bomb.push_str(&format!(
            "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    assert!(parse_manifests(&bomb).is_err());
}

#[test]
fn a_stored_object_reads_back_with_its_status_and_metadata() {
    let mut o = one(DOC_SERVICE);
    ironmesh_resources::set_metadata(&mut o.document, "uid", json!("u-1"));
    ironmesh_resources::set_spec(&mut o.document, "clusterIP", json!("10.96.0.7"));
    let stored = Stored {
        object: o,
        status: json!({"loadBalancer": {}}),
    };
    let back = Stored::decode(&stored.encode()).unwrap();
    assert_eq!(back.object.meta.uid, "u-1");
    let Spec::Service(s) = &back.object.spec else {
        panic!()
    };
    assert_eq!(
        s.cluster_ips,
        vec!["10.96.0.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(back.status, json!({"loadBalancer": {}}));
}

mod hostile {
    use proptest::prelude::*;
    use serde_json::Value;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9./:_ -]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("TCP"),
                Just("LoadBalancer"),
                Just("None"),
                Just("10.0.0.0/8"),
                Just("In"),
                Just("Ingress"),
                Just("web"),
                Just("http")
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("spec".to_string()),
                        Just("ports".to_string()),
                        Just("port".to_string()),
                        Just("targetPort".to_string()),
                        Just("selector".to_string()),
                        Just("ingress".to_string()),
                        Just("from".to_string()),
                        Just("ipBlock".to_string()),
                        Just("except".to_string()),
                        Just("cidr".to_string()),
                        Just("podSelector".to_string()),
                        Just("matchExpressions".to_string()),
                        Just("metadata".to_string()),
                        Just("name".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any document of any shape is either accepted or refused with errors; never a panic.
        #[test]
        fn decode_never_panics(kind in prop_oneof![Just("Service"), Just("NetworkPolicy"), Just("IPPool"), Just("Namespace"), Just("BGPAdvertisement")],
                               body in value(), meta in value()) {
            let api = match kind { "NetworkPolicy" => "networking.k8s.io/v1", "IPPool" | "BGPAdvertisement" => "ironmesh.io/v1", _ => "v1" };
            let mut doc = serde_json::json!({"apiVersion": api, "kind": kind, "metadata": meta});
            doc["spec"] = body;
            if let Err(e) = ironmesh_resources::decode(&doc) {
                prop_assert!(!e.errors.is_empty());
            }
        }
    }
}

#[test]
fn health_check_annotations_are_read_and_bad_ones_refused_with_the_path() {
    let o = one(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, annotations: {ironmesh.io/health-check: \"http:/healthz\"}}\nspec: {ports: [{port: 80}]}\n",
    );
    let Spec::Service(s) = &o.spec else { panic!() };
    assert_eq!(
        s.health_check,
        Some(ironmesh_resources::HealthCheck::Http("/healthz".into()))
    );
    let errs = errors(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, annotations: {ironmesh.io/health-check: udp}}\nspec: {ports: [{port: 80}]}\n",
    );
    assert!(
        errs[0]
            .starts_with("metadata.annotations[ironmesh.io/health-check]: Invalid value: \"udp\""),
        "{errs:?}"
    );
}

#[test]
fn a_pod_cidr_pool_takes_node_mask_sizes_per_family_and_refuses_what_cannot_work() {
    let docs = parse_manifests(
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: tenants}\nspec:\n  type: PodCIDR\n  cidrs: [10.9.0.0/16, fd00:9::/48]\n  nodeMaskSize: {ipv4: 26}\n  namespaceSelector: {matchLabels: {tier: tenant}}\n",
    )
    .unwrap();
    let o = decode(&docs[0]).unwrap();
    let Spec::IpPool(p) = &o.spec else { panic!() };
    assert_eq!(p.type_, ironmesh_resources::PoolType::PodCidr);
    // An unnamed family keeps the default (/64 for IPv6).
    assert_eq!(
        p.masks(),
        ironmesh_resources::NodeMaskSize { ipv4: 26, ipv6: 64 }
    );
    assert!(p.namespace_selector.is_some());

    let errs = errors(
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec:\n  type: PodCIDR\n  cidrs: [10.9.0.0/26]\n  nodeMaskSize: {ipv4: 24, ipv6: 127, ipv5: 1}\n  serviceSelector: {}\n",
    );
    for want in [
        "spec.nodeMaskSize.ipv4: Invalid value: 24: a node block /24 is larger than spec.cidrs[0] 10.9.0.0/26; use /26 or longer",
        "spec.nodeMaskSize.ipv6: Invalid value: 127",
        "spec.nodeMaskSize.ipv5: ",
        "spec.serviceSelector: Forbidden: a PodCIDR pool is chosen by its pods' namespaces",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(want)), "{want}: {errs:?}");
    }
    let errs = errors(
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidrs: [203.0.113.0/28], nodeMaskSize: {ipv4: 30}}\n",
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.nodeMaskSize: Forbidden: only a PodCIDR pool")),
        "{errs:?}"
    );
}
