//! `scripts/bench mesh`: meshd against real etcd 3.4 in the lab.
//!
//! Three etcd clusters (A: the remote being federated, B: a local cluster, C: a fresh local
//! cluster), one member each by default (`MESH_BENCH_ETCD_MEMBERS=3` for three each), on one
//! switch; meshd runs on a thread inside a client host. Measured:
//!
//! - identity allocations per second, 1 allocator and 3 concurrent allocators (distinct label
//!   sets, each allocation one etcd transaction), with the p50 latency;
//! - propagation latency p50/p99: a write of an endpoint in A until it is in B's merged view
//!   (A's etcd → B's elected mirror → B's etcd → B's view), while 10k endpoints of A churn;
//! - the time for a fresh meshd to sync 100k remote endpoints: mirror election, listing of A,
//!   writing the mirror into C, the synced marker, C's merged view holding all of them
//!   (`sync_100k_seconds`); and a node agent's part alone (a fresh merged view of C's mirror);
//! - memory per entry of a node agent's merged view (RSS growth / entries);
//! - `partition_failover_p99_ms` (issue 19): on a 3-member etcd, a member is cut off from the
//!   other two (nftables in its namespace; it still answers the client) while the client
//!   writes: the member the client uses on even cuts, etcd's leader on odd ones (whether the
//!   client uses it or not: writes through any member wait for a new leader), so both kinds
//!   are measured however the client's preference moves. The time from the cut to the first
//!   write that succeeds (through a healthy member), over `MESH_BENCH_CUTS` (20) cuts. A cut of
//!   the leader includes etcd's own election, so the p99 has that floor: on those cuts the
//!   election itself (cut → a remaining member reports a new leader, status polled every
//!   5 ms) and the failover after it are reported too. Measured twice, on two etcds:
//!   `partition_failover_*` with etcd tuned for a LAN as etcd's tuning guide recommends
//!   (heartbeat ≈ round trip: 50 ms; election timeout 10x: 500 ms; `EtcdCluster::start_lan`, as
//!   the lab's partition tests run it), and `partition_failover_*_etcd_defaults` with etcd's
//!   defaults (heartbeat 100 ms, election 1 s, randomized up to 2 s by etcd).
//!
//! Sizes: `MESH_BENCH_SYNC` (100000), `MESH_BENCH_CHURN` (10000), `MESH_BENCH_PROBES` (300),
//! `MESH_BENCH_IDENTITIES` (1000 per allocator), `MESH_BENCH_CUTS` (20).
//! `MESH_BENCH_ONLY=partition` runs the partition rows alone (the JSON then has only those).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ClusterId, ClusterName, Identity, IdentityLayout, Labels, NodeName};
use interop_tests::{EtcdCluster, Host, Lab};
use ironmesh_meshd::endpoints::{EndpointPublisher, EndpointRecord};
use ironmesh_meshd::federation::{MergedView, MirrorConfig, MirrorController, ViewChange};
use ironmesh_meshd::identity::IdentityAllocator;
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::leases::{LeasePoolConfig, LeasedKeys};
use ironmesh_meshd::schema::{Resource, ResourceKind};
use serde_json::json;

fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn name(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    let mut cfg = KvConfig::new(etcd.members.iter().map(|m| m.client_url()));
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.op_timeout = Duration::from_secs(5);
    cfg
}

/// Endpoint `i` of a block: 10.<block>.x.y, distinct for i < 65536.
fn ep(cluster: &str, node: &str, block: u8, i: usize, key: u8) -> EndpointRecord {
    EndpointRecord {
        ip: IpAddr::V4(Ipv4Addr::new(
            block,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        )),
        cluster: name(cluster),
        node: node.parse().unwrap(),
        identity: Identity::from_raw(65792 + (i % 1000) as u32).unwrap(),
        tunnel_endpoint: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50))),
        encrypt_key: key,
        ports: Vec::new(),
        pod: None,
    }
}

