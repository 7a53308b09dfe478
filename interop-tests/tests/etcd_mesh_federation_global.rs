//! Two clusters federated both ways against real 3-member etcd 3.4 clusters (issue 7): each
//! cluster has two meshd nodes (node record, endpoints with allocated identities, a global
//! service's backends, a mirror candidate for the other cluster, a merged view). Every node must
//! see every node, identity, endpoint and global-service backend of both clusters; deletes and
//! adds in either cluster propagate to all four views.
//!
//! "red" (ID 1) has its etcd on switch A (192.0.2.11-13), "green" (ID 2) on switch B
//! (198.51.100.11-13). The four meshd run as tokio tasks on one thread inside a host attached to
//! both switches (each meshd still talks to its own etcd and, as mirror, to the other's).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{ClusterId, ClusterName, IdentityLayout, Labels, NodeName, ServiceKey};
use interop_tests::*;
use ironmesh_meshd::endpoints::{EndpointPublisher, EndpointRecord};
use ironmesh_meshd::federation::{
    MergedState, MergedView, MirrorConfig, MirrorController, MirrorRole,
};
use ironmesh_meshd::identity::IdentityAllocator;
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::leases::{LeasePoolConfig, LeasedKeys};
use ironmesh_meshd::nodes::{LeaseConfig, NodeRecord, NodeRegistration};
use ironmesh_meshd::schema::ResourceKind;
use ironmesh_meshd::services::{
    Affinity, Backend, BackendState, Protocol, ServicePort, ServiceRecord, select_backends,
};

fn name(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    interop_tests::etcd_lab::kv_config(etcd, Duration::from_secs(3), Duration::from_secs(2))
}

fn web() -> ServiceKey {
    "shop/web".parse().unwrap()
}

/// One meshd node of a cluster.
struct Meshd {
    reg: NodeRegistration,
    eps: EndpointPublisher,
    view: MergedView,
    mirror: MirrorController,
}

fn endpoint_ip(cluster_octet: u8, node: u8, i: u8) -> IpAddr {
    IpAddr::from([10, cluster_octet, node, i])
}

#[allow(clippy::too_many_arguments)]
async fn start_meshd(
    local: &KvStore,
    remote_etcd: KvConfig,
    cluster: &str,
    remote: &str,
    node: u8,
    cluster_octet: u8,
    alloc: &IdentityAllocator,
) -> Meshd {
    let node_name: NodeName = format!("{cluster}-{node}").parse().unwrap();
    let mut rec = NodeRecord::new(name(cluster), node_name.clone());
    rec.ipv4 = Some(
        IpAddr::from([192, 0, cluster_octet, node])
            .to_string()
            .parse()
            .unwrap(),
    );
    rec.wireguard_public_key = Some(format!("key-{node_name}"));
    rec.pod_cidrs = vec![format!("10.{cluster_octet}.{node}.0/24").parse().unwrap()];
    let reg = NodeRegistration::register(local.clone(), rec, LeaseConfig::with_ttl(3))
        .await
        .expect("register");
    let labels: Labels = format!("app=web-{cluster}-{node}").parse().unwrap();
    let identity = alloc.allocate(&labels).await.expect("identity");
    let keys = LeasedKeys::new(local.clone(), LeasePoolConfig::new(3, 100));
    let eps = EndpointPublisher::new(name(cluster), node_name.clone(), keys);
    let records: Vec<EndpointRecord> = (1..=2)
        .map(|i| EndpointRecord {
            ip: endpoint_ip(cluster_octet, node, i),
            cluster: name(cluster),
            node: node_name.clone(),
            identity,
            tunnel_endpoint: Some(IpAddr::from([192, 0, cluster_octet, node])),
            encrypt_key: 0,
            ports: Vec::new(),
            pod: None,
        })
        .collect();
    eps.upsert(&records).await.expect("endpoints");
    let mirror = MirrorController::spawn(
        local.clone(),
        MirrorConfig {
            local: name(cluster),
            remote: name(remote),
            remote_etcd,
            candidate: node_name.to_string(),
            lease_ttl_secs: 2,
            probe_interval: Duration::from_millis(300),
            trust: None,
        },
    );
    let view = MergedView::spawn(
        local.clone(),
        name(cluster),
        [name(remote)],
        Duration::from_millis(300),
        None,
    );
    Meshd {
        reg,
        eps,
        view,
        mirror,
    }
}

