//! Garbage collection against a real etcd 3.4 in the lab (issue 7): identities are collected
//! only once no node references them for the grace period, and a dead node's PodCIDRs are
//! released only after the grace period once its lease has expired (a node that comes back
//! within the grace keeps them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ClusterId, ClusterName, IdentityLayout, Labels, NodeName};
use interop_tests::*;
use ironmesh_meshd::gc::{GcController, IdentityGc, IdentityRefs, PodCidrGc};
use ironmesh_meshd::identity::IdentityAllocator;
use ironmesh_meshd::ipam::{PodCidrAllocator, Pool};
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::leases::{LeasePoolConfig, LeasedKeys};
use ironmesh_meshd::nodes::{LeaseConfig, NodeRecord, NodeRegistration};
use ironmesh_meshd::schema::{Key, Resource};

fn blue() -> ClusterName {
    "blue".parse().unwrap()
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    interop_tests::etcd_lab::kv_config(etcd, Duration::from_secs(3), Duration::from_secs(2))
}

#[test]
fn etcd_mesh_gc_identities_only_when_unreferenced() -> Result<()> {
    let s = EtcdLab::start("gcid", 1)?;
    s.client.block_on(async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let alloc = IdentityAllocator::new(
            store.clone(),
            blue(),
            ClusterId::new(3).unwrap(),
            IdentityLayout::default(),
        );
        let n1_keys = LeasedKeys::new(store.clone(), LeasePoolConfig::new(2, 100));
        let n2_keys = LeasedKeys::new(store.clone(), LeasePoolConfig::new(2, 100));
        let n1 = IdentityRefs::new(blue(), "n1".parse().unwrap(), &n1_keys);
        let n2 = IdentityRefs::new(blue(), "n2".parse().unwrap(), &n2_keys);
        let web: Labels = "app=web".parse().unwrap();
        let db: Labels = "app=db".parse().unwrap();
        let orphan: Labels = "app=orphan".parse().unwrap();
        let id_web = n1.acquire(&alloc, &web).await.unwrap();
        assert_eq!(n2.acquire(&alloc, &web).await.unwrap(), id_web);
        let id_db = n2.acquire(&alloc, &db).await.unwrap();
        // Allocated but never referenced (a node that crashed before referencing it).
        let id_orphan = alloc.allocate(&orphan).await.unwrap();
        let exists = |id| {
            let store = store.clone();
            async move {
                store
                    .get(&Key::cluster(&blue(), Resource::Identity(id)).to_string())
                    .await
                    .unwrap()
                    .is_some()
            }
        };

        let grace = Duration::from_secs(2);
        let mut gc = IdentityGc::new(store.clone(), blue(), grace);
        let r = gc.run_once().await.unwrap();
        assert!(
            r.deleted_identities.is_empty(),
            "nothing before the grace: {r:?}"
        );
        assert_eq!(r.waiting, 1, "only the orphan is unreferenced");

        // n1 releases web (n2 still holds it); n2's node dies (leases expire): db unreferenced.
        n1.release(id_web).await.unwrap();
        drop(n2);
        drop(n2_keys);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = gc.run_once().await.unwrap();
        assert_eq!(r.deleted_identities, vec![id_orphan], "{r:?}");
        assert!(!exists(id_orphan).await);
        // web and db just became unreferenced (n2's lease expired): their clock starts now.
        assert!(exists(id_web).await && exists(id_db).await);
        assert_eq!(r.waiting, 2);

        // Within the grace n1 uses web again: web is kept, db collected after its grace.
        assert_eq!(n1.acquire(&alloc, &web).await.unwrap(), id_web);
        let t = Instant::now();
        let mut deleted = Vec::new();
        while !deleted.contains(&id_db) {
            assert!(t.elapsed() < Duration::from_secs(10), "db never collected");
            tokio::time::sleep(Duration::from_millis(300)).await;
            deleted.extend(gc.run_once().await.unwrap().deleted_identities);
        }
        assert_eq!(deleted, vec![id_db]);
        assert!(
            exists(id_web).await,
            "a referenced identity is never collected"
        );
        // The by-labels key went with it: db gets a fresh allocation when used again.
        alloc.forget(&db);
        assert_eq!(alloc.lookup(&db).await.unwrap(), None);
        eprintln!("identity GC: orphan and db collected, web (referenced) kept");

        // A node with a cached identity that was collected meanwhile: its reference write is
        // guarded by the identity existing, so it re-allocates instead of using a ghost.
        let lone: Labels = "app=lone".parse().unwrap();
        let id_lone = alloc.allocate(&lone).await.unwrap();
        let mut gc2 = IdentityGc::new(store.clone(), blue(), Duration::ZERO);
        // With a zero grace the first round collects it at once (the allocator still caches it)...
        assert_eq!(
            gc2.run_once().await.unwrap().deleted_identities,
            vec![id_lone]
        );
        // ...and a node that still had it cached re-allocates instead of referencing a ghost.
        let again = n1.acquire(&alloc, &lone).await.unwrap();
        assert!(exists(again).await);
        assert!(gc2.run_once().await.unwrap().deleted_identities.is_empty());
    })?;
    Ok(())
}

