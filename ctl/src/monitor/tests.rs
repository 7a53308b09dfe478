//! Unit tests of the labeler and the rendering.

use super::labeler::{LabelSet, Labeler, merge, read_records};
use super::render::{json_event, text_line};
use super::*;
use datapath::events::{DropReason, Trace, Verdict};
use datapath::policy::Direction;

fn ev(kind: EventKind) -> Event {
    Event {
        kind,
        src: ("10.0.1.5".parse().unwrap(), 40000),
        dst: ("10.0.2.7".parse().unwrap(), 80),
        proto: 6,
        src_identity: 4242,
        dst_identity: 4243,
        svc_id: 0,
        ifindex: 0,
        endpoint_id: 1,
        direction: Some(Direction::Egress),
        ts_ns: 123,
    }
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn filters_by_type() {
    let drop = ev(EventKind::Drop(DropReason::PolicyDenied));
    let verdict = ev(EventKind::PolicyVerdict(Verdict::Allowed));
    let trace = ev(EventKind::Trace(Trace::FibRedirect { ifindex: 3 }));
    let unknown = ev(EventKind::Unknown(9, 9));
    for e in [&drop, &verdict, &trace, &unknown] {
        assert!(matches_types(&[], e), "no filter shows everything");
    }
    assert!(matches_types(&[EventType::Drop], &drop));
    assert!(!matches_types(&[EventType::Drop], &verdict));
    assert!(!matches_types(&[EventType::Drop], &unknown));
    let dv = [EventType::Drop, EventType::Verdict];
    assert!(matches_types(&dv, &drop) && matches_types(&dv, &verdict));
    assert!(!matches_types(&dv, &trace));
    assert!(matches_types(&[EventType::Trace], &trace));
}

#[test]
fn names_identities_by_the_labels_their_pods_share() {
    let web = labels(&[
        ("app", "web"),
        ("tier", "front"),
        ("io.kubernetes.pod.name", "web-0"),
        ("io.kubernetes.pod.namespace", "shop"),
    ]);
    let mut l = Labeler::from_records([(vec!["10.0.1.5".parse().unwrap()], web)]);
    let e = ev(EventKind::Drop(DropReason::PolicyDenied));
    assert_eq!(l.label_string(4242), None, "not learned yet");
    l.learn(&e);
    assert_eq!(
        text_line(&e, &l),
        "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop,tier=front) -> \
         10.0.2.7 (id 4243) TCP 80 dropped: policy denied (egress)"
    );
    // Another pod of the same identity: only the shared labels name the identity.
    let mut by_identity = l.by_identity.clone();
    merge(
        &mut by_identity,
        4242,
        &labels(&[
            ("app", "web"),
            ("tier", "back"),
            ("io.kubernetes.pod.namespace", "shop"),
        ]),
    );
    assert_eq!(
        by_identity[&4242],
        labels(&[("app", "web"), ("io.kubernetes.pod.namespace", "shop")])
    );
    // Reserved identities are named, never merged with pod labels.
    assert_eq!(l.label_string(2).as_deref(), Some("reserved:world"));
    merge(&mut by_identity, 2, &labels(&[("app", "x")]));
    assert!(!by_identity.contains_key(&2));
}

#[test]
fn json_has_the_fields_and_labels() {
    let db = labels(&[("app", "db")]);
    let mut l = Labeler::from_records([(vec!["10.0.2.7".parse().unwrap()], db.clone())]);
    let e = ev(EventKind::Drop(DropReason::PolicyDefaultDeny));
    l.learn(&e);
    let j = serde_json::to_value(json_event(&e, &l)).unwrap();
    assert_eq!(j["type"], "drop");
    assert_eq!(j["reason"], "policy-default-deny");
    assert_eq!(j["direction"], "egress");
    assert_eq!(j["protocol"], "TCP");
    assert_eq!(j["source"]["ip"], "10.0.1.5");
    assert_eq!(j["source"]["port"], 40000);
    assert_eq!(j["source"]["identity"], 4242);
    assert_eq!(j["source"]["labels"], serde_json::json!({}));
    assert_eq!(j["destination"]["identity"], 4243);
    assert_eq!(j["destination"]["labels"], serde_json::json!({"app": "db"}));
    assert_eq!(j["endpoint_id"], 1);
    assert_eq!(j["ts_ns"], 123);
    assert!(j.get("node").is_none() && j.get("vni").is_none());
    assert_eq!(
        j["summary"],
        "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243 app=db) TCP 80 \
         dropped: policy denied (default deny) (egress)"
    );
    let t = ev(EventKind::Trace(Trace::ToOverlay {
        node: "192.0.2.2".parse().unwrap(),
        vni: 4242,
    }));
    let j = serde_json::to_value(json_event(&t, &l)).unwrap();
    assert_eq!(
        (&j["type"], &j["reason"]),
        (&"trace".into(), &"to-overlay".into())
    );
    assert_eq!((&j["node"], &j["vni"]), (&"192.0.2.2".into(), &4242.into()));
}

#[test]
fn reads_records_from_a_data_dir_a_network_dir_or_an_endpoints_dir() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("mesh");
    let ep = cni::endpoint::Endpoint {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/p".into(),
        host_ifname: cni::endpoint::host_ifname("c1", "eth0"),
        addresses: vec!["10.244.1.2".parse().unwrap()],
        labels: labels(&[("app", "web")]),
        pod_uid: None,
        ports: Vec::new(),
    };
    cni::endpoint::write(&cni::endpoint::path(&net, "c1", "eth0"), &ep).unwrap();
    std::fs::write(net.join("endpoints").join("broken.json"), "{").unwrap();
    for d in [dir.path().to_path_buf(), net.clone(), net.join("endpoints")] {
        let (records, errors) = read_records(&d);
        assert_eq!(
            records,
            vec![(ep.addresses.clone(), ep.labels.clone())],
            "{d:?}"
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("broken.json"), "{errors:?}");
    }
    let (records, errors) = read_records(&dir.path().join("missing"));
    assert!(records.is_empty() && errors.is_empty());
}

#[test]
fn parses_timeouts() {
    assert_eq!(parse_secs("5"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
    assert!(parse_secs("-1").is_err() && parse_secs("soon").is_err());
}
