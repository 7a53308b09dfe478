//! meshd programs the node's eBPF maps (issue 8, wiring): one node running a one-member etcd,
//! the datapath loaded into a per-test pin root with three pods attached (by `ironmesh-cni`
//! and this test, standing in for the datapath loader), and the meshd binary with
//! `[datapath] bpffs` at that pin root.
//!
//! - meshd's own node address reaches the pinned IP cache (host identity);
//! - endpoint records written into etcd reach the IP cache within 1 s, with their identity;
//! - a service record reaches the services map within 1 s (Maglev table), and the client pod
//!   reaching the VIP is answered by exactly the backend Maglev predicts, both backends used;
//! - deleting the service and an endpoint removes them from the maps within 1 s.
//!
//! Needs root, bpffs; builds meshd and ironmesh-cni.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Identity, ReservedIdentity};
use datapath::lb::Proto;
use datapath::maglev;
use datapath::{Config, Datapath, Endpoint};
use interop_tests::bgpd;
use interop_tests::datapath_lab::{Pins, Stop};
use interop_tests::mesh::services::tcp_record;
use interop_tests::*;
use ironmesh_meshd::endpoints::EndpointRecord;
use ironmesh_meshd::services::{BackendState, ServiceRecord};

const T: Duration = Duration::from_secs(20);
const NODE: &str = "n1";
const CLUSTER: &str = "red";
const PORT: u16 = 5432;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const POD_CIDR: &str = "10.244.1.0/24";

/// Builds `package`'s binary `bin` with the profile of this test binary; returns its path.
fn build(package: &str, bin: &str) -> PathBuf {
    bgpd::build_binaries(&[(package, bin)]).unwrap().remove(0)
}

/// One CNI ADD as a runtime calls it, in the node's netns: (pod IP, host-side veth).
fn cni_add(cni: &Path, node: &Host, data_dir: &Path, pod: &Host, id: &str) -> (Ipv4Addr, String) {
    let conf = interop_tests::cni::conf(data_dir, POD_CIDR, 1500, &[("app", id)]);
    interop_tests::cni::add(cni, node, pod, id, &conf).unwrap()
}

/// Connects from `pod` to `dst`, asks `who`: (answer, local port).
fn ask(pod: &Host, dst: SocketAddr) -> Result<(String, u16), String> {
    let (mut s, port) = tcp::connect(pod, dst)?;
    Ok((tcp::who(&mut s)?, port))
}

/// Polls `check` every 10 ms until it holds; fails after `limit`. Returns the time it took.
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

fn endpoint(ip: Ipv4Addr, identity: u32) -> EndpointRecord {
    EndpointRecord {
        ip: IpAddr::V4(ip),
        cluster: CLUSTER.parse().unwrap(),
        node: NODE.parse().unwrap(),
        identity: Identity::from_raw(identity).unwrap(),
        tunnel_endpoint: None,
        encrypt_key: 0,
        ports: Vec::new(),
    }
}

fn service(backends: &[Ipv4Addr]) -> ServiceRecord {
    let backends = backends
        .iter()
        .map(|ip| (IpAddr::V4(*ip), PORT, NODE, BackendState::Active));
    tcp_record("shop/db", CLUSTER, IpAddr::V4(VIP), PORT, backends)
}

