use super::*;
use common::{ClusterId, IdentityLayout};
use proptest::prelude::*;

fn c(name: &str) -> ClusterName {
    ClusterName::new(name).unwrap()
}

#[test]
fn builds_the_documented_keys() {
    let blue = c("blue");
    let id = IdentityLayout::default()
        .identity(ClusterId::new(1).unwrap(), 256)
        .unwrap();
    let cases = [
        (
            Resource::Node(NodeName::new("worker-1").unwrap()),
            "ironmesh/v1/clusters/blue/nodes/worker-1",
        ),
        (
            Resource::Identity(id),
            "ironmesh/v1/clusters/blue/identities/65792",
        ),
        (
            Resource::IdentityByLabels("tier=db,example.com/app=pg".parse().unwrap()),
            "ironmesh/v1/clusters/blue/identities-by-labels/example.com%2Fapp=pg,tier=db",
        ),
        (
            Resource::IdentityByLabels(Labels::new()),
            "ironmesh/v1/clusters/blue/identities-by-labels/_empty",
        ),
        (
            Resource::PodCidr("10.244.1.0/24".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/podcidrs/10.244.1.0%2F24",
        ),
        (
            Resource::PodCidr("fd00:10::/64".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/podcidrs/fd00:10::%2F64",
        ),
        (
            Resource::PodCidrsOfNode("worker-1.example".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/podcidrs-by-node/worker-1.example",
        ),
        (
            Resource::Endpoint("10.244.1.7".parse().unwrap()),
            "ironmesh/v1/clusters/blue/endpoints/10.244.1.7",
        ),
        (
            Resource::Endpoint("fd00:10::7".parse().unwrap()),
            "ironmesh/v1/clusters/blue/endpoints/fd00:10::7",
        ),
        (
            Resource::Service("default/web".parse().unwrap()),
            "ironmesh/v1/clusters/blue/services/default/web",
        ),
        (
            Resource::Policy("shop/allow-client".parse().unwrap()),
            "ironmesh/v1/clusters/blue/policies/shop/allow-client",
        ),
        (
            Resource::Vip("203.0.113.10".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/vips/203.0.113.10",
        ),
        (
            Resource::ClusterIp("10.96.0.1".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/clusterips/10.96.0.1",
        ),
        (
            Resource::ClusterIpsOfService("default/web".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/clusterips-by-service/default/web",
        ),
        (
            Resource::Object(
                ObjectName::new(resources::Kind::Service, Some("shop"), "web").unwrap(),
            ),
            "ironmesh/v1/clusters/blue/objects/services/shop/web",
        ),
        (
            Resource::Object(
                ObjectName::new(resources::Kind::NetworkPolicy, Some("shop"), "allow.v2").unwrap(),
            ),
            "ironmesh/v1/clusters/blue/objects/networkpolicies/shop/allow.v2",
        ),
        (
            Resource::Object(ObjectName::new(resources::Kind::IpPool, None, "public").unwrap()),
            "ironmesh/v1/clusters/blue/objects/ippools/public",
        ),
        (
            Resource::Event(
                ObjectName::new(resources::Kind::Service, Some("shop"), "web").unwrap(),
                "n1.1765100000123456789".into(),
            ),
            "ironmesh/v1/clusters/blue/events/services/shop/web/n1.1765100000123456789",
        ),
        (
            Resource::Event(
                ObjectName::new(resources::Kind::IpPool, None, "tenants").unwrap(),
                "n-2.5".into(),
            ),
            "ironmesh/v1/clusters/blue/events/ippools/tenants/n-2.5",
        ),
        (
            Resource::VipsOfService("default/web".parse().unwrap()),
            "ironmesh/v1/clusters/blue/ipam/vips-by-service/default/web",
        ),
        (
            Resource::IdentityRef(id, "worker-1".parse().unwrap()),
            "ironmesh/v1/clusters/blue/identity-refs/65792/worker-1",
        ),
        (
            Resource::EncryptionDesired,
            "ironmesh/v1/clusters/blue/encryption/desired",
        ),
        (
            Resource::EncryptionNode("worker-1.rack2".parse().unwrap()),
            "ironmesh/v1/clusters/blue/encryption/nodes/worker-1.rack2",
        ),
    ];
    for (resource, text) in cases {
        let key = Key::cluster(&blue, resource.clone());
        assert_eq!(key.to_string(), text);
        assert_eq!(Key::parse(text).unwrap(), key);
        assert!(text.starts_with(&Scope::Cluster(blue.clone()).kind_prefix(resource.kind())));
        // The same resource mirrored from a remote cluster.
        let mirrored = Key::mirror(&blue, resource);
        let mtext = text.replace("/clusters/", "/mirror/");
        assert_eq!(mirrored.to_string(), mtext);
        assert_eq!(Key::parse(&mtext).unwrap(), mirrored);
    }
    let synced = Key::MirrorSynced { remote: c("green") };
    assert_eq!(synced.to_string(), "ironmesh/v1/mirror/green/synced");
    assert_eq!(
        Key::parse("ironmesh/v1/mirror/green/synced").unwrap(),
        synced
    );
    assert_eq!(
        Key::parse_bytes(b"ironmesh/v1/mirror/green/synced").unwrap(),
        synced
    );
    let status = Key::MirrorStatus { remote: c("green") };
    assert_eq!(status.to_string(), "ironmesh/v1/mirror/green/status");
    assert_eq!(
        Key::parse("ironmesh/v1/mirror/green/status").unwrap(),
        status
    );
    assert!(Key::parse("ironmesh/v1/mirror/green/status/x").is_err());
    let leader = Key::cluster(&blue, Resource::MirrorLeader(c("green")));
    assert_eq!(
        leader.to_string(),
        "ironmesh/v1/clusters/blue/mirror-leader/green"
    );
    assert_eq!(
        Key::parse("ironmesh/v1/clusters/blue/mirror-leader/green").unwrap(),
        leader
    );
}

#[test]
fn prefixes() {
    assert_eq!(
        Scope::Cluster(c("blue")).prefix(),
        "ironmesh/v1/clusters/blue/"
    );
    assert_eq!(
        Scope::Mirror(c("green")).kind_prefix(ResourceKind::PodCidrs),
        "ironmesh/v1/mirror/green/ipam/podcidrs/"
    );
    // A cluster's prefix never matches another cluster whose name extends it.
    assert!(!"ironmesh/v1/clusters/blue2/nodes/n".starts_with(&Scope::Cluster(c("blue")).prefix()));
}

fn err(key: &str) -> SchemaError {
    Key::parse(key).unwrap_err()
}

#[test]
fn rejects_foreign_and_versioned_keys() {
    assert!(matches!(
        err("cilium/state/nodes/v1/x"),
        SchemaError::Foreign { .. }
    ));
    assert!(matches!(
        err("ironmeshx/v1/clusters/a/nodes/n"),
        SchemaError::Foreign { .. }
    ));
    assert_eq!(
        err("ironmesh/v2/clusters/a/nodes/n").to_string(),
        "key \"ironmesh/v2/clusters/a/nodes/n\" has schema version \"v2\"; this build reads only v1"
    );
    assert_eq!(
        Key::parse_bytes(b"ironmesh/v1/\xff"),
        Err(SchemaError::NotUtf8)
    );
}

#[test]
fn rejects_unknown_kinds_separately() {
    assert_eq!(
        err("ironmesh/v1/clusters/a/quotas/p"),
        SchemaError::UnknownKind {
            key: "ironmesh/v1/clusters/a/quotas/p".into(),
            kind: "quotas".into()
        }
    );
    // Policies are named <namespace>/<name>, as services.
    assert!(matches!(
        err("ironmesh/v1/clusters/a/policies/p"),
        SchemaError::Malformed { .. }
    ));
    assert!(
        matches!(err("ironmesh/v1/clusters/a/ipam/nodecidrs/x"), SchemaError::UnknownKind { kind, .. } if kind == "ipam/nodecidrs")
    );
}

#[test]
fn rejects_malformed_keys() {
    for key in [
        "ironmesh/v1/",
        "ironmesh/v1/clusters",
        "ironmesh/v1/clusters/a",
        "ironmesh/v1/clusters/a/",
        "ironmesh/v1/clusters/a/nodes",
        "ironmesh/v1/clusters/A/nodes/n",
        "ironmesh/v1/clusters/a/synced",
        "ironmesh/v1/other/a/nodes/n",
        "ironmesh/v1/clusters/a/nodes/",
        "ironmesh/v1/clusters/a/nodes/n/extra",
        "ironmesh/v1/clusters/a/identities/0",
        "ironmesh/v1/clusters/a/identities/16777216",
        "ironmesh/v1/clusters/a/identities/-1",
        "ironmesh/v1/clusters/a/identities-by-labels/app",
        "ironmesh/v1/clusters/a/identities-by-labels/",
        "ironmesh/v1/clusters/a/ipam/podcidrs/10.0.0.0/24",
        "ironmesh/v1/clusters/a/ipam/podcidrs/10.0.0.1%2F24",
        "ironmesh/v1/clusters/a/ipam/podcidrs/10.0.0.0%2F33",
        "ironmesh/v1/clusters/a/endpoints/10.0.0.256",
        "ironmesh/v1/clusters/a/services/web",
        "ironmesh/v1/clusters/a/services/a/b/c",
        "ironmesh/v1/mirror/a/synced/x",
        "ironmesh/v1/clusters/a/encryption/mode",
        "ironmesh/v1/clusters/a/encryption/desired/x",
        "ironmesh/v1/clusters/a/encryption/nodes/",
        "ironmesh/v1/clusters/a/encryption/nodes/n/x",
        "ironmesh/v1/clusters/a/encryption/nodes/N",
    ] {
        assert!(
            matches!(err(key), SchemaError::Malformed { .. }),
            "{key}: {:?}",
            Key::parse(key)
        );
    }
    let e = err("ironmesh/v1/clusters/a/ipam/podcidrs/10.0.0.1%2F24").to_string();
    assert!(
        e.ends_with("pod CIDR 10.0.0.1/24 has host bits set; the key is 10.0.0.0%2F24"),
        "{e}"
    );
}

#[test]
fn rejects_non_canonical_spellings() {
    for (key, canonical) in [
        (
            "ironmesh/v1/clusters/a/identities/0256",
            "ironmesh/v1/clusters/a/identities/256",
        ),
        (
            "ironmesh/v1/clusters/a/endpoints/FD00::1",
            "ironmesh/v1/clusters/a/endpoints/fd00::1",
        ),
        (
            "ironmesh/v1/clusters/a/endpoints/fd00:0::1",
            "ironmesh/v1/clusters/a/endpoints/fd00::1",
        ),
        (
            "ironmesh/v1/clusters/a/identities-by-labels/b=1,a=2",
            "ironmesh/v1/clusters/a/identities-by-labels/a=2,b=1",
        ),
    ] {
        assert_eq!(
            err(key),
            SchemaError::NonCanonical {
                key: key.into(),
                canonical: canonical.into()
            }
        );
    }
    // Escapes have one spelling too.
    assert!(matches!(
        err("ironmesh/v1/clusters/a/ipam/podcidrs/10.0.0.0%2f24"),
        SchemaError::Malformed { .. }
    ));
}

fn cluster_name() -> impl Strategy<Value = ClusterName> {
    "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?".prop_map(|s| ClusterName::new(&s).unwrap())
}

fn resource() -> impl Strategy<Value = Resource> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9])?";
    let labels = proptest::collection::btree_map(
        (
            proptest::option::of("[a-z0-9]{1,6}(\\.[a-z0-9]{1,6})?"),
            label,
        ),
        proptest::option::of(label),
        0..4,
    )
    .prop_map(|m| {
        Labels::from_pairs(m.into_iter().map(|((p, n), v)| {
            (
                p.map_or(n.clone(), |p| format!("{p}/{n}")),
                v.unwrap_or_default(),
            )
        }))
        .unwrap()
    });
    let ip = prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::from(v.to_be_bytes())),
        any::<u128>().prop_map(|v| IpAddr::from(v.to_be_bytes())),
    ];
    let cidr = (ip.clone(), 0u8..=128).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, len % (max + 1)).unwrap().trunc()
    });
    prop_oneof![
        "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}"
            .prop_map(|s| Resource::Node(NodeName::new(&s).unwrap())),
        (1u32..=Identity::MAX).prop_map(|v| Resource::Identity(Identity::from_raw(v).unwrap())),
        labels.prop_map(Resource::IdentityByLabels),
        cidr.prop_map(Resource::PodCidr),
        ip.clone().prop_map(Resource::Endpoint),
        ip.clone().prop_map(Resource::Vip),
        ip.prop_map(Resource::ClusterIp),
        (
            prop_oneof![
                Just(resources::Kind::Service),
                Just(resources::Kind::NetworkPolicy),
                Just(resources::Kind::Namespace),
                Just(resources::Kind::IpPool)
            ],
            "[a-z0-9]{1,10}",
            "[a-z][a-z0-9]{0,10}(\\.[a-z0-9]{1,5})?"
        )
            .prop_map(|(k, ns, n)| Resource::Object(
                ObjectName::new(k, k.namespaced().then_some(ns.as_str()), &n).unwrap()
            )),
        (
            prop_oneof![
                Just(resources::Kind::Service),
                Just(resources::Kind::IpPool)
            ],
            "[a-z0-9]{1,10}",
            "[a-z][a-z0-9]{0,10}(\\.[a-z0-9]{1,5})?",
            "[a-z0-9][a-z0-9.-]{0,20}"
        )
            .prop_map(|(k, ns, n, id)| Resource::Event(
                ObjectName::new(k, k.namespaced().then_some(ns.as_str()), &n).unwrap(),
                id
            )),
        ("[a-z0-9]{1,10}", "[a-z][a-z0-9]{0,10}")
            .prop_map(|(ns, n)| Resource::Service(ServiceKey::new(&ns, &n).unwrap())),
        ("[a-z0-9]{1,10}", "[a-z][a-z0-9]{0,10}")
            .prop_map(|(ns, n)| Resource::VipsOfService(ServiceKey::new(&ns, &n).unwrap())),
        (1u32..=Identity::MAX, "[a-z0-9]{1,8}").prop_map(|(v, n)| Resource::IdentityRef(
            Identity::from_raw(v).unwrap(),
            NodeName::new(&n).unwrap()
        )),
        Just(Resource::EncryptionDesired),
        "[a-z0-9]{1,8}".prop_map(|n| Resource::EncryptionNode(NodeName::new(&n).unwrap())),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        (cluster_name(), resource()).prop_map(|(c, r)| Key::cluster(&c, r)),
        (cluster_name(), resource()).prop_map(|(c, r)| Key::mirror(&c, r)),
        cluster_name().prop_map(|remote| Key::MirrorSynced { remote }),
        cluster_name().prop_map(|remote| Key::MirrorStatus { remote }),
        (cluster_name(), cluster_name())
            .prop_map(|(c, r)| Key::cluster(&c, Resource::MirrorLeader(r))),
    ]
}

