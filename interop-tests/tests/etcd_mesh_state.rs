//! meshd's cluster state against a real 3-member etcd 3.4 in the lab (issue 7, first part):
//! identity and PodCIDR allocation storms with a leader kill, the reflector across a cut link,
//! node leases, and bad input at start-up.
//!
//! The etcd members run in lab hosts on a switch; the meshd clients run in a client host of
//! their own, attached to the same switch, so the test can cut the client's link. The test
//! process lives in the root namespace and cannot reach lab addresses, so the client code runs
//! on a dedicated thread that first joins the client host's namespace (`setns`) and then drives
//! its own current-thread tokio runtime: every socket it opens is inside the lab.
//!
//! Limits: the lab has no delay or loss injection (no netem); a cut link is carrier loss on a
//! veth, which a TCP connection sees as silence, the case the reflector's probe exists for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ClusterId, ClusterName, IdentityLayout, Labels, NodeName};
use interop_tests::*;
use ipnet::IpNet;
use ironmesh_meshd::identity::IdentityAllocator;
use ironmesh_meshd::ipam::{Family, PodCidrAllocator, Pool, family, overlaps};
use ironmesh_meshd::kvstore::{
    KvConfig, KvError, KvStore, Reflector, ReflectorConfig, ReflectorEvent,
};
use ironmesh_meshd::nodes::{LeaseConfig, NodeDecoder, NodeRecord, NodeRegistration};
use ironmesh_meshd::schema::{Key, Resource, ResourceKind, Scope};

/// Runs `fut` to completion inside `host`'s namespace (see `Host::block_on`).
fn run_in<T: Send>(host: &Host, fut: impl std::future::Future<Output = T> + Send) -> T {
    host.block_on(fut).expect("joining the host's namespace")
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    interop_tests::etcd_lab::kv_config(etcd, Duration::from_secs(5), Duration::from_secs(2))
}

fn cluster() -> ClusterName {
    "blue".parse().unwrap()
}

