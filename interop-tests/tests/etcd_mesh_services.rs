//! Endpoints (IP cache), services, LB-IPAM and the reconcilers against a real etcd 3.4 in the
//! lab (issue 7). One cluster "red" with a one-member etcd; the meshd code runs on a thread that
//! joined the client host's namespace (see `etcd_mesh_state.rs`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ClusterName, Identity, NodeName, ServiceKey};
use interop_tests::*;
use ipnet::IpNet;
use ironmesh_meshd::endpoints::{EndpointError, EndpointPublisher, EndpointRecord};
use ironmesh_meshd::federation::MergedView;
use ironmesh_meshd::ipam::Family;
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::lbipam::{LbIpamError, VipAllocator};
use ironmesh_meshd::leases::{LeasePoolConfig, LeasedKeys};
use ironmesh_meshd::nodes::{LeaseConfig, NodeRecord, NodeRegistration};
use ironmesh_meshd::reconcile::{
    Advert, IpCacheEntry, PeerKey, ReconcileDriver, RecordingSink, Sinks,
};
use ironmesh_meshd::services::{
    Affinity, Backend, BackendState, Frontend, FrontendSpec, Protocol, ServicePort, ServiceRecord,
};

fn run_in<T: Send>(host: &Host, fut: impl std::future::Future<Output = T> + Send) -> T {
    host.block_on(fut).expect("joining the host's namespace")
}

fn red() -> ClusterName {
    "red".parse().unwrap()
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    interop_tests::etcd_lab::kv_config(etcd, Duration::from_secs(3), Duration::from_secs(2))
}

fn endpoint(node: &str, i: u32) -> EndpointRecord {
    EndpointRecord {
        ip: IpAddr::from([10, 1, (i / 250) as u8, (i % 250 + 2) as u8]),
        cluster: red(),
        node: node.parse().unwrap(),
        identity: Identity::from_raw(65792 + i % 7).unwrap(),
        tunnel_endpoint: Some("192.0.2.20".parse().unwrap()),
        encrypt_key: 1,
        ports: Vec::new(),
        pod: None,
    }
}

#[test]
fn etcd_mesh_endpoints_bounded_leases_and_node_death() -> Result<()> {
    let s = EtcdLab::start("meps", 1)?;
    run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let view = MergedView::spawn(store.clone(), red(), [], Duration::from_millis(300), None);
        // 300 endpoints with at most 50 keys per lease: at least 6 leases, none above 50.
        let keys = LeasedKeys::new(store.clone(), LeasePoolConfig::new(2, 50));
        let publisher = EndpointPublisher::new(red(), "r1".parse().unwrap(), keys);
        let records: Vec<EndpointRecord> = (0..300).map(|i| endpoint("r1", i)).collect();
        let t = Instant::now();
        publisher.upsert(&records).await.expect("publish");
        eprintln!("300 endpoints published in {:?}", t.elapsed());
        let st = publisher.leases().stats().await;
        assert_eq!(st.keys, 300);
        assert!(st.leases >= 6 && st.max_keys_on_a_lease <= 50, "{st:?}");
        assert!(
            view.wait_until(Duration::from_secs(10), |v| v.endpoints().len() == 300)
                .await,
            "view has {} endpoints",
            view.with(|v| v.endpoints().len())
        );
        let seen = view.with(|v| v.endpoints());
        assert!(
            seen.iter()
                .all(|e| e.node.as_ref() == "r1" && e.encrypt_key == 1)
        );

        // A record for another node is refused, naming the fields.
        let err = publisher.upsert(&[endpoint("r2", 1)]).await.unwrap_err();
        assert!(matches!(err, EndpointError::NotOurs { .. }), "{err}");
        eprintln!("foreign endpoint refused: {err}");

        // Leases are renewed past their TTL: nothing vanishes while the node lives.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(view.with(|v| v.endpoints().len()), 300);
        assert_eq!(publisher.leases().stats().await.regrants, 0);

        // Removing some propagates.
        let gone: Vec<IpAddr> = records[..10].iter().map(|r| r.ip).collect();
        publisher.remove(&gone).await.expect("remove");
        assert!(
            view.wait_until(Duration::from_secs(5), |v| v.endpoints().len() == 290)
                .await
        );

        // A lease lost anyway (revoked here, as when etcd expired it during a long cut): its
        // keys vanish, then the pool replaces the lease and writes them again.
        let lost = publisher.leases().lease_ids().await[0];
        store.lease_revoke(lost).await.expect("revoke");
        assert!(
            view.wait_until(Duration::from_secs(5), |v| v.endpoints().len() < 290)
                .await,
            "revoking a lease removed nothing"
        );
        let t = Instant::now();
        assert!(
            view.wait_until(Duration::from_secs(10), |v| v.endpoints().len() == 290)
                .await,
            "keys of the lost lease not written again: {}",
            view.with(|v| v.endpoints().len())
        );
        let st = publisher.leases().stats().await;
        assert_eq!(st.regrants, 1, "{st:?}");
        assert!(!publisher.leases().lease_ids().await.contains(&lost));
        eprintln!(
            "lost lease replaced and its keys rewritten after {:?}",
            t.elapsed()
        );

        // The node dies (renewals stop): its endpoints vanish once the leases expire.
        let t = Instant::now();
        drop(publisher);
        assert!(
            view.wait_until(Duration::from_secs(10), |v| v.endpoints().is_empty())
                .await,
            "endpoints of a dead node still there: {}",
            view.with(|v| v.endpoints().len())
        );
        eprintln!("dead node's endpoints gone after {:?}", t.elapsed());
    });
    Ok(())
}

