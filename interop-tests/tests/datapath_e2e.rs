//! The eBPF datapath end to end: 2 nodes x 2 pods, pods attached by the CNI plugin
//! (`ironmesh-cni`, driven as a runtime drives it), ping and TCP pod-to-pod across the nodes
//! in native routing (static routes to the remote PodCIDR, as BGP would install them;
//! bpf_fib_lookup + bpf_redirect_neigh) and in VXLAN mode (an `external` VXLAN device per
//! node, the source identity in the VNI), policy allow/deny by labels, a Maglev service VIP
//! spreading flows exactly as the agent predicts, a backend removal that moves only its share,
//! and an established flow through the VIP surviving an agent restart that replaces every
//! program (links are pinned, maps reused).
//!
//! The test stands in for meshd's endpoint reconciler (not written yet): it reads the
//! endpoint records the CNI plugin wrote, gives each label set a cluster-wide identity,
//! writes the maps and attaches the programs. Each node has its own pin root
//! (`/sys/fs/bpf/<lab id>-<node>`), removed at the end even on failure (with it the pinned
//! links); namespaces go with the lab. Needs root, bpffs and a built `ironmesh-cni`
//! (`cargo build -p ironmesh-cni`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datapath::events::{DropReason, EventKind, Trace};
use datapath::ipcache::IpcacheValue;
use datapath::lb::{BackendState, Proto};
use datapath::maglev;
use datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use datapath::{
    Backend, Config, Datapath, Endpoint, EndpointPolicy, Event, EventReader, Routing, Service,
};
use interop_tests::bgpd::cargo_binary;
use interop_tests::datapath_lab::Pins;
use interop_tests::tcp::{connect, who, who_server};
use interop_tests::{Host, Lab};

const DB_PORT: u16 = 5432;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Native,
    Vxlan,
}

struct Pod {
    host: Host,
    node: usize,
    ip: Ipv4Addr,
    host_ifname: String,
    identity: u32,
}

struct Node {
    host: Host,
    underlay: Ipv4Addr,
    pod_cidr: &'static str,
    data_dir: PathBuf,
    dp: Datapath,
    events: EventReader,
}

/// One CNI ADD, exactly as a runtime calls it (env + config on stdin), in the node's netns.
fn cni_add(
    cni: &Path,
    node: &Node,
    pod: &Host,
    id: &str,
    app: &str,
    mtu: u32,
) -> (Ipv4Addr, String) {
    let conf = interop_tests::cni::conf(&node.data_dir, node.pod_cidr, mtu, &[("app", app)]);
    interop_tests::cni::add(cni, &node.host, pod, id, &conf).unwrap()
}

