//! meshd drives IPsec from node records (issue 5): three nodes on one switch, one etcd, each
//! running the meshd binary with `[encryption] backend = "ipsec"` and a Cilium-format key
//! file. Every node must get XFRM policies for every other node (read back with
//! `ip xfrm policy`, field by field), attempt the ESP SAs and report this kernel's refusal per
//! peer in `ironctl encryption status -o json` (each node publishes a distinct
//! `ipsec_node_id`; the inbound SA attempted for each peer carries that peer's own SPI); pods keep reaching each other in
//! opportunistic mode; a policy deleted by hand comes back; a malformed key file is reported
//! by file and line while the rest keeps working; a new SPI in the key files rotates through
//! the node records; a dead node's policies go within about a second of its record; strict
//! mode drops what it cannot encrypt.
//!
//! Limits: this kernel has XFRM policies but no ESP/AES-GCM, so no SA is installed and no
//! packet is encrypted here; the datapath does not mark packets in this lab, so `out`
//! policies (marked) never match lab traffic.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use interop_tests::bgpd;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use serde_json::Value;

const N: usize = 3;
const T: Duration = Duration::from_secs(30);
const HEX3: &str = "0123456789abcdef0123456789abcdef01234567";
const HEX4: &str = "89abcdef0123456789abcdef0123456789abcdef";

struct Node {
    host: Host,
    sock: PathBuf,
    conf: PathBuf,
    key: PathBuf,
    meshd: Process,
    cidr: String,
    pod_ip: String,
    pod: Option<Host>,
}

/// One policy as `ip xfrm policy` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pol {
    src: String,
    dst: String,
    dir: String,
    priority: String,
    mark: Option<String>,
    tmpl_src: String,
    tmpl_dst: String,
    proto: String,
    mode: String,
    level: String,
}

fn parse_policies(text: &str) -> Vec<Pol> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("src ") {
            blocks.push(Vec::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.extend(line.split_whitespace());
        }
    }
    blocks
        .into_iter()
        .map(|t| {
            let after = |k: &str| {
                t.iter()
                    .position(|x| *x == k)
                    .and_then(|i| t.get(i + 1))
                    .map(|s| s.to_string())
            };
            let tm = t.iter().position(|x| *x == "tmpl").expect("a template");
            Pol {
                src: t[1].into(),
                dst: t[3].into(),
                dir: after("dir").unwrap_or_default(),
                priority: after("priority").unwrap_or_default(),
                mark: after("mark"),
                tmpl_src: t[tm + 2].into(),
                tmpl_dst: t[tm + 4].into(),
                proto: after("proto").unwrap_or_default(),
                mode: after("mode").unwrap_or_default(),
                level: after("level").unwrap_or_else(|| "required".into()),
            }
        })
        .collect()
}

fn policies(n: &Node) -> Vec<Pol> {
    let mut p = parse_policies(&n.host.ip(&["xfrm", "policy"]).unwrap_or_default());
    p.sort();
    p
}

/// A policy as `ip xfrm policy` shows ironmesh's (priority 1000, ESP, tunnel mode).
fn pol(sel: (&str, &str), dir: &str, mark: Option<&str>, tmpl: (usize, usize), level: &str) -> Pol {
    Pol {
        src: sel.0.into(),
        dst: sel.1.into(),
        dir: dir.into(),
        priority: "1000".into(),
        mark: mark.map(String::from),
        tmpl_src: format!("192.0.2.{}", tmpl.0 + 1),
        tmpl_dst: format!("192.0.2.{}", tmpl.1 + 1),
        proto: "esp".into(),
        mode: "tunnel".into(),
        level: level.into(),
    }
}

/// The `in` and `fwd` policies node `i` must have for the nodes `others`.
fn expected(nodes: &[Node], i: usize, others: &[usize], level: &str) -> Vec<Pol> {
    let mut out: Vec<Pol> = others
        .iter()
        .flat_map(|&j| {
            let sel = (nodes[j].cidr.as_str(), nodes[i].cidr.as_str());
            ["in", "fwd"].map(|dir| pol(sel, dir, None, (j, i), level))
        })
        .collect();
    out.sort();
    out
}

/// Node `i`'s record (0-based) as etcd holds it.
fn record(etcd: &EtcdCluster, i: usize) -> Value {
    let key = format!("ironmesh/v1/clusters/red/nodes/n{}", i + 1);
    serde_json::from_str(&etcd.get(0, &key).unwrap().expect("a record")).unwrap()
}

