//! Three nodes, pods behind them, wireguard-go devices programmed by ironmesh's reconciler from
//! meshd node records: pod traffic crosses the underlay only as WireGuard UDP; a removed node's
//! peer goes everywhere at once; a hand-made change is repaired; a bad record is rejected by
//! name while the rest keeps working.
//!
//! Limits: userspace WireGuard (wireguard-go), as this kernel has no module; the routes to the
//! other nodes' PodCIDRs through the device are set by the test (routing is not crypto's job).

mod wireguard_support;

use std::path::Path;
use std::time::{Duration, Instant};

use crypto::wireguard::{PeerChange, WireGuardBackend};
use interop_tests::cmd::wait_for;
use interop_tests::*;
use wireguard_support::*;

/// ping -p: the pattern fills the ICMP payload; easy to spot in a capture.
const PATTERN: &str = "1badc0de5eed";
const PATTERN_BYTES: [u8; 6] = [0x1b, 0xad, 0xc0, 0xde, 0x5e, 0xed];

fn tcpdump(host: &Host, ifname: &str, file: &Path) -> Result<Process> {
    cmd::require_binary("tcpdump", "tcpdump")?;
    let p = host.spawn(
        &format!("tcpdump-{ifname}"),
        "tcpdump",
        &[
            "-i".into(),
            ifname.into(),
            "-n".into(),
            "-U".into(),
            "--immediate-mode".into(),
            "-Z".into(),
            "root".into(),
            "-w".into(),
            file.display().to_string(),
        ],
    )?;
    wait_for(
        "tcpdump to listen",
        Duration::from_secs(5),
        Duration::from_millis(50),
        |_| Ok(p.log_tail(4096).contains("listening on").then_some(())),
    )?;
    Ok(p)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn wireguard_mesh_reconciles_from_node_records() -> Result<()> {
    let lab = Lab::new("wg-mesh")?;
    let nodes = mesh(&lab, 3)?;
    let all = records(&nodes);

    // Programming: each node gets a peer for each other node, from the records alone.
    let t = Instant::now();
    for n in &nodes {
        let report = n.reconcile(&all);
        assert_eq!(
            (report.added(), report.updated(), report.removed()),
            (2, 0, 0),
            "{report:?}"
        );
        assert!(report.rejected.is_empty() && report.failed.is_empty());
    }
    eprintln!("programmed 3 nodes in {:?}", t.elapsed());
    let allowed = nodes[0].wg_show("allowed-ips");
    assert!(
        allowed.contains(&format!(
            "{}\t10.244.2.0/24 192.0.2.2/32",
            nodes[1].public_key()
        )),
        "{allowed}"
    );
    eprintln!(
        "handshakes on every pair after {:?}",
        wait_handshakes(&nodes)?
    );
    let bad = ping_all_pairs(&nodes, 3);
    assert!(bad.is_empty(), "pod pings through the mesh: {bad:?}");
    // The traffic went through WireGuard: every peer completed a handshake and moved bytes.
    for n in &nodes {
        let dev = n.reconciler.backend().device().unwrap();
        assert_eq!(dev.peers.len(), 2);
        for (k, p) in &dev.peers {
            assert!(
                p.last_handshake.is_some() && p.rx_bytes > 0 && p.tx_bytes > 0,
                "{} peer {k}: {p:?}",
                n.host.name()
            );
        }
        // The first reconcile after the handshakes ends the first-contact holds: the
        // responder of each pair turns on the keepalive it withheld (nothing else changes);
        // then reconciling the converged mesh changes nothing.
        let first = n.reconcile(&all);
        assert!(
            first.changes.iter().all(|c| matches!(
                c,
                PeerChange::Update {
                    allowed_ips: None,
                    persistent_keepalive: Some(25),
                    ..
                }
            )),
            "{first:?}"
        );
        assert!(n.reconcile(&all).is_clean());
    }

    // Underlay capture: the pods' ICMP payload never appears in clear, only WireGuard UDP.
    let under = lab.dir().join("underlay.pcap");
    let podside = lab.dir().join("podside.pcap");
    let cap = tcpdump(&nodes[0].host, &nodes[0].underlay_if, &under)?;
    let control = tcpdump(&nodes[0].host, &nodes[0].pod_if, &podside)?;
    let out = nodes[0].pod.exec(
        "ping",
        &[
            "-n",
            "-q",
            "-c",
            "5",
            "-i",
            "0.05",
            "-p",
            PATTERN,
            &pod_ip(2),
        ],
    )?;
    assert!(out.contains(" 0% packet loss"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    cap.terminate();
    control.terminate();
    let raw = std::fs::read(&under).unwrap();
    let raw_pod = std::fs::read(&podside).unwrap();
    assert!(
        contains(&raw_pod, &PATTERN_BYTES),
        "control: the pattern is visible on the pod side"
    );
    assert!(
        !contains(&raw, &PATTERN_BYTES),
        "pod payload seen in clear on the underlay"
    );
    let text = run_cmd("tcpdump", &["-r", &under.display().to_string(), "-n"]);
    let ipv4: Vec<&str> = text.lines().filter(|l| l.contains(" IP ")).collect();
    let wg = ipv4
        .iter()
        .filter(|l| l.contains(&format!(".{WG_PORT}: UDP")))
        .count();
    assert!(
        wg >= 10,
        "5 echo requests + 5 replies as WireGuard UDP:\n{text}"
    );
    assert_eq!(
        wg,
        ipv4.len(),
        "only WireGuard UDP on the underlay:\n{text}"
    );
    assert!(!text.contains("ICMP echo"), "{text}");

    // A node leaves the mesh: its peer is removed everywhere within a second.
    let n3_key = nodes[2].public_key();
    let without_n3 = &all[..2];
    let t = Instant::now();
    for n in &nodes[..2] {
        let report = n.reconcile(without_n3);
        assert_eq!(report.removed(), 1, "{report:?}");
    }
    let took = t.elapsed();
    for n in &nodes[..2] {
        assert!(
            !n.wg_show("peers").contains(&n3_key),
            "{} still has n3",
            n.host.name()
        );
    }
    eprintln!("node removal applied on 2 nodes in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let s = nodes[0]
        .pod
        .ping(&pod_ip(3), 2, Duration::from_millis(50))?;
    assert_eq!(s.received, 0, "no tunnel to a removed node: {s:?}");
    let s = nodes[0]
        .pod
        .ping(&pod_ip(2), 3, Duration::from_millis(50))?;
    assert!(s.received >= 2, "n1 <-> n2 unaffected: {s:?}");

    // A hand-made change is put back by the next reconcile.
    let n2_key = nodes[1].public_key();
    nodes[0].host.exec(
        "wg",
        &[
            "set",
            &nodes[0].dev.ifname,
            "peer",
            &n2_key,
            "allowed-ips",
            "10.9.9.0/24",
        ],
    )?;
    let s = nodes[0]
        .pod
        .ping(&pod_ip(2), 2, Duration::from_millis(50))?;
    assert_eq!(s.received, 0, "the hand-made change broke n1 -> n2: {s:?}");
    let report = nodes[0].reconcile(without_n3);
    assert_eq!(
        (report.added(), report.updated(), report.removed()),
        (0, 1, 0),
        "{report:?}"
    );
    assert!(
        nodes[0]
            .wg_show("allowed-ips")
            .contains(&format!("{n2_key}\t10.244.2.0/24 192.0.2.2/32")),
        "repaired"
    );
    let s = nodes[0]
        .pod
        .ping(&pod_ip(2), 3, Duration::from_millis(50))?;
    assert!(s.received >= 2, "repaired: {s:?}");

    // n3 is back, and a node n4 with a broken key joins: n4 is rejected by name, all else works.
    let mut with_bad = all.clone();
    with_bad.push(record(4, Some("not-a-key".into())));
    for n in &nodes {
        let report = n.reconcile(&with_bad);
        assert_eq!(report.rejected.len(), 1, "{report:?}");
        let msg = report.rejected[0].to_string();
        assert!(
            msg.starts_with("node n4: invalid WireGuard public key") && msg.contains("base64"),
            "{msg}"
        );
        assert_eq!(peers_of(n).len(), 2, "{}", n.host.name());
    }
    // n3's returning peers are first contacts again: the responder side initiates once its
    // hold ends (n3 still has sessions with the others, which they no longer do).
    settle_first_contact(&nodes, &with_bad)?;
    let bad = ping_all_pairs(&nodes, 3);
    assert!(bad.is_empty(), "mesh with a bad record: {bad:?}");
    Ok(())
}

fn run_cmd(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