struct Results {
    members: usize,
    ids_1: (usize, f64, f64),
    ids_3: (usize, f64, f64),
    sync_entries: usize,
    write_100k_s: f64,
    sync_s: f64,
    mirror_sync_s: f64,
    agent_sync_s: f64,
    bytes_per_entry: f64,
    churn: usize,
    churn_writes: usize,
    prop: Vec<f64>,
}

async fn identity_rate(stores: &[KvStore], per: usize, tag: &str) -> (usize, f64, f64) {
    let t = Instant::now();
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (k, s) in stores.iter().enumerate() {
        let alloc = IdentityAllocator::new(
            s.clone(),
            name("b"),
            ClusterId::new(2).unwrap(),
            IdentityLayout::default(),
        );
        let lat = lat.clone();
        let tag = format!("{tag}-{k}");
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let labels: Labels = format!("bench={tag}-{i}").parse().unwrap();
                let t = Instant::now();
                alloc.allocate(&labels).await.expect("identity allocation");
                lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = per * stores.len();
    let secs = t.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    (n, n as f64 / secs, percentile(&l, 0.5))
}

async fn publish(
    store: &KvStore,
    cluster: &str,
    nodes: usize,
    block: u8,
    total: usize,
) -> Vec<EndpointPublisher> {
    let per = total.div_ceil(nodes);
    let pubs: Vec<EndpointPublisher> = (0..nodes)
        .map(|n| {
            EndpointPublisher::new(
                name(cluster),
                format!("{cluster}-n{n}").parse::<NodeName>().unwrap(),
                LeasedKeys::new(store.clone(), LeasePoolConfig::new(30, 1000)),
            )
        })
        .collect();
    let mut futs = Vec::new();
    for (n, p) in pubs.iter().enumerate() {
        let recs: Vec<EndpointRecord> = (n * per..((n + 1) * per).min(total))
            .map(|i| ep(cluster, &format!("{cluster}-n{n}"), block, i, 1))
            .collect();
        futs.push(async move {
            for chunk in recs.chunks(1000) {
                p.upsert(chunk).await.expect("publish");
            }
        });
    }
    futures_join(futs).await;
    pubs
}

async fn futures_join<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    // A tiny join_all (no futures crate): poll all on this task.
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

fn mirror(
    local: &KvStore,
    local_name: &str,
    remote: &EtcdCluster,
    candidate: &str,
) -> MirrorController {
    MirrorController::spawn(
        local.clone(),
        MirrorConfig {
            local: name(local_name),
            remote: name("a"),
            remote_etcd: kv_config(remote),
            candidate: candidate.into(),
            lease_ttl_secs: 5,
            probe_interval: Duration::from_secs(1),
            trust: None,
        },
    )
}

async fn run(a: &EtcdCluster, b: &EtcdCluster, c: &EtcdCluster, members: usize) -> Results {
    let sync_n = env_usize("MESH_BENCH_SYNC", 100_000);
    let churn_n = env_usize("MESH_BENCH_CHURN", 10_000);
    let probes = env_usize("MESH_BENCH_PROBES", 300);
    let per = env_usize("MESH_BENCH_IDENTITIES", 1000);
    let sa = KvStore::connect(&kv_config(a)).await.expect("etcd A");
    let sb = KvStore::connect(&kv_config(b)).await.expect("etcd B");
    let sc = KvStore::connect(&kv_config(c)).await.expect("etcd C");

    // Identities (in B's etcd): 1 allocator, then 3 with their own connections.
    eprintln!("identities: 1 allocator x {per}...");
    let ids_1 = identity_rate(std::slice::from_ref(&sb), per, "one").await;
    let mut three = Vec::new();
    for _ in 0..3 {
        three.push(KvStore::connect(&kv_config(b)).await.expect("etcd B"));
    }
    eprintln!("identities: 3 allocators x {per}...");
    let ids_3 = identity_rate(&three, per, "three").await;

    // 100k endpoints in A, from 4 nodes.
    eprintln!("writing {sync_n} endpoints into A...");
    let t = Instant::now();
    let _pubs = publish(&sa, "a", 4, 10, sync_n).await;
    let write_100k_s = t.elapsed().as_secs_f64();

    // A fresh meshd of cluster C: mirror + view, until the view holds them all.
    eprintln!("fresh sync into C...");
    let t = Instant::now();
    let m_c = mirror(&sc, "c", a, "c-m1");
    let view = MergedView::spawn(
        sc.clone(),
        name("c"),
        [name("a")],
        Duration::from_secs(1),
        None,
    );
    let mut mirror_done: Option<f64> = None;
    let ok = view
        .wait_until(Duration::from_secs(300), |s| {
            if mirror_done.is_none() && m_c.status().syncs > 0 {
                mirror_done = Some(t.elapsed().as_secs_f64());
            }
            s.is_synced(&name("a")) && s.count(&name("a"), ResourceKind::Endpoints) >= sync_n
        })
        .await;
    assert!(ok, "C never synced: {:?}", m_c.status());
    let sync_s = t.elapsed().as_secs_f64();
    let mirror_sync_s = mirror_done.unwrap_or(sync_s);
    let sync_entries = view.with(|s| s.count(&name("a"), ResourceKind::Endpoints));
    drop(view);

    // A node agent alone: a fresh view of C's (complete) mirror; memory per entry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb();
    let t = Instant::now();
    let view = MergedView::spawn(
        sc.clone(),
        name("c"),
        [name("a")],
        Duration::from_secs(1),
        None,
    );
    let ok = view
        .wait_until(Duration::from_secs(120), |s| {
            s.is_synced(&name("a")) && s.count(&name("a"), ResourceKind::Endpoints) >= sync_n
        })
        .await;
    assert!(ok, "agent view never synced");
    let agent_sync_s = t.elapsed().as_secs_f64();
    let after = rss_kb();
    let bytes_per_entry = (after.saturating_sub(before) as f64 * 1024.0) / sync_entries as f64;
    drop(view);
    drop(m_c);

    // Propagation A -> B under churn.
    eprintln!("propagation: B mirrors A ({sync_n} entries first)...");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let m_b = mirror(&sb, "b", a, "b-m1");
    let view_b = MergedView::spawn(
        sb.clone(),
        name("b"),
        [name("a")],
        Duration::from_secs(1),
        Some(tx),
    );
    assert!(
        view_b
            .wait_until(Duration::from_secs(300), |s| s.is_synced(&name("a"))
                && s.count(&name("a"), ResourceKind::Endpoints) >= sync_n)
            .await,
        "B never synced: {:?}",
        m_b.status()
    );
    while rx.try_recv().is_ok() {}
    let sent: Arc<Mutex<HashMap<IpAddr, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (s2, l2) = (sent.clone(), lat.clone());
    let recv = tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            if let ViewChange::Upsert {
                resource: Resource::Endpoint(ip),
                ..
            } = c
                && let Some(t0) = s2.lock().unwrap().remove(&ip)
            {
                l2.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn_pub = EndpointPublisher::new(
        name("a"),
        "a-churn".parse().unwrap(),
        LeasedKeys::new(sa.clone(), LeasePoolConfig::new(30, 1000)),
    );
    let st = stop.clone();
    let churn = async move {
        let mut writes = 0usize;
        let mut round = 0u8;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            round = round.wrapping_add(1);
            let recs: Vec<EndpointRecord> = (0..churn_n)
                .map(|i| ep("a", "a-churn", 11, i, round))
                .collect();
            for chunk in recs.chunks(100) {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                churn_pub.upsert(chunk).await.expect("churn");
                writes += chunk.len();
            }
        }
        writes
    };
    let probe_pub = EndpointPublisher::new(
        name("a"),
        "a-probe".parse().unwrap(),
        LeasedKeys::new(sa.clone(), LeasePoolConfig::new(30, 1000)),
    );
    let probing = async {
        for i in 0..probes {
            let r = ep("a", "a-probe", 12, i, 0);
            sent.lock().unwrap().insert(r.ip, Instant::now());
            probe_pub.upsert(&[r]).await.expect("probe");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = Instant::now();
        while lat.lock().unwrap().len() < probes && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (churn_writes, ()) = tokio::join!(churn, probing);
    recv.abort();
    let mut prop = lat.lock().unwrap().clone();
    assert_eq!(
        prop.len(),
        probes,
        "probes lost: {} of {probes} seen",
        prop.len()
    );
    prop.sort_by(f64::total_cmp);
    drop(view_b);
    drop(m_b);
    Results {
        members,
        ids_1,
        ids_3,
        sync_entries,
        write_100k_s,
        sync_s,
        mirror_sync_s,
        agent_sync_s,
        bytes_per_entry,
        churn: churn_n,
        churn_writes,
        prop,
    }
}

fn start_etcd(lab: &Lab, sw: &Host, tag: &str, net_octet: u8, members: usize) -> EtcdCluster {
    start_etcd_timed(lab, sw, tag, net_octet, members, false)
}

/// `lan`: etcd's raft timing for a LAN (`EtcdCluster::start_lan`), else etcd's defaults.
fn start_etcd_timed(
    lab: &Lab,
    sw: &Host,
    tag: &str,
    net_octet: u8,
    members: usize,
    lan: bool,
) -> EtcdCluster {
    let mut hosts = Vec::new();
    for i in 0..members {
        let h = lab.host(&format!("{tag}{i}")).expect("host");
        let ip = format!("192.0.2.{}", net_octet as usize + i);
        lab.attach(&h, &[&format!("{ip}/24")], sw).expect("attach");
        hosts.push((h, ip.parse::<IpAddr>().unwrap()));
    }
    let refs: Vec<(&Host, IpAddr)> = hosts.iter().map(|(h, ip)| (h, *ip)).collect();
    if lan {
        EtcdCluster::start_lan(&refs).expect("etcd")
    } else {
        EtcdCluster::start(&refs).expect("etcd")
    }
}

/// Drops member `i`'s traffic with the other members (it still answers clients).
fn cut_from_peers(etcd: &EtcdCluster, i: usize) {
    let peers: Vec<String> = etcd
        .members
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, m)| m.ip.to_string())
        .collect();
    let peers = peers.join(", ");
    let script = format!(
        "table inet im_part {{\n\
           chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {peers} }} drop; }}\n\
           chain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {peers} }} drop; }}\n\
         }}\n"
    );
    let host = &etcd.members[i].host;
    let path = host.path("nft-part.nft");
    std::fs::write(&path, script).expect("nft script");
    host.exec("nft", &["-f", &path.to_string_lossy()])
        .expect("nft cut");
}

fn heal(etcd: &EtcdCluster, i: usize) {
    etcd.members[i]
        .host
        .exec("nft", &["delete", "table", "inet", "im_part"])
        .expect("nft heal");
}

/// What `partition_failover` measured, in ms per cut.
struct Cuts {
    /// Cut → first successful write, every cut.
    all: Vec<f64>,
    /// The same, cuts of a follower only.
    followers: Vec<f64>,
    /// The same, cuts of the leader only.
    leaders: Vec<f64>,
    /// Cuts of the leader: cut → a remaining member reports a new leader (etcd's own
    /// election, polled every 5 ms with status requests).
    elections: Vec<f64>,
    /// Cuts of the leader: failover − election (what the client adds to etcd's election).
    after_election: Vec<f64>,
}

/// The first time (since `t`) a member other than `cut` reports a leader that is neither 0
/// nor `old` (status requests, 5 ms apart, bounded).
async fn elected(mut clients: Vec<etcd_client::Client>, old: u64, t: Instant) -> Option<f64> {
    while t.elapsed() < Duration::from_secs(30) {
        for c in clients.iter_mut() {
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_millis(100), c.status()).await
                && st.leader() != 0
                && st.leader() != old
            {
                return Some(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Failover times over `cuts` cuts, alternately of the member in use and of etcd's leader.
async fn partition_failover(etcd: &EtcdCluster, cuts: usize) -> Cuts {
    let mut cfg = KvConfig::new(etcd.members.iter().map(|m| m.client_url()));
    cfg.connect_timeout = Duration::from_secs(5);
    // What meshd derives from the lab's 4 s lease TTL (configs::LeaseTiming).
    cfg.op_timeout = Duration::from_millis(1250);
    let store = KvStore::connect(&cfg).await.expect("etcd P");
    // Plain clients (no require-leader) for status requests, one per member.
    let mut status = Vec::new();
    for m in &etcd.members {
        status.push(
            etcd_client::Client::connect([m.client_url()], None)
                .await
                .expect("status client"),
        );
    }
    let mut c = Cuts {
        all: Vec::new(),
        followers: Vec::new(),
        leaders: Vec::new(),
        elections: Vec::new(),
        after_election: Vec::new(),
    };
    for n in 0..cuts {
        // Everything healthy again, then cut.
        let deadline = Instant::now() + Duration::from_secs(30);
        while store
            .members()
            .iter()
            .any(|m| m.health != ironmesh_meshd::kvstore::members::Health::Healthy)
        {
            assert!(
                Instant::now() < deadline,
                "members never all healthy: {:?}",
                store.members()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store
            .put("bench/p", b"warm".to_vec(), None)
            .await
            .expect("warm write");
        // Even cuts: the member in use. Odd cuts: etcd's leader, in use or not (a write
        // through any member waits for a new leader then), so leader cuts are measured
        // however the client's preference moves.
        let used = store.member_client().0;
        let leader = etcd.leader().ok();
        let cut = if n % 2 == 1 {
            leader.unwrap_or(used)
        } else {
            used
        };
        let was_leader = leader == Some(cut);
        let old_leader_id = status[cut].status().await.map(|s| s.leader()).unwrap_or(0);
        let others: Vec<etcd_client::Client> = (0..status.len())
            .filter(|&i| i != cut)
            .map(|i| status[i].clone())
            .collect();
        let t = Instant::now();
        cut_from_peers(etcd, cut);
        let election = was_leader.then(|| tokio::spawn(elected(others, old_leader_id, t)));
        loop {
            let r = store
                .put("bench/p", format!("{n}").into_bytes(), None)
                .await;
            if r.is_ok() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no write succeeded: {r:?}"
            );
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        c.all.push(ms);
        if let Some(e) = election {
            c.leaders.push(ms);
            if let Ok(Some(e)) = e.await {
                c.elections.push(e);
                c.after_election.push(ms - e);
            }
        } else {
            c.followers.push(ms);
        }
        heal(etcd, cut);
        etcd.wait_healthy(cut, Duration::from_secs(30))
            .expect("healed");
    }
    c
}

/// Failover percentiles of one etcd (ms).
struct Failover {
    p50: f64,
    p99: f64,
    follower_p99: f64,
    leader_p99: f64,
    election_p99: f64,
    after_election_p99: f64,
    leader_cuts: usize,
}

fn failover(client: &Host, etcd: &EtcdCluster, cuts: usize, what: &str) -> Failover {
    eprintln!(
        "partition failover ({what}): {cuts} cuts, of the member in use and of the leader..."
    );
    let mut c = client
        .block_on(partition_failover(etcd, cuts))
        .expect("joining the client namespace");
    for v in [
        &mut c.all,
        &mut c.followers,
        &mut c.leaders,
        &mut c.elections,
        &mut c.after_election,
    ] {
        v.sort_by(f64::total_cmp);
    }
    eprintln!("  follower cuts (ms, sorted): {:.0?}", c.followers);
    eprintln!("  leader cuts (ms, sorted): {:.0?}", c.leaders);
    eprintln!(
        "  of which etcd's election (ms, sorted): {:.0?}",
        c.elections
    );
    eprintln!(
        "  failover - election (ms, sorted): {:.0?}",
        c.after_election
    );
    Failover {
        p50: percentile(&c.all, 0.5),
        p99: percentile(&c.all, 0.99),
        follower_p99: percentile(&c.followers, 0.99),
        leader_p99: percentile(&c.leaders, 0.99),
        election_p99: percentile(&c.elections, 0.99),
        after_election_p99: percentile(&c.after_election, 0.99),
        leader_cuts: c.leaders.len(),
    }
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without --bench: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benchmark skipped: run it with `scripts/bench mesh`");
        return;
    }
    let only_partition = match std::env::var("MESH_BENCH_ONLY").as_deref() {
        Ok("partition") => true,
        Ok(other) => panic!("MESH_BENCH_ONLY={other:?}: the only choice is \"partition\""),
        Err(_) => false,
    };
    let members = env_usize("MESH_BENCH_ETCD_MEMBERS", 1);
    let lab = Lab::new("mbench").expect("lab (run as root)");
    let sw = lab.switch("sw").expect("switch");
    let client = lab.host("m").expect("host");
    lab.attach(&client, &["192.0.2.100/24"], &sw)
        .expect("attach");
    let r = (!only_partition).then(|| {
        let a = start_etcd(&lab, &sw, "a", 11, members);
        let b = start_etcd(&lab, &sw, "b", 21, members);
        let c = start_etcd(&lab, &sw, "c", 31, members);
        client
            .block_on(run(&a, &b, &c, members))
            .expect("joining the client namespace")
    });
    let cuts = env_usize("MESH_BENCH_CUTS", 20);
    let lan = {
        let p = start_etcd_timed(&lab, &sw, "p", 41, 3, true);
        failover(&client, &p, cuts, "etcd heartbeat 50 ms, election 500 ms")
    };
    let defaults = {
        let p = start_etcd_timed(&lab, &sw, "q", 51, 3, false);
        failover(&client, &p, cuts, "etcd's default raft timing")
    };

    println!("meshd mesh benchmark (etcd 3.4, lab netns)");
    println!("{:<60} {:>14}", "metric", "value");
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut out = serde_json::Map::new();
    if let Some(r) = &r {
        let p50 = percentile(&r.prop, 0.5);
        let p99 = percentile(&r.prop, 0.99);
        rows.extend([
            (
                "etcd members per cluster (identities, propagation, sync)".into(),
                format!("{}", r.members),
            ),
            (
                "identity allocations/s, 1 allocator".into(),
                format!("{:.0}", r.ids_1.1),
            ),
            (
                "identity allocation p50 ms, 1 allocator".into(),
                format!("{:.2}", r.ids_1.2),
            ),
            (
                "identity allocations/s, 3 allocators".into(),
                format!("{:.0}", r.ids_3.1),
            ),
            (
                "identity allocation p50 ms, 3 allocators".into(),
                format!("{:.2}", r.ids_3.2),
            ),
            (
                format!("propagation p50 ms (A write -> B view, {} churn)", r.churn),
                format!("{p50:.2}"),
            ),
            ("propagation p99 ms".into(), format!("{p99:.2}")),
            (
                "churn writes during probes".into(),
                format!("{}", r.churn_writes),
            ),
            (
                format!("write {} endpoints into A, s", r.sync_entries),
                format!("{:.2}", r.write_100k_s),
            ),
            (
                format!("fresh meshd sync of {} remote endpoints, s", r.sync_entries),
                format!("{:.2}", r.sync_s),
            ),
            (
                "  of which the mirror's copy (synced marker), s".into(),
                format!("{:.2}", r.mirror_sync_s),
            ),
            (
                "  node agent alone (fresh view of the mirror), s".into(),
                format!("{:.2}", r.agent_sync_s),
            ),
            (
                "memory per entry (node agent view), bytes".into(),
                format!("{:.0}", r.bytes_per_entry),
            ),
        ]);
        let v = json!({
            "etcd_members_per_cluster": r.members,
            "identity_allocs_per_s_1": r3(r.ids_1.1),
            "identity_alloc_p50_ms_1": r3(r.ids_1.2),
            "identity_allocs_per_s_3": r3(r.ids_3.1),
            "identity_alloc_p50_ms_3": r3(r.ids_3.2),
            "identities_allocated": r.ids_1.0 + r.ids_3.0,
            "propagation_p50_ms": r3(p50),
            "propagation_p99_ms": r3(p99),
            "propagation_samples": r.prop.len(),
            "churn_endpoints": r.churn,
            "churn_writes": r.churn_writes,
            "sync_entries": r.sync_entries,
            "write_remote_seconds": r3(r.write_100k_s),
            "sync_100k_seconds": r3(r.sync_s),
            "mirror_sync_100k_seconds": r3(r.mirror_sync_s),
            "agent_sync_100k_seconds": r3(r.agent_sync_s),
            "memory_bytes_per_entry": r3(r.bytes_per_entry),
        });
        if let serde_json::Value::Object(m) = v {
            out.extend(m);
        }
    }
    for (f, label, suffix) in [
        (&lan, "etcd LAN timing 50/500 ms", ""),
        (&defaults, "etcd default timing", "_etcd_defaults"),
    ] {
        rows.extend([
            (
                format!(
                    "partition failover p50 ms, {label} ({cuts} cuts, {} of the leader)",
                    f.leader_cuts
                ),
                format!("{:.2}", f.p50),
            ),
            (
                format!("partition failover p99 ms, {label}"),
                format!("{:.2}", f.p99),
            ),
            (
                "  p99 ms of the cuts of a follower (no election)".into(),
                format!("{:.2}", f.follower_p99),
            ),
            (
                "  p99 ms of the cuts of the leader".into(),
                format!("{:.2}", f.leader_p99),
            ),
            (
                "    etcd's election alone (cut -> new leader), p99 ms".into(),
                format!("{:.2}", f.election_p99),
            ),
            (
                "    failover after the election, p99 ms".into(),
                format!("{:.2}", f.after_election_p99),
            ),
        ]);
        out.insert(
            format!("partition_failover_p50_ms{suffix}"),
            json!(r3(f.p50)),
        );
        out.insert(
            format!("partition_failover_p99_ms{suffix}"),
            json!(r3(f.p99)),
        );
        out.insert(
            format!("partition_leader_cuts{suffix}"),
            json!(f.leader_cuts),
        );
        out.insert(
            format!("partition_failover_follower_p99_ms{suffix}"),
            json!(r3(f.follower_p99)),
        );
        out.insert(
            format!("partition_failover_leader_p99_ms{suffix}"),
            json!(r3(f.leader_p99)),
        );
        out.insert(
            format!("partition_election_p99_ms{suffix}"),
            json!(r3(f.election_p99)),
        );
        out.insert(
            format!("partition_failover_after_election_p99_ms{suffix}"),
            json!(r3(f.after_election_p99)),
        );
    }
    out.insert("partition_cuts".into(), json!(cuts));
    out.insert(
        "partition_etcd_timing".into(),
        json!("heartbeat 50 ms, election 500 ms (etcd's LAN tuning); *_etcd_defaults: 100 ms, 1 s"),
    );
    out.insert(
        "targets".into(),
        json!({"propagation_p99_ms": 100, "sync_100k_seconds": 5, "partition_failover_p99_ms": 1000}),
    );
    for (k, v) in &rows {
        println!("{k:<60} {v:>14}");
    }
    let path =
        std::env::var("IRONMESH_BENCH_JSON").unwrap_or_else(|_| "target/bench/mesh.json".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let out = serde_json::Value::Object(out);
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n")
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}
