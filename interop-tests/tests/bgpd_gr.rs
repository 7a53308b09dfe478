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

/// `prefix` is in the node's kernel table via the ToR.
fn in_kernel(node: &Host, prefix: &str) -> Result<bool> {
    Ok(node
        .ip(&["route", "show", prefix])?
        .contains("via 192.0.2.1"))
}

/// bgpd on `node` installing learned routes, peered with the ToR at 192.0.2.1, once both of
/// the ToR's routes are in the kernel.
fn node_with_fib(node: &Host) -> Result<Bgpd> {
    let toml = format!(
        "{}\n[bgp.fib]\n",
        BgpdConfig::new(65101, "192.0.2.2")
            .peer(BgpdPeer::new("tor", "192.0.2.1", 65000))
            .render()
    );
    let bgpd = Bgpd::start(node, &toml)?;
    bgpd.wait_established("tor", T)?;
    cmd::wait_for(
        "both routes in the node's kernel",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(
                (in_kernel(node, "198.51.100.0/24")? && in_kernel(node, "198.18.5.0/24")?)
                    .then_some(()),
            )
        },
    )?;
    Ok(bgpd)
}

/// bgpd as the receiving speaker (helper): the ToR (BIRD, graceful restart on) crashes; the
/// node's kernel routes stay while it restarts; after its End-of-RIB only what it no longer
/// announces is removed.
#[test]
fn bird_bgp_gr_tor_restart_keeps_kernel_routes() -> Result<()> {
    let lab = Lab::new("bird_gr_helper")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101);
    p.graceful_restart = true;
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into(), "198.18.5.0/24".into()];
    let bird = Bird::start(&tor, &bc)?;
    let bgpd = node_with_fib(&node)?;
    let kernel = |p: &str| in_kernel(&node, p);

    // The ToR crashes; the next start announces one prefix less.
    bird.process.kill();
    bc.statics = vec!["198.51.100.0/24".into()];
    bird.write_config(&bc)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            kernel("198.51.100.0/24")?,
            "the kernel route vanished while the ToR restarted"
        );
    }
    assert_ne!(
        bgpd.peer("tor")?.state(),
        api::bgp::SessionState::Established
    );
    assert!(
        kernel("198.18.5.0/24")?,
        "stale routes are kept until End-of-RIB"
    );
    bird.process.restart()?;
    bgpd.wait_established("tor", T)?;
    // BIRD's restarted OPEN does not set the F bit, so at re-establishment the stale routes go
    // (RFC 4724 §4.2) and come back with its UPDATEs; the one it no longer has stays gone.
    cmd::wait_for(
        "the re-sent route back and the dropped one gone",
        T,
        Duration::from_millis(100),
        |_| Ok((kernel("198.51.100.0/24")? && !kernel("198.18.5.0/24")?).then_some(())),
    )?;
    Ok(())
}

/// RFC 4724 §4.2 with a ToR that preserves forwarding (FRR with `preserve-fw-state`, so its
/// restarted OPEN sets the F bit): across the ToR's crash and restart the node's kernel route
/// never goes away, not even at re-establishment, and a prefix the ToR no longer announces is
/// removed once its End-of-RIB arrives.
#[test]
fn frr_bgp_gr_tor_restart_keeps_kernel_routes_until_end_of_rib() -> Result<()> {
    let lab = Lab::new("frr_gr_helper")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    fc.networks = vec!["198.51.100.0/24".into(), "198.18.5.0/24".into()];
    fc.extra = " bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n".into();
    let frr = Frr::start(&tor, &fc)?;
    let bgpd = node_with_fib(&node)?;
    let kernel = |p: &str| in_kernel(&node, p);

    // The ToR's bgpd crashes; it comes back announcing one prefix less.
    frr.bgpd.kill();
    fc.networks = vec!["198.51.100.0/24".into()];
    std::fs::write(tor.path("frr.conf"), fc.render(tor.name())).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    frr.bgpd.restart()?;
    // Watch the kept route the whole time: through re-establishment to convergence.
    let start = std::time::Instant::now();
    let mut samples = 0;
    loop {
        assert!(
            kernel("198.51.100.0/24")?,
            "the kernel route went away during the ToR's restart (sample {samples})"
        );
        samples += 1;
        if !kernel("198.18.5.0/24")? {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the prefix the ToR dropped is still installed after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        bgpd.peer("tor")?.state(),
        api::bgp::SessionState::Established
    );
    assert!(samples > 10, "too few samples ({samples}) to say anything");
    // The F bit kept the stale routes past re-establishment (no early sweep).
    let log = bgpd.process.log_tail(1 << 20);
    assert!(
        !log.contains("did not preserve forwarding state"),
        "bgpd swept the stale routes at re-establishment"
    );
    assert!(
        log.contains("End-of-RIB received"),
        "no End-of-RIB from the restarted ToR"
    );
    Ok(())
}
