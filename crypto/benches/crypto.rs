//! WireGuard programming cost through the userspace backend (UAPI to wireguard-go in the lab),
//! and packets lost while a node rotates its key.
//!
//! For N in 1,000 and 5,000 peers, each on a fresh wireguard-go device:
//! - **program_Nk_peers_seconds**: one `Reconciler::reconcile` from an empty device to N peers
//!   (N node records → validated desired peers → `get` → diff → one `set` of N additions);
//! - **noop_Nk_seconds**: the next reconcile, which reads N peers back and changes nothing;
//! - **repair_one_Nk_seconds**: one peer's allowed IPs changed by hand, then a reconcile;
//! - **remove_all_Nk_seconds**: reconcile to an empty node list.
//!
//! **rotation_lost_packets**: two nodes, pings at 100/s from node a to node b through the
//! tunnel; b rotates its key (`rotate_key`), a reconciles with b's new record at once; lost =
//! sent − received of 300 pings. The new record is handed over directly here; in a cluster the
//! etcd watch latency adds to the window.
//!
//! Not measured yet (issue 5): iperf3 throughput through WireGuard vs plaintext. `scripts/bench
//! crypto` writes the JSON to target/bench/crypto.json.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use interop_tests::{Host, Lab, WgDevice};
use ironmesh_crypto::KeyStore;
use ironmesh_crypto::PrivateKey;
use ironmesh_crypto::wireguard::{
    MeshNode, PeerPolicy, Reconciler, UserspaceBackend, WireGuardBackend, ensure_device, rotate_key,
};
use serde_json::{Value, json};

const POLICY: PeerPolicy = PeerPolicy {
    listen_port: 51820,
    node_encryption: true,
    persistent_keepalive: 0,
};

/// `n` node records with fresh keys: node i at 100.64.x.y with PodCIDR 10.x.y.0/24.
fn nodes(n: u32) -> Vec<MeshNode> {
    (0..n)
        .map(|i| {
            let (x, y) = ((i >> 8) as u8, i as u8);
            MeshNode {
                name: format!("node-{i}"),
                wireguard_public_key: Some(PrivateKey::generate().public_key().to_string()),
                ipv4: Some(Ipv4Addr::new(100, 64, x, y)),
                ipv6: None,
                pod_cidrs: vec![format!("10.{x}.{y}.0/24").parse().unwrap()],
            }
        })
        .collect()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 1e4
}

fn program(lab: &Lab, host: &Host, n: u32) -> Value {
    let dev = WgDevice::start(host, 51820 + (n / 1000) as u16).expect("wireguard-go");
    let backend = UserspaceBackend::new(&dev.ifname).with_timeout(Duration::from_secs(120));
    let r = Reconciler::new(backend, "local", POLICY);
    let list = nodes(n);

    let t = Instant::now();
    let report = r.reconcile(&list).expect("program");
    let program = t.elapsed();
    assert_eq!(report.added(), n as usize, "{:?}", report.rejected);

    let t = Instant::now();
    let report = r.reconcile(&list).expect("noop");
    let noop = t.elapsed();
    assert!(report.is_clean());

    let victim = list[n as usize / 2].wireguard_public_key.clone().unwrap();
    host.exec(
        "wg",
        &[
            "set",
            &dev.ifname,
            "peer",
            &victim,
            "allowed-ips",
            "192.0.2.0/24",
        ],
    )
    .expect("wg set");
    let t = Instant::now();
    let report = r.reconcile(&list).expect("repair");
    let repair = t.elapsed();
    assert_eq!(report.updated(), 1);

    let t = Instant::now();
    let report = r.reconcile(&[]).expect("remove all");
    let remove = t.elapsed();
    assert_eq!(report.removed(), n as usize);
    assert!(r.backend().device().unwrap().peers.is_empty());
    let _ = lab;
    dev.process.terminate();
    json!({
        "peers": n,
        "program_seconds": secs(program),
        "noop_seconds": secs(noop),
        "repair_one_seconds": secs(repair),
        "remove_all_seconds": secs(remove),
    })
}

