//! RIB stories: peers come up, send UPDATEs, and we check what the RIB selects, installs and
//! sends back (decoding the produced bytes with the codec).

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::*;
use crate::policy::{Match, Policy, Rule, Set, Verdict};
use crate::wire::{
    AS_TRANS, AsSegment, AsSegmentType, Community, Context, LargeCommunity, Message, MpNextHop,
    MpReach, Origin, PathAttrs, Safi, UpdateMsg,
};

const ASN: u32 = 65000;
const CTX4: Context = Context {
    four_octet_as: true,
    extended_message: false,
};

fn rid() -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 255, 1)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn n4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn n6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn peer(id: u32, asn: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId(id),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id as u8)),
        asn,
        router_id: Ipv4Addr::new(10, 0, 0, id as u8),
        ibgp: asn == ASN,
        import: Policy::accept_all(),
        export: Policy::accept_all(),
        next_hop_self: false,
        enforce_first_as: false,
        max_accepted: None,
    }
}

fn session() -> SessionInfo {
    SessionInfo {
        families: vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)],
        ctx: CTX4,
        local_v4: Some(v4("192.0.2.254")),
        local_v6: Some("2001:db8::254".parse().unwrap()),
        local_v6_link_local: Some("fe80::254".parse().unwrap()),
        ipv4_over_ipv6_next_hop: false,
        long_lived_gr: false,
    }
}

/// A RIB with the given peers up and their initial End-of-RIB already flushed.
fn rib_with(peers: Vec<PeerInfo>) -> Rib {
    let mut rib = Rib::new(ASN, rid());
    for p in peers {
        let id = p.id;
        rib.add_peer(p).unwrap();
        rib.peer_up(id, session()).unwrap();
    }
    rib.flush();
    rib
}

fn attrs(path: &[u32]) -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        ..PathAttrs::default()
    }
}

/// An UPDATE as received: encoded and decoded again by the codec.
fn wire(u: UpdateMsg) -> UpdateMsg {
    let bytes = Message::Update(Box::new(u)).to_bytes(&CTX4).unwrap();
    match Message::decode(bytes, &CTX4).unwrap() {
        Message::Update(u) => *u,
        m => panic!("{m:?}"),
    }
}

fn announce(nh: &str, a: PathAttrs, prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(v4(nh)),
            ..a
        },
        nlri: prefixes.iter().map(|p| n4(p)).collect(),
        ..UpdateMsg::default()
    })
}

fn withdraw(prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        withdrawn: prefixes.iter().map(|p| n4(p)).collect(),
        ..UpdateMsg::default()
    })
}

fn announce6(nh: MpNextHop, a: PathAttrs, prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: a,
        mp_reach: Some(MpReach::Ipv6Unicast {
            next_hop: nh,
            nlri: prefixes.iter().map(|p| n6(p)).collect(),
        }),
        ..UpdateMsg::default()
    })
}

/// Decodes every message sent to `id` in `out`.
fn sent(out: &RibOutput, id: u32, ctx: &Context) -> Vec<UpdateMsg> {
    let mut v = Vec::new();
    for (_, bytes) in out.updates.iter().filter(|(p, _)| *p == PeerId(id)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
            assert!(len <= ctx.max_message_len());
            match Message::decode_from(&mut buf, ctx).unwrap().unwrap() {
                Message::Update(u) => {
                    assert!(u.errors.is_empty(), "{:?}", u.errors);
                    v.push(*u)
                }
                m => panic!("{m:?}"),
            }
        }
    }
    v
}

fn best_peer(rib: &Rib, prefix: &str) -> Option<PeerId> {
    rib.best(net(prefix)).and_then(|r| r.peer)
}

/// Two peers send the same prefix; returns who wins.
fn race(p1: PeerInfo, a1: PathAttrs, p2: PeerInfo, a2: PathAttrs) -> PeerId {
    let (id1, id2) = (p1.id, p2.id);
    let mut rib = rib_with(vec![p1, p2]);
    rib.apply_update(id1, &announce("192.0.2.1", a1, &["203.0.113.0/24"]))
        .unwrap();
    rib.apply_update(id2, &announce("192.0.2.2", a2, &["203.0.113.0/24"]))
        .unwrap();
    rib.flush();
    best_peer(&rib, "203.0.113.0/24").unwrap()
}

// ---- decision process, one story per step ----

