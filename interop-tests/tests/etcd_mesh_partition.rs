//! meshd under etcd partitions (issue 19): a real 3-member etcd 3.4, each member in a host of
//! its own on one switch, and meshd processes on two more hosts. A member is cut off with
//! nftables inside its own namespace, either from the other two members only (a minority
//! partition: it still answers meshd's TCP, but has no leader) or from everything.
//!
//! Each member is cut in turn (so whichever member meshd prefers is cut once), for longer than
//! the lease TTL (4 s). Throughout:
//! - the node record and every endpoint record stay in etcd: afterwards, etcd's history from
//!   the start revision (a watch from that revision on a healthy member) holds no delete of
//!   them, which is exact, not sampled;
//! - an endpoint added during a cut gets its identity and record within 2 s (it is added 0.5 s
//!   after the cut; when the cut member is the leader this includes etcd's own election: the
//!   lab's etcd runs raft timing for its sub-millisecond RTT, `EtcdCluster::start_lan`,
//!   election timeout 500 ms; with etcd's defaults (1 s, randomized up to 2 s) the election
//!   alone can take most of the 2 s, and 2.4 s was measured here);
//! - a meshd started during a cut registers within 5 s;
//! - `ironctl mesh status` names the cut member (unhealthy, and without leader when only the
//!   peers are cut), and the node's lease never runs low;
//! - no identity or PodCIDR is allocated twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use interop_tests::cmd::wait_for;
use interop_tests::*;
use ironmesh_meshd::kvstore::etcd::{Client, EventType, GetOptions, WatchOptions};
use serde_json::Value;

const LEASE_TTL: u64 = 4;
const CLUSTER: &str = "red";
const MEMBERS: usize = 3;
/// How long each cut lasts: longer than the lease TTL.
const CUT_FOR: Duration = Duration::from_secs(LEASE_TTL + 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// From the other members only: it answers meshd but has no leader.
    FromPeers,
    /// From everything: meshd's connections to it time out.
    Entirely,
}

fn member_ip(i: usize) -> String {
    format!("192.0.2.{}", 11 + i)
}

fn member_url(i: usize) -> String {
    format!("http://{}:2379", member_ip(i))
}

/// Drops member `i`'s traffic inside its namespace (table `im_part`).
fn cut(etcd: &EtcdCluster, i: usize, how: Cut) {
    let host = &etcd.members[i].host;
    let peers: Vec<String> = (0..MEMBERS).filter(|&j| j != i).map(member_ip).collect();
    let peers = peers.join(", ");
    let script = match how {
        Cut::FromPeers => format!(
            "table inet im_part {{\n\
               chain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {peers} }} drop; }}\n\
               chain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {peers} }} drop; }}\n\
             }}\n"
        ),
        Cut::Entirely => "table inet im_part {\n\
               chain in { type filter hook input priority 0; policy drop; iif \"lo\" accept; }\n\
               chain out { type filter hook output priority 0; policy drop; oif \"lo\" accept; }\n\
             }\n"
        .to_string(),
    };
    let path = host.path("nft-part.nft");
    std::fs::write(&path, script).unwrap();
    host.exec("nft", &["-f", &path.to_string_lossy()])
        .expect("installing the nftables cut");
}

fn heal(etcd: &EtcdCluster, i: usize) {
    etcd.members[i]
        .host
        .exec("nft", &["delete", "table", "inet", "im_part"])
        .expect("removing the nftables cut");
}

struct Meshd {
    name: String,
    host: Host,
    sock: PathBuf,
    cni: PathBuf,
    proc: Process,
}

fn start_meshd(host: &Host, name: &str, ip: &str, bin: &Path, first_member: usize) -> Meshd {
    let cni = host.path("cni-endpoints");
    std::fs::create_dir_all(&cni).unwrap();
    // The member to cut first is listed first: meshd must not depend on the order.
    let eps: Vec<String> = (0..MEMBERS)
        .map(|k| format!("\"{}\"", member_url((first_member + k) % MEMBERS)))
        .collect();
    let toml = format!(
        "[node]\nname = \"{name}\"\ncluster = \"{CLUSTER}\"\nstate_dir = {state:?}\n\n\
         [mesh]\netcd_endpoints = [{eps}]\ncluster_id = 1\nlease_ttl = {LEASE_TTL}\n\
         node_ipv4 = \"{ip}\"\n\
         pod_cidr_pools = [{{ cidr = \"10.1.0.0/16\", node_mask = 24 }}]\n\
         cni_endpoints_dir = {cni:?}\n",
        state = host.path("meshd-state"),
        eps = eps.join(", "),
    );
    let conf = host.path("meshd.toml");
    std::fs::write(&conf, toml).unwrap();
    let sock = host.path("meshd.sock");
    let args: Vec<String> = vec![
        "--config".into(),
        conf.display().to_string(),
        "--api".into(),
        sock.display().to_string(),
        "--log".into(),
        "info,ironmesh_meshd=debug".into(),
    ];
    let proc = host
        .spawn(&format!("meshd-{name}"), &bin.display().to_string(), &args)
        .unwrap();
    Meshd {
        name: name.into(),
        host: host.clone(),
        sock,
        cni,
        proc,
    }
}