/// The endpoint record the plugin wrote for meshd: labels and the host-side veth.
fn endpoint_record(node: &Node, id: &str) -> (BTreeMap<String, String>, String) {
    let path = node
        .data_dir
        .join("mesh/endpoints")
        .join(format!("{id}-eth0.json"));
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let labels = rec["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (labels, rec["hostIfname"].as_str().unwrap().to_string())
}

/// Connects from `pod` and checks the echo; Err says why it failed.
fn tcp_echo(pod: &Host, dst: Ipv4Addr, port: u16) -> Result<(), String> {
    pod.in_netns(move || {
        let addr = SocketAddr::new(IpAddr::V4(dst), port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"ironmesh").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        if &buf == b"ironmesh" {
            Ok(())
        } else {
            Err(format!("echo {buf:?}"))
        }
    })
    .unwrap()
}

fn events(node: &mut Node) -> Vec<Event> {
    node.events
        .drain()
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

fn scenario(mode: Mode) {
    let cni = cargo_binary("ironmesh-cni")
        .unwrap_or_else(|e| panic!("{e}; build the plugin with `cargo build -p ironmesh-cni`"));
    let lab = Lab::new(match mode {
        Mode::Native => "datapath_native",
        Mode::Vxlan => "datapath_vxlan",
    })
    .unwrap();
    let mut pins = Vec::new();
    let n1 = lab.host("n1").unwrap();
    let n2 = lab.host("n2").unwrap();
    lab.link(&n1, &["192.0.2.1/24"], &n2, &["192.0.2.2/24"])
        .unwrap();
    let mtu = if mode == Mode::Vxlan { 1450 } else { 1500 };
    let mut nodes = Vec::new();
    for (i, (host, underlay, cidr)) in [
        (n1.clone(), Ipv4Addr::new(192, 0, 2, 1), "10.244.1.0/24"),
        (n2.clone(), Ipv4Addr::new(192, 0, 2, 2), "10.244.2.0/24"),
    ]
    .into_iter()
    .enumerate()
    {
        let node_pins = Pins::mounted(format!("/sys/fs/bpf/{}-{}", lab.id(), host.name())).unwrap();
        let root = node_pins.root().clone();
        pins.push(node_pins);
        let mut dp = Datapath::load(&root).unwrap();
        let events = EventReader::open(&root).unwrap();
        let routing = match mode {
            Mode::Native => {
                let other = if i == 0 {
                    "10.244.2.0/24 via 192.0.2.2"
                } else {
                    "10.244.1.0/24 via 192.0.2.1"
                };
                host.route_add(other).unwrap();
                host.in_netns(|| dp.attach_uplink("eth0")).unwrap().unwrap();
                Routing::Native
            }
            Mode::Vxlan => {
                host.ip(&[
                    "link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789",
                ])
                .unwrap();
                host.ip(&["link", "set", "vx0", "mtu", "1450", "up"])
                    .unwrap();
                host.in_netns(|| dp.attach_overlay("vx0")).unwrap().unwrap();
                Routing::Vxlan {
                    ifindex: host.ifindex("vx0").unwrap(),
                }
            }
        };
        dp.set_config(&Config {
            routing,
            trace: true,
            ..Default::default()
        })
        .unwrap();
        nodes.push(Node {
            data_dir: lab.dir().join(format!("{}-cni", host.name())),
            host,
            underlay,
            pod_cidr: cidr,
            dp,
            events,
        });
    }

    // Two pods per node: web and another app on n1, db and web on n2.
    let mut identities: BTreeMap<BTreeMap<String, String>, u32> = BTreeMap::new();
    let mut pods = Vec::new();
    for (node, name, app) in [
        (0, "a1", "web"),
        (0, "a2", "other"),
        (1, "b1", "db"),
        (1, "b2", "web"),
    ] {
        let host = lab.host(name).unwrap();
        let (ip, host_ifname) = cni_add(&cni, &nodes[node], &host, name, app, mtu);
        let (mut labels, recorded_if) = endpoint_record(&nodes[node], name);
        assert_eq!(recorded_if, host_ifname);
        assert_eq!(labels.get("app").map(String::as_str), Some(app));
        // Identity from the labels that select (not the pod name): same labels, same identity.
        labels.retain(|k, _| k == "app");
        let next = 1000 + identities.len() as u32;
        let identity = *identities.entry(labels).or_insert(next);
        pods.push(Pod {
            host,
            node,
            ip,
            host_ifname,
            identity,
        });
    }
    assert_eq!(
        pods[0].identity, pods[3].identity,
        "both web pods share an identity"
    );

    // The endpoint reconciler's work: endpoints, IP cache, programs on the pod veths.
    let underlays: Vec<Ipv4Addr> = nodes.iter().map(|n| n.underlay).collect();
    for (id, pod) in pods.iter().enumerate() {
        for (n, node) in nodes.iter_mut().enumerate() {
            let mut v = IpcacheValue {
                identity: pod.identity,
                ..Default::default()
            };
            if n != pod.node && mode == Mode::Vxlan {
                v = v.with_tunnel(underlays[pod.node]);
            }
            node.dp
                .ipcache_upsert(IpAddr::V4(pod.ip).into(), v)
                .unwrap();
        }
        let node = &mut nodes[pod.node];
        node.dp
            .upsert_endpoint(&Endpoint {
                id: id as u32 + 1,
                identity: pod.identity,
                ifindex: node.host.ifindex(&pod.host_ifname).unwrap(),
                addresses: vec![IpAddr::V4(pod.ip)],
            })
            .unwrap();
        let (host, dp) = (&node.host, &mut node.dp);
        host.in_netns(|| dp.attach(&pod.host_ifname))
            .unwrap()
            .unwrap();
    }

    // Reachability across the nodes, both ways: ping and TCP.
    let stop = Arc::new(AtomicBool::new(false));
    for p in &pods {
        who_server(&p.host, DB_PORT, stop.clone(), Duration::from_secs(180));
    }
    let (a1, a2, b1, b2) = (&pods[0], &pods[1], &pods[2], &pods[3]);
    for (from, to) in [(a1, b1), (b1, a1), (a2, b2), (b2, a2)] {
        let s = from
            .host
            .ping(&to.ip.to_string(), 3, Duration::from_millis(200))
            .unwrap();
        assert_eq!(
            s.received, 3,
            "{mode:?}: ping {} -> {}: {s:?}",
            from.ip, to.ip
        );
        tcp_echo(&from.host, to.ip, DB_PORT)
            .unwrap_or_else(|e| panic!("{mode:?}: TCP {} -> {}: {e}", from.ip, to.ip));
    }
    if mode == Mode::Vxlan {
        // n2 received a1's packets with a1's identity in the VNI.
        let seen = events(&mut nodes[1]);
        assert!(
            seen.iter().any(|e| e.kind
                == EventKind::Trace(Trace::FromOverlay {
                    node: Ipv4Addr::new(192, 0, 2, 1),
                    vni: a1.identity
                })
                && e.src.0 == IpAddr::V4(a1.ip)),
            "no from-overlay trace with a1's identity on n2: {seen:?}"
        );
    } else {
        let seen = events(&mut nodes[0]);
        assert!(
            seen.iter()
                .any(|e| matches!(e.kind, EventKind::Trace(Trace::FibRedirect { .. }))),
            "native mode forwarded without the FIB redirect: {seen:?}"
        );
    }

    // Policy by labels: db (b1) admits app=web on TCP 5432 only.
    let web = identities[&BTreeMap::from([("app".to_string(), "web".to_string())])];
    nodes[1]
        .dp
        .set_policy(
            3,
            &EndpointPolicy {
                ingress_selected: true,
                rules: vec![Rule {
                    direction: Direction::Ingress,
                    peer: Peer::Identity(web),
                    ports: PortMatch::Port(6, DB_PORT),
                    action: Action::Allow,
                }],
                ..Default::default()
            },
        )
        .unwrap();
    events(&mut nodes[1]);
    tcp_echo(&a1.host, b1.ip, DB_PORT).expect("web on the other node reaches db");
    tcp_echo(&b2.host, b1.ip, DB_PORT).expect("web on the same node reaches db");
    let denied = tcp_echo(&a2.host, b1.ip, DB_PORT);
    assert!(denied.is_err(), "app=other reached db: {denied:?}");
    let ping = a1
        .host
        .ping(&b1.ip.to_string(), 2, Duration::from_millis(200))
        .unwrap();
    assert_eq!(ping.received, 0, "ICMP is not allowed to db");
    let seen = events(&mut nodes[1]);
    let drop = seen
        .iter()
        .find(|e| {
            e.kind == EventKind::Drop(DropReason::PolicyDefaultDeny) && e.src.0 == IpAddr::V4(a2.ip)
        })
        .unwrap_or_else(|| panic!("no policy drop of a2 -> b1 on n2: {seen:?}"));
    assert_eq!(
        (drop.src_identity, drop.dst_identity),
        (a2.identity, b1.identity)
    );
    let labels = |id: u32| {
        identities.iter().find(|(_, v)| **v == id).map(|(l, _)| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let line = drop.describe(&labels);
    assert!(
        line.starts_with(&format!(
            "{} (id {} app=other) -> {} (id {} app=db) TCP {DB_PORT} dropped: policy denied",
            a2.ip, a2.identity, b1.ip, b1.identity
        )),
        "{line}"
    );
    // Replacing the policy as a whole: now nobody may reach db.
    nodes[1]
        .dp
        .set_policy(
            3,
            &EndpointPolicy {
                ingress_selected: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(tcp_echo(&a1.host, b1.ip, DB_PORT).is_err());
    nodes[1].dp.remove_policy(3).unwrap();
    tcp_echo(&a2.host, b1.ip, DB_PORT).expect("no policy: open again");

    // A Maglev service VIP with a backend on each node, programmed on both nodes.
    let vip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), DB_PORT);
    let service = |backends: &[&Pod]| Service {
        id: 1,
        vip: vip.ip(),
        port: DB_PORT,
        proto: Proto::Tcp,
        maglev: true,
        backends: backends
            .iter()
            .map(|p| Backend {
                id: u32::from(p.ip.octets()[3]) + 256 * p.node as u32,
                ip: IpAddr::V4(p.ip),
                port: DB_PORT,
                state: BackendState::Active,
            })
            .collect(),
    };
    let all = service(&[a2, b1, b2]);
    for node in nodes.iter_mut() {
        node.dp.upsert_service(&all).unwrap();
    }
    let name_of = |svc: &Service, id: u32| {
        let b = svc.backends.iter().find(|b| b.id == id).unwrap();
        pods.iter()
            .find(|p| IpAddr::V4(p.ip) == b.ip)
            .unwrap()
            .host
            .name()
            .to_string()
    };
    let table = nodes[0].dp.maglev_table(1).unwrap().unwrap();
    let mut seen = BTreeMap::<String, u32>::new();
    let mut flows = Vec::new();
    for _ in 0..24 {
        let (mut s, port) = connect(&a1.host, vip).unwrap();
        let got = who(&mut s).unwrap_or_else(|e| panic!("{mode:?}: via the VIP: {e}"));
        let id = maglev::pick(&table, (IpAddr::V4(a1.ip), port), (vip.ip(), DB_PORT), 6).unwrap();
        assert_eq!(
            got,
            name_of(&all, id),
            "{mode:?}: the backend Maglev predicts"
        );
        *seen.entry(got.clone()).or_default() += 1;
        flows.push((s, got));
    }
    assert_eq!(
        seen.len(),
        3,
        "{mode:?}: 24 flows spread over 3 backends: {seen:?}"
    );

    // Removing a2: only its share of the table moves; open flows to others keep working.
    let two = service(&[b1, b2]);
    for node in nodes.iter_mut() {
        node.dp.upsert_service(&two).unwrap();
    }
    let new_table = nodes[0].dp.maglev_table(1).unwrap().unwrap();
    let removed = all
        .backends
        .iter()
        .find(|b| b.ip == IpAddr::V4(a2.ip))
        .unwrap()
        .id;
    let kept_slots = table.iter().filter(|id| **id != removed).count();
    let moved = table
        .iter()
        .zip(&new_table)
        .filter(|(old, new)| **old != removed && old != new)
        .count();
    assert!(
        moved * 100 <= kept_slots * 3,
        "{moved} of {kept_slots} slots of the remaining backends moved"
    );
    for (s, name) in flows.iter_mut().filter(|(_, n)| n != "a2") {
        assert_eq!(&who(s).unwrap(), name, "an open flow changed backend");
    }
    for _ in 0..6 {
        let (mut s, _) = connect(&a1.host, vip).unwrap();
        assert_ne!(
            who(&mut s).unwrap(),
            "a2",
            "a new flow went to the removed backend"
        );
    }

    // An established flow survives an agent restart that replaces every program.
    let (kept, kept_name) = flows.iter_mut().find(|(_, n)| n != "a2").unwrap();
    for (i, node) in nodes.iter_mut().enumerate() {
        let old_ids = prog_ids(&node.host, mode, &pods, i);
        node.dp = Datapath::load(&pins[i].0).unwrap(); // the old instance drops: links stay
        let (host, dp) = (&node.host, &mut node.dp);
        host.in_netns(|| match mode {
            Mode::Native => dp.attach_uplink("eth0"),
            Mode::Vxlan => dp.attach_overlay("vx0"),
        })
        .unwrap()
        .unwrap();
        for p in pods.iter().filter(|p| p.node == i) {
            host.in_netns(|| dp.attach(&p.host_ifname))
                .unwrap()
                .unwrap();
        }
        let new_ids = prog_ids(&node.host, mode, &pods, i);
        assert_eq!(
            new_ids.len(),
            old_ids.len(),
            "{mode:?}: one program per hook"
        );
        assert!(
            new_ids.iter().all(|id| !old_ids.contains(id)),
            "{mode:?}: programs not replaced: {old_ids:?} -> {new_ids:?}"
        );
    }
    assert_eq!(
        &who(kept).unwrap(),
        kept_name,
        "{mode:?}: the flow survived the restart"
    );
    stop.store(true, Ordering::Relaxed);
}

/// Ids of the programs attached to the node's uplink/overlay and pod veths.
fn prog_ids(host: &Host, mode: Mode, pods: &[Pod], node: usize) -> Vec<u32> {
    let mut ifaces = vec![match mode {
        Mode::Native => "eth0".to_string(),
        Mode::Vxlan => "vx0".to_string(),
    }];
    ifaces.extend(
        pods.iter()
            .filter(|p| p.node == node)
            .map(|p| p.host_ifname.clone()),
    );
    host.in_netns(|| {
        ifaces
            .iter()
            .flat_map(|i| Datapath::attached_program_ids(i).unwrap())
            .collect()
    })
    .unwrap()
}

#[test]
fn datapath_native_routing_pods_across_nodes_with_label_policy() {
    scenario(Mode::Native);
}

#[test]
fn datapath_vxlan_pods_across_nodes_with_identity_in_the_vni() {
    scenario(Mode::Vxlan);
}