#[test]
fn higher_local_pref_wins() {
    let lp = |v| PathAttrs {
        local_pref: Some(v),
        ..attrs(&[65010, 65020])
    };
    // Longer path but higher LOCAL_PREF (iBGP peers carry it).
    let a = PathAttrs {
        local_pref: Some(200),
        ..attrs(&[65010, 65020, 65030])
    };
    assert_eq!(race(peer(1, ASN), lp(100), peer(2, ASN), a), PeerId(2));
}

#[test]
fn ebgp_learned_local_pref_is_ignored_and_defaults_to_100() {
    // eBGP peer 1 claims LOCAL_PREF 500: ignored (§5.1.5); iBGP peer 2 sends 150 and wins.
    let a1 = PathAttrs {
        local_pref: Some(500),
        ..attrs(&[65010])
    };
    let a2 = PathAttrs {
        local_pref: Some(150),
        ..attrs(&[65010, 65020])
    };
    assert_eq!(race(peer(1, 65010), a1, peer(2, ASN), a2), PeerId(2));
    // With 99 the iBGP route loses to the default 100.
    let a2 = PathAttrs {
        local_pref: Some(99),
        ..attrs(&[65010])
    };
    assert_eq!(
        race(peer(1, 65010), attrs(&[65010]), peer(2, ASN), a2),
        PeerId(1)
    );
}

#[test]
fn shorter_as_path_wins() {
    let long = attrs(&[65010, 65011, 65012]);
    let short = attrs(&[65020, 65021]);
    assert_eq!(race(peer(1, 65010), long, peer(2, 65020), short), PeerId(2));
}

#[test]
fn as_set_counts_one_and_confed_segments_zero() {
    let mut set = attrs(&[65010]);
    set.as_path.as_mut().unwrap().segments.push(AsSegment {
        kind: AsSegmentType::Set,
        asns: vec![1, 2, 3, 4],
    });
    let mut confed = attrs(&[65020]);
    confed.as_path.as_mut().unwrap().segments.insert(
        0,
        AsSegment {
            kind: AsSegmentType::ConfedSequence,
            asns: vec![64512, 64513, 64514],
        },
    );
    // set: length 2; confed: length 1.
    assert_eq!(set.as_path.as_ref().unwrap().path_len(), 2);
    assert_eq!(race(peer(1, 65010), set, peer(2, 65020), confed), PeerId(2));
}

#[test]
fn lower_origin_wins() {
    let egp = PathAttrs {
        origin: Some(Origin::Egp),
        ..attrs(&[65010, 65011])
    };
    let incomplete = PathAttrs {
        origin: Some(Origin::Incomplete),
        ..attrs(&[65020, 65021])
    };
    assert_eq!(
        race(peer(1, 65010), egp, peer(2, 65020), incomplete),
        PeerId(1)
    );
}

#[test]
fn lower_med_wins_between_routes_from_the_same_neighbor_as() {
    let med = |v| PathAttrs {
        med: Some(v),
        ..attrs(&[65010, 65099])
    };
    // Both from AS 65010 (two sessions to it); peer 1 has the lower router id but MED decides.
    assert_eq!(
        race(peer(1, 65010), med(20), peer(2, 65010), med(10)),
        PeerId(2)
    );
}

#[test]
fn med_is_not_compared_across_neighbor_ases() {
    let a1 = PathAttrs {
        med: Some(500),
        ..attrs(&[65010, 65099])
    };
    let a2 = PathAttrs {
        med: Some(1),
        ..attrs(&[65020, 65099])
    };
    // MED skipped: the lower router id (peer 1) wins.
    assert_eq!(race(peer(1, 65010), a1, peer(2, 65020), a2), PeerId(1));
}

#[test]
fn missing_med_counts_as_zero() {
    let a2 = PathAttrs {
        med: Some(1),
        ..attrs(&[65010, 65099])
    };
    assert_eq!(
        race(peer(2, 65010), attrs(&[65010, 65099]), peer(1, 65010), a2),
        PeerId(2)
    );
}

#[test]
fn ebgp_wins_over_ibgp() {
    // The iBGP peer has the lower router id.
    assert_eq!(
        race(
            peer(1, ASN),
            attrs(&[65020]),
            peer(2, 65020),
            attrs(&[65020])
        ),
        PeerId(2)
    );
}