fn status(ironctl: &Path, m: &Meshd) -> std::result::Result<Value, String> {
    cmd::ironctl_json(ironctl, "mesh", &m.sock, "status")
}

/// Writes a CNI endpoint record (as the plugin does) for `ip` with label app=`app`.
fn add_pod(m: &Meshd, pod: &str, ip: &str, app: &str) {
    let rec = serde_json::json!({
        "containerID": pod,
        "ifname": "eth0",
        "netns": format!("/var/run/netns/{pod}"),
        "hostIfname": format!("im{pod}"),
        "addresses": [ip],
        "labels": {"app": app, "io.kubernetes.pod.name": pod},
    });
    let tmp = m.cni.join(format!(".{pod}-eth0.tmp"));
    std::fs::write(&tmp, rec.to_string()).unwrap();
    std::fs::rename(&tmp, m.cni.join(format!("{pod}-eth0.json"))).unwrap();
}

fn key(kind: &str, name: &str) -> String {
    format!("ironmesh/v1/clusters/{CLUSTER}/{kind}/{name}")
}

/// The keys under `prefix` as member `via` serves them (linearizable).
fn keys(etcd: &EtcdCluster, via: usize, prefix: &str) -> BTreeMap<String, String> {
    let out = etcd
        .etcdctl(via, &["get", "--prefix", prefix])
        .unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// The current revision, as member `via` sees it.
fn revision(client: &Host, via: usize) -> i64 {
    client
        .block_on(async move {
            let mut c = Client::connect([member_url(via)], None).await.unwrap();
            let r = c
                .get("ironmesh/", Some(GetOptions::new().with_count_only()))
                .await
                .unwrap();
            r.header().unwrap().revision()
        })
        .unwrap()
}

/// Every delete under `prefix` since revision `from` (etcd's history, through member `via`):
/// (key, revision). Reads until the history is quiet for a second (at most 15 s).
fn deletes_since(client: &Host, via: usize, prefix: &str, from: i64) -> Vec<(String, i64)> {
    let prefix = prefix.to_string();
    client
        .block_on(async move {
            let mut c = Client::connect([member_url(via)], None).await.unwrap();
            let mut s = c
                .watch(
                    prefix.as_str(),
                    Some(WatchOptions::new().with_prefix().with_start_revision(from)),
                )
                .await
                .unwrap();
            let mut out = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_secs(15);
            while let Ok(Ok(Some(r))) = tokio::time::timeout_at(
                until.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                s.message(),
            )
            .await
            {
                assert!(
                    !r.canceled(),
                    "history watch canceled: {}",
                    r.cancel_reason()
                );
                for ev in r.events() {
                    if ev.event_type() == EventType::Delete {
                        let kv = ev.kv().unwrap();
                        out.push((
                            String::from_utf8_lossy(kv.key()).into_owned(),
                            kv.mod_revision(),
                        ));
                    }
                }
            }
            out
        })
        .unwrap()
}

/// The member row of `url` in `ironctl mesh status -o json`.
fn member_row(st: &Value, url: &str) -> Option<Value> {
    st["etcd_members"]
        .as_array()?
        .iter()
        .find(|m| m["endpoint"] == url)
        .cloned()
}

fn build() -> (PathBuf, PathBuf) {
    let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")]).unwrap();
    (b[0].clone(), b[1].clone())
}

struct Lab3 {
    etcd: EtcdCluster,
    c1: Host,
    c2: Host,
    _lab: Lab,
}

fn lab(name: &str) -> Lab3 {
    let lab = Lab::new(name).unwrap();
    let sw = lab.switch("sw").unwrap();
    let mut hosts = Vec::new();
    for i in 0..MEMBERS {
        let h = lab.host(&format!("e{i}")).unwrap();
        lab.attach(&h, &[&format!("{}/24", member_ip(i))], &sw)
            .unwrap();
        hosts.push(h);
    }
    let c1 = lab.host("c1").unwrap();
    lab.attach(&c1, &["192.0.2.21/24"], &sw).unwrap();
    let c2 = lab.host("c2").unwrap();
    lab.attach(&c2, &["192.0.2.22/24"], &sw).unwrap();
    let ms: Vec<(&Host, std::net::IpAddr)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h, member_ip(i).parse().unwrap()))
        .collect();
    let etcd = EtcdCluster::start_lan(&ms).unwrap();
    Lab3 {
        etcd,
        c1,
        c2,
        _lab: lab,
    }
}