/// Kills the etcd leader once `progress` reaches `at` (bounded wait); returns the progress seen
/// at the kill and the killed member's index.
fn kill_leader_at(
    etcd: &EtcdCluster,
    leader: usize,
    progress: &AtomicUsize,
    at: usize,
) -> (usize, usize) {
    let start = Instant::now();
    while progress.load(Ordering::SeqCst) < at {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "allocations stalled before the leader kill"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen = progress.load(Ordering::SeqCst);
    etcd.members[leader].process.kill();
    eprintln!("killed etcd leader e{leader} at progress {seen}");
    (seen, leader)
}

/// (a) 3 allocators × 200 label sets (300 distinct, each asked for by two allocators) while
/// the etcd leader is killed: no identity shared by two label sets, one identity per label set
/// whoever asked, every allocation stored, and a fresh allocator finds the same identities.
#[test]
fn etcd_mesh_identity_storm_with_leader_kill() -> Result<()> {
    let s = EtcdLab::start("idstorm", 3)?;
    let leader = s.etcd.wait_leader(Duration::from_secs(10))?;
    let sets: Vec<Labels> = (0..300)
        .map(|i| {
            Labels::from_pairs([
                ("app".to_string(), format!("app-{}", i % 60)),
                ("tier".to_string(), format!("t{}", i / 60)),
                ("example.com/shard".to_string(), format!("s{}", i % 7)),
            ])
            .unwrap()
        })
        .collect();
    assert_eq!(sets.iter().collect::<BTreeSet<_>>().len(), 300);
    let progress = AtomicUsize::new(0);
    let total = 3 * 200;
    let layout = IdentityLayout::default();
    let cid = ClusterId::new(7).unwrap();
    let started = Instant::now();

    let (results, kill) = std::thread::scope(|sc| {
        let killer = sc.spawn(|| kill_leader_at(&s.etcd, leader, &progress, total / 3));
        let results = run_in(&s.client, async {
            let mut tasks = Vec::new();
            for c in 0..3usize {
                let cfg = kv_config(&s.etcd);
                let sets = &sets;
                let progress = &progress;
                tasks.push(async move {
                    let store = KvStore::connect(&cfg).await.expect("connect");
                    let alloc = IdentityAllocator::new(store, cluster(), cid, layout);
                    let mut got = Vec::new();
                    // Allocator c asks for sets [100c, 100c + 200) (mod 300), in its own order.
                    for j in 0..200 {
                        let step = if c == 1 { 1 } else { 7 }; // 7 is coprime to 200
                        let labels = &sets[(c * 100 + (j * step) % 200) % 300];
                        let id = alloc
                            .allocate(labels)
                            .await
                            .unwrap_or_else(|e| panic!("allocator {c}: {e}"));
                        progress.fetch_add(1, Ordering::SeqCst);
                        got.push((labels.clone(), id));
                    }
                    got
                });
            }
            futures_join_all(tasks).await
        });
        (results, killer.join().unwrap())
    });
    let elapsed = started.elapsed();
    eprintln!(
        "identity storm: {total} allocations by 3 allocators in {elapsed:?} (leader killed at {}/{total})",
        kill.0
    );
    assert!(kill.0 < total, "the leader must die mid-way");

    // Same label set → same identity, different sets → different identities.
    let mut by_labels: HashMap<Labels, u32> = HashMap::new();
    for (labels, id) in results.iter().flatten() {
        let prev = by_labels.insert(labels.clone(), id.raw());
        assert!(
            prev.is_none() || prev == Some(id.raw()),
            "{labels} got {prev:?} and {id}"
        );
        assert_eq!(id.cluster(layout), Some(cid));
        assert!(id.reserved().is_none());
    }
    assert_eq!(by_labels.len(), 300, "every label set was asked for");
    let ids: BTreeSet<u32> = by_labels.values().copied().collect();
    assert_eq!(ids.len(), 300, "no identity is shared by two label sets");

    // Nothing lost: etcd holds exactly these 300 allocations, both directions.
    let survivor = (0..3).find(|i| *i != kill.1).unwrap();
    let by_labels_keys = s.etcd.etcdctl(
        survivor,
        &[
            "get",
            "--prefix",
            &Scope::Cluster(cluster()).kind_prefix(ResourceKind::IdentitiesByLabels),
            "--keys-only",
        ],
    )?;
    assert_eq!(
        by_labels_keys.lines().filter(|l| !l.is_empty()).count(),
        300
    );
    let (stored, again) = run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd))
            .await
            .expect("connect");
        let prefix = Scope::Cluster(cluster()).kind_prefix(ResourceKind::Identities);
        let (kvs, _) = store.list(&prefix, false).await.expect("list");
        let mut stored = BTreeMap::new();
        for kv in kvs {
            let Ok(Key::Resource {
                resource: Resource::Identity(id),
                ..
            }) = Key::parse_bytes(&kv.key)
            else {
                panic!("bad key {:?}", String::from_utf8_lossy(&kv.key));
            };
            let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            let labels: Labels = serde_json::from_value(v["labels"].clone()).unwrap();
            stored.insert(id.raw(), labels);
        }
        // A fresh allocator (as after a restart) gets the same identities back.
        let fresh = IdentityAllocator::new(store, cluster(), cid, layout);
        let mut again = HashMap::new();
        for labels in &sets {
            again.insert(labels.clone(), fresh.allocate(labels).await.unwrap().raw());
        }
        (stored, again)
    });
    assert_eq!(stored.len(), 300);
    for (id, labels) in &stored {
        assert_eq!(by_labels.get(labels), Some(id), "reverse index of {id}");
    }
    assert_eq!(
        again, by_labels,
        "re-allocation returns the same identities"
    );
    Ok(())
}