fn service(cluster: &str, octet: u8, nodes: &[u8], affinity: Affinity) -> ServiceRecord {
    ServiceRecord {
        service: web(),
        cluster: name(cluster),
        vips: vec![IpAddr::from([172, 20, octet, 10])],
        ports: vec![ServicePort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
        backends: nodes
            .iter()
            .map(|n| Backend {
                ip: endpoint_ip(octet, *n, 1),
                port: 8080,
                port_name: None,
                node: Some(format!("{cluster}-{n}").parse().unwrap()),
                cluster: None,
                zone: Some(format!("{cluster}-zone")),
                state: BackendState::Active,
            })
            .collect(),
        global: true,
        affinity,
    }
}

/// What one view shows: nodes, endpoints, identities per cluster, global backends.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    nodes: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    identities: (usize, usize),
    backends: BTreeSet<String>,
}

fn seen(s: &MergedState) -> Seen {
    Seen {
        nodes: s
            .nodes()
            .iter()
            .map(|n| format!("{}/{}", n.cluster, n.name))
            .collect(),
        endpoints: s
            .endpoints()
            .iter()
            .map(|e| format!("{}/{}@{}", e.cluster, e.ip, e.node))
            .collect(),
        identities: (
            s.count(&name("red"), ResourceKind::Identities),
            s.count(&name("green"), ResourceKind::Identities),
        ),
        backends: s
            .global_backends(&web())
            .iter()
            .map(|b| format!("{}/{}", b.cluster.as_ref().unwrap(), b.ip))
            .collect(),
    }
}

fn expected(red_nodes: &[u8], green_nodes: &[u8], ids: (usize, usize)) -> Seen {
    let mut e = Seen {
        nodes: BTreeSet::new(),
        endpoints: BTreeSet::new(),
        identities: ids,
        backends: BTreeSet::new(),
    };
    for (c, o, ns) in [("red", 1u8, red_nodes), ("green", 2u8, green_nodes)] {
        for n in ns {
            e.nodes.insert(format!("{c}/{c}-{n}"));
            for i in 1..=2 {
                e.endpoints
                    .insert(format!("{c}/{}@{c}-{n}", endpoint_ip(o, *n, i)));
            }
            e.backends.insert(format!("{c}/{}", endpoint_ip(o, *n, 1)));
        }
    }
    e
}

async fn all_converge(meshds: &[&Meshd], want: &Seen, timeout: Duration) -> Duration {
    let t = Instant::now();
    for (i, m) in meshds.iter().enumerate() {
        let left = timeout.saturating_sub(t.elapsed());
        let ok = m.view.wait_until(left, |s| seen(s) == *want).await;
        assert!(
            ok,
            "view {i} did not converge:\n got {:?}\nwant {want:?}",
            m.view.with(seen)
        );
    }
    t.elapsed()
}

