//! Originated routes and policy.

use super::*;

// ---- originated routes and policy ----

#[test]
fn originated_routes_win_and_leave_the_fib() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["10.244.1.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.flush().fib[0].next_hops, vec![ip("192.0.2.1")]);
    rib.originate(Advert {
        prefix: net("10.244.1.0/24"),
        communities: vec![Community::new(65000, 100)],
        ..Advert::default()
    });
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, Vec::<IpAddr>::new());
    let best = rib.best(net("10.244.1.0/24")).unwrap();
    assert_eq!(best.peer, None);
    // Now peer 1 gets ours (it was not sent its own before), peer 2 gets ours instead.
    let to1 = sent(&out, 1, &CTX4);
    assert_eq!(to1[0].attrs.as_path, Some(AsPath::from_sequence([ASN])));
    assert_eq!(to1[0].attrs.origin, Some(Origin::Igp));
    assert_eq!(to1[0].attrs.communities, vec![Community::new(65000, 100)]);
    rib.withdraw_originated(net("10.244.1.0/24"));
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("192.0.2.1")]);
    assert_eq!(sent(&out, 1, &CTX4)[0].withdrawn, vec![n4("10.244.1.0/24")]);
}

#[test]
fn originated_only_export_sends_our_routes_and_never_transit() {
    let mut p2 = peer(2, 65020);
    p2.export = Policy::originated_only();
    let mut rib = rib_with(vec![peer(1, 65010), p2]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.originate(Advert {
        prefix: net("10.244.1.0/24"),
        ..Advert::default()
    });
    let msgs = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].nlri, vec![n4("10.244.1.0/24")]);
}

#[test]
fn import_policy_rejects_and_sets() {
    let mut p1 = peer(1, 65010);
    p1.import = Policy {
        rules: vec![
            Rule {
                matches: vec![Match::Prefix(vec![crate::policy::PrefixEntry::orlonger(
                    net("10.0.0.0/8"),
                    32,
                )])],
                actions: vec![],
                verdict: Verdict::Reject,
            },
            Rule {
                matches: vec![],
                actions: vec![
                    Set::LocalPref(250),
                    Set::AddLargeCommunity(LargeCommunity {
                        global_admin: ASN,
                        local_data1: 1,
                        local_data2: 2,
                    }),
                ],
                verdict: Verdict::Accept,
            },
        ],
        default: Verdict::Reject,
        then: None,
    };
    let mut rib = rib_with(vec![p1, peer(2, ASN)]);
    rib.apply_update(
        PeerId(1),
        &announce(
            "192.0.2.1",
            attrs(&[65010]),
            &["10.1.0.0/16", "198.51.100.0/24"],
        ),
    )
    .unwrap();
    let out = rib.flush();
    let c = rib.counters(PeerId(1)).unwrap();
    assert_eq!((c.received, c.accepted), (2, 1));
    assert_eq!(out.fib.len(), 1);
    let to2 = sent(&out, 2, &CTX4);
    assert_eq!(to2[0].nlri, vec![n4("198.51.100.0/24")]);
    assert_eq!(to2[0].attrs.local_pref, Some(250));
    assert_eq!(to2[0].attrs.large_communities.len(), 1);
}

#[test]
fn export_policy_med_survives_towards_ebgp() {
    let mut p2 = peer(2, 65020);
    p2.export = Policy {
        rules: vec![Rule {
            matches: vec![Match::NeighborAs(65010)],
            actions: vec![Set::Med(77), Set::Prepend(2)],
            verdict: Verdict::Accept,
        }],
        default: Verdict::Accept,
        then: None,
    };
    let mut rib = rib_with(vec![peer(1, 65010), p2]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    let to2 = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(to2[0].attrs.med, Some(77));
    assert_eq!(
        to2[0].attrs.as_path,
        Some(AsPath::from_sequence([ASN, ASN, ASN, 65010]))
    );
}

#[test]
fn views_and_counters() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce(
            "192.0.2.1",
            attrs(&[65010]),
            &["198.51.100.0/24", "203.0.113.0/24"],
        ),
    )
    .unwrap();
    rib.apply_update(
        PeerId(2),
        &announce("192.0.2.2", attrs(&[65020, 1]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.originate(Advert {
        prefix: net("10.244.0.0/24"),
        ..Advert::default()
    });
    rib.flush();
    assert_eq!(rib.adj_rib_in(PeerId(1)).count(), 2);
    assert_eq!(rib.adj_rib_in(PeerId(2)).count(), 1);
    let loc: Vec<_> = rib.loc_rib().collect();
    assert_eq!(loc.len(), 4);
    assert_eq!(loc.iter().filter(|r| r.best).count(), 3);
    assert!(loc.iter().any(|r| r.peer.is_none() && r.best));
    let out2: Vec<IpNet> = rib.adj_rib_out(PeerId(2)).map(|(p, _)| p).collect();
    assert_eq!(
        out2,
        vec![
            net("10.244.0.0/24"),
            net("198.51.100.0/24"),
            net("203.0.113.0/24")
        ]
    );
    let (p, a) = rib.adj_rib_out(PeerId(1)).next().unwrap();
    assert_eq!(p, net("10.244.0.0/24"));
    assert_eq!(a.next_hop, Some(MpNextHop::Ipv4(v4("192.0.2.254"))));
    let c = rib.counters(PeerId(1)).unwrap();
    assert_eq!((c.received, c.accepted, c.advertised), (2, 2, 1));
    assert_eq!(rib.prefix_count(), (3, 0));
}

#[test]
fn unused_attribute_sets_are_dropped() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    for i in 0..10u32 {
        let p = format!("10.{i}.0.0/16");
        rib.apply_update(
            PeerId(1),
            &announce("192.0.2.1", attrs(&[65010, 64600 + i]), &[&p]),
        )
        .unwrap();
    }
    rib.flush();
    assert_eq!(rib.attribute_sets(), 10);
    rib.peer_down(PeerId(1)).unwrap();
    rib.flush();
    assert_eq!(rib.attribute_sets(), 0);
}

#[test]
fn stored_routes_are_small() {
    assert_eq!(std::mem::size_of::<table::Paths>(), 16);
}
