//! meshd programs the node's eBPF maps from what a user declares (issues 8 and 13): one node
//! running a one-member etcd and the meshd binary owning the datapath at a per-test pin root
//! ([`interop_tests::node1`]); pods added by the real `ironmesh-cni`, the service applied with
//! `ironctl apply`. The test only observes the pinned maps; it writes nothing into etcd.
//!
//! - meshd's own node address reaches the pinned IP cache (host identity);
//! - a pod added by the CNI reaches the IP cache, with the identity meshd published for its
//!   labels (the two `app=db` pods share one, the client has another);
//! - a Service manifest reaches the services map within 1 s of the apply (Maglev table), and
//!   the client pod reaching ClusterIP:5432 is answered by exactly the backend Maglev
//!   predicts, both backends used;
//! - `ironctl delete svc` removes the service and its backends from the maps within 1 s;
//! - CNI DEL of a pod removes its IP cache entry within 1 s; the others stay.
//!
//! Needs root, bpffs; builds meshd, ironctl and ironmesh-cni.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Identity, ReservedIdentity};
use datapath::lb::Proto;
use datapath::maglev;
use interop_tests::datapath_lab::Stop;
use interop_tests::node1::{CLUSTER, NODE_IP, Node1, POD_PORT};
use interop_tests::*;
use ironmesh_meshd::endpoints::EndpointRecord;

const T: Duration = Duration::from_secs(20);
const ONE_S: Duration = Duration::from_secs(1);
const PORT: u16 = 5432;

const DB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: shop
spec:
  selector: {app: db}
  ports:
  - name: pg
    port: 5432
    targetPort: app
"#;

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

/// The endpoint record meshd published for `ip`.
fn record(etcd: &EtcdCluster, ip: Ipv4Addr) -> Option<EndpointRecord> {
    let key = format!("ironmesh/v1/clusters/{CLUSTER}/endpoints/{ip}");
    let v = etcd.get(0, &key).unwrap()?;
    let red = CLUSTER.parse().unwrap();
    Some(EndpointRecord::decode(&red, IpAddr::V4(ip), v.as_bytes()).unwrap())
}

