//! Sessions up and down.

use super::*;

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
