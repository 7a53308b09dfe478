//! Graceful restart (RFC 4724) with bgpd as the restarting speaker: the ToR keeps our routes
//! and keeps forwarding while bgpd restarts (tests named `<peer>_bgp_gr_*`).

use std::net::IpAddr;
use std::time::Duration;

use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// BIRD as the ToR, installing what it learns into its kernel, pings a pod address behind
/// the node at 100/s while bgpd is stopped (SIGTERM, then SIGKILL) and started again.
#[test]
fn bird_bgp_gr_restart_loses_no_packets() -> Result<()> {
    let lab = Lab::new("bird_gr")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    node.add_loopback_addr("10.244.1.1/32")?;

    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101));
    bc.extra = "protocol kernel { ipv4 { export all; }; }\n".into();
    let bird = Bird::start(&tor, &bc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 65000))
        .advert("10.244.1.0/24", &["65101:100"], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    let before = bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;
    cmd::wait_for(
        "the route in the ToR's kernel",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(tor
                .ip(&["route", "show", "10.244.1.0/24"])?
                .contains("via 192.0.2.2")
                .then_some(()))
        },
    )?;
    assert_eq!(
        tor.ping("10.244.1.1", 3, Duration::from_millis(100))?
            .received,
        3
    );

    for (how, stop) in [("SIGTERM", true), ("SIGKILL", false)] {
        let pinger = {
            let tor = tor.clone();
            std::thread::spawn(move || tor.ping("10.244.1.1", 500, Duration::from_millis(10)))
        };
        std::thread::sleep(Duration::from_millis(500));
        if stop {
            bgpd.process.terminate();
        } else {
            bgpd.process.kill();
        }
        // While bgpd is down the ToR keeps the route (stale) and the kernel route stays.
        std::thread::sleep(Duration::from_secs(1));
        let held = bird.routes_from("node")?;
        assert!(
            find(&held, "10.244.1.0/24").is_some(),
            "{how}: the ToR dropped our route: {held:?}"
        );
        assert!(
            tor.ip(&["route", "show", "10.244.1.0/24"])?
                .contains("via 192.0.2.2")
        );
        bgpd.process.restart()?;
        bgpd.wait_established("tor", T)?;
        let stats = pinger.join().expect("ping thread")?;
        assert_eq!(
            stats.lost(),
            0,
            "{how}: packets lost during the restart: {stats:?}"
        );
        let after = bird.wait_routes("node", T, |r| find(r, "10.244.1.0/24").is_some())?;
        assert_eq!(after, before, "{how}: state after the restart differs");
    }
    // The graceful stop left the R bit for the start after SIGTERM; BIRD saw a restart.
    assert!(
        bgpd.process
            .log_tail(200_000)
            .contains("restarting gracefully"),
        "bgpd did not notice its graceful restart"
    );
    Ok(())
}

/// The same with FRR (bgpd + zebra installing into the ToR's kernel) as the helper.
#[test]
fn frr_bgp_gr_restart_loses_no_packets() -> Result<()> {
    let lab = Lab::new("frr_gr")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    node.add_loopback_addr("10.244.1.1/32")?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    fc.with_zebra = true;
    let frr = Frr::start(&tor, &fc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 65000))
        .advert("10.244.1.0/24", &[], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    let before = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    cmd::wait_for(
        "the route in the ToR's kernel",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(tor
                .ip(&["route", "show", "10.244.1.0/24"])?
                .contains("via 192.0.2.2")
                .then_some(()))
        },
    )?;
    for (how, stop) in [("SIGTERM", true), ("SIGKILL", false)] {
        let pinger = {
            let tor = tor.clone();
            std::thread::spawn(move || tor.ping("10.244.1.1", 500, Duration::from_millis(10)))
        };
        std::thread::sleep(Duration::from_millis(500));
        if stop {
            bgpd.process.terminate();
        } else {
            bgpd.process.kill();
        }
        std::thread::sleep(Duration::from_secs(1));
        let held = frr.routes_from(ip("192.0.2.2"))?;
        assert!(
            find(&held, "10.244.1.0/24").is_some(),
            "{how}: FRR dropped our route"
        );
        bgpd.process.restart()?;
        bgpd.wait_established("tor", T)?;
        let stats = pinger.join().expect("ping thread")?;
        assert_eq!(
            stats.lost(),
            0,
            "{how}: packets lost during the restart: {stats:?}"
        );
        let after = frr.wait_routes(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
        assert_eq!(after, before, "{how}: state after the restart differs");
    }
    Ok(())
}

/// GoBGP as the helper: it keeps our route (stale) while bgpd is down and has it, fresh,
/// after the restart.
#[test]
fn gobgp_bgp_gr_restart_keeps_routes() -> Result<()> {
    let lab = Lab::new("gobgp_gr")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut gc = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap());
    let mut n = GobgpNeighbor::new(ip("192.0.2.2"), 65101);
    n.graceful_restart = true;
    gc.neighbors.push(n);
    let gobgp = Gobgp::start(&tor, &gc)?;
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor", "192.0.2.1", 65000))
        .advert("10.244.1.0/24", &[], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor", T)?;
    let before = gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
    for (how, stop) in [("SIGTERM", true), ("SIGKILL", false)] {
        if stop {
            bgpd.process.terminate();
        } else {
            bgpd.process.kill();
        }
        std::thread::sleep(Duration::from_secs(2));
        assert_ne!(gobgp.neighbor_state(ip("192.0.2.2"))?, "Established");
        let held = gobgp.adj_in(ip("192.0.2.2"))?;
        assert!(
            find(&held, "10.244.1.0/24").is_some(),
            "{how}: GoBGP dropped our route"
        );
        bgpd.process.restart()?;
        gobgp.wait_established(ip("192.0.2.2"), T)?;
        let after =
            gobgp.wait_adj_in(ip("192.0.2.2"), T, |r| find(r, "10.244.1.0/24").is_some())?;
        assert_eq!(after, before, "{how}");
    }
    Ok(())
}
