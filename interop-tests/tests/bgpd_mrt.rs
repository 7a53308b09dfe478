//! MRT TABLE_DUMP_V2 (RFC 6396): bgpdump, an independent reader, lists the same routes as
//! bgpd's own Loc-RIB view (tests named `<peer>_bgp_mrt_*`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use api::bgp::RibKind;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn bird_bgp_mrt_dump_read_by_bgpdump() -> Result<()> {
    cmd::require_binary("bgpdump", "bgpdump")?;
    let lab = Lab::new("bird_mrt")?;
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
        .push(BirdPeer::new("node4", 65000, ip("192.0.2.2"), 65101));
    bc.peers
        .push(BirdPeer::new("node6", 65000, ip("2001:db8::2"), 65101));
    bc.statics = vec![
        "198.51.100.0/24".into(),
        "203.0.113.0/25".into(),
        "2001:db8:100::/48".into(),
    ];
    let _bird = Bird::start(&tor, &bc)?;
    let mut v6 = BgpdPeer::new("tor6", "2001:db8::1", 65000);
    v6.families = vec!["ipv6-unicast".into()];
    let cfg = BgpdConfig::new(65101, "192.0.2.2")
        .peer(BgpdPeer::new("tor4", "192.0.2.1", 65000))
        .peer(v6)
        .advert("10.244.1.0/24", &["65101:100"], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    bgpd.wait_established("tor4", T)?;
    bgpd.wait_established("tor6", T)?;
    let loc = bgpd.wait_routes(RibKind::Loc, "", T, |r| {
        find(r, "203.0.113.0/25").is_some() && find(r, "2001:db8:100::/48").is_some()
    })?;

    let file = lab.dir().join("rib.mrt");
    std::fs::write(&file, bgpd.dump_mrt()?).map_err(|e| LabError::Invalid(e.to_string()))?;
    let out = cmd::run("bgpdump", &["-m", &file.to_string_lossy()])?;
    // TABLE_DUMP2|time|B|peer ip|peer as|prefix|as path|origin|next hop|...
    let dumped: BTreeSet<(String, String)> = out
        .lines()
        .filter(|l| l.starts_with("TABLE_DUMP2|"))
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[5].to_string(), f[6].to_string())
        })
        .collect();
    let ours: BTreeSet<(String, String)> = loc
        .iter()
        .map(|r| {
            let path: Vec<String> = r.as_path.iter().map(u32::to_string).collect();
            (r.prefix.to_string(), path.join(" "))
        })
        .collect();
    assert_eq!(dumped, ours, "bgpdump:\n{out}");
    assert!(dumped.contains(&("10.244.1.0/24".into(), String::new())));
    assert!(dumped.contains(&("2001:db8:100::/48".into(), "65000".into())));
    // Next hops survive too.
    assert!(
        out.lines()
            .any(|l| l.contains("|198.51.100.0/24|65000|IGP|192.0.2.1|")),
        "{out}"
    );
    Ok(())
}