#[test]
fn lower_router_id_wins_and_originator_id_stands_in() {
    assert_eq!(
        race(
            peer(2, 65010),
            attrs(&[65010]),
            peer(1, 65020),
            attrs(&[65020])
        ),
        PeerId(1)
    );
    // iBGP peer 1 reflects a route originated by 10.0.0.9: compared as 10.0.0.9 > 10.0.0.2.
    let reflected = PathAttrs {
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: vec![v4("10.0.0.1")],
        local_pref: Some(100),
        ..attrs(&[65010])
    };
    let direct = PathAttrs {
        local_pref: Some(100),
        ..attrs(&[65010])
    };
    assert_eq!(
        race(peer(1, ASN), reflected, peer(2, ASN), direct),
        PeerId(2)
    );
}

#[test]
fn shorter_cluster_list_wins() {
    let cl = |n: usize| PathAttrs {
        originator_id: Some(v4("10.0.0.9")),
        cluster_list: vec![v4("10.0.0.1"); n],
        local_pref: Some(100),
        ..attrs(&[65010])
    };
    assert_eq!(race(peer(1, ASN), cl(2), peer(2, ASN), cl(1)), PeerId(2));
}

#[test]
fn lower_peer_address_wins() {
    let mut p1 = peer(1, 65010);
    let mut p2 = peer(2, 65010);
    p1.router_id = v4("10.0.0.7");
    p2.router_id = v4("10.0.0.7");
    p1.address = ip("192.0.2.20");
    p2.address = ip("192.0.2.10");
    assert_eq!(race(p1, attrs(&[65010]), p2, attrs(&[65010])), PeerId(2));
}

#[test]
fn decision_steps_as_a_unit() {
    let a = attrs(&[1, 2]);
    let b = attrs(&[3]);
    let c = |attrs, ibgp| Candidate {
        attrs,
        ibgp,
        peer_router_id: v4("1.1.1.1"),
        peer_address: ip("192.0.2.1"),
    };
    let mut mp = Vec::new();
    assert_eq!(select(&[c(&a, false), c(&b, false)], ASN, &mut mp), Some(1));
    assert_eq!(mp, vec![1]);
    assert_eq!(select(&[], ASN, &mut mp), None);
    assert!(mp.is_empty());
}

// ---- multipath and the FIB ----

#[test]
fn equal_paths_from_two_tors_form_an_ecmp_set() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(2),
        &announce("192.0.2.2", attrs(&[65020, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    let out = rib.flush();
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("0.0.0.0/0"),
            next_hops: vec![ip("192.0.2.1"), ip("192.0.2.2")],
        }]
    );
    let routes = rib.routes(net("0.0.0.0/0"));
    assert_eq!(routes.iter().filter(|r| r.multipath).count(), 2);
    assert_eq!(routes.iter().filter(|r| r.best).count(), 1);
    // One ToR goes away: the set shrinks.
    rib.peer_down(PeerId(2)).unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("192.0.2.1")]);
    // A longer path does not join the set.
    rib.peer_up(PeerId(2), session()).unwrap();
    rib.apply_update(
        PeerId(2),
        &announce("192.0.2.2", attrs(&[65020, 65021, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    let out = rib.flush();
    assert!(out.fib.is_empty(), "{:?}", out.fib);
}

#[test]
fn withdrawing_the_last_path_removes_the_fib_route_and_withdraws_from_peers() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("192.0.2.1")]);
    assert_eq!(sent(&out, 2, &CTX4)[0].nlri, vec![n4("198.51.100.0/24")]);
    assert!(sent(&out, 1, &CTX4).is_empty(), "never back to the source");

    rib.apply_update(PeerId(1), &withdraw(&["198.51.100.0/24"]))
        .unwrap();
    let out = rib.flush();
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("198.51.100.0/24"),
            next_hops: vec![],
        }]
    );
    let msgs = sent(&out, 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].withdrawn, vec![n4("198.51.100.0/24")]);
    assert_eq!(rib.adj_rib_out(PeerId(2)).count(), 0);
    assert_eq!(rib.loc_rib().count(), 0);
}

#[test]
fn next_hop_change_updates_the_fib_attribute_change_does_not() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.flush();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.9", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.flush().fib[0].next_hops, vec![ip("192.0.2.9")]);
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::new(65010, 7)];
    rib.apply_update(PeerId(1), &announce("192.0.2.9", a, &["198.51.100.0/24"]))
        .unwrap();
    assert!(rib.flush().fib.is_empty());
}

// ---- loops and errors ----

