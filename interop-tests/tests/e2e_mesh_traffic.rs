//! The two-cluster lab (`interop_tests::mesh`), traffic stories; each test builds its own lab.
//!
//! - pod to pod across clusters: over the routes bgpd learned from the ToRs, through
//!   WireGuard (the device's counters grow; the ToR link carries UDP to the WireGuard port and
//!   no plain pod packet), and app=other denied by blue web's policy with a drop in blue/n1's
//!   flow records (`ironctl observe`);
//! - `e2e_observe_*`: the relay (any meshd, `observe.relay`) merges every node's flows of both
//!   clusters: a denied cross-cluster connect shows on red/n1's relay within 1 s with both
//!   pods' names and clusters and the reason; a node whose meshd stops is reported while the
//!   others' flows keep coming;
//! - the global service fails over from the local backends to the remote cluster's when the
//!   local pods are deleted (CNI DEL), and back when they are added again;
//! - the LoadBalancer VIP: ECMP at the BIRD ToR, both nodes answer the external client, each
//!   flow translated by the datapath of the node it reached (its conntrack entry: external, to
//!   that node's web pod; no VIP address and no nftables NAT on any node); a node whose last
//!   backend pod is deleted withdraws the VIP within 1 s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use datapath::lb::Proto;
use interop_tests::cmd::wait_for;
use interop_tests::mesh::services::{self, LB_PORT, LB_VIP, WEB_VIP};
use interop_tests::mesh::{APP_PORT, Bins, MeshLab, Side, WG_PORT, probe};

fn start(name: &str) -> MeshLab {
    MeshLab::start(name, Bins::build().unwrap()).unwrap()
}

/// Asks `dst` from `from` until the answer satisfies `ok`, polling every 50 ms; the time it
/// took. Fails after `limit`.
fn until(
    from: &interop_tests::Host,
    dst: SocketAddr,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut last = Err(String::from("not asked"));
    while start.elapsed() < limit {
        last = probe::ask(from, dst);
        if last.as_deref().is_ok_and(&ok) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{dst} not as expected within {limit:?}: last {last:?}");
}

#[test]
fn e2e_mesh_pod_to_pod_across_clusters_encrypted_over_bgp_routes() {
    let mesh = start("e2e_mesh_p2p");
    eprintln!("lab up in {:?}", mesh.startup);
    let (red1, blue1) = (mesh.red.node("n1"), mesh.blue.node("n1"));
    // The other cluster's PodCIDRs and segment are in each node's kernel, learned over BGP
    // (via its ToR, bgpd's protocol 201).
    for (node, remote, tor) in [
        (red1, &mesh.blue, "192.0.2.1"),
        (blue1, &mesh.red, "198.51.100.1"),
    ] {
        let mut want: Vec<String> = remote
            .nodes
            .iter()
            .map(|n| n.pod_cidr.to_string())
            .collect();
        let [a, b, c, _] = remote.nodes[0].ip.octets();
        want.push(format!("{a}.{b}.{c}.0/24"));
        for prefix in want {
            let r = node.host.ip(&["route", "show", "exact", &prefix]).unwrap();
            assert!(
                r.contains(&format!("via {tor}")) && r.contains("proto 201"),
                "{}/{}: {prefix}: {r:?}",
                node.cluster,
                node.name
            );
        }
    }

    let client = mesh.pod(Side::Red, "n1", "client");
    let webs: Vec<_> = mesh.blue.pods("web").collect();
    let link_if = "eth0"; // the red ToR's first link: the one to the blue ToR
    let cap = probe::Capture::start(mesh.red_tor.host(), link_if, "p2p").unwrap();
    let tx = red1.wg_tx_bytes().unwrap();
    for web in &webs {
        for _ in 0..5 {
            let a = probe::ask(&client.host, web.addr());
            assert_eq!(a.as_deref(), Ok(web.answer().as_str()), "to {}", web.ip);
        }
        let ping = client
            .host
            .ping(&web.ip.to_string(), 5, Duration::from_millis(50))
            .unwrap();
        assert_eq!(ping.received, 5, "ping {}: {ping:?}", web.ip);
    }
    let sent = red1.wg_tx_bytes().unwrap() - tx;
    cap.stop().unwrap();
    // 20 TCP exchanges and 10 echo requests, each at least one encrypted packet of >= 32 bytes
    // of WireGuard overhead plus the inner packet.
    assert!(sent >= 30 * 80, "WireGuard sent only {sent} bytes");
    let wg = cap.packets(&format!("udp port {WG_PORT}")).unwrap();
    let plain = cap.packets("net 10.0.0.0/8").unwrap();
    assert!(
        wg.len() >= 30,
        "{} WireGuard packets on the ToR link",
        wg.len()
    );
    assert!(
        plain.is_empty(),
        "plain pod packets on the ToR link: {plain:?}"
    );
    // The WireGuard packets go between the node addresses.
    assert!(
        wg.iter()
            .any(|l| l.contains("192.0.2.11.") && l.contains("198.51.100.1")),
        "{wg:?}"
    );

    // app=other is denied by blue web's policy; blue/n1's flow records say why (ironctl
    // observe on blue/n1, whose meshd reads its datapath's events).
    let other = mesh.pod(Side::Red, "n2", "other");
    let web = mesh.pod(Side::Blue, "n1", "web");
    assert!(
        probe::ask(&other.host, web.addr()).is_err(),
        "app=other reached blue web"
    );
    let from = format!("default/red-n2-{}", other.name);
    let drop = wait_for(
        "the drop in blue/n1's flows",
        Duration::from_secs(5),
        Duration::from_millis(50),
        |last| {
            let (flows, _) = mesh.observe(blue1, &["--verdict", "DROPPED", "--from-pod", &from])?;
            *last = format!("{flows:?}");
            Ok(flows.into_iter().last())
        },
    )
    .unwrap();
    assert_eq!(drop.reason, "policy-default-deny", "{drop:?}");
    assert_eq!(
        (
            drop.source.identity,
            drop.destination.identity,
            drop.destination.ip,
            drop.destination.port
        ),
        (other.identity, web.identity, IpAddr::V4(web.ip), APP_PORT),
        "the remote source's identity comes from the IP cache meshd programmed"
    );
    assert_eq!(drop.source.cluster.as_deref(), Some("red"), "{drop:?}");
    assert_eq!(
        probe::ask(&client.host, web.addr()).as_deref(),
        Ok(web.answer().as_str()),
        "app=client still admitted"
    );
}

/// `ironctl observe --mesh -o json ARGS` through `node`'s relay, following: the first flow
/// line within `limit`, and ironctl's stderr so far.
fn follow_first(
    mesh: &MeshLab,
    node: &interop_tests::mesh::Node,
    args: &[&str],
    act: impl FnOnce(),
    limit: Duration,
) -> Option<common::flows::Flow> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(&mesh.bins.ironctl)
        .args(["observe", "--mesh", "-f", "-o", "json", "--meshd"])
        .arg(&node.api)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The relay connects to every node first.
    std::thread::sleep(Duration::from_millis(500));
    act();
    let got = rx.recv_timeout(limit).ok();
    let _ = child.kill();
    let _ = child.wait();
    got.map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
}

