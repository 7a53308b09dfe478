//! meshd drives bgpd's adverts (issue 8, wiring): a BIRD ToR, one node running a one-member
//! etcd, the meshd binary (with `mesh.bgpd_socket`) and lab-bgpd. Everything is checked at the
//! ToR, from BIRD's own CLI.
//!
//! - meshd starts before bgpd: it retries until bgpd's API answers, then the PodCIDR it
//!   allocated reaches BIRD;
//! - a LoadBalancer VIP (LB-IPAM key) whose service has an active backend on this node is
//!   announced; when the node's last backend goes, BIRD loses the route within 1 s (measured);
//! - bgpd restarted (its API adverts are in memory only): meshd resyncs and the routes return.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use interop_tests::bgpd::{self, BgpdConfig, BgpdPeer};
use interop_tests::mesh::services::tcp_record;
use interop_tests::route::find;
use interop_tests::*;
use ironmesh_meshd::lbipam::VipValue;
use ironmesh_meshd::schema::{Key, Resource};
use ironmesh_meshd::services::{BackendState, ServiceRecord};

const T: Duration = Duration::from_secs(30);
const VIP: &str = "203.0.113.10";
const NODE: &str = "n1";
const CLUSTER: &str = "red";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Builds meshd with the profile of this test binary; returns its path.
fn build_meshd() -> PathBuf {
    bgpd::build_binaries(&[("ironmesh-meshd", "meshd")])
        .unwrap()
        .remove(0)
}

/// The service `shop/web` of red with the VIP and one backend per (node, state).
fn service(backends: &[(&str, BackendState)]) -> ServiceRecord {
    let backends = backends
        .iter()
        .enumerate()
        .map(|(i, (node, state))| (ip(&format!("10.1.0.{}", i + 10)), 8080, *node, *state));
    tcp_record("shop/web", CLUSTER, ip(VIP), 80, backends)
}