#[test]
fn routes_with_our_asn_in_the_path_are_ignored() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce(
            "192.0.2.1",
            attrs(&[65010, ASN, 65099]),
            &["198.51.100.0/24"],
        ),
    )
    .unwrap();
    let out = rib.flush();
    assert!(out.fib.is_empty());
    assert!(out.updates.is_empty());
    let c = rib.counters(PeerId(1)).unwrap();
    assert_eq!((c.received, c.accepted), (1, 0));
    let r = rib.adj_rib_in(PeerId(1)).next().unwrap();
    assert!(!r.accepted && !r.best);
}

#[test]
fn ibgp_routes_carrying_our_router_id_as_originator_are_ignored() {
    let mut rib = rib_with(vec![peer(1, ASN)]);
    let a = PathAttrs {
        originator_id: Some(rid()),
        local_pref: Some(100),
        ..attrs(&[])
    };
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["198.51.100.0/24"]))
        .unwrap();
    assert!(rib.flush().fib.is_empty());
    assert_eq!(rib.counters(PeerId(1)).unwrap().accepted, 0);
}

#[test]
fn treat_as_withdraw_removes_the_routes_of_a_malformed_update() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.flush();
    // The same route again, but ORIGIN has an undefined value (RFC 7606 §7.1).
    let good = UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(v4("192.0.2.1")),
            ..attrs(&[65010])
        },
        nlri: vec![n4("198.51.100.0/24")],
        ..UpdateMsg::default()
    };
    let bytes = Message::Update(Box::new(good)).to_bytes(&CTX4).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == [0x40, 0x01, 0x01, 0x00])
        .unwrap();
    let mut bad = bytes.to_vec();
    bad[at + 3] = 5;
    let Message::Update(u) = Message::decode(Bytes::from(bad), &CTX4).unwrap() else {
        panic!()
    };
    assert!(u.treat_as_withdraw());
    let o = rib.apply_update(PeerId(1), &u).unwrap();
    assert!(o.treat_as_withdraw);
    assert_eq!(o.withdrawn, 1);
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, Vec::<IpAddr>::new());
    assert_eq!(
        sent(&out, 2, &CTX4)[0].withdrawn,
        vec![n4("198.51.100.0/24")]
    );
    assert_eq!(rib.counters(PeerId(1)).unwrap().treat_as_withdraw, 1);
}

#[test]
fn end_of_rib_from_a_peer_is_recognised() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    let o = rib
        .apply_update(
            PeerId(1),
            &wire(UpdateMsg::end_of_rib_marker(Afi::IPV6, Safi::UNICAST)),
        )
        .unwrap();
    assert_eq!(o.end_of_rib, Some((Afi::IPV6, Safi::UNICAST)));
    assert_eq!(
        rib.end_of_rib_received(PeerId(1)),
        &[(Afi::IPV6, Safi::UNICAST)]
    );
}

#[test]
fn updates_from_unknown_or_down_peers_are_refused() {
    let mut rib = rib_with(vec![]);
    let u = announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]);
    assert_eq!(
        rib.apply_update(PeerId(9), &u),
        Err(RibError::UnknownPeer(PeerId(9)))
    );
    rib.add_peer(peer(1, 65010)).unwrap();
    assert_eq!(
        rib.apply_update(PeerId(1), &u),
        Err(RibError::PeerNotUp(PeerId(1)))
    );
}

// ---- minimal updates ----

#[test]
fn an_identical_reannouncement_produces_nothing() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let u = announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]);
    rib.apply_update(PeerId(1), &u).unwrap();
    assert!(!rib.flush().updates.is_empty());
    rib.apply_update(PeerId(1), &u).unwrap();
    let out = rib.flush();
    assert!(out.updates.is_empty() && out.fib.is_empty());
    // Nor does a change the peer cannot see (a community we strip on import).
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let mut p1 = peer(1, 65010);
    p1.import = Policy {
        rules: vec![Rule {
            matches: vec![],
            actions: vec![Set::RemoveCommunity(Community::new(65010, 1))],
            verdict: Verdict::Accept,
        }],
        default: Verdict::Accept,
        then: None,
    };
    rib.remove_peer(PeerId(1)).unwrap();
    rib.add_peer(p1).unwrap();
    rib.peer_up(PeerId(1), session()).unwrap();
    rib.apply_update(PeerId(1), &u).unwrap();
    rib.flush();
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::new(65010, 1)];
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["198.51.100.0/24"]))
        .unwrap();
    assert!(rib.flush().updates.is_empty());
}

