//! Federation of two clusters against real etcd 3.4 in the lab (issue 7): the elected mirror,
//! the merged view of node agents, a cut remote link, and the mirror's failover.
//!
//! Cluster "red" (ID 1) and cluster "green" (ID 2) each have a one-member etcd on a switch of
//! their own. Red's meshd host `ma` sits on both switches: it reaches red's etcd (its local
//! one) and green's (the remote, read-only). Two "meshd" instances of red run as tokio tasks on
//! a thread that joined `ma`'s namespace (`setns`), as in `etcd_mesh_state.rs`. Cutting `ma`'s
//! link to green's switch cuts the remote off while the local etcd stays reachable.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{ClusterId, ClusterName, IdentityLayout};
use interop_tests::*;
use ironmesh_meshd::federation::{
    ClusterInfo, FederationConfigError, MergedState, MergedView, MirrorConfig, MirrorController,
    MirrorRole, check_remotes,
};
use ironmesh_meshd::kvstore::{KvConfig, KvStore};
use ironmesh_meshd::nodes::NodeRecord;
use ironmesh_meshd::schema::Scope;

/// Runs `fut` to completion inside `host`'s namespace (see `Host::block_on`).
fn run_in<T: Send>(host: &Host, fut: impl std::future::Future<Output = T> + Send) -> T {
    host.block_on(fut).expect("joining the host's namespace")
}

fn name(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn info(n: &str, id: u16, cidr: &str) -> ClusterInfo {
    ClusterInfo {
        name: name(n),
        id: ClusterId::new(id).unwrap(),
        layout: IdentityLayout::default(),
        pod_cidrs: vec![cidr.parse().unwrap()],
    }
}

fn kv_config(etcd: &EtcdCluster) -> KvConfig {
    interop_tests::etcd_lab::kv_config(etcd, Duration::from_secs(2), Duration::from_secs(1))
}

fn node(cluster: &str, n: &str, ip: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name(cluster), n.parse().unwrap());
    r.ipv4 = Some(ip.parse().unwrap());
    r.wireguard_public_key = Some(format!("key-of-{n}"));
    r
}

