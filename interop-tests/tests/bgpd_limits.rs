//! Max-prefix per peer against GoBGP: teardown with Cease/Maximum Number of Prefixes Reached
//! (RFC 4486) and a hold-down; drop keeps the session and ignores the excess; both say why.

use std::net::IpAddr;
use std::time::Duration;

use api::bgp::{RibKind, SessionState};
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn setup(name: &str, limit: &str) -> Result<(Lab, Gobgp, Bgpd)> {
    let lab = Lab::new(name)?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let mut gc = GobgpConfig::new(65000, "192.0.2.1".parse().unwrap());
    gc.neighbors
        .push(GobgpNeighbor::new(ip("192.0.2.2"), 65101));
    let gobgp = Gobgp::start(&tor, &gc)?;
    for i in 0..5 {
        gobgp.announce(&format!("198.51.{i}.0/24"), &[], &[])?;
    }
    let mut p = BgpdPeer::new("tor", "192.0.2.1", 65000);
    p.extra = limit.into();
    let bgpd = Bgpd::start(&node, &BgpdConfig::new(65101, "192.0.2.2").peer(p).render())?;
    Ok((lab, gobgp, bgpd))
}

#[test]
fn gobgp_bgp_max_prefix_teardown_holds_the_session_down() -> Result<()> {
    let (_lab, gobgp, bgpd) = setup(
        "gobgp_maxpfx",
        "max_prefixes = 3\nmax_prefixes_action = \"teardown\"\nmax_prefixes_restart = 30\n",
    )?;
    let p = cmd::wait_for(
        "the max-prefix teardown",
        T,
        Duration::from_millis(100),
        |last| {
            let p = bgpd.peer("tor")?;
            *last = p.last_error.clone();
            Ok(p.last_error.contains("max-prefix").then_some(p))
        },
    )?;
    assert!(
        p.last_error
            .contains("limit 3; session torn down, restart in 30 s"),
        "{}",
        p.last_error
    );
    assert!(
        bgpd.process
            .log_tail(50_000)
            .contains("max-prefix: 5 prefixes accepted, limit 3")
    );
    // Held down: not back within a few seconds (the usual idle hold is 1 s).
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(bgpd.peer("tor")?.state(), SessionState::Established);
    assert_ne!(gobgp.neighbor_state(ip("192.0.2.2"))?, "Established");
    assert!(bgpd.routes(RibKind::Loc, "")?.is_empty());
    Ok(())
}

#[test]
fn gobgp_bgp_max_prefix_drop_keeps_the_session() -> Result<()> {
    let (_lab, _gobgp, bgpd) = setup(
        "gobgp_maxpfx_drop",
        "max_prefixes = 3\nmax_prefixes_action = \"drop\"\n",
    )?;
    let p = cmd::wait_for("the limit reached", T, Duration::from_millis(100), |last| {
        let p = bgpd.peer("tor")?;
        *last = p.last_error.clone();
        Ok(p.last_error.contains("max-prefix").then_some(p))
    })?;
    assert_eq!(p.state(), SessionState::Established);
    assert_eq!(p.counters.unwrap().prefixes_accepted, 3);
    assert_eq!(bgpd.routes(RibKind::Loc, "")?.len(), 3);
    Ok(())
}
