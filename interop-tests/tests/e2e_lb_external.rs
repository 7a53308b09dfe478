//! A LoadBalancer VIP reached from outside the cluster through the eBPF datapath (issue 8),
//! end to end: a node with two backend pods (attached by the `ironmesh-cni` plugin, as a
//! runtime drives it) and an external client host on the node's uplink link, with a route to
//! the VIP via the node (what the ToR learns over BGP). host_ingress on the uplink DNATs the
//! client's flows to the node's own backends by Maglev (the external service entry,
//! externalTrafficPolicy=Local), the backend's pod_egress restores VIP:port on the replies, so
//! the client talks to the VIP without SNAT. Checked: every flow reaches the backend the agent
//! predicts (both are used), the client's socket is connected to VIP:80, and after one backend
//! is removed the established flows of the other keep working and new flows all go to it.
//!
//! The test stands in for meshd (it writes the maps itself). Its pin root
//! (`/sys/fs/bpf/<lab id>-n1`) is removed on drop, also on panic; namespaces go with the lab.
//! Every wait is bounded. Needs root and bpffs (scripts/setup).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use datapath::events::EventKind;
use datapath::lb::{BackendState, Proto};
use datapath::maglev;
use datapath::{Backend, Config, Datapath, Endpoint, EventReader, Routing, Service};
use interop_tests::datapath_lab::{Pins, Stop};
use interop_tests::tcp::{who, who_server};
use interop_tests::{Host, Lab, bgpd};

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP_PORT: u16 = 80;
const POD_PORT: u16 = 8080;
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const INTERNAL_ID: u32 = 7;
const EXTERNAL_ID: u32 = 107;

struct Pod {
    name: String,
    ip: Ipv4Addr,
    backend_id: u32,
}

/// A connection from the client host to VIP:80; the socket stays in the client's namespace.
fn connect(client: &Host) -> Result<TcpStream, String> {
    client
        .in_netns(|| {
            let dst = SocketAddr::new(IpAddr::V4(VIP), VIP_PORT);
            let s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
                .map_err(|e| format!("connect {dst}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            Ok(s)
        })
        .unwrap()
}

fn service(id: u32, pods: &[&Pod]) -> Service {
    Service {
        id,
        vip: IpAddr::V4(VIP),
        port: VIP_PORT,
        proto: Proto::Tcp,
        maglev: true,
        backends: pods
            .iter()
            .map(|p| Backend {
                id: p.backend_id,
                ip: IpAddr::V4(p.ip),
                port: POD_PORT,
                state: BackendState::Active,
            })
            .collect(),
    }
}

/// The pod the agent predicts for the client's flow from `sport`.
fn predicted<'a>(dp: &Datapath, pods: &'a [Pod], sport: u16) -> &'a Pod {
    let table = dp
        .maglev_table(EXTERNAL_ID)
        .unwrap()
        .expect("external table");
    let id = maglev::pick(
        &table,
        (IpAddr::V4(CLIENT), sport),
        (IpAddr::V4(VIP), VIP_PORT),
        6,
    )
    .unwrap();
    pods.iter().find(|p| p.backend_id == id).unwrap()
}

fn cni_add(cni: &Path, node: &Host, data_dir: &Path, pod: &Host, id: &str) -> (Ipv4Addr, String) {
    let conf = interop_tests::cni::conf(data_dir, "10.244.1.0/24", 1500, &[("app", "web")]);
    interop_tests::cni::add(cni, node, pod, id, &conf).unwrap()
}