/// The relay: any meshd (here red/n1's) merges the flows of every node of both clusters.
#[test]
fn e2e_observe_relay_shows_a_cross_cluster_drop_with_both_pods_and_reports_a_stopped_node() {
    let mesh = start("e2e_observe");
    let red1 = mesh.red.node("n1");
    let other = mesh.pod(Side::Red, "n2", "other");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let from = format!("default/red-n2-{}", other.name);
    let to = format!("default/blue-n1-{}", web.name);
    let args = [
        "--mesh",
        "--verdict",
        "DROPPED",
        "--from-pod",
        &from,
        "--to-pod",
        &to,
    ];

    // A denied connect from red to blue: on red/n1's relay within 1 s, both ends named.
    let start = Instant::now();
    let (drop, took) = std::thread::scope(|s| {
        let asker = s.spawn(|| probe::ask(&other.host, web.addr()));
        let drop = wait_for(
            "the cross-cluster drop on red/n1's relay",
            Duration::from_secs(1),
            Duration::from_millis(20),
            |last| {
                let (flows, err) = mesh.observe(red1, &args)?;
                *last = format!("{flows:?} {err}");
                Ok(flows.into_iter().last())
            },
        );
        let took = start.elapsed();
        assert!(asker.join().unwrap().is_err(), "app=other reached blue web");
        (drop.unwrap(), took)
    });
    eprintln!("cross-cluster drop on the relay {took:?} after the connect started");
    assert_eq!(
        (drop.cluster.as_str(), drop.node.as_str()),
        ("blue", "n1"),
        "{drop:?}"
    );
    assert_eq!(drop.reason, "policy-default-deny", "{drop:?}");
    assert_eq!(drop.direction.as_deref(), Some("ingress"), "{drop:?}");
    for (end, pod, cluster, node, app) in [
        (&drop.source, &from, "red", "n2", "other"),
        (&drop.destination, &to, "blue", "n1", "web"),
    ] {
        assert_eq!(end.pod.as_deref(), Some(pod.as_str()), "{drop:?}");
        assert_eq!(end.cluster.as_deref(), Some(cluster), "{drop:?}");
        assert_eq!(end.node.as_deref(), Some(node), "{drop:?}");
        assert_eq!(
            end.labels.get("app").map(String::as_str),
            Some(app),
            "{drop:?}"
        );
    }
    // Filters by where it was observed.
    let (in_red, _) = mesh
        .observe(red1, &[&args[..], &["--cluster", "red"]].concat())
        .unwrap();
    assert!(in_red.is_empty(), "observed in blue, not red: {in_red:?}");
    let (on_n1, _) = mesh
        .observe(
            red1,
            &[&args[..], &["--cluster", "blue", "--node", "n1"]].concat(),
        )
        .unwrap();
    assert!(!on_n1.is_empty());
    // Without --mesh: red/n1's own flows only (the drop happened on blue/n1).
    let (own, _) = mesh.observe(red1, &args[1..]).unwrap();
    assert!(own.is_empty(), "red/n1 did not see it: {own:?}");

    // blue/n2's meshd stops: the relay names it and the others' flows keep coming, listed
    // and followed.
    let blue2 = mesh.blue.node("n2");
    blue2.meshd.terminate();
    let (flows, err) = mesh.observe(red1, &args).unwrap();
    assert!(!flows.is_empty(), "the other nodes' flows are still listed");
    assert!(
        err.contains("node blue/n2 (198.51.100.12:4244)"),
        "the stopped node is named: {err}"
    );
    let followed = follow_first(
        &mesh,
        red1,
        &args[1..],
        || {
            let _ = probe::ask(&other.host, web.addr());
        },
        Duration::from_secs(3),
    )
    .expect("a new drop followed through the relay while blue/n2 is down");
    assert_eq!(followed.source.pod.as_deref(), Some(from.as_str()));
}

