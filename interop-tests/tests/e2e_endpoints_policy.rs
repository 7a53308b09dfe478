//! meshd drives the node's endpoints, datapath and network policy (issue 8, wiring): one node
//! with a one-member etcd and the meshd binary with `[datapath] load = true` on a per-test pin
//! root (uplink `eth0`), `mesh.cni_endpoints_dir` where the real `ironmesh-cni` writes.
//!
//! - meshd loads the datapath and attaches host_ingress to the uplink;
//! - three pods added by the CNI are registered within 1 s each: endpoint record with its
//!   identity in etcd, endpoints map entry, pod programs on the host veth;
//! - a policy applied with `ironctl mesh policy apply` (app=client -> app=server TCP 7000)
//!   lets the client connect and denies the other pod (real TCP connects; the event ring says
//!   policy denied); before it, everyone connects;
//! - restarting meshd keeps an established TCP flow alive, and the maps equal;
//! - CNI DEL (and removing a record file) removes the entries within 1 s.
//!
//! Needs root, bpffs; builds meshd, ironctl and ironmesh-cni.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datapath::events::{DropReason, EventKind};
use datapath::pin::PinRoot;
use datapath::{Datapath, EventReader};
use interop_tests::bgpd;
use interop_tests::datapath_lab::{Pins, Stop};
use interop_tests::*;
use ironmesh_meshd::endpoints::EndpointRecord;

const T: Duration = Duration::from_secs(20);
const ONE_S: Duration = Duration::from_secs(1);
const NODE: &str = "n1";
const CLUSTER: &str = "red";
const PORT: u16 = 7000;
const POD_CIDR: &str = "10.244.1.0/24";

fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?} (waited {:?})",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cni_conf(data_dir: &Path, app: &str) -> serde_json::Value {
    cni::conf(data_dir, POD_CIDR, 1500, &[("app", app)])
}

