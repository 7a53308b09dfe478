//! Allocation under concurrency (issue 13): three nodes' meshd share one 3-member etcd; each
//! node applies its own Services (half of them LoadBalancer) with `ironctl apply` at the same
//! time as the others, and the etcd leader is killed in the middle. An apply that fails while
//! etcd elects a new leader is retried, as an operator would. Afterwards every Service has a
//! ClusterIP and every LoadBalancer Service a VIP, no address is held twice, and etcd's IPAM
//! keys agree with the objects one to one (nothing leaked, nothing lost).
//!
//! Needs root; builds meshd and ironctl.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use interop_tests::*;
use serde_json::Value;

const NODES: usize = 3;
/// Services per node, applied in files of `BATCH`.
const PER_NODE: usize = 36;
const BATCH: usize = 4;

fn meshd_config(host: &Host, name: &str, etcd: &str) -> PathBuf {
    let conf = host.path("meshd.toml");
    let state = host.path("meshd-state");
    let etcd: Vec<String> = etcd.split(',').map(|u| format!("{u:?}")).collect();
    let etcd = etcd.join(", ");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"{name}\"\ncluster = \"red\"\nstate_dir = {state:?}\n\n\
             [mesh]\netcd_endpoints = [{etcd}]\ncluster_id = 1\nlease_ttl = 6\n\
             service_cidrs = [\"10.96.0.0/24\"]\n"
        ),
    )
    .unwrap();
    conf
}

fn ironctl(bin: &Path, sock: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .env("IRONMESH_MESHD_SOCKET", sock)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn services_yaml(node: usize, first: usize) -> String {
    (first..first + BATCH)
        .map(|k| {
            let lb = if k.is_multiple_of(2) {
                "  type: LoadBalancer\n"
            } else {
                ""
            };
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{node}-{k}}}\nspec:\n{lb}  \
                 selector: {{app: s{node}-{k}}}\n  ports: [{{port: 80}}]\n---\n"
            )
        })
        .collect()
}

