use super::*;

fn c(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn backend(cluster: &str, ip: &str, state: BackendState) -> Backend {
    Backend {
        ip: ip.parse().unwrap(),
        port: 8080,
        port_name: None,
        node: Some(format!("{cluster}-n1").parse().unwrap()),
        cluster: Some(c(cluster)),
        zone: Some("z1".into()),
        state,
    }
}

fn svc(cluster: &str, global: bool, affinity: Affinity, backends: Vec<Backend>) -> ServiceRecord {
    ServiceRecord {
        service: "shop/web".parse().unwrap(),
        cluster: c(cluster),
        vips: vec!["172.20.0.10".parse().unwrap()],
        ports: vec![ServicePort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
        backends,
        global,
        affinity,
    }
}

fn ips(bs: &[Backend]) -> Vec<String> {
    bs.iter().map(|b| b.ip.to_string()).collect()
}

#[test]
fn decode_checks_key_cluster_and_ports() {
    let r = svc(
        "red",
        true,
        Affinity::Local,
        vec![backend("red", "10.1.0.5", BackendState::Active)],
    );
    let key: ServiceKey = "shop/web".parse().unwrap();
    assert_eq!(
        ServiceRecord::decode(&c("red"), &key, &r.encode()),
        Ok(r.clone())
    );
    assert!(ServiceRecord::decode(&c("green"), &key, &r.encode()).is_err());
    // A backend of another cluster in red's record is refused, naming the field.
    let bad = svc(
        "red",
        true,
        Affinity::None,
        vec![backend("green", "10.2.0.5", BackendState::Active)],
    );
    let err = ServiceRecord::decode(&c("red"), &key, &bad.encode()).unwrap_err();
    assert!(err.contains("backends[0].cluster"), "{err}");
    // A backend without a cluster is labelled with the record's.
    let mut b = backend("red", "10.1.0.6", BackendState::Active);
    b.cluster = None;
    let r2 = svc("red", false, Affinity::None, vec![b]);
    let d = ServiceRecord::decode(&c("red"), &key, &r2.encode()).unwrap();
    assert_eq!(d.backends[0].cluster, Some(c("red")));
    // Two unnamed ports are ambiguous.
    let mut two = r.clone();
    two.ports.push(ServicePort {
        name: None,
        port: 443,
        protocol: Protocol::Tcp,
    });
    assert!(
        ServiceRecord::decode(&c("red"), &key, &two.encode())
            .unwrap_err()
            .contains("ports")
    );
}

#[test]
fn global_services_merge_by_name_and_affinity_selects() {
    let local = svc(
        "red",
        true,
        Affinity::Local,
        vec![
            backend("red", "10.1.0.5", BackendState::Active),
            backend("red", "10.1.0.6", BackendState::Quarantined),
        ],
    );
    let remote = svc(
        "green",
        true,
        Affinity::None,
        vec![
            backend("green", "10.2.0.5", BackendState::Active),
            backend("green", "10.2.0.6", BackendState::Terminating),
        ],
    );
    let not_global = svc(
        "blue",
        false,
        Affinity::None,
        vec![backend("blue", "10.3.0.5", BackendState::Active)],
    );
    let m = merge_global(&local, [&remote, &not_global]);
    assert_eq!(
        ips(&m.backends),
        ["10.1.0.5", "10.1.0.6", "10.2.0.5", "10.2.0.6"]
    );
    // local: the active local backend only.
    assert_eq!(ips(&select_backends(&m, &c("red"))), ["10.1.0.5"]);
    // remote: remote active + terminating.
    let mut mr = m.clone();
    mr.affinity = Affinity::Remote;
    assert_eq!(
        ips(&select_backends(&mr, &c("red"))),
        ["10.2.0.5", "10.2.0.6"]
    );
    // none: everything but quarantined.
    let mut mn = m.clone();
    mn.affinity = Affinity::None;
    assert_eq!(
        ips(&select_backends(&mn, &c("red"))),
        ["10.1.0.5", "10.2.0.5", "10.2.0.6"]
    );
    // local affinity falls back to remote when no local backend is active.
    let mut ml = m.clone();
    ml.backends
        .retain(|b| b.cluster != Some(c("red")) || b.state != BackendState::Active);
    assert_eq!(
        ips(&select_backends(&ml, &c("red"))),
        ["10.2.0.5", "10.2.0.6"]
    );
    // A non-global local service does not take remote backends.
    let plain = svc("red", false, Affinity::None, local.backends.clone());
    assert_eq!(merge_global(&plain, [&remote]).backends.len(), 2);
}

#[test]
fn frontends_per_vip_and_port() {
    let mut s = svc("red", false, Affinity::None, vec![]);
    s.vips.push("fd00:20::10".parse().unwrap());
    s.ports = vec![
        ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: Protocol::Tcp,
        },
        ServicePort {
            name: Some("dns".into()),
            port: 53,
            protocol: Protocol::Udp,
        },
    ];
    let mut http = backend("red", "10.1.0.5", BackendState::Active);
    http.port_name = Some("http".into());
    let mut dns = backend("red", "10.1.0.6", BackendState::Active);
    dns.port_name = Some("dns".into());
    s.backends = vec![http, dns];
    let f = frontends(&merge_global(&s, []), &c("red"));
    assert_eq!(f.len(), 4);
    let udp = f
        .get(&Frontend {
            vip: "fd00:20::10".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
        })
        .unwrap();
    assert_eq!(ips(&udp.backends), ["10.1.0.6"]);
}
