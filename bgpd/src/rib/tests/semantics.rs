//! RFC 4271 §6.3 semantic checks: NEXT_HOP, enforce-first-as.

use super::*;

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
