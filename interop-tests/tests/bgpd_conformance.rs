//! RFC conformance against real peers (`<peer>_bgp_conformance_*`), listed in
//! docs/bgp-conformance.md. bgpd runs on `node`, the ToR on `tor`, in namespaces of their own.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::bgp::{RibKind, SessionState};
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `prefix` is in the node's kernel table via the ToR.
fn in_kernel(node: &Host, prefix: &str) -> Result<bool> {
    Ok(node
        .ip(&["route", "show", prefix])?
        .contains("via 192.0.2.1"))
}

/// bgpd on `node` installing learned routes, peered with the ToR at 192.0.2.1, once the ToR's
/// route is in the kernel.
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
        "the ToR's route in the node's kernel",
        T,
        Duration::from_millis(100),
        |_| Ok(in_kernel(node, "198.51.100.0/24")?.then_some(())),
    )?;
    Ok(bgpd)
}

fn bird_tor(lab: &Lab, graceful_restart: bool) -> Result<(Host, Host, Bird, BirdConfig)> {
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101);
    p.graceful_restart = graceful_restart;
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into()];
    let bird = Bird::start(&tor, &bc)?;
    Ok((tor, node, bird, bc))
}

/// RFC 4724 §4.2 (and §3: the address families in the capability are those whose state the
/// sender preserves): BIRD's default "graceful restart aware" sends the capability with a
/// restart time and no address family. When that ToR crashes its routes must leave the node's
/// kernel with the session, not after the restart time (120 s).
#[test]
fn bird_bgp_conformance_gr_aware_tor_crash_removes_kernel_routes() -> Result<()> {
    let lab = Lab::new("conf_gr_aware")?;
    let (_tor, node, bird, _) = bird_tor(&lab, false)?;
    let bgpd = node_with_fib(&node)?;
    // The case under test: the ToR did send a GR capability (aware), just with no family.
    let caps = bgpd.peer("tor")?.capabilities;
    assert!(
        caps.iter().any(|c| c == "graceful-restart"),
        "BIRD sent no GR capability at all: {caps:?}"
    );

    // The ToR crashes: the kernel closes its TCP connection, no NOTIFICATION.
    bird.process.kill();
    let t = Instant::now();
    cmd::wait_for(
        "the crashed ToR's route out of the kernel",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |_| Ok((!in_kernel(&node, "198.51.100.0/24")?).then_some(())),
    )?;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the route stayed {:?}",
        t.elapsed()
    );
    assert_ne!(bgpd.peer("tor")?.state(), SessionState::Established);
    let kept = bgpd.api_routes(RibKind::AdjIn, "tor")?;
    assert!(kept.is_empty(), "routes kept from the aware ToR: {kept:?}");
    Ok(())
}

/// RFC 4724 §4.2 with a ToR that lists IPv4 unicast (`graceful restart on`): its routes are kept
/// across its crash, shown `stale: true` in the API (Adj-RIB-In and Loc-RIB) and stay in the
/// kernel; once it is back and re-sent them, they are fresh again.
#[test]
fn bird_bgp_conformance_gr_stale_routes_flagged_in_the_api() -> Result<()> {
    let lab = Lab::new("conf_gr_stale")?;
    let (_tor, node, bird, _) = bird_tor(&lab, true)?;
    let bgpd = node_with_fib(&node)?;
    let fresh = bgpd.api_routes(RibKind::AdjIn, "tor")?;
    assert!(
        fresh
            .iter()
            .any(|r| r.prefix == "198.51.100.0/24" && !r.stale),
        "{fresh:?}"
    );

    bird.process.kill();
    let stale = cmd::wait_for(
        "the ToR's route kept as stale",
        T,
        Duration::from_millis(100),
        |last| {
            let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
            *last = format!("{r:?}");
            Ok(r.iter()
                .any(|r| r.prefix == "198.51.100.0/24" && r.stale)
                .then_some(r))
        },
    )?;
    assert_eq!(stale.len(), 1, "{stale:?}");
    let loc = bgpd.api_routes(RibKind::Loc, "")?;
    let best = loc
        .iter()
        .find(|r| r.prefix == "198.51.100.0/24")
        .expect("the stale route left the Loc-RIB");
    assert!(best.stale && best.best, "{best:?}");
    assert!(
        in_kernel(&node, "198.51.100.0/24")?,
        "the stale route left the kernel"
    );

    bird.process.restart()?;
    bgpd.wait_established("tor", T)?;
    cmd::wait_for(
        "the route fresh again",
        T,
        Duration::from_millis(100),
        |last| {
            let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
            *last = format!("{r:?}");
            Ok(r.iter()
                .any(|r| r.prefix == "198.51.100.0/24" && !r.stale)
                .then_some(()))
        },
    )?;
    Ok(())
}

