//! The lab is real: BGP sessions between real daemons, prefixes exchanged both ways.

use std::net::IpAddr;
use std::time::Duration;

use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn bird_gobgp_ebgp_exchange_v4_v6() -> Result<()> {
    let lab = Lab::new("bird_gobgp")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;

    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node4", 65001, ip("192.0.2.2"), 65002));
    bc.peers
        .push(BirdPeer::new("node6", 65001, ip("2001:db8::2"), 65002));
    bc.statics = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
    let bird = Bird::start(&tor, &bc)?;

    let mut gc = GobgpConfig::new(65002, "192.0.2.2".parse().unwrap());
    gc.neighbors
        .push(GobgpNeighbor::new(ip("192.0.2.1"), 65001));
    gc.neighbors
        .push(GobgpNeighbor::new(ip("2001:db8::1"), 65001));
    let gobgp = Gobgp::start(&node, &gc)?;
    gobgp.announce("203.0.113.0/24", &["65002:7"], &["65002:1:2"])?;
    gobgp.announce("2001:db8:200::/48", &[], &[])?;

    bird.wait_established("node4", T)?;
    bird.wait_established("node6", T)?;
    gobgp.wait_established(ip("192.0.2.1"), T)?;

    // Node → ToR, with the attributes read from BIRD's own CLI.
    let r4 = bird.wait_routes("node4", T, |r| find(r, "203.0.113.0/24").is_some())?;
    let r = find(&r4, "203.0.113.0/24").unwrap();
    assert_eq!(r.as_path, vec![65002]);
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.communities, vec![(65002, 7)]);
    assert_eq!(r.large_communities, vec![(65002, 1, 2)]);
    let r6 = bird.wait_routes("node6", T, |r| find(r, "2001:db8:200::/48").is_some())?;
    assert_eq!(
        find(&r6, "2001:db8:200::/48").unwrap().next_hop,
        Some(ip("2001:db8::2"))
    );

    // ToR → node.
    let a4 = gobgp.wait_adj_in(ip("192.0.2.1"), T, |r| find(r, "198.51.100.0/24").is_some())?;
    let r = find(&a4, "198.51.100.0/24").unwrap();
    assert_eq!(r.as_path, vec![65001]);
    assert_eq!(r.next_hop, Some(ip("192.0.2.1")));
    let a6 = gobgp.wait_adj_in(ip("2001:db8::1"), T, |r| {
        find(r, "2001:db8:100::/48").is_some()
    })?;
    assert_eq!(find(&a6, "2001:db8:100::/48").unwrap().as_path, vec![65001]);

    // Withdraw reaches the ToR.
    gobgp.withdraw("203.0.113.0/24")?;
    bird.wait_routes("node4", T, |r| find(r, "203.0.113.0/24").is_none())?;
    Ok(())
}

#[test]
fn frr_bird_ebgp_exchange_md5() -> Result<()> {
    let lab = Lab::new("frr_bird")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;

    let mut fc = FrrConfig::new(65003, "192.0.2.1".parse().unwrap());
    let mut n = FrrNeighbor::new(ip("192.0.2.2"), 65001);
    n.password = Some("lab-md5".into());
    fc.neighbors.push(n);
    fc.networks = vec!["198.51.100.0/24".into()];
    let frr = Frr::start(&tor, &fc)?;

    let mut bc = BirdConfig::new("192.0.2.2".parse().unwrap());
    let mut p = BirdPeer::new("tor", 65001, ip("192.0.2.1"), 65003);
    p.password = Some("lab-md5".into());
    bc.peers.push(p);
    bc.statics = vec!["203.0.113.0/24".into()];
    let bird = Bird::start(&node, &bc)?;

    frr.wait_established(ip("192.0.2.2"), T)?;
    bird.wait_established("tor", T)?;

    let got = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "203.0.113.0/24").is_some())?;
    let r = find(&got, "203.0.113.0/24").unwrap();
    assert_eq!(r.as_path, vec![65001]);
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));

    let got = bird.wait_routes("tor", T, |r| find(r, "198.51.100.0/24").is_some())?;
    let r = find(&got, "198.51.100.0/24").unwrap();
    assert_eq!(r.as_path, vec![65003]);
    assert_eq!(r.next_hop, Some(ip("192.0.2.1")));
    Ok(())
}
