use super::*;
use crate::identity::IdentityValue;
use crate::schema::ObjectName;

fn c(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn service_doc(yaml: &str, cluster_ip: &str) -> (Resource, Vec<u8>) {
    let docs = resources::parse_manifests(yaml).unwrap();
    let mut o = resources::decode(&docs[0]).unwrap();
    resources::set_spec(&mut o.document, "clusterIP", cluster_ip.into());
    let name = ObjectName::new(
        resources::Kind::Service,
        o.meta.namespace.as_deref(),
        &o.meta.name,
    )
    .unwrap();
    let stored = Stored {
        object: o,
        status: serde_json::Value::Null,
    };
    (Resource::Object(name), stored.encode())
}

fn identity(id: u32, labels: &str) -> (Resource, Vec<u8>) {
    let id = Identity::from_raw(id).unwrap();
    let v = IdentityValue {
        labels: labels.parse().unwrap(),
    };
    (Resource::Identity(id), serde_json::to_vec(&v).unwrap())
}

fn endpoint(cluster: &str, ip: &str, node: &str, id: u32) -> (Resource, Vec<u8>) {
    let r = EndpointRecord {
        ip: ip.parse().unwrap(),
        cluster: c(cluster),
        node: node.parse().unwrap(),
        identity: Identity::from_raw(id).unwrap(),
        tunnel_endpoint: None,
        encrypt_key: 0,
        ports: Vec::new(),
        pod: None,
    };
    (Resource::Endpoint(r.ip), r.encode())
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {ironmesh.io/global: "true", ironmesh.io/affinity: local}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, targetPort: metrics}
"#;

fn backends(r: &ServiceRecord) -> Vec<(String, u16, Option<String>)> {
    r.backends
        .iter()
        .map(|b| (b.ip.to_string(), b.port, b.port_name.clone()))
        .collect()
}

#[test]
fn backends_follow_the_endpoints_that_match_the_selector_in_the_namespace() {
    let red = c("red");
    let mut ctl = ServiceController::new();
    let (r, v) = service_doc(WEB, "10.96.0.10");
    // No endpoints yet: the record exists with its VIP and no backends.
    let ch = ctl.upsert(&red, &r, &v);
    assert_eq!(ch.len(), 1);
    let rec = ch[0].2.clone().unwrap();
    assert_eq!(rec.vips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert!(rec.global && rec.affinity == Affinity::Local);
    assert!(rec.backends.is_empty());

    // web in shop matches; web in another namespace and a client in shop do not.
    for (res, val) in [
        identity(300, "app=web,io.kubernetes.pod.namespace=shop"),
        identity(301, "app=web,io.kubernetes.pod.namespace=other"),
        identity(302, "app=client,io.kubernetes.pod.namespace=shop"),
    ] {
        ctl.upsert(&red, &res, &val);
    }
    let (res, val) = endpoint("red", "10.1.0.5", "n1", 300);
    let ch = ctl.upsert(&red, &res, &val);
    // The named port (metrics) has no backends: this pod has no port of that name.
    assert_eq!(
        backends(ch[0].2.as_ref().unwrap()),
        vec![("10.1.0.5".into(), 8080, Some("http".into()))]
    );
    for (ip, id) in [("10.1.0.6", 301), ("10.1.0.7", 302)] {
        let (res, val) = endpoint("red", ip, "n1", id);
        assert!(ctl.upsert(&red, &res, &val).is_empty(), "{ip} changed web");
    }
    // An endpoint whose identity's labels arrive later joins when they do.
    let (res, val) = endpoint("red", "10.1.1.5", "n2", 303);
    assert!(ctl.upsert(&red, &res, &val).is_empty());
    let (res, val) = identity(303, "app=web,io.kubernetes.pod.namespace=shop,v=2");
    let ch = ctl.upsert(&red, &res, &val);
    assert_eq!(backends(ch[0].2.as_ref().unwrap()).len(), 2);

    // The pod goes (CNI DEL, or its node's lease expired): its backend goes with it.
    let ch = ctl.delete(&red, &Resource::Endpoint("10.1.0.5".parse().unwrap()));
    assert_eq!(
        backends(ch[0].2.as_ref().unwrap()),
        vec![("10.1.1.5".into(), 8080, Some("http".into()))]
    );
    assert_eq!(
        ch[0].2.as_ref().unwrap().backends[0]
            .node
            .as_ref()
            .unwrap()
            .as_ref(),
        "n2"
    );

    // The service is deleted: its record goes.
    let ch = ctl.delete(&red, &r);
    assert_eq!(ch.len(), 1);
    assert!(ch[0].2.is_none());
    assert!(ctl.records().next().is_none());
}

#[test]
fn each_cluster_derives_its_own_records_from_its_own_endpoints() {
    let (red, blue) = (c("red"), c("blue"));
    let mut ctl = ServiceController::new();
    let (r, v) = service_doc(WEB, "10.96.0.10");
    ctl.upsert(&red, &r, &v);
    let (r2, v2) = service_doc(WEB, "10.97.0.10");
    ctl.upsert(&blue, &r2, &v2);
    let (res, val) = identity(300, "app=web,io.kubernetes.pod.namespace=shop");
    ctl.upsert(&blue, &res, &val);
    let (res, val) = endpoint("blue", "10.2.0.5", "b1", 300);
    let ch = ctl.upsert(&blue, &res, &val);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].0, blue);
    let key: ServiceKey = "shop/web".parse().unwrap();
    assert!(ctl.record(&red, &key).unwrap().backends.is_empty());
    assert_eq!(ctl.record(&blue, &key).unwrap().backends.len(), 1);
    assert_eq!(
        ctl.record(&blue, &key).unwrap().backends[0].cluster,
        Some(blue)
    );
}