/// (b) 20 nodes, each allocated by all 3 allocators concurrently (in different orders), while
/// the leader is killed: one IPv4 and one IPv6 CIDR per node, the same answer for every
/// allocator, no two CIDRs overlapping, the small first pool used up before the second, and a
/// fresh allocator returns the same CIDRs.
#[test]
fn etcd_mesh_podcidr_storm_with_leader_kill() -> Result<()> {
    let s = EtcdLab::start("cidrstorm", 3)?;
    let leader = s.etcd.wait_leader(Duration::from_secs(10))?;
    let pools = vec![
        Pool::new("10.244.0.0/22".parse().unwrap(), 24).unwrap(),
        Pool::new("10.245.0.0/16".parse().unwrap(), 24).unwrap(),
        Pool::new("fd00:10::/56".parse().unwrap(), 64).unwrap(),
    ];
    let nodes: Vec<NodeName> = (0..20)
        .map(|i| format!("worker-{i}").parse().unwrap())
        .collect();
    let progress = AtomicUsize::new(0);
    let total = 3 * nodes.len();
    let started = Instant::now();
    let (results, kill) = std::thread::scope(|sc| {
        let killer = sc.spawn(|| kill_leader_at(&s.etcd, leader, &progress, 15));
        let results = run_in(&s.client, async {
            let mut tasks = Vec::new();
            for c in 0..3usize {
                let cfg = kv_config(&s.etcd);
                let (nodes, pools, progress) = (&nodes, pools.clone(), &progress);
                tasks.push(async move {
                    let store = KvStore::connect(&cfg).await.expect("connect");
                    let alloc = PodCidrAllocator::new(store, cluster(), pools).unwrap();
                    let mut got = Vec::new();
                    for j in 0..nodes.len() {
                        let node = &nodes[(j * (2 * c + 1) + 5 * c) % nodes.len()];
                        let cidrs = alloc
                            .allocate(node)
                            .await
                            .unwrap_or_else(|e| panic!("allocator {c}, {node}: {e}"));
                        progress.fetch_add(1, Ordering::SeqCst);
                        got.push((node.clone(), cidrs));
                    }
                    got
                });
            }
            futures_join_all(tasks).await
        });
        (results, killer.join().unwrap())
    });
    eprintln!(
        "PodCIDR storm: {total} allocations by 3 allocators in {:?} (leader killed at {}/{total})",
        started.elapsed(),
        kill.0
    );
    assert!(kill.0 < total, "the leader must die mid-way");

    let mut per_node: BTreeMap<NodeName, Vec<IpNet>> = BTreeMap::new();
    for (node, cidrs) in results.iter().flatten() {
        let mut sorted = cidrs.clone();
        sorted.sort();
        if let Some(prev) = per_node.insert(node.clone(), sorted.clone()) {
            assert_eq!(prev, sorted, "{node} got different CIDRs");
        }
    }
    assert_eq!(per_node.len(), 20);
    let all: Vec<IpNet> = per_node.values().flatten().copied().collect();
    assert_eq!(all.len(), 40);
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(!overlaps(a, b), "{a} overlaps {b}");
        }
    }
    for cidrs in per_node.values() {
        let fams: Vec<Family> = cidrs.iter().map(family).collect();
        assert_eq!(fams, vec![Family::V4, Family::V6]);
    }
    let first_pool: IpNet = "10.244.0.0/22".parse().unwrap();
    assert_eq!(all.iter().filter(|c| first_pool.contains(*c)).count(), 4);

    let (stored, again) = run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd))
            .await
            .expect("connect");
        let prefix = Scope::Cluster(cluster()).kind_prefix(ResourceKind::PodCidrs);
        let (kvs, _) = store.list(&prefix, false).await.expect("list");
        let stored: BTreeMap<String, String> = kvs
            .iter()
            .map(|kv| {
                let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    v["node"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let fresh = PodCidrAllocator::new(store, cluster(), pools.clone()).unwrap();
        let mut again = BTreeMap::new();
        for n in &nodes {
            let mut c = fresh.allocate(n).await.unwrap();
            c.sort();
            again.insert(n.clone(), c);
        }
        (stored, again)
    });
    assert_eq!(
        stored.len(),
        40,
        "exactly the allocated CIDR keys: {stored:?}"
    );
    for (node, cidrs) in &per_node {
        for c in cidrs {
            let k = Key::cluster(&cluster(), Resource::PodCidr(*c)).to_string();
            assert_eq!(stored.get(&k).map(String::as_str), Some(node.as_str()));
        }
    }
    assert_eq!(again, per_node, "a restarted node gets its CIDRs back");
    Ok(())
}

fn record(name: &str) -> NodeRecord {
    let mut r = NodeRecord::new(cluster(), name.parse().unwrap());
    r.ipv4 = Some("192.0.2.100".parse().unwrap());
    r.wireguard_public_key = Some(format!("key-of-{name}"));
    r
}

type NodeEvent = ReflectorEvent<NodeName, NodeRecord>;

/// Receives events until `stop` says so (bounded by `timeout`).
async fn collect_until(
    rx: &mut tokio::sync::mpsc::Receiver<NodeEvent>,
    timeout: Duration,
    mut stop: impl FnMut(&[NodeEvent]) -> bool,
) -> Vec<NodeEvent> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !stop(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("reflector stopped; got {got:?}"),
            Err(_) => panic!("timed out after {timeout:?}; got {got:?}"),
        }
    }
    got
}

