//! The lab demo: a ToR and a node in network namespaces, the BGP sessions between them and the
//! routes each learned, printed readably. `--keep` leaves the lab up until Ctrl-C.
//!
//! The ToR is FRR; the node runs ironmesh's bgpd, queried over its gRPC API.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::bgp::RibKind;
use interop_tests::route::find;
use interop_tests::*;

const TOR_AS: u32 = 65000;
const NODE_AS: u32 = 65101;
const T: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .context("installing Ctrl-C handler")?;
    let started = Instant::now();
    let check = |step: &str| -> Result<()> {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted during {step}; lab torn down");
        }
        Ok(())
    };

    println!("ironmesh lab demo: building a ToR and a node in network namespaces ...");
    let lab = Lab::new("demo")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node1")?;
    lab.link(
        &tor,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &node,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )?;
    check("topology")?;

    let ip = |s: &str| -> IpAddr { s.parse().expect("literal address") };
    let mut fc = FrrConfig::new(TOR_AS, "192.0.2.1".parse()?);
    fc.neighbors
        .push(FrrNeighbor::new(ip("192.0.2.2"), NODE_AS));
    fc.neighbors
        .push(FrrNeighbor::new(ip("2001:db8::2"), NODE_AS));
    fc.networks = vec!["0.0.0.0/0".into(), "::/0".into()];
    let frr = Frr::start(&tor, &fc)?;
    check("ToR start")?;

    let mut tor6 = BgpdPeer::new("tor-v6", "2001:db8::1", TOR_AS);
    tor6.families = vec!["ipv6-unicast".into()];
    let cfg = BgpdConfig::new(NODE_AS, "192.0.2.2")
        .peer(BgpdPeer::new("tor-v4", "192.0.2.1", TOR_AS))
        .peer(tor6)
        .advert("10.244.1.0/24", &[], &[])
        .advert("2001:db8:244:1::/64", &[], &[]);
    let bgpd = Bgpd::start(&node, &cfg.render())?;
    // A LoadBalancer VIP, added at run time over the API as meshd will.
    bgpd.add_adverts(vec![interop_tests::bgpd::advert(
        "203.0.113.10/32",
        &["65101:100"],
        &["65101:1:10"],
    )])?;
    check("node start")?;

    for n in [ip("192.0.2.2"), ip("2001:db8::2")] {
        frr.wait_established(n, T)?;
    }
    let tor_v4 = frr.wait_routes(ip("192.0.2.2"), T, |r| r.len() >= 2)?;
    let tor_v6 = frr.wait_routes(ip("2001:db8::2"), T, |r| !r.is_empty())?;
    let node_in = bgpd.wait_routes(RibKind::AdjIn, "tor-v4", T, |r| {
        find(r, "0.0.0.0/0").is_some()
    })?;
    let node_in6 = bgpd.wait_routes(RibKind::AdjIn, "tor-v6", T, |r| find(r, "::/0").is_some())?;
    check("convergence")?;

    println!();
    println!("Topology");
    println!(
        "  tor   FRR bgpd, AS {TOR_AS}     192.0.2.1  2001:db8::1   (netns {})",
        tor.netns()
    );
    println!("   |    veth");
    println!(
        "  node1 ironmesh bgpd, AS {NODE_AS} 192.0.2.2  2001:db8::2   (netns {})",
        node.netns()
    );
    println!();
    println!("BGP sessions, as the ToR (FRR) sees them");
    println!("  {:<14} {:>7}  {:<12}", "NEIGHBOR", "AS", "STATE");
    for n in [ip("192.0.2.2"), ip("2001:db8::2")] {
        println!("  {:<14} {:>7}  {:<12}", n, NODE_AS, frr.neighbor_state(n)?);
    }
    println!();
    println!("BGP sessions, as node1's bgpd sees them");
    println!(
        "  {:<8} {:<14} {:>7}  {:<12} CAPABILITIES",
        "PEER", "ADDRESS", "AS", "STATE"
    );
    for p in bgpd.peers()? {
        println!(
            "  {:<8} {:<14} {:>7}  {:<12} {}",
            p.name,
            p.address,
            p.peer_asn,
            format!("{:?}", p.state()),
            p.capabilities.join(",")
        );
    }
    println!();
    print_routes(
        "Routes the ToR learned from node1 (PodCIDRs and a LoadBalancer VIP)",
        &[tor_v4, tor_v6].concat(),
    );
    // The ToR reflects node1's own routes back; bgpd keeps them in Adj-RIB-In but never selects
    // them (AS loop, RFC 4271 §9.1.2).
    let (looped, learned): (Vec<_>, Vec<_>) = [node_in, node_in6]
        .concat()
        .into_iter()
        .partition(|r| r.as_path.contains(&NODE_AS));
    print_routes("Routes node1 learned from the ToR", &learned);
    println!(
        "  ({} reflected routes carrying AS {NODE_AS} stay unselected: AS-path loop, RFC 4271 §9.1.2)\n",
        looped.len()
    );
    println!("Converged in {:.1} s.", started.elapsed().as_secs_f64());

    if keep {
        println!();
        println!("The lab stays up until Ctrl-C. Explore it:");
        println!(
            "  ip netns exec {} vtysh -N {} -c 'show bgp summary'",
            tor.netns(),
            tor.netns()
        );
        println!(
            "  target/debug/ironctl bgp peers --bgpd {}",
            bgpd.api.display()
        );
        println!("  ip netns exec {} ip route", node.netns());
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("Ctrl-C: tearing the lab down.");
    } else {
        println!("Run `scripts/demo --keep` to keep the lab up and explore it.");
    }
    drop(lab);
    println!("Lab torn down: no namespaces or daemons left.");
    Ok(())
}

fn print_routes(title: &str, routes: &[BgpRoute]) {
    println!("{title}");
    println!(
        "  {:<22} {:<16} {:<12} {:<14} {:<14}",
        "PREFIX", "NEXT HOP", "AS PATH", "COMMUNITIES", "LARGE"
    );
    for r in routes {
        let nh = r
            .next_hop
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        let path: Vec<String> = r.as_path.iter().map(u32::to_string).collect();
        let comm: Vec<String> = r
            .communities
            .iter()
            .map(|(a, b)| format!("{a}:{b}"))
            .collect();
        let large: Vec<String> = r
            .large_communities
            .iter()
            .map(|(a, b, c)| format!("{a}:{b}:{c}"))
            .collect();
        println!(
            "  {:<22} {:<16} {:<12} {:<14} {:<14}",
            r.prefix.to_string(),
            nh,
            path.join(" "),
            if comm.is_empty() {
                "-".into()
            } else {
                comm.join(" ")
            },
            if large.is_empty() {
                "-".into()
            } else {
                large.join(" ")
            },
        );
    }
    println!();
}