fn write_key(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap();
    writeln!(f, "{text}").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(ironctl: &Path, n: &Node) -> std::result::Result<Value, String> {
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

fn wait_status(ironctl: &Path, n: &Node, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, T, Duration::from_millis(200), |last| {
        match status(ironctl, n) {
            Ok(s) => {
                *last = s.to_string();
                Ok(ok(&s).then_some(s))
            }
            Err(e) => {
                *last = e;
                Ok(None)
            }
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nmeshd log:\n{}",
            n.host.name(),
            n.meshd.log_tail(4000)
        )
    })
}

fn config(name: &str, state: &Path, key: &Path, etcd: &str, i: usize, mode: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\ncluster = \"red\"\nstate_dir = {state:?}\n\n\
         [encryption]\nmode = \"{mode}\"\nbackend = \"ipsec\"\n\n\
         [encryption.ipsec]\nkey_file = {key:?}\n\n\
         [mesh]\netcd_endpoints = [\"{etcd}\"]\ncluster_id = 1\nlease_ttl = 4\n\
         node_ipv4 = \"192.0.2.{i}\"\n\
         pod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 24 }}]\n"
    )
}

/// Per peer, the SPI of the inbound SA node `i` attempted first (from the refusal in
/// `rejected`: `"n2: inbound SA: … (SA spi 0x30010002 192.0.2.2 -> 192.0.2.1: …"`).
fn inbound_spis(st: &Value, i: usize) -> std::collections::BTreeMap<String, u32> {
    st["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(|r| {
            let (peer, rest) = r.split_once(": ").unwrap();
            assert!(rest.starts_with("inbound SA: "), "inbound SAs first: {r}");
            let j: usize = peer[1..].parse().unwrap();
            let hex = rest
                .split("SA spi 0x")
                .nth(1)
                .expect("an SPI")
                .get(..8)
                .unwrap();
            let addrs = format!("192.0.2.{j} -> 192.0.2.{}", i + 1);
            assert!(rest.contains(&addrs), "{addrs}: {r}");
            (peer.to_string(), u32::from_str_radix(hex, 16).unwrap())
        })
        .collect()
}

fn ping_ok(nodes: &[Node], a: usize, b: usize) -> bool {
    let s = nodes[a]
        .pod
        .as_ref()
        .unwrap()
        .ping(&nodes[b].pod_ip, 3, Duration::from_millis(50))
        .unwrap();
    s.received >= 2
}

