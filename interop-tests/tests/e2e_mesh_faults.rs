//! The two-cluster lab (`interop_tests::mesh`) under faults; each test builds its own lab.
//!
//! - the BIRD ToR crashes and restarts: BGP reconverges, cross-cluster and VIP traffic return;
//! - the FRR ToR's daemons (bgpd, zebra) crash and restart with the same config: its sessions
//!   to both blue nodes and to BIRD re-establish, it relearns every PodCIDR and the VIP, and
//!   cross-cluster pod traffic through it returns (time to traffic back printed);
//! - red's etcd leader is killed: requests keep flowing, every red meshd is connected to the
//!   survivors within 4 s (its watch on the dead member fails first), and a service change
//!   written afterwards still takes effect;
//! - red is cut off from blue's whole etcd: cross-cluster traffic to known endpoints keeps
//!   flowing, `ironctl mesh status` says blue is stale, and it recovers when restored;
//! - meshd crashes and restarts, then stops gracefully and restarts (its node record is kept
//!   through a stop): an established cross-cluster TCP flow keeps answering all along.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use interop_tests::cmd::wait_for;
use interop_tests::mesh::services::{LB_PORT, LB_VIP, WEB_VIP};
use interop_tests::mesh::{APP_PORT, Bins, MeshLab, Node, Side, T, TorKind, probe};
use serde_json::Value;

fn start(name: &str) -> MeshLab {
    MeshLab::start(name, Bins::build().unwrap()).unwrap()
}