#[test]
fn prefixes_sharing_attributes_are_packed_into_one_update() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["203.0.113.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010, 65011]), &["192.0.2.0/24"]),
    )
    .unwrap();
    let out = rib.flush();
    let msgs = sent(&out, 2, &CTX4);
    let mut nlri: Vec<Vec<Ipv4Net>> = msgs.iter().map(|m| m.nlri.clone()).collect();
    nlri.sort();
    assert_eq!(
        nlri,
        vec![
            vec![n4("192.0.2.0/24")],
            vec![n4("198.51.100.0/24"), n4("203.0.113.0/24")],
        ]
    );
    // Withdrawals are packed too.
    rib.peer_down(PeerId(1)).unwrap();
    let msgs = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].withdrawn.len(), 3);
}

#[test]
fn a_large_table_is_split_into_full_messages() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let prefixes: Vec<Ipv4Net> = (0..3000u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        .collect();
    let u = wire(UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(v4("192.0.2.1")),
            ..attrs(&[65010])
        },
        nlri: prefixes[..900].to_vec(),
        ..UpdateMsg::default()
    });
    rib.apply_update(PeerId(1), &u).unwrap();
    for chunk in prefixes[900..].chunks(700) {
        let mut u = u.clone();
        u.nlri = chunk.to_vec();
        rib.apply_update(PeerId(1), &u).unwrap();
    }
    let msgs = sent(&rib.flush(), 2, &CTX4);
    let mut all: Vec<Ipv4Net> = msgs.iter().flat_map(|m| m.nlri.clone()).collect();
    assert_eq!(msgs.len(), 3);
    all.sort();
    assert_eq!(all, prefixes);
}

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

// ---- sessions ----

#[test]
fn peer_up_sends_the_whole_adj_rib_out_then_end_of_rib_per_family() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.originate(Advert {
        prefix: net("10.244.1.0/24"),
        ..Advert::default()
    });
    rib.originate(Advert {
        prefix: net("fd00:10:244:1::/64"),
        ..Advert::default()
    });
    rib.flush();
    rib.add_peer(peer(2, 65020)).unwrap();
    rib.peer_up(PeerId(2), session()).unwrap();
    let out = rib.flush();
    let msgs = sent(&out, 2, &CTX4);
    let eors: Vec<_> = msgs.iter().filter_map(UpdateMsg::end_of_rib).collect();
    assert_eq!(
        eors,
        vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)]
    );
    // EoRs come last, after all routes.
    assert!(
        msgs[msgs.len() - 2..]
            .iter()
            .all(|m| m.end_of_rib().is_some())
    );
    let mut v4: Vec<Ipv4Net> = msgs.iter().flat_map(|m| m.nlri.clone()).collect();
    v4.sort();
    assert_eq!(v4, vec![n4("10.244.1.0/24"), n4("198.51.100.0/24")]);
    assert_eq!(msgs.iter().flat_map(|m| m.ipv6_nlri()).count(), 1);
    assert_eq!(out.end_of_rib.len(), 2);
    assert_eq!(rib.counters(PeerId(2)).unwrap().advertised, 3);
    // Only once.
    assert!(rib.flush().updates.is_empty());
}

#[test]
fn end_of_rib_is_sent_even_with_nothing_to_advertise() {
    let mut rib = Rib::new(ASN, rid());
    rib.add_peer(peer(1, 65010)).unwrap();
    rib.peer_up(PeerId(1), session()).unwrap();
    let msgs = sent(&rib.flush(), 1, &CTX4);
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|m| m.end_of_rib().is_some()));
}

#[test]
fn peer_down_flushes_its_routes_and_withdraws_them_from_others() {
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
    rib.flush();
    rib.peer_down(PeerId(1)).unwrap();
    let out = rib.flush();
    assert_eq!(out.fib.len(), 2);
    assert!(out.fib.iter().all(|f| f.next_hops.is_empty()));
    assert_eq!(sent(&out, 2, &CTX4)[0].withdrawn.len(), 2);
    assert_eq!(rib.counters(PeerId(1)).unwrap(), PeerCounters::default());
    assert_eq!(rib.prefix_count(), (0, 0));
}

#[test]
fn route_refresh_resends_the_family() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.originate(Advert {
        prefix: net("fd00::/64"),
        ..Advert::default()
    });
    rib.flush();
    assert!(rib.flush().updates.is_empty());
    rib.route_refresh(PeerId(2), Afi::IPV4, Safi::UNICAST)
        .unwrap();
    let msgs = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].nlri, vec![n4("198.51.100.0/24")]);
    assert_eq!(
        rib.route_refresh(PeerId(2), Afi(25), Safi(70)),
        Err(RibError::FamilyNotNegotiated(Afi(25), Safi(70)))
    );
}

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

