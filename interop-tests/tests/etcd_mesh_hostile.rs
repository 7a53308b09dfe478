//! A compromised remote cluster (issue 14, "Remote records are checked before they are used"):
//! blue's etcd is written directly with good records and every kind of bad one, and red keeps
//! using only the good ones.
//!
//! Cluster "red" (ID 1, pool 10.1.0.0/16, nodes on 192.0.2.0/24) and "blue" (ID 2) each have a
//! one-member etcd on a switch of their own. Red's meshd `r1` (a real process, on both switches)
//! declares what blue may claim (`pod_cidrs = 10.2.0.0/16`, `node_cidrs = 198.51.100.0/24`,
//! `service_cidrs = 10.96.0.0/16`), mirrors blue's etcd into red's and serves `ironctl mesh`
//! and its metrics. The desired WireGuard peers (their allowed IPs are the peers' PodCIDRs), IP
//! cache and services of r1 are computed in process by the same code meshd runs
//! (`MergedView::spawn_checked` with the `Trust` of r1's config, `MeshDesired` through the
//! reconcile driver), on a thread in r1's namespace.
//!
//! r1's config also names a remote "green" whose pools overlap red's: it is refused at start
//! (neither mirrored nor read) and its status says why.
//!
//! The checks run twice (defence in depth): on arrival, r1's mirror (the leader) checks each of
//! blue's records against what blue may claim and never writes a refused one into red's etcd
//! (etcd's history of `mirror/blue/` shows no put of one; a record that turns bad is deleted
//! from it); on use, every node's merged view checks the mirrored records against the local
//! ones (local state wins). The mirror leader publishes its refusals in the mirror's status key,
//! so a second meshd `r5` (red's switch only, never the mirror) lists the same refusals, once
//! each, in its status and metric.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ClusterName, IdentityLayout};
use interop_tests::bgpd;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use ipnet::IpNet;
use ironmesh_meshd::agent::AgentConfig;
use ironmesh_meshd::federation::MergedView;
use ironmesh_meshd::kvstore::etcd::{Client, EventType, WatchOptions};
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::nodes::NodeRecord;
use ironmesh_meshd::reconcile::{
    Advert, IpCacheEntry, PeerKey, ReconcileDriver, RecordingSink, Sinks,
};
use ironmesh_meshd::services::{Frontend, FrontendSpec};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9181";
const BLUE_ID: u32 = (2 << 16) | 300;
const RED_ID: u32 = (1 << 16) | 300;

fn build_binaries() -> (PathBuf, PathBuf) {
    let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")]).unwrap();
    (b[0].clone(), b[1].clone())
}