fn node_names(s: &MergedState, cluster: &str) -> BTreeSet<String> {
    s.nodes()
        .into_iter()
        .filter(|n| n.cluster.as_ref() == cluster)
        .map(|n| n.name.to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const TTL_SECS: i64 = 2;

#[test]
fn etcd_mesh_federation_mirror_view_cut_and_failover() -> Result<()> {
    let lab = Lab::new("fed")?;
    let swa = lab.switch("swa")?;
    let swb = lab.switch("swb")?;
    let ea = lab.host("ea")?;
    let eb = lab.host("eb")?;
    let ma = lab.host("ma")?;
    lab.attach(&ea, &["192.0.2.11/24"], &swa)?;
    lab.attach(&eb, &["198.51.100.11/24"], &swb)?;
    lab.attach(&ma, &["192.0.2.20/24"], &swa)?;
    let remote_link = lab.attach(&ma, &["198.51.100.20/24"], &swb)?;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let etcd_a = EtcdCluster::start(&[(&ea, ip("192.0.2.11"))])?;
    let etcd_b = EtcdCluster::start(&[(&eb, ip("198.51.100.11"))])?;

    // The configuration check: green is accepted; a remote with red's cluster ID is refused.
    let red = info("red", 1, "10.1.0.0/16");
    let green = info("green", 2, "10.2.0.0/16");
    assert_eq!(
        check_remotes(&red, std::slice::from_ref(&green), false),
        Ok(vec![])
    );
    let clash = info("green", 1, "10.2.0.0/16");
    let err = check_remotes(&red, &[clash], false).unwrap_err();
    assert!(
        matches!(err, FederationConfigError::IdIsLocal { .. }),
        "{err}"
    );
    eprintln!("clashing remote refused: {err}");
    let overlap = info("green", 2, "10.1.128.0/17");
    let err = check_remotes(&red, &[overlap], false).unwrap_err();
    eprintln!("overlapping remote refused: {err}");

    let mirror_prefix = Scope::Mirror(name("green")).prefix();
    run_in(&ma, async {
        let local = KvStore::connect(&kv_config(&etcd_a))
            .await
            .expect("red etcd");
        let remote = KvStore::connect(&kv_config(&etcd_b))
            .await
            .expect("green etcd");
        // Green's state: three nodes (one under a lease, as a live node) and red's own node.
        for (n, a) in [
            ("g1", "198.51.100.101"),
            ("g2", "198.51.100.102"),
            ("g3", "198.51.100.103"),
        ] {
            let r = node("green", n, a);
            remote.put(&r.key(), r.encode(), None).await.unwrap();
        }
        let r1 = node("red", "r1", "192.0.2.101");
        local.put(&r1.key(), r1.encode(), None).await.unwrap();

        let started = Instant::now();
        let mk = |candidate: &str| MirrorConfig {
            local: name("red"),
            remote: name("green"),
            remote_etcd: kv_config(&etcd_b),
            candidate: candidate.into(),
            lease_ttl_secs: TTL_SECS,
            probe_interval: Duration::from_millis(300),
            trust: None,
        };
        let mut meshds = [
            Some(MirrorController::spawn(local.clone(), mk("red-m1"))),
            Some(MirrorController::spawn(local.clone(), mk("red-m2"))),
        ];
        let view = MergedView::spawn(
            local.clone(),
            name("red"),
            [name("green")],
            Duration::from_millis(300),
            None,
        );

        // Green's nodes appear in red's merged view, labelled by cluster, after the marker.
        assert!(
            view.wait_until(Duration::from_secs(15), |s| {
                s.is_synced(&name("green")) && node_names(s, "green").len() == 3
            })
            .await,
            "green not mirrored: {:?}",
            view.nodes()
        );
        let first_sync = started.elapsed();
        view.with(|s| {
            assert_eq!(node_names(s, "red"), set(&["r1"]));
            assert_eq!(node_names(s, "green"), set(&["g1", "g2", "g3"]));
            let st = s.mirror_status(&name("green")).expect("status");
            assert!(!st.stale, "{st:?}");
        });
        let leaders: Vec<usize> = (0..2)
            .filter(|i| meshds[*i].as_ref().unwrap().status().role == MirrorRole::Leader)
            .collect();
        assert_eq!(leaders.len(), 1, "exactly one mirror");
        let leader = leaders[0];
        let other = 1 - leader;
        // The other one learns of the leader from its election watch: bounded wait.
        let follower = tokio::time::timeout(
            Duration::from_secs(5),
            meshds[other]
                .as_ref()
                .unwrap()
                .watch_status()
                .wait_for(|s| matches!(s.role, MirrorRole::Follower { .. })),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            follower,
            "red-m{} is no follower: {:?}",
            other + 1,
            meshds[other].as_ref().unwrap().status()
        );
        eprintln!(
            "mirror: red-m{} elected; first sync in view after {first_sync:?}",
            leader + 1
        );

        // Adding and deleting in green propagates.
        let t = Instant::now();
        let g4 = node("green", "g4", "198.51.100.104");
        remote.put(&g4.key(), g4.encode(), None).await.unwrap();
        remote
            .delete(&node("green", "g1", "0.0.0.0").key())
            .await
            .unwrap();
        assert!(
            view.wait_until(Duration::from_secs(10), |s| node_names(s, "green")
                == set(&["g2", "g3", "g4"]))
                .await,
            "{:?}",
            view.nodes()
        );
        eprintln!(
            "add + delete in green visible in red's view after {:?}",
            t.elapsed()
        );

        // Cut red's meshd host off green: the mirror turns stale and keeps its state.
        remote_link.cut().expect("cut");
        let t = Instant::now();
        assert!(
            view.wait_until(Duration::from_secs(15), |s| s
                .mirror_status(&name("green"))
                .is_some_and(|st| st.stale && st.stale_since_unix_ms.is_some()))
                .await,
            "not marked stale"
        );
        let to_stale = t.elapsed();
        // Changes in green while cut (through green's own host).
        etcd_b
            .etcdctl(0, &["del", &node("green", "g2", "0.0.0.0").key()])
            .unwrap();
        let g5 = node("green", "g5", "198.51.100.105");
        etcd_b
            .etcdctl(
                0,
                &["put", &g5.key(), &String::from_utf8(g5.encode()).unwrap()],
            )
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        view.with(|s| {
            assert_eq!(
                node_names(s, "green"),
                set(&["g2", "g3", "g4"]),
                "state kept while cut"
            );
            assert_eq!(node_names(s, "red"), set(&["r1"]));
        });
        assert!(meshds[leader].as_ref().unwrap().status().stale);

        remote_link.restore().expect("restore");
        let t = Instant::now();
        assert!(
            view.wait_until(Duration::from_secs(20), |s| {
                node_names(s, "green") == set(&["g3", "g4", "g5"])
                    && s.mirror_status(&name("green")).is_some_and(|st| !st.stale)
            })
            .await,
            "not resynced: {:?}",
            view.nodes()
        );
        let to_resync = t.elapsed();
        eprintln!("remote cut: stale after {to_stale:?}; resynced {to_resync:?} after the restore");

        // The leader dies (its task aborted, lease not revoked): the other takes over within
        // the lease TTL and writes no entry again.
        let (before, _) = local.list(&mirror_prefix, false).await.unwrap();
        let entries_before: Vec<(Vec<u8>, i64)> = before
            .iter()
            .filter(|kv| kv.key.ends_with(b"/synced") || kv.key.ends_with(b"/status"))
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        assert_eq!(entries_before.len(), 2, "synced marker and status");
        let entries_before: Vec<(Vec<u8>, i64)> = before
            .iter()
            .filter(|kv| !(kv.key.ends_with(b"/synced") || kv.key.ends_with(b"/status")))
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        assert_eq!(entries_before.len(), 3);
        let survivor = meshds[other].take().unwrap();
        let st0 = survivor.status();
        assert_eq!((st0.terms, st0.puts, st0.deletes), (0, 0, 0));
        meshds[leader].take().unwrap().abort();
        let killed = Instant::now();
        let mut sw = survivor.watch_status();
        tokio::time::timeout(
            Duration::from_secs(TTL_SECS as u64 + 5),
            sw.wait_for(|s| s.role == MirrorRole::Leader && s.syncs >= 1),
        )
        .await
        .expect("no takeover")
        .unwrap();
        let takeover = killed.elapsed();
        let st = survivor.status();
        eprintln!(
            "failover: red-m{} leads and has synced {takeover:?} after the leader died (TTL {TTL_SECS} s); puts {}, deletes {}",
            other + 1,
            st.puts,
            st.deletes
        );
        assert!(
            takeover <= Duration::from_millis(TTL_SECS as u64 * 1000 + 1500),
            "takeover took {takeover:?}"
        );
        assert_eq!(
            (st.puts, st.deletes),
            (0, 0),
            "nothing re-downloaded: {st:?}"
        );
        let (after, _) = local.list(&mirror_prefix, false).await.unwrap();
        let entries_after: Vec<(Vec<u8>, i64)> = after
            .iter()
            .filter(|kv| !(kv.key.ends_with(b"/synced") || kv.key.ends_with(b"/status")))
            .map(|kv| (kv.key.clone(), kv.mod_revision))
            .collect();
        assert_eq!(
            entries_after, entries_before,
            "unchanged entries not rewritten"
        );
        assert!(
            view.wait_until(Duration::from_secs(5), |s| s
                .mirror_status(&name("green"))
                .is_some_and(|st| st.leader == format!("red-m{}", other + 1)))
                .await
        );

        // The new mirror keeps mirroring.
        let t = Instant::now();
        let g6 = node("green", "g6", "198.51.100.106");
        remote.put(&g6.key(), g6.encode(), None).await.unwrap();
        assert!(
            view.wait_until(Duration::from_secs(10), |s| node_names(s, "green")
                .contains("g6"))
                .await
        );
        eprintln!(
            "after failover, a new green node visible after {:?}",
            t.elapsed()
        );
        assert_eq!(survivor.status().puts, 1);
        survivor.resign().await;
    });
    Ok(())
}

/// A mirror that starts while the remote is cut off, over a mirror prefix left by an earlier
/// mirror without its synced marker: the view shows the mirrored state and holds back deletes
/// until the marker exists; the new mirror marks the remote stale and deletes nothing; once
/// the remote is back it writes only the differences (one missing entry put, one vanished
/// entry deleted), then the marker.
#[test]
fn etcd_mesh_federation_start_while_cut_keeps_state() -> Result<()> {
    let lab = Lab::new("fedcut")?;
    let swa = lab.switch("swa")?;
    let swb = lab.switch("swb")?;
    let ea = lab.host("ea")?;
    let eb = lab.host("eb")?;
    let ma = lab.host("ma")?;
    lab.attach(&ea, &["192.0.2.11/24"], &swa)?;
    lab.attach(&eb, &["198.51.100.11/24"], &swb)?;
    lab.attach(&ma, &["192.0.2.20/24"], &swa)?;
    let remote_link = lab.attach(&ma, &["198.51.100.20/24"], &swb)?;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let etcd_a = EtcdCluster::start(&[(&ea, ip("192.0.2.11"))])?;
    let etcd_b = EtcdCluster::start(&[(&eb, ip("198.51.100.11"))])?;

    let mirrored = |r: &NodeRecord| r.key().replace("/clusters/", "/mirror/");
    let json = |r: &NodeRecord| String::from_utf8(r.encode()).unwrap();
    let (g1, g2, gx) = (
        node("green", "g1", "198.51.100.101"),
        node("green", "g2", "198.51.100.102"),
        node("green", "gx", "198.51.100.109"),
    );
    for r in [&g1, &g2] {
        etcd_b.put(0, &r.key(), &json(r))?;
    }
    // Left by an earlier mirror: g1, g2 and gx (since gone from green), no synced marker.
    for r in [&g1, &g2, &gx] {
        etcd_a.put(0, &mirrored(r), &json(r))?;
    }

    run_in(&ma, async {
        let local = KvStore::connect(&kv_config(&etcd_a))
            .await
            .expect("red etcd");
        let view = MergedView::spawn(
            local.clone(),
            name("red"),
            [name("green")],
            Duration::from_millis(300),
            None,
        );
        assert!(
            view.wait_until(Duration::from_secs(10), |s| node_names(s, "green")
                == set(&["g1", "g2", "gx"]))
                .await
        );
        assert!(view.with(|s| !s.is_synced(&name("green"))));
        // A mirrored entry vanishes before the marker exists: the view keeps it.
        local.delete(&mirrored(&g2)).await.unwrap();
        assert!(
            view.wait_until(Duration::from_secs(5), |s| s.held() == 1)
                .await
        );
        assert_eq!(
            view.with(|s| node_names(s, "green")),
            set(&["g1", "g2", "gx"])
        );

        // The mirror starts while green is unreachable: stale, nothing deleted.
        remote_link.cut().expect("cut");
        let m1 = MirrorController::spawn(
            local.clone(),
            MirrorConfig {
                local: name("red"),
                remote: name("green"),
                remote_etcd: kv_config(&etcd_b),
                candidate: "red-m1".into(),
                lease_ttl_secs: TTL_SECS,
                probe_interval: Duration::from_millis(300),
                trust: None,
            },
        );
        assert!(
            view.wait_until(Duration::from_secs(10), |s| s
                .mirror_status(&name("green"))
                .is_some_and(|st| st.stale && st.leader == "red-m1"))
                .await,
            "not marked stale"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st = m1.status();
        assert_eq!(st.role, MirrorRole::Leader);
        assert_eq!((st.puts, st.deletes), (0, 0), "{st:?}");
        assert_eq!(
            view.with(|s| node_names(s, "green")),
            set(&["g1", "g2", "gx"])
        );

        // Green is back: only the differences are written, then the marker.
        remote_link.restore().expect("restore");
        let t = Instant::now();
        assert!(
            view.wait_until(Duration::from_secs(20), |s| {
                s.is_synced(&name("green"))
                    && node_names(s, "green") == set(&["g1", "g2"])
                    && s.mirror_status(&name("green")).is_some_and(|st| !st.stale)
            })
            .await,
            "not synced: {:?}",
            view.nodes()
        );
        // The mirror counts a batch after its write returns; the view may see the write first.
        tokio::time::timeout(
            Duration::from_secs(5),
            m1.watch_status().wait_for(|s| s.syncs >= 1),
        )
        .await
        .expect("the mirror never counted its sync")
        .unwrap();
        let st = m1.status();
        eprintln!(
            "started while cut: synced {:?} after the restore, {} put(s), {} delete(s)",
            t.elapsed(),
            st.puts,
            st.deletes
        );
        assert_eq!(
            (st.puts, st.deletes),
            (1, 1),
            "g2 put back, gx deleted: {st:?}"
        );
        assert_eq!(view.with(|s| s.held()), 0);
        m1.resign().await;
    });
    Ok(())
}
