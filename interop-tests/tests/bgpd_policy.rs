//! Configured route policies (`[[bgp.policies]]`) against BIRD 2 as the ToR (`bird_bgp_*`).

use std::net::IpAddr;
use std::time::Duration;

use api::bgp::RibKind;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const NODE: &str = r#"
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
import_policy = "from-tor"
export_policy = ["originated-only", "tag"]

[[bgp.adverts]]
prefix = "10.244.1.0/24"
large_communities = ["65101:1:1"]

[[bgp.policies]]
name = "from-tor"
[[bgp.policies.rules]]
match_communities = ["65000:666"]
action = "reject"
[[bgp.policies.rules]]
match_prefixes = ["10.0.0.0/8 le 24"]
set_local_pref = 200
add_communities = ["65101:7"]
action = "accept"

[[bgp.policies]]
name = "tag"
default = "accept"
[[bgp.policies.rules]]
prepend = 2
add_large_communities = ["65101:9:9"]
action = "continue"
"#;

/// What BIRD announces: two routes the import policy takes, three it refuses.
const TOR_ROUTES: &str = r#"
protocol static offered4 {
  ipv4;
  route 10.20.0.0/16 blackhole;
  route 10.20.1.0/24 blackhole;
  route 10.20.1.128/25 blackhole;
  route 10.30.0.0/24 blackhole { bgp_community.add((65000, 666)); };
  route 198.51.100.0/24 blackhole;
}
"#;

#[test]
fn bird_bgp_configured_import_and_export_policies() -> Result<()> {
    let lab = Lab::new("bird_bgp_policy")?;
    let tor_h = lab.host("tor")?;
    let node_h = lab.host("node")?;
    let _link = lab.link(&tor_h, &["192.0.2.1/24"], &node_h, &["192.0.2.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node4", 65000, ip("192.0.2.2"), 65101);
    p.hold_time = Some(9);
    bc.peers.push(p);
    bc.extra = TOR_ROUTES.into();
    let bird = Bird::start(&tor_h, &bc)?;
    let bgpd = Bgpd::start(&node_h, NODE)?;
    bgpd.wait_established("tor4", T)?;
    bird.wait_established("node4", T)?;

    // Import: all five arrive in the Adj-RIB-In; the two inside the prefix list and without
    // the blackhole community are accepted, with the policy's LOCAL_PREF and community.
    let got = bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| r.len() == 5)?;
    let mut accepted: Vec<String> = got
        .iter()
        .filter(|r| r.local_pref == Some(200))
        .map(|r| r.prefix.to_string())
        .collect();
    accepted.sort();
    assert_eq!(accepted, vec!["10.20.0.0/16", "10.20.1.0/24"], "{got:#?}");
    for p in &accepted {
        let r = find(&got, p).unwrap();
        assert!(r.communities.contains(&(65101, 7)), "{r:?}");
    }
    let refused = find(&got, "10.30.0.0/24").unwrap();
    assert_eq!(refused.communities, vec![(65000, 666)], "kept as received");
    let counters = bgpd.peer("tor4")?.counters.expect("counters");
    assert_eq!(
        (counters.prefixes_received, counters.prefixes_accepted),
        (5, 2)
    );

    // Export: the chain lets only our route out, prepended twice and tagged.
    let seen = bird.wait_routes("node4", T, |r| find(r, "10.244.1.0/24").is_some())?;
    let r = find(&seen, "10.244.1.0/24").unwrap();
    assert_eq!(r.as_path, vec![65101, 65101, 65101]);
    let mut large = r.large_communities.clone();
    large.sort();
    assert_eq!(large, vec![(65101, 1, 1), (65101, 9, 9)]);
    assert_eq!(seen.len(), 1, "only originated routes leave: {seen:?}");
    Ok(())
}
