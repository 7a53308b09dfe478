//! BFD (RFC 5880/5881 single hop) between bgpd and the ToR's BFD: FRR's bfdd and BIRD's
//! `protocol bfd` (tests named `frr_bfd_*` and `bird_bfd_*`). At 100 ms × 3 a cut of BFD and
//! BGP (nftables drops on the node, the link stays up) must take bgpd's session down within
//! 0.5 s although the hold time is 9 s, and the session must come back after the cut.
//!
//! Limits: the lab has no netem, so the "link failure" is an nftables drop of UDP 3784 and
//! TCP 179 in the node's namespace (both directions); a carrier loss would also be noticed by
//! the kernel, which would not prove that BFD did the work.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::bgp::SessionState;
use interop_tests::bfd::{drop_bfd_and_bgp, restore_bfd_and_bgp};
use interop_tests::*;

const T: Duration = Duration::from_secs(30);
const FAST: BfdTimers = BfdTimers {
    min_tx_ms: 100,
    min_rx_ms: 100,
    multiplier: 3,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn topology(name: &str) -> Result<(Lab, Host, Host)> {
    let lab = Lab::new(name)?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;
    Ok((lab, tor, node))
}

fn bgpd_with_bfd(node: &Host, address: &str) -> Result<Bgpd> {
    let mut p = BgpdPeer::new("tor", address, 65000);
    if address.contains(':') {
        p.families = vec!["ipv6-unicast".into()];
    }
    p.extra = format!(
        "bfd = true\nbfd_min_tx_ms = {}\nbfd_min_rx_ms = {}\nbfd_multiplier = {}\n",
        FAST.min_tx_ms, FAST.min_rx_ms, FAST.multiplier
    );
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(p)
        .advert("10.244.1.0/24", &[], &[]);
    Bgpd::start(node, &cfg.render())
}

/// Cuts BFD and BGP on the node and returns how long bgpd took to see its session down.
fn cut_and_time_down(bgpd: &Bgpd, node: &Host) -> Result<Duration> {
    let t0 = Instant::now();
    drop_bfd_and_bgp(node)?;
    loop {
        let p = bgpd.peer("tor")?;
        if p.state() != SessionState::Established {
            let took = t0.elapsed();
            assert!(
                p.last_error.starts_with("BFD down"),
                "session went down for another reason: {:?}",
                p.last_error
            );
            return Ok(took);
        }
        if t0.elapsed() > Duration::from_secs(5) {
            panic!("bgpd's session still Established 5 s after the cut");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn frr_bfd_100ms_x3_takes_bgp_down_within_half_a_second() -> Result<()> {
    let (lab, tor_h, node_h) = topology("frr_bfd_cut")?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    let mut n = FrrNeighbor::new(ip("192.0.2.2"), 65101);
    n.bfd = true;
    fc.neighbors.push(n);
    fc.networks = vec!["198.51.100.0/24".into()];
    fc.bfd = Some(FAST);
    let frr = Frr::start(&tor_h, &fc)?;
    let bgpd = bgpd_with_bfd(&node_h, "192.0.2.1")?;

    let t_up = Instant::now();
    bgpd.wait_established("tor", T)?;
    frr.wait_established(ip("192.0.2.2"), T)?;
    // bfdd's view: Up with our 100 ms timers (after the Poll/Final that leaves the slow rate).
    let peer = wait_for_frr_fast(&frr)?;
    eprintln!(
        "FRR BFD up {:?} after start: {}",
        t_up.elapsed(),
        serde_json::to_string(&peer).unwrap_or_default()
    );

    let took = cut_and_time_down(&bgpd, &node_h)?;
    eprintln!("bgpd's session down {took:?} after the cut (hold time 9 s)");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    frr.wait_bfd(ip("192.0.2.2"), "down", Duration::from_secs(3))?;

    restore_bfd_and_bgp(&node_h)?;
    let t_back = Instant::now();
    bgpd.wait_established("tor", T)?;
    frr.wait_bfd(ip("192.0.2.2"), "up", T)?;
    eprintln!(
        "BGP and BFD back {:?} after the cut ended",
        t_back.elapsed()
    );
    drop(lab);
    Ok(())
}

fn wait_for_frr_fast(frr: &Frr) -> Result<serde_json::Value> {
    let peer = ip("192.0.2.2");
    let deadline = Instant::now() + T;
    loop {
        let p = frr.wait_bfd(peer, "up", T)?;
        if p["remote-transmit-interval"].as_u64() == Some(100)
            && p["remote-receive-interval"].as_u64() == Some(100)
            && p["remote-detect-multiplier"].as_u64() == Some(3)
        {
            return Ok(p);
        }
        assert!(Instant::now() < deadline, "FRR never saw 100 ms × 3: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// bgpd's API view of the ToR's BFD session, once its state is `state`.
fn bgpd_bfd(bgpd: &Bgpd, state: &str) -> Result<api::bgp::Bfd> {
    cmd::wait_for(
        &format!("the API's BFD state {state}"),
        Duration::from_secs(5),
        Duration::from_millis(20),
        |last| {
            let b = bgpd.peer("tor")?.bfd;
            *last = format!("{b:?}");
            Ok(b.filter(|b| b.state == state))
        },
    )
}

fn bird_bfd_cut(name: &str, tor_addr: &str, node_addr: &str) -> Result<()> {
    let (lab, tor_h, node_h) = topology(name)?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip(node_addr), 65101);
    p.hold_time = Some(9);
    p.bfd = true;
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
    bc.bfd = Some(FAST);
    let bird = Bird::start(&tor_h, &bc)?;
    let bgpd = bgpd_with_bfd(&node_h, tor_addr)?;

    let t_up = Instant::now();
    bgpd.wait_established("tor", T)?;
    bird.wait_established("node", T)?;
    bird.wait_bfd(ip(node_addr), "Up", T)?;
    // Let the Poll/Final exchange move both sides to 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    eprintln!(
        "BIRD BFD up {:?} after start:\n{}",
        t_up.elapsed(),
        bird.birdc("show bfd sessions")?
    );

    // The API shows the BFD session: Up both ways, BIRD's discriminator, 100 ms × 3.
    let b = bgpd_bfd(&bgpd, "Up")?;
    assert_eq!(b.remote_state, "Up", "{b:?}");
    assert_ne!(b.remote_discriminator, 0, "{b:?}");
    assert_eq!((b.detect_mult, b.remote_detect_mult), (3, 3), "{b:?}");
    assert_eq!(b.required_min_rx_ms, 100, "{b:?}");

    let took = cut_and_time_down(&bgpd, &node_h)?;
    eprintln!("bgpd's session down {took:?} after the cut (hold time 9 s)");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    bird.wait_bfd(ip(node_addr), "Down", Duration::from_secs(3))?;
    let b = bgpd_bfd(&bgpd, "Down")?;
    assert_eq!(b.diag, "Control Detection Time Expired", "{b:?}");

    restore_bfd_and_bgp(&node_h)?;
    let t_back = Instant::now();
    bgpd.wait_established("tor", T)?;
    bird.wait_bfd(ip(node_addr), "Up", T)?;
    eprintln!(
        "BGP and BFD back {:?} after the cut ended",
        t_back.elapsed()
    );
    drop(lab);
    Ok(())
}

#[test]
fn bird_bfd_100ms_x3_takes_bgp_down_within_half_a_second() -> Result<()> {
    bird_bfd_cut("bird_bfd_cut", "192.0.2.1", "192.0.2.2")
}

#[test]
fn bird_bfd_ipv6_takes_bgp_down_within_half_a_second() -> Result<()> {
    bird_bfd_cut("bird_bfd_cut6", "2001:db8::1", "2001:db8::2")
}

/// The issue's scenario: a node dual-homed to two BIRD ToRs with BFD at 100 ms × 3 and learned
/// routes in its kernel (ECMP). ToR A goes silent: bgpd's session to A is down within 0.5 s and
/// the kernel route moves to B alone; after the cut it comes back to ECMP.
#[test]
fn bird_bfd_cut_moves_kernel_routes_to_the_other_tor() -> Result<()> {
    let lab = Lab::new("bird_bfd_ecmp")?;
    let tor_a = lab.host("tora")?;
    let tor_b = lab.host("torb")?;
    let node = lab.host("node")?;
    lab.link(&tor_a, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    lab.link(&tor_b, &["203.0.113.1/24"], &node, &["203.0.113.2/24"])?;
    let mut birds = Vec::new();
    for (host, id, asn, node_ip) in [
        (&tor_a, "192.0.2.1", 65001, "192.0.2.2"),
        (&tor_b, "203.0.113.1", 65002, "203.0.113.2"),
    ] {
        let mut bc = BirdConfig::new(id.parse().unwrap());
        bc.bfd = Some(FAST);
        let mut p = BirdPeer::new("node", asn, ip(node_ip), 65101);
        p.bfd = true;
        bc.peers.push(p);
        bc.statics = vec!["198.51.100.0/24".into()];
        birds.push(Bird::start(host, &bc)?);
    }
    let bfd = format!(
        "bfd = true\nbfd_min_tx_ms = {}\nbfd_min_rx_ms = {}\nbfd_multiplier = {}\n",
        FAST.min_tx_ms, FAST.min_rx_ms, FAST.multiplier
    );
    let mut a = BgpdPeer::new("tor-a", "192.0.2.1", 65001);
    a.extra = format!("local_address = \"192.0.2.2\"\n{bfd}");
    let mut b = BgpdPeer::new("tor-b", "203.0.113.1", 65002);
    b.extra = format!("local_address = \"203.0.113.2\"\n{bfd}");
    let toml = format!(
        "{}\n[bgp.fib]\n",
        BgpdConfig::new(65101, "192.0.2.2").peer(a).peer(b).render()
    );
    let bgpd = Bgpd::start(&node, &toml)?;
    bgpd.wait_established("tor-a", T)?;
    bgpd.wait_established("tor-b", T)?;
    for (bird, node_ip) in birds.iter().zip(["192.0.2.2", "203.0.113.2"]) {
        bird.wait_established("node", T)?;
        bird.wait_bfd(ip(node_ip), "Up", T)?;
    }
    // Let the Poll/Final exchange move both sides to 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let route = || node.ip(&["route", "show", "198.51.100.0/24"]);
    cmd::wait_for(
        "an ECMP route via both ToRs",
        T,
        Duration::from_millis(50),
        |last| {
            let r = route()?;
            *last = r.clone();
            Ok((r.contains("via 192.0.2.1") && r.contains("via 203.0.113.1")).then_some(()))
        },
    )?;

    let t0 = Instant::now();
    drop_bfd_and_bgp(&tor_a)?;
    cmd::wait_for(
        "tor-a down by BFD",
        Duration::from_millis(500),
        Duration::from_millis(5),
        |last| {
            let p = bgpd.peer("tor-a")?;
            *last = format!("{:?} {}", p.state(), p.last_error);
            Ok((p.state() != SessionState::Established).then_some(()))
        },
    )?;
    let down = t0.elapsed();
    assert!(
        bgpd.peer("tor-a")?.last_error.starts_with("BFD down"),
        "down after {down:?}"
    );
    cmd::wait_for(
        "the kernel route via B only",
        Duration::from_secs(1),
        Duration::from_millis(10),
        |last| {
            let r = route()?;
            *last = r.clone();
            Ok((r.contains("via 203.0.113.1") && !r.contains("192.0.2.1")).then_some(()))
        },
    )?;
    assert_eq!(bgpd.peer("tor-b")?.state(), SessionState::Established);

    restore_bfd_and_bgp(&tor_a)?;
    bgpd.wait_established("tor-a", T)?;
    cmd::wait_for("ECMP again", T, Duration::from_millis(50), |last| {
        let r = route()?;
        *last = r.clone();
        Ok((r.contains("via 192.0.2.1") && r.contains("via 203.0.113.1")).then_some(()))
    })?;
    Ok(())
}

/// RFC 5883: an eBGP multihop session through a router, with multihop BFD on UDP 4784 at
/// 100 ms × 3 against BIRD. The router stops forwarding: bgpd's session is down within half a
/// second (hold time 9 s), for BFD.
#[test]
fn bird_bfd_multihop_takes_bgp_down_within_half_a_second() -> Result<()> {
    let lab = Lab::new("bird_bfd_mh")?;
    let tor = lab.host("tor")?;
    let r = lab.host("r")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &r, &["192.0.2.254/24"])?;
    lab.link(&r, &["198.18.1.1/24"], &node, &["198.18.1.2/24"])?;
    tor.route_add("198.18.1.0/24 via 192.0.2.254")?;
    node.route_add("192.0.2.0/24 via 198.18.1.1")?;

    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip("198.18.1.2"), 65101);
    p.local_addr = Some(ip("192.0.2.1"));
    p.multihop = Some(2);
    p.hold_time = Some(9);
    p.bfd = true;
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into()];
    bc.extra = format!(
        "protocol bfd {{\n  multihop {{ min rx interval {} ms; min tx interval {} ms; multiplier {}; }};\n}}\n",
        FAST.min_rx_ms, FAST.min_tx_ms, FAST.multiplier
    );
    let bird = Bird::start(&tor, &bc)?;
    let mut peer = BgpdPeer::new("tor", "192.0.2.1", 65000);
    peer.extra = format!(
        "local_address = \"198.18.1.2\"\nmultihop_ttl = 2\nbfd = true\nbfd_min_tx_ms = {}\nbfd_min_rx_ms = {}\nbfd_multiplier = {}\n",
        FAST.min_tx_ms, FAST.min_rx_ms, FAST.multiplier
    );
    let bgpd = Bgpd::start(
        &node,
        &BgpdConfig::new(65101, "198.18.1.2")
            .peer(peer)
            .advert("10.244.1.0/24", &[], &[])
            .render(),
    )?;
    bgpd.wait_established("tor", T)?;
    bird.wait_established("node", T)?;
    bird.wait_bfd(ip("198.18.1.2"), "Up", T)?;
    std::thread::sleep(Duration::from_millis(500));

    // The router in between stops forwarding.
    let script = r.path("cut.nft");
    std::fs::write(
        &script,
        "table inet mh_cut {\n  chain cut { type filter hook forward priority 0; policy drop; }\n}\n",
    )
    .unwrap();
    let t0 = Instant::now();
    r.exec("nft", &["-f", &script.to_string_lossy()])?;
    let took = loop {
        let p = bgpd.peer("tor")?;
        if p.state() != SessionState::Established {
            assert!(
                p.last_error.starts_with("BFD down"),
                "session went down for another reason: {:?}",
                p.last_error
            );
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still Established 5 s after the cut"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("multihop: bgpd's session down {took:?} after the cut (hold time 9 s)");
    assert!(took < Duration::from_millis(500), "took {took:?}");

    r.exec("nft", &["delete", "table", "inet", "mh_cut"])?;
    bgpd.wait_established("tor", T)?;
    bird.wait_bfd(ip("198.18.1.2"), "Up", T)?;
    Ok(())
}
