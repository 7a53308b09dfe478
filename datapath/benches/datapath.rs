//! `scripts/bench datapath`: ns/packet through pod_egress (BPF_PROG_TEST_RUN) with 1k, 10k
//! and 100k services and 100k IP cache entries, side by side with kube-proxy-style iptables
//! DNAT chains holding the same services, and service map updates per second. Prints a
//! table; writes JSON to $IRONMESH_BENCH_JSON. Root, bpffs and iptables (scripts/setup).
//! Then iperf3 pod-to-pod throughput across two nodes: native and VXLAN through our programs
//! vs plain veth routing without BPF, measured one after the other in the same run (ratios).
//! `scripts/bench datapath --ours-only` skips the iptables and iperf3 sides (and the JSON).
//!
//! How it measures:
//! - ours: one BPF_PROG_TEST_RUN per packet on a fresh copy (`repeat` would re-run the
//!   program on the already translated packet), the kernel's own duration, averaged.
//!   "established" = the flow's conntrack entry exists (every packet but a flow's first);
//!   "new flow" = service lookup, backend choice, two conntrack inserts, DNAT. The source
//!   is a registered endpoint (so the policy path runs: no policy selects it).
//! - iptables: the rules kube-proxy (iptables mode) writes per service — a KUBE-SERVICES
//!   match per service, a KUBE-SVC chain picking one of 2 endpoints with `statistic`, a
//!   KUBE-SEP chain with the DNAT — in nat OUTPUT of a network namespace of our own. The
//!   very same TCP SYNs are sent through a raw socket, each a new connection (nat rules
//!   only see a connection's first packet); the time per packet minus the time with an
//!   empty KUBE-SERVICES chain is what the rules cost. The ratio compares it with our
//!   new-flow time: both are "first packet of a connection to a service".
#![allow(unsafe_code)] // unshare(2) for the iptables namespace; see SAFETY below

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::Instant;

use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::lb::{BackendState, Proto};
use ironmesh_datapath::pin::PinRoot;
use ironmesh_datapath::{Backend, Datapath, Endpoint, Program, Service};

#[path = "support/throughput.rs"]
mod throughput;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SIZES: [u32; 3] = [1_000, 10_000, 100_000];
const IPCACHE_ENTRIES: u32 = 100_000;
const BACKEND_POOL: u32 = 2_000;
const FLOWS: u32 = 2_000;
const ESTABLISHED_RUNS: u32 = 100_000;
/// Kept so that every round's conntrack entries fit the LRU map (262144): no eviction
/// cost is mixed into the figures.
const NEW_FLOW_RUNS: u32 = 20_000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const IPERF_SECONDS: u32 = 5;
/// Runs per mode; the median is reported.
const IPERF_ROUNDS: usize = 3;

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 + i) // 198.18.0.0/15, the benchmarking range
}

fn backend_ip(b: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0ac8_0000 + b) // 10.200.0.0/16
}

/// The 2 backends of service `i`, from a shared pool (as pods back several services).
fn backends_of(i: u32) -> [u32; 2] {
    [(i * 2) % BACKEND_POOL, (i * 2 + 1) % BACKEND_POOL]
}

/// A deterministic spread of service indexes (xorshift).
struct Spread(u32);

