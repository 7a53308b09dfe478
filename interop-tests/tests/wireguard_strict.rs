//! Strict mode drops plaintext pod traffic between nodes; opportunistic accepts (and counts) it.
//!
//! Two nodes and an injector host on the underlay switch that forges a packet from n2's pod
//! range (10.244.2.99) to n1's pod, in clear. Whether it reached the pod is read from a counter
//! the test puts in the pod's own namespace (not from ironmesh's rules). Also: a missing
//! tunnel route in strict mode fails closed and is repaired; `off` removes everything.
//!
//! Limits: userspace WireGuard (wireguard-go); the filter is nftables in the node namespace,
//! so a forged packet that is addressed to the node itself (not forwarded) is not its concern.

mod wireguard_support;

use std::time::Duration;

use crypto::rollout::{EncryptionMode, PeerPath};
use interop_tests::*;
use wireguard_support::rollout::*;
use wireguard_support::*;

/// The injector pings p1 with a forged n2-pod source; returns how many the pod counted.
fn inject(x: &Host, p1: &Host, n: u32) -> u64 {
    let before = nft_rule_packets(p1, "ip", "probe");
    // Replies go towards n2's pods and are lost: only the pod-side counter matters.
    let _ = x.exec(
        "ping",
        &[
            "-n",
            "-q",
            "-c",
            &n.to_string(),
            "-i",
            "0.05",
            "-W",
            "0.2",
            "-I",
            "10.244.2.99",
            "10.244.1.2",
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    nft_rule_packets(p1, "ip", "probe") - before
}

#[test]
fn wireguard_strict_drops_plaintext() -> Result<()> {
    cmd::require_binary("nft", "nftables")?;
    let lab = Lab::new("wg-strict")?;
    let switch = lab.switch("sw")?;
    let mut nodes = rollout_mesh_on(&lab, &switch, 2)?;
    // The injector: on the underlay, owning an address in n2's pod range.
    let x = lab.host("x")?;
    lab.attach(&x, &["192.0.2.99/24"], &switch)?;
    x.add_loopback_addr("10.244.2.99/32")?;
    x.route_add("10.244.1.0/24 via 192.0.2.1")?;
    let p1 = nodes[0].pod.clone();
    p1.exec(
        "nft",
        &[
            "add table ip probe; add chain ip probe in { type filter hook input priority 0; }; \
             add rule ip probe in ip saddr 10.244.2.99 icmp type echo-request counter",
        ],
    )?;

    // Off: plaintext everywhere, no ironmesh state.
    assert_eq!(
        inject(&x, &p1, 3),
        3,
        "off: the forged packet reaches the pod"
    );

    // Opportunistic on both: the forged plaintext packet is still accepted, and counted.
    for i in 0..2 {
        let recs = rollout_records(&nodes);
        nodes[i].set_mode(EncryptionMode::Opportunistic, &recs);
    }
    converge(&nodes);
    let st = status_of(&mut nodes, 0);
    assert_eq!(st.peers[0].path, PeerPath::Tunnel, "{st:?}");
    assert_eq!(inject(&x, &p1, 3), 3, "opportunistic accepts plaintext");
    let st = status_of(&mut nodes, 0);
    assert_eq!(st.plaintext.unwrap().packets_in, 3, "audit counter: {st:?}");

    // Strict on both: the forged packet is dropped at n1 and counted there.
    for i in 0..2 {
        let recs = rollout_records(&nodes);
        nodes[i].set_mode(EncryptionMode::Strict, &recs);
    }
    converge(&nodes);
    assert_eq!(
        inject(&x, &p1, 3),
        0,
        "strict: plaintext must not reach the pod"
    );
    let st = status_of(&mut nodes, 0);
    assert_eq!(st.plaintext.unwrap().packets_in, 3, "{st:?}");
    let json = serde_json::to_string_pretty(&st).unwrap();
    eprintln!("n1 status in strict mode:\n{json}");
    assert!(json.contains("\"mode\": \"strict\"") && !json.contains("private"));
    // Real pod traffic, encrypted, still flows both ways.
    let s = nodes[1]
        .pod
        .ping(&pod_ip(1), 5, Duration::from_millis(20))?;
    assert_eq!(s.received, 5, "{s:?}");

    // What an operator sees: the rule to table 202 and the tunnel route in it.
    let n1 = &nodes[0];
    let rules = n1.host.ip(&["rule"])?;
    assert!(rules.contains("100:\tfrom all lookup 202"), "{rules}");
    let table = n1.host.ip(&["route", "show", "table", "202"])?;
    assert_eq!(
        table.trim(),
        format!("10.244.2.0/24 dev {} proto 201 scope link", n1.dev.ifname),
        "{table}"
    );
    let ruleset = n1
        .host
        .exec("nft", &["list", "table", "inet", "ironmesh_crypto"])?;
    assert!(ruleset.contains("drop"), "{ruleset}");

    // Fail closed: the tunnel route is deleted by hand; pod traffic to n2 is dropped, not
    // sent in clear; the next step puts the route back.
    n1.host
        .ip(&["route", "del", "10.244.2.0/24", "table", "202"])?;
    let s = n1.pod.ping(&pod_ip(2), 3, Duration::from_millis(20))?;
    assert_eq!(s.received, 0, "no plaintext fallback in strict: {s:?}");
    let st = status_of(&mut nodes, 0);
    assert!(st.plaintext.unwrap().packets_out >= 3, "{st:?}");
    let r = nodes[0].step(&rollout_records(&nodes));
    assert_eq!(r.routes_added, ["10.244.2.0/24".parse().unwrap()]);
    let s = nodes[0]
        .pod
        .ping(&pod_ip(2), 3, Duration::from_millis(20))?;
    assert_eq!(s.received, 3, "repaired: {s:?}");

    // A hand-deleted filter table is put back by the next step too.
    nodes[0]
        .host
        .exec("nft", &["delete", "table", "inet", "ironmesh_crypto"])?;
    assert!(nodes[0].step(&rollout_records(&nodes)).filter_changed);
    assert_eq!(inject(&x, &p1, 2), 0);

    // Back to off (a rollback, one node at a time, loosening first): nothing of ours is left.
    for i in 0..2 {
        let recs = rollout_records(&nodes);
        nodes[i].set_mode(EncryptionMode::Off, &recs);
    }
    converge(&nodes);
    for n in &nodes {
        assert!(!n.host.ip(&["rule"])?.contains("lookup 202"));
        assert!(
            n.host
                .ip(&["route", "show", "table", "202"])?
                .trim()
                .is_empty()
        );
        assert!(
            n.host
                .exec("nft", &["list", "table", "inet", "ironmesh_crypto"])
                .is_err()
        );
        assert!(n.wg_peers().is_empty(), "{}", n.host.name());
    }
    assert_eq!(inject(&x, &p1, 2), 2, "off accepts plaintext again");
    let s = nodes[1]
        .pod
        .ping(&pod_ip(1), 3, Duration::from_millis(20))?;
    assert_eq!(s.received, 3, "{s:?}");
    Ok(())
}
