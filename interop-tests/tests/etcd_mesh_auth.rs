//! etcd auth between federated clusters against real etcd 3.4 in the lab (issue 7): each
//! cluster's meshd user writes only its own prefix (and its local mirrors); a remote cluster's
//! read-only user reads only the cluster's prefix. Proves that cluster red cannot write cluster
//! green's keys, neither in green's etcd (read-only credentials) nor in its own, and that the
//! mirror works with exactly these rights. Wrong or missing credentials fail clearly.
//!
//! Not covered: TLS (the etcd client is built without a TLS feature; see the report in
//! docs/etcd-schema.md "Security").

use std::net::IpAddr;
use std::time::Duration;

use common::ClusterName;
use interop_tests::*;
use ironmesh_meshd::federation::{MergedView, MirrorConfig, MirrorController};
use ironmesh_meshd::kvstore::auth::{
    AuthPlan, Outcome, Provisioned, meshd_user, provision, reader_user,
};
use ironmesh_meshd::kvstore::{KvConfig, KvError, KvStore};
use ironmesh_meshd::nodes::NodeRecord;
use ironmesh_meshd::schema::Scope;

fn name(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn cfg(etcd: &EtcdCluster, user: Option<(&str, &str)>) -> KvConfig {
    let mut c = KvConfig::new(etcd.members.iter().map(|m| m.client_url()));
    c.connect_timeout = Duration::from_secs(3);
    c.op_timeout = Duration::from_secs(2);
    c.user = user.map(|(u, p)| (u.to_string(), p.to_string()));
    c
}

fn node(cluster: &str, n: &str) -> NodeRecord {
    let mut r = NodeRecord::new(name(cluster), n.parse().unwrap());
    r.ipv4 = Some("192.0.2.200".parse().unwrap());
    r
}

fn denied(r: Result<(), KvError>, what: &str) {
    match r {
        Err(e @ KvError::PermissionDenied { .. }) => eprintln!("{what}: refused: {e}"),
        other => panic!("{what}: expected permission denied, got {other:?}"),
    }
}

#[test]
fn etcd_mesh_auth_clusters_write_only_their_own_prefix() -> Result<()> {
    let lab = Lab::new("mauth")?;
    let sw = lab.switch("sw")?;
    let er = lab.host("er")?;
    let eg = lab.host("eg")?;
    let m = lab.host("m")?;
    lab.attach(&er, &["192.0.2.11/24"], &sw)?;
    lab.attach(&eg, &["192.0.2.12/24"], &sw)?;
    lab.attach(&m, &["192.0.2.20/24"], &sw)?;
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let etcd_red = EtcdCluster::start(&[(&er, ip("192.0.2.11"))])?;
    let etcd_green = EtcdCluster::start(&[(&eg, ip("192.0.2.12"))])?;

    m.block_on(async {
        // Provision both clusters (no auth yet), then auth is on.
        for (etcd, cluster, other) in [(&etcd_red, "red", "green"), (&etcd_green, "green", "red")] {
            let s = KvStore::connect(&cfg(etcd, None)).await.expect("etcd");
            let plan = AuthPlan {
                cluster: name(cluster),
                root_password: "root-pw".into(),
                meshd_password: format!("{cluster}-pw"),
                readers: vec![(name(other), format!("{other}-reader-pw"))],
                rotate_passwords: false,
            };
            let first = provision(&s, &plan).await.expect("provision");
            assert_eq!(first.len(), 6, "{first:?}");
            assert!(
                first.iter().all(|p| p.outcome == Outcome::Created),
                "{first:?}"
            );
            // Idempotent: everything found, nothing made again.
            let again = KvStore::connect(&cfg(etcd, Some(("root", "root-pw"))))
                .await
                .unwrap();
            let second = provision(&again, &plan).await.expect("provision again");
            let names = |v: &[Provisioned]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&second), names(&first));
            assert!(
                second.iter().all(|p| p.outcome == Outcome::Unchanged),
                "{second:?}"
            );
        }
        assert_eq!(meshd_user(&name("red")), "red");
        assert_eq!(reader_user(&name("red")), "red-reader");

        // Missing and wrong credentials fail at start-up, clearly.
        let err = KvStore::connect(&cfg(&etcd_red, None)).await.unwrap_err();
        assert!(matches!(err, KvError::AuthRequired { .. }), "{err}");
        eprintln!("no user: {err}");
        let err = KvStore::connect(&cfg(&etcd_red, Some(("red", "nope"))))
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::Auth { .. }), "{err}");
        eprintln!("wrong password: {err}");

        let red = KvStore::connect(&cfg(&etcd_red, Some(("red", "red-pw"))))
            .await
            .expect("red");
        let green = KvStore::connect(&cfg(&etcd_green, Some(("green", "green-pw"))))
            .await
            .expect("green");
        // Red's user reads green's etcd as red-reader (probing inside green's prefix).
        let mut ro = cfg(&etcd_green, Some(("red-reader", "red-reader-pw")));
        ro.probe_prefix = Scope::Cluster(name("green")).prefix();
        let red_reading_green = KvStore::connect(&ro).await.expect("read-only user");

        // Each cluster writes its own node.
        let r1 = node("red", "r1");
        red.put(&r1.key(), r1.encode(), None)
            .await
            .expect("red writes its own prefix");
        let g1 = node("green", "g1");
        green
            .put(&g1.key(), g1.encode(), None)
            .await
            .expect("green writes its own prefix");

        // Red cannot write green's keys: not in green's etcd with its read-only user...
        let g_evil = node("green", "evil");
        denied(
            red_reading_green
                .put(&g_evil.key(), g_evil.encode(), None)
                .await,
            "red-reader puts into green's prefix",
        );
        denied(
            red_reading_green.delete(&g1.key()).await.map(drop),
            "red-reader deletes green's node",
        );
        let r_evil = node("red", "evil");
        denied(
            red_reading_green
                .put(&r_evil.key(), r_evil.encode(), None)
                .await,
            "red-reader puts red keys into green's etcd",
        );
        // ...nor green's prefix in its own etcd.
        denied(
            red.put(&g_evil.key(), g_evil.encode(), None).await,
            "red puts green keys into red's etcd",
        );
        // Green's user in green's etcd cannot write red's prefix either.
        denied(
            green.put(&r_evil.key(), r_evil.encode(), None).await,
            "green puts red keys into green's etcd",
        );
        // The read-only user reads green's prefix, and nothing else.
        assert!(red_reading_green.get(&g1.key()).await.unwrap().is_some());
        let err = red_reading_green
            .get("ironmesh/v1/mirror/red/synced")
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::PermissionDenied { .. }), "{err}");

        // Federation with exactly these rights: red's mirror reads green as red-reader and
        // writes red's mirror/green/ as red; the view sees green's node.
        let mirror = MirrorController::spawn(
            red.clone(),
            MirrorConfig {
                local: name("red"),
                remote: name("green"),
                remote_etcd: cfg(&etcd_green, Some(("red-reader", "red-reader-pw"))),
                candidate: "r1".into(),
                lease_ttl_secs: 2,
                probe_interval: Duration::from_millis(300),
                trust: None,
            },
        );
        let view = MergedView::spawn(
            red.clone(),
            name("red"),
            [name("green")],
            Duration::from_millis(300),
            None,
        );
        let ok = view
            .wait_until(Duration::from_secs(10), |s| {
                s.is_synced(&name("green")) && s.nodes().iter().any(|n| n.name.as_ref() == "g1")
            })
            .await;
        assert!(ok, "mirror under auth failed: {:?}", mirror.status());
        assert!(
            mirror.status().last_error.is_none(),
            "{:?}",
            mirror.status()
        );
        assert!(
            view.with(|s| s.nodes().iter().all(|n| n.name.as_ref() != "evil")),
            "no write of the other cluster's keys ever landed"
        );
        eprintln!("mirror under auth: green's node in red's view; no foreign write landed");
    })?;
    Ok(())
}
