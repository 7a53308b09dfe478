//! The meshd daemon and `ironctl mesh` in the lab (issue 7): two clusters, each with its own
//! real etcd 3.4 and two meshd processes, checked only through `ironctl mesh ... -o json`.
//!
//! Cluster "red" (ID 1) and "green" (ID 2) each have a one-member etcd on a switch of their
//! own (`swr`, `swg`). Every node host sits on both switches: its own cluster's etcd is its
//! local one, the other's is the remote it may mirror. Cutting both red nodes' links to `swg`
//! cuts green off from red while every local etcd stays reachable.
//!
//! The binaries are built by `cargo build` at the start of the test (a no-op when current), so
//! the test always runs the current meshd and ironctl.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use interop_tests::bgpd;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use serde_json::Value;

const LEASE_TTL: u64 = 4;
/// r1's metrics address (inside its namespace).
const METRICS: &str = "127.0.0.1:9180";

/// `GET /metrics` of meshd in `n`'s namespace.
fn scrape(n: &Node) -> String {
    use std::io::{Read, Write};
    n.host
        .in_netns(|| {
            let mut s = std::net::TcpStream::connect(METRICS).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            Ok::<_, String>(out)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("scraping {METRICS} in {}: {e}", n.name))
}

/// Builds meshd and ironctl with the profile of this test binary; returns their paths.
fn build_binaries() -> (PathBuf, PathBuf) {
    let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")]).unwrap();
    (b[0].clone(), b[1].clone())
}

struct Node {
    name: &'static str,
    host: Host,
    sock: PathBuf,
    meshd: Process,
}

fn config(
    host: &Host,
    name: &str,
    cluster: &str,
    id: u16,
    etcd: &str,
    remote: (&str, u16, &str),
    ipv4: Option<&str>,
) -> String {
    let state = host.path("meshd-state");
    let pool = format!("10.{id}.0.0/16");
    let ip = ipv4
        .map(|a| format!("node_ipv4 = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        "[node]\nname = \"{name}\"\ncluster = \"{cluster}\"\nstate_dir = {state:?}\n\n\
         [encryption]\nmode = \"opportunistic\"\n\n\
         [mesh]\netcd_endpoints = [\"{etcd}\"]\ncluster_id = {id}\nlease_ttl = {LEASE_TTL}\n{ip}\
         pod_cidr_pools = [{{ cidr = \"{pool}\", node_mask = 24 }}]\n\n\
         [[mesh.remote_clusters]]\nname = \"{}\"\nid = {}\nendpoints = [\"{}\"]\n\
         pod_cidrs = [\"10.{}.0.0/16\"]\nnode_cidrs = [\"{}\"]\n\
         service_cidrs = [\"10.96.0.0/16\"]\n",
        remote.0,
        remote.1,
        remote.2,
        remote.1,
        if remote.0 == "red" {
            "192.0.2.0/24"
        } else {
            "198.51.100.0/24"
        }
    )
}

fn start(host: &Host, name: &'static str, meshd: &Path, toml: &str, extra: &[&str]) -> Node {
    let conf = host.path("meshd.toml");
    std::fs::write(&conf, toml).unwrap();
    let sock = host.path("meshd.sock");
    let args = vec![
        "--config".to_string(),
        conf.display().to_string(),
        "--api".into(),
        sock.display().to_string(),
        "--log".into(),
        "info,ironmesh_meshd=debug".into(),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    let meshd = host
        .spawn("meshd", &meshd.display().to_string(), &args)
        .unwrap();
    Node {
        name,
        host: host.clone(),
        sock,
        meshd,
    }
}

/// `ironctl mesh --meshd SOCK -o json WHAT` parsed; Err with stderr on failure.
fn ctl(ironctl: &Path, n: &Node, what: &str) -> std::result::Result<Value, String> {
    cmd::ironctl_json(ironctl, "mesh", &n.sock, what)
}

fn node_set(nodes: &Value) -> BTreeSet<String> {
    nodes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    format!(
                        "{}/{}",
                        n["cluster"].as_str().unwrap_or(""),
                        n["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn remote(status: &Value) -> &Value {
    &status["remotes"][0]
}

/// Waits until `pred` holds for `ironctl mesh status` of `n`; returns that status.
fn wait_status(
    ironctl: &Path,
    n: &Node,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(
        what,
        timeout,
        Duration::from_millis(200),
        |last| match ctl(ironctl, n, "status") {
            Ok(s) if pred(&s) => Ok(Some(s)),
            Ok(s) => {
                *last = s.to_string();
                Ok(None)
            }
            Err(e) => {
                *last = e;
                Ok(None)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}\nmeshd log:\n{}", n.name, n.meshd.log_tail(3000)))
}

fn wait_nodes(ironctl: &Path, n: &Node, want: &BTreeSet<String>, timeout: Duration) -> Value {
    wait_for(
        &format!("{} sees {want:?}", n.name),
        timeout,
        Duration::from_millis(200),
        |last| match ctl(ironctl, n, "nodes") {
            Ok(v) if &node_set(&v) == want => Ok(Some(v)),
            Ok(v) => {
                *last = format!("{:?}", node_set(&v));
                Ok(None)
            }
            Err(e) => {
                *last = e;
                Ok(None)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nmeshd log:\n{}", n.meshd.log_tail(3000)))
}

fn mirrors(ironctl: &Path, nodes: &[&Node]) -> Vec<&'static str> {
    nodes
        .iter()
        .filter(|n| {
            ctl(ironctl, n, "status")
                .map(|s| remote(&s)["local_is_mirror"] == true)
                .unwrap_or(false)
        })
        .map(|n| n.name)
        .collect()
}

#[test]
fn etcd_mesh_agent_two_clusters_failover_and_cut() -> Result<()> {
    let (meshd, ironctl) = build_binaries();
    let lab = Lab::new("meshagent")?;
    let swr = lab.switch("swr")?;
    let swg = lab.switch("swg")?;
    let er = lab.host("er")?;
    let eg = lab.host("eg")?;
    lab.attach(&er, &["192.0.2.11/24"], &swr)?;
    lab.attach(&eg, &["198.51.100.11/24"], &swg)?;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let etcd_r = EtcdCluster::start(&[(&er, ip("192.0.2.11"))])?;
    let etcd_g = EtcdCluster::start(&[(&eg, ip("198.51.100.11"))])?;
    let (red_ep, green_ep) = (etcd_r.endpoints(), etcd_g.endpoints());

    let mut cuts = Vec::new();
    let mut nodes = Vec::new();
    for (name, cluster, own, other) in [
        ("r1", "red", "192.0.2.21", "198.51.100.21"),
        ("r2", "red", "192.0.2.22", "198.51.100.22"),
        ("g1", "green", "198.51.100.31", "192.0.2.31"),
        ("g2", "green", "198.51.100.32", "192.0.2.32"),
    ] {
        let h = lab.host(name)?;
        let (own_sw, other_sw) = if cluster == "red" {
            (&swr, &swg)
        } else {
            (&swg, &swr)
        };
        lab.attach(&h, &[&format!("{own}/24")], own_sw)?;
        let link = lab.attach(&h, &[&format!("{other}/24")], other_sw)?;
        if cluster == "red" {
            cuts.push(link);
        }
        let toml = if cluster == "red" {
            config(
                &h,
                name,
                "red",
                1,
                &red_ep,
                ("green", 2, &green_ep),
                Some(own),
            )
        } else {
            // g2 names no address: meshd takes the first global one (its own switch's).
            let ipv4 = (name == "g1").then_some(own);
            let toml = config(&h, name, "green", 2, &green_ep, ("red", 1, &red_ep), ipv4);
            if name == "g2" {
                toml.replace("lease_ttl = ", "deregister_on_stop = true\nlease_ttl = ")
            } else {
                toml
            }
        };
        let extra: &[&str] = if name == "r1" {
            &["--metrics", METRICS]
        } else {
            &[]
        };
        nodes.push(start(&h, name, &meshd, &toml, extra));
    }
    let all: BTreeSet<String> = ["red/r1", "red/r2", "green/g1", "green/g2"]
        .iter()
        .map(|s| s.to_string())
        .collect();

    // Every node sees all four nodes of both clusters, each with a PodCIDR of its cluster's
    // pool (all distinct), an address and a WireGuard key.
    let started = Instant::now();
    let mut seen = None;
    for n in &nodes {
        seen = Some(wait_nodes(&ironctl, n, &all, Duration::from_secs(30)));
    }
    eprintln!("all 4 nodes seen everywhere after {:?}", started.elapsed());
    let list = seen.unwrap();
    let mut cidrs = BTreeSet::new();
    for n in list.as_array().unwrap() {
        let cidr = n["pod_cidrs"][0].as_str().unwrap().to_string();
        let pool = if n["cluster"] == "red" {
            "10.1."
        } else {
            "10.2."
        };
        assert!(cidr.starts_with(pool) && cidr.ends_with("/24"), "{n}");
        assert!(cidrs.insert(cidr), "duplicate PodCIDR: {list}");
        assert_eq!(n["wireguard_public_key"].as_str().unwrap().len(), 44, "{n}");
    }
    let g2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "g2")
        .unwrap();
    assert_eq!(g2["ipv4"], "198.51.100.32", "first global address: {g2}");

    // One elected mirror per cluster; every node reports its remote synced and connected.
    for n in &nodes {
        let s = wait_status(
            &ironctl,
            n,
            "remote connected",
            Duration::from_secs(20),
            |s| {
                s["etcd_connected"] == true
                    && s["registered"] == true
                    && remote(s)["connected"] == true
                    && remote(s)["synced"] == true
                    && remote(s)["nodes"] == 2
            },
        );
        assert_eq!(remote(&s)["stale"], false, "{s}");
        assert!(remote(&s)["last_sync_age_secs"].as_u64().is_some(), "{s}");
    }
    let (red, green) = (vec![&nodes[0], &nodes[1]], vec![&nodes[2], &nodes[3]]);
    wait_for(
        "one mirror per cluster",
        Duration::from_secs(10),
        Duration::from_millis(200),
        |last| {
            let (r, g) = (mirrors(&ironctl, &red), mirrors(&ironctl, &green));
            *last = format!("red {r:?}, green {g:?}");
            Ok((r.len() == 1 && g.len() == 1).then_some(()))
        },
    )?;
    // A global service and an identity in each cluster (written as their controllers would):
    // red's nodes serve red's VIP with the backends of both clusters, labelled by cluster.
    for (etcd, cluster, id, backend) in [
        (&etcd_r, "red", 65_792, "10.1.0.5"),
        (&etcd_g, "green", 131_328, "10.2.0.7"),
    ] {
        let svc = format!(
            r#"{{"service":{{"namespace":"shop","name":"web"}},"cluster":"{cluster}","vips":["10.96.0.10"],"ports":[{{"port":80,"protocol":"tcp"}}],"backends":[{{"ip":"{backend}","port":8080,"state":"active"}}],"global":true,"affinity":"local"}}"#
        );
        etcd.put(
            0,
            &format!("ironmesh/v1/clusters/{cluster}/services/shop/web"),
            &svc,
        )?;
        etcd.put(
            0,
            &format!("ironmesh/v1/clusters/{cluster}/identities/{id}"),
            r#"{"labels":{"app":"web"}}"#,
        )?;
    }
    let services = wait_for(
        "r2 merges the global service",
        Duration::from_secs(15),
        Duration::from_millis(200),
        |last| {
            let v = ctl(&ironctl, &nodes[1], "services").map_err(LabError::Invalid)?;
            *last = v.to_string();
            let red = v
                .as_array()
                .and_then(|a| a.iter().find(|s| s["cluster"] == "red"))
                .cloned();
            Ok(red.filter(|s| {
                s["global_backends"]
                    .as_array()
                    .is_some_and(|b| b.len() == 2)
            }))
        },
    )?;
    let mut got: Vec<String> = services["global_backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}@{}",
                b["ip"].as_str().unwrap(),
                b["cluster"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, ["10.1.0.5@red", "10.2.0.7@green"], "{services}");
    // Affinity local: red's own backend is the one in use.
    assert_eq!(
        services["selected_backends"][0]["ip"], "10.1.0.5",
        "{services}"
    );
    // Both clusters' identities, once green's has come through the mirror.
    let identities = |ids: &Value| -> Vec<String> {
        let mut got: Vec<String> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}/{}",
                    i["cluster"].as_str().unwrap(),
                    i["id"],
                    i["labels"]["app"].as_str().unwrap_or("")
                )
            })
            .collect();
        got.sort();
        got
    };
    let want = ["green/131328/web", "red/65792/web"];
    wait_for(
        "both clusters' identities at r2",
        Duration::from_secs(10),
        Duration::from_millis(100),
        |last| match ctl(&ironctl, &nodes[1], "identities") {
            Ok(ids) => {
                *last = ids.to_string();
                Ok((identities(&ids) == want).then_some(()))
            }
            Err(e) => {
                *last = e;
                Ok(None)
            }
        },
    )
    .unwrap();

    let leader = mirrors(&ironctl, &red)[0];
    let (dead, survivor) = if leader == "r1" {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    let s = ctl(&ironctl, survivor, "status").unwrap();
    assert_eq!(remote(&s)["mirror_leader"], leader, "{s}");

    // The red mirror crashes (SIGKILL): the other red meshd takes over within the lease TTL
    // (plus the election's watch and a first listing), and the dead node's record expires.
    dead.meshd.kill();
    let killed = Instant::now();
    wait_status(
        &ironctl,
        survivor,
        "mirror handed over",
        Duration::from_secs(LEASE_TTL * 3),
        |s| remote(s)["local_is_mirror"] == true && remote(s)["mirror_leader"] == survivor.name,
    );
    eprintln!("mirror handed over {:?} after the kill", killed.elapsed());
    let mut three = all.clone();
    three.remove(&format!("red/{}", dead.name));
    wait_nodes(
        &ironctl,
        &nodes[2],
        &three,
        Duration::from_secs(LEASE_TTL * 3),
    );
    // Restarted, it gets its PodCIDR back and stays a follower.
    let cidr_before = node_cidr(&list, dead.name);
    dead.meshd.restart()?;
    let back = wait_nodes(&ironctl, dead, &all, Duration::from_secs(20));
    assert_eq!(
        node_cidr(&back, dead.name),
        cidr_before,
        "PodCIDR reallocated"
    );
    assert_eq!(mirrors(&ironctl, &red), vec![survivor.name]);

    // Green cut off from red (both red nodes' links to green's switch down): red keeps the
    // last good state and says stale; green still sees red fine.
    for c in &cuts {
        c.cut()?;
    }
    let cut_at = Instant::now();
    for n in &red {
        let s = wait_status(&ironctl, n, "green stale", Duration::from_secs(20), |s| {
            remote(s)["stale"] == true && remote(s)["connected"] == false
        });
        assert_eq!(remote(&s)["nodes"], 2, "last good state kept: {s}");
        assert!(remote(&s)["stale_since_unix_ms"].as_u64().is_some(), "{s}");
    }
    eprintln!("stale seen {:?} after the cut", cut_at.elapsed());
    let m = scrape(&nodes[0]);
    for want in [
        "meshd_remote_stale{cluster=\"green\"} 1",
        "meshd_remote_connected{cluster=\"green\"} 0",
        "meshd_entries{cluster=\"green\",kind=\"nodes\"} 2",
        "meshd_pod_cidrs_allocated 1",
        "meshd_local_etcd_connected 1",
    ] {
        assert!(m.contains(want), "{want} not in\n{m}");
    }
    wait_nodes(&ironctl, &nodes[0], &all, Duration::from_secs(1));
    let s = ctl(&ironctl, &nodes[2], "status").unwrap();
    assert_eq!(
        (remote(&s)["stale"].clone(), remote(&s)["connected"].clone()),
        (Value::Bool(false), Value::Bool(true)),
        "{s}"
    );
    for c in &cuts {
        c.restore()?;
    }
    for n in &red {
        wait_status(
            &ironctl,
            n,
            "green recovered",
            Duration::from_secs(30),
            |s| remote(s)["stale"] == false && remote(s)["connected"] == true,
        );
    }

    // A clean stop (SIGTERM) keeps the node record: a restart within the lease TTL takes it
    // back, and no other node ever sees g1 gone.
    nodes[2].meshd.terminate();
    let stopped = Instant::now();
    let mut down_for = Duration::ZERO;
    let mut restarted = false;
    while stopped.elapsed() < Duration::from_secs(LEASE_TTL * 2) {
        let seen = ctl(&ironctl, &nodes[0], "nodes").map(|v| node_set(&v));
        assert_eq!(
            seen.as_ref().map(|s| s.contains("green/g1")),
            Ok(true),
            "g1's record went {:?} after a clean stop ({down_for:?} down)",
            stopped.elapsed()
        );
        if !restarted && stopped.elapsed() >= Duration::from_secs(LEASE_TTL / 2) {
            down_for = stopped.elapsed();
            assert!(
                nodes[2].meshd.log_tail(20_000).contains("node record kept"),
                "the stop did not say it kept the record"
            );
            nodes[2].meshd.restart()?;
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_status(
        &ironctl,
        &nodes[2],
        "g1 back",
        Duration::from_secs(30),
        |s| remote(s)["connected"] == true,
    );
    eprintln!("g1 was down {down_for:?}; its record stayed in red's view throughout");

    // g2 has mesh.deregister_on_stop: its lease is revoked, the record goes well before the TTL.
    nodes[3].meshd.terminate();
    let stopped = Instant::now();
    let mut without = all.clone();
    without.remove("green/g2");
    wait_nodes(
        &ironctl,
        &nodes[0],
        &without,
        Duration::from_secs(LEASE_TTL * 3),
    );
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_millis(LEASE_TTL * 1000 * 3 / 4),
        "record removed after {took:?}: the lease was not revoked"
    );
    assert!(nodes[3].meshd.log_tail(4000).contains("node lease revoked"));
    drop(nodes);
    Ok(())
}

fn node_cidr(list: &Value, name: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["pod_cidrs"][0].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Bad input: an unreachable etcd gives a clear, repeated error line naming the endpoint
/// (and `ironctl mesh status` says it), and a bad config is refused before anything starts.
#[test]
fn etcd_mesh_agent_bad_input() -> Result<()> {
    let (meshd, ironctl) = build_binaries();
    let lab = Lab::new("meshbad")?;
    let h = lab.host("n1")?;
    // Nothing listens on 127.0.0.1:1 in this namespace: connections are refused.
    let toml = config(
        &h,
        "n1",
        "red",
        1,
        "http://127.0.0.1:1",
        ("green", 2, "http://127.0.0.1:2"),
        None,
    );
    let n = start(&h, "n1", &meshd, &toml, &[]);
    let want = "cannot reach the local etcd: etcd is unreachable at http://127.0.0.1:1";
    wait_for(
        "two failed attempts logged",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |last| {
            let log = n.meshd.log_tail(20_000);
            *last = log.lines().last().unwrap_or("").to_string();
            Ok((log.matches(want).count() >= 2 && log.contains("retrying in")).then_some(()))
        },
    )?;
    assert!(n.meshd.is_running(), "meshd gave up instead of retrying");
    let s = ctl(&ironctl, &n, "status").expect("status answers while etcd is unreachable");
    assert_eq!(s["etcd_connected"], false, "{s}");
    assert!(
        s["etcd_error"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:1"),
        "{s}"
    );
    let err = ctl(&ironctl, &n, "nodes").unwrap_err();
    assert!(
        err.contains("has not reached its local etcd at http://127.0.0.1:1"),
        "{err}"
    );
    n.meshd.terminate();

    // A bad config: exit code 2, the field named, no socket made.
    let bad = toml.replace("node_mask = 24", "node_mask = 8");
    let conf = h.path("bad.toml");
    std::fs::write(&conf, bad).unwrap();
    let sock = h.path("bad.sock");
    let out = Command::new(&meshd)
        .arg("--config")
        .arg(&conf)
        .arg("--api")
        .arg(&sock)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("mesh.pod_cidr_pools[0].node_mask: 8 is out of range"),
        "{stderr}"
    );
    assert!(!sock.exists(), "a socket was created for a bad config");
    // And ironctl says clearly when meshd is not there.
    let out = Command::new(&ironctl)
        .args(["mesh", "--meshd"])
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is meshd running?"));
    Ok(())
}

/// A malformed value under the node's own keys (its PodCIDR index): meshd does not exit or
/// crash-loop; it says which key and how to fix it, retries with a growing wait, keeps its API
/// up, and registers as soon as the key is fixed.
#[test]
fn etcd_mesh_agent_malformed_own_key_waits_and_recovers() -> Result<()> {
    let (meshd, ironctl) = build_binaries();
    let lab = Lab::new("meshmal")?;
    let h = lab.host("n1")?;
    let e = lab.host("e1")?;
    lab.link(&h, &["192.0.2.1/24"], &e, &["192.0.2.11/24"])?;
    let etcd = EtcdCluster::start(&[(&e, "192.0.2.11".parse().unwrap())])?;
    let key = "ironmesh/v1/clusters/red/ipam/podcidrs-by-node/n1";
    etcd.put(0, key, "{not json")?;
    let toml = config(
        &h,
        "n1",
        "red",
        1,
        &etcd.endpoints(),
        ("green", 2, "http://127.0.0.1:2"),
        Some("192.0.2.1"),
    );
    let n = start(&h, "n1", &meshd, &toml, &[]);
    wait_for(
        "the malformed key logged twice, with the fix",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |last| {
            let log = n.meshd.log_tail(20_000);
            *last = log.lines().last().unwrap_or("").to_string();
            let said = log
                .matches(&format!("the value at {key} is malformed"))
                .count();
            Ok((said >= 2 && log.contains(&format!("etcdctl del {key}"))).then_some(()))
        },
    )?;
    assert!(
        n.meshd.is_running(),
        "meshd exited on a malformed key of its own"
    );
    let s = ctl(&ironctl, &n, "status").expect("status answers meanwhile");
    assert_eq!(s["registered"], false, "{s}");
    // The operator deletes the key: meshd allocates and registers.
    let fixed = Instant::now();
    etcd.del(0, key)?;
    wait_for(
        "registered after the fix",
        Duration::from_secs(40),
        Duration::from_millis(200),
        |_| Ok((ctl(&ironctl, &n, "status").is_ok_and(|s| s["registered"] == true)).then_some(())),
    )?;
    eprintln!("registered {:?} after the key was deleted", fixed.elapsed());
    assert!(n.meshd.is_running());
    n.meshd.terminate();
    Ok(())
}