impl Spread {
    fn next(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0 % n
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// IPv4 + TCP SYN with valid checksums (what both paths get).
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let c = fold(sum16(&tcp, sum16(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

fn frame(ip_packet: &[u8]) -> Vec<u8> {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    p.extend_from_slice(ip_packet);
    p
}

fn service(i: u32) -> Service {
    Service {
        id: i + 1,
        vip: IpAddr::V4(vip(i)),
        port: 80,
        proto: Proto::Tcp,
        maglev: false, // a Maglev table is 64 KiB per service: 100k would not fit the map
        backends: backends_of(i)
            .map(|b| Backend {
                id: b + 1,
                ip: IpAddr::V4(backend_ip(b)),
                port: 8080,
                state: BackendState::Active,
            })
            .to_vec(),
    }
}

/// Mean kernel-measured ns over single runs of fresh copies.
fn mean_ns(dp: &Datapath, packets: &[Vec<u8>], runs: u32) -> Res<f64> {
    let mut total = 0u128;
    for i in 0..runs {
        let p = &packets[i as usize % packets.len()];
        total += dp.run(Program::PodEgress, p, 1)?.duration.as_nanos();
    }
    Ok(total as f64 / f64::from(runs))
}

#[derive(Debug, Default)]
struct Ours {
    run_floor_ns: f64,
    floor_ns: f64,
    established_ns: BTreeMap<u32, f64>,
    hot_ns: BTreeMap<u32, f64>,
    new_flow_ns: BTreeMap<u32, f64>,
    upserts_per_s: BTreeMap<u32, f64>,
    updates_per_s: f64,
}

fn bench_ours(root: &PinRoot) -> Res<Ours> {
    let mut dp = Datapath::load(root)?;
    let mut out = Ours::default();
    for i in 0..IPCACHE_ENTRIES {
        let ip = Ipv4Addr::from(0x0a40_0000 + i); // 10.64.0.0/10: pods of other nodes
        let v = IpcacheValue {
            identity: 1000 + i % 5000,
            ..Default::default()
        };
        dp.ipcache_upsert(IpAddr::V4(ip).into(), v)?;
    }
    dp.ipcache_upsert(
        IpAddr::V4(CLIENT).into(),
        IpcacheValue {
            identity: 4242,
            ..Default::default()
        },
    )?;
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: 4242,
        ifindex: 0,
        addresses: vec![IpAddr::V4(CLIENT)],
    })?;
    // The floor of the method: a frame pod_egress returns on at once (not IP).
    let mut arp = frame(&syn(CLIENT, 1, CLIENT, 1));
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    mean_ns(&dp, &[arp.clone()], 10_000)?; // warm up
    out.run_floor_ns = mean_ns(&dp, &[arp], ESTABLISHED_RUNS)?;
    let not_a_service = vec![frame(&syn(CLIENT, 1, Ipv4Addr::new(10, 64, 0, 9), 80))];
    out.floor_ns = mean_ns(&dp, &not_a_service, ESTABLISHED_RUNS)?;

    let mut have = 0;
    let mut sport_base = 1024u32;
    for n in SIZES {
        let t = Instant::now();
        for i in have..n {
            dp.upsert_service(&service(i))?;
        }
        out.upserts_per_s
            .insert(n, f64::from(n - have) / t.elapsed().as_secs_f64());
        have = n;

        // Established: FLOWS flows to services spread over all n, each opened once.
        let mut spread = Spread(0x9e37_79b9 ^ n);
        let flows: Vec<Vec<u8>> = (0..FLOWS)
            .map(|f| {
                let dst = vip(spread.next(n));
                frame(&syn(CLIENT, (10_000 + f) as u16, dst, 80))
            })
            .collect();
        for p in &flows {
            let r = dp.run(Program::PodEgress, p, 1)?;
            assert_eq!(r.verdict, 0, "a service packet was dropped");
            assert_ne!(&r.packet[30..34], &p[30..34], "not translated");
        }
        out.established_ns
            .insert(n, mean_ns(&dp, &flows, ESTABLISHED_RUNS)?);
        // One flow over and over: its map entries stay in the CPU caches.
        out.hot_ns
            .insert(n, mean_ns(&dp, &flows[..1], ESTABLISHED_RUNS)?);

        // New flows: every packet a connection never seen (source ip/port pairs).
        let fresh: Vec<Vec<u8>> = (0..NEW_FLOW_RUNS)
            .map(|k| {
                let s = sport_base + k;
                let src = Ipv4Addr::from(u32::from(CLIENT) + (s >> 16) * 256);
                frame(&syn(src, (s & 0xffff) as u16 | 1, vip(spread.next(n)), 80))
            })
            .collect();
        sport_base += NEW_FLOW_RUNS;
        out.new_flow_ns
            .insert(n, mean_ns(&dp, &fresh, NEW_FLOW_RUNS)?);
        eprintln!(
            "ours {n}: established {:.0} ns (one hot flow {:.0} ns), new flow {:.0} ns",
            out.established_ns[&n], out.hot_ns[&n], out.new_flow_ns[&n]
        );
    }

    // Updates of existing services (backend set changes), as a reconciler does them.
    let count = 10_000;
    let t = Instant::now();
    for i in 0..count {
        let mut s = service(i);
        s.backends[1].state = if i % 2 == 0 {
            BackendState::Terminating
        } else {
            BackendState::Active
        };
        dp.upsert_service(&s)?;
    }
    out.updates_per_s = f64::from(count) / t.elapsed().as_secs_f64();
    Ok(out)
}

// ---- kube-proxy-style iptables ----

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Res<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e} (scripts/setup installs it)"))?;
    if let Some(s) = stdin {
        child.stdin.take().ok_or("stdin")?.write_all(s.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What kube-proxy (iptables mode) writes for `n` ClusterIP services with 2 endpoints each.
fn kube_proxy_rules(n: u32) -> String {
    let mut s = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..n {
        let _ = writeln!(s, ":KUBE-SVC-{i:016X} - [0:0]");
        for e in 0..2 {
            let _ = writeln!(s, ":KUBE-SEP-{i:014X}{e:02X} - [0:0]");
        }
    }
    s.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/svc{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{i:016X}",
            vip(i)
        );
        let _ = writeln!(
            s,
            "-A KUBE-SVC-{i:016X} -m comment --comment \"default/svc{i}:http\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-{i:014X}00"
        );
        let _ = writeln!(
            s,
            "-A KUBE-SVC-{i:016X} -m comment --comment \"default/svc{i}:http\" -j KUBE-SEP-{i:014X}01"
        );
        for (e, b) in backends_of(i).into_iter().enumerate() {
            let _ = writeln!(
                s,
                "-A KUBE-SEP-{i:014X}{e:02X} -p tcp -m comment --comment \"default/svc{i}:http\" -m tcp -j DNAT --to-destination {}:8080",
                backend_ip(b)
            );
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// Sends `count` SYNs, each a new connection to a spread of the `n` VIPs; ns per packet.
fn send_syns(sock: &socket2::Socket, n: u32, count: u32, flow: &mut u32) -> Res<f64> {
    let mut spread = Spread(0x2545_f491 ^ n ^ *flow);
    let packets: Vec<(Vec<u8>, SocketAddr)> = (0..count)
        .map(|_| {
            *flow += 1;
            let src = Ipv4Addr::from(u32::from(CLIENT) + (*flow >> 15) * 256);
            let dst = vip(spread.next(n));
            let sport = 1024 + (*flow & 0x7fff) as u16;
            (
                syn(src, sport, dst, 80),
                SocketAddr::V4(SocketAddrV4::new(dst, 0)),
            )
        })
        .collect();
    let t = Instant::now();
    for (p, to) in &packets {
        sock.send_to(p, &(*to).into())?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(count))
}

#[derive(Debug, Default)]
struct Iptables {
    backend: String,
    ns_per_new_flow: BTreeMap<u32, f64>,
    load_s: BTreeMap<u32, f64>,
}

fn bench_iptables() -> Res<Iptables> {
    let version = run("iptables-restore", &["--version"], None)?;
    let mut out = Iptables {
        backend: version.trim().to_string(),
        ..Default::default()
    };
    for cmd in [
        "ip link set lo up",
        "ip link add bench0 type veth peer name bench1",
        "ip addr add 192.168.255.1/24 dev bench0",
        "ip link set bench0 up",
        "ip link set bench1 up",
        "ip neigh replace 192.168.255.2 lladdr 02:00:00:00:00:02 dev bench0 nud permanent",
        "ip route add 198.18.0.0/15 via 192.168.255.2",
        "ip route add 10.200.0.0/16 via 192.168.255.2",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        run(args[0], &args[1..], None)?;
    }
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )?;
    let empty =
        "*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n";
    let mut flow = 0u32;
    for n in SIZES {
        let count = if n >= 100_000 { 2_000 } else { 10_000 };
        run("iptables-restore", &[], Some(empty))?;
        send_syns(&sock, n, 1_000, &mut flow)?; // warm up
        let base = send_syns(&sock, n, count, &mut flow)?;
        let rules = kube_proxy_rules(n);
        let t = Instant::now();
        run("iptables-restore", &[], Some(&rules))?;
        out.load_s.insert(n, t.elapsed().as_secs_f64());
        run("conntrack", &["-F"], None)?;
        let with = send_syns(&sock, n, count, &mut flow)?;
        // Every SYN must have been translated: count the DNATed connections.
        let dnat = run("conntrack", &["-L", "--dst-nat"], None)?
            .lines()
            .count();
        if dnat < count as usize {
            return Err(format!("only {dnat} of {count} SYNs were DNATed at {n} services").into());
        }
        out.ns_per_new_flow.insert(n, (with - base).max(0.0));
        eprintln!(
            "iptables {n}: {with:.0} ns/packet with the rules, {base:.0} without; loaded in {:.1} s",
            out.load_s[&n]
        );
        run("conntrack", &["-F"], None)?;
    }
    run("iptables-restore", &[], Some(empty))?;
    Ok(out)
}

/// Runs the iptables side on a thread in a network namespace of its own (gone with it).
fn iptables_in_netns() -> Res<Iptables> {
    std::thread::spawn(|| -> Result<Iptables, String> {
        // SAFETY: unshare takes no pointers; it moves only this thread (and the commands it
        // spawns) into a new network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        bench_iptables().map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the iptables thread panicked")?
    .map_err(Into::into)
}

fn main() -> Res<()> {
    let root = PinRoot::new(format!("/sys/fs/bpf/ironmesh-bench-{}", std::process::id()))?;
    let ours = bench_ours(&root);
    if let Ok(entries) = std::fs::read_dir(root.path()) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(root.path());
    let ours = ours?;
    if std::env::args().any(|a| a == "--ours-only") {
        // For iterating on the programs: no iptables side, no JSON.
        println!("{ours:#?}");
        return Ok(());
    }
    let ipt = iptables_in_netns()?;
    let cni = interop_tests::bgpd::build_binaries(&[("ironmesh-cni", "ironmesh-cni")])?.remove(0);
    // The three modes' labs side by side; runs alternate so load changes hit all alike.
    let setups = throughput::Mode::ALL
        .into_iter()
        .map(|mode| throughput::setup(&cni, mode))
        .collect::<Res<Vec<_>>>()?;
    let mut runs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..IPERF_ROUNDS {
        for s in &setups {
            let bps = s.iperf(IPERF_SECONDS)?;
            eprintln!("iperf3 {}: {:.2} Gbit/s", s.mode.name(), bps / 1e9);
            runs.entry(s.mode.name()).or_default().push(bps);
        }
    }
    drop(setups);
    let tput: BTreeMap<&str, f64> = runs
        .into_iter()
        .map(|(mode, mut v)| {
            v.sort_by(f64::total_cmp);
            (mode, v[v.len() / 2])
        })
        .collect();

    println!(
        "pod_egress via BPF_PROG_TEST_RUN, {IPCACHE_ENTRIES} IP cache entries; \
         floor of the method (non-IP frame): {:.0} ns; TCP not for a service: {:.0} ns",
        ours.run_floor_ns, ours.floor_ns
    );
    println!(
        "{:>9} | {:>14} | {:>13} | {:>17} | {:>7} | {:>12} | {:>12}",
        "services",
        "established ns",
        "new flow ns",
        "iptables new ns",
        "ratio",
        "upserts/s",
        "ipt load s"
    );
    let mut ratio = BTreeMap::new();
    for n in SIZES {
        let r = ipt.ns_per_new_flow[&n] / ours.new_flow_ns[&n];
        ratio.insert(n, r);
        println!(
            "{n:>9} | {:>14.0} | {:>13.0} | {:>17.0} | {r:>7.1} | {:>12.0} | {:>12.1}",
            ours.established_ns[&n],
            ours.new_flow_ns[&n],
            ipt.ns_per_new_flow[&n],
            ours.upserts_per_s[&n],
            ipt.load_s[&n]
        );
    }
    println!(
        "service updates (backend set changes): {:.0}/s; iptables: {}",
        ours.updates_per_s, ipt.backend
    );

    let gbit = |mode: &str| tput[mode] / 1e9;
    println!(
        "iperf3 pod to pod, one TCP stream {IPERF_SECONDS} s, median of {IPERF_ROUNDS}: plain veth routing {:.2} Gbit/s, \
         native {:.2} ({:.2}x), VXLAN {:.2} ({:.2}x)",
        gbit("plain"),
        gbit("native"),
        gbit("native") / gbit("plain"),
        gbit("vxlan"),
        gbit("vxlan") / gbit("plain"),
    );

    let obj = |m: &BTreeMap<u32, f64>| {
        let fields: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\": {v:.1}")).collect();
        format!("{{{}}}", fields.join(", "))
    };
    let json = format!(
        "{{\n  \"ns_per_packet\": {},\n  \"ns_per_packet_one_hot_flow\": {},\n  \"ns_per_new_flow\": {},\n  \"ns_floor\": {:.1},\n  \"ns_not_a_service\": {:.1},\n  \"ipcache_entries\": {IPCACHE_ENTRIES},\n  \"iptables_ns_per_new_flow\": {},\n  \"iptables_ratio\": {},\n  \"iptables_ratio_10k\": {:.2},\n  \"iptables_load_s\": {},\n  \"service_upserts_per_s\": {},\n  \"service_updates_per_s\": {:.0},\n  \"iptables\": {:?},\n  \"iperf3_gbit_s\": {{\"plain\": {:.3}, \"native\": {:.3}, \"vxlan\": {:.3}}},\n  \"iperf3_native_to_plain_ratio\": {:.3},\n  \"iperf3_vxlan_to_plain_ratio\": {:.3},\n  \"notes\": \"ns_per_packet: established flows (conntrack hit); ratio: iptables nat rules per new connection (time above an empty chain) / our new-flow time\"\n}}\n",
        obj(&ours.established_ns),
        obj(&ours.hot_ns),
        obj(&ours.new_flow_ns),
        ours.run_floor_ns,
        ours.floor_ns,
        obj(&ipt.ns_per_new_flow),
        obj(&ratio),
        ratio[&10_000],
        obj(&ipt.load_s),
        obj(&ours.upserts_per_s),
        ours.updates_per_s,
        ipt.backend,
        gbit("plain"),
        gbit("native"),
        gbit("vxlan"),
        gbit("native") / gbit("plain"),
        gbit("vxlan") / gbit("plain"),
    );
    match std::env::var_os("IRONMESH_BENCH_JSON") {
        Some(path) => {
            std::fs::write(&path, &json)?;
            println!("wrote {}", std::path::Path::new(&path).display());
        }
        None => print!("{json}"),
    }
    Ok(())
}