#[test]
fn external_clients_reach_the_nodes_backends_through_the_vip() {
    let cni = bgpd::build_binaries(&[("ironmesh-cni", "ironmesh-cni")])
        .unwrap()
        .remove(0);
    let lab = Lab::new("lb_external").unwrap();
    let n1 = lab.host("n1").unwrap();
    let client = lab.host("c1").unwrap();
    lab.link(&n1, &["192.0.2.1/24"], &client, &["192.0.2.100/24"])
        .unwrap();
    // The ToR's ECMP route to the VIP, reduced to one node.
    client
        .route_add(&format!("{VIP}/32 via 192.0.2.1"))
        .unwrap();

    let pins = Pins::mounted(format!("/sys/fs/bpf/{}-n1", lab.id())).unwrap();

    let root = pins.root().clone();
    let mut dp = Datapath::load(&root).unwrap();
    let mut events = EventReader::open(&root).unwrap();
    n1.in_netns(|| dp.attach_uplink("eth0")).unwrap().unwrap();
    dp.set_config(&Config {
        routing: Routing::Native,
        ..Default::default()
    })
    .unwrap();

    // Two backend pods on the node.
    let data_dir = lab.dir().join("n1-cni");
    let mut pods = Vec::new();
    for (i, name) in ["p1", "p2"].into_iter().enumerate() {
        let host = lab.host(name).unwrap();
        let (ip, host_if) = cni_add(&cni, &n1, &data_dir, &host, name);
        dp.upsert_endpoint(&Endpoint {
            id: i as u32 + 1,
            identity: 1000,
            ifindex: n1.ifindex(&host_if).unwrap(),
            addresses: vec![IpAddr::V4(ip)],
        })
        .unwrap();
        dp.ipcache_upsert(
            IpAddr::V4(ip).into(),
            datapath::ipcache::IpcacheValue {
                identity: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        n1.in_netns(|| dp.attach(&host_if)).unwrap().unwrap();
        pods.push((
            host,
            Pod {
                name: name.to_string(),
                ip,
                backend_id: 11 + i as u32,
            },
        ));
    }
    let stop = Stop::new();
    for (host, _) in &pods {
        who_server(host, POD_PORT, stop.0.clone(), Duration::from_secs(120));
    }
    let (hosts, pods): (Vec<Host>, Vec<Pod>) = pods.into_iter().unzip();
    drop(hosts);
    let both: Vec<&Pod> = pods.iter().collect();
    // The internal entry (pods) alone does not serve the uplink: the VIP is not
    // translated there (the node has no route to it and answers unreachable).
    dp.upsert_service(&service(INTERNAL_ID, &both)).unwrap();
    let refused = connect(&client);
    assert!(
        refused.is_err(),
        "reached the VIP without an external entry"
    );
    // The external entry: this node's backends (both).
    dp.upsert_external_service(&service(EXTERNAL_ID, &both))
        .unwrap();

    // Flows from the client: each reaches the backend Maglev picks, from VIP:80.
    let mut flows: Vec<(TcpStream, String)> = Vec::new();
    let mut per_pod: BTreeMap<String, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..24 {
        assert!(Instant::now() < deadline, "took too long");
        let mut s = connect(&client).unwrap_or_else(|e| panic!("flow {i}: {e}"));
        assert_eq!(
            s.peer_addr().unwrap(),
            SocketAddr::new(IpAddr::V4(VIP), VIP_PORT),
            "the client must talk to the VIP"
        );
        let sport = s.local_addr().unwrap().port();
        let got = who(&mut s).unwrap_or_else(|e| panic!("flow {i} (port {sport}): {e}"));
        let want = &predicted(&dp, &pods, sport).name;
        assert_eq!(&got, want, "flow from port {sport}");
        *per_pod.entry(got.clone()).or_default() += 1;
        flows.push((s, got));
    }
    assert_eq!(per_pod.len(), 2, "both backends must be used: {per_pod:?}");
    let seen: Vec<_> = events
        .drain()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| matches!(e.kind, EventKind::Drop(_)))
        .collect();
    assert!(seen.is_empty(), "drops: {seen:?}");

    // p2 leaves the service (its backend entry stays, as when it is terminating).
    let p1 = &pods[0];
    dp.upsert_service(&service(INTERNAL_ID, &[p1])).unwrap();
    dp.upsert_external_service(&service(EXTERNAL_ID, &[p1]))
        .unwrap();
    // Established flows keep their backend: p1's (and p2's, still in conntrack).
    for (s, backend) in &mut flows {
        let got = who(s).unwrap_or_else(|e| panic!("established flow to {backend}: {e}"));
        assert_eq!(&got, backend);
    }
    // New flows all go to p1.
    for i in 0..8 {
        assert!(Instant::now() < deadline, "took too long");
        let mut s = connect(&client).unwrap_or_else(|e| panic!("new flow {i}: {e}"));
        assert_eq!(who(&mut s).unwrap(), "p1");
    }
    // Removing p2's backend entry too: p1's established flows are not disturbed.
    dp.remove_backend(pods[1].backend_id).unwrap();
    for (s, backend) in flows.iter_mut().filter(|(_, b)| b == "p1") {
        assert_eq!(who(s).unwrap(), *backend);
    }
    drop(flows);
    drop(stop);
}