/// GoBGP as the ToR with graceful restart on; `families`: its capability lists IPv4 unicast.
fn gobgp_tor(lab: &Lab, families: bool) -> Result<(Host, Gobgp)> {
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut gc = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap());
    let mut n = GobgpNeighbor::new(ip("192.0.2.2"), 65101);
    n.graceful_restart = true;
    n.graceful_restart_families = families;
    gc.neighbors.push(n);
    let gobgp = Gobgp::start(&tor, &gc)?;
    gobgp.announce("198.51.100.0/24", &[], &[])?;
    Ok((node, gobgp))
}

/// RFC 4724 §3/§4.2 with GoBGP: graceful restart enabled but no family configured for it sends
/// the capability with no address family; the crashed ToR's route leaves the kernel at once.
#[test]
fn gobgp_bgp_conformance_gr_without_families_tor_crash_removes_kernel_routes() -> Result<()> {
    let lab = Lab::new("conf_gobgp_gr0")?;
    let (node, gobgp) = gobgp_tor(&lab, false)?;
    let bgpd = node_with_fib(&node)?;
    let caps = bgpd.peer("tor")?.capabilities;
    assert!(
        caps.iter().any(|c| c == "graceful-restart"),
        "GoBGP sent no GR capability at all: {caps:?}"
    );
    gobgp.process.kill();
    let t = Instant::now();
    cmd::wait_for(
        "the crashed ToR's route out of the kernel",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |_| Ok((!in_kernel(&node, "198.51.100.0/24")?).then_some(())),
    )?;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the route stayed {:?}",
        t.elapsed()
    );
    Ok(())
}

/// The same ToR listing IPv4 unicast in its capability: the route stays in the kernel across
/// the crash, stale in the API.
#[test]
fn gobgp_bgp_conformance_gr_listing_ipv4_keeps_the_kernel_route_stale() -> Result<()> {
    let lab = Lab::new("conf_gobgp_gr4")?;
    let (node, gobgp) = gobgp_tor(&lab, true)?;
    let bgpd = node_with_fib(&node)?;
    gobgp.process.kill();
    cmd::wait_for(
        "the route kept as stale",
        T,
        Duration::from_millis(50),
        |last| {
            let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
            *last = format!("{r:?}");
            Ok(r.iter()
                .any(|r| r.prefix == "198.51.100.0/24" && r.stale)
                .then_some(()))
        },
    )?;
    assert_ne!(bgpd.peer("tor")?.state(), SessionState::Established);
    for _ in 0..20 {
        assert!(
            in_kernel(&node, "198.51.100.0/24")?,
            "the kernel route went while the ToR restarts"
        );
        let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
        assert!(
            r.iter().any(|r| r.prefix == "198.51.100.0/24" && r.stale),
            "{r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// RFC 4271 §6.3 (MAY, on by default as in FRR): BIRD as a route server (`rs client`) does not
/// prepend its AS, so its route reaches bgpd with an AS_PATH that does not start with the
/// ToR's AS: ignored, logged, the session stays. With `enforce_first_as = false` (reloaded,
/// which restarts the session) the same route is accepted, with its empty AS_PATH.
#[test]
fn bird_bgp_conformance_enforce_first_as_ignores_route_server_routes_unless_off() -> Result<()> {
    let lab = Lab::new("conf_first_as")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101);
    p.rs_client = true;
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into()];
    let _bird = Bird::start(&tor, &bc)?;
    let mut peer = BgpdPeer::new("tor", "192.0.2.1", 65000);
    peer.extra = "enforce_first_as = true\n".into();
    let bgpd = Bgpd::start(
        &node,
        &BgpdConfig::new(65101, "192.0.2.2").peer(peer).render(),
    )?;
    bgpd.wait_established("tor", T)?;
    cmd::wait_for(
        "bgpd to log the ignored route",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(bgpd
                .process
                .log_tail(1 << 20)
                .contains("does not start with the peer's AS")
                .then_some(()))
        },
    )?;
    let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
    assert!(r.is_empty(), "a route without the ToR's AS first: {r:?}");
    assert_eq!(bgpd.peer("tor")?.state(), SessionState::Established);

    let conf = std::fs::read_to_string(&bgpd.config).unwrap();
    let off = conf.replace("enforce_first_as = true", "enforce_first_as = false");
    assert_ne!(conf, off);
    std::fs::write(&bgpd.config, off).unwrap();
    assert_eq!(bgpd.reload()?, vec!["tor".to_string()]);
    let got = cmd::wait_for(
        "the route accepted with the check off",
        T,
        Duration::from_millis(100),
        |last| {
            let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
            *last = format!("{r:?}");
            Ok(r.into_iter().find(|r| r.prefix == "198.51.100.0/24"))
        },
    )?;
    assert!(got.as_path.is_empty(), "{got:?}");
    assert_eq!(got.next_hop, "192.0.2.1");
    Ok(())
}

