//! Session transport options against real ToRs: eBGP multihop (BIRD) and GTSM (FRR,
//! RFC 5082), with a router between the node and the ToR where the test needs two hops.

use std::net::IpAddr;
use std::time::Duration;

use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// tor (192.0.2.1) — rtr — node (198.51.100.2): two hops apart.
fn two_hops(lab: &Lab) -> Result<(Host, Host)> {
    let tor = lab.host("tor")?;
    let rtr = lab.host("rtr")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &rtr, &["192.0.2.254/24"])?;
    lab.link(&rtr, &["198.51.100.254/24"], &node, &["198.51.100.2/24"])?;
    tor.route_add("198.51.100.0/24 via 192.0.2.254")?;
    node.route_add("192.0.2.0/24 via 198.51.100.254")?;
    Ok((tor, node))
}

#[test]
fn bird_bgp_ebgp_multihop_through_a_router() -> Result<()> {
    let lab = Lab::new("bird_multihop")?;
    let (tor, node) = two_hops(&lab)?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip("198.51.100.2"), 65101);
    p.multihop = Some(2);
    p.local_addr = Some(ip("192.0.2.1"));
    bc.peers.push(p);
    let bird = Bird::start(&tor, &bc)?;
    let mut peer = BgpdPeer::new("tor", "192.0.2.1", 65000);
    peer.extra = "multihop_ttl = 2\nlocal_address = \"198.51.100.2\"\n".into();
    let cfg = BgpdConfig::new(65101, "198.51.100.2")
        .peer(peer)
        .advert("10.244.1.0/24", &[], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    let got = bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;
    assert_eq!(
        find(&got, "10.244.1.0/24").unwrap().next_hop,
        Some(ip("198.51.100.2"))
    );
    Ok(())
}

#[test]
fn frr_bgp_gtsm_direct_peer_up_and_two_hops_refused() -> Result<()> {
    // Directly connected with GTSM on both sides: up.
    let lab = Lab::new("frr_gtsm")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    fc.extra = "router bgp 65000\n neighbor 192.0.2.2 ttl-security hops 1\n".into();
    let frr = Frr::start(&tor, &fc)?;
    let mut peer = BgpdPeer::new("tor", "192.0.2.1", 65000);
    peer.extra = "ttl_security = true\n".into();
    let cfg = BgpdConfig::new(65101, "192.0.2.2").peer(peer.clone());
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    frr.wait_established(ip("192.0.2.2"), T)?;
    drop(bgpd);
    drop(lab);

    // The same ToR two hops away: FRR's GTSM drops our segments (TTL 254 < 255).
    let lab = Lab::new("frr_gtsm2")?;
    let (tor, node) = two_hops(&lab)?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors
        .push(FrrNeighbor::new(ip("198.51.100.2"), 65101));
    fc.extra = "router bgp 65000\n neighbor 198.51.100.2 ttl-security hops 1\n".into();
    let frr = Frr::start(&tor, &fc)?;
    peer.extra = "ttl_security = true\nlocal_address = \"198.51.100.2\"\n".into();
    let cfg = BgpdConfig::new(65101, "198.51.100.2").peer(peer);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    std::thread::sleep(Duration::from_secs(8));
    assert_ne!(
        bgpd.peer("tor")?.state(),
        api::bgp::SessionState::Established
    );
    assert_ne!(frr.neighbor_state(ip("198.51.100.2"))?, "Established");
    Ok(())
}

#[test]
fn gobgp_bgp_peer_asn_any_is_learned_from_open() -> Result<()> {
    let lab = Lab::new("gobgp_any")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut gc = GobgpConfig::new(4_200_000_010, "192.0.2.1".parse().unwrap());
    gc.neighbors
        .push(GobgpNeighbor::new(ip("192.0.2.2"), 65101));
    let gobgp = Gobgp::start(&tor, &gc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 0))
        .advert("10.244.1.0/24", &[], &[]);
    let toml = cfg.render().replace("peer_asn = 0", "peer_asn = \"any\"");
    let bgpd = Bgpd::start(&node, &toml)?;
    let p = bgpd.wait_established("tor", T)?;
    assert_eq!(
        p.peer_asn, 4_200_000_010,
        "a 4-octet ASN learned from the OPEN"
    );
    let got = gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    assert_eq!(find(&got, "10.244.1.0/24").unwrap().as_path, vec![65101]);
    Ok(())
}

#[test]
fn bird_bgp_ibgp_keeps_as_path_empty_and_sets_local_pref() -> Result<()> {
    let lab = Lab::new("bird_ibgp")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node", 65101, ip("192.0.2.2"), 65101));
    let bird = Bird::start(&tor, &bc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 65101))
        .advert("10.244.1.0/24", &[], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    let got = bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;
    let r = find(&got, "10.244.1.0/24").unwrap();
    assert!(
        r.as_path.is_empty(),
        "iBGP does not prepend: {:?}",
        r.as_path
    );
    assert_eq!(r.local_pref, Some(100));
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    Ok(())
}

/// Unnumbered: bgpd finds the ToR by its link-local address on the interface (no address
/// configured for the peer); IPv4 routes ride the IPv6 session with an IPv6 next hop (RFC 8950).
#[test]
fn bird_bgp_unnumbered_over_link_local() -> Result<()> {
    let lab = Lab::new("bird_unnumbered")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    let link = lab.link(&tor, &[], &node, &[])?;
    // Link-local addresses appear after DAD; wait for them.
    let node_ll = cmd::wait_for("node link-local", T, Duration::from_millis(100), |_| {
        Ok(node.link_local(&link.b_if).ok())
    })?;
    cmd::wait_for("tor link-local", T, Duration::from_millis(100), |_| {
        Ok(tor.link_local(&link.a_if).ok())
    })?;
    // DAD must be over before the addresses are usable.
    std::thread::sleep(Duration::from_secs(2));

    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, IpAddr::V6(node_ll), 65101);
    p.interface = Some(link.a_if.clone());
    p.ipv4 = true;
    p.extended_next_hop = true;
    bc.peers.push(p);
    let bird = Bird::start(&tor, &bc)?;

    let mut peer = BgpdPeer::new("tor", "unused", 65000);
    peer.families = vec!["ipv4-unicast".into(), "ipv6-unicast".into()];
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(peer)
        .advert("10.244.1.0/24", &[], &[])
        .advert("2001:db8:244:1::/64", &[], &[]);
    let toml = cfg.render().replace(
        "address = \"unused\"",
        &format!("interface = \"{}\"", link.b_if),
    );
    let bgpd = Bgpd::start(&node, &toml)?;
    let up = bgpd.wait_established("tor", T)?;
    assert!(
        up.capabilities.contains(&"extended-next-hop".to_string()),
        "{:?}",
        up.capabilities
    );
    bird.wait_established("node", T)?;
    let got = bird.wait_routes("node", T, |r| {
        find(r, "10.244.1.0/24").is_some() && find(r, "2001:db8:244:1::/64").is_some()
    })?;
    assert_eq!(
        find(&got, "10.244.1.0/24").unwrap().next_hop,
        Some(IpAddr::V6(node_ll))
    );
    assert_eq!(
        find(&got, "2001:db8:244:1::/64").unwrap().next_hop,
        Some(IpAddr::V6(node_ll))
    );
    Ok(())
}