/// Asks `dst` from `from` every 50 ms until answered; the time it took (fails after `limit`).
fn until_answered(from: &interop_tests::Host, dst: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = probe::ask(from, dst);
        if r.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{dst} unanswered for {limit:?}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on a new connection, everything within 300 ms (so a lost SYN is seen fast).
fn ask_quick(from: &interop_tests::Host, dst: SocketAddr) -> bool {
    let t = Duration::from_millis(300);
    from.in_netns(|| {
        let mut s = TcpStream::connect_timeout(&dst, t).ok()?;
        s.set_read_timeout(Some(t)).ok()?;
        s.write_all(b"who").ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then_some(())
    })
    .is_ok_and(|r| r.is_some())
}

/// Runs `f` while asking `dst` from `from` every 50 ms ([`ask_quick`]), and after it until one
/// request is answered; `f`'s result and each request's (time sent, answered).
fn asking_during<T>(
    from: &interop_tests::Host,
    dst: SocketAddr,
    f: impl FnOnce() -> T,
) -> (T, Vec<(Instant, bool)>) {
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    let called = Instant::now();
    std::thread::scope(|s| {
        let asker = s.spawn(|| {
            let mut asked: Vec<(Instant, bool)> = Vec::new();
            while called.elapsed() < 3 * T {
                // Once `f` is done, until one answer is seen: `f` may have seen the traffic back
                // between two of these asks.
                if done.load(Ordering::Relaxed) && asked.last().is_some_and(|a| a.1) {
                    break;
                }
                let t = Instant::now();
                asked.push((t, ask_quick(from, dst)));
                std::thread::sleep(Duration::from_millis(50));
            }
            asked
        });
        let guard = Done(&done);
        let r = f();
        drop(guard);
        (r, asker.join().expect("the asking thread"))
    })
}

fn mesh_status(mesh: &MeshLab, n: &Node) -> Value {
    let api = n.api.display().to_string();
    let out = mesh
        .ironctl(&["mesh", "--meshd", &api, "-o", "json", "status"])
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn e2e_mesh_tor_restart_bgp_reconverges_and_traffic_returns() {
    let mesh = start("e2e_mesh_tor");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n2", "web");
    let vip: SocketAddr = (LB_VIP, LB_PORT).into();
    assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
    assert!(probe::ask(&mesh.client, vip).is_ok());

    let start = Instant::now();
    mesh.red_tor.crash_and_restart().unwrap();
    mesh.red_tor.wait_sessions(T).unwrap();
    eprintln!(
        "BIRD sessions Established {:?} after the crash",
        start.elapsed()
    );
    let took = until_answered(&client.host, web.addr(), T);
    eprintln!("cross-cluster pod traffic back {took:?} later");
    let took = until_answered(&mesh.client, vip, T);
    eprintln!("the VIP answers the external client {took:?} later");
    mesh.wait_vip_paths(2, T).unwrap();
    // The routes are BGP's again on every red node (learned from the restarted ToR).
    for n in &mesh.red.nodes {
        for b in &mesh.blue.nodes {
            let r = n
                .host
                .ip(&["route", "show", "exact", &b.pod_cidr.to_string()])
                .unwrap();
            assert!(
                r.contains("via 192.0.2.1") && r.contains("proto 201"),
                "{r}"
            );
        }
    }
    for _ in 0..5 {
        assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
    }
}

#[test]
fn e2e_mesh_frr_tor_restart_sessions_routes_and_traffic_return() {
    let mesh = start("e2e_mesh_frr");
    let client = mesh.pod(Side::Red, "n1", "client");
    let webs: Vec<_> = mesh.blue.pods("web").collect();
    for w in &webs {
        assert_eq!(probe::ask(&client.host, w.addr()), Ok(w.answer()));
    }
    let tor = &mesh.blue_tor;
    let TorKind::Frr(frr) = &tor.kind else {
        panic!("the blue ToR is not FRR")
    };
    let zebra = frr.zebra.as_ref().expect("the blue ToR runs zebra");
    let before = (frr.bgpd.pid().unwrap(), zebra.pid().unwrap());

    // Asked all along from before the kill, every 50 ms: when the traffic is back.
    let (start, asked) = asking_during(&client.host, webs[0].addr(), || {
        std::thread::sleep(Duration::from_millis(300)); // asked before the kill too
        let start = Instant::now();
        tor.crash_and_restart().unwrap();
        let after = (frr.bgpd.pid().unwrap(), zebra.pid().unwrap());
        assert!(
            after.0 != before.0 && after.1 != before.1,
            "bgpd and zebra are new processes: {before:?} -> {after:?}"
        );
        eprintln!(
            "FRR bgpd and zebra back {:?} after the kill",
            start.elapsed()
        );
        // Both blue nodes and the BIRD ToR.
        tor.wait_sessions(T).unwrap();
        let sessions = start.elapsed();
        for n in &mesh.blue.nodes {
            let state = frr.neighbor_state(IpAddr::V4(n.ip)).unwrap();
            assert_eq!(state, "Established", "FRR's session to blue/{}", n.name);
        }
        eprintln!("FRR sessions Established {sessions:?} after the kill");
        // Every PodCIDR (blue's from its nodes, red's through BIRD) and the VIP, in FRR's kernel.
        let mut want: Vec<String> = mesh.nodes().map(|n| n.pod_cidr.to_string()).collect();
        want.push(LB_VIP.to_string());
        tor.wait_kernel_routes(&want, T).unwrap();
        eprintln!(
            "FRR's kernel has every PodCIDR and the VIP {:?} after the kill",
            start.elapsed()
        );
        for w in &webs {
            until_answered(&client.host, w.addr(), T);
        }
        eprintln!(
            "both blue web pods answer {:?} after the kill",
            start.elapsed()
        );
        start
    });
    // Times from the kill of the requests sent after it.
    let after: Vec<(Duration, bool)> = asked
        .iter()
        .filter_map(|(t, ok)| Some((t.checked_duration_since(start)?, *ok)))
        .collect();
    let failed: Vec<Duration> = after.iter().filter(|a| !a.1).map(|a| a.0).collect();
    let back = after
        .iter()
        .find(|a| a.1 && failed.last().is_none_or(|l| a.0 > *l))
        .map(|a| a.0);
    eprintln!(
        "FRR ToR restart: {} requests red/n1/client -> blue/n1/web after the kill, {} failed \
         (sent from {:?} to {:?}); traffic back (first answered after the last failure) {back:?} \
         after the kill",
        after.len(),
        failed.len(),
        failed.first(),
        failed.last(),
    );
    assert!(
        asked.iter().any(|(t, ok)| *t < start && *ok),
        "answered before the kill: {asked:?}"
    );
    let back = back.unwrap_or_else(|| panic!("no answer after the last failure: {after:?}"));
    assert!(back < T, "traffic back after {back:?}");
    // The routes are BGP's again on every blue node (learned from the restarted ToR).
    for n in &mesh.blue.nodes {
        for r in &mesh.red.nodes {
            let route = n
                .host
                .ip(&["route", "show", "exact", &r.pod_cidr.to_string()])
                .unwrap();
            assert!(
                route.contains("via 198.51.100.1") && route.contains("proto 201"),
                "{}: {route}",
                n.name
            );
        }
    }
    for w in &webs {
        for _ in 0..5 {
            assert_eq!(probe::ask(&client.host, w.addr()), Ok(w.answer()));
        }
    }
    assert!(probe::ask(&mesh.client, (LB_VIP, LB_PORT).into()).is_ok());
}

#[test]
fn e2e_mesh_etcd_leader_killed_nothing_noticed() {
    let mesh = start("e2e_mesh_etcd1");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let leader = mesh.red.etcd.wait_leader(T).unwrap();
    mesh.red.etcd.members[leader].process.kill();
    let killed = Instant::now();
    // For 6 s: every request answered. meshd's watch on the killed member fails and meshd
    // reports its etcd as not connected until the client moved to another member: bounded.
    let mut asked = 0;
    let mut last_down = None;
    while killed.elapsed() < Duration::from_secs(6) {
        assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
        asked += 1;
        for n in &mesh.red.nodes {
            let s = mesh_status(&mesh, n);
            assert_eq!(s["registered"], true, "{}: {s}", n.name);
            if s["etcd_connected"] != true {
                last_down = Some(killed.elapsed());
                eprintln!("{} at {:?}: {}", n.name, killed.elapsed(), s["etcd_error"]);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("red meshd last saw its etcd down at {last_down:?} after the kill");
    assert!(
        last_down.is_none_or(|t| t < Duration::from_secs(4)),
        "a red meshd still disconnected {last_down:?} after the kill"
    );
    eprintln!("{asked} requests answered while e{leader} was down");
    // The surviving members elect a leader; a change made now still takes effect: red's web
    // pods are deleted (their endpoint records go through the surviving members), the global
    // service fails over to blue.
    mesh.red.etcd.wait_leader(T).unwrap();
    for n in &mesh.red.nodes {
        n.delete_pod(&mesh.bins.cni, "web").unwrap();
    }
    let vip: SocketAddr = (WEB_VIP, APP_PORT).into();
    wait_for(
        "the global service answered by blue",
        Duration::from_secs(10),
        Duration::from_millis(100),
        |last| {
            let a = probe::ask(&client.host, vip);
            *last = format!("{a:?}");
            Ok(a.is_ok_and(|a| a.starts_with("blue/")).then_some(()))
        },
    )
    .unwrap();
    mesh.red.etcd.members[leader].process.restart().unwrap();
    mesh.red.etcd.wait_healthy(leader, T).unwrap();
}

#[test]
fn e2e_mesh_remote_etcd_cut_off_goes_stale_traffic_flows_then_recovers() {
    let mesh = start("e2e_mesh_etcdcut");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n2", "web");
    let red1 = mesh.red.node("n1");
    let remote = |s: &Value| s["remotes"][0].clone();
    assert_eq!(remote(&mesh_status(&mesh, red1))["connected"], true);

    // Blue's whole etcd unreachable from red (dropped at the red ToR, both ways).
    let tor = mesh.red_tor.host();
    let rules = tor.path("cut.nft");
    std::fs::write(
        &rules,
        "table inet cut {\n chain cut_etcd {\n  type filter hook forward priority 0; policy accept;\n  \
         ip daddr 198.51.100.21-198.51.100.23 tcp dport 2379 drop\n  \
         ip saddr 198.51.100.21-198.51.100.23 tcp sport 2379 drop\n }\n}\n",
    )
    .unwrap();
    tor.exec("nft", &["-f", &rules.display().to_string()])
        .unwrap();
    let cut = Instant::now();
    let stale = wait_for(
        "blue stale at red/n1",
        T,
        Duration::from_millis(200),
        |last| {
            let s = mesh_status(&mesh, red1);
            *last = s.to_string();
            // Traffic to known endpoints keeps flowing all along.
            assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
            Ok((remote(&s)["stale"] == true).then_some(s))
        },
    )
    .unwrap();
    eprintln!("blue stale after {:?}: {}", cut.elapsed(), remote(&stale));
    assert_eq!(remote(&stale)["name"], "blue");
    assert_eq!(remote(&stale)["nodes"], 2, "the last known nodes are kept");
    for _ in 0..10 {
        assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = mesh
        .ironctl(&["mesh", "--meshd", &red1.api.display().to_string(), "status"])
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("blue") && l.contains("stale")),
        "{text}"
    );

    tor.exec("nft", &["delete", "table", "inet", "cut"])
        .unwrap();
    let restored = Instant::now();
    wait_for(
        "blue connected again",
        T,
        Duration::from_millis(200),
        |last| {
            let s = remote(&mesh_status(&mesh, red1));
            *last = s.to_string();
            Ok((s["connected"] == true && s["stale"] == false).then_some(()))
        },
    )
    .unwrap();
    eprintln!("blue connected {:?} after the restore", restored.elapsed());
    assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
}

#[test]
fn e2e_mesh_meshd_crash_and_graceful_restart_established_flow_survives() {
    let mesh = start("e2e_mesh_meshd");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let red1 = mesh.red.node("n1");
    let mut flow = probe::Flow::open(&client.host, web.addr()).unwrap();
    assert_eq!(flow.ask(), Ok(web.answer()));
    red1.meshd.kill();
    for _ in 0..5 {
        assert_eq!(flow.ask(), Ok(web.answer()), "while meshd is down");
        std::thread::sleep(Duration::from_millis(100));
    }
    red1.meshd.restart().unwrap();
    let restarted = Instant::now();
    wait_for("meshd back", T, Duration::from_millis(200), |_| {
        let api = red1.api.display().to_string();
        Ok(mesh
            .ironctl(&["mesh", "--meshd", &api, "-o", "json", "status"])
            .ok()
            .filter(|s| s.contains("\"registered\": true")))
    })
    .unwrap();
    // The same connection, during and after meshd's resync.
    while restarted.elapsed() < Duration::from_secs(4) {
        assert_eq!(flow.ask(), Ok(web.answer()), "the flow after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    red1.wait_encrypted(&mesh.bins.ironctl, 3, T).unwrap();
    assert_eq!(flow.ask(), Ok(web.answer()));
    assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));

    // A graceful restart, as in an upgrade: meshd keeps its node record on the way out
    // (`mesh.deregister_on_stop` is off), so the other nodes change nothing and the same
    // connection answers all along.
    red1.meshd.terminate();
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(1) {
        assert_eq!(flow.ask(), Ok(web.answer()), "while meshd is stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    red1.meshd.restart().unwrap();
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(4) {
        assert_eq!(flow.ask(), Ok(web.answer()), "after a graceful restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    red1.wait_encrypted(&mesh.bins.ironctl, 3, T).unwrap();
    assert_eq!(probe::ask(&client.host, web.addr()), Ok(web.answer()));
}

/// `default/web`'s backends in `node`'s datapath (its ClusterIP entry), 0 when none.
fn web_backends(node: &Node) -> u16 {
    node.dp
        .with(|d| {
            d.service(IpAddr::V4(WEB_VIP), APP_PORT, datapath::lb::Proto::Tcp)
                .map_err(|e| interop_tests::LabError::Invalid(e.to_string()))
        })
        .unwrap()
        .map_or(0, |s| s.backend_count)
}

/// A node dies (meshd SIGKILLed, its uplink cut): nothing edits a service, yet its pods'
/// backends leave every other node's datapath within the lease TTL (its endpoint records
/// expire with its leases), and the ToR moves the LoadBalancer VIP to the remaining node
/// when the dead node's BGP session times out.
#[test]
fn e2e_backends_dead_node_leaves_within_the_lease_ttl_and_the_vip_moves() {
    let mesh = start("e2e_backends_node");
    let (n1, n2) = (mesh.red.node("n1"), mesh.red.node("n2"));
    let client = mesh.pod(Side::Red, "n1", "client");
    let vip: SocketAddr = (WEB_VIP, APP_PORT).into();
    assert_eq!(web_backends(n1), 2, "red's two web pods (affinity local)");
    mesh.wait_vip_paths(2, T).unwrap();

    n2.meshd.kill();
    n2.host.ip(&["link", "set", "eth0", "down"]).unwrap();
    let dead = Instant::now();
    let gone = wait_for(
        "red/n2's web pod gone from red/n1's datapath",
        Duration::from_secs(15),
        Duration::from_millis(50),
        |last| {
            let n = web_backends(n1);
            *last = format!("{n} backends");
            Ok((n == 1).then(|| dead.elapsed()))
        },
    )
    .unwrap();
    eprintln!(
        "red/n2's backend left red/n1's datapath {gone:?} after the node died (lease TTL 4 s)"
    );
    assert!(
        gone < Duration::from_secs(5),
        "the backend of a dead node must go within the lease TTL (4 s) and a second: {gone:?}"
    );
    for _ in 0..6 {
        assert_eq!(
            probe::ask(&client.host, vip).as_deref(),
            Ok("red/n1/web"),
            "only the live node's pod serves"
        );
    }
    let hops = mesh.wait_vip_paths(1, Duration::from_secs(20)).unwrap();
    eprintln!(
        "the ToR's VIP path of red/n2 gone {:?} after the node died (BGP hold time 9 s)",
        dead.elapsed()
    );
    assert_eq!(hops, vec![std::net::Ipv4Addr::new(192, 0, 2, 11)]);
    assert_eq!(
        probe::ask(&mesh.client, (LB_VIP, LB_PORT).into()).as_deref(),
        Ok("red/n1/web"),
        "the external client reaches the VIP through the remaining node"
    );
}