/// Two nodes, a 100/s ping through the tunnel, b rotates; returns (sent, received).
fn rotation(lab: &Lab) -> (u32, u32) {
    let a = lab.host("ra").unwrap();
    let b = lab.host("rb").unwrap();
    lab.link(&a, &["192.0.2.1/24"], &b, &["192.0.2.2/24"])
        .unwrap();
    let policy = PeerPolicy {
        persistent_keepalive: 25,
        ..POLICY
    };
    let mut side = Vec::new();
    for (i, h) in [(1u8, &a), (2u8, &b)] {
        let dev = WgDevice::start(h, 51820).unwrap();
        let store = KeyStore::load_or_create(lab.dir().join(format!("r{i}-state"))).unwrap();
        let backend = UserspaceBackend::new(&dev.ifname);
        ensure_device(&backend, store.private_key(), 51820).unwrap();
        h.ip(&[
            "addr",
            "add",
            &format!("10.99.{i}.1/24"),
            "dev",
            &dev.ifname,
        ])
        .unwrap();
        h.ip(&["link", "set", &dev.ifname, "up"]).unwrap();
        let other = 3 - i;
        h.route_add(&format!("10.99.{other}.0/24 dev {}", dev.ifname))
            .unwrap();
        side.push((
            dev,
            store,
            Reconciler::new(backend, format!("r{i}"), policy),
        ));
    }
    let record = |i: u8, store: &KeyStore| MeshNode {
        name: format!("r{i}"),
        wireguard_public_key: Some(store.public_key().to_string()),
        ipv4: Some(Ipv4Addr::new(192, 0, 2, i)),
        ipv6: None,
        pod_cidrs: vec![format!("10.99.{i}.0/24").parse().unwrap()],
    };
    let recs = vec![record(1, &side[0].1), record(2, &side[1].1)];
    for s in &side {
        s.2.reconcile(&recs).unwrap();
    }
    let warm = a.ping("10.99.2.1", 3, Duration::from_millis(50)).unwrap();
    assert!(warm.received >= 2, "tunnel up: {warm:?}");

    let pinger = a
        .spawn(
            "rotation-ping",
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                "300",
                "-i",
                "0.01",
                "-W",
                "1",
                "10.99.2.1",
            ]
            .map(String::from),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (_, store_b, rec_b) = &mut side[1];
    rotate_key(store_b, rec_b.backend()).unwrap();
    let recs = vec![record(1, &side[0].1), record(2, &side[1].1)];
    for s in &side {
        s.2.reconcile(&recs).unwrap();
    }
    let t = Instant::now();
    while pinger.is_running() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = pinger.log_tail(4096);
    let line = log
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {log}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn main() {
    let lab = Lab::new("crypto-bench").expect("the lab needs root and wireguard-go");
    let host = lab.host("node").unwrap();
    let mut json = json!({});
    println!(
        "{:>6}  {:>12}  {:>10}  {:>12}  {:>12}",
        "peers", "program (s)", "noop (s)", "repair 1 (s)", "remove (s)"
    );
    for n in [1_000u32, 5_000] {
        let r = program(&lab, &host, n);
        println!(
            "{:>6}  {:>12.4}  {:>10.4}  {:>12.4}  {:>12.4}",
            n,
            r["program_seconds"].as_f64().unwrap(),
            r["noop_seconds"].as_f64().unwrap(),
            r["repair_one_seconds"].as_f64().unwrap(),
            r["remove_all_seconds"].as_f64().unwrap(),
        );
        let k = n / 1000;
        json[format!("program_{k}k_peers_seconds")] = r["program_seconds"].clone();
        json[format!("noop_{k}k_peers_seconds")] = r["noop_seconds"].clone();
        json[format!("repair_one_{k}k_peers_seconds")] = r["repair_one_seconds"].clone();
        json[format!("remove_all_{k}k_peers_seconds")] = r["remove_all_seconds"].clone();
    }
    let (sent, received) = rotation(&lab);
    let lost = sent - received.min(sent);
    println!("rotation under 100 pings/s: {sent} sent, {received} received, {lost} lost");
    json["rotation_lost_packets"] = json!(lost);
    json["rotation_pings_sent"] = json!(sent);
    json["backend"] = json!("userspace-uapi (wireguard-go 0.0.20220316)");
    json["notes"] = json!(
        "rotation: record handed over directly (no etcd latency); iperf3 WireGuard/plaintext ratio not measured yet"
    );
    if let Ok(path) = std::env::var("IRONMESH_BENCH_JSON") {
        let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}
