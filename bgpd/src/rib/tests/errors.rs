//! Loops (§9.1.2) and errors.

use super::*;

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
