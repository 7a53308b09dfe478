//! meshd drives bgpd's adverts from what a user declares (issues 8 and 13): a BIRD ToR, one
//! node running a one-member etcd and the meshd binary ([`interop_tests::node1`], with
//! `mesh.bgpd_socket`), lab-bgpd, pods added by the real `ironmesh-cni`, the LoadBalancer pool
//! and services applied with `ironctl apply`. Nothing is written into etcd by hand; everything
//! is checked at the ToR, from BIRD's own CLI.
//!
//! - meshd starts before bgpd: it retries until bgpd's API answers, then the PodCIDR it
//!   allocated reaches BIRD;
//! - a LoadBalancer service gets its VIP from the IPPool; with no pod of its selector on this
//!   node it is not announced (`mesh.advertise_vips` = local-backends, the default); the CNI
//!   adds such a pod: announced; the CNI deletes it: BIRD loses the route within 1 s
//!   (measured from the CNI DEL);
//! - bgpd restarted (its API adverts are in memory only) while the pods change: meshd
//!   resyncs and bgpd holds exactly meshd's adverts;
//! - meshd restarted while a pod goes: the PodCIDR is never withdrawn meanwhile, the VIP the
//!   old meshd left is.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use interop_tests::bgpd::{BgpdConfig, BgpdPeer};
use interop_tests::node1::Node1;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);
const VIP: &str = "203.0.113.10";
const VIP2: &str = "203.0.113.11";

const POOL_AND_WEB: &str = r#"
apiVersion: ironmesh.io/v1
kind: IPPool
metadata:
  name: public
spec:
  cidrs: [203.0.113.0/28]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: LoadBalancer
  loadBalancerIP: 203.0.113.10
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: app
"#;