/// deploy/grafana/ironmesh.json names only metrics the lab exposes: every query's `meshd_*`
/// and `bgp_*` names are found in a real scrape of every node's meshd and bgpd (both
/// clusters, encryption on, remotes mirrored, BGP to the ToRs), after the lab caused a policy
/// drop and an allowed verdict, which show in blue/n1's counters, and handshakes, which show
/// in every node's encryption gauges.
#[test]
fn e2e_metrics_grafana_dashboard_queries_name_metrics_the_lab_exposes() {
    use interop_tests::scrape;
    let mesh = start("e2e_metrics_dash");
    let blue1 = mesh.blue.node("n1");
    let other = mesh.pod(Side::Red, "n2", "other");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let meshd_at = "127.0.0.1:9464";
    let bgpd_at = "127.0.0.1:9179";
    let drops = "meshd_datapath_drops_total{reason=\"policy-default-deny\",direction=\"ingress\"}";
    let allowed = "meshd_datapath_policy_verdicts_total{reason=\"allowed\",direction=\"ingress\"}";
    let before = scrape::get(&blue1.host, meshd_at).unwrap();
    assert!(
        probe::ask(&other.host, web.addr()).is_err(),
        "app=other reached blue web"
    );
    probe::ask(&client.host, web.addr()).expect("app=client is admitted");
    let after = wait_for(
        "blue/n1's drop and verdict counters moved",
        Duration::from_secs(5),
        Duration::from_millis(100),
        |last| {
            let t = scrape::get(&blue1.host, meshd_at)?;
            let moved = scrape::sample(&t, drops) > scrape::sample(&before, drops)
                && scrape::sample(&t, allowed) > scrape::sample(&before, allowed);
            *last = t.clone();
            Ok(moved.then_some(t))
        },
    )
    .unwrap();
    assert!(
        scrape::sample(&after, "meshd_encryption_peers_handshaked") >= 1.0,
        "blue/n1 has handshaked peers: {after}"
    );

    let mut exposed = BTreeSet::new();
    for n in mesh.nodes() {
        exposed.extend(scrape::names(&scrape::get(&n.host, meshd_at).unwrap()));
        exposed.extend(scrape::names(&scrape::get(&n.host, bgpd_at).unwrap()));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/ironmesh.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut named = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names: Vec<String> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("meshd_") || w.starts_with("bgp_"))
                .map(String::from)
                .collect();
            assert!(
                !names.is_empty(),
                "panel {}: {expr} names no metric",
                p["title"]
            );
            named.extend(names);
        }
    }
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the lab does not expose: {missing:?}\nexposed: {exposed:?}"
    );
    eprintln!(
        "{} metric names in the dashboard, all exposed by the lab",
        named.len()
    );
}