fn put_service(etcd: &EtcdCluster, s: &ServiceRecord) {
    etcd.put(0, &s.key(), std::str::from_utf8(&s.encode()).unwrap())
        .unwrap();
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
    let meshd_bin = build_meshd();
    let lab = Lab::new("e2e_bgp_adverts")?;
    let tor_h = lab.host("tor")?;
    let node_h = lab.host("node")?;
    lab.link(&tor_h, &["192.0.2.1/24"], &node_h, &["192.0.2.2/24"])?;

    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    bc.peers
        .push(BirdPeer::new("node", 65000, ip("192.0.2.2"), 65101));
    let bird = Bird::start(&tor_h, &bc)?;
    let etcd = EtcdCluster::start(&[(&node_h, ip("192.0.2.2"))])?;

    // meshd first: bgpd is not there yet, so meshd must retry.
    let bgpd_sock = node_h.path("bgpd.sock");
    let state = node_h.path("meshd-state");
    let conf = node_h.path("meshd.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"{NODE}\"\ncluster = \"{CLUSTER}\"\nstate_dir = {state:?}\n\n\
             [mesh]\netcd_endpoints = [\"{}\"]\ncluster_id = 1\nlease_ttl = 4\n\
             node_ipv4 = \"192.0.2.2\"\nbgpd_socket = {bgpd_sock:?}\n\
             pod_cidr_pools = [{{ cidr = \"10.1.0.0/16\", node_mask = 24 }}]\n",
            etcd.endpoints()
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "--config",
        &conf.display().to_string(),
        "--api",
        &node_h.path("meshd.sock").display().to_string(),
        "--log",
        "info,ironmesh_meshd=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let meshd = node_h.spawn("meshd", &meshd_bin.display().to_string(), &args)?;
    // Wait until meshd registered (its PodCIDR is in etcd) and tried bgpd at least once.
    let cidr_key = format!("ironmesh/v1/clusters/{CLUSTER}/ipam/podcidrs-by-node/{NODE}");
    let cidr = interop_tests::cmd::wait_for(
        "meshd's PodCIDR in etcd",
        T,
        Duration::from_millis(200),
        |_| etcd.get(0, &cidr_key),
    )?;
    let pod_cidr: ipnet::IpNet = serde_json::from_str::<serde_json::Value>(&cidr).unwrap()["cidrs"]
        [0]
    .as_str()
    .unwrap_or_else(|| panic!("unexpected podcidrs-by-node value {cidr}"))
    .parse()
    .unwrap();
    assert!(
        pod_cidr.to_string().starts_with("10.1.") && pod_cidr.prefix_len() == 24,
        "{pod_cidr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(3000));

    let bgpd_conf =
        BgpdConfig::new(65101, "192.0.2.2").peer(BgpdPeer::new("tor", "192.0.2.1", 65000));
    let bgpd = Bgpd::start(&node_h, &bgpd_conf.render())?;
    assert_eq!(
        bgpd.api, bgpd_sock,
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

    // A LoadBalancer VIP (as LB-IPAM writes it) of a service with no backend here: not
    // announced. A backend on another node does not count either.
    let vip_key = Key::cluster(&CLUSTER.parse().unwrap(), Resource::Vip(ip(VIP))).to_string();
    let vip_val = VipValue {
        service: "shop/web".parse().unwrap(),
        pool: "203.0.113.0/28".parse().unwrap(),
    };
    etcd.put(0, &vip_key, &serde_json::to_string(&vip_val).unwrap())?;
    put_service(&etcd, &service(&[("n2", BackendState::Active)]));
    let vip32 = format!("{VIP}/32");
    std::thread::sleep(Duration::from_secs(1));
    let now = bird.routes_from("node")?;
    assert!(
        find(&now, &vip32).is_none(),
        "VIP announced without a local backend: {now:?}"
    );
    assert!(find(&now, &pc).is_some());

    // An active backend on this node: the VIP appears.
    let start = Instant::now();
    put_service(
        &etcd,
        &service(&[("n2", BackendState::Active), (NODE, BackendState::Active)]),
    );
    let took = time_until(&bird, "node", start, Duration::from_secs(10), |r| {
        find(r, &vip32).is_some()
    });
    eprintln!("VIP announced at BIRD {took:?} after the service was written");
    let r = find(&bird.routes_from("node")?, &vip32).cloned().unwrap();
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));

    // The node's last backend goes (another node still has one): withdrawn within 1 s.
    let start = Instant::now();
    put_service(
        &etcd,
        &service(&[
            ("n2", BackendState::Active),
            (NODE, BackendState::Terminating),
        ]),
    );
    let took = time_until(&bird, "node", start, Duration::from_secs(5), |r| {
        find(r, &vip32).is_none()
    });
    eprintln!("VIP withdrawn at BIRD {took:?} after the node's last backend went");
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
    // the desired state changes: shop/web loses its local backend, shop/api (another VIP)
    // gains one. After the restart, bgpd's own Loc-RIB holds exactly meshd's resynced adverts,
    // and BIRD converges to them (the stale VIP goes, the PodCIDR and the new VIP are there).
    put_service(&etcd, &service(&[(NODE, BackendState::Active)]));
    bird.wait_routes("node", T, |r| find(r, &vip32).is_some())?;
    bgpd.process.terminate();
    put_service(&etcd, &service(&[("n2", BackendState::Active)]));
    let vip2 = "203.0.113.11";
    let vip2_32 = format!("{vip2}/32");
    let mut api_svc = service(&[(NODE, BackendState::Active)]);
    api_svc.service = "shop/api".parse().unwrap();
    api_svc.vips = vec![ip(vip2)];
    put_service(&etcd, &api_svc);
    let vip2_key = Key::cluster(&CLUSTER.parse().unwrap(), Resource::Vip(ip(vip2))).to_string();
    let vip2_val = VipValue {
        service: "shop/api".parse().unwrap(),
        pool: "203.0.113.0/28".parse().unwrap(),
    };
    etcd.put(0, &vip2_key, &serde_json::to_string(&vip2_val).unwrap())?;
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
    assert!(meshd.is_running(), "meshd died: {}", meshd.log_tail(3000));
    let log = std::fs::read_to_string(meshd.log_path()).unwrap_or_default();
    assert!(
        log.matches("bgpd adverts resynced").count() >= 2,
        "meshd resynced once per bgpd: {}",
        meshd.log_tail(3000)
    );

    // meshd restarts while shop/api loses its local backend. The new meshd must never
    // withdraw the PodCIDR meanwhile (its desired state is incomplete until the view is
    // listed), and must withdraw the VIP the old meshd left at bgpd (its ledger).
    meshd.terminate();
    let mut api_gone = api_svc.clone();
    api_gone.backends[0].node = Some("n2".parse().unwrap());
    put_service(&etcd, &api_gone);
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
