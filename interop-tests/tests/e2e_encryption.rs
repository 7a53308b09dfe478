//! meshd drives WireGuard (issue 8, wiring): three nodes on one switch, each running the meshd
//! binary with `[encryption] mode = "opportunistic"` and a wireguard-go device, one etcd.
//! meshd allocates each node's PodCIDR; a pod (netns) per node gets an address in it, and the
//! nodes route each other's PodCIDRs in clear through the underlay (as native routing would).
//! meshd must then make every node a WireGuard peer of every other, and move pod traffic into
//! the tunnel after the first handshake. Checked with `ironctl encryption status -o json` on
//! every node and the devices' own transfer counters while pods ping each other.

mod wireguard_support;

use std::process::Command;
use std::time::{Duration, Instant};

use interop_tests::cmd::wait_for;
use interop_tests::*;
use wireguard_support::meshd::{MeshdLab, MeshdNode, T};

const N: u8 = 3;

/// Bytes sent by the device, summed over its peers (`wg show <if> transfer`).
fn wg_tx_bytes(n: &MeshdNode) -> u64 {
    n.host
        .exec("wg", &["show", &n.dev.ifname, "transfer"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// What a failed handshake or path is diagnosed with: rules, table 202, the device as `wg`
/// shows it (keys public only, endpoints, latest handshakes) and the nft counters.
fn diag(n: &MeshdNode) -> String {
    format!(
        "{}: rules:\n{}\n{}",
        n.host.name(),
        n.host.ip(&["rule"]).unwrap_or_default(),
        n.tunnel_diag()
    )
}

// Was flaky (CI 2 of 5, here 1 of 33 runs): a pair that added each other at the same moment
// crossed initiations, and with keepalive 5 s they crossed again every 5 s. meshd now programs
// at least 6 s (`crypto::wireguard::effective_keepalive`, `wireguard_handshake_crossing`).
// A failure prints every node's `wg show`, rules, table 202 and nft table.
#[test]
fn e2e_encryption_opportunistic_pods_ping_through_wireguard() -> Result<()> {
    let m = MeshdLab::launch("e2e_encryption", N.into(), "opportunistic")?;
    let (nodes, ironctl) = (&m.nodes, &m.ironctl);

    // Every node: peers configured == expected == 2, all in the tunnel, a recent handshake.
    let started = Instant::now();
    for n in nodes {
        let st = wait_for(
            &format!("{} encrypted to every peer", n.host.name()),
            T,
            Duration::from_millis(300),
            |last| match m.status(n) {
                Ok(s) => {
                    let ok = s["enabled"] == true
                        && s["peers_expected"] == u64::from(N - 1)
                        && s["peers_configured"] == s["peers_expected"]
                        && s["peers"]
                            .as_array()
                            .is_some_and(|p| p.iter().all(|p| p["path"] == "tunnel"));
                    *last = s.to_string();
                    Ok(ok.then_some(s))
                }
                Err(e) => {
                    *last = e;
                    Ok(None)
                }
            },
        )
        .unwrap_or_else(|e| {
            let all: Vec<String> = nodes.iter().map(diag).collect();
            panic!(
                "{e}\n{}\nmeshd log:\n{}",
                all.join("\n"),
                n.meshd.log_tail(4000)
            )
        });
        assert_eq!(st["mode"], "opportunistic", "{st}");
        assert_eq!(st["device"], n.dev.ifname.as_str(), "{st}");
        let ago = st["last_handshake_ago_seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("no handshake: {st}"));
        assert!(ago <= 30, "last handshake {ago}s ago: {st}");
        assert!(st["key_age_seconds"].as_u64().is_some(), "{st}");
        for p in st["peers"].as_array().unwrap() {
            assert!(p["last_handshake_ago_seconds"].as_u64().is_some(), "{st}");
        }
        // The configured 5 s keepalive is programmed as 6 s.
        let wg = n.host.exec("wg", &["show", &n.dev.ifname])?;
        assert!(wg.contains("persistent keepalive: every 6 seconds"), "{wg}");
    }
    // The tunnel routes (table 202) follow at meshd's next step.
    for (idx, n) in nodes.iter().enumerate() {
        let want: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != idx)
            .map(|(_, o)| o.cidr.clone())
            .collect();
        wait_for(
            &format!("{} tunnel routes", n.host.name()),
            T,
            Duration::from_millis(200),
            |last| {
                let t = n.host.ip(&["route", "show", "table", "202"])?;
                *last = t.clone();
                Ok(want.iter().all(|c| t.contains(c.as_str())).then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nmeshd log:\n{}", n.meshd.log_tail(4000)));
    }
    eprintln!(
        "all {N} nodes encrypt to every peer after {:?}",
        started.elapsed()
    );

    // Pod-to-pod pings across nodes, through the tunnel: every ping answered, and each
    // sender's WireGuard device sent at least one encrypted packet per echo.
    const COUNT: u32 = 10;
    for a in 0..nodes.len() {
        for b in (0..nodes.len()).filter(|&b| b != a) {
            let before = wg_tx_bytes(&nodes[a]);
            let stats = nodes[a].pod.as_ref().unwrap().ping(
                &nodes[b].pod_ip,
                COUNT,
                Duration::from_millis(20),
            )?;
            let sent = wg_tx_bytes(&nodes[a]) - before;
            // `ping -c N -w D` sends until N replies came: on a busy machine late replies make
            // it send more and exit with some still in flight (seen: 12/12, 25/23).
            assert!(
                stats.received >= COUNT,
                "p{} -> p{}: {stats:?}",
                a + 1,
                b + 1
            );
            assert!(
                sent >= u64::from(COUNT) * 84,
                "p{} -> p{}: the device sent only {sent} bytes for {COUNT} pings: not through WireGuard\n{}\n{}",
                a + 1,
                b + 1,
                diag(&nodes[a]),
                diag(&nodes[b])
            );
        }
    }
    // Text output names the peers too.
    let out = Command::new(ironctl)
        .args(["encryption", "--meshd"])
        .arg(&nodes[0].sock)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 configured / 2 expected") && text.contains("n2") && text.contains("n3"),
        "{text}"
    );
    for n in nodes {
        assert!(n.meshd.is_running(), "{}", n.meshd.log_tail(3000));
    }
    Ok(())
}