proptest! {
    #[test]
    fn keys_round_trip(k in key()) {
        let text = k.to_string();
        prop_assert_eq!(Key::parse(&text), Ok(k.clone()));
        if let Key::Resource { scope, resource } = &k {
            prop_assert!(text.starts_with(&scope.kind_prefix(resource.kind())));
            // The name part never adds segments, except namespace/name for services and
            // identity/node for identity references, and kind/[namespace/]name for objects.
            let extra = resource.to_string().matches('/').count();
            let want = match resource {
                Resource::Object(o) => 1 + usize::from(o.namespace.is_some()),
                Resource::Event(o, _) => 2 + usize::from(o.namespace.is_some()),
                Resource::EncryptionNode(_) => 1,
                r => usize::from(matches!(
                    r.kind(),
                    ResourceKind::Services
                        | ResourceKind::VipsByService
                        | ResourceKind::IdentityRefs
                        | ResourceKind::ClusterIpsByService
                )),
            };
            prop_assert_eq!(extra, want);
        }
    }

    #[test]
    fn parse_accepts_only_canonical_text(
        tail in "(nodes/|identities/|identities-by-labels/|ipam/podcidrs/|ipam/podcidrs-by-node/|endpoints/|services/|mirror-leader/|synced|status)?[a-fA-F0-9/%:=,._-]{0,30}"
    ) {
        for scope in ["clusters/a/", "mirror/a/"] {
            let text = format!("ironmesh/v1/{scope}{tail}");
            if let Ok(k) = Key::parse(&text) {
                prop_assert_eq!(k.to_string(), text);
            }
        }
    }
}
