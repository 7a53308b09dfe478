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
//! (These stages turn the first-contact hold off: they measure programming, not handshakes.)
//!
//! **rotation_lost_packets**: two nodes, pings at 100/s from node a to node b through the
//! tunnel; b rotates its key (`rotate_key`), a reconciles with b's new record at once; lost =
//! sent − received of 300 pings. The new record is handed over directly here; in a cluster the
//! etcd watch latency adds to the window.
//!
//! **iperf3_wireguard_to_plain_ratio**: one iperf3 TCP stream for 5 s between two nodes over a
//! veth pair, first in clear (node IPs), then through their wireguard-go tunnel; the ratio of
//! received bit rates (plus both rates).
//!
//! **first_contact_p99_ms** (and p50, max): 20 fresh pairs (new keys, new devices), the two
//! programmed at once or up to 600 ms apart in either order, each reconciled again at its
//! report's `wake_at` (as meshd does); time from the later programming to the first answered
//! ping (50/s) through the tunnel. `crypto::wireguard::contact` makes the lower key initiate.
//!
//! Every two-node stage waits for the handshake on both sides (driving the first-contact
//! holds) before it measures. `scripts/bench crypto` writes the JSON to
//! target/bench/crypto.json.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use interop_tests::{Host, Lab, WgDevice};
use ironmesh_crypto::KeyStore;
use ironmesh_crypto::PrivateKey;
use ironmesh_crypto::wireguard::{
    ContactRole, FirstContact, MeshNode, PeerPolicy, Reconciler, UserspaceBackend,
    WireGuardBackend, ensure_device, rotate_key,
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
    // Programming cost only: no first-contact holds (with them, half the peers would be
    // restarted once their hold ends, which is a separate, one-off cost).
    let r = Reconciler::new(backend, "local", POLICY)
        .with_first_contact(FirstContact::new(Duration::ZERO));
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

type Side = (WgDevice, KeyStore, Reconciler<UserspaceBackend>);

/// Two nodes `<p>a` and `<p>b` on one veth, each with a wireguard-go device programmed by the
/// reconciler; node i's tunnel network is 10.99.i.0/24 (10.99.i.1 on its device).
fn two_nodes(lab: &Lab, p: &str) -> (Host, Host, Vec<Side>) {
    let a = lab.host(&format!("{p}a")).unwrap();
    let b = lab.host(&format!("{p}b")).unwrap();
    lab.link(&a, &["192.0.2.1/24"], &b, &["192.0.2.2/24"])
        .unwrap();
    let policy = PeerPolicy {
        persistent_keepalive: 25,
        ..POLICY
    };
    let mut side = Vec::new();
    for (i, h) in [(1u8, &a), (2u8, &b)] {
        let dev = WgDevice::start(h, 51820).unwrap();
        let store = KeyStore::load_or_create(lab.dir().join(format!("{p}{i}-state"))).unwrap();
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
            Reconciler::new(backend, format!("{p}{i}"), policy),
        ));
    }
    let recs = vec![record(p, 1, &side[0].1), record(p, 2, &side[1].1)];
    for s in &side {
        s.2.reconcile(&recs).unwrap();
    }
    settle(&side, &recs);
    (a, b, side)
}

