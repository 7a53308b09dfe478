//! Key rotation in strict mode under a running flow loses nothing and leaks nothing.
//!
//! Three nodes in strict mode; pings at 100/s p1→p2, p2→p3, p3→p1 and a paced 20 Mbit/s
//! iperf3 TCP stream p1→p3. n2 rotates its key, then n1, n2, n3 in turn. Each rotation:
//! the node's agent rotates (`NodeEncryption::rotate_key`), its new record reaches the other
//! nodes after `PROPAGATION` (an etcd watch's latency), then every node steps until quiet.
//!
//! Checked: no ping lost; the TCP stream never moves no byte for 1 s (0.1 s intervals);
//! no pod packet on any node's underlay outside the tunnel (tcpdump of outer headers in
//! 10.244.0.0/16); each node's public key changed on its device and on its peers' devices.
//!
//! Limits: userspace WireGuard (wireguard-go); records handed over by the test (no etcd).

mod wireguard_support;

use std::time::{Duration, Instant};

use crypto::rollout::{EncryptionMode, PeerPath};
use interop_tests::*;
use wireguard_support::flows::*;
use wireguard_support::rollout::*;
use wireguard_support::*;

const FLOW_SECONDS: u32 = 14;
const PINGS: u32 = FLOW_SECONDS * 100;
/// Time between a node switching its key and the other nodes seeing its new record.
const PROPAGATION: Duration = Duration::from_millis(100);

fn strict_mesh(lab: &Lab) -> Result<Vec<RolloutHost>> {
    let mut nodes = rollout_mesh(lab, 3)?;
    for mode in [EncryptionMode::Opportunistic, EncryptionMode::Strict] {
        for i in 0..3 {
            let records = rollout_records(&nodes);
            nodes[i].set_mode(mode, &records);
            converge(&nodes);
        }
    }
    for i in 0..3 {
        let st = status_of(&mut nodes, i);
        assert!(
            st.mode == EncryptionMode::Strict
                && st.peers.iter().all(|p| p.path == PeerPath::Tunnel),
            "{st:#?}"
        );
    }
    Ok(nodes)
}

/// Rotates node `i`; the others see its record after `PROPAGATION`. Returns what happened.
fn rotate(nodes: &mut [RolloutHost], i: usize, t0: Instant) -> String {
    let old = nodes[i].store.public_key();
    let start = t0.elapsed();
    let records = rollout_records(nodes);
    let new = nodes[i].rotate_key(&records);
    assert_ne!(old, new);
    std::thread::sleep(PROPAGATION);
    let took = converge(nodes);
    format!(
        "{:>6.2}s n{} rotated, mesh quiet {:?} later",
        start.as_secs_f64(),
        i + 1,
        took + PROPAGATION
    )
}

#[test]
fn wireguard_rotation_strict_loses_and_leaks_nothing() -> Result<()> {
    cmd::require_binary("nft", "nftables")?;
    cmd::require_binary("iperf3", "iperf3")?;
    cmd::require_binary("tcpdump", "tcpdump")?;
    let lab = Lab::new("wg-rot-strict")?;
    let mut nodes = strict_mesh(&lab)?;
    let keys_before: Vec<String> = nodes.iter().map(|n| n.wg_public_key()).collect();
    let captures = nodes
        .iter()
        .map(|n| PlaintextCapture::start(&n.host, &n.underlay_if, "10.244.0.0/16"))
        .collect::<Result<Vec<_>>>()?;

    let (_server, client) = iperf_pair(
        &nodes[2].pod,
        &nodes[0].pod,
        &pod_ip(3),
        FLOW_SECONDS,
        "20M",
    )?;
    let t0 = Instant::now();
    let pings = [
        ping_flow(&nodes[0].pod, &pod_ip(2), PINGS)?,
        ping_flow(&nodes[1].pod, &pod_ip(3), PINGS)?,
        ping_flow(&nodes[2].pod, &pod_ip(1), PINGS)?,
    ];
    std::thread::sleep(Duration::from_secs(1));
    let mut log = Vec::new();
    for i in [1, 0, 1, 2] {
        log.push(rotate(&mut nodes, i, t0));
        std::thread::sleep(Duration::from_millis(1500));
    }
    eprintln!("{}", log.join("\n"));
    assert!(t0.elapsed() + Duration::from_secs(2) < Duration::from_secs(FLOW_SECONDS.into()));

    wait_flows_end(&client, &pings, FLOW_SECONDS)?;
    let mut lost = Vec::new();
    for p in &pings {
        let (sent, received) = ping_result(p);
        let missing = missing_seqs(p, sent);
        eprintln!(
            "{}: {sent} sent, {received} received, missing icmp_seq {missing:?}",
            p.name()
        );
        if received != PINGS {
            lost.push(format!(
                "{}: {} lost: {missing:?}",
                p.name(),
                PINGS - received
            ));
        }
    }
    let json = std::fs::read_to_string(client.log_path()).unwrap();
    let (stall, bytes, retransmits) = iperf_stall(&json);
    eprintln!("iperf3: {bytes} bytes, longest stall {stall:.1} s, {retransmits} retransmits");
    let mut leaked = Vec::new();
    for (n, c) in nodes.iter().zip(&captures) {
        let pkts = c.finish();
        eprintln!(
            "{} underlay: {} plaintext pod packets",
            n.host.name(),
            pkts.len()
        );
        leaked.extend(
            pkts.into_iter()
                .take(5)
                .map(|p| format!("{}: {p}", n.host.name())),
        );
    }
    for i in 0..3 {
        let st = status_of(&mut nodes, i);
        eprintln!(
            "n{} plaintext counters (strict: dropped): {:?}",
            i + 1,
            st.plaintext
        );
    }
    assert!(
        lost.is_empty(),
        "pings lost:\n{}\n{}",
        lost.join("\n"),
        log.join("\n")
    );
    assert!(stall < 1.0, "TCP stream stalled for {stall} s");
    assert!(bytes > 10_000_000, "{bytes}");
    assert!(
        leaked.is_empty(),
        "plaintext on the underlay:\n{}",
        leaked.join("\n")
    );

    // Every node's key changed on its device, and every peer has the new key.
    for (i, n) in nodes.iter().enumerate() {
        let key = n.wg_public_key();
        assert_ne!(key, keys_before[i], "n{} kept its key", i + 1);
        assert_eq!(key, n.store.public_key().to_string());
        for (j, m) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            let peers = m.wg_peers();
            assert!(
                peers.contains(&key),
                "n{} lacks n{}'s new key: {peers}",
                j + 1,
                i + 1
            );
            assert!(
                !peers.contains(&keys_before[i]),
                "n{} kept n{}'s old key",
                j + 1,
                i + 1
            );
        }
    }
    for i in 0..3 {
        let st = status_of(&mut nodes, i);
        assert_eq!(st.tunnel_prefixes, 2, "{st:#?}");
        assert!(
            st.peers.iter().all(|p| p.path == PeerPath::Tunnel),
            "{st:#?}"
        );
    }
    Ok(())
}
