//! ironmesh bgpd against BIRD 2 as the ToR (tests named `bird_bgp_*`).

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

fn node_config(extra_peer: &str) -> String {
    format!(
        r#"
[node]
name = "node1"
cluster = "lab"

[bgp]
local_asn = 65101
router_id = "192.0.2.2"
listen_port = 0

[[bgp.peers]]
name = "tor4"
address = "192.0.2.1"
peer_asn = 65000
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
{extra_peer}

[[bgp.peers]]
name = "tor6"
address = "2001:db8::1"
peer_asn = 65000
hold_time = 9
families = ["ipv6-unicast"]
import_policy = "accept-all"
export_policy = "originated-only"

[[bgp.adverts]]
prefix = "10.244.1.0/24"
communities = ["65101:100"]
large_communities = ["65101:1:1"]

[[bgp.adverts]]
prefix = "2001:db8:244:1::/64"
communities = ["65101:600"]
"#
    )
}

fn tor(lab: &Lab, tor: &Host, password: Option<&str>) -> Result<Bird> {
    let _ = lab;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p4 = BirdPeer::new("node4", 65000, ip("192.0.2.2"), 65101);
    p4.password = password.map(str::to_string);
    p4.hold_time = Some(9);
    bc.peers.push(p4);
    bc.peers
        .push(BirdPeer::new("node6", 65000, ip("2001:db8::2"), 65101));
    bc.statics = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
    Bird::start(tor, &bc)
}

fn topology(name: &str) -> Result<(Lab, Host, Host, Link)> {
    let lab = Lab::new(name)?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    let link = lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;
    Ok((lab, tor, node, link))
}

#[test]
fn bird_bgp_ipv4_ipv6_adverts_vips_and_withdraw() -> Result<()> {
    let (lab, tor_h, node_h, _link) = topology("bird_bgp_adverts")?;
    let bird = tor(&lab, &tor_h, None)?;
    let bgpd = Bgpd::start(&node_h, &node_config(""))?;

    bgpd.wait_established("tor4", T)?;
    let p6 = bgpd.wait_established("tor6", T)?;
    assert!(
        p6.capabilities.contains(&"ipv6-unicast".to_string()),
        "{:?}",
        p6.capabilities
    );
    bird.wait_established("node4", T)?;
    bird.wait_established("node6", T)?;

    // PodCIDRs at the ToR, read from BIRD's own CLI: next hop, AS path, communities.
    let r4 = bird.wait_routes("node4", T, |r| find(r, "10.244.1.0/24").is_some())?;
    let r = find(&r4, "10.244.1.0/24").unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.as_path, vec![65101]);
    assert_eq!(r.origin, Some(Origin::Igp));
    assert_eq!(r.communities, vec![(65101, 100)]);
    assert_eq!(r.large_communities, vec![(65101, 1, 1)]);
    let r6 = bird.wait_routes("node6", T, |r| find(r, "2001:db8:244:1::/64").is_some())?;
    let r = find(&r6, "2001:db8:244:1::/64").unwrap();
    assert_eq!(r.next_hop, Some(ip("2001:db8::2")));
    assert_eq!(r.communities, vec![(65101, 600)]);
    // The IPv6-only session carries no IPv4 routes.
    assert!(find(&r6, "10.244.1.0/24").is_none());

    // A LoadBalancer VIP added over the API, then removed.
    let est = bgpd.peer("tor4")?.uptime_seconds;
    bgpd.add_adverts(vec![advert("203.0.113.10/32", &["65101:200"], &[])])?;
    let got = bird.wait_routes("node4", T, |r| find(r, "203.0.113.10/32").is_some())?;
    assert_eq!(
        find(&got, "203.0.113.10/32").unwrap().communities,
        vec![(65101, 200)]
    );
    assert_eq!(bgpd.remove_adverts(&["203.0.113.10/32"])?, 1);
    bird.wait_routes("node4", T, |r| {
        find(r, "203.0.113.10/32").is_none() && find(r, "10.244.1.0/24").is_some()
    })?;
    assert!(
        bgpd.peer("tor4")?.uptime_seconds >= est,
        "the session was reset by an advert change"
    );

    // What the ToR sends is in bgpd's Adj-RIB-In.
    let in4 = bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| {
        find(r, "198.51.100.0/24").is_some()
    })?;
    let r = find(&in4, "198.51.100.0/24").unwrap();
    assert_eq!(
        (r.as_path.clone(), r.next_hop),
        (vec![65000], Some(ip("192.0.2.1")))
    );
    let in6 = bgpd.wait_routes(RibKind::AdjIn, "tor6", T, |r| {
        find(r, "2001:db8:100::/48").is_some()
    })?;
    assert_eq!(
        find(&in6, "2001:db8:100::/48").unwrap().next_hop,
        Some(ip("2001:db8::1"))
    );
    // Adj-RIB-Out toward tor4 holds exactly the IPv4 PodCIDR now.
    let out4 = bgpd.routes(RibKind::AdjOut, "tor4")?;
    let prefixes: Vec<String> = out4.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(prefixes, vec!["10.244.1.0/24"]);
    Ok(())
}