/// RFC 8538 with FRR (`bgp graceful-restart`, which sends the N bit, as bgpd does): FRR's hold
/// timer expires (the node's packets are dropped on the ToR), FRR sends Hold Timer Expired;
/// with the N bit exchanged that NOTIFICATION is a graceful end, so bgpd keeps the ToR's
/// route, stale, in the kernel (RFC 4724 alone would remove it).
#[test]
fn frr_bgp_conformance_graceful_notification_keeps_routes_after_hold_timer_expiry() -> Result<()> {
    let lab = Lab::new("conf_frr_n")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut fc = FrrConfig::new(65000, "192.0.2.1".parse().unwrap());
    fc.neighbors.push(FrrNeighbor::new(ip("192.0.2.2"), 65101));
    fc.networks = vec!["198.51.100.0/24".into()];
    fc.extra = " bgp graceful-restart\n neighbor 192.0.2.2 timers 1 3\n".into();
    let _frr = Frr::start(&tor, &fc)?;
    let bgpd = node_with_fib(&node)?;
    let caps = bgpd.peer("tor")?.capabilities;
    assert!(
        caps.iter().any(|c| c == "graceful-notification"),
        "FRR and bgpd did not both send the N bit: {caps:?}"
    );

    // FRR stops hearing the node: its hold timer (3 s) expires and it sends the NOTIFICATION.
    let script = tor.path("cut.nft");
    std::fs::write(
        &script,
        "table inet conf_cut {\n chain input {\n  type filter hook input priority 0;\n  \
         ip saddr 192.0.2.2 meta l4proto tcp drop\n }\n}\n",
    )
    .unwrap();
    tor.exec("nft", &["-f", &script.to_string_lossy()])?;
    // Whichever hold timer runs out first (FRR's, or bgpd's once FRR's TCP stalls without
    // ACKs), the session ends with a Hold Timer Expired NOTIFICATION, not a TCP loss.
    cmd::wait_for(
        "the session down by Hold Timer Expired",
        Duration::from_secs(15),
        Duration::from_millis(50),
        |last| {
            let log = bgpd.process.log_tail(1 << 20);
            let down: Vec<&str> = log.lines().filter(|l| l.contains("session down")).collect();
            *last = down.join("\n");
            Ok(down
                .iter()
                .any(|l| l.contains("Notification") && l.contains("code: 4"))
                .then_some(()))
        },
    )?;
    for _ in 0..20 {
        assert!(
            in_kernel(&node, "198.51.100.0/24")?,
            "the route left the kernel after a graceful NOTIFICATION"
        );
        let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
        assert!(
            r.iter().any(|r| r.prefix == "198.51.100.0/24" && r.stale),
            "{r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tor.exec("nft", &["delete", "table", "inet", "conf_cut"])?;
    bgpd.wait_established("tor", T)?;
    cmd::wait_for(
        "the route fresh again",
        T,
        Duration::from_millis(100),
        |last| {
            let r = bgpd.api_routes(RibKind::AdjIn, "tor")?;
            *last = format!("{r:?}");
            Ok(r.iter()
                .any(|r| r.prefix == "198.51.100.0/24" && !r.stale)
                .then_some(()))
        },
    )?;
    Ok(())
}