fn names(events: &[NodeEvent], upserts: bool) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ReflectorEvent::Upsert { key, .. } if upserts => Some(key.to_string()),
            ReflectorEvent::Delete { key, .. } if !upserts => Some(key.to_string()),
            _ => None,
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (c) The reflector lists then watches; a malformed record is skipped; when the client's link
/// is cut it reports stale and keeps the last state; changes made meanwhile through a member
/// arrive after the link is restored, including deletes of keys that vanished while away.
#[test]
fn etcd_mesh_reflector_resyncs_after_cut_link() -> Result<()> {
    let s = EtcdLab::start("reflector", 3)?;
    let scope = Scope::Cluster(cluster());
    let node_key =
        |n: &str| Key::cluster(&cluster(), Resource::Node(n.parse().unwrap())).to_string();
    run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd))
            .await
            .expect("connect");
        for n in ["n1", "n2", "n3", "n4"] {
            let r = record(n);
            store.put(&r.key(), r.encode(), None).await.unwrap();
        }
        // Someone else's garbage in our prefix: skipped, never fatal.
        store
            .put(&node_key("bad"), b"{not json".to_vec(), None)
            .await
            .unwrap();

        let decoder = NodeDecoder {
            scope: scope.clone(),
        };
        let mut cfg = ReflectorConfig::new(decoder.prefix());
        cfg.probe_interval = Duration::from_millis(500);
        let (refl, mut rx) = Reflector::spawn(store.clone(), cfg, decoder);
        let first = collect_until(&mut rx, Duration::from_secs(10), |e| {
            matches!(e.last(), Some(ReflectorEvent::Synced { .. }))
        })
        .await;
        assert_eq!(names(&first, true), set(&["n1", "n2", "n3", "n4"]));
        let st = refl.status();
        assert!(st.synced_once && !st.is_stale());
        assert_eq!((st.entries, st.skipped), (4, 1));

        // Watch: a put and a delete.
        let r = record("n5");
        store.put(&r.key(), r.encode(), None).await.unwrap();
        store.delete(&node_key("n1")).await.unwrap();
        let live = collect_until(&mut rx, Duration::from_secs(10), |e| e.len() >= 2).await;
        assert_eq!(names(&live, true), set(&["n5"]));
        assert_eq!(names(&live, false), set(&["n1"]));

        // Cut the client off; the reflector must notice and say so.
        s.client_link.cut().expect("cut");
        let cut_at = Instant::now();
        let mut status = refl.watch_status();
        tokio::time::timeout(Duration::from_secs(15), status.wait_for(|st| st.is_stale()))
            .await
            .expect("stale within 15 s")
            .unwrap();
        let to_stale = cut_at.elapsed();

        // Meanwhile, through member e0: two deletes, one new node, one change.
        for n in ["n2", "n3"] {
            s.etcd.etcdctl(0, &["del", &node_key(n)]).unwrap();
        }
        let r6 = record("n6");
        s.etcd
            .etcdctl(
                0,
                &["put", &r6.key(), &String::from_utf8(r6.encode()).unwrap()],
            )
            .unwrap();
        let mut r4 = record("n4");
        r4.ipv4 = Some("192.0.2.104".parse().unwrap());
        s.etcd
            .etcdctl(
                0,
                &["put", &r4.key(), &String::from_utf8(r4.encode()).unwrap()],
            )
            .unwrap();

        // While cut: still stale, the last good state is kept, no events.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st = refl.status();
        assert!(st.is_stale(), "{st:?}");
        assert_eq!(st.entries, 4, "last good state kept while cut");
        assert!(st.last_error.is_some());
        assert!(rx.try_recv().is_err(), "no events while cut");

        s.client_link.restore().expect("restore");
        let restored_at = Instant::now();
        // The watch resumes from its revision (issue 19: no listing while the revision is in
        // etcd's history) and replays what it missed.
        let resync = collect_until(&mut rx, Duration::from_secs(20), |e| {
            names(e, false) == set(&["n2", "n3"]) && names(e, true) == set(&["n4", "n6"])
        })
        .await;
        let to_resync = restored_at.elapsed();
        assert_eq!(names(&resync, false), set(&["n2", "n3"]), "{resync:?}");
        assert_eq!(names(&resync, true), set(&["n4", "n6"]), "{resync:?}");
        let mut status = refl.watch_status();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|st| !st.is_stale()),
        )
        .await
        .expect("live again within 10 s")
        .unwrap();
        let st = refl.status();
        assert!(!st.is_stale() && st.resumes >= 1, "{st:?}");
        assert_eq!(st.entries, 3, "n4, n5, n6");
        eprintln!(
            "reflector: stale {to_stale:?} after the cut, caught up {to_resync:?} after the restore ({} resumes, {} resyncs)",
            st.resumes, st.resyncs
        );

        // Still watching after the resync.
        store.delete(&node_key("n5")).await.unwrap();
        let after = collect_until(&mut rx, Duration::from_secs(10), |e| !e.is_empty()).await;
        assert_eq!(names(&after, false), set(&["n5"]));
    });
    Ok(())
}