#[test]
fn bird_bgp_md5_right_and_wrong_password() -> Result<()> {
    let (lab, tor_h, node_h, _link) = topology("bird_bgp_md5")?;
    let bird = tor(&lab, &tor_h, Some("lab-secret"))?;
    let good = Bgpd::start(&node_h, &node_config("md5_password = \"lab-secret\""))?;
    good.wait_established("tor4", T)?;
    bird.wait_established("node4", T)?;
    good.process.terminate();

    // The same session with a wrong key never comes up, and bgpd says why.
    std::fs::write(
        &good.config,
        node_config("md5_password = \"not-the-secret\""),
    )
    .map_err(|e| LabError::Invalid(e.to_string()))?;
    good.process.restart()?;
    let p = cmd::wait_for(
        "a connect error on tor4",
        T,
        Duration::from_millis(200),
        |last| {
            let p = good.peer("tor4")?;
            *last = p.last_error.clone();
            Ok(p.last_error.contains("TCP MD5").then_some(p))
        },
    )?;
    assert_ne!(p.state(), api::bgp::SessionState::Established);
    assert!(
        good.process
            .log_tail(20_000)
            .contains("check md5_password on both sides")
    );
    Ok(())
}

#[test]
fn bird_bgp_hold_timer_expiry_on_link_cut_and_recovery() -> Result<()> {
    let (lab, tor_h, node_h, link) = topology("bird_bgp_hold")?;
    let bird = tor(&lab, &tor_h, None)?;
    let bgpd = Bgpd::start(&node_h, &node_config(""))?;
    bgpd.wait_established("tor4", T)?;
    bird.wait_established("node4", T)?;

    // Drop everything between the two without touching the link state: only the hold timer
    // (9 s) can notice.
    for h in [&tor_h, &node_h] {
        h.exec("nft", &["add", "table", "inet", "cut"])?;
        h.exec(
            "nft",
            &["add chain inet cut in { type filter hook input priority 0; policy drop; }"],
        )?;
    }
    let p = cmd::wait_for(
        "hold timer expiry",
        Duration::from_secs(15),
        Duration::from_millis(200),
        |last| {
            let p = bgpd.peer("tor4")?;
            *last = p.last_error.clone();
            Ok(p.last_error.contains("Hold Timer Expired").then_some(p))
        },
    )?;
    assert_ne!(p.state(), api::bgp::SessionState::Established);
    for h in [&tor_h, &node_h] {
        h.exec("nft", &["delete", "table", "inet", "cut"])?;
    }
    bgpd.wait_established("tor4", T)?;
    bird.wait_routes("node4", T, |r| find(r, "10.244.1.0/24").is_some())?;

    // A real carrier loss as well: link down, then up again.
    link.cut()?;
    cmd::wait_for(
        "session down on carrier loss",
        Duration::from_secs(15),
        Duration::from_millis(200),
        |_| Ok((bgpd.peer("tor4")?.state() != api::bgp::SessionState::Established).then_some(())),
    )?;
    link.restore()?;
    bgpd.wait_established("tor4", Duration::from_secs(40))?;
    Ok(())
}