#[test]
fn ipsec_mesh_policies_from_node_records() -> Result<()> {
    let b = bgpd::build_binaries(&[("ironmesh-meshd", "meshd"), ("ironctl", "ironctl")])?;
    let (meshd_bin, ironctl) = (b[0].clone(), b[1].clone());
    let lab = Lab::new("ipsec-mesh")?;
    let sw = lab.switch("sw")?;
    let eh = lab.host("etcd")?;
    lab.attach(&eh, &["192.0.2.100/24"], &sw)?;
    let etcd = EtcdCluster::start(&[(&eh, "192.0.2.100".parse::<IpAddr>().unwrap())])?;

    let mut nodes = Vec::new();
    for i in 1..=N {
        let name = format!("n{i}");
        let host = lab.host(&name)?;
        lab.attach(&host, &[&format!("192.0.2.{i}/24")], &sw)?;
        let key = host.path("ipsec.key");
        write_key(&key, &format!("3+ rfc4106(gcm(aes)) {HEX3} 128"));
        let conf = host.path("meshd.toml");
        let state = host.path("meshd-state");
        std::fs::write(
            &conf,
            config(&name, &state, &key, &etcd.endpoints(), i, "opportunistic"),
        )
        .unwrap();
        let sock = host.path("meshd.sock");
        let args: Vec<String> = ["--config", &conf.display().to_string(), "--api"]
            .iter()
            .map(|s| s.to_string())
            .chain([sock.display().to_string(), "--log".into(), "info".into()])
            .collect();
        let meshd = host.spawn("meshd", &meshd_bin.display().to_string(), &args)?;
        nodes.push(Node {
            host,
            sock,
            conf,
            key,
            meshd,
            cidr: String::new(),
            pod_ip: String::new(),
            pod: None,
        });
    }
    // PodCIDRs as meshd allocated them; a pod in each; clear routes between the nodes.
    for (idx, n) in nodes.iter_mut().enumerate() {
        let k = format!(
            "ironmesh/v1/clusters/red/ipam/podcidrs-by-node/n{}",
            idx + 1
        );
        let v = wait_for("PodCIDR in etcd", T, Duration::from_millis(200), |_| {
            etcd.get(0, &k)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", n.meshd.log_tail(3000)));
        let v: Value = serde_json::from_str(&v).unwrap();
        n.cidr = v["cidrs"][0].as_str().unwrap().to_string();
    }
    let cidrs: Vec<String> = nodes.iter().map(|n| n.cidr.clone()).collect();
    for (idx, n) in nodes.iter_mut().enumerate() {
        let cidr: ipnet::Ipv4Net = n.cidr.parse().unwrap();
        let base = u32::from(cidr.network());
        let gw = std::net::Ipv4Addr::from(base + 1);
        let pod_ip = std::net::Ipv4Addr::from(base + 2);
        let pod = lab.host(&format!("p{}", idx + 1))?;
        let plen = cidr.prefix_len();
        lab.link(
            &pod,
            &[&format!("{pod_ip}/{plen}")],
            &n.host,
            &[&format!("{gw}/{plen}")],
        )?;
        pod.route_add(&format!("default via {gw}"))?;
        for (j, other) in cidrs.iter().enumerate().filter(|(j, _)| *j != idx) {
            n.host
                .route_add(&format!("{other} via 192.0.2.{}", j + 1))?;
        }
        n.pod_ip = pod_ip.to_string();
        n.pod = Some(pod);
    }

    // 1. Every node: policies for each other node, SAs attempted, refusal reported per peer.
    //    Each node publishes its own number; the inbound SA for a peer carries that peer's
    //    SPI (key index << 28 | peer's number), so no two peers share an inbound SA.
    let ids: Vec<u64> = (0..N)
        .map(|i| {
            record(&etcd, i)["ipsec_node_id"]
                .as_u64()
                .expect("ipsec_node_id")
        })
        .collect();
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), N, "node numbers {ids:x?}");
    for (n, id) in nodes.iter().zip(&ids) {
        // cluster_id 1 << 16 | the PodCIDR's slot in 10.244.0.0/16 (/24s).
        let slot: u64 = n.cidr.split('.').nth(2).unwrap().parse().unwrap();
        assert_eq!(*id, 1 << 16 | slot, "{}", n.cidr);
    }
    eprintln!("node numbers {ids:#x?}");
    let t0 = Instant::now();
    for (i, n) in nodes.iter().enumerate() {
        let st = wait_status(&ironctl, n, "policies for every peer", |s| {
            s["peers_expected"] == 2
                && s["peers_configured"] == 2
                && s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p["path"] == "clear_no_sa"))
        });
        assert_eq!(
            (st["backend"].as_str(), st["mode"].as_str()),
            (Some("ipsec"), Some("opportunistic")),
            "{st}"
        );
        assert_eq!(st["public_key"], "spi 3", "{st}");
        assert_eq!(st["peers_handshaked"], 0, "no SA on this kernel: {st}");
        let rejected: Vec<&str> = st["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(rejected.len(), 2, "{st}");
        for r in &rejected {
            assert!(
                r.contains("cannot install IPsec (ESP) security associations"),
                "{r}"
            );
        }
        assert!(
            st["last_error"]
                .as_str()
                .unwrap()
                .contains("SAs missing for 2 peer(s)"),
            "{st}"
        );
        for p in st["peers"].as_array().unwrap() {
            assert_eq!(p["public_key"], "spi 3", "peer's published SPI: {st}");
        }
        let spis = inbound_spis(&st, i);
        let want: std::collections::BTreeMap<String, u32> = (0..N)
            .filter(|&j| j != i)
            .map(|j| (format!("n{}", j + 1), 3 << 28 | ids[j] as u32))
            .collect();
        assert_eq!(spis, want, "{}: inbound SPIs per peer: {st}", n.host.name());
        eprintln!("{} attempted inbound SAs {spis:x?}", n.host.name());
        let others: Vec<usize> = (0..N).filter(|&j| j != i).collect();
        assert_eq!(
            policies(n),
            expected(&nodes, i, &others, "use"),
            "{}",
            n.host.name()
        );
        let rec = record(&etcd, i);
        assert_eq!(rec["ipsec_key_index"], 3, "{rec}");
        assert_eq!(rec["labels"]["ipsec.ironmesh.io/accepts"], "3", "{rec}");
    }
    eprintln!(
        "3 nodes with policies for every peer after {:?}",
        t0.elapsed()
    );

    // 2. Opportunistic: the in/fwd policies (level use) do not blackhole clear pod traffic.
    for a in 0..N {
        for b in (0..N).filter(|&b| b != a) {
            assert!(ping_ok(&nodes, a, b), "p{} -> p{}", a + 1, b + 1);
        }
    }

    // 3. A policy deleted by hand comes back within the reconcile interval (1 s).
    let want1 = policies(&nodes[0]);
    nodes[0].host.ip(&[
        "xfrm", "policy", "delete", "src", &cidrs[1], "dst", &cidrs[0], "dir", "fwd",
    ])?;
    assert_eq!(policies(&nodes[0]).len(), want1.len() - 1);
    let t = Instant::now();
    wait_for(
        "the deleted policy back",
        Duration::from_secs(3),
        Duration::from_millis(50),
        |_| Ok((policies(&nodes[0]) == want1).then_some(())),
    )?;
    eprintln!("hand-deleted policy repaired after {:?}", t.elapsed());

    // 4. A malformed key file: named by file and line, nothing else changes.
    write_key(
        &nodes[0].key,
        &format!("# rotated\n3+ rfc4106(gcm(aes)) {}zz 128", &HEX3[..38]),
    );
    let st = wait_status(&ironctl, &nodes[0], "key file error", |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("line 2"))
    });
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains(&nodes[0].key.display().to_string()) && err.contains("field 3 (key)"),
        "{err}"
    );
    assert!(err.contains("stay in use"), "{err}");
    assert_eq!(st["public_key"], "spi 3");
    assert_eq!(policies(&nodes[0]), want1);
    assert!(ping_ok(&nodes, 0, 1) && ping_ok(&nodes, 1, 0));

    // 5. Rotation 3 -> 4 through the node records: every node ends on SPI 4 alone.
    for n in &nodes {
        write_key(&n.key, &format!("4+ rfc4106(gcm(aes)) {HEX4} 128"));
    }
    let t = Instant::now();
    for n in &nodes {
        wait_status(&ironctl, n, "rotated to SPI 4", |s| {
            s["public_key"] == "spi 4"
                && s["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|p| p["public_key"] == "spi 4"))
        });
    }
    // The SAs now attempted are key index 4's: new SPIs, still one per peer.
    for (i, n) in nodes.iter().enumerate() {
        let st = wait_status(&ironctl, n, "SAs of key index 4 attempted", |s| {
            s["rejected"].as_array().is_some_and(|r| {
                r.len() == 2 && r.iter().all(|r| r.as_str().unwrap().contains("SA spi 0x4"))
            })
        });
        let spis = inbound_spis(&st, i);
        for (peer, spi) in &spis {
            let j: usize = peer[1..].parse::<usize>().unwrap() - 1;
            assert_eq!(*spi, 4 << 28 | ids[j] as u32, "{peer}: {st}");
        }
    }
    for i in 0..N {
        let rec = record(&etcd, i);
        assert_eq!(
            (
                rec["ipsec_key_index"].as_u64(),
                rec["labels"]["ipsec.ironmesh.io/accepts"].as_str()
            ),
            (Some(4), Some("4")),
            "{rec}"
        );
    }
    eprintln!("rotation 3 -> 4 settled on 3 nodes after {:?}", t.elapsed());

    // 6. A node dies (SIGKILL): once its record goes (lease), its policies go everywhere.
    nodes[2].meshd.kill();
    let gone = wait_for("n3's record expires", T, Duration::from_millis(50), |_| {
        Ok(etcd
            .get(0, "ironmesh/v1/clusters/red/nodes/n3")?
            .is_none()
            .then_some(()))
    });
    gone?;
    let t = Instant::now();
    for i in 0..2 {
        let want = expected(&nodes, i, &[1 - i], "use");
        wait_for(
            "n3's policies removed",
            Duration::from_secs(3),
            Duration::from_millis(20),
            |last| {
                let p = policies(&nodes[i]);
                *last = format!("{p:?}");
                Ok((p == want).then_some(()))
            },
        )?;
    }
    let took = t.elapsed();
    eprintln!("n3's policies removed on n1 and n2 {took:?} after its record went");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(ping_ok(&nodes, 0, 1) && ping_ok(&nodes, 1, 0));

    // 7. Strict on n1: required templates and marked out policies; clear pod traffic from
    //    n2's pods is dropped at n1's fwd policy (no SA can exist here).
    std::fs::write(
        &nodes[0].conf,
        config(
            "n1",
            &nodes[0].host.path("meshd-state"),
            &nodes[0].key,
            &etcd.endpoints(),
            1,
            "strict",
        ),
    )
    .unwrap();
    nodes[0].meshd.terminate();
    nodes[0].meshd.restart()?;
    let st = wait_status(&ironctl, &nodes[0], "strict", |s| {
        s["mode"] == "strict"
            && s["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 1 && p[0]["path"] == "blocked_no_sa")
    });
    assert_eq!(st["public_key"], "spi 4", "{st}");
    let p = policies(&nodes[0]);
    let mut want = expected(&nodes, 0, &[1], "required");
    let sel = (cidrs[0].as_str(), cidrs[1].as_str());
    want.push(pol(sel, "out", Some("0x4e00/0xff00"), (0, 1), "required"));
    want.sort();
    assert_eq!(p, want);
    assert!(
        !ping_ok(&nodes, 1, 0),
        "strict n1 accepted clear pod traffic"
    );

    // meshd never crashed and never logged key material.
    for n in &nodes[..2] {
        assert!(n.meshd.is_running(), "{}", n.meshd.log_tail(3000));
        let log = std::fs::read_to_string(n.meshd.log_path()).unwrap_or_default();
        assert!(
            !log.contains(HEX3) && !log.contains(HEX4) && !log.contains(&HEX3[..38]),
            "key in log"
        );
    }
    Ok(())
}