#[test]
fn etcd_mesh_gc_podcidr_released_after_grace() -> Result<()> {
    let s = EtcdLab::start("gccidr", 1)?;
    s.client.block_on(async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let ipam = Arc::new(
            PodCidrAllocator::new(
                store.clone(),
                blue(),
                vec![Pool::new("10.9.0.0/16".parse().unwrap(), 24).unwrap()],
            )
            .unwrap(),
        );
        let reg = |n: &str| {
            let store = store.clone();
            let ipam = ipam.clone();
            let n: NodeName = n.parse().unwrap();
            async move {
                let cidrs = ipam.allocate(&n).await.unwrap();
                let mut r = NodeRecord::new(blue(), n);
                r.pod_cidrs = cidrs;
                NodeRegistration::register(store, r, LeaseConfig::with_ttl(2))
                    .await
                    .unwrap()
            }
        };
        let a = reg("a").await;
        let b = reg("b").await;
        let a_cidr = a.record().pod_cidrs.clone();
        let b_cidr = b.record().pod_cidrs.clone();
        let grace = Duration::from_secs(3);
        let mut gc = PodCidrGc::new(store.clone(), blue(), ipam.clone(), grace);
        assert_eq!(gc.run_once().await.unwrap().waiting, 0);

        // Both die. a comes back within the grace; b does not.
        let died = Instant::now();
        a.stop();
        b.stop();
        let t = Instant::now();
        loop {
            let r = gc.run_once().await.unwrap();
            assert!(r.released.is_empty(), "released within the grace: {r:?}");
            if r.waiting == 2 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(8), "leases never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let expired = died.elapsed();
        let a2 = reg("a").await;
        assert_eq!(a2.record().pod_cidrs, a_cidr, "a restarted node gets its CIDR back");
        let mut released = Vec::new();
        let t = Instant::now();
        while released.is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "b's CIDR never released");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let r = gc.run_once().await.unwrap();
            released = r.released;
        }
        let gone_for = t.elapsed();
        assert!(gone_for + Duration::from_millis(200) >= grace - Duration::from_millis(300));
        assert_eq!(released, vec![("b".parse().unwrap(), b_cidr.clone())]);
        assert_eq!(ipam.lookup(&"b".parse().unwrap()).await.unwrap(), None);
        assert_eq!(ipam.lookup(&"a".parse().unwrap()).await.unwrap(), Some(a_cidr));
        // The released CIDR is allocatable again.
        let c = ipam.allocate(&"c".parse().unwrap()).await.unwrap();
        assert_eq!(c, b_cidr);
        eprintln!(
            "PodCIDR GC: leases expired {expired:?} after death; b's CIDR released {gone_for:?} later; a kept its CIDR"
        );
        drop(a2);
    })?;
    Ok(())
}

#[test]
fn etcd_mesh_gc_controller_runs_both_in_background() -> Result<()> {
    let s = EtcdLab::start("gcctl", 1)?;
    s.client.block_on(async {
        let store = KvStore::connect(&kv_config(&s.etcd)).await.expect("etcd");
        let alloc = IdentityAllocator::new(
            store.clone(),
            blue(),
            ClusterId::new(3).unwrap(),
            IdentityLayout::default(),
        );
        let ipam = Arc::new(
            PodCidrAllocator::new(
                store.clone(),
                blue(),
                vec![Pool::new("10.9.0.0/16".parse().unwrap(), 24).unwrap()],
            )
            .unwrap(),
        );
        // An identity nobody references, and a node that never registers (already "dead").
        let orphan = alloc
            .allocate(&"app=orphan".parse().unwrap())
            .await
            .unwrap();
        let ghost: NodeName = "ghost".parse().unwrap();
        let cidrs = ipam.allocate(&ghost).await.unwrap();
        let grace = Duration::from_secs(1);
        let started = Instant::now();
        let ctl = GcController::spawn(
            IdentityGc::new(store.clone(), blue(), grace),
            PodCidrGc::new(store.clone(), blue(), ipam.clone(), grace),
            Duration::from_millis(200),
        );
        let id_key = Key::cluster(&blue(), Resource::Identity(orphan)).to_string();
        loop {
            let gone_id = store.get(&id_key).await.unwrap().is_none();
            let gone_cidr = ipam.lookup(&ghost).await.unwrap().is_none();
            if gone_id && gone_cidr {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "not collected: identity gone {gone_id}, CIDR released {gone_cidr}; last {:?}",
                ctl.last()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        assert!(took >= grace, "collected before the grace period: {took:?}");
        eprintln!("controller: orphan identity and ghost's {cidrs:?} collected after {took:?}");
    })?;
    Ok(())
}