/// (d) A node record written with a 2 s lease stays while kept alive (longer than the TTL) and
/// disappears within about the TTL once the keep-alive stops.
#[test]
fn etcd_mesh_node_lease_expires() -> Result<()> {
    let s = EtcdLab::start("lease", 3)?;
    run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd))
            .await
            .expect("connect");
        let r = record("dying-node");
        let key = r.key();
        let reg = NodeRegistration::register(store.clone(), r.clone(), LeaseConfig::with_ttl(2))
            .await
            .expect("register");
        // Kept alive past twice the TTL.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let kv = store.get(&key).await.unwrap().expect("record alive");
        assert_eq!(
            NodeRecord::decode(&r.cluster, &r.name, &kv.value).unwrap(),
            r
        );
        assert_eq!(reg.status().re_registrations, 0);
        // An update keeps the lease.
        let mut r2 = r.clone();
        r2.pod_cidrs = vec!["10.244.9.0/24".parse().unwrap()];
        reg.update(r2).await.unwrap();
        let lease = store.get(&key).await.unwrap().unwrap().lease;
        assert_eq!(lease, reg.status().lease_id);

        reg.stop();
        let stopped = Instant::now();
        let gone = loop {
            if store.get(&key).await.unwrap().is_none() {
                break stopped.elapsed();
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "record still there 10 s after the keep-alive stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("node record gone {gone:?} after the keep-alive stopped (TTL 2 s)");
        assert!(
            gone >= Duration::from_millis(500),
            "gone too early: {gone:?}"
        );
        assert!(gone <= Duration::from_secs(5), "gone too late: {gone:?}");
    });
    Ok(())
}