// ---- graceful restart, receiving speaker (RFC 4724 §4.2) ----

/// A peer's routes learned, then its session drops without a NOTIFICATION.
fn restarted_peer() -> Rib {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    rib.apply_update(
        PeerId(1),
        &announce(
            "192.0.2.1",
            attrs(&[65010]),
            &["198.51.100.0/24", "203.0.113.0/24"],
        ),
    )
    .unwrap();
    rib.flush();
    assert_eq!(rib.peer_down_graceful(PeerId(1)).unwrap(), 2);
    rib
}

#[test]
fn gr_stale_routes_stay_best_and_installed_while_the_peer_restarts() {
    let mut rib = restarted_peer();
    let out = rib.flush();
    assert!(
        out.fib.is_empty(),
        "the kernel route must not change: {:?}",
        out.fib
    );
    assert_eq!(best_peer(&rib, "198.51.100.0/24"), Some(PeerId(1)));
}

#[test]
fn gr_end_of_rib_sweeps_only_what_was_not_sent_again() {
    let mut rib = restarted_peer();
    rib.peer_up(PeerId(1), session()).unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    let o = rib
        .apply_update(
            PeerId(1),
            &wire(UpdateMsg::end_of_rib_marker(Afi::IPV4, Safi::UNICAST)),
        )
        .unwrap();
    assert_eq!(o.stale_removed, 1);
    let out = rib.flush();
    assert_eq!(best_peer(&rib, "198.51.100.0/24"), Some(PeerId(1)));
    assert_eq!(best_peer(&rib, "203.0.113.0/24"), None);
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("203.0.113.0/24"),
            next_hops: vec![]
        }]
    );
}

#[test]
fn gr_sweep_after_the_restart_time_removes_every_stale_route() {
    let mut rib = restarted_peer();
    assert_eq!(rib.sweep_stale(PeerId(1)), 2);
    let out = rib.flush();
    assert_eq!(out.fib.len(), 2);
    assert!(out.fib.iter().all(|f| f.next_hops.is_empty()));
}

#[test]
fn gr_stale_routes_go_per_family_without_the_f_bit() {
    let mut rib = restarted_peer();
    let nh6 = MpNextHop::Ipv6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    rib.peer_up(PeerId(1), session()).unwrap();
    rib.apply_update(
        PeerId(1),
        &announce6(nh6, attrs(&[65010]), &["2001:db8:100::/48"]),
    )
    .unwrap();
    rib.flush();
    rib.peer_down_graceful(PeerId(1)).unwrap();
    // Back, with the F bit for IPv6 only: the IPv4 stale routes go, the IPv6 one stays.
    rib.peer_up(PeerId(1), session()).unwrap();
    assert_eq!(rib.sweep_stale_family(PeerId(1), Afi::IPV4), 2);
    assert_eq!(rib.sweep_stale_family(PeerId(1), Afi::IPV4), 0);
    rib.flush();
    assert_eq!(best_peer(&rib, "198.51.100.0/24"), None);
    assert_eq!(best_peer(&rib, "2001:db8:100::/48"), Some(PeerId(1)));
}

// ---- long-lived graceful restart, receiving speaker (RFC 9494 §4) ----

#[test]
fn llgr_keeps_stale_routes_tagged_and_drops_no_llgr_ones() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    let mut no_llgr = attrs(&[65010]);
    no_llgr.communities.push(Community::NO_LLGR);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", no_llgr, &["203.0.113.0/24"]),
    )
    .unwrap();
    rib.flush();
    rib.peer_down_graceful(PeerId(1)).unwrap();
    assert_eq!(rib.enter_long_lived_stale(PeerId(1), Afi::IPV4), (1, 1));
    let out = rib.flush();
    // The tagged route stays installed; the NO_LLGR one goes.
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("203.0.113.0/24"),
            next_hops: vec![]
        }]
    );
    let best = rib.best(net("198.51.100.0/24")).unwrap();
    assert!(
        best.attrs
            .attrs
            .communities
            .contains(&Community::LLGR_STALE)
    );
    // A fresh route from the peer replaces the long-lived stale one (untagged).
    rib.peer_up(PeerId(1), session()).unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.flush();
    let best = rib.best(net("198.51.100.0/24")).unwrap();
    assert!(
        !best
            .attrs
            .attrs
            .communities
            .contains(&Community::LLGR_STALE)
    );
}