#[test]
fn headless_services_and_services_without_a_selector_serve_no_backends() {
    let red = c("red");
    let mut ctl = ServiceController::new();
    let (r, v) = service_doc(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {clusterIP: None, selector: {app: db}}\n",
        "None",
    );
    assert!(ctl.upsert(&red, &r, &v).is_empty());
    let (r, v) = service_doc(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: shop}\nspec: {ports: [{port: 80}]}\n",
        "10.96.0.11",
    );
    let ch = ctl.upsert(&red, &r, &v);
    assert!(ch[0].2.as_ref().unwrap().backends.is_empty());
}

#[test]
fn an_object_stored_under_another_name_is_refused() {
    let (_, v) = service_doc(WEB, "10.96.0.10");
    let wrong = ObjectName::new(resources::Kind::Service, Some("shop"), "other").unwrap();
    let e = decode(&wrong, &v).unwrap_err();
    assert!(e.contains("stored under services/shop/other"), "{e}");
}

mod incremental {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Service(usize, bool),
        Endpoint(u8, u32, bool),
        Identity(u32, usize, usize, bool),
    }

    const SERVICES: [&str; 3] = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: s0, namespace: a}\nspec: {selector: {app: x}, ports: [{port: 80}]}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s1, namespace: a}\nspec: {selector: {app: \"y\"}, ports: [{port: 81, targetPort: 8081}]}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s2, namespace: b}\nspec: {selector: {app: x}, ports: [{port: 82}]}\n",
    ];
    const APPS: [&str; 3] = ["x", "y", "z"];
    const NSS: [&str; 2] = ["a", "b"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..3, any::<bool>()).prop_map(|(i, up)| Op::Service(i, up)),
            (1u8..7, 300u32..304, any::<bool>()).prop_map(|(ip, id, up)| Op::Endpoint(ip, id, up)),
            (300u32..304, 0usize..3, 0usize..2, any::<bool>())
                .prop_map(|(id, app, ns, up)| Op::Identity(id, app, ns, up)),
        ]
    }

    fn apply(ctl: &mut ServiceController, red: &ClusterName, op: &Op) {
        match op {
            Op::Service(i, true) => {
                let (r, v) = service_doc(SERVICES[*i], &format!("10.96.0.{}", i + 1));
                ctl.upsert(red, &r, &v);
            }
            Op::Service(i, false) => {
                let (r, _) = service_doc(SERVICES[*i], "10.96.0.1");
                ctl.delete(red, &r);
            }
            Op::Endpoint(ip, id, true) => {
                let (r, v) = endpoint("red", &format!("10.1.0.{ip}"), "n1", *id);
                ctl.upsert(red, &r, &v);
            }
            Op::Endpoint(ip, _, false) => {
                let ip: IpAddr = format!("10.1.0.{ip}").parse().unwrap();
                ctl.delete(red, &Resource::Endpoint(ip));
            }
            Op::Identity(id, app, ns, true) => {
                let (r, v) = identity(
                    *id,
                    &format!(
                        "app={},io.kubernetes.pod.namespace={}",
                        APPS[*app], NSS[*ns]
                    ),
                );
                ctl.upsert(red, &r, &v);
            }
            Op::Identity(id, _, _, false) => {
                ctl.delete(red, &Resource::Identity(Identity::from_raw(*id).unwrap()));
            }
        }
    }

    proptest! {
        /// Whatever the order of changes, the incremental records equal those derived from
        /// scratch from the final state.
        #[test]
        fn incremental_records_equal_a_fresh_derivation(ops in prop::collection::vec(op(), 1..40)) {
            let red = c("red");
            let mut ctl = ServiceController::new();
            let mut last_service = BTreeMap::new();
            let mut last_endpoint = BTreeMap::new();
            let mut last_identity = BTreeMap::new();
            for o in &ops {
                apply(&mut ctl, &red, o);
                match o {
                    Op::Service(i, _) => { last_service.insert(*i, o.clone()); }
                    Op::Endpoint(ip, _, _) => { last_endpoint.insert(*ip, o.clone()); }
                    Op::Identity(id, ..) => { last_identity.insert(*id, o.clone()); }
                }
            }
            let mut fresh = ServiceController::new();
            for o in last_identity.values().chain(last_endpoint.values()).chain(last_service.values()) {
                apply(&mut fresh, &red, o);
            }
            let got: Vec<_> = ctl.records().cloned().collect();
            let want: Vec<_> = fresh.records().cloned().collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn a_failing_health_check_quarantines_only_with_a_check_and_only_that_port() {
    let red = c("red");
    let mut ctl = ServiceController::new();
    let checked = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, annotations: {ironmesh.io/health-check: \"http:/healthz\"}}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n";
    let plain = "apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: shop}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n";
    for (yaml, ip) in [(checked, "10.96.0.10"), (plain, "10.96.0.11")] {
        let (r, v) = service_doc(yaml, ip);
        ctl.upsert(&red, &r, &v);
    }
    let (r, v) = identity(300, "app=web,io.kubernetes.pod.namespace=shop");
    ctl.upsert(&red, &r, &v);
    let (r, v) = endpoint("red", "10.1.0.5", "n1", 300);
    ctl.upsert(&red, &r, &v);
    let ip: IpAddr = "10.1.0.5".parse().unwrap();
    let health = |ports: Vec<u16>| HealthValue {
        ip,
        node: "n1".parse().unwrap(),
        ports,
        reason: "GET /healthz: status 503".into(),
    };
    let ch = ctl.upsert(&red, &Resource::Health(ip), &health(vec![8080]).encode());
    assert_eq!(ch.len(), 1, "only the checked service changes: {ch:?}");
    let state = |name: &str, ctl: &ServiceController| {
        ctl.record(&red, &format!("shop/{name}").parse().unwrap())
            .unwrap()
            .backends[0]
            .state
    };
    assert_eq!(state("web", &ctl), BackendState::Quarantined);
    assert_eq!(state("plain", &ctl), BackendState::Active);
    // Another port failing does not quarantine this one.
    ctl.upsert(&red, &Resource::Health(ip), &health(vec![9090]).encode());
    assert_eq!(state("web", &ctl), BackendState::Active);
    ctl.upsert(&red, &Resource::Health(ip), &health(vec![8080]).encode());
    ctl.delete(&red, &Resource::Health(ip));
    assert_eq!(state("web", &ctl), BackendState::Active);
    // A value naming another address is refused.
    assert!(HealthValue::decode("10.1.0.6".parse().unwrap(), &health(vec![1]).encode()).is_err());
}

#[test]
fn a_named_target_port_resolves_through_each_pods_named_ports() {
    let red = c("red");
    let mut ctl = ServiceController::new();
    let (r, v) = service_doc(WEB, "10.96.0.10");
    ctl.upsert(&red, &r, &v);
    let (res, val) = identity(300, "app=web,io.kubernetes.pod.namespace=shop");
    ctl.upsert(&red, &res, &val);
    let with_ports = |ip: &str, ports: &[(&str, u16, common::PortProtocol)]| {
        let (res, val) = endpoint("red", ip, "n1", 300);
        let mut rec = EndpointRecord::decode(&red, ip.parse().unwrap(), &val).unwrap();
        rec.ports = ports
            .iter()
            .map(|(n, p, proto)| common::ContainerPort {
                name: n.to_string(),
                container_port: *p,
                protocol: *proto,
            })
            .collect();
        (res, rec.encode())
    };
    // Two pods name "metrics" differently; a third has it only as UDP, which a TCP port
    // does not take.
    let mut last = Vec::new();
    for (ip, ports) in [
        (
            "10.1.0.5",
            vec![("metrics", 9100, common::PortProtocol::Tcp)],
        ),
        (
            "10.1.0.6",
            vec![("metrics", 9200, common::PortProtocol::Tcp)],
        ),
        (
            "10.1.0.7",
            vec![("metrics", 9300, common::PortProtocol::Udp)],
        ),
    ] {
        let (res, val) = with_ports(ip, &ports);
        last = ctl.upsert(&red, &res, &val);
    }
    let metrics: Vec<(String, u16)> = backends(last[0].2.as_ref().unwrap())
        .into_iter()
        .filter(|(_, _, n)| n.as_deref() == Some("metrics"))
        .map(|(ip, port, _)| (ip, port))
        .collect();
    assert_eq!(
        metrics,
        [
            ("10.1.0.5".to_string(), 9100),
            ("10.1.0.6".to_string(), 9200)
        ]
    );
    // A pod's ports change (re-added with another port): its backend follows.
    let (res, val) = with_ports("10.1.0.5", &[("metrics", 9101, common::PortProtocol::Tcp)]);
    let ch = ctl.upsert(&red, &res, &val);
    assert!(backends(ch[0].2.as_ref().unwrap()).contains(&(
        "10.1.0.5".into(),
        9101,
        Some("metrics".into())
    )));
}
