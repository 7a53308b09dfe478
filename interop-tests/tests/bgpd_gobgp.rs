//! ironmesh bgpd against GoBGP as the ToR (tests named `gobgp_bgp_*`).

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

#[test]
fn gobgp_bgp_ipv4_ipv6_md5_adverts_and_withdraw() -> Result<()> {
    let lab = Lab::new("gobgp_bgp")?;
    let tor = lab.host("tor")?;
    let node_h = lab.host("node")?;
    lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node_h,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;

    let mut gc = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap());
    let mut n4 = GobgpNeighbor::new(ip("192.0.2.2"), 65101);
    n4.password = Some("gobgp-md5".into());
    gc.neighbors.push(n4);
    gc.neighbors
        .push(GobgpNeighbor::new(ip("2001:db8::2"), 65101));
    let gobgp = Gobgp::start(&tor, &gc)?;
    gobgp.announce("198.51.100.0/24", &["65000:1"], &[])?;
    gobgp.announce("2001:db8:100::/48", &[], &[])?;

    let mut tor4 = BgpdPeer::new("tor4", "192.0.2.1", 65000);
    tor4.extra = "md5_password = \"gobgp-md5\"\n".into();
    let mut tor6 = BgpdPeer::new("tor6", "2001:db8::1", 65000);
    tor6.families = vec!["ipv6-unicast".into()];
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(tor4)
        .peer(tor6)
        .advert("10.244.1.0/24", &["65101:100"], &["65101:1:1"])
        .advert("2001:db8:244:1::/64", &["65101:600"], &[]);
    let bgpd = Bgpd::start(&node_h, &cfg.render())?;

    bgpd.wait_established("tor4", T)?;
    bgpd.wait_established("tor6", T)?;
    gobgp.wait_established(ip("192.0.2.2"), T)?;

    // Read from GoBGP's own CLI (gobgp neighbor ... adj-in -j).
    let got = gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    let r = find(&got, "10.244.1.0/24").unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.as_path, vec![65101]);
    assert_eq!(r.communities, vec![(65101, 100)]);
    assert_eq!(r.large_communities, vec![(65101, 1, 1)]);
    let got6 = gobgp.wait_adj_in(ip("2001:db8::2"), T, |r| {
        find(r, "2001:db8:244:1::/64").is_some()
    })?;
    let r = find(&got6, "2001:db8:244:1::/64").unwrap();
    assert_eq!(r.next_hop, Some(ip("2001:db8::2")));
    assert_eq!(r.communities, vec![(65101, 600)]);

    // VIPs come and go.
    bgpd.add_adverts(vec![
        advert("203.0.113.10/32", &["65101:200"], &[]),
        advert("203.0.113.11/32", &[], &[]),
    ])?;
    gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| {
        find(r, "203.0.113.10/32").is_some() && find(r, "203.0.113.11/32").is_some()
    })?;
    bgpd.remove_adverts(&["203.0.113.10/32", "203.0.113.11/32"])?;
    gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| r.len() == 1)?;

    // GoBGP's routes in bgpd's Adj-RIB-In, with the community it set.
    let adj = bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| {
        find(r, "198.51.100.0/24").is_some()
    })?;
    let r = find(&adj, "198.51.100.0/24").unwrap();
    assert_eq!(
        (r.as_path.clone(), r.communities.clone()),
        (vec![65000], vec![(65000, 1)])
    );
    let adj6 = bgpd.wait_routes(RibKind::AdjIn, "tor6", T, |r| {
        find(r, "2001:db8:100::/48").is_some()
    })?;
    assert_eq!(
        find(&adj6, "2001:db8:100::/48").unwrap().as_path,
        vec![65000]
    );

    // A route GoBGP withdraws leaves bgpd's Loc-RIB.
    gobgp.withdraw("198.51.100.0/24")?;
    bgpd.wait_routes(RibKind::Loc, "", T, |r| {
        find(r, "198.51.100.0/24").is_none()
    })?;
    Ok(())
}

/// RFC 8326: `drain` re-announces everything with GRACEFUL_SHUTDOWN, and the ToR sees it.
#[test]
fn gobgp_bgp_drain_adds_graceful_shutdown() -> Result<()> {
    let lab = Lab::new("gobgp_drain")?;
    let tor = lab.host("tor")?;
    let node_h = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node_h, &["192.0.2.2/24"])?;
    let mut gc = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap());
    gc.neighbors
        .push(GobgpNeighbor::new(ip("192.0.2.2"), 65101));
    let gobgp = Gobgp::start(&tor, &gc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 65000))
        .advert("10.244.1.0/24", &["65101:100"], &[]);
    let bgpd = Bgpd::start(&node_h, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    assert_eq!(bgpd.drain()?, 1);
    let got = gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| {
        find(r, "10.244.1.0/24").is_some_and(|r| r.communities.contains(&(0xFFFF, 0)))
    })?;
    assert_eq!(
        find(&got, "10.244.1.0/24").unwrap().communities,
        vec![(65101, 100), (0xFFFF, 0)]
    );
    Ok(())
}
