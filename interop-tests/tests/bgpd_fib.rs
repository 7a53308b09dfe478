//! Learned routes into the node's kernel (tests named `<peer>_bgp_fib_*`): ECMP across two
//! ToRs, withdraws, and the restart reconcile that removes only our stale routes.

use std::net::IpAddr;
use std::time::Duration;

use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bird_tor(
    host: &Host,
    id: &str,
    asn: u32,
    node: &str,
    statics: &[&str],
) -> Result<(Bird, BirdConfig)> {
    let mut bc = BirdConfig::new(id.parse().unwrap());
    bc.peers.push(BirdPeer::new("node", asn, ip(node), 65101));
    bc.statics = statics.iter().map(|s| s.to_string()).collect();
    Ok((Bird::start(host, &bc)?, bc))
}

fn route(node: &Host, prefix: &str) -> Result<String> {
    node.ip(&["route", "show", prefix])
}

#[test]
fn bird_bgp_fib_ecmp_two_tors_withdraw_and_reconcile() -> Result<()> {
    let lab = Lab::new("bird_fib")?;
    let tor_a = lab.host("tora")?;
    let tor_b = lab.host("torb")?;
    let node = lab.host("node")?;
    lab.link(&tor_a, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    lab.link(&tor_b, &["203.0.113.1/24"], &node, &["203.0.113.2/24"])?;
    // A route of ours left by an earlier run, and an operator's route: only the first may go.
    node.route_add("198.18.0.99/32 via 192.0.2.1 proto 201 metric 20")?;
    node.route_add("198.18.0.98/32 via 192.0.2.1")?;

    let (bird_a, mut bc_a) = bird_tor(
        &tor_a,
        "192.0.2.1",
        65001,
        "192.0.2.2",
        &["198.51.100.0/24"],
    )?;
    let (_bird_b, _) = bird_tor(
        &tor_b,
        "203.0.113.1",
        65002,
        "203.0.113.2",
        &["198.51.100.0/24"],
    )?;
    let mut a = BgpdPeer::new("tor-a", "192.0.2.1", 65001);
    a.extra = "local_address = \"192.0.2.2\"\n".into();
    let mut b = BgpdPeer::new("tor-b", "203.0.113.1", 65002);
    b.extra = "local_address = \"203.0.113.2\"\n".into();
    let toml = format!(
        "{}\n[bgp.fib]\ntable = 254\n",
        BgpdConfig::new(65101, "192.0.2.2").peer(a).peer(b).render()
    );
    let bgpd = Bgpd::start(&node, &toml)?;
    bgpd.wait_established("tor-a", T)?;
    bgpd.wait_established("tor-b", T)?;

    // ECMP: one kernel route with both ToRs as next hops, marked as ours.
    let r = cmd::wait_for("an ECMP route", T, Duration::from_millis(100), |last| {
        let r = route(&node, "198.51.100.0/24")?;
        *last = r.clone();
        Ok((r.contains("via 192.0.2.1") && r.contains("via 203.0.113.1")).then_some(r))
    })?;
    assert!(r.contains("proto 201") && r.contains("metric 20"), "{r}");
    assert_eq!(r.matches("nexthop via").count(), 2, "{r}");

    // Converged (both End-of-RIBs in): our stale route is gone, the operator's stays.
    cmd::wait_for(
        "the stale route removed",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(route(&node, "198.18.0.99/32")?
                .trim()
                .is_empty()
                .then_some(()))
        },
    )?;
    assert!(route(&node, "198.18.0.98/32")?.contains("via 192.0.2.1"));

    // ToR A withdraws: a single path via B remains.
    bc_a.statics.clear();
    bird_a.reconfigure(&bc_a)?;
    let r = cmd::wait_for(
        "a single path via B",
        T,
        Duration::from_millis(100),
        |last| {
            let r = route(&node, "198.51.100.0/24")?;
            *last = r.clone();
            Ok((r.contains("via 203.0.113.1") && !r.contains("192.0.2.1")).then_some(r))
        },
    )?;
    assert!(!r.contains("nexthop"), "{r}");
    Ok(())
}