/// Bad input at start-up: an unreachable etcd names its endpoints; wrong credentials are an
/// authentication error; right credentials work.
#[test]
fn etcd_mesh_bad_startup_input() -> Result<()> {
    let s = EtcdLab::start("badinput", 1)?;
    // Enable auth (root user with the root role first, as etcd requires).
    s.etcd.etcdctl(0, &["user", "add", "root:s3cret"])?;
    s.etcd.etcdctl(0, &["user", "grant-role", "root", "root"])?;
    s.etcd.etcdctl(0, &["auth", "enable"])?;
    run_in(&s.client, async {
        let mut cfg = KvConfig::new(["http://192.0.2.99:2379", "http://192.0.2.98:2379"]);
        cfg.connect_timeout = Duration::from_secs(2);
        let t = Instant::now();
        let err = KvStore::connect(&cfg).await.unwrap_err();
        assert!(matches!(err, KvError::Unreachable { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("http://192.0.2.99:2379,http://192.0.2.98:2379"),
            "{msg}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        eprintln!("unreachable: {msg}");

        let mut cfg = kv_config(&s.etcd);
        cfg.user = Some(("root".into(), "wrong".into()));
        let err = KvStore::connect(&cfg).await.unwrap_err();
        assert!(matches!(err, KvError::Auth { .. }), "{err}");
        eprintln!("wrong password: {err}");

        // No credentials on an auth-enabled cluster: a clear error, not a hang.
        let err = KvStore::connect(&kv_config(&s.etcd)).await.unwrap_err();
        eprintln!("no credentials: {err}");
        assert!(matches!(err, KvError::AuthRequired { .. }), "{err}");

        cfg.user = Some(("root".into(), "s3cret".into()));
        let store = KvStore::connect(&cfg).await.expect("right password");
        store
            .put("ironmesh/v1/clusters/blue/nodes/x", b"{}".to_vec(), None)
            .await
            .unwrap();
    });
    Ok(())
}

/// Joins futures on one task (the client runtime is current-thread; no extra dependency).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let n = futs.len();
    let mut outs: Vec<Option<F::Output>> = (0..n).map(|_| None).collect();
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if outs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().map(|o| o.unwrap()).collect()
}

/// Growing nodes (a node whose blocks are full gets another, `PodCidrAllocator::grow`) from
/// three allocators at once, each its own node as each node's meshd does: every block is held
/// once, each node's index lists exactly its blocks, a pool with no block left says so, and a
/// block given back (`release_block`) is carved again for the next node.
/// (A grow retried after an unknown outcome finds the block it added and adds none: a grow
/// means "one more than when I started", so one node has one grower, its own meshd.)
#[test]
fn etcd_mesh_podcidr_growth_storm_never_gives_one_block_twice() -> Result<()> {
    let s = EtcdLab::start("cidrgrow", 1)?;
    s.etcd.wait_leader(Duration::from_secs(10))?;
    let base = vec![Pool::new("10.244.0.0/16".parse().unwrap(), 24).unwrap()];
    // 16 blocks of /28: 3 allocators × 5 grows = 15, plus each node's base block elsewhere.
    let tenant = vec![Pool::new("10.9.0.0/24".parse().unwrap(), 28).unwrap()];
    let nodes: Vec<NodeName> = (0..3)
        .map(|i| format!("grow-{i}").parse().unwrap())
        .collect();
    let results = run_in(&s.client, async {
        let mut tasks = Vec::new();
        for c in 0..3usize {
            let cfg = kv_config(&s.etcd);
            let (nodes, base, tenant) = (&nodes, base.clone(), tenant.clone());
            tasks.push(async move {
                let store = KvStore::connect(&cfg).await.expect("connect");
                let alloc = PodCidrAllocator::new(store, cluster(), base).unwrap();
                let mut got = Vec::new();
                for _ in 0..5 {
                    let node = &nodes[c];
                    alloc.allocate(node).await.expect("base block");
                    let cidrs = alloc
                        .grow(node, &tenant, Family::V4)
                        .await
                        .unwrap_or_else(|e| panic!("allocator {c}, {node}: {e}"));
                    got.push((node.clone(), *cidrs.last().unwrap()));
                }
                got
            });
        }
        futures_join_all(tasks).await
    });
    let grown: Vec<(NodeName, IpNet)> = results.into_iter().flatten().collect();
    assert_eq!(grown.len(), 15);
    let blocks: BTreeSet<IpNet> = grown.iter().map(|(_, b)| *b).collect();
    assert_eq!(blocks.len(), 15, "a block was handed out twice: {grown:?}");
    let (index, exhausted) = run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd))
            .await
            .expect("connect");
        let alloc = PodCidrAllocator::new(store, cluster(), base.clone()).unwrap();
        let mut index = BTreeMap::new();
        for n in &nodes {
            index.insert(n.clone(), alloc.lookup(n).await.unwrap().unwrap());
        }
        // One block is left: the next grow takes it, the one after is refused.
        let all = alloc.grow(&nodes[1], &tenant, Family::V4).await.unwrap();
        let e = alloc
            .grow(&nodes[1], &tenant, Family::V4)
            .await
            .unwrap_err();
        // Given back (an idle extra block), it is free for the next node that grows; a block
        // another node holds is not this node's to give back.
        let last = *all.last().unwrap();
        let after = alloc.release_block(&nodes[1], last).await.unwrap();
        assert!(!after.contains(&last), "{after:?}");
        let other = index[&nodes[2]].last().copied().unwrap();
        let unchanged = alloc.release_block(&nodes[1], other).await.unwrap();
        assert_eq!(unchanged, after, "not node 1's block: nothing changes");
        let taken = alloc.grow(&nodes[2], &tenant, Family::V4).await.unwrap();
        assert_eq!(
            taken.last(),
            Some(&last),
            "the given-back block is carved again"
        );
        assert_eq!(
            alloc.lookup(&nodes[2]).await.unwrap().unwrap().last(),
            Some(&last)
        );
        (index, e.to_string())
    });
    for (node, b) in &grown {
        assert!(
            index[node].contains(b),
            "{node}'s index lacks {b}: {index:?}"
        );
    }
    let in_tenant: usize = index
        .values()
        .map(|c| c.iter().filter(|b| tenant[0].cidr().contains(*b)).count())
        .sum();
    assert_eq!(in_tenant, 15, "each node's index lists exactly its blocks");
    assert!(
        exhausted.contains("every IPv4 pool is exhausted"),
        "{exhausted}"
    );
    Ok(())
}
