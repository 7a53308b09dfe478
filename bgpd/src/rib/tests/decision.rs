//! Decision process (RFC 4271 §9.1.2), one story per step.

use super::*;

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