/// An echo server in `pod` (a thread per connection) until `stop` (or 90 s).
fn echo_server(pod: &Host, stop: Arc<AtomicBool>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    pod.spawn_thread("echo", move || {
        let l = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Ok(())
    })
    .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn connect(pod: &Host, dst: SocketAddr) -> Result<TcpStream, String> {
    pod.in_netns(move || {
        let s =
            TcpStream::connect_timeout(&dst, ONE_S).map_err(|e| format!("connect {dst}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Ok(s)
    })
    .unwrap()
}

fn echo(s: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    s.write_all(msg).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    (buf == msg)
        .then_some(())
        .ok_or_else(|| "echo differs".into())
}

struct Pod {
    host: Host,
    ip: Ipv4Addr,
    host_if: String,
}

fn attached(node: &Host, iface: &str) -> Vec<u32> {
    let i = iface.to_string();
    node.in_netns(move || Datapath::attached_program_ids(&i).unwrap_or_default())
        .unwrap()
}

fn record(etcd: &EtcdCluster, ip: Ipv4Addr) -> Option<EndpointRecord> {
    let key = format!("ironmesh/v1/clusters/{CLUSTER}/endpoints/{ip}");
    let v = etcd.get(0, &key).unwrap()?;
    let red = CLUSTER.parse().unwrap();
    Some(EndpointRecord::decode(&red, IpAddr::V4(ip), v.as_bytes()).unwrap())
}

fn meshd_config(node: &Host, etcd: &EtcdCluster, root: &Path, eps: &Path, dp: &str) -> PathBuf {
    let state = node.path("meshd-state");
    let conf = node.path("meshd.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"{NODE}\"\ncluster = \"{CLUSTER}\"\nstate_dir = {state:?}\n\n\
             [mesh]\netcd_endpoints = [\"{}\"]\ncluster_id = 1\nlease_ttl = 4\n\
             node_ipv4 = \"192.0.2.2\"\ncni_endpoints_dir = {eps:?}\n\n\
             [datapath]\nbpffs = {root:?}\nload = true\nuplinks = [\"eth0\"]\n{dp}",
            etcd.endpoints(),
        ),
    )
    .unwrap();
    conf
}

/// meshd in `node`'s netns, back in this test's mount namespace through nsenter (see
/// e2e_datapath.rs) so it sees the pin root; nsenter execs, the PID is meshd's.
fn start_meshd(node: &Host, bin: &Path, conf: &Path, sock: &Path) -> Process {
    let args: Vec<String> = [
        format!("--mount=/proc/{}/ns/mnt", std::process::id()),
        "--".into(),
        bin.display().to_string(),
        "--config".into(),
        conf.display().to_string(),
        "--api".into(),
        sock.display().to_string(),
        "--log".into(),
        "info,ironmesh_meshd=debug".into(),
    ]
    .into();
    node.spawn("meshd", "nsenter", &args).unwrap()
}

#[test]
fn e2e_endpoints_policy_via_meshd() -> Result<()> {
    let bins = bgpd::build_binaries(&[
        ("ironmesh-meshd", "meshd"),
        ("ironmesh-cni", "ironmesh-cni"),
        ("ironctl", "ironctl"),
    ])
    .unwrap();
    let (meshd_bin, cni, ironctl) = (&bins[0], &bins[1], &bins[2]);
    let lab = Lab::new("e2e_eppol")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let pins = Pins::mounted(format!("/sys/fs/bpf/{}-node", lab.id())).unwrap();
    let root = pins.root().clone();
    let etcd = EtcdCluster::start(&[(&node, "192.0.2.2".parse().unwrap())])?;
    let data_dir = lab.dir().join("node-cni");
    let conf = meshd_config(
        &node,
        &etcd,
        root.path(),
        &data_dir.join("mesh/endpoints"),
        "mode = \"native\"\n",
    );
    let sock = node.path("meshd.sock");
    let meshd = start_meshd(&node, meshd_bin, &conf, &sock);
    let alive = || assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(4000));

    // meshd loads the datapath: host_ingress on the uplink.
    within("host_ingress on the uplink", T, || {
        alive();
        !attached(&node, "eth0").is_empty()
    });
    let uplink_progs = attached(&node, "eth0");
    let dp = Datapath::load(&root).unwrap();
    assert_eq!(
        dp.config().unwrap().routing_mode,
        datapath::policy::ROUTING_NATIVE
    );

    // Three pods through the real CNI plugin: each registered within 1 s.
    let mut pods = Vec::new();
    for app in ["client", "server", "other"] {
        let host = lab.host(app)?;
        let (ip, host_if) = cni::add(cni, &node, &host, app, &cni_conf(&data_dir, app))?;
        let took = within(&format!("{app} registered"), ONE_S, || {
            let Some(info) = dp.endpoint(IpAddr::V4(ip)).unwrap() else {
                return false;
            };
            attached(&node, &host_if).len() >= 2
                && record(&etcd, ip).is_some_and(|r| r.identity.raw() == info.identity)
        });
        eprintln!("pod {app} ({ip}) registered after {took:?} (record, map entry, programs)");
        pods.push(Pod { host, ip, host_if });
    }
    let (client, server, other) = (&pods[0], &pods[1], &pods[2]);
    // A bad file is logged with its path and skipped; nothing else is lost.
    let junk = data_dir.join("mesh/endpoints/junk-eth0.json");
    std::fs::write(&junk, "{not json").unwrap();
    within("the bad file logged", T, || {
        let log = meshd.log_tail(20_000);
        log.contains("skipping a bad CNI endpoint record") && log.contains("junk-eth0.json")
    });
    std::fs::remove_file(&junk).unwrap();
    assert!(
        pods.iter()
            .all(|p| dp.endpoint(IpAddr::V4(p.ip)).unwrap().is_some())
    );
    let ids: Vec<u32> = pods
        .iter()
        .map(|p| dp.endpoint(IpAddr::V4(p.ip)).unwrap().unwrap().identity)
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "one identity per label set: {ids:?}"
    );
    let stop = Stop::new();
    echo_server(&server.host, stop.0.clone());
    let dst = SocketAddr::new(IpAddr::V4(server.ip), PORT);
    echo(
        &mut connect(&other.host, dst).expect("no policy yet: open"),
        b"hi",
    )
    .unwrap();

    // The policy through ironctl; in force within 1 s of the apply.
    let policy = lab.dir().join("allow-client.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"namespace":"default","name":"allow-client",
            "endpoint_selector":{{"match_labels":{{"app":"server"}}}},
            "ingress":[{{"from":[{{"selector":{{"match_labels":{{"app":"client"}}}}}}],
                        "ports":[{{"protocol":"tcp","port":{PORT}}}]}}]}}"#
        ),
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        let out = Command::new(ironctl)
            .args(["mesh", "--meshd", sock.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ironctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let server_ep = dp.endpoint(IpAddr::V4(server.ip)).unwrap().unwrap().id;
    ctl(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let took = within("the policy in force", ONE_S, || {
        dp.policy_entries(server_ep).unwrap().is_some()
    });
    eprintln!("policy in force {took:?} after ironctl apply");
    assert!(ctl(&["policy", "list"]).contains("allow-client"));
    let mut events = EventReader::open(&root).unwrap();
    events.drain();
    let mut flow = connect(&client.host, dst).expect("client -> server allowed");
    echo(&mut flow, b"allowed").unwrap();
    let denied = connect(&other.host, dst);
    assert!(denied.is_err(), "other reached server: {denied:?}");
    let seen: Vec<_> = events.drain().into_iter().flatten().collect();
    let dropped = seen
        .iter()
        .find(|e| {
            e.src.0 == IpAddr::V4(other.ip)
                && matches!(
                    e.kind,
                    EventKind::Drop(DropReason::PolicyDefaultDeny | DropReason::PolicyDenied)
                )
        })
        .unwrap_or_else(|| panic!("no policy drop of other -> server: {seen:?}"));
    assert_eq!(
        (dropped.src_identity, dropped.dst_identity),
        (ids[2], ids[1])
    );

    // Restart meshd: the established flow lives on, the maps are the same.
    let before: Vec<_> = pods
        .iter()
        .map(|p| dp.endpoint(IpAddr::V4(p.ip)).unwrap())
        .collect();
    let policy_before = dp.policy_entries(server_ep).unwrap();
    meshd.terminate();
    echo(&mut flow, b"while meshd is down").unwrap();
    meshd.restart()?;
    let took = within("programs replaced by the new meshd", T, || {
        alive();
        let up = attached(&node, "eth0");
        !up.is_empty() && up != uplink_progs
    });
    eprintln!("meshd restarted, uplink programs replaced after {took:?}");
    std::thread::sleep(Duration::from_millis(1500)); // the new meshd re-registered and re-applied
    alive();
    echo(&mut flow, b"after the restart").expect("the established flow survives");
    for (p, b) in pods.iter().zip(&before) {
        assert_eq!(
            &dp.endpoint(IpAddr::V4(p.ip)).unwrap(),
            b,
            "endpoint {}",
            p.ip
        );
        assert!(attached(&node, &p.host_if).len() >= 2);
        assert!(record(&etcd, p.ip).is_some());
    }
    assert_eq!(dp.policy_entries(server_ep).unwrap(), policy_before);
    assert!(
        connect(&other.host, dst).is_err(),
        "still denied after the restart"
    );

    // CNI DEL of other; its record file gone, all its entries go within 1 s.
    cni::del(
        cni,
        &node,
        &other.host,
        "other",
        &cni_conf(&data_dir, "other"),
    )
    .unwrap();
    let took = within("other removed", ONE_S, || {
        dp.endpoint(IpAddr::V4(other.ip)).unwrap().is_none() && record(&etcd, other.ip).is_none()
    });
    eprintln!("CNI DEL: other's entries gone after {took:?}");
    // Removing server's record file: entries, policy and programs go; the veth stays.
    std::fs::remove_file(data_dir.join("mesh/endpoints/server-eth0.json")).unwrap();
    let took = within("server removed", ONE_S, || {
        dp.endpoint(IpAddr::V4(server.ip)).unwrap().is_none()
            && dp.policy_entries(server_ep).unwrap().is_none()
            && attached(&node, &server.host_if).is_empty()
            && record(&etcd, server.ip).is_none()
    });
    eprintln!("record file removed: server's entries gone after {took:?}");
    assert!(
        dp.endpoint(IpAddr::V4(client.ip)).unwrap().is_some(),
        "client stays"
    );
    // The policy goes with ironctl.
    ctl(&["policy", "delete", "default/allow-client"]);
    within("the policy gone from ironctl's list", T, || {
        !ctl(&["policy", "list"]).contains("allow-client")
    });
    alive();
    meshd.terminate();
    drop(stop);
    Ok(())
}

/// VXLAN mode: meshd creates the external VXLAN device, attaches overlay_ingress, writes the
/// routing config with its ifindex, and endpoint records name the node as tunnel endpoint; a
/// restart reuses the device and replaces the programs.
#[test]
fn e2e_endpoints_vxlan_mode_device_and_restart() -> Result<()> {
    let bins = bgpd::build_binaries(&[
        ("ironmesh-meshd", "meshd"),
        ("ironmesh-cni", "ironmesh-cni"),
    ])
    .unwrap();
    let lab = Lab::new("e2e_epvx")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;
    let root = PinRoot::new(format!("/sys/fs/bpf/{}-node", lab.id())).unwrap();
    let _pins = Pins(root.clone());
    let etcd = EtcdCluster::start(&[(&node, "192.0.2.2".parse().unwrap())])?;
    let data_dir = lab.dir().join("node-cni");
    let eps = data_dir.join("mesh/endpoints");
    let dp_conf = "mode = \"vxlan\"\nvxlan_device = \"imvx0\"\n";
    let conf = meshd_config(&node, &etcd, root.path(), &eps, dp_conf);
    let meshd = start_meshd(&node, &bins[0], &conf, &node.path("meshd.sock"));
    within("overlay_ingress on the VXLAN device", T, || {
        assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(4000));
        !attached(&node, "imvx0").is_empty() && !attached(&node, "eth0").is_empty()
    });
    let link = node.ip(&["-d", "link", "show", "imvx0"])?;
    assert!(
        link.contains("external") && link.contains("dstport 8472"),
        "{link}"
    );
    let ifindex: u32 = link.split(':').next().unwrap().trim().parse().unwrap();
    let dp = Datapath::load(&root).unwrap();
    let cfg = dp.config().unwrap();
    assert_eq!(
        (cfg.routing_mode, cfg.tunnel_ifindex),
        (datapath::policy::ROUTING_VXLAN, ifindex)
    );
    let pod = lab.host("p1")?;
    let (ip, _) = cni::add(&bins[1], &node, &pod, "p1", &cni_conf(&data_dir, "web"))?;
    within("p1 registered with its tunnel endpoint", ONE_S, || {
        record(&etcd, ip).is_some_and(|r| r.tunnel_endpoint == Some("192.0.2.2".parse().unwrap()))
    });
    let overlay = attached(&node, "imvx0");
    meshd.terminate();
    meshd.restart()?;
    within("overlay program replaced", T, || {
        let now = attached(&node, "imvx0");
        now.len() == overlay.len() && now != overlay
    });
    let again = node.ip(&["-d", "link", "show", "imvx0"])?;
    assert!(
        again.starts_with(&format!("{ifindex}:")),
        "the device is reused: {again}"
    );
    assert!(dp.endpoint(IpAddr::V4(ip)).unwrap().is_some());
    meshd.terminate();
    Ok(())
}
