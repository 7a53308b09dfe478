//! Export: Adj-RIB-Out, policies, next hops, well-known communities.

use super::*;

// ---- export ----

#[test]
fn ebgp_export_prepends_our_asn_and_sets_our_next_hop() {
    let mut rib = rib_with(vec![peer(1, ASN), peer(2, 65020)]);
    let a = PathAttrs {
        local_pref: Some(300),
        med: Some(42),
        originator_id: Some(v4("10.0.0.77")),
        cluster_list: vec![v4("10.0.0.1")],
        ..attrs(&[65010])
    };
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["198.51.100.0/24"]))
        .unwrap();
    let msgs = sent(&rib.flush(), 2, &CTX4);
    let a = &msgs[0].attrs;
    assert_eq!(a.as_path, Some(AsPath::from_sequence([ASN, 65010])));
    assert_eq!(a.next_hop, Some(v4("192.0.2.254")));
    assert_eq!(a.local_pref, None);
    assert_eq!(a.med, None);
    assert_eq!(a.originator_id, None);
    assert!(a.cluster_list.is_empty());
}

#[test]
fn ebgp_export_on_a_two_octet_session_uses_as_trans_and_as4_path() {
    let mut rib = Rib::new(4_200_000_001, rid());
    rib.add_peer(peer(2, 65020)).unwrap();
    let ctx2 = Context {
        four_octet_as: false,
        extended_message: false,
    };
    rib.peer_up(
        PeerId(2),
        SessionInfo {
            ctx: ctx2,
            ..session()
        },
    )
    .unwrap();
    rib.originate(Advert {
        prefix: net("10.1.0.0/24"),
        med: Some(5),
        ..Advert::default()
    });
    let msgs = sent(&rib.flush(), 2, &ctx2);
    let a = &msgs[0].attrs;
    assert_eq!(a.as_path, Some(AsPath::from_sequence([AS_TRANS as u32])));
    assert_eq!(a.as4_path, Some(AsPath::from_sequence([4_200_000_001])));
    assert_eq!(
        a.effective_as_path().0,
        Some(AsPath::from_sequence([4_200_000_001]))
    );
    // Our own MED goes out.
    assert_eq!(a.med, Some(5));
}

#[test]
fn ibgp_split_horizon_and_ibgp_export_rules() {
    let mut rib = rib_with(vec![peer(1, ASN), peer(2, ASN), peer(3, 65030)]);
    let ib = PathAttrs {
        local_pref: Some(120),
        ..attrs(&[65099])
    };
    rib.apply_update(PeerId(1), &announce("192.0.2.1", ib, &["198.51.100.0/24"]))
        .unwrap();
    rib.apply_update(
        PeerId(3),
        &announce("192.0.2.3", attrs(&[65030]), &["203.0.113.0/24"]),
    )
    .unwrap();
    let out = rib.flush();
    // iBGP peer 2 gets only the eBGP-learned route, next hop kept, LOCAL_PREF set.
    let to2 = sent(&out, 2, &CTX4);
    assert_eq!(to2.len(), 1);
    assert_eq!(to2[0].nlri, vec![n4("203.0.113.0/24")]);
    assert_eq!(to2[0].attrs.next_hop, Some(v4("192.0.2.3")));
    assert_eq!(to2[0].attrs.local_pref, Some(100));
    assert_eq!(to2[0].attrs.as_path, Some(AsPath::from_sequence([65030])));
    // eBGP peer 3 gets the iBGP route.
    let to3 = sent(&out, 3, &CTX4);
    assert_eq!(to3[0].nlri, vec![n4("198.51.100.0/24")]);
    assert_eq!(
        to3[0].attrs.as_path,
        Some(AsPath::from_sequence([ASN, 65099]))
    );
}

#[test]
fn next_hop_self_towards_ibgp() {
    let mut p2 = peer(2, ASN);
    p2.next_hop_self = true;
    let mut rib = rib_with(vec![peer(3, 65030), p2]);
    rib.apply_update(
        PeerId(3),
        &announce("192.0.2.3", attrs(&[65030]), &["203.0.113.0/24"]),
    )
    .unwrap();
    let to2 = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(to2[0].attrs.next_hop, Some(v4("192.0.2.254")));
}

#[test]
fn no_export_and_no_advertise_communities_are_honoured() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020), peer(3, ASN)]);
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::NO_EXPORT];
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["198.51.100.0/24"]))
        .unwrap();
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::NO_ADVERTISE];
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["203.0.113.0/24"]))
        .unwrap();
    let out = rib.flush();
    assert!(sent(&out, 2, &CTX4).is_empty());
    let to3 = sent(&out, 3, &CTX4);
    assert_eq!(to3.len(), 1);
    assert_eq!(to3[0].nlri, vec![n4("198.51.100.0/24")]);
}

#[test]
fn ipv6_routes_use_mp_reach_with_global_and_link_local_next_hops() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let nh = MpNextHop::Ipv6 {
        global: "2001:db8:1::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    rib.apply_update(
        PeerId(1),
        &announce6(nh, attrs(&[65010]), &["2001:db8:100::/48"]),
    )
    .unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("2001:db8:1::1")]);
    let to2 = sent(&out, 2, &CTX4);
    assert_eq!(
        to2[0].mp_reach,
        Some(MpReach::Ipv6Unicast {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::254".parse().unwrap(),
                link_local: Some("fe80::254".parse().unwrap()),
            },
            nlri: vec![n6("2001:db8:100::/48")],
        })
    );
    rib.apply_update(
        PeerId(1),
        &wire(UpdateMsg {
            mp_unreach: Some(MpUnreach::Ipv6Unicast(vec![n6("2001:db8:100::/48")])),
            ..UpdateMsg::default()
        }),
    )
    .unwrap();
    let out = rib.flush();
    assert!(out.fib[0].next_hops.is_empty());
    assert_eq!(
        sent(&out, 2, &CTX4)[0].mp_unreach,
        Some(MpUnreach::Ipv6Unicast(vec![n6("2001:db8:100::/48")]))
    );
}

#[test]
fn ipv4_routes_over_an_ipv6_session_use_an_ipv6_next_hop_rfc8950() {
    let mut rib = Rib::new(ASN, rid());
    let v6_only = SessionInfo {
        local_v4: None,
        ipv4_over_ipv6_next_hop: true,
        ..session()
    };
    for p in [peer(1, 65010), peer(2, 65020)] {
        let id = p.id;
        rib.add_peer(p).unwrap();
        rib.peer_up(id, v6_only.clone()).unwrap();
    }
    rib.flush();
    let nh = MpNextHop::Ipv6 {
        global: "2001:db8:1::1".parse().unwrap(),
        link_local: None,
    };
    let u = wire(UpdateMsg {
        attrs: attrs(&[65010]),
        mp_reach: Some(MpReach::Ipv4Unicast {
            next_hop: nh,
            nlri: vec![n4("198.51.100.0/24")],
        }),
        ..UpdateMsg::default()
    });
    rib.apply_update(PeerId(1), &u).unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("2001:db8:1::1")]);
    let to2 = sent(&out, 2, &CTX4);
    let Some(MpReach::Ipv4Unicast { next_hop, nlri }) = &to2[0].mp_reach else {
        panic!("{:?}", to2[0]);
    };
    assert_eq!(nlri, &vec![n4("198.51.100.0/24")]);
    assert_eq!(
        next_hop,
        &MpNextHop::Ipv6 {
            global: "2001:db8::254".parse().unwrap(),
            link_local: Some("fe80::254".parse().unwrap()),
        }
    );
}