/// Reconciles both sides at their reports' `wake_at` until both have a handshake (the
/// responder of a new pair initiates when its first-contact hold ends).
fn settle(side: &[Side], recs: &[MeshNode]) {
    let t = Instant::now();
    loop {
        let done = side.iter().all(|s| {
            let dev = s.2.backend().device().unwrap();
            !dev.peers.is_empty() && dev.peers.values().all(|p| p.last_handshake.is_some())
        });
        if done {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "no handshake between the two nodes in 12 s"
        );
        for s in side {
            s.2.reconcile(recs).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (initiator, responder) programming offsets in ms, cycled over the pairs.
const CONTACT_ORDERS_MS: [(u64, u64); 5] = [(0, 0), (0, 100), (100, 0), (0, 600), (600, 0)];
const CONTACT_PAIRS: usize = 20;

/// Steps `r` at `at`, then at each `wake_at` (at most every second) until `stop`.
fn drive(
    r: &Reconciler<UserspaceBackend>,
    recs: &[MeshNode],
    at: Instant,
    programmed: &Mutex<Option<Instant>>,
    stop: &AtomicBool,
) {
    while Instant::now() < at {
        std::thread::sleep(Duration::from_millis(1));
    }
    *programmed.lock().unwrap() = Some(Instant::now());
    let mut wake = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= wake {
            let now = SystemTime::now();
            let rep = r.reconcile_at(recs, now).expect("reconcile");
            let next = rep.wake_at.map_or(Duration::from_secs(1), |t| {
                t.duration_since(now).unwrap_or_default() + Duration::from_millis(5)
            });
            wake = Instant::now() + next.min(Duration::from_secs(1));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills the ping by PID however the pair ends.
struct Pinger(Child);

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One fresh pair: time from the later programming to the first answered ping.
fn first_contact(i: usize) -> Duration {
    let lab = Lab::new("crypto-bench-fc").expect("lab");
    let a = lab.host("fa").unwrap();
    let b = lab.host("fb").unwrap();
    lab.link(&a, &["192.0.2.1/24"], &b, &["192.0.2.2/24"])
        .unwrap();
    let policy = PeerPolicy {
        persistent_keepalive: 25,
        ..POLICY
    };
    let mut side = Vec::new();
    for (n, h) in [(1u8, &a), (2u8, &b)] {
        let dev = WgDevice::start(h, 51820).unwrap();
        let store = KeyStore::load_or_create(lab.dir().join(format!("fc{n}-state"))).unwrap();
        let backend = UserspaceBackend::new(&dev.ifname);
        ensure_device(&backend, store.private_key(), 51820).unwrap();
        h.ip(&[
            "addr",
            "add",
            &format!("10.99.{n}.1/24"),
            "dev",
            &dev.ifname,
        ])
        .unwrap();
        h.ip(&["link", "set", &dev.ifname, "up"]).unwrap();
        h.route_add(&format!("10.99.{}.0/24 dev {}", 3 - n, dev.ifname))
            .unwrap();
        side.push((
            dev,
            store,
            Reconciler::new(backend, format!("fc{n}"), policy),
        ));
    }
    let recs = vec![record("fc", 1, &side[0].1), record("fc", 2, &side[1].1)];
    let (ka, kb) = (side[0].1.public_key(), side[1].1.public_key());
    let (init_off, resp_off) = CONTACT_ORDERS_MS[i % CONTACT_ORDERS_MS.len()];
    let offsets = match ironmesh_crypto::wireguard::contact::role(&ka, &kb) {
        ContactRole::Initiator => [init_off, resp_off],
        ContactRole::Responder => [resp_off, init_off],
    };
    let mut pinger = Pinger(
        Command::new("ip")
            .args(["netns", "exec", a.netns(), "ping", "-n", "-q", "-c", "1"])
            .args(["-i", "0.02", "-W", "1", "-w", "10", "10.99.2.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping"),
    );
    std::thread::sleep(Duration::from_millis(100));
    let stop = AtomicBool::new(false);
    let programmed = [Mutex::new(None), Mutex::new(None)];
    let start = Instant::now() + Duration::from_millis(20);
    let answered = std::thread::scope(|sc| {
        for (n, s) in side.iter().enumerate() {
            let (recs, programmed, stop) = (&recs, &programmed[n], &stop);
            let at = start + Duration::from_millis(offsets[n]);
            sc.spawn(move || drive(&s.2, recs, at, programmed, stop));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let answered = loop {
            match pinger.0.try_wait() {
                Ok(Some(st)) => break st.success().then(Instant::now),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => break None,
            }
        };
        stop.store(true, Ordering::Relaxed);
        answered
    });
    let both = programmed
        .iter()
        .map(|p| p.lock().unwrap().expect("programmed"))
        .max()
        .unwrap();
    let answered = answered.unwrap_or_else(|| panic!("pair {i}: no answered ping in 10 s"));
    answered.saturating_duration_since(both)
}

fn record(p: &str, i: u8, store: &KeyStore) -> MeshNode {
    MeshNode {
        name: format!("{p}{i}"),
        wireguard_public_key: Some(store.public_key().to_string()),
        ipv4: Some(Ipv4Addr::new(192, 0, 2, i)),
        ipv6: None,
        pod_cidrs: vec![format!("10.99.{i}.0/24").parse().unwrap()],
    }
}

/// One iperf3 TCP run of `seconds` from `a` to `dst` (server in `b`); bits per second received.
fn iperf(a: &Host, b: &Host, dst: &str, seconds: u32) -> f64 {
    let server = b
        .spawn(
            &format!("iperf3-server-{dst}"),
            "iperf3",
            &["-s", "-1", "-p", "5201"].map(String::from),
        )
        .unwrap();
    let t = Instant::now();
    while !b.exec("ss", &["-ltnH"]).unwrap().contains(":5201") {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "iperf3 server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = a
        .exec(
            "iperf3",
            &[
                "-c",
                dst,
                "-p",
                "5201",
                "-t",
                &seconds.to_string(),
                "--json",
            ],
        )
        .expect("iperf3 client");
    server.terminate();
    let v: Value = serde_json::from_str(&out).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
}

/// iperf3 through the underlay in clear, then through WireGuard: (plain, wireguard) bit/s.
fn throughput(lab: &Lab) -> (f64, f64) {
    let (a, b, _side) = two_nodes(lab, "t");
    let warm = a.ping("10.99.2.1", 3, Duration::from_millis(50)).unwrap();
    assert!(warm.received >= 2, "tunnel up: {warm:?}");
    let plain = iperf(&a, &b, "192.0.2.2", 5);
    let wg = iperf(&a, &b, "10.99.2.1", 5);
    (plain, wg)
}

/// Two nodes, a 100/s ping through the tunnel, b rotates; returns (sent, received).
fn rotation(lab: &Lab) -> (u32, u32) {
    let (a, _b, mut side) = two_nodes(lab, "r");
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
    let recs = vec![record("r", 1, &side[0].1), record("r", 2, &side[1].1)];
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
    let (plain, wg) = throughput(&lab);
    let ratio = wg / plain;
    println!(
        "iperf3 TCP 5 s: plaintext {:.2} Gbit/s, WireGuard {:.3} Gbit/s, ratio {ratio:.3}",
        plain / 1e9,
        wg / 1e9
    );
    json["iperf3_plain_gbit_s"] = json!((plain / 1e7).round() / 100.0);
    json["iperf3_wireguard_gbit_s"] = json!((wg / 1e6).round() / 1000.0);
    json["iperf3_wireguard_to_plain_ratio"] = json!((ratio * 1e4).round() / 1e4);
    let mut contact: Vec<Duration> = (0..CONTACT_PAIRS).map(first_contact).collect();
    contact.sort();
    let pct = |q: f64| contact[((q * contact.len() as f64).ceil() as usize).max(1) - 1];
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    println!(
        "first contact over {CONTACT_PAIRS} fresh pairs: p50 {} ms, p99 {} ms, max {} ms",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(*contact.last().unwrap())
    );
    json["first_contact_pairs"] = json!(CONTACT_PAIRS);
    json["first_contact_p50_ms"] = json!(ms(pct(0.5)));
    json["first_contact_p99_ms"] = json!(ms(pct(0.99)));
    json["first_contact_max_ms"] = json!(ms(*contact.last().unwrap()));
    json["backend"] = json!("userspace-uapi (wireguard-go 0.0.20220316)");
    json["notes"] = json!(
        "rotation: record handed over directly (no etcd latency); iperf3: one TCP stream over a veth pair, wireguard-go (userspace) vs clear, 2 shared cores: compare the ratio, not absolutes"
    );
    if let Ok(path) = std::env::var("IRONMESH_BENCH_JSON") {
        let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}
