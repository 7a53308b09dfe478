//! Graceful restart and LLGR as the receiving speaker (RFC 4724 §4.2, RFC 9494 §4), enhanced route refresh (RFC 7313 §4).

use super::*;

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
