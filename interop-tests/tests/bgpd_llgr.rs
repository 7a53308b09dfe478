//! Long-lived graceful restart (RFC 9494) against BIRD 2, both ways (`bird_bgp_llgr_*`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::bgp::RibKind;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);
/// RFC 9494 §5 / RFC 8326 well-known community LLGR_STALE (65535:6).
const LLGR_STALE: (u16, u16) = (65535, 6);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bird_peer() -> BirdPeer {
    let mut p = BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101);
    p.graceful_restart = true;
    p.graceful_restart_time = Some(2);
    p.long_lived_stale_time = Some(60);
    p
}

fn node_config(fib: bool) -> String {
    let mut peer = BgpdPeer::new("tor", "192.0.2.1", 65000);
    peer.extra = "graceful_restart_time = 2\nlong_lived_stale_time = 60\n".into();
    let mut c = BgpdConfig::new(65101, "192.0.2.2")
        .peer(peer)
        .advert("10.244.1.0/24", &[], &[])
        .render();
    if fib {
        c.push_str("\n[bgp.fib]\n");
    }
    c
}

#[test]
fn bird_bgp_llgr_tor_down_keeps_routes_long_lived_stale() -> Result<()> {
    let lab = Lab::new("bird_llgr_helper")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers.push(bird_peer());
    bc.statics = vec!["198.51.100.0/24".into()];
    let bird = Bird::start(&tor, &bc)?;
    let bgpd = Bgpd::start(&node, &node_config(true))?;
    bgpd.wait_established("tor", T)?;
    let kernel =
        |p: &str| -> Result<bool> { Ok(node.ip(&["route", "show", p])?.contains("via 192.0.2.1")) };
    cmd::wait_for(
        "the route in the kernel",
        T,
        Duration::from_millis(100),
        |_| Ok(kernel("198.51.100.0/24")?.then_some(())),
    )?;

    // The ToR dies for longer than its restart time (2 s): the route stays, now long-lived
    // stale (tagged LLGR_STALE in bgpd's RIB), and keeps forwarding.
    bird.process.kill();
    let t = Instant::now();
    let tagged = bgpd.wait_routes(RibKind::AdjIn, "tor", Duration::from_secs(10), |r| {
        find(r, "198.51.100.0/24").is_some_and(|r| r.communities.contains(&LLGR_STALE))
    })?;
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "tagged before the restart time ran out"
    );
    assert!(find(&tagged, "198.51.100.0/24").is_some());
    // Long-lived stale routes are stale in the API too.
    let api = bgpd.api_routes(RibKind::AdjIn, "tor")?;
    assert!(
        api.iter().any(|r| r.prefix == "198.51.100.0/24" && r.stale),
        "{api:?}"
    );
    for _ in 0..10 {
        assert!(
            kernel("198.51.100.0/24")?,
            "the kernel route went during LLGR"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The ToR returns: its fresh route replaces the long-lived stale one.
    bird.process.restart()?;
    bgpd.wait_established("tor", T)?;
    bgpd.wait_routes(RibKind::AdjIn, "tor", T, |r| {
        find(r, "198.51.100.0/24").is_some_and(|r| !r.communities.contains(&LLGR_STALE))
    })?;
    let api = bgpd.api_routes(RibKind::AdjIn, "tor")?;
    assert!(
        api.iter()
            .any(|r| r.prefix == "198.51.100.0/24" && !r.stale),
        "the fresh route is still stale: {api:?}"
    );
    cmd::wait_for(
        "the route in the kernel again",
        T,
        Duration::from_millis(100),
        |_| Ok(kernel("198.51.100.0/24")?.then_some(())),
    )?;
    Ok(())
}

#[test]
fn bird_bgp_llgr_bgpd_down_tor_keeps_our_route() -> Result<()> {
    let lab = Lab::new("bird_llgr_restarting")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers.push(bird_peer());
    let bird = Bird::start(&tor, &bc)?;
    let bgpd = Bgpd::start(&node, &node_config(false))?;
    bgpd.wait_established("tor", T)?;
    bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;

    // bgpd crashes and stays away past the restart time it advertised (2 s): BIRD keeps the
    // route as long-lived stale, tagged LLGR_STALE, instead of dropping it.
    bgpd.process.kill();
    std::thread::sleep(Duration::from_secs(4));
    let routes = bird.routes_from("node")?;
    let r = find(&routes, "10.244.1.0/24").expect("BIRD dropped our route after the restart time");
    assert!(r.communities.contains(&LLGR_STALE), "{r:?}");

    // bgpd comes back: the route is fresh again.
    bgpd.process.restart()?;
    bird.wait_routes("node", T, |r| {
        find(r, "10.244.1.0/24").is_some_and(|r| !r.communities.contains(&LLGR_STALE))
    })?;
    Ok(())
}