async fn until(what: &str, f: impl Fn() -> bool + Send) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn web() -> ServiceKey {
    "shop/web".parse().unwrap()
}

#[test]
fn etcd_mesh_lbipam_allocate_request_refuse_release() -> Result<()> {
    let s = EtcdLab::start("mlb", 1)?;
    run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let pools: Vec<IpNet> = vec![
            "203.0.113.0/29".parse().unwrap(),
            "fd00:30::/126".parse().unwrap(),
        ];
        let alloc = VipAllocator::new(store.clone(), red(), pools.clone()).expect("pools");

        // Concurrent allocation from 3 allocators for 6 services (the /29 has 6 hosts).
        let allocs: Vec<Arc<VipAllocator>> = (0..3)
            .map(|_| Arc::new(VipAllocator::new(store.clone(), red(), pools.clone()).unwrap()))
            .collect();
        let mut tasks = Vec::new();
        for i in 0..6 {
            for a in &allocs {
                let a = a.clone();
                let svc: ServiceKey = format!("shop/s{i}").parse().unwrap();
                tasks.push(tokio::spawn(async move {
                    (svc.clone(), a.allocate(&svc, Family::V4).await)
                }));
            }
        }
        let mut by_service = std::collections::BTreeMap::new();
        for t in tasks {
            let (svc, ip) = t.await.unwrap();
            let ip = ip.expect("allocation");
            let prev = by_service.insert(svc.clone(), ip);
            assert!(prev.is_none_or(|p| p == ip), "{svc} got {prev:?} and {ip}");
        }
        let distinct: BTreeSet<IpAddr> = by_service.values().copied().collect();
        assert_eq!(
            distinct.len(),
            6,
            "one VIP per service, no duplicates: {by_service:?}"
        );
        // The pool is full now.
        let err = alloc.allocate(&web(), Family::V4).await.unwrap_err();
        assert!(matches!(err, LbIpamError::Exhausted { .. }), "{err}");
        eprintln!("exhausted: {err}");

        // Explicit requests: taken, outside the pools, then a valid one.
        let taken = by_service[&"shop/s0".parse::<ServiceKey>().unwrap()];
        let err = alloc.request(&web(), taken).await.unwrap_err();
        assert!(
            matches!(&err, LbIpamError::Taken { owner, .. } if owner == "shop/s0"),
            "{err}"
        );
        eprintln!("taken: {err}");
        let err = alloc
            .request(&web(), "198.51.100.7".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, LbIpamError::OutsidePools { .. }), "{err}");
        eprintln!("outside: {err}");
        let v6 = alloc
            .request(&web(), "fd00:30::2".parse().unwrap())
            .await
            .expect("explicit v6");
        assert_eq!(alloc.lookup(&web()).await.unwrap(), vec![v6]);
        // Idempotent: asking again returns the same.
        assert_eq!(alloc.allocate(&web(), Family::V6).await.unwrap(), v6);

        // Release on delete: s0's VIP becomes free and goes to the next asker.
        let released = alloc.release(&"shop/s0".parse().unwrap()).await.unwrap();
        assert_eq!(released, vec![taken]);
        assert_eq!(alloc.request(&web(), taken).await.unwrap(), taken);
        assert_eq!(alloc.lookup(&web()).await.unwrap(), vec![v6, taken]);
    });
    Ok(())
}