/// meshd's flows page (`observe.ui`, red/n1 relaying both clusters) in a real headless
/// Chromium: the service map shows red's `other` and blue's `web` with a red (denied) edge
/// between them and the allowed one from `client`; the flow table lists the drop; a
/// screenshot is saved as target/observe-page.png.
#[test]
fn e2e_observe_page_shows_the_service_map_with_a_denied_edge_in_chromium() {
    use interop_tests::scrape;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed: run scripts/setup (Debian package chromium)");
    let mesh = start("e2e_observe_page");
    let red1 = mesh.red.node("n1");
    let other = mesh.pod(Side::Red, "n2", "other");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n1", "web");
    assert!(probe::ask(&other.host, web.addr()).is_err());
    probe::ask(&client.host, web.addr()).expect("app=client is admitted");
    // The page's data has the drop before the browser looks.
    wait_for(
        "the drop in the page's data",
        Duration::from_secs(5),
        Duration::from_millis(100),
        |last| {
            let body = scrape::http_get(&red1.host, "127.0.0.1:4245", "/flows.json")?;
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                interop_tests::LabError::Invalid(format!("/flows.json: {e}: {body}"))
            })?;
            *last = body.clone();
            Ok(v["flows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["verdict"] == "DROPPED" && f["source"]["labels"]["app"] == "other")
                .then_some(()))
        },
    )
    .unwrap();

    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("observe-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = mesh.dir().join("chromium-profile");
    let browse = |extra: &[String]| -> String {
        let out = std::process::Command::new("timeout")
            .args(["60", "ip", "netns", "exec", red1.host.netns(), chromium])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
                "--window-size=1100,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg("http://127.0.0.1:4245/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom".to_string()]);
    for want in [
        "data-name=\"red/other\"",
        "data-name=\"blue/web\"",
        "data-name=\"red/client\"",
        "class=\"edge denied\" data-from=\"red/other\" data-to=\"blue/web\"",
        "class=\"edge\" data-from=\"red/client\" data-to=\"blue/web\"",
        "<td>DROPPED</td>",
    ] {
        assert!(dom.contains(want), "{want} not on the page:\n{dom}");
    }
    browse(&[format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!(
        "screenshot of the flows page: {} ({size} bytes)",
        shot.display()
    );
}

#[test]
fn e2e_mesh_global_service_fails_over_to_the_remote_cluster() {
    let mesh = start("e2e_mesh_global");
    let client = mesh.pod(Side::Red, "n1", "client");
    let vip: SocketAddr = (WEB_VIP, APP_PORT).into();
    // Affinity local: red's backends only.
    for _ in 0..6 {
        let a = probe::ask(&client.host, vip).unwrap();
        assert!(a.starts_with("red/") && a.ends_with("/web"), "{a}");
    }
    // Red's web pods are deleted (CNI DEL, as a runtime deletes them): their backends go by
    // themselves and blue answers (cross-cluster, through the tunnel). No record is edited.
    for n in &mesh.red.nodes {
        n.delete_pod(&mesh.bins.cni, "web").unwrap();
    }
    let took = until(&client.host, vip, Duration::from_secs(10), |a| {
        a.starts_with("blue/")
    });
    eprintln!("failover to blue {took:?} after red's web pods were deleted");
    assert!(took < Duration::from_secs(2), "failover took {took:?}");
    let mut answered = BTreeSet::new();
    for _ in 0..8 {
        let a = probe::ask(&client.host, vip).unwrap();
        assert!(a.starts_with("blue/") && a.ends_with("/web"), "{a}");
        answered.insert(a);
    }
    eprintln!("answered by {answered:?}");
    // They come back (CNI ADD again): local again.
    for n in &mesh.red.nodes {
        n.readd_pod(&mesh.bins.cni, "web").unwrap();
    }
    let took = until(&client.host, vip, Duration::from_secs(10), |a| {
        a.starts_with("red/")
    });
    eprintln!("back to red {took:?} after the pods were added again");
    for _ in 0..4 {
        let a = probe::ask(&client.host, vip).unwrap();
        assert!(a.starts_with("red/"), "{a}");
    }
}

#[test]
fn e2e_mesh_vip_ecmp_at_the_tor_and_withdraw_within_1s() {
    let mesh = start("e2e_mesh_vip");
    let red1 = Ipv4Addr::new(192, 0, 2, 11);
    let red2 = Ipv4Addr::new(192, 0, 2, 12);
    let mut hops = mesh.red_tor.vip_next_hops().unwrap();
    hops.sort();
    assert_eq!(
        hops,
        vec![red1, red2],
        "one ECMP path per node with a backend"
    );
    // Nothing but the datapath translates the VIP: no node has it as an address or NATs it.
    for n in mesh.nodes() {
        let found = services::stand_ins(n).unwrap();
        assert!(found.is_empty(), "{}/{}: {found:?}", n.cluster, n.name);
    }
    let vip: SocketAddr = (LB_VIP, LB_PORT).into();
    let mut per_node = BTreeMap::<String, u32>::new();
    for i in 0..16 {
        let mut flow = probe::Flow::open(&mesh.client, vip).unwrap();
        let answer = flow.ask().unwrap();
        // Exactly one red node's datapath translated it: its external entry, its own web pod.
        let mut by = Vec::new();
        for n in &mesh.red.nodes {
            if let Some(f) = services::vip_flow(n, flow.local).unwrap() {
                by.push((n, f));
            }
        }
        assert_eq!(by.len(), 1, "flow {i} from {}: {by:?}", flow.local);
        let (n, f) = &by[0];
        let web = mesh.pod(Side::Red, &n.name, "web");
        assert_eq!(
            answer,
            web.answer(),
            "flow {i}: answered by the node's own pod"
        );
        assert_eq!(f.backend, web.addr(), "flow {i}: DNAT to the local pod");
        assert!(f.external && f.external_id != 0, "flow {i}: {f:?}");
        assert_eq!(f.svc_id, f.external_id, "flow {i}: the external entry's");
        *per_node.entry(answer).or_default() += 1;
    }
    eprintln!("16 connections from the external client: {per_node:?}");
    assert_eq!(
        per_node.keys().collect::<Vec<_>>(),
        ["red/n1/web", "red/n2/web"],
        "16 connections from the external client over both paths"
    );
    // Blue has no LoadBalancer service: no external entry there.
    for n in &mesh.blue.nodes {
        let ext =
            n.dp.with(|d| {
                d.external_service(IpAddr::V4(LB_VIP), LB_PORT, Proto::Tcp)
                    .map_err(|e| interop_tests::LabError::Invalid(e.to_string()))
            })
            .unwrap();
        assert_eq!(ext, None, "blue/{}", n.name);
    }

    // red/n2's only backend, its web pod, is deleted (CNI DEL): n2 withdraws the VIP, the ToR
    // keeps n1's path.
    let start = Instant::now();
    mesh.red
        .node("n2")
        .delete_pod(&mesh.bins.cni, "web")
        .unwrap();
    let hops = mesh.wait_vip_paths(1, Duration::from_secs(5)).unwrap();
    let took = start.elapsed();
    eprintln!("VIP path of red/n2 gone from the ToR's kernel {took:?} after its pod's DEL");
    assert_eq!(hops, vec![red1]);
    assert!(took < Duration::from_secs(1), "withdraw took {took:?}");
    for _ in 0..8 {
        assert_eq!(probe::ask(&mesh.client, vip).as_deref(), Ok("red/n1/web"));
    }
    // The pod is back: both paths again.
    mesh.red
        .node("n2")
        .readd_pod(&mesh.bins.cni, "web")
        .unwrap();
    mesh.wait_vip_paths(2, Duration::from_secs(5)).unwrap();

    // The service is deleted with ironctl: the VIP is withdrawn at the ToR and freed in etcd.
    let api = mesh.red.node("n1").api.display().to_string();
    let start = Instant::now();
    let out = mesh
        .ironctl(&["delete", "svc", "front", "--meshd", &api])
        .unwrap();
    assert_eq!(out.trim(), "service/front deleted");
    mesh.wait_vip_paths(0, Duration::from_secs(5)).unwrap();
    let took = start.elapsed();
    eprintln!("VIP withdrawn from the ToR {took:?} after ironctl delete");
    assert!(took < Duration::from_secs(2), "withdraw took {took:?}");
    let key = format!("ironmesh/v1/clusters/{}/ipam/vips/{LB_VIP}", mesh.red.name);
    assert_eq!(
        mesh.red.etcd.get(0, &key).unwrap(),
        None,
        "the VIP is freed"
    );
    let pools = mesh.ironctl(&["get", "ippool", "--meshd", &api]).unwrap();
    let row: Vec<&str> = pools.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["red-public", "LoadBalancer", "203.0.113.0/28", "0", "14"],
        "{pools}"
    );
}

/// A BGPAdvertisement applied with `ironctl apply` decides what red's nodes announce to the
/// ToR (BIRD) and with which attributes: a Service-only advertisement withdraws the PodCIDRs
/// and tags the VIP; adding a PodCIDR advertisement brings them back tagged; deleting both
/// restores the implicit default (everything, bare).
#[test]
fn e2e_apply_bgp_advertisement_sets_what_the_tor_gets_and_delete_restores_the_default() {
    use interop_tests::route::BgpRoute;
    let mesh = start("e2e_apply_bgpadv");
    let api = mesh.red.nodes[0].api.display().to_string();
    let vip: ipnet::IpNet = format!("{LB_VIP}/32").parse().unwrap();
    let pod_cidrs: Vec<ipnet::IpNet> = mesh
        .red
        .nodes
        .iter()
        .map(|n| ipnet::IpNet::V4(n.pod_cidr))
        .collect();
    let route = |rs: &[BgpRoute], p: &ipnet::IpNet| rs.iter().find(|r| r.prefix == *p).cloned();
    // Until `ok` holds for the routes of both red nodes at the ToR.
    let wait = |what: &str, ok: &dyn Fn(usize, &[BgpRoute]) -> bool| {
        let t = Instant::now();
        let mut last = Vec::new();
        while t.elapsed() < Duration::from_secs(10) {
            last = (0..2)
                .map(|i| mesh.red_tor.routes_from_node(i).unwrap())
                .collect::<Vec<_>>();
            if last.iter().enumerate().all(|(i, r)| ok(i, r)) {
                eprintln!("{what}: {:?}", t.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not within 10 s; the ToR has {last:#?}");
    };
    let bare = |r: Option<BgpRoute>| {
        r.is_some_and(|r| r.communities.is_empty() && r.large_communities.is_empty())
    };
    wait("the default: PodCIDRs and the VIP, bare", &|i, rs| {
        bare(route(rs, &pod_cidrs[i])) && bare(route(rs, &vip))
    });

    let file = mesh.dir().join("bgpadv.yaml");
    let service_only = r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata: {name: vips}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP]}
    selector: {matchLabels: {io.kubernetes.service.name: front}}
    attributes:
      communities: {standard: ["64512:200"], large: ["64512:2:10"]}
"#;
    std::fs::write(&file, service_only).unwrap();
    let f = file.display().to_string();
    let out = mesh.ironctl(&["apply", "--meshd", &api, "-f", &f]).unwrap();
    assert!(
        out.contains("bgpadvertisement.ironmesh.io/vips created"),
        "{out}"
    );
    let tagged = |r: Option<BgpRoute>| {
        r.is_some_and(|r| {
            r.communities == [(64512, 200)] && r.large_communities == [(64512, 2, 10)]
        })
    };
    wait(
        "Service only: the VIP tagged, the PodCIDRs withdrawn",
        &|i, rs| tagged(route(rs, &vip)) && route(rs, &pod_cidrs[i]).is_none(),
    );

    let pods = r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata: {name: pods}
spec:
  advertisements:
  - advertisementType: PodCIDR
    attributes:
      communities: {standard: ["64512:100"]}
"#;
    let pf = mesh.dir().join("bgpadv-pods.yaml");
    std::fs::write(&pf, pods).unwrap();
    mesh.ironctl(&["apply", "--meshd", &api, "-f", &pf.display().to_string()])
        .unwrap();
    wait(
        "a PodCIDR advertisement: the PodCIDRs back, tagged",
        &|i, rs| {
            tagged(route(rs, &vip))
                && route(rs, &pod_cidrs[i]).is_some_and(|r| r.communities == [(64512, 100)])
        },
    );
    let listed = mesh.ironctl(&["get", "--meshd", &api, "bgpadv"]).unwrap();
    assert!(
        listed.contains("Service(io.kubernetes.service.name=front)") && listed.contains("PodCIDR"),
        "{listed}"
    );
    // Traffic from outside still reaches the VIP meanwhile.
    let vip_addr: SocketAddr = (LB_VIP, LB_PORT).into();
    assert!(
        probe::ask(&mesh.client, vip_addr)
            .unwrap()
            .starts_with("red/")
    );

    mesh.ironctl(&["delete", "--meshd", &api, "bgpadvertisement", "vips"])
        .unwrap();
    mesh.ironctl(&["delete", "--meshd", &api, "bgpadv", "pods"])
        .unwrap();
    wait("no BGPAdvertisement: the default again", &|i, rs| {
        bare(route(rs, &pod_cidrs[i])) && bare(route(rs, &vip))
    });
}

/// An `IPPool` of type PodCIDR applied with `ironctl`, chosen by a Namespace's labels
/// (multi-pool IPAM): red n1's first pod of that namespace makes the CNI ask meshd for a
/// block (/29: five pods), the pool's pods fill it and the node takes a second block (the CNI
/// asking, or meshd ahead of it), the node record lists both (so the ToR gets both, the other
/// node of red and blue's node route to them): a pod in the second block is answered from
/// red n2 and from blue. A pod of `default` still gets the config pool's address;
/// `ironctl get ippool` shows the blocks in use and which node holds them; the pool cannot
/// be deleted while a node holds blocks of it.
#[test]
fn e2e_apply_pod_cidr_pool_by_namespace_grows_a_node_and_the_mesh_routes_it() {
    use interop_tests::mesh::probe::ask;
    let mesh = start("e2e_podpool");
    let red1 = &mesh.red.nodes[0];
    let api = red1.api.display().to_string();
    let file = mesh.dir().join("podpool.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: tenant-a, labels: {tier: tenant}}
---
apiVersion: ironmesh.io/v1
kind: IPPool
metadata: {name: tenants}
spec:
  type: PodCIDR
  cidrs: [10.11.0.0/24]
  nodeMaskSize: {ipv4: 29}
  namespaceSelector: {matchLabels: {tier: tenant}}
"#,
    )
    .unwrap();
    let out = mesh
        .ironctl(&["apply", "--meshd", &api, "-f", &file.display().to_string()])
        .unwrap();
    assert!(out.contains("ippool.ironmesh.io/tenants created"), "{out}");
    // A pool overlapping the config's is refused, naming both.
    let bad = mesh.dir().join("bad-pool.yaml");
    std::fs::write(
        &bad,
        "apiVersion: ironmesh.io/v1\nkind: IPPool\nmetadata: {name: bad}\nspec: {type: PodCIDR, cidrs: [10.1.200.0/24]}\n",
    )
    .unwrap();
    let e = mesh
        .ironctl(&["apply", "--meshd", &api, "-f", &bad.display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.cidrs[0]: Invalid value: \"10.1.200.0/24\": overlaps 10.1.0.0/16 of mesh.pod_cidr_pools"),
        "{e}"
    );

    let file_for_cni = red1.cni_dir.join("mesh/pod-cidrs.json");
    wait_for(
        "the CNI file naming the pool's namespace",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |last| {
            *last = std::fs::read_to_string(&file_for_cni).unwrap_or_default();
            Ok(last.contains(r#""namespaces":["tenant-a"]"#).then_some(()))
        },
    )
    .unwrap();
    let conf = interop_tests::cni::conf_from_meshd(&red1.cni_dir, 1400, &[("app", "tenant")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ips = Vec::new();
    let mut hosts = Vec::new();
    for k in 0..6 {
        let h = mesh.lab.host(&format!("red-n1-t{k}")).unwrap();
        let t = Instant::now();
        let (ip, _) = interop_tests::cni::add_in(
            &mesh.bins.cni,
            &red1.host,
            &h,
            &format!("tenant-{k}"),
            "tenant-a",
            &conf,
        )
        .unwrap();
        eprintln!("tenant pod {k}: {ip} in {:?}", t.elapsed());
        ips.push(ip);
        hosts.push(h);
    }
    let first: ipnet::Ipv4Net = "10.11.0.0/29".parse().unwrap();
    let second: ipnet::Ipv4Net = "10.11.0.8/29".parse().unwrap();
    assert!(ips[..5].iter().all(|ip| first.contains(ip)), "{ips:?}");
    assert!(
        second.contains(&ips[5]),
        "the sixth pod is in the second block: {ips:?}"
    );
    // A pod of another namespace: the config's pool (the node's /24 of 10.1.0.0/16).
    let dh = mesh.lab.host("red-n1-d0").unwrap();
    let (dip, _) =
        interop_tests::cni::add_in(&mesh.bins.cni, &red1.host, &dh, "plain-0", "default", &conf)
            .unwrap();
    assert!(
        red1.pod_cidr.contains(&dip),
        "{dip} outside {}",
        red1.pod_cidr
    );

    // Status: two blocks used of 32, both n1's.
    let pool = || -> serde_json::Value {
        serde_json::from_str(
            &mesh
                .ironctl(&["get", "ippool", "tenants", "--meshd", &api, "-o", "json"])
                .unwrap(),
        )
        .unwrap()
    };
    let got = pool();
    assert_eq!(got["status"]["used"], 2, "{got}");
    assert_eq!(got["status"]["total"], 32, "{got}");
    assert_eq!(
        got["status"]["nodes"]["n1"],
        serde_json::json!(["10.11.0.0/29", "10.11.0.8/29"]),
        "{got}"
    );
    let e = mesh
        .ironctl(&["delete", "ippool", "tenants", "--meshd", &api])
        .unwrap_err()
        .to_string();
    assert!(e.contains("still has 2 node block(s)"), "{e}");

    // The mesh routes the new block: the ToR has it from n1, and red n2 and blue reach the pod.
    let block: ipnet::IpNet = "10.11.0.8/29".parse().unwrap();
    // Whether the ToR has `block` from n1 is `want` (what it has goes into the report).
    let tor = &mesh.red_tor;
    let tor_has = |want: bool| {
        move |last: &mut String| {
            let routes = tor.routes_from_node(0)?;
            *last = format!("{routes:?}");
            Ok((routes.iter().any(|r| r.prefix == block) == want).then_some(()))
        }
    };
    wait_for(
        "the ToR getting the new block from n1",
        Duration::from_secs(10),
        Duration::from_millis(100),
        tor_has(true),
    )
    .unwrap();
    probe::serve(&hosts[5], "tenant-5".into(), stop.clone()).unwrap();
    let dst = SocketAddr::new(IpAddr::V4(ips[5]), APP_PORT);
    let from_red = until(
        &mesh.pod(Side::Red, "n2", "other").host,
        dst,
        Duration::from_secs(10),
        |a| a == "tenant-5",
    );
    let from_blue = until(
        &mesh.pod(Side::Blue, "n1", "web").host,
        dst,
        Duration::from_secs(10),
        |a| a == "tenant-5",
    );
    eprintln!("the grown block's pod answered red n2 after {from_red:?}, blue after {from_blue:?}");
    assert!(ask(&mesh.pod(Side::Red, "n2", "other").host, dst).is_ok());

    // describe tells what happened, as kubectl's events: the blocks n1 took, and the lab's
    // LoadBalancer service its addresses (applied through red's meshd at start).
    let d = mesh
        .ironctl(&["describe", "ippool", "tenants", "--meshd", &api])
        .unwrap();
    assert!(
        d.contains("Node Blocks:") && d.contains("n1: 10.11.0.0/29 10.11.0.8/29"),
        "{d}"
    );
    for want in [
        "node n1 took 10.11.0.0/29 (IPv4 block: ",
        "node n1 took 10.11.0.8/29 (IPv4 block: ",
    ] {
        assert!(
            d.lines().any(|l| l.contains("Normal")
                && l.contains("BlockAllocated")
                && l.contains("meshd/n1")
                && l.contains(want)),
            "{want}: {d}"
        );
    }
    let d = mesh
        .ironctl(&["describe", "svc", "front", "--meshd", &api])
        .unwrap();
    assert!(
        d.lines().any(|l| l.contains("Normal")
            && l.contains("IPAllocated")
            && l.contains(&format!("Assigned IP [\"{LB_VIP}\"]"))),
        "{d}"
    );
    assert!(d.lines().any(|l| l.contains("ClusterIPAllocated")), "{d}");

    // The second block's only pod goes, and two of the first block's: the first block alone
    // has room above its low water now, so after mesh.pod_cidr_block_idle (2 s in the lab)
    // and the drain (15 s, for an ADD that read the file before) n1 gives the second block
    // back: out of its record, withdrawn at the ToR, free in etcd. The first block stays.
    // (With the first block full the second stays: that is checked by the unit tests.)
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for k in [5, 4, 3] {
        interop_tests::cni::del(
            &mesh.bins.cni,
            &red1.host,
            &hosts[k],
            &format!("tenant-{k}"),
            &conf,
        )
        .unwrap();
    }
    let t = Instant::now();
    let after = wait_for(
        "the idle block going back",
        Duration::from_secs(40),
        Duration::from_millis(250),
        |last| {
            let p = pool();
            *last = p.to_string();
            Ok((p["status"]["used"] == 1).then_some(p))
        },
    )
    .unwrap();
    eprintln!("the idle block went back after {:?}", t.elapsed());
    assert_eq!(
        after["status"]["nodes"]["n1"],
        serde_json::json!(["10.11.0.0/29"])
    );
    wait_for(
        "the ToR withdrawing the given-back block",
        Duration::from_secs(10),
        Duration::from_millis(100),
        tor_has(false),
    )
    .unwrap();
    let d = mesh
        .ironctl(&["describe", "ippool", "tenants", "--meshd", &api])
        .unwrap();
    assert!(
        d.lines()
            .any(|l| l.contains("BlockReleased") && l.contains("node n1 gave 10.11.0.8/29 back")),
        "{d}"
    );
    // The pods of the first block are untouched: one still answers from red n2.
    let stop0 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    probe::serve(&hosts[0], "tenant-0".into(), stop0.clone()).unwrap();
    until(
        &mesh.pod(Side::Red, "n2", "other").host,
        SocketAddr::new(IpAddr::V4(ips[0]), APP_PORT),
        Duration::from_secs(10),
        |a| a == "tenant-0",
    );
    stop0.store(true, std::sync::atomic::Ordering::Relaxed);
}
