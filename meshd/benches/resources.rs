//! `scripts/bench resources`: applied resources against real etcd 3.4 in the lab (one member,
//! meshd's code on a client host), measured side by side in one run:
//!
//! - `apply_1k_services_seconds`: one manifest of 1,000 Services applied through meshd's
//!   apply path (`objects::Objects`: every document checked, a ClusterIP allocated by etcd
//!   transaction for each, the object written);
//! - `clusterip_alloc_per_s`: ClusterIP allocations alone (one transaction each);
//! - `backend_update_p50_ms` / `backend_update_p99_ms`: with 1,000 services x 10 pods (10,000
//!   endpoint records, 1,000 identities), an endpoint record deleted in etcd (what meshd does
//!   on a CNI DEL) until a node agent's desired datapath state (merged view -> service
//!   controller -> `MeshDesired`'s services) no longer has that backend. Not included: the
//!   CNI record poll before the delete (`mesh.cni_endpoints_dir` is read every 200 ms) and the
//!   eBPF map write after it (microseconds).
//!
//! Sizes: `RESOURCES_BENCH_SERVICES` (1000), `RESOURCES_BENCH_PODS` (10 per service),
//! `RESOURCES_BENCH_SAMPLES` (50).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{ClusterName, Identity};
use interop_tests::{EtcdCluster, Lab};
use ironmesh_meshd::endpoints::EndpointRecord;
use ironmesh_meshd::federation::{MergedView, ViewChange};
use ironmesh_meshd::ipam::Family;
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::lbipam::VipAllocator;
use ironmesh_meshd::objects::Objects;
use ironmesh_meshd::reconcile::MeshDesired;
use ironmesh_meshd::schema::{Key, Resource};
use ironmesh_meshd::services::{Frontend, Protocol};
use serde_json::json;

fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Pod `j` of service `i`: 10.1.<hi>.<lo>, distinct for i*pods+j < 65536.
fn pod_ip(i: usize, j: usize, pods: usize) -> IpAddr {
    let n = i * pods + j + 1;
    IpAddr::V4(Ipv4Addr::new(10, 1, (n >> 8) as u8, (n & 0xff) as u8))
}

struct Results {
    services: usize,
    pods: usize,
    apply_s: f64,
    alloc_per_s: f64,
    updates: Vec<f64>,
}

