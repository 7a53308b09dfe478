//! ironmesh bgpd against FRR as the ToR (tests named `frr_bgp_*`).

use std::net::IpAddr;
use std::time::Duration;

use api::bgp::RibKind;
use interop_tests::bgpd::advert;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node() -> BgpdConfig {
    let mut tor6 = BgpdPeer::new("tor6", "2001:db8::1", 65000);
    tor6.families = vec!["ipv6-unicast".into()];
    BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor4", "192.0.2.1", 65000))
        .peer(tor6)
        .advert("10.244.1.0/24", &["65101:100"], &["65101:1:1"])
        .advert("2001:db8:244:1::/64", &[], &[])
}

fn frr_tor(host: &Host) -> Result<Frr> {
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    fc.neighbors
        .push(FrrNeighbor::new(ip("2001:db8::2"), 65101));
    fc.networks = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
    fc.extra = " timers bgp 3 9\n".into();
    // As on a real ToR, zebra runs: bgpd sends its IPv6 routes with the global and the
    // link-local next hop (RFC 2545 §3) once the link-local address exists, and FRR's bgpd
    // without zebra knows no interface for the link-local one and treats the route as
    // withdrawn ("sent a v6 LL next-hop and there's no peer interface information").
    fc.with_zebra = true;
    Frr::start(host, &fc)
}

#[test]
fn frr_bgp_ipv4_ipv6_adverts_withdraw_and_route_refresh() -> Result<()> {
    let lab = Lab::new("frr_bgp")?;
    let tor = lab.host("tor")?;
    let node_h = lab.host("node")?;
    lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node_h,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;
    let frr = frr_tor(&tor)?;
    let bgpd = Bgpd::start(&node_h, &node().render())?;

    bgpd.wait_established("tor4", T)?;
    bgpd.wait_established("tor6", T)?;
    frr.wait_established(ip("192.0.2.2"), T)?;
    frr.wait_established(ip("2001:db8::2"), T)?;

    // Read from FRR's own CLI (vtysh JSON).
    let got = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    let r = find(&got, "10.244.1.0/24").unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.as_path, vec![65101]);
    assert_eq!(r.communities, vec![(65101, 100)]);
    assert_eq!(r.large_communities, vec![(65101, 1, 1)]);
    let got6 = frr.wait_routes(ip("2001:db8::2"), T, |r| {
        find(r, "2001:db8:244:1::/64").is_some()
    })?;
    assert_eq!(
        find(&got6, "2001:db8:244:1::/64").unwrap().next_hop,
        Some(ip("2001:db8::2"))
    );

    // VIP add and withdraw.
    bgpd.add_adverts(vec![advert("203.0.113.10/32", &[], &["65101:2:10"])])?;
    let got = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "203.0.113.10/32").is_some())?;
    assert_eq!(
        find(&got, "203.0.113.10/32").unwrap().large_communities,
        vec![(65101, 2, 10)]
    );
    bgpd.remove_adverts(&["203.0.113.10/32"])?;
    frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "203.0.113.10/32").is_none())?;

    // FRR's routes are in bgpd's Adj-RIB-In.
    let adj = bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| {
        find(r, "198.51.100.0/24").is_some()
    })?;
    assert_eq!(find(&adj, "198.51.100.0/24").unwrap().as_path, vec![65000]);

    // Route refresh (RFC 2918): FRR asks, bgpd re-sends its Adj-RIB-Out.
    let before = bgpd.peer("tor4")?.counters.unwrap().updates_out;
    frr.vtysh(&["clear bgp ipv4 unicast 192.0.2.2 soft in"])?;
    cmd::wait_for(
        "bgpd to answer the ROUTE-REFRESH",
        T,
        Duration::from_millis(200),
        |last| {
            let now = bgpd.peer("tor4")?.counters.unwrap().updates_out;
            *last = format!("updates_out {before} -> {now}");
            Ok((now > before).then_some(()))
        },
    )?;
    assert_eq!(
        frr.neighbor_state(ip("192.0.2.2"))?,
        "Established",
        "a route refresh must not reset the session"
    );
    frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    Ok(())
}

/// A dual-homed node: FRR and BIRD as two ToRs on two links; each gets the PodCIDR with the
/// node's address on its own link as next hop.
#[test]
fn frr_bgp_dual_homed_node_with_bird_as_second_tor() -> Result<()> {
    let lab = Lab::new("frr_bird_dual")?;
    let tor_a = lab.host("tora")?;
    let tor_b = lab.host("torb")?;
    let node_h = lab.host("node")?;
    lab.link(&tor_a, &["192.0.2.1/24"], &node_h, &["192.0.2.2/24"])?;
    lab.link(&tor_b, &["203.0.113.1/24"], &node_h, &["203.0.113.2/24"])?;

    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    let frr = Frr::start(&tor_a, &fc)?;
    let mut bc = BirdConfig::new("203.0.113.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node", 65001, ip("203.0.113.2"), 65101));
    let bird = Bird::start(&tor_b, &bc)?;

    let mut a = BgpdPeer::new("tor-a", "192.0.2.1", 65000);
    a.extra = "local_address = \"192.0.2.2\"\n".into();
    let mut b = BgpdPeer::new("tor-b", "203.0.113.1", 65001);
    b.extra = "local_address = \"203.0.113.2\"\n".into();
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(a)
        .peer(b)
        .advert("10.244.1.0/24", &[], &[]);
    let bgpd = Bgpd::start(&node_h, &cfg.render())?;
    bgpd.wait_established("tor-a", T)?;
    bgpd.wait_established("tor-b", T)?;

    let fa = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    assert_eq!(
        find(&fa, "10.244.1.0/24").unwrap().next_hop,
        Some(ip("192.0.2.2"))
    );
    let fb = bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;
    assert_eq!(
        find(&fb, "10.244.1.0/24").unwrap().next_hop,
        Some(ip("203.0.113.2"))
    );
    // The node is no transit: nothing FRR or BIRD sent is passed to the other.
    assert_eq!(fa.len(), 1, "{fa:?}");
    assert_eq!(fb.len(), 1, "{fb:?}");
    Ok(())
}