fn service(backends: &[(&str, &str, BackendState)]) -> ServiceRecord {
    ServiceRecord {
        service: web(),
        cluster: red(),
        vips: vec!["203.0.113.1".parse().unwrap()],
        ports: vec![ServicePort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
        backends: backends
            .iter()
            .map(|(ip, node, state)| Backend {
                ip: ip.parse().unwrap(),
                port: 8080,
                port_name: None,
                node: Some(node.parse().unwrap()),
                cluster: None,
                zone: Some("zone-a".into()),
                state: *state,
            })
            .collect(),
        global: false,
        affinity: Affinity::None,
    }
}

#[test]
fn etcd_mesh_reconcilers_follow_etcd() -> Result<()> {
    let s = EtcdLab::start("mrec", 1)?;
    run_in(&s.client, async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let me: NodeName = "r1".parse().unwrap();
        let mut r1 = NodeRecord::new(red(), me.clone());
        r1.ipv4 = Some("192.0.2.20".parse().unwrap());
        r1.pod_cidrs = vec!["10.1.1.0/24".parse().unwrap()];
        let mut r2 = NodeRecord::new(red(), "r2".parse().unwrap());
        r2.ipv4 = Some("192.0.2.21".parse().unwrap());
        r2.wireguard_public_key = Some("key-r2".into());
        let _reg1 = NodeRegistration::register(store.clone(), r1, LeaseConfig::with_ttl(3))
            .await
            .unwrap();
        let reg2 = NodeRegistration::register(store.clone(), r2, LeaseConfig::with_ttl(3))
            .await
            .unwrap();
        let keys = LeasedKeys::new(store.clone(), LeasePoolConfig::new(3, 100));
        let eps = EndpointPublisher::new(red(), "r2".parse().unwrap(), keys);
        eps.upsert(&[endpoint("r2", 1), endpoint("r2", 2)])
            .await
            .unwrap();
        let svc = service(&[
            ("10.1.0.3", "r2", BackendState::Active),
            ("10.1.0.4", "r2", BackendState::Quarantined),
        ]);
        store.put(&svc.key(), svc.encode(), None).await.unwrap();
        let vips = VipAllocator::new(
            store.clone(),
            red(),
            vec!["203.0.113.0/29".parse().unwrap()],
        )
        .unwrap();
        let vip = vips
            .request(&web(), "203.0.113.1".parse().unwrap())
            .await
            .unwrap();

        let peers: RecordingSink<PeerKey, NodeRecord> = RecordingSink::default();
        let ipcache: RecordingSink<IpAddr, IpCacheEntry> = RecordingSink::default();
        let services: RecordingSink<Frontend, FrontendSpec> = RecordingSink::default();
        let adverts: RecordingSink<IpNet, Advert> = RecordingSink::default();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _view = MergedView::spawn(
            store.clone(),
            red(),
            [],
            Duration::from_millis(300),
            Some(tx),
        );
        let driver = ReconcileDriver::spawn(
            red(),
            me,
            rx,
            Sinks {
                peers: Box::new(peers.clone()),
                ipcache: Box::new(ipcache.clone()),
                services: Box::new(services.clone()),
                adverts: Box::new(adverts.clone()),
            },
            Duration::from_millis(200),
        );
        until("initial state in sinks", || {
            peers.state().len() == 1
                && ipcache.state().len() == 4
                && services.state().len() == 1
                && adverts.state().len() == 2
        })
        .await;
        let spec = services.state().into_values().next().unwrap();
        assert_eq!(
            spec.backends.len(),
            1,
            "the quarantined backend is not used"
        );
        assert_eq!(spec.backends[0].ip.to_string(), "10.1.0.3");
        assert_eq!(
            peers
                .state()
                .values()
                .next()
                .unwrap()
                .wireguard_public_key
                .as_deref(),
            Some("key-r2")
        );
        assert!(adverts.state().contains_key(&IpNet::from(vip)));

        // Changes flow as differences: a backend turns active, the VIP is released, r2 dies.
        let before = ipcache.with(|s| s.upserts);
        let svc2 = service(&[
            ("10.1.0.3", "r2", BackendState::Active),
            ("10.1.0.4", "r2", BackendState::Active),
        ]);
        store.put(&svc2.key(), svc2.encode(), None).await.unwrap();
        until("backend activated", || {
            services
                .state()
                .values()
                .next()
                .is_some_and(|s| s.backends.len() == 2)
        })
        .await;
        vips.release(&web()).await.unwrap();
        until("VIP advert withdrawn", || adverts.state().len() == 1).await;
        assert_eq!(
            ipcache.with(|s| s.upserts),
            before,
            "ipcache untouched by service changes"
        );
        reg2.stop();
        drop(eps);
        until("r2, its endpoints and address gone", || {
            peers.state().is_empty() && ipcache.state().len() == 1
        })
        .await;
        assert!(driver.flushes() > 1);
        eprintln!(
            "reconcilers: {} flushes; peers {:?}",
            driver.flushes(),
            peers.with(|s| (s.upserts, s.removes))
        );
    });
    Ok(())
}
