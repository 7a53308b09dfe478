//! meshd drives WireGuard (issue 8, wiring): three nodes on one switch, each running the meshd
//! binary with `[encryption] mode = "opportunistic"` and a wireguard-go device, one etcd.
//! meshd allocates each node's PodCIDR; a pod (netns) per node gets an address in it, and the
//! nodes route each other's PodCIDRs in clear through the underlay (as native routing would).
//! meshd must then make every node a WireGuard peer of every other, and move pod traffic into
//! the tunnel after the first handshake. Checked with `ironctl encryption status -o json` on
//! every node and the devices' own transfer counters while pods ping each other.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use interop_tests::bgpd;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use serde_json::Value;

const N: u8 = 3;
const WG_PORT: u16 = 51820;
const T: Duration = Duration::from_secs(30);

/// Builds meshd and ironctl with the profile of this test binary; returns their paths.
fn build_binaries() -> (PathBuf, PathBuf) {
    let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")]).unwrap();
    (b[0].clone(), b[1].clone())
}

struct Node {
    host: Host,
    sock: PathBuf,
    meshd: Process,
    dev: WgDevice,
    pod_ip: String,
    pod: Option<Host>,
}

fn encryption_status(ironctl: &Path, n: &Node) -> std::result::Result<Value, String> {
    let out = Command::new(ironctl)
        .args(["encryption", "--meshd"])
        .arg(&n.sock)
        .args(["-o", "json", "status"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))
}

/// Bytes sent by the device, summed over its peers (`wg show <if> transfer`).
fn wg_tx_bytes(n: &Node) -> u64 {
    n.host
        .exec("wg", &["show", &n.dev.ifname, "transfer"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// What a failed handshake or path is diagnosed with: rules, table 202, the device as `wg`
/// shows it (keys public only, endpoints, latest handshakes) and the nft counters.
fn diag(n: &Node) -> String {
    format!(
        "{}: rules:\n{}\ntable 202:\n{}\nwg:\n{}\nnft:\n{}",
        n.host.name(),
        n.host.ip(&["rule"]).unwrap_or_default(),
        n.host
            .ip(&["route", "show", "table", "202"])
            .unwrap_or_default(),
        n.host
            .exec("wg", &["show", &n.dev.ifname])
            .unwrap_or_default(),
        n.host
            .exec("nft", &["list", "table", "inet", "ironmesh_crypto"])
            .unwrap_or_default()
    )
}

// Was flaky (CI 2 of 5, here 1 of 33 runs): a pair that added each other at the same moment
// crossed initiations, and with keepalive 5 s they crossed again every 5 s. meshd now programs
// at least 6 s (`crypto::wireguard::effective_keepalive`, `wireguard_handshake_crossing`).
// A failure prints every node's `wg show`, rules, table 202 and nft table.
#[test]
fn e2e_encryption_opportunistic_pods_ping_through_wireguard() -> Result<()> {
    let (meshd_bin, ironctl) = build_binaries();
    let lab = Lab::new("e2e_encryption")?;
    let sw = lab.switch("sw")?;
    let eh = lab.host("etcd")?;
    lab.attach(&eh, &["192.0.2.100/24"], &sw)?;
    let etcd = EtcdCluster::start(&[(&eh, "192.0.2.100".parse::<IpAddr>().unwrap())])?;

    let mut nodes = Vec::new();
    for i in 1..=N {
        let name = format!("n{i}");
        let host = lab.host(&name)?;
        lab.attach(&host, &[&format!("192.0.2.{i}/24")], &sw)?;
        let dev = WgDevice::start(&host, WG_PORT)?;
        host.ip(&["link", "set", &dev.ifname, "up"])?;
        let state = host.path("meshd-state");
        let conf = host.path("meshd.toml");
        std::fs::write(
            &conf,
            format!(
                "[node]\nname = \"{name}\"\ncluster = \"red\"\nstate_dir = {state:?}\n\n\
                 [encryption]\nmode = \"opportunistic\"\n\n\
                 [encryption.wireguard]\nlisten_port = {WG_PORT}\npersistent_keepalive = 5\n\n\
                 [mesh]\netcd_endpoints = [\"{}\"]\ncluster_id = 1\nlease_ttl = 4\n\
                 node_ipv4 = \"192.0.2.{i}\"\nwireguard_device = \"{}\"\n\
                 pod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 24 }}]\n",
                etcd.endpoints(),
                dev.ifname
            ),
        )
        .unwrap();
        let sock = host.path("meshd.sock");
        let args: Vec<String> = [
            "--config",
            &conf.display().to_string(),
            "--api",
            &sock.display().to_string(),
            "--log",
            "info,ironmesh_meshd=debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let meshd = host.spawn("meshd", &meshd_bin.display().to_string(), &args)?;
        nodes.push(Node {
            host,
            sock,
            meshd,
            dev,
            pod_ip: String::new(),
            pod: None,
        });
    }

    // Each node's PodCIDR as meshd allocated it; a pod in it; clear routes between nodes.
    let mut cidrs = Vec::new();
    for (idx, n) in nodes.iter().enumerate() {
        let key = format!(
            "ironmesh/v1/clusters/red/ipam/podcidrs-by-node/n{}",
            idx + 1
        );
        let v = wait_for("PodCIDR in etcd", T, Duration::from_millis(200), |_| {
            etcd.get(0, &key)
        })
        .unwrap_or_else(|e| panic!("{e}\nmeshd log:\n{}", n.meshd.log_tail(3000)));
        let v: Value = serde_json::from_str(&v).unwrap();
        let cidr: ipnet::Ipv4Net = v["cidrs"][0].as_str().unwrap().parse().unwrap();
        cidrs.push(cidr);
    }
    for (idx, n) in nodes.iter_mut().enumerate() {
        let i = idx + 1;
        let cidr = cidrs[idx];
        let base = u32::from(cidr.network());
        let gw = std::net::Ipv4Addr::from(base + 1);
        let pod_ip = std::net::Ipv4Addr::from(base + 2);
        let pod = lab.host(&format!("p{i}"))?;
        let link = lab.link(
            &pod,
            &[&format!("{pod_ip}/{}", cidr.prefix_len())],
            &n.host,
            &[&format!("{gw}/{}", cidr.prefix_len())],
        )?;
        pod.ip(&["link", "set", &link.a_if, "mtu", "1420"])?;
        n.host.ip(&["link", "set", &link.b_if, "mtu", "1420"])?;
        pod.route_add(&format!("default via {gw}"))?;
        for (j, other) in cidrs.iter().enumerate().filter(|(j, _)| *j != idx) {
            n.host
                .route_add(&format!("{other} via 192.0.2.{}", j + 1))?;
        }
        n.pod_ip = pod_ip.to_string();
        n.pod = Some(pod);
    }

    // Every node: peers configured == expected == 2, all in the tunnel, a recent handshake.
    let started = Instant::now();
    for n in &nodes {
        let st = wait_for(
            &format!("{} encrypted to every peer", n.host.name()),
            T,
            Duration::from_millis(300),
            |last| match encryption_status(&ironctl, n) {
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
        let want: Vec<String> = cidrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != idx)
            .map(|(_, c)| c.to_string())
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
    let out = Command::new(&ironctl)
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
    for n in &nodes {
        assert!(n.meshd.is_running(), "{}", n.meshd.log_tail(3000));
    }
    Ok(())
}