async fn run(etcd: &EtcdCluster) -> Results {
    let services = env_usize("RESOURCES_BENCH_SERVICES", 1000);
    let pods = env_usize("RESOURCES_BENCH_PODS", 10);
    let samples = env_usize("RESOURCES_BENCH_SAMPLES", 50);
    let mut cfg = KvConfig::new(etcd.members.iter().map(|m| m.client_url()));
    cfg.op_timeout = Duration::from_secs(10);
    let store = KvStore::connect(&cfg).await.expect("etcd");
    let cluster: ClusterName = "bench".parse().unwrap();

    // 1. One manifest of `services` Services, applied.
    let mut manifest = String::new();
    for i in 0..services {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\n\
             spec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ));
    }
    let objects = Objects::new(
        store.clone(),
        cluster.clone(),
        vec!["10.96.0.0/16".parse().unwrap()],
    );
    eprintln!("applying {services} services...");
    let t = Instant::now();
    let out = objects.apply(&manifest, false).await.expect("apply");
    let apply_s = t.elapsed().as_secs_f64();
    assert_eq!(out.len(), services);
    assert!(out.iter().all(|o| o.action == "created"));

    // 2. ClusterIP allocations alone (another cluster's keys).
    let alloc = VipAllocator::cluster_ips(
        store.clone(),
        "alloc".parse().unwrap(),
        vec!["10.100.0.0/16".parse().unwrap()],
    )
    .unwrap();
    let t = Instant::now();
    for i in 0..services {
        let key = format!("default/a{i}").parse().unwrap();
        alloc.allocate(&key, Family::V4).await.expect("allocation");
    }
    let alloc_per_s = services as f64 / t.elapsed().as_secs_f64();

    // 3. The pods: one identity per service, `pods` endpoint records each.
    eprintln!("writing {} endpoints...", services * pods);
    let ids: Vec<Identity> = (0..services)
        .map(|i| Identity::from_raw(65536 + i as u32).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let key = Key::cluster(&cluster, Resource::Identity(*id)).to_string();
        let v = json!({"labels": {"app": format!("svc-{i}"), "io.kubernetes.pod.namespace": "default"}});
        store
            .put(&key, v.to_string().into_bytes(), None)
            .await
            .unwrap();
        for j in 0..pods {
            let rec = EndpointRecord {
                ip: pod_ip(i, j, pods),
                cluster: cluster.clone(),
                node: format!("n{}", j % 4).parse().unwrap(),
                identity: *id,
                tunnel_endpoint: None,
                encrypt_key: 0,
                ports: Vec::new(),
                pod: None,
            };
            store.put(&rec.key(), rec.encode(), None).await.unwrap();
        }
    }

    // 4. A node agent: merged view -> MeshDesired (the service controller inside).
    // vips[i]: svc-i's ClusterIP (the listing is in key order: svc-0, svc-1, svc-10...).
    let by_name: std::collections::BTreeMap<String, IpAddr> = objects
        .list(resources::Kind::Service, Some("default"))
        .await
        .unwrap()
        .iter()
        .map(|s| match &s.object.spec {
            resources::Spec::Service(spec) => (s.object.meta.name.clone(), spec.cluster_ips[0]),
            _ => unreachable!(),
        })
        .collect();
    let vips: Vec<IpAddr> = (0..services)
        .map(|i| by_name[&format!("svc-{i}")])
        .collect();
    let fe = |vip: IpAddr| Frontend {
        vip,
        port: 80,
        protocol: Protocol::Tcp,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ViewChange>();
    let _view = MergedView::spawn(
        store.clone(),
        cluster.clone(),
        [],
        Duration::from_secs(1),
        Some(tx),
    );
    let mut desired = MeshDesired::new(cluster.clone(), "n0".parse().unwrap());
    let backends =
        |d: &MeshDesired, vip: IpAddr| d.services_out.get(&fe(vip)).map_or(0, |s| s.backends.len());
    let t = Instant::now();
    while !vips.iter().all(|v| backends(&desired, *v) == pods) {
        let c = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the view's initial listing")
            .expect("view");
        desired.apply(&c);
    }
    eprintln!(
        "node agent holds {services} services x {pods} backends after {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // 5. Backend updates: one endpoint deleted at a time.
    let mut updates = Vec::new();
    for s in 0..samples.min(services) {
        let i = (s * 7919) % services;
        let ip = pod_ip(i, s % pods, pods);
        let key = Key::cluster(&cluster, Resource::Endpoint(ip)).to_string();
        let want = pods - 1;
        let t = Instant::now();
        assert!(store.delete(&key).await.unwrap());
        while backends(&desired, vips[i]) != want {
            let c = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the delete reaches the view")
                .expect("view");
            desired.apply(&c);
        }
        updates.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    updates.sort_by(f64::total_cmp);
    Results {
        services,
        pods,
        apply_s,
        alloc_per_s,
        updates,
    }
}

fn main() {
    // `cargo test --all-targets` runs harness-less benches without --bench: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benchmark skipped: run it with `scripts/bench resources`");
        return;
    }
    let lab = Lab::new("rbench").expect("lab (run as root)");
    let sw = lab.switch("sw").expect("switch");
    let e = lab.host("e0").expect("host");
    lab.attach(&e, &["192.0.2.11/24"], &sw).expect("attach");
    let etcd = EtcdCluster::start(&[(&e, "192.0.2.11".parse().unwrap())]).expect("etcd");
    let client = lab.host("m").expect("host");
    lab.attach(&client, &["192.0.2.100/24"], &sw)
        .expect("attach");
    let r = client.block_on(run(&etcd)).expect("client namespace");
    let p50 = percentile(&r.updates, 0.5);
    let p99 = percentile(&r.updates, 0.99);
    println!("meshd resources benchmark (etcd 3.4, one member, lab netns)");
    println!("{:<56} {:>12}", "metric", "value");
    for (k, v) in [
        (
            format!("apply {} services (ClusterIP each), s", r.services),
            format!("{:.2}", r.apply_s),
        ),
        (
            "ClusterIP allocations/s".into(),
            format!("{:.0}", r.alloc_per_s),
        ),
        (
            format!(
                "backend update p50 ms ({} svc x {} pods)",
                r.services, r.pods
            ),
            format!("{p50:.2}"),
        ),
        ("backend update p99 ms".into(), format!("{p99:.2}")),
    ] {
        println!("{k:<56} {v:>12}");
    }
    let out = json!({
        "services": r.services,
        "pods_per_service": r.pods,
        "apply_1k_services_seconds": r3(r.apply_s),
        "clusterip_alloc_per_s": r3(r.alloc_per_s),
        "backend_update_p50_ms": r3(p50),
        "backend_update_p99_ms": r3(p99),
        "backend_update_samples": r.updates.len(),
        "targets": {"apply_1k_services_seconds": 2, "backend_update_p99_ms": 200},
    });
    let path = std::env::var("IRONMESH_BENCH_JSON")
        .unwrap_or_else(|_| "target/bench/resources.json".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n")
        .expect("writing the results");
}