/// The scenario; `how` says how each member is cut.
fn partition_scenario(test: &str, how: Cut) {
    let t0 = Instant::now();
    let (meshd_bin, ironctl) = build();
    let l = lab(test);
    eprintln!("{test}: lab up after {:?}", t0.elapsed());
    let etcd = &l.etcd;
    let start_rev = revision(&l.c1, 0);

    // n1 registers with two pods.
    let n1 = start_meshd(&l.c1, "n1", "192.0.2.21", &meshd_bin, 0);
    let n1_node = key("nodes", "n1");
    let st = wait_for(
        "n1 registered with a PodCIDR",
        Duration::from_secs(20),
        Duration::from_millis(200),
        |_| {
            Ok(status(&ironctl, &n1)
                .ok()
                .filter(|s| s["registered"] == true && s["pod_cidrs"][0].is_string()))
        },
    )
    .unwrap();
    let cidr: ipnet::Ipv4Net = st["pod_cidrs"][0].as_str().unwrap().parse().unwrap();
    let pod_ip = |k: u32| std::net::Ipv4Addr::from(u32::from(cidr.network()) + 10 + k).to_string();
    let mut pods: Vec<String> = Vec::new();
    for k in 0..2u32 {
        add_pod(&n1, &format!("p{k}"), &pod_ip(k), "web");
        pods.push(pod_ip(k));
    }
    wait_for(
        "n1's endpoint records",
        Duration::from_secs(15),
        Duration::from_millis(200),
        |_| {
            let eps = keys(etcd, 0, &key("endpoints", ""));
            Ok(pods
                .iter()
                .all(|ip| eps.contains_key(&key("endpoints", ip)))
                .then_some(()))
        },
    )
    .unwrap();
    assert!(keys(etcd, 0, &n1_node).contains_key(&n1_node));

    let mut identity_latency = Vec::new();
    let mut n2: Option<(Meshd, Duration)> = None;
    let mut lowest_lease_ms = i64::MAX;
    for round in 0..MEMBERS {
        let bad = round;
        let good = (bad + 1) % MEMBERS;
        let url = member_url(bad);
        let cut_at = Instant::now();
        cut(etcd, bad, how);

        // An endpoint added during the cut gets its identity and record within 2 s.
        std::thread::sleep(Duration::from_millis(500));
        let k = 2 + round as u32;
        let ip = pod_ip(k);
        let t = Instant::now();
        add_pod(&n1, &format!("p{k}"), &ip, &format!("app{round}"));
        let ep_key = key("endpoints", &ip);
        wait_for(
            &format!("endpoint {ip} (new identity) during the cut of e{bad}"),
            Duration::from_secs(10),
            Duration::from_millis(50),
            |_| {
                Ok(keys(etcd, good, &ep_key)
                    .contains_key(&ep_key)
                    .then_some(()))
            },
        )
        .unwrap();
        identity_latency.push(t.elapsed());
        pods.push(ip);

        // Status names the cut member.
        let row = wait_for(
            &format!("n1's status naming e{bad} unhealthy"),
            // A member not in use is probed every 3 s (a probe waits 625 ms twice).
            Duration::from_secs(6),
            Duration::from_millis(100),
            |last| {
                let st = status(&ironctl, &n1).map_err(LabError::Invalid)?;
                if let Some(ms) = st["lease_ttl_remaining_ms"].as_i64() {
                    lowest_lease_ms = lowest_lease_ms.min(ms);
                }
                let row = member_row(&st, &url);
                *last = format!("{row:?}");
                // Cut from its peers, the member answers but loses its leader after its
                // election timeout (1-2 s): the status says so.
                Ok(row.filter(|r| {
                    r["health"] == "unhealthy"
                        && (how == Cut::Entirely
                            || (r["reachable"] == true && r["has_leader"] == false))
                }))
            },
        )
        .unwrap();
        assert!(
            !row["last_error"].as_str().unwrap_or("").is_empty(),
            "the cut member's row says why: {row}"
        );
        // A meshd started during the first cut, once the cut member is known to be bad (and listed
        // first), registers within seconds.
        if round == 0 {
            let t = Instant::now();
            let m = start_meshd(&l.c2, "n2", "192.0.2.22", &meshd_bin, bad);
            let n2_node = key("nodes", "n2");
            wait_for(
                "n2 registered during the partition",
                Duration::from_secs(15),
                Duration::from_millis(100),
                |_| {
                    Ok(keys(etcd, good, &n2_node)
                        .contains_key(&n2_node)
                        .then_some(()))
                },
            )
            .unwrap();
            n2 = Some((m, t.elapsed()));
        }

        // Hold the cut past the lease TTL, watching the lease left.
        while cut_at.elapsed() < CUT_FOR {
            if let Ok(st) = status(&ironctl, &n1)
                && let Some(ms) = st["lease_ttl_remaining_ms"].as_i64()
            {
                lowest_lease_ms = lowest_lease_ms.min(ms);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("{test}: round {round}: cut held until {:?}", t0.elapsed());
        heal(etcd, bad);
        etcd.wait_healthy(bad, Duration::from_secs(20)).unwrap();
        eprintln!(
            "{test}: round {round}: e{bad} healthy after {:?}",
            t0.elapsed()
        );
        wait_for(
            &format!("n1's status showing e{bad} healthy again"),
            Duration::from_secs(10),
            Duration::from_millis(200),
            |_| {
                let st = status(&ironctl, &n1).map_err(LabError::Invalid)?;
                Ok(member_row(&st, &url).filter(|r| r["health"] == "healthy"))
            },
        )
        .unwrap();
    }

    eprintln!("{test}: rounds done after {:?}", t0.elapsed());
    // Nothing of n1 or n2 lapsed at any moment: no delete in etcd's history.
    let nodes_deleted = deletes_since(&l.c1, 0, &key("nodes", ""), start_rev);
    assert!(
        nodes_deleted.is_empty(),
        "node records lapsed: {nodes_deleted:?}"
    );
    let eps_deleted = deletes_since(&l.c1, 0, &key("endpoints", ""), start_rev);
    assert!(
        eps_deleted.is_empty(),
        "endpoint records lapsed: {eps_deleted:?}"
    );
    let eps = keys(etcd, 0, &key("endpoints", ""));
    for ip in &pods {
        assert!(eps.contains_key(&key("endpoints", ip)), "{ip} missing");
    }

    // The merged view's watch moved between members and resumed from its revision; it was
    // never listed again (the revisions stayed in etcd's history).
    let log = std::fs::read_to_string(n1.proc.log_path()).unwrap();
    let relists: Vec<&str> = log.lines().filter(|l| l.contains("relisting")).collect();
    assert!(relists.is_empty(), "n1 listed again: {relists:#?}");
    assert!(
        log.contains("resuming from its revision"),
        "n1's watch never moved"
    );

    // Bounds.
    let (n2m, n2_took) = n2.expect("n2 started");
    assert!(
        n2_took < Duration::from_secs(5),
        "a meshd started during the partition registered after {n2_took:?}"
    );
    for (round, d) in identity_latency.iter().enumerate() {
        assert!(
            *d < Duration::from_secs(2),
            "the endpoint added during the cut of e{round} got its record after {d:?}"
        );
    }
    assert!(
        lowest_lease_ms > 0,
        "n1's lease ran out ({lowest_lease_ms} ms left at the lowest)"
    );

    // No duplicate identity or PodCIDR.
    let by_labels = keys(etcd, 0, &key("identities-by-labels", ""));
    let ids: Vec<i64> = by_labels
        .values()
        .map(|v| {
            serde_json::from_str::<Value>(v).unwrap()["identity"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "an identity number twice: {by_labels:?}"
    );
    assert_eq!(
        ids.len(),
        1 + MEMBERS,
        "one identity per label set: {by_labels:?}"
    );
    let by_node = keys(etcd, 0, &key("ipam/podcidrs-by-node", ""));
    let mut cidrs = Vec::new();
    for v in by_node.values() {
        let v: Value = serde_json::from_str(v).unwrap();
        for c in v["cidrs"].as_array().unwrap() {
            cidrs.push(c.as_str().unwrap().to_string());
        }
    }
    let unique: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(cidrs.len(), unique.len(), "a PodCIDR twice: {by_node:?}");
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    eprintln!(
        "{test}: n2 registered after {n2_took:?}; endpoint latencies {identity_latency:?}; lowest lease left {lowest_lease_ms} ms; meshds {} and {}",
        n1.name, n2m.name
    );
    let _ = &n2m.host;
}

#[test]
fn etcd_mesh_partition_minority_member_loses_nothing() {
    partition_scenario("etcd_mesh_partition_minority", Cut::FromPeers);
}

#[test]
fn etcd_mesh_partition_member_cut_off_entirely_loses_nothing() {
    partition_scenario("etcd_mesh_partition_entire", Cut::Entirely);
}

/// Stops and resumes an etcd member in a loop (bounded); resumes it for good when dropped,
/// also when the test fails.
struct Stutter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stutter {
    /// `pid` is stopped for `stopped` out of every `stopped + running`, for at most `limit`.
    fn start(pid: u32, stopped: Duration, running: Duration, limit: Duration) -> Stutter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let signal = move |sig: &str| {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        };
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                signal("-STOP");
                std::thread::sleep(stopped);
                signal("-CONT");
                std::thread::sleep(running);
            }
            signal("-CONT");
        });
        Stutter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Stutter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A slow member is told apart from a failed one (issue 19): a follower that answers, but
/// only after up to 400 ms: its etcd is stopped (SIGSTOP) 400 ms out of every 440 ms. The lab
/// has no netem to delay its packets; a stopped follower keeps its leader (the stops are
/// shorter than the 500 ms election timeout, and the leader keeps its quorum with the other
/// follower). It is listed first to meshd. `ironctl mesh status` shows it slow (reachable,
/// with a leader), the others healthy, the etcd line names it, and a record written
/// meanwhile gets its identity within 2 s.
#[test]
fn etcd_mesh_partition_slow_member_is_told_apart_from_a_failed_one() {
    let test = "etcd_mesh_partition_slow";
    let (meshd_bin, ironctl) = build();
    let l = lab(test);
    let etcd = &l.etcd;
    let leader = etcd.leader().unwrap();
    let slow = (leader + 1) % MEMBERS;
    let url = member_url(slow);
    let pid = etcd.members[slow].process.pid().expect("etcd's pid");
    let _stutter = Stutter::start(
        pid,
        Duration::from_millis(400),
        Duration::from_millis(40),
        Duration::from_secs(90),
    );
    let n1 = start_meshd(&l.c1, "n1", "192.0.2.21", &meshd_bin, slow);
    let st = wait_for(
        "n1 registered with a PodCIDR",
        Duration::from_secs(20),
        Duration::from_millis(200),
        |_| {
            Ok(status(&ironctl, &n1)
                .ok()
                .filter(|s| s["registered"] == true && s["pod_cidrs"][0].is_string()))
        },
    )
    .unwrap();
    let row = wait_for(
        &format!("n1's status showing e{slow} slow and the others healthy"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        |last| {
            let st = status(&ironctl, &n1).map_err(LabError::Invalid)?;
            *last = format!("{:?}", st["etcd_members"]);
            let others_healthy = (0..MEMBERS)
                .filter(|&i| i != slow)
                .all(|i| member_row(&st, &member_url(i)).is_some_and(|r| r["health"] == "healthy"));
            Ok(member_row(&st, &url).filter(|r| r["health"] == "slow" && others_healthy))
        },
    )
    .unwrap();
    assert_eq!(row["reachable"], true, "slow, not failed: {row}");
    assert_eq!(row["has_leader"], true, "slow, not failed: {row}");
    // The text's etcd line names it (polled: its health moves with each round trip).
    wait_for(
        "the etcd line naming the slow member",
        Duration::from_secs(20),
        Duration::from_millis(100),
        |last| {
            let out = cmd::run(
                &ironctl.display().to_string(),
                &["mesh", "--meshd", &n1.sock.display().to_string(), "status"],
            );
            let text = out.map_err(|e| LabError::Invalid(e.to_string()))?;
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("etcd "))
                .unwrap_or("")
                .to_string();
            *last = line.clone();
            Ok(line.contains(&format!("1 slow ({url})")).then_some(()))
        },
    )
    .unwrap();
    // Requests go to the fast members: a record written now gets its identity at once.
    let cidr: ipnet::Ipv4Net = st["pod_cidrs"][0].as_str().unwrap().parse().unwrap();
    let ip = std::net::Ipv4Addr::from(u32::from(cidr.network()) + 10).to_string();
    let t = Instant::now();
    add_pod(&n1, "p0", &ip, "web");
    let ep_key = key("endpoints", &ip);
    wait_for(
        "the endpoint record written while a member is slow",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |_| {
            Ok(keys(etcd, leader, &ep_key)
                .contains_key(&ep_key)
                .then_some(()))
        },
    )
    .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the endpoint written while e{slow} was slow got its record after {took:?}"
    );
    eprintln!("{test}: e{slow} shown slow: {row}; endpoint record after {took:?}");
}
