//! The rollout: three nodes with pods move off → opportunistic → strict, one node at a time,
//! under a running flow (p1→p2 and p2→p3 at 100 pings/s each, an iperf3 TCP stream p1→p3):
//! no ping is lost and the TCP stream never stalls for a second.
//!
//! Each step: one node changes mode and steps; then every node steps with the new records
//! until the mesh is quiet (as agents watching etcd would). Before the first strict step every
//! node's status must say `ready_for_strict`.
//!
//! Limits: userspace WireGuard (wireguard-go); the node "agents" are driven by the test
//! thread (no etcd here: records are handed over directly, so propagation takes milliseconds).

mod wireguard_support;

use std::time::{Duration, Instant};

use crypto::rollout::EncryptionMode;
use interop_tests::*;
use wireguard_support::flows::*;
use wireguard_support::rollout::*;
use wireguard_support::*;

const FLOW_SECONDS: u32 = 20;
/// iperf3's rate: enough to keep the stream busy without starving 2 shared cores.
const IPERF_RATE: &str = "20M";

/// [`iperf_stall`] of a stream with at least 100 intervals; logs where it retransmitted.
fn iperf_stall_checked(json: &str) -> (f64, u64, u64) {
    let start = json.find('{').expect("iperf3 JSON");
    let v: serde_json::Value = serde_json::from_str(&json[start..]).expect("iperf3 JSON");
    let intervals = v["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= 100, "{} intervals", intervals.len());
    let retrans_at: Vec<String> = intervals
        .iter()
        .filter_map(|i| {
            let r = i["sum"]["retransmits"].as_u64().filter(|r| *r > 0)?;
            Some(format!(
                "{:.1}s:{r}",
                i["sum"]["start"].as_f64().unwrap_or(0.0)
            ))
        })
        .collect();
    let stall = iperf_stall(json);
    eprintln!(
        "iperf3 retransmits by interval start: {}",
        retrans_at.join(" ")
    );
    stall
}

#[test]
fn wireguard_rollout_off_to_strict_under_flow() -> Result<()> {
    cmd::require_binary("nft", "nftables")?;
    cmd::require_binary("iperf3", "iperf3")?;
    let lab = Lab::new("wg-rollout")?;
    let mut nodes = rollout_mesh(&lab, 3)?;
    converge(&nodes);
    assert!(
        nodes.iter().all(|n| n.wg_peers().is_empty()),
        "off: no peers"
    );
    for (a, b) in [(0, 1), (1, 2), (0, 2)] {
        let s = nodes[a]
            .pod
            .ping(&pod_ip(b as u8 + 1), 2, Duration::from_millis(20))?;
        assert_eq!(
            s.received, 2,
            "plaintext mesh works before the rollout: {s:?}"
        );
    }

    // iperf3 paced by the kernel (SO_MAX_PACING_RATE), not in 128 KiB bursts: bursts overflow
    // wireguard-go's queues on 2 busy cores and drop packets of both flows.
    let (_server, client) = iperf_pair(
        &nodes[2].pod,
        &nodes[0].pod,
        &pod_ip(3),
        FLOW_SECONDS,
        IPERF_RATE,
    )?;
    let flow_start = Instant::now();
    let pings = [
        ping_flow(&nodes[0].pod, &pod_ip(2), FLOW_SECONDS * 100)?,
        ping_flow(&nodes[1].pod, &pod_ip(3), FLOW_SECONDS * 100)?,
    ];
    std::thread::sleep(Duration::from_secs(1));

    let mut log = Vec::new();
    for mode in [EncryptionMode::Opportunistic, EncryptionMode::Strict] {
        if mode == EncryptionMode::Strict {
            // The operator's check: every node says it is ready (two samples, 1 s apart).
            for i in 0..nodes.len() {
                status_of(&mut nodes, i);
            }
            std::thread::sleep(Duration::from_secs(1));
            for i in 0..nodes.len() {
                let st = status_of(&mut nodes, i);
                assert!(st.ready_for_strict, "{st:#?}");
                assert_eq!((st.peers_configured, st.peers_expected), (2, 2));
                assert_eq!(st.peers_handshaked, 2);
            }
        }
        for i in 0..nodes.len() {
            let t = Instant::now();
            let records = rollout_records(&nodes);
            nodes[i].set_mode(mode, &records);
            let took = converge(&nodes);
            log.push(format!(
                "{:>5.1}s n{} -> {mode}: converged in {:?} ({:?} total)",
                flow_start.elapsed().as_secs_f64(),
                i + 1,
                took,
                t.elapsed()
            ));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let rollout_done = flow_start.elapsed();
    eprintln!("{}", log.join("\n"));
    assert!(
        rollout_done + Duration::from_secs(3) < Duration::from_secs(FLOW_SECONDS.into()),
        "the rollout ({rollout_done:?}) must finish while the flow still runs"
    );

    wait_flows_end(&client, &pings, FLOW_SECONDS)?;
    for n in &nodes {
        let stats = n.host.ip(&["-s", "link", "show", "dev", &n.dev.ifname])?;
        eprintln!(
            "{} {}",
            n.host.name(),
            stats.lines().skip(2).collect::<Vec<_>>().join(" | ")
        );
    }
    for p in &pings {
        let (sent, received) = ping_result(p);
        eprintln!("{}: {sent} sent, {received} received", p.name());
        assert_eq!(sent, FLOW_SECONDS * 100);
        assert_eq!(
            received,
            sent,
            "{}: pings lost during the rollout: icmp_seq {:?} (seq × 10 ms after the flow start)\n{}",
            p.name(),
            missing_seqs(p, sent),
            log.join("\n")
        );
    }
    let json = std::fs::read_to_string(client.log_path()).unwrap();
    let (stall, bytes, retransmits) = iperf_stall_checked(&json);
    eprintln!("iperf3: {bytes} bytes, longest stall {stall:.1} s, {retransmits} retransmits");
    assert!(stall < 1.0, "TCP stream stalled for {stall} s");
    assert!(bytes > 10_000_000, "{bytes}");

    // Strict everywhere: all pod traffic is in the tunnel and no legit packet was dropped.
    for i in 0..nodes.len() {
        let st = status_of(&mut nodes, i);
        assert_eq!(st.mode, EncryptionMode::Strict);
        assert_eq!(st.tunnel_prefixes, 2, "{st:#?}");
        let c = st.plaintext.unwrap();
        assert_eq!((c.packets_in, c.packets_out), (0, 0), "{st:#?}");
        assert!(
            st.peers.iter().all(|p| p.rx_bytes > 0 && p.tx_bytes > 0),
            "{st:#?}"
        );
    }
    Ok(())
}