#[test]
fn etcd_mesh_federation_both_ways_global_services() -> Result<()> {
    let started = Instant::now();
    let lab = Lab::new("fglob")?;
    let swa = lab.switch("swa")?;
    let swb = lab.switch("swb")?;
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    for i in 0..3u8 {
        let a = lab.host(&format!("a{i}"))?;
        lab.attach(&a, &[&format!("192.0.2.{}/24", 11 + i)], &swa)?;
        ra.push(a);
        let b = lab.host(&format!("b{i}"))?;
        lab.attach(&b, &[&format!("198.51.100.{}/24", 11 + i)], &swb)?;
        rb.push(b);
    }
    let m = lab.host("m")?;
    lab.attach(&m, &["192.0.2.20/24"], &swa)?;
    lab.attach(&m, &["198.51.100.20/24"], &swb)?;
    let members = |hosts: &[Host], net: &str| -> Vec<(Host, IpAddr)> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), format!("{net}.{}", 11 + i).parse().unwrap()))
            .collect()
    };
    let ma = members(&ra, "192.0.2");
    let mb = members(&rb, "198.51.100");
    let refs = |v: &[(Host, IpAddr)]| -> Vec<(Host, IpAddr)> { v.to_vec() };
    let (ma, mb) = (refs(&ma), refs(&mb));
    let etcd_red = EtcdCluster::start(&ma.iter().map(|(h, ip)| (h, *ip)).collect::<Vec<_>>())?;
    let etcd_green = EtcdCluster::start(&mb.iter().map(|(h, ip)| (h, *ip)).collect::<Vec<_>>())?;
    eprintln!(
        "two 3-member etcd clusters up after {:?}",
        started.elapsed()
    );

    m.block_on(async {
        let red = KvStore::connect(&kv_config(&etcd_red))
            .await
            .expect("red etcd");
        let green = KvStore::connect(&kv_config(&etcd_green))
            .await
            .expect("green etcd");
        let layout = IdentityLayout::default();
        let alloc_red =
            IdentityAllocator::new(red.clone(), name("red"), ClusterId::new(1).unwrap(), layout);
        let alloc_green = IdentityAllocator::new(
            green.clone(),
            name("green"),
            ClusterId::new(2).unwrap(),
            layout,
        );
        let r1 = start_meshd(
            &red,
            kv_config(&etcd_green),
            "red",
            "green",
            1,
            1,
            &alloc_red,
        )
        .await;
        let r2 = start_meshd(
            &red,
            kv_config(&etcd_green),
            "red",
            "green",
            2,
            1,
            &alloc_red,
        )
        .await;
        let g1 = start_meshd(
            &green,
            kv_config(&etcd_red),
            "green",
            "red",
            1,
            2,
            &alloc_green,
        )
        .await;
        let g2 = start_meshd(
            &green,
            kv_config(&etcd_red),
            "green",
            "red",
            2,
            2,
            &alloc_green,
        )
        .await;
        let svc_red = service("red", 1, &[1, 2], Affinity::Local);
        red.put(&svc_red.key(), svc_red.encode(), None)
            .await
            .unwrap();
        let svc_green = service("green", 2, &[1, 2], Affinity::None);
        green
            .put(&svc_green.key(), svc_green.encode(), None)
            .await
            .unwrap();

        let all = [&r1, &r2, &g1, &g2];
        let t = all_converge(
            &all,
            &expected(&[1, 2], &[1, 2], (2, 2)),
            Duration::from_secs(15),
        )
        .await;
        eprintln!("all four views hold both clusters after {t:?}");
        // Exactly one mirror per direction.
        for pair in [[&r1, &r2], [&g1, &g2]] {
            let leaders = pair
                .iter()
                .filter(|m| m.mirror.status().role == MirrorRole::Leader)
                .count();
            assert_eq!(leaders, 1);
        }
        // Red's global service with local affinity uses red's backends; the merged service has all.
        let merged = r1.view.with(|s| s.merged_services());
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].backends.len(), 4);
        let used: BTreeSet<String> = select_backends(&merged[0], &name("red"))
            .iter()
            .map(|b| b.cluster.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(used, BTreeSet::from(["red".to_string()]));
        let merged_g = g1.view.with(|s| s.merged_services());
        assert_eq!(select_backends(&merged_g[0], &name("green")).len(), 4);

        // Deletes in green: node 2 leaves (its record and endpoints), its backend goes.
        let t = Instant::now();
        let Meshd {
            reg,
            eps,
            view,
            mirror,
        } = g2;
        reg.deregister().await.unwrap();
        eps.leases().revoke_all().await.unwrap();
        drop((view, mirror));
        let svc_green = service("green", 2, &[1], Affinity::None);
        green
            .put(&svc_green.key(), svc_green.encode(), None)
            .await
            .unwrap();
        let all = [&r1, &r2, &g1];
        all_converge(
            &all,
            &expected(&[1, 2], &[1], (2, 2)),
            Duration::from_secs(10),
        )
        .await;
        eprintln!(
            "green node delete visible everywhere after {:?}",
            t.elapsed()
        );

        // Adds in red: node 3 joins with its endpoints, identity and a backend.
        let t = Instant::now();
        let r3 = start_meshd(
            &red,
            kv_config(&etcd_green),
            "red",
            "green",
            3,
            1,
            &alloc_red,
        )
        .await;
        let svc_red = service("red", 1, &[1, 2, 3], Affinity::Local);
        red.put(&svc_red.key(), svc_red.encode(), None)
            .await
            .unwrap();
        let all = [&r1, &r2, &g1, &r3];
        all_converge(
            &all,
            &expected(&[1, 2, 3], &[1], (3, 2)),
            Duration::from_secs(10),
        )
        .await;
        eprintln!("red node add visible everywhere after {:?}", t.elapsed());
        // An endpoint delete in red propagates to green.
        let t = Instant::now();
        r1.eps.remove(&[endpoint_ip(1, 1, 2)]).await.unwrap();
        assert!(
            g1.view
                .wait_until(Duration::from_secs(5), |s| s.endpoints().len() == 7)
                .await
        );
        eprintln!(
            "red endpoint delete in green's view after {:?}",
            t.elapsed()
        );
        drop(r3);
    })?;
    eprintln!("total {:?}", started.elapsed());
    Ok(())
}