/// SIGHUP re-reads the config: a new advert reaches BIRD and the session stays up; a config
/// with an error is refused and everything keeps running.
#[test]
fn bird_bgp_sighup_reload_keeps_sessions() -> Result<()> {
    let (lab, tor_h, node_h, _link) = topology("bird_bgp_reload")?;
    let bird = tor(&lab, &tor_h, None)?;
    let bgpd = Bgpd::start(&node_h, &node_config(""))?;
    bgpd.wait_established("tor4", T)?;
    bird.wait_routes("node4", T, |r| find(r, "10.244.1.0/24").is_some())?;
    let pid = bgpd.process.pid().expect("bgpd runs");

    let with_vip = format!(
        "{}\n[[bgp.adverts]]\nprefix = \"203.0.113.77/32\"\n",
        node_config("")
    );
    std::fs::write(&bgpd.config, &with_vip).map_err(|e| LabError::Invalid(e.to_string()))?;
    cmd::run("kill", &["-HUP", &pid.to_string()])?;
    bird.wait_routes("node4", T, |r| find(r, "203.0.113.77/32").is_some())?;
    assert_eq!(bird.protocol("node4")?.bgp_state, "Established");
    let up = bgpd.peer("tor4")?;
    assert_eq!(up.state(), api::bgp::SessionState::Established);

    // A broken file is refused: the VIP stays, the sessions stay.
    std::fs::write(&bgpd.config, "[bgp]\nlocal_asn = 0\n")
        .map_err(|e| LabError::Invalid(e.to_string()))?;
    cmd::run("kill", &["-HUP", &pid.to_string()])?;
    cmd::wait_for(
        "the refusal in bgpd's log",
        T,
        Duration::from_millis(100),
        |_| {
            Ok(bgpd
                .process
                .log_tail(20_000)
                .contains("config reload refused")
                .then_some(()))
        },
    )?;
    assert!(bgpd.process.is_running());
    std::thread::sleep(Duration::from_secs(1));
    let routes = bird.routes_from("node4")?;
    assert!(find(&routes, "203.0.113.77/32").is_some(), "{routes:?}");
    assert!(bgpd.peer("tor4")?.uptime_seconds >= up.uptime_seconds);

    // The API's Reload: the same, reporting which sessions changed (tor6 removed here).
    let without_tor6: String = {
        let start = with_vip
            .find("[[bgp.peers]]\nname = \"tor6\"")
            .expect("tor6 in config");
        let end = start
            + with_vip[start..]
                .find("[[bgp.adverts]]")
                .expect("adverts follow");
        format!("{}{}", &with_vip[..start], &with_vip[end..])
    };
    std::fs::write(&bgpd.config, &without_tor6).map_err(|e| LabError::Invalid(e.to_string()))?;
    assert_eq!(bgpd.reload()?, vec!["tor6".to_string()]);
    bird.wait_established("node4", T)?;
    cmd::wait_for(
        "BIRD's node6 session to go down",
        T,
        Duration::from_millis(200),
        |_| Ok((bird.protocol("node6")?.bgp_state != "Established").then_some(())),
    )?;
    assert_eq!(bgpd.peers()?.len(), 1);
    Ok(())
}

/// VIPs of an aggregated pool are announced as the pool's covering prefix, while at least one
/// is present; a VIP outside its pool is refused over the API with the reason.
#[test]
fn bird_bgp_vip_pool_aggregation() -> Result<()> {
    let (lab, tor_h, node_h, _link) = topology("bird_bgp_pool")?;
    let bird = tor(&lab, &tor_h, None)?;
    let cfg = format!(
        "{}\n[[bgp.pools]]\nname = \"public\"\nprefix = \"203.0.113.0/24\"\naggregate = true\ncommunities = [\"65101:999\"]\n",
        node_config("")
    );
    let bgpd = Bgpd::start(&node_h, &cfg)?;
    bgpd.wait_established("tor4", T)?;
    let vip = |p: &str| api::bgp::Advert {
        pool: "public".into(),
        ..advert(p, &[], &[])
    };
    bgpd.add_adverts(vec![vip("203.0.113.10/32"), vip("203.0.113.11/32")])?;
    let got = bird.wait_routes("node4", T, |r| find(r, "203.0.113.0/24").is_some())?;
    assert_eq!(
        find(&got, "203.0.113.0/24").unwrap().communities,
        vec![(65101, 999)]
    );
    assert!(find(&got, "203.0.113.10/32").is_none() && find(&got, "203.0.113.11/32").is_none());

    let e = bgpd
        .add_adverts(vec![vip("198.51.100.7/32")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside pool \"public\""), "{e}");

    bgpd.remove_adverts(&["203.0.113.10/32"])?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        find(&bird.routes_from("node4")?, "203.0.113.0/24").is_some(),
        "one VIP left"
    );
    bgpd.remove_adverts(&["203.0.113.11/32"])?;
    bird.wait_routes("node4", T, |r| find(r, "203.0.113.0/24").is_none())?;
    Ok(())
}