/// `etcdctl get --prefix` as (key, value) pairs.
fn prefix(etcd: &EtcdCluster, via: usize, p: &str) -> Vec<(String, String)> {
    let out = etcd.etcdctl(via, &["get", "--prefix", p]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
        .collect()
}

#[test]
fn e2e_apply_concurrent_applies_on_three_nodes_through_a_leader_kill_never_duplicate_an_address()
-> Result<()> {
    let bins =
        bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")]).unwrap();
    let lab = Lab::new("apply_race")?;
    let sw = lab.switch("sw")?;
    let mut hosts = Vec::new();
    for i in 0..NODES {
        let h = lab.host(&format!("n{}", i + 1))?;
        lab.attach(&h, &[&format!("192.0.2.{}/24", 11 + i)], &sw)?;
        hosts.push(h);
    }
    let members: Vec<(&Host, std::net::IpAddr)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h, format!("192.0.2.{}", 11 + i).parse().unwrap()))
        .collect();
    let etcd = EtcdCluster::start(&members)?;
    let mut nodes = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let conf = meshd_config(h, &format!("n{}", i + 1), &etcd.endpoints());
        let sock = h.path("meshd.sock");
        let args = [
            "--config".to_string(),
            conf.display().to_string(),
            "--api".into(),
            sock.display().to_string(),
        ];
        let p = h.spawn("meshd", &bins[0].display().to_string(), &args)?;
        nodes.push((p, sock));
    }
    let ctl = &bins[1];
    for (p, sock) in &nodes {
        cmd::wait_for(
            "meshd's API",
            Duration::from_secs(20),
            Duration::from_millis(100),
            |last| {
                assert!(p.is_running(), "meshd died: {}", p.log_tail(3000));
                let r = ironctl(ctl, sock, &["get", "svc", "-A"]);
                *last = format!("{r:?}");
                Ok(r.ok().map(drop))
            },
        )?;
    }
    let pool = lab.dir().join("pool.yaml");
    std::fs::write(
        &pool,
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: public}\n\
         spec: {cidrs: [203.0.113.0/25]}\n",
    )
    .unwrap();
    ironctl(
        ctl,
        &nodes[0].1,
        &["apply", "-f", &pool.display().to_string()],
    )
    .unwrap();

    // Every node applies its services at once; the leader dies when a third are applied.
    let applied = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let total = NODES * PER_NODE;
    let killed = std::thread::scope(|s| {
        for (n, (_, sock)) in nodes.iter().enumerate() {
            let (applied, retries, dir) = (&applied, &retries, lab.dir());
            s.spawn(move || {
                for first in (0..PER_NODE).step_by(BATCH) {
                    let file = dir.join(format!("svc-{n}-{first}.yaml"));
                    std::fs::write(&file, services_yaml(n, first)).unwrap();
                    let file = file.display().to_string();
                    let t = Instant::now();
                    loop {
                        match ironctl(ctl, sock, &["apply", "-f", &file]) {
                            Ok(_) => break,
                            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                                retries.fetch_add(1, Ordering::SeqCst);
                                eprintln!("n{}: apply {file} failed, retrying: {e}", n + 1);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            Err(e) => panic!("n{}: apply {file} failed for 30 s: {e}", n + 1),
                        }
                    }
                    applied.fetch_add(BATCH, Ordering::SeqCst);
                }
            });
        }
        let t = Instant::now();
        while applied.load(Ordering::SeqCst) < total / 3 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let leader = etcd.leader().unwrap();
        etcd.members[leader].process.kill();
        eprintln!(
            "etcd leader e{leader} killed after {} of {total} services were applied",
            applied.load(Ordering::SeqCst)
        );
        leader
    });
    let via = (killed + 1) % NODES;
    eprintln!(
        "all applied; {} applies retried",
        retries.load(Ordering::SeqCst)
    );

    // What the API shows: every service has a ClusterIP, every LoadBalancer one a VIP, all
    // distinct.
    let listed = ironctl(ctl, &nodes[via].1, &["get", "svc", "-A", "-o", "json"]).unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), total, "{listed}");
    let mut cluster_ips: BTreeMap<String, String> = BTreeMap::new();
    let mut vips: BTreeMap<String, String> = BTreeMap::new();
    for it in items {
        let name = it["metadata"]["name"].as_str().unwrap().to_string();
        let cip = it["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        assert!(cip.starts_with("10.96.0."), "{name}: clusterIP {cip:?}");
        if let Some(other) = cluster_ips.insert(cip.clone(), name.clone()) {
            panic!("ClusterIP {cip} held by {other} and {name}");
        }
        let k: usize = name.rsplit('-').next().unwrap().parse().unwrap();
        if k.is_multiple_of(2) {
            let vip = it["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no VIP: {it}"))
                .to_string();
            assert!(vip.starts_with("203.0.113."), "{name}: {vip}");
            if let Some(other) = vips.insert(vip.clone(), name.clone()) {
                panic!("VIP {vip} held by {other} and {name}");
            }
        }
    }
    assert_eq!(vips.len(), total / 2);

    // etcd's IPAM keys agree one to one with the objects: no address allocated twice, none
    // leaked by an apply that failed half way, none missing.
    let held = |kind: &str| -> BTreeMap<String, String> {
        prefix(
            &etcd,
            via,
            &format!("ironmesh/v1/clusters/red/ipam/{kind}/"),
        )
        .into_iter()
        .map(|(k, v)| {
            let ip = k.rsplit('/').next().unwrap().to_string();
            let v: Value = serde_json::from_str(&v).unwrap();
            let svc = v["service"]["name"]
                .as_str()
                .or_else(|| v["service"].as_str().and_then(|s| s.split('/').nth(1)))
                .unwrap_or_else(|| panic!("{k}: {v}"))
                .to_string();
            (ip, svc)
        })
        .collect()
    };
    assert_eq!(held("clusterips"), cluster_ips);
    assert_eq!(held("vips"), vips);
    let names: BTreeSet<&String> = cluster_ips.values().collect();
    assert_eq!(names.len(), total);
    for (p, _) in &nodes {
        assert!(p.is_running(), "meshd died: {}", p.log_tail(3000));
    }
    Ok(())
}