const API: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
spec:
  type: LoadBalancer
  loadBalancerIP: 203.0.113.11
  selector: {app: api}
  ports:
  - name: http
    port: 80
    targetPort: app
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Polls BIRD every 20 ms until `pred` holds for the routes from `proto`; the time it took
/// since `start`.
fn time_until(
    bird: &Bird,
    proto: &str,
    start: Instant,
    limit: Duration,
    pred: impl Fn(&[BgpRoute]) -> bool,
) -> Duration {
    let mut last = Vec::new();
    for _ in 0..1000 {
        last = bird.routes_from(proto).unwrap();
        if pred(&last) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("after {:?}, BIRD still has {last:?}", start.elapsed());
}

#[test]
fn e2e_bgp_adverts_podcidr_vip_withdraw_and_bgpd_restart() -> Result<()> {
    // meshd first: bgpd is not there yet, so meshd must retry.
    let f1 = Node1::start_with("e2e_bgp_adverts", &["192.0.2.1/24"], &|node| {
        format!("bgpd_socket = {:?}", node.path("bgpd.sock"))
    })?;
    let (tor_h, node_h, meshd) = (&f1.tor, &f1.node, &f1.meshd);
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101));
    let bird = Bird::start(tor_h, &bc)?;
    let pod_cidr = f1.pod_cidr()?;
    assert!(
        pod_cidr.to_string().starts_with("10.244.") && pod_cidr.prefix_len() == 24,
        "{pod_cidr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    f1.alive()?;

    let bgpd_conf =
        BgpdConfig::new(65101, "192.0.2.2").peer(BgpdPeer::new("tor", "192.0.2.1", 65000));
    let bgpd = Bgpd::start(node_h, &bgpd_conf.render())?;
    assert_eq!(
        bgpd.api,
        node_h.path("bgpd.sock"),
        "bgpd's API socket is where meshd looks"
    );
    bird.wait_established("node", T)?;
    let started = Instant::now();
    let pc = pod_cidr.to_string();
    let routes = bird.wait_routes("node", T, |r| find(r, &pc).is_some())?;
    eprintln!(
        "PodCIDR {pc} at BIRD {:?} after the session came up",
        started.elapsed()
    );
    let r = find(&routes, &pc).unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.as_path, vec![65101]);

    // The pool and a LoadBalancer service without a pod: the VIP is allocated, not announced.
    let out = f1.apply("web.yaml", POOL_AND_WEB);
    assert_eq!(
        out.trim(),
        "ippool.ironmesh.io/public created\nservice/web created",
        "{out}"
    );
    let vip32 = format!("{VIP}/32");
    cmd::wait_for("the VIP allocated", T, Duration::from_millis(50), |last| {
        *last = f1.ok(&["get", "svc", "web", "-n", "shop", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(last).unwrap();
        Ok((v["status"]["loadBalancer"]["ingress"][0]["ip"] == VIP).then_some(()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let now = bird.routes_from("node")?;
    assert!(
        find(&now, &vip32).is_none(),
        "VIP announced without a local backend: {now:?}"
    );
    assert!(find(&now, &pc).is_some());

    // A pod of the service on this node: the VIP appears.
    let start = Instant::now();
    let web1 = f1.add_pods(&[("web1", "shop", "web")])?.remove(0);
    let took = time_until(&bird, "node", start, Duration::from_secs(10), |r| {
        find(r, &vip32).is_some()
    });
    eprintln!("VIP announced at BIRD {took:?} after the CNI ADD of its first pod");
    let r = find(&bird.routes_from("node")?, &vip32).cloned().unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));

    // The node's last pod of the service goes: withdrawn within 1 s.
    let start = Instant::now();
    f1.del_pod(&web1.0, "web1", "web")?;
    let took = time_until(&bird, "node", start, Duration::from_secs(5), |r| {
        find(r, &vip32).is_none()
    });
    eprintln!("VIP withdrawn at BIRD {took:?} after the CNI DEL of the node's last pod");
    assert!(
        took < Duration::from_secs(1),
        "withdraw took {took:?}; must be under 1 s"
    );
    assert!(
        find(&bird.routes_from("node")?, &pc).is_some(),
        "the PodCIDR stays"
    );

    // bgpd restarts; it keeps API adverts in memory only, and BIRD (graceful-restart aware
    // by default) keeps bgpd's routes as stale until bgpd's End-of-RIB. While bgpd is down
    // the desired state changes: web loses its pod, api (another VIP) gains one. After the
    // restart, bgpd's own Loc-RIB holds exactly meshd's resynced adverts, and BIRD converges
    // to them (the stale VIP goes, the PodCIDR and the new VIP are there).
    let web2 = f1.add_pods(&[("web2", "shop", "web")])?.remove(0);
    bird.wait_routes("node", T, |r| find(r, &vip32).is_some())?;
    bgpd.process.terminate();
    f1.del_pod(&web2.0, "web2", "web")?;
    let vip2_32 = format!("{VIP2}/32");
    assert_eq!(f1.apply("api.yaml", API).trim(), "service/api created");
    let api1 = f1.add_pods(&[("api1", "shop", "api")])?.remove(0);
    std::thread::sleep(Duration::from_millis(500));
    bgpd.process.restart()?;
    let restarted = Instant::now();
    let local = bgpd.wait_routes(api::bgp::RibKind::Loc, "", T, |r| {
        r.len() == 2 && find(r, &pc).is_some() && find(r, &vip2_32).is_some()
    })?;
    eprintln!(
        "after the bgpd restart, meshd's adverts back in bgpd's Loc-RIB in {:?}: {local:?}",
        restarted.elapsed()
    );
    let back = bird.wait_routes("node", T, |r| {
        r.len() == 2 && find(r, &vip2_32).is_some() && find(r, &pc).is_some()
    })?;
    eprintln!(
        "BIRD converged to meshd's adverts {:?} after the restart",
        restarted.elapsed()
    );
    assert!(find(&back, &vip32).is_none(), "{back:?}");
    f1.alive()?;
    let log = std::fs::read_to_string(meshd.log_path()).unwrap_or_default();
    assert!(
        log.matches("bgpd adverts resynced").count() >= 2,
        "meshd resynced once per bgpd: {}",
        meshd.log_tail(3000)
    );

    // meshd restarts while api's pod goes (the CNI DEL runs while meshd is down). The new
    // meshd must never withdraw the PodCIDR meanwhile (its desired state is incomplete until
    // the view is listed), and must withdraw the VIP the old meshd left at bgpd (its ledger).
    meshd.terminate();
    f1.del_pod(&api1.0, "api1", "api")?;
    meshd.restart()?;
    let restarted = Instant::now();
    let mut polls = 0;
    loop {
        let r = bird.routes_from("node")?;
        polls += 1;
        assert!(
            find(&r, &pc).is_some(),
            "the PodCIDR was withdrawn while meshd restarted ({:?} in): {r:?}\n{}",
            restarted.elapsed(),
            meshd.log_tail(3000)
        );
        if find(&r, &vip2_32).is_none() {
            break;
        }
        assert!(
            restarted.elapsed() < T,
            "the restarted meshd left the stale VIP {vip2_32}: {r:?}\n{}",
            meshd.log_tail(3000)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "meshd restart: stale VIP withdrawn after {:?}, PodCIDR kept throughout ({polls} polls)",
        restarted.elapsed()
    );
    // Still there a little later (no late flap).
    std::thread::sleep(Duration::from_secs(1));
    let r = bird.routes_from("node")?;
    assert!(find(&r, &pc).is_some() && r.len() == 1, "{r:?}");
    Ok(())
}