#[test]
fn e2e_datapath_ipcache_services_and_maglev_via_meshd() -> Result<()> {
    let f1 = Node1::start("e2e_dp", &["192.0.2.1/24"])?;
    let alive = || f1.alive().unwrap();

    // meshd's own node record: its address is the host in the IP cache.
    let node_ip = IpAddr::V4(NODE_IP);
    within("the node address in the IP cache", T, || {
        alive();
        f1.dp(|dp| dp.ipcache_lookup(node_ip).unwrap().is_some())
    });
    let v = f1.dp(|dp| dp.ipcache_lookup(node_ip).unwrap().unwrap());
    assert_eq!(
        v.identity().unwrap(),
        Identity::from(ReservedIdentity::Host)
    );
    assert_eq!(v.tunnel_endpoint(), None);

    // Pods through the CNI: each in the IP cache with the identity meshd published.
    let pods = f1.add_pods(&[
        ("c1", "shop", "client"),
        ("b1", "shop", "db"),
        ("b2", "shop", "db"),
    ])?;
    let mut ids = Vec::new();
    for (pod, ip) in &pods {
        let rec = cmd::wait_for(
            "the pod's endpoint record",
            T,
            Duration::from_millis(20),
            |_| Ok(record(&f1.etcd, *ip)),
        )?;
        let want = rec.identity.raw();
        let took = within("the pod in the IP cache", ONE_S, || {
            f1.dp(|dp| {
                dp.ipcache_lookup(IpAddr::V4(*ip))
                    .unwrap()
                    .is_some_and(|v| v.identity == want)
            })
        });
        eprintln!(
            "{} ({ip}, identity {want}) in the IP cache {took:?} after its record",
            pod.name()
        );
        ids.push(want);
    }
    assert_eq!(ids[1], ids[2], "same labels, one identity: {ids:?}");
    assert_ne!(ids[0], ids[1], "other labels, another identity: {ids:?}");

    let stop = Stop::new();
    for (pod, _) in &pods[1..] {
        tcp::who_server(pod, POD_PORT, stop.0.clone(), Duration::from_secs(60));
    }
    let (c1, b1, b2) = (&pods[0], &pods[1], &pods[2]);

    // The service: in the services map within 1 s of the apply, with a Maglev table.
    let f = f1.file("db.yaml", DB);
    let applied = Instant::now();
    assert_eq!(f1.ok(&["apply", "-f", &f]).trim(), "service/db created");
    let got: serde_json::Value =
        serde_json::from_str(&f1.ok(&["get", "svc", "db", "-n", "shop", "-o", "json"])).unwrap();
    let vip: IpAddr = got["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no clusterIP: {got}"))
        .parse()
        .unwrap();
    let in_map = || {
        f1.dp(|dp| {
            dp.service(vip, PORT, Proto::Tcp)
                .unwrap()
                .is_some_and(|s| s.backend_count == 2)
        })
    };
    within(
        "the service in the map",
        ONE_S.saturating_sub(applied.elapsed()),
        in_map,
    );
    eprintln!(
        "service {vip}:{PORT} in the map {:?} after the apply",
        applied.elapsed()
    );
    let table = f1.dp(|dp| {
        let sv = dp.service(vip, PORT, Proto::Tcp).unwrap().unwrap();
        dp.maglev_table(sv.id)
            .unwrap()
            .expect("a Maglev table for the service")
    });
    let backend_name = |id: u32| -> String {
        let b = f1.dp(|dp| {
            dp.backend(id)
                .unwrap()
                .expect("the picked backend is in the map")
        });
        let ip = b.ip().unwrap();
        assert_eq!(
            b.port(),
            POD_PORT,
            "targetPort `app` resolved to the pods' port"
        );
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
    let mut names: Vec<String> = backend_ids.iter().map(|id| backend_name(*id)).collect();
    names.sort();
    assert_eq!(names, [b1.0.name(), b2.0.name()], "the selector's pods");

    // The client reaches the ClusterIP; each flow lands where Maglev says.
    let dst = SocketAddr::new(vip, PORT);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..12 {
        let (got, port) = ask(&c1.0, dst).unwrap_or_else(|e| panic!("via the ClusterIP: {e}"));
        let id = maglev::pick(&table, (IpAddr::V4(c1.1), port), (vip, PORT), 6).unwrap();
        assert_eq!(got, backend_name(id), "the backend Maglev predicts");
        *seen.entry(got).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "12 flows over both backends: {seen:?}");

    // Deleting the service removes it (and its backends) within 1 s.
    let deleted = Instant::now();
    assert_eq!(
        f1.ok(&["delete", "svc", "db", "-n", "shop"]).trim(),
        "service/db deleted"
    );
    let left = ONE_S.saturating_sub(deleted.elapsed());
    within("the service gone from the map", left, || {
        f1.dp(|dp| dp.service(vip, PORT, Proto::Tcp).unwrap().is_none())
    });
    let left = ONE_S.saturating_sub(deleted.elapsed());
    within("the backends gone", left, || {
        f1.dp(|dp| {
            backend_ids
                .iter()
                .all(|id| dp.backend(*id).unwrap().is_none())
        })
    });
    eprintln!(
        "service gone from the maps {:?} after the delete",
        deleted.elapsed()
    );
    assert!(
        ask(&c1.0, dst).is_err(),
        "the ClusterIP still answers without a service"
    );

    // CNI DEL of a pod removes its IP cache entry within 1 s; the others stay.
    let removed = Instant::now();
    f1.del_pod(&b2.0, "b2", "db")?;
    within(
        "the pod gone from the IP cache",
        ONE_S.saturating_sub(removed.elapsed()),
        || f1.dp(|dp| dp.ipcache_lookup(IpAddr::V4(b2.1)).unwrap().is_none()),
    );
    eprintln!(
        "b2 gone from the IP cache {:?} after CNI DEL",
        removed.elapsed()
    );
    assert!(f1.dp(|dp| dp.ipcache_lookup(IpAddr::V4(b1.1)).unwrap().is_some()));
    assert!(f1.dp(|dp| dp.ipcache_lookup(IpAddr::V4(c1.1)).unwrap().is_some()));

    alive();
    drop(stop);
    Ok(())
}