#[test]
fn llgr_stale_loses_to_any_fresh_route_even_with_higher_local_pref() {
    let mut rib = rib_with(vec![peer(1, ASN), peer(2, 65020)]);
    let mut preferred = attrs(&[]);
    preferred.local_pref = Some(500);
    preferred.communities.push(Community::LLGR_STALE);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", preferred, &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(2),
        &announce(
            "192.0.2.2",
            attrs(&[65020, 65030, 65040]),
            &["198.51.100.0/24"],
        ),
    )
    .unwrap();
    rib.flush();
    assert_eq!(best_peer(&rib, "198.51.100.0/24"), Some(PeerId(2)));
}

#[test]
fn llgr_stale_routes_go_only_to_peers_that_negotiated_llgr() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020), peer(3, 65030)]);
    let mut llgr = session();
    llgr.long_lived_gr = true;
    rib.peer_up(PeerId(3), llgr).unwrap();
    rib.flush();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.flush();
    rib.peer_down_graceful(PeerId(1)).unwrap();
    rib.enter_long_lived_stale(PeerId(1), Afi::IPV4);
    let out = rib.flush();
    // Peer 2 (no LLGR) gets a withdrawal; peer 3 the route with LLGR_STALE.
    let to2 = sent(&out, 2, &CTX4);
    assert_eq!(to2.len(), 1);
    assert_eq!(to2[0].withdrawn, vec![n4("198.51.100.0/24")]);
    let to3 = sent(&out, 3, &CTX4);
    assert_eq!(to3[0].nlri, vec![n4("198.51.100.0/24")]);
    assert!(to3[0].attrs.communities.contains(&Community::LLGR_STALE));
}

// ---- enhanced route refresh (RFC 7313 §4) ----

#[test]
fn borr_eorr_remove_what_the_peer_did_not_resend() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    rib.apply_update(
        PeerId(1),
        &announce(
            "192.0.2.1",
            attrs(&[65010]),
            &["198.51.100.0/24", "203.0.113.0/24"],
        ),
    )
    .unwrap();
    rib.flush();
    assert_eq!(rib.begin_refresh(PeerId(1), Afi::IPV4), 2);
    // Still selected while the refresh runs.
    assert!(rib.flush().fib.is_empty());
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.end_refresh(PeerId(1), Afi::IPV4), 1);
    let out = rib.flush();
    assert_eq!(best_peer(&rib, "198.51.100.0/24"), Some(PeerId(1)));
    assert_eq!(best_peer(&rib, "203.0.113.0/24"), None);
    assert_eq!(out.fib.len(), 1);
}

// ---- semantically incorrect NEXT_HOP (RFC 4271 §6.3) ----

#[test]
fn routes_with_a_bad_ipv4_next_hop_are_ignored_and_replace_nothing() {
    for (nh, why) in [
        ("0.0.0.0", "the unspecified address"),
        ("224.0.0.5", "multicast"),
        ("255.255.255.255", "the broadcast address"),
        ("127.0.0.1", "loopback"),
        ("192.0.2.254", "the receiver's own address"),
    ] {
        let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
        rib.apply_update(
            PeerId(1),
            &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
        )
        .unwrap();
        rib.flush();
        // The same peer re-announces the prefix with a bad next hop: ignored, and its earlier
        // route does not linger (treated as withdrawn).
        let o = rib
            .apply_update(
                PeerId(1),
                &announce(nh, attrs(&[65010]), &["198.51.100.0/24", "203.0.113.0/24"]),
            )
            .unwrap();
        let bad = o.bad_next_hop.expect(nh);
        assert_eq!((bad.why, bad.prefixes), (why, 2), "{nh}");
        assert_eq!(bad.next_hop, MpNextHop::Ipv4(v4(nh)));
        assert_eq!(rib.adj_rib_in(PeerId(1)).count(), 0, "{nh}");
        assert_eq!(rib.counters(PeerId(1)).unwrap().bad_next_hop, 2);
        let out = rib.flush();
        // Never passed on: peer 2 only hears the withdrawal of the earlier route.
        let to2 = sent(&out, 2, &CTX4);
        assert!(to2.iter().all(|u| u.nlri.is_empty()), "{nh}: {to2:?}");
        assert_eq!(
            to2.iter()
                .flat_map(|u| u.withdrawn.clone())
                .collect::<Vec<_>>(),
            vec![n4("198.51.100.0/24")],
            "{nh}"
        );
    }
}