#[test]
fn e2e_datapath_ipcache_services_and_maglev_via_meshd() -> Result<()> {
    let meshd_bin = build("ironmesh-meshd", "meshd");
    let cni = build("ironmesh-cni", "ironmesh-cni");
    let lab = Lab::new("e2e_dp")?;
    let tor = lab.host("tor")?;
    let node = lab.host("node")?;
    lab.link(&tor, &["192.0.2.1/24"], &node, &["192.0.2.2/24"])?;

    let pins = Pins::mounted(format!("/sys/fs/bpf/{}-node", lab.id())).unwrap();

    let root = pins.root().clone();
    // The datapath loader's part: programs, config, pods attached with their endpoints.
    let mut dp = Datapath::load(&root).unwrap();
    dp.set_config(&Config::default()).unwrap();
    let data_dir = lab.dir().join("node-cni");
    let mut pods = Vec::new();
    for (i, name) in ["c1", "b1", "b2"].into_iter().enumerate() {
        let pod = lab.host(name)?;
        let (ip, host_if) = cni_add(&cni, &node, &data_dir, &pod, name);
        dp.upsert_endpoint(&Endpoint {
            id: i as u32 + 1,
            identity: 1000 + i as u32,
            ifindex: node.ifindex(&host_if).unwrap(),
            addresses: vec![IpAddr::V4(ip)],
        })
        .unwrap();
        node.in_netns(|| dp.attach(&host_if)).unwrap().unwrap();
        pods.push((pod, ip));
    }
    let stop = Stop::new();
    for (pod, _) in &pods[1..] {
        tcp::who_server(pod, PORT, stop.0.clone(), Duration::from_secs(60));
    }
    let (c1, b1, b2) = (&pods[0], &pods[1], &pods[2]);

    let etcd = EtcdCluster::start(&[(&node, "192.0.2.2".parse().unwrap())])?;
    let state = node.path("meshd-state");
    let conf = node.path("meshd.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"{NODE}\"\ncluster = \"{CLUSTER}\"\nstate_dir = {state:?}\n\n\
             [mesh]\netcd_endpoints = [\"{}\"]\ncluster_id = 1\nlease_ttl = 4\n\
             node_ipv4 = \"192.0.2.2\"\n\
             pod_cidr_pools = [{{ cidr = \"10.1.0.0/16\", node_mask = 24 }}]\n\n\
             [datapath]\nmode = \"native\"\nbpffs = {:?}\n",
            etcd.endpoints(),
            root.path()
        ),
    )
    .unwrap();
    // `ip netns exec` gives the daemon a private mount namespace with a fresh /sys (no bpffs
    // there); nsenter puts meshd back into this test's mount namespace (the netns stays), so
    // it sees the pins as the datapath loader does. nsenter execs: the PID is meshd's.
    let mnt = format!("--mount=/proc/{}/ns/mnt", std::process::id());
    let meshd_path = meshd_bin.display().to_string();
    let args: Vec<String> = [
        mnt.as_str(),
        "--",
        meshd_path.as_str(),
        "--config",
        &conf.display().to_string(),
        "--api",
        &node.path("meshd.sock").display().to_string(),
        "--log",
        "info,ironmesh_meshd=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let meshd = node.spawn("meshd", "nsenter", &args)?;

    // meshd's own node record: its address is the host in the IP cache.
    let node_ip: IpAddr = "192.0.2.2".parse().unwrap();
    within("the node address in the IP cache", T, || {
        assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(3000));
        dp.ipcache_lookup(node_ip).unwrap().is_some()
    });
    let v = dp.ipcache_lookup(node_ip).unwrap().unwrap();
    assert_eq!(
        v.identity().unwrap(),
        Identity::from(ReservedIdentity::Host)
    );
    assert_eq!(v.tunnel_endpoint(), None);

    // Endpoints: in the IP cache within 1 s.
    for (i, (_, ip)) in pods.iter().enumerate() {
        let rec = endpoint(*ip, 1000 + i as u32);
        etcd.put(0, &rec.key(), std::str::from_utf8(&rec.encode()).unwrap())?;
        let ip = IpAddr::V4(*ip);
        let took = within(
            "an endpoint in the IP cache",
            Duration::from_secs(1),
            || {
                dp.ipcache_lookup(ip)
                    .unwrap()
                    .is_some_and(|v| v.identity == 1000 + i as u32)
            },
        );
        eprintln!("endpoint {ip} in the IP cache after {took:?}");
    }

    // The service: in the services map within 1 s, with a Maglev table.
    let svc = service(&[b1.1, b2.1]);
    etcd.put(0, &svc.key(), std::str::from_utf8(&svc.encode()).unwrap())?;
    let vip = IpAddr::V4(VIP);
    let took = within("the service in the map", Duration::from_secs(1), || {
        dp.service(vip, PORT, Proto::Tcp)
            .unwrap()
            .is_some_and(|s| s.backend_count == 2)
    });
    eprintln!("service {VIP}:{PORT} in the map after {took:?}");
    let sv = dp.service(vip, PORT, Proto::Tcp).unwrap().unwrap();
    let table = dp
        .maglev_table(sv.id)
        .unwrap()
        .expect("a Maglev table for the service");
    let backend_name = |id: u32| -> String {
        let b = dp
            .backend(id)
            .unwrap()
            .expect("the picked backend is in the map");
        let ip = b.ip().unwrap();
        pods.iter()
            .find(|(_, p)| IpAddr::V4(*p) == ip)
            .map(|(h, _)| h.name().to_string())
            .unwrap_or_else(|| panic!("backend {ip} is no pod"))
    };
    let backend_ids: Vec<u32> = {
        let mut ids = table.clone();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert_eq!(backend_ids.len(), 2, "two backends in the Maglev table");

    // The client reaches the VIP; each flow lands where Maglev says.
    let dst = SocketAddr::new(vip, PORT);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..12 {
        let (got, port) = ask(&c1.0, dst).unwrap_or_else(|e| panic!("via the VIP: {e}"));
        let id = maglev::pick(&table, (IpAddr::V4(c1.1), port), (vip, PORT), 6).unwrap();
        assert_eq!(got, backend_name(id), "the backend Maglev predicts");
        *seen.entry(got).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "12 flows over both backends: {seen:?}");

    // Deleting the service removes it (and its backends) within 1 s.
    etcd.etcdctl(0, &["del", &svc.key()])?;
    within(
        "the service gone from the map",
        Duration::from_secs(1),
        || dp.service(vip, PORT, Proto::Tcp).unwrap().is_none(),
    );
    within("the backends gone", Duration::from_secs(1), || {
        backend_ids
            .iter()
            .all(|id| dp.backend(*id).unwrap().is_none())
    });
    assert!(
        ask(&c1.0, dst).is_err(),
        "the VIP still answers without a service"
    );

    // Deleting an endpoint removes its IP cache entry within 1 s; the others stay.
    let rec = endpoint(b2.1, 1002);
    etcd.etcdctl(0, &["del", &rec.key()])?;
    within(
        "the endpoint gone from the IP cache",
        Duration::from_secs(1),
        || dp.ipcache_lookup(IpAddr::V4(b2.1)).unwrap().is_none(),
    );
    assert!(dp.ipcache_lookup(IpAddr::V4(b1.1)).unwrap().is_some());

    assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(3000));
    meshd.terminate();
    drop(stop);
    Ok(())
}