fn c(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn node(cluster: &str, name: &str, ip: &str, cidrs: &[&str]) -> NodeRecord {
    let mut r = NodeRecord::new(c(cluster), name.parse().unwrap());
    r.ipv4 = Some(ip.parse().unwrap());
    r.pod_cidrs = cidrs.iter().map(|s| s.parse().unwrap()).collect();
    r.wireguard_public_key = Some(format!("key-of-{cluster}-{name}"));
    r
}

fn endpoint(cluster: &str, ip: &str, node: &str, identity: u32) -> (String, Vec<u8>) {
    (
        format!("ironmesh/v1/clusters/{cluster}/endpoints/{ip}"),
        format!(r#"{{"ip":"{ip}","cluster":"{cluster}","node":"{node}","identity":{identity}}}"#)
            .into_bytes(),
    )
}

fn service(cluster: &str, name: &str, vip: &str, backends: &[&str]) -> (String, Vec<u8>) {
    let b: Vec<String> = backends
        .iter()
        .map(|ip| format!(r#"{{"ip":"{ip}","port":8080}}"#))
        .collect();
    (
        format!("ironmesh/v1/clusters/{cluster}/services/shop/{name}"),
        format!(
            r#"{{"service":{{"namespace":"shop","name":"{name}"}},"cluster":"{cluster}","vips":["{vip}"],"ports":[{{"port":80,"protocol":"tcp"}}],"backends":[{}],"global":true,"affinity":"none"}}"#,
            b.join(",")
        )
        .into_bytes(),
    )
}

fn identity(cluster: &str, id: u32) -> (String, Vec<u8>) {
    (
        format!("ironmesh/v1/clusters/{cluster}/identities/{id}"),
        br#"{"labels":{"app":"web"}}"#.to_vec(),
    )
}

async fn put_all(store: &KvStore, kvs: Vec<(String, Vec<u8>)>) {
    for (k, v) in kvs {
        store.put(&k, v, None).await.unwrap();
    }
}

/// What r1 would program: peers (with their PodCIDRs, the WireGuard allowed IPs), IP cache
/// (ip -> cluster, identity) and service frontends (vip -> backend IPs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    peers: BTreeMap<String, Vec<IpNet>>,
    ipcache: BTreeMap<IpAddr, (String, u32)>,
    services: BTreeMap<String, BTreeSet<String>>,
}

struct Recorders {
    peers: RecordingSink<PeerKey, NodeRecord>,
    ipcache: RecordingSink<IpAddr, IpCacheEntry>,
    services: RecordingSink<Frontend, FrontendSpec>,
}

impl Recorders {
    fn programmed(&self) -> Programmed {
        Programmed {
            peers: self
                .peers
                .state()
                .into_iter()
                .map(|((c, n), r)| (format!("{c}/{n}"), r.pod_cidrs))
                .collect(),
            ipcache: self
                .ipcache
                .state()
                .into_iter()
                .map(|(ip, e)| (ip, (e.cluster.to_string(), e.identity.raw())))
                .collect(),
            services: self
                .services
                .state()
                .into_iter()
                .map(|(f, s)| {
                    (
                        format!("{}:{}", f.vip, f.port),
                        s.backends.iter().map(|b| b.ip.to_string()).collect(),
                    )
                })
                .collect(),
        }
    }
}

async fn until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ctl(ironctl: &Path, sock: &Path, what: &str) -> std::result::Result<Value, String> {
    cmd::ironctl_json(ironctl, "mesh", sock, what)
}

fn blue_status(s: &Value) -> Value {
    s["remotes"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "blue").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn etcd_mesh_hostile_remote_records_are_refused() -> Result<()> {
    let (meshd_bin, ironctl) = build_binaries();
    let lab = Lab::new("hostile")?;
    let swr = lab.switch("swr")?;
    let swb = lab.switch("swb")?;
    let er = lab.host("er")?;
    let eb = lab.host("eb")?;
    lab.attach(&er, &["192.0.2.11/24"], &swr)?;
    lab.attach(&eb, &["198.51.100.11/24"], &swb)?;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let etcd_r = EtcdCluster::start(&[(&er, ip("192.0.2.11"))])?;
    let etcd_b = EtcdCluster::start(&[(&eb, ip("198.51.100.11"))])?;
    let r1 = lab.host("r1")?;
    lab.attach(&r1, &["192.0.2.21/24"], &swr)?;
    lab.attach(&r1, &["198.51.100.21/24"], &swb)?;

    let toml_of = |host: &Host, name: &str, ipv4: &str| {
        let state = host.path(&format!("meshd-state-{name}"));
        format!(
            "[node]\nname = \"{name}\"\ncluster = \"red\"\nstate_dir = {state:?}\n\n\
         [encryption]\nmode = \"opportunistic\"\n\n\
         [mesh]\netcd_endpoints = [\"{red}\"]\ncluster_id = 1\nlease_ttl = 4\n\
         node_ipv4 = \"{ipv4}\"\n\
         pod_cidr_pools = [{{ cidr = \"10.1.0.0/16\", node_mask = 24 }}]\n\n\
         [[mesh.remote_clusters]]\nname = \"blue\"\nid = 2\nendpoints = [\"{blue}\"]\n\
         pod_cidrs = [\"10.2.0.0/16\"]\nnode_cidrs = [\"198.51.100.0/24\"]\n\
         service_cidrs = [\"10.96.0.0/16\"]\n\n\
         [[mesh.remote_clusters]]\nname = \"green\"\nid = 3\nendpoints = [\"http://127.0.0.1:1\"]\n\
         pod_cidrs = [\"10.1.128.0/17\"]\n",
            red = etcd_r.endpoints(),
            blue = etcd_b.endpoints(),
        )
    };
    let start = |host: &Host, name: &str, toml: &str| -> Result<(Process, PathBuf)> {
        let conf = host.path(&format!("meshd-{name}.toml"));
        std::fs::write(&conf, toml).unwrap();
        let sock = host.path(&format!("meshd-{name}.sock"));
        let args: Vec<String> = [
            "--config",
            &conf.display().to_string(),
            "--api",
            &sock.display().to_string(),
            "--metrics",
            METRICS,
            "--log",
            "info,ironmesh_meshd=debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Ok((
            host.spawn(name, &meshd_bin.display().to_string(), &args)?,
            sock,
        ))
    };
    let toml = toml_of(&r1, "r1", "192.0.2.21");
    let (meshd, sock) = start(&r1, "r1", &toml)?;
    // The same checks as r1's meshd: the trust its config gives.
    let agent = AgentConfig::from_config(&configs::Config::from_toml(&toml).unwrap()).unwrap();
    let (trust, refused) = agent.trust();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(trust.layout, IdentityLayout::default());
    let kv = |e: &EtcdCluster| -> KvConfig {
        interop_tests::etcd_lab::kv_config(e, Duration::from_secs(2), Duration::from_secs(1))
    };

    let (before, after) = r1
        .block_on(async {
            let red = KvStore::connect(&kv(&etcd_r)).await.expect("red etcd");
            let blue = KvStore::connect(&kv(&etcd_b)).await.expect("blue etcd");
            // Red's other nodes and local pods, and red's side of the global services. r3 (as
            // written by a misconfigured red, or before renumbering) sits inside what blue may
            // claim: local state wins there too.
            let r2 = node("red", "r2", "192.0.2.22", &["10.1.1.0/24"]);
            let r3 = node("red", "r3", "198.51.100.40", &["10.2.7.0/24"]);
            put_all(
                &red,
                vec![
                    (r2.key(), r2.encode()),
                    (r3.key(), r3.encode()),
                    endpoint("red", "10.2.7.8", "r3", RED_ID),
                    endpoint("red", "10.1.1.5", "r2", RED_ID),
                    identity("red", RED_ID),
                    service("red", "web", "10.96.0.10", &["10.1.1.5"]),
                    service("red", "api", "10.96.0.11", &["10.1.1.5"]),
                ],
            )
            .await;
            // Blue's good records.
            let b1 = node("blue", "b1", "198.51.100.31", &["10.2.1.0/24"]);
            put_all(
                &blue,
                vec![
                    (b1.key(), b1.encode()),
                    endpoint("blue", "10.2.1.5", "b1", BLUE_ID),
                    identity("blue", BLUE_ID),
                    service("blue", "web", "10.96.0.10", &["10.2.1.5"]),
                ],
            )
            .await;

            let peers = RecordingSink::default();
            let ipcache = RecordingSink::default();
            let services = RecordingSink::default();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _view =
                MergedView::spawn_checked(red.clone(), trust, Duration::from_millis(300), Some(tx));
            let _driver = ReconcileDriver::spawn(
                c("red"),
                "r1".parse().unwrap(),
                rx,
                Sinks {
                    peers: Box::new(peers.clone()),
                    ipcache: Box::new(ipcache.clone()),
                    services: Box::new(services.clone()),
                    adverts: Box::new(RecordingSink::<IpNet, Advert>::default()),
                },
                Duration::from_millis(200),
            );
            let rec = Recorders {
                peers,
                ipcache,
                services,
            };
            let web = "10.96.0.10:80".to_string();
            until(
                "blue's good records programmed",
                Duration::from_secs(30),
                || {
                    let p = rec.programmed();
                    p.peers.contains_key("blue/b1")
                        && p.ipcache.contains_key(&ip("10.2.1.5"))
                        && p.services.get(&web).is_some_and(|b| b.len() == 2)
                },
            )
            .await;
            let before = rec.programmed();

            // The compromised remote publishes every kind of bad record.
            let evil = node("blue", "evil", "198.51.100.66", &["0.0.0.0/0"]);
            let thief = node("blue", "thief", "198.51.100.67", &["10.1.1.0/24"]);
            let outside = node("blue", "outside", "192.0.2.99", &["10.2.2.0/24"]);
            // Inside blue's claims, but local state: r3's PodCIDR, r3's address.
            let b7 = node("blue", "b7", "198.51.100.37", &["10.2.7.0/24"]);
            let b8 = node("blue", "b8", "198.51.100.40", &["10.2.8.0/24"]);
            put_all(
                &blue,
                vec![
                    (evil.key(), evil.encode()),
                    (thief.key(), thief.encode()),
                    (outside.key(), outside.encode()),
                    (b7.key(), b7.encode()),
                    (b8.key(), b8.encode()),
                    // A local pod's IP inside blue's pools.
                    endpoint("blue", "10.2.7.8", "b1", BLUE_ID),
                    // The reserved host identity, and one of red's identities.
                    endpoint("blue", "10.2.1.6", "b1", 1),
                    endpoint("blue", "10.2.1.7", "b1", RED_ID),
                    // Inside blue's pools but not b1's PodCIDR.
                    endpoint("blue", "10.2.9.9", "b1", BLUE_ID),
                    // A local node's address, and a local pod's.
                    endpoint("blue", "192.0.2.22", "b1", BLUE_ID),
                    endpoint("blue", "10.1.1.5", "b1", BLUE_ID),
                    identity("blue", 1),
                    // A global-service backend outside blue's pools.
                    service("blue", "api", "10.96.0.11", &["192.0.2.22"]),
                    // A Service object of blue claiming r1's own address as its ClusterIP.
                    (
                        "ironmesh/v1/clusters/blue/objects/services/shop/web".into(),
                        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop","annotations":{"ironmesh.io/global":"true"}},"spec":{"clusterIP":"192.0.2.21","selector":{"app":"web"},"ports":[{"port":80}]}}"#.to_vec(),
                    ),
                ],
            )
            .await;
            // And one more good record after them: it is applied.
            let b2 = node("blue", "b2", "198.51.100.32", &["10.2.2.0/24"]);
            put_all(
                &blue,
                vec![
                    (b2.key(), b2.encode()),
                    endpoint("blue", "10.2.2.5", "b2", BLUE_ID),
                ],
            )
            .await;
            until("blue's b2 programmed", Duration::from_secs(30), || {
                let p = rec.programmed();
                p.peers.contains_key("blue/b2") && p.ipcache.contains_key(&ip("10.2.2.5"))
            })
            .await;
            // A good record that turns bad: mirrored and applied, then deleted from the mirror
            // and no longer applied.
            let turncoat = node("blue", "turncoat", "198.51.100.38", &["10.2.5.0/24"]);
            put_all(&blue, vec![(turncoat.key(), turncoat.encode())]).await;
            until("blue's turncoat programmed", Duration::from_secs(30), || {
                rec.programmed().peers.contains_key("blue/turncoat")
            })
            .await;
            let mirrored = "ironmesh/v1/mirror/blue/nodes/turncoat";
            assert!(red.get(mirrored).await.unwrap().is_some(), "good: mirrored");
            let turned = node("blue", "turncoat", "198.51.100.38", &["10.1.2.0/24"]);
            put_all(&blue, vec![(turned.key(), turned.encode())]).await;
            until("blue's turncoat no longer programmed", Duration::from_secs(30), || {
                !rec.programmed().peers.contains_key("blue/turncoat")
            })
            .await;
            let start = Instant::now();
            while red.get(mirrored).await.unwrap().is_some() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the turned record stays in red's mirror"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Let any (wrong) late change land.
            tokio::time::sleep(Duration::from_secs(1)).await;
            (before, rec.programmed())
        })
        .expect("joining r1's namespace");

    // Unaffected: the same as before, plus b2 (a peer, its endpoint, its node address).
    let mut expected = before.clone();
    expected
        .peers
        .insert("blue/b2".into(), vec!["10.2.2.0/24".parse().unwrap()]);
    expected
        .ipcache
        .insert(ip("10.2.2.5"), ("blue".into(), BLUE_ID));
    expected
        .ipcache
        .insert(ip("198.51.100.32"), ("blue".into(), 6));
    assert_eq!(after, expected, "bad records changed what r1 programs");
    eprintln!("r1 programs, with every bad record of blue published: {after:#?}");
    // The peers' allowed IPs: only each node's own PodCIDR; r2's is still r2's.
    assert_eq!(
        after.peers["red/r2"],
        vec!["10.1.1.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        after.peers.keys().collect::<Vec<_>>(),
        ["blue/b1", "blue/b2", "red/r2", "red/r3"]
    );
    assert_eq!(after.ipcache[&ip("10.2.7.8")], ("red".into(), RED_ID));
    assert_eq!(after.ipcache[&ip("198.51.100.40")].0, "red");
    assert_eq!(after.ipcache[&ip("10.1.1.5")], ("red".into(), RED_ID));
    assert_eq!(after.ipcache[&ip("192.0.2.22")].0, "red");
    for bad in ["10.2.1.6", "10.2.1.7", "10.2.9.9"] {
        assert!(!after.ipcache.contains_key(&ip(bad)), "{bad} in {after:?}");
    }
    assert_eq!(
        after.services["10.96.0.11:80"],
        ["10.1.1.5".to_string()].into(),
        "blue's bad shop/api record adds no backend"
    );

    // r1's meshd (the real process): its nodes, services, status and metrics.
    const REFUSED: usize = 15;
    let status = wait_for(
        "r1's status listing blue's refused records",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |last| {
            if !meshd.is_running() {
                return Err(LabError::Invalid(format!(
                    "meshd exited:\n{}",
                    meshd.log_tail(3000)
                )));
            }
            match ctl(&ironctl, &sock, "status") {
                Ok(s) if blue_status(&s)["refused_count"] == REFUSED => Ok(Some(s)),
                Ok(s) => {
                    *last = blue_status(&s).to_string();
                    Ok(None)
                }
                Err(e) => {
                    *last = e;
                    Ok(None)
                }
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nmeshd log:\n{}", meshd.log_tail(4000)));
    let b = blue_status(&status);
    let why: Vec<String> = b["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    eprintln!("blue's refused records: {why:#?}");
    for want in [
        "node evil pod_cidrs 0.0.0.0/0 outside blue's pools (10.2.0.0/16)",
        "node thief pod_cidrs 10.1.1.0/24 outside blue's pools (10.2.0.0/16)",
        "node outside ipv4 192.0.2.99 outside blue's node ranges (198.51.100.0/24)",
        "node turncoat pod_cidrs 10.1.2.0/24 outside blue's pools (10.2.0.0/16)",
        "endpoint 10.2.1.6 identity 1 is the reserved identity host; a remote cluster may not use it",
        "endpoint 10.2.1.7 identity 65836 is not an identity of blue (cluster ID 2): it belongs to cluster ID 1",
        "endpoint 10.2.9.9 ip 10.2.9.9 outside the PodCIDRs of its node b1 (10.2.1.0/24)",
        "endpoint 192.0.2.22 ip 192.0.2.22 outside blue's pools (10.2.0.0/16)",
        "endpoint 10.1.1.5 ip 10.1.1.5 outside blue's pools (10.2.0.0/16)",
        "identity 1 key 1 is the reserved identity host; a remote cluster may not use it",
        "service shop/api backends 192.0.2.22 outside blue's pools (10.2.0.0/16)",
        "service object shop/web addresses 192.0.2.21 outside blue's service ranges (10.96.0.0/16)",
        "node b7 pod_cidrs 10.2.7.0/24 overlaps local node r3's PodCIDR 10.2.7.0/24; local state wins",
        "node b8 ipv4 198.51.100.40 overlaps the address of local node r3; local state wins",
        "endpoint 10.2.7.8 ip 10.2.7.8 overlaps a local endpoint's IP; local state wins",
    ] {
        assert!(why.iter().any(|w| w == want), "{want:?} not in {why:#?}");
    }
    assert_eq!(b["nodes"], 2, "b1 and b2 only: {b}");
    // Green was refused at start: not mirrored, and the status says why.
    let green = status["remotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "green")
        .unwrap()
        .clone();
    let err = green["error"].as_str().unwrap();
    assert!(
        err.starts_with("remote refused (neither mirrored nor read): PodCIDRs overlap between clusters: 10.1.0.0/16 of cluster red overlaps 10.1.128.0/17 of cluster green"),
        "{green}"
    );
    assert_eq!(green["local_is_mirror"], false, "{green}");

    let text = std::process::Command::new(&ironctl)
        .args(["mesh", "--meshd"])
        .arg(&sock)
        .arg("status")
        .output()
        .expect("running ironctl");
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(text.contains("blue: 15 records refused:"), "{text}");
    assert!(
        text.contains("  node evil pod_cidrs 0.0.0.0/0 outside blue's pools (10.2.0.0/16)"),
        "{text}"
    );

    let nodes = ctl(&ironctl, &sock, "nodes").unwrap();
    let names: BTreeSet<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}/{}",
                n["cluster"].as_str().unwrap(),
                n["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        ["blue/b1", "blue/b2", "red/r1", "red/r2", "red/r3"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // The endpoints r1's meshd serves (what its IP cache is built from): the good ones only.
    let out = std::process::Command::new(&ironctl)
        .args(["get", "pods", "-A", "-o", "json", "--meshd"])
        .arg(&sock)
        .output()
        .expect("running ironctl");
    let pods: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let ips: BTreeSet<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["cluster"].as_str().unwrap(),
                p["status"]["podIP"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ips,
        [
            "blue/10.2.1.5",
            "blue/10.2.2.5",
            "red/10.1.1.5",
            "red/10.2.7.8"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        "{pods}"
    );
    let services = ctl(&ironctl, &sock, "services").unwrap();
    let api = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api" && s["cluster"] == "red")
        .unwrap();
    let ips: Vec<&str> = api["global_backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.1.1.5"], "{api}");

    let metrics = scrape(&r1)?;
    assert!(
        metrics.contains("meshd_remote_records_refused{cluster=\"blue\"} 15"),
        "{metrics}"
    );
    // Logged once each, with the reason.
    let log = meshd.log_tail(200_000);
    assert_eq!(
        log.matches("node evil pod_cidrs 0.0.0.0/0 outside blue's pools")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("remote record refused on arrival; not mirrored"),
        "the mirror (r1) refuses on arrival: {log}"
    );

    // On arrival: etcd's history of red's mirror of blue holds no put of a refused record,
    // and the turncoat was put only while good, then deleted.
    let history = r1.block_on(mirror_history(etcd_r.endpoints()))?;
    let puts_of = |key: &str| -> Vec<&Vec<u8>> {
        history
            .iter()
            .filter(|(k, v)| k == key && v.is_some())
            .map(|(_, v)| v.as_ref().unwrap())
            .collect()
    };
    let m = |rest: &str| format!("ironmesh/v1/mirror/blue/{rest}");
    for good in [
        "nodes/b1",
        "nodes/b2",
        "endpoints/10.2.1.5",
        "services/shop/web",
    ] {
        assert!(
            !puts_of(&m(good)).is_empty(),
            "{good} mirrored: {history:?}"
        );
    }
    // Refused on use only (they need the local records to judge): mirrored.
    for on_use in [
        "nodes/b7",
        "nodes/b8",
        "endpoints/10.2.7.8",
        "endpoints/10.2.9.9",
    ] {
        assert!(
            !puts_of(&m(on_use)).is_empty(),
            "{on_use} mirrored: {history:?}"
        );
    }
    for refused in [
        "nodes/evil",
        "nodes/thief",
        "nodes/outside",
        "endpoints/10.2.1.6",
        "endpoints/10.2.1.7",
        "endpoints/192.0.2.22",
        "endpoints/10.1.1.5",
        "identities/1",
        "services/shop/api",
        "objects/services/shop/web",
    ] {
        let key = m(refused);
        assert!(
            history.iter().all(|(k, _)| *k != key),
            "{refused} reached red's mirror: {history:?}"
        );
    }
    let turncoat = m("nodes/turncoat");
    let puts = puts_of(&turncoat);
    assert!(!puts.is_empty(), "the turncoat was mirrored while good");
    for v in puts {
        let r = NodeRecord::decode(&c("blue"), &"turncoat".parse().unwrap(), v).unwrap();
        assert_eq!(r.pod_cidrs, vec!["10.2.5.0/24".parse::<IpNet>().unwrap()]);
    }
    assert_eq!(
        history.iter().rev().find(|(k, _)| *k == turncoat),
        Some(&(turncoat.clone(), None)),
        "the turned record was deleted from the mirror last"
    );

    // A second node of red, r5, on red's switch only: r1 holds the mirror, r5 never writes
    // it, and still lists every refusal (the mirror's, from the status key; its own, on use)
    // once each, in its status, ironctl's text and its metric.
    let r5 = lab.host("r5")?;
    lab.attach(&r5, &["192.0.2.25/24"], &swr)?;
    let (meshd5, sock5) = start(&r5, "r5", &toml_of(&r5, "r5", "192.0.2.25"))?;
    let status5 = wait_for(
        "r5's status listing blue's refused records",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |last| {
            if !meshd5.is_running() {
                return Err(LabError::Invalid(format!(
                    "r5's meshd exited:\n{}",
                    meshd5.log_tail(3000)
                )));
            }
            match ctl(&ironctl, &sock5, "status") {
                Ok(s) if blue_status(&s)["refused_count"] == REFUSED => Ok(Some(s)),
                Ok(s) => {
                    *last = blue_status(&s).to_string();
                    Ok(None)
                }
                Err(e) => {
                    *last = e;
                    Ok(None)
                }
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nr5's meshd log:\n{}", meshd5.log_tail(4000)));
    let b5 = blue_status(&status5);
    assert_eq!(b5["local_is_mirror"], false, "{b5}");
    assert_eq!(b5["mirror_leader"], "r1", "{b5}");
    let why5: Vec<String> = b5["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut sorted = why5.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), REFUSED, "each listed once: {why5:#?}");
    let mut why1 = why.clone();
    why1.sort();
    assert_eq!(sorted, why1, "r5 lists what r1 lists");
    let text = std::process::Command::new(&ironctl)
        .args(["mesh", "--meshd"])
        .arg(&sock5)
        .arg("status")
        .output()
        .expect("running ironctl");
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("r5: {text}");
    assert!(text.contains("blue: 15 records refused:"), "{text}");
    assert!(
        text.contains("  node evil pod_cidrs 0.0.0.0/0 outside blue's pools (10.2.0.0/16)"),
        "{text}"
    );
    let metrics = scrape(&r5)?;
    assert!(
        metrics.contains("meshd_remote_records_refused{cluster=\"blue\"} 15"),
        "{metrics}"
    );
    let log5 = meshd5.log_tail(200_000);
    assert!(
        !log5.contains("remote record refused on arrival"),
        "r5 never mirrors: {log5}"
    );
    Ok(())
}

/// `GET /metrics` of the meshd on `host`.
fn scrape(host: &Host) -> Result<String> {
    Ok(host
        .in_netns(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(METRICS).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            Ok::<_, String>(out)
        })?
        .unwrap())
}

/// Every write under red's `mirror/blue/` in etcd's history (from revision 1; the lab's etcd
/// is never compacted), in order: (key, `Some(value)` for a put, `None` for a delete). Reads
/// until the history is quiet for a second (at most 15 s).
async fn mirror_history(endpoints: String) -> Vec<(String, Option<Vec<u8>>)> {
    let eps: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let mut c = Client::connect(eps, None).await.unwrap();
    let mut s = c
        .watch(
            "ironmesh/v1/mirror/blue/",
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
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
            let kv = ev.kv().unwrap();
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            out.push(match ev.event_type() {
                EventType::Put => (key, Some(kv.value().to_vec())),
                EventType::Delete => (key, None),
            });
        }
    }
    out
}