#[test]
fn routes_with_a_bad_ipv6_next_hop_are_ignored() {
    let g = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    for (nh, why) in [
        (
            MpNextHop::Ipv6 {
                global: g("::"),
                link_local: None,
            },
            "the unspecified address",
        ),
        (
            MpNextHop::Ipv6 {
                global: g("ff02::5"),
                link_local: None,
            },
            "multicast",
        ),
        (
            MpNextHop::Ipv6 {
                global: g("::1"),
                link_local: None,
            },
            "loopback",
        ),
        (
            MpNextHop::Ipv6 {
                global: g("2001:db8::254"),
                link_local: None,
            },
            "the receiver's own address",
        ),
        (
            MpNextHop::Ipv6 {
                global: g("2001:db8::1"),
                link_local: Some(g("2001:db8::2")),
            },
            "a second (link-local) address that is not link-local",
        ),
    ] {
        let mut rib = rib_with(vec![peer(1, 65010)]);
        let o = rib
            .apply_update(
                PeerId(1),
                &announce6(nh, attrs(&[65010]), &["2001:db8:100::/48"]),
            )
            .unwrap();
        assert_eq!(o.bad_next_hop.map(|b| b.why), Some(why), "{nh:?}");
        assert_eq!(rib.adj_rib_in(PeerId(1)).count(), 0, "{nh:?}");
    }
}

#[test]
fn acceptable_next_hops_are_not_refused() {
    let g = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    let s = session();
    for nh in [
        MpNextHop::Ipv4(v4("192.0.2.1")),
        MpNextHop::Ipv6 {
            global: g("2001:db8::1"),
            link_local: Some(g("fe80::1")),
        },
        // RFC 2545 unnumbered style: no global address, a link-local one.
        MpNextHop::Ipv6 {
            global: g("::"),
            link_local: Some(g("fe80::1")),
        },
    ] {
        assert_eq!(next_hop_refusal(&nh, &s), None, "{nh:?}");
    }
    // A session over loopback (in-process tests): a loopback next hop is the peer's address.
    let lo = SessionInfo {
        local_v4: Some(v4("127.0.0.1")),
        ..session()
    };
    assert_eq!(
        next_hop_refusal(&MpNextHop::Ipv4(v4("127.0.0.3")), &lo),
        None
    );
    assert_eq!(
        next_hop_refusal(&MpNextHop::Ipv4(v4("127.0.0.1")), &lo),
        Some("the receiver's own address")
    );
}

// ---- enforce-first-as (RFC 4271 §6.3, a MAY; on by default as in FRR) ----

#[test]
fn enforce_first_as_ignores_ebgp_routes_without_the_peers_as_first() {
    let mut p1 = peer(1, 65010);
    p1.enforce_first_as = true;
    let mut rib = rib_with(vec![p1]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010, 65020]), &["198.51.100.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.adj_rib_in(PeerId(1)).count(), 1);
    // Another AS first (a route server that does not prepend, or a leak), or an empty path:
    // ignored, and the earlier route for the prefix withdrawn.
    for path in [&[65020, 65010][..], &[]] {
        let o = rib
            .apply_update(
                PeerId(1),
                &announce("192.0.2.1", attrs(path), &["198.51.100.0/24"]),
            )
            .unwrap();
        assert_eq!(o.first_as_mismatch, 1, "{path:?}");
        assert_eq!(rib.adj_rib_in(PeerId(1)).count(), 0, "{path:?}");
    }
    assert_eq!(rib.counters(PeerId(1)).unwrap().first_as_mismatch, 2);
}

#[test]
fn enforce_first_as_applies_to_ebgp_only_and_can_be_turned_off() {
    // iBGP: the path starts with the originating neighbor AS, never ours.
    let mut ibgp = peer(1, ASN);
    ibgp.enforce_first_as = true;
    // eBGP with the check off (a route server client).
    let off = peer(2, 65020);
    let mut rib = rib_with(vec![ibgp, off]);
    for id in [1, 2] {
        let o = rib
            .apply_update(
                PeerId(id),
                &announce("192.0.2.9", attrs(&[65099]), &["198.51.100.0/24"]),
            )
            .unwrap();
        assert_eq!(o.first_as_mismatch, 0, "peer {id}");
        assert_eq!(rib.adj_rib_in(PeerId(id)).count(), 1, "peer {id}");
    }
}
