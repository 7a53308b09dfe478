//! Resources applied with `ironctl apply` drive the node (issue 13): one node with a one-member
//! etcd, the meshd binary owning the datapath on a per-test pin root, `mesh.service_cidrs`
//! set, and pods added by the real `ironmesh-cni` (namespace `default`).
//!
//! - `e2e_apply_service_backends_follow_pods`: a Service manifest applied with
//!   `ironctl apply -f` gets a ClusterIP from the service CIDR (etcd transaction), `ironctl
//!   get svc` shows it as kubectl would, and the client pod reaching ClusterIP:80 is answered
//!   by both pods its selector matches (targetPort `app`: the pods' port of that name, 7000),
//!   never by the pod it does not match;
//!   applying the same file again is "unchanged". Under a steady request loop one backend
//!   is deleted with CNI DEL: no request started 1 s after the DEL reaches it (every one is
//!   answered by the other). A bad manifest is refused with every error's field path and
//!   nothing is written. `ironctl delete svc web` removes the service from the datapath
//!   within 1 s and frees the ClusterIP in etcd.
//!
//! Needs root, bpffs; builds meshd, ironctl and ironmesh-cni.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use interop_tests::datapath_lab::Stop;
use interop_tests::node1::{CLUSTER, Node1, POD_POOL, POD_PORT};
use interop_tests::*;

const T: Duration = Duration::from_secs(20);
const ONE_S: Duration = Duration::from_secs(1);
const PORT: u16 = POD_PORT;

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

/// One request from `pod` to `dst` with short timeouts: who answered.
fn ask(pod: &Host, dst: SocketAddr) -> Result<String, String> {
    pod.in_netns(move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(300))
            .map_err(|e| format!("connect {dst}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(b"who").map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  selector:
    app: web
  ports:
  - name: http
    protocol: TCP
    port: 80
    # The pods' container port named "app" (7000, from the CNI's runtimeConfig.ports).
    targetPort: app
"#;

const BAD: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: bad
spec:
  selector: {app: web}
  sessionAfinity: ClientIP
  ports:
  - name: http
    port: 80
    targetPort: Not_A_Port
  - port: 70000
"#;

#[test]
fn e2e_apply_service_backends_follow_pods() -> Result<()> {
    let f1 = Node1::start("e2e_apply", &["192.0.2.1/24"])?;
    let (node, etcd, cni) = (&f1.node, &f1.etcd, &f1.cni);
    let alive = || f1.alive().unwrap();
    let ctl = |args: &[&str]| f1.ctl(args);
    let ok = |args: &[&str]| f1.ok(args);
    // Pods: a client, two web pods, and a pod with other labels serving the same port.
    let pods = f1.add_pods(&[
        ("client", "default", "client"),
        ("web1", "default", "web"),
        ("web2", "default", "web"),
        ("other", "default", "other"),
    ])?;
    let stop = Stop::new();
    for (host, _) in &pods[1..] {
        tcp::who_server(host, PORT, stop.0.clone(), Duration::from_secs(120));
    }
    let (client, web1, web2, other) = (&pods[0].0, &pods[1].0, &pods[2].0, &pods[3].0);

    // Apply: created, ClusterIP from the service CIDR, shown like kubectl.
    let file = f1.file("web.yaml", WEB);
    let f = file.as_str();
    assert_eq!(ok(&["apply", "-f", f]).trim(), "service/web created");
    let got: serde_json::Value = serde_json::from_str(&ok(&["get", "svc", "web", "-o", "json"]))
        .expect("get -o json is JSON");
    let cip: Ipv4Addr = got["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        cip,
        Ipv4Addr::new(10, 96, 0, 1),
        "the first address of the CIDR"
    );
    assert!(
        etcd.get(
            0,
            &format!("ironmesh/v1/clusters/{CLUSTER}/ipam/clusterips/{cip}")
        )
        .unwrap()
        .is_some(),
        "the allocation is in etcd"
    );
    let table = ok(&["get", "svc"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["web", "ClusterIP", &cip.to_string(), "<none>", "80/TCP"],
        "{table}"
    );
    assert_eq!(ok(&["apply", "-f", f]).trim(), "service/web unchanged");

    // The client reaches both web pods through the ClusterIP, never the other pod.
    let vip = SocketAddr::new(IpAddr::V4(cip), 80);
    let mut seen = std::collections::BTreeSet::new();
    let took = within("both web pods answer on the ClusterIP", T, || {
        alive();
        if let Ok(who) = ask(client, vip) {
            assert_ne!(who, other.name(), "the unselected pod answered");
            seen.insert(who);
        }
        seen.len() == 2
    });
    eprintln!("ClusterIP served by {seen:?} {took:?} after the apply");
    assert!(seen.contains(web1.name()) && seen.contains(web2.name()));
    let described = ok(&["describe", "svc", "web"]);
    assert!(
        described.contains(&format!("{}:{PORT}", pods[1].1))
            && described.contains(&format!("{}:{PORT}", pods[2].1)),
        "describe lists both endpoints: {described}"
    );

    // A steady request loop; web2 is deleted with CNI DEL: nothing reaches it after 1 s.
    let (tx, rx) = std::sync::mpsc::channel::<(Duration, Result<String, String>)>();
    let loop_client = client.clone();
    let start = Instant::now();
    let asker = std::thread::spawn(move || {
        while start.elapsed() < Duration::from_secs(6) {
            let t = start.elapsed();
            if tx.send((t, ask(&loop_client, vip))).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let del_at = start.elapsed();
    cni::del(cni, node, web2, "web2", &f1.cni_conf("web")).unwrap();
    asker.join().unwrap();
    let results: Vec<_> = rx.iter().collect();
    let before: Vec<_> = results.iter().filter(|(t, _)| *t < del_at).collect();
    assert!(
        before.iter().any(|(_, r)| r.as_deref() == Ok(web2.name())),
        "web2 served before its DEL: {before:?}"
    );
    let late: Vec<_> = results
        .iter()
        .filter(|(t, _)| *t >= del_at + ONE_S)
        .collect();
    assert!(late.len() > 50, "the loop went on: {} requests", late.len());
    for (t, r) in &late {
        assert_eq!(
            r.as_deref(),
            Ok(web1.name()),
            "request at {t:?} ({:?} after the DEL) not answered by web1",
            *t - del_at
        );
    }
    let last_web2 = results
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok(web2.name()))
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    eprintln!(
        "web2 deleted at {del_at:?}; its last answer at {last_web2:?}; {} requests after +1 s all answered by web1",
        late.len()
    );

    // A bad manifest: every error with its field path, nothing written.
    let bad = f1.file("bad.yaml", BAD);
    let out = ctl(&["apply", "-f", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "The Service \"bad\" is invalid",
        "spec.sessionAfinity: unknown field",
        "spec.ports[0].targetPort: Invalid value: \"Not_A_Port\"",
        "spec.ports[1].name: Required value",
        "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    let missing = ctl(&["get", "svc", "bad"]);
    assert!(!missing.status.success(), "the bad service was written");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // Delete: the ClusterIP stops answering within 1 s and is freed in etcd.
    assert_eq!(ok(&["delete", "svc", "web"]).trim(), "service/web deleted");
    let gone_at = Instant::now();
    let took = within("the ClusterIP no longer served", ONE_S, || {
        ask(client, vip).is_err()
    });
    eprintln!("ClusterIP gone {took:?} after ironctl delete");
    assert!(gone_at.elapsed() < T);
    assert!(
        etcd.get(
            0,
            &format!("ironmesh/v1/clusters/{CLUSTER}/ipam/clusterips/{cip}")
        )
        .unwrap()
        .is_none(),
        "the ClusterIP is freed"
    );
    assert!(!ok(&["get", "svc", "-A"]).contains("web"));
    alive();
    drop(stop);
    Ok(())
}

/// The NetworkPolicy examples of the Kubernetes documentation (concepts/services-networking/
/// network-policies), adapted to the lab's pods and ports, applied with `ironctl apply`.
const POLICIES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ops
  labels: {team: ops}
---
# "Default deny all ingress traffic", for the web pods.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes:
  - Ingress
---
# podSelector with matchExpressions, one port.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-clients
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: app, operator: In, values: [client]}
        - {key: legacy, operator: DoesNotExist}
    ports:
    - protocol: TCP
      port: 7000
---
# namespaceSelector by the namespace's labels, and a port range (endPort).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-ops
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {team: ops}
    ports:
    - protocol: TCP
      port: 32000
      endPort: 32768
---
# ipBlock with except; the port by its name (the web pod's container port "app").
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-the-underlay
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - ipBlock:
        cidr: 192.0.2.0/24
        except:
        - 192.0.2.1/32
    ports:
    - protocol: TCP
      port: app
---
# Egress: the client may only talk to web, on web's port named "app" (7000).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client-egress
spec:
  podSelector:
    matchLabels: {app: client}
  policyTypes:
  - Egress
  egress:
  - to:
    - podSelector:
        matchLabels: {app: web}
    ports:
    - protocol: TCP
      port: app
"#;

/// One request from `host`, from source address `src`, with short timeouts.
fn ask_from(host: &Host, src: Ipv4Addr, dst: SocketAddr) -> Result<String, String> {
    host.in_netns(move || {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
            .map_err(|e| format!("bind {src}: {e}"))?;
        s.connect_timeout(&dst.into(), Duration::from_millis(300))
            .map_err(|e| format!("connect {dst} from {src}: {e}"))?;
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(b"who").map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}

#[test]
fn e2e_apply_network_policies_from_the_kubernetes_docs() -> Result<()> {
    let f1 = Node1::start("e2e_netpol", &["192.0.2.1/24", "192.0.2.5/24"])?;
    let tor = &f1.tor;
    tor.ip(&["route", "add", POD_POOL, "via", "192.0.2.2"])?;
    let alive = || f1.alive().unwrap();
    let ctl = |args: &[&str]| f1.ctl(args);
    // web (default), client (default), other (default), opsclient (namespace ops).
    let pods = f1.add_pods(&[
        ("web", "default", "web"),
        ("client", "default", "client"),
        ("other", "default", "other"),
        ("opsclient", "ops", "client"),
    ])?;
    let stop = Stop::new();
    let (web, client, other, ops) = (&pods[0], &pods[1], &pods[2], &pods[3]);
    for port in [7000, 32001] {
        tcp::who_server(&web.0, port, stop.0.clone(), Duration::from_secs(120));
    }
    tcp::who_server(&other.0, 7000, stop.0.clone(), Duration::from_secs(120));
    let web_app = SocketAddr::new(IpAddr::V4(web.1), 7000);
    let web_range = SocketAddr::new(IpAddr::V4(web.1), 32001);
    let other_app = SocketAddr::new(IpAddr::V4(other.1), 7000);
    let (tor_denied, tor_allowed) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 5));
    // Before any policy, everyone reaches everything.
    within("open before the policies", T, || {
        alive();
        ask(&client.0, web_app).is_ok()
            && ask(&ops.0, web_range).is_ok()
            && ask(&client.0, other_app).is_ok()
            && ask_from(tor, tor_denied, web_app).is_ok()
    });

    // A named port with a range is refused at apply, with its field path; nothing is written.
    let named = f1.file(
        "named.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named}\n\
         spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: app, endPort: 7001}\n",
    );
    let out = ctl(&["apply", "-f", &named]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("The NetworkPolicy \"named\" is invalid: spec.ingress[0].ports[0].endPort"),
        "{err}"
    );

    let file = f1.file("policies.yaml", POLICIES);
    let out = ctl(&["apply", "-f", &file]);
    assert!(out.status.success(), "{out:?}");
    let applied = String::from_utf8_lossy(&out.stdout);
    assert!(applied.contains("namespace/ops created"), "{applied}");
    assert!(
        applied.contains("networkpolicy.networking.k8s.io/client-egress created"),
        "{applied}"
    );
    let listed = String::from_utf8_lossy(&ctl(&["get", "netpol"]).stdout).into_owned();
    assert!(
        listed.contains("web-from-the-underlay") && listed.contains("app=web"),
        "{listed}"
    );

    // Each clause, by real TCP connects (each waited for: the policies arrive within a second).
    let t0 = Instant::now();
    within(
        "other denied by default-deny (no rule admits app=other)",
        T,
        || ask(&other.0, web_app).is_err(),
    );
    eprintln!("policies in force {:?} after the apply", t0.elapsed());
    type Ask<'a> = Box<dyn Fn() -> Result<String, String> + 'a>;
    let cases: [(&str, Ask, bool); 8] = [
        (
            "client -> web:7000 (matchExpressions; its egress by web's named port)",
            Box::new(|| ask(&client.0, web_app)),
            true,
        ),
        (
            "client -> web:32001 (port not allowed for it)",
            Box::new(|| ask(&client.0, web_range)),
            false,
        ),
        (
            "ops/client -> web:32001 (namespaceSelector, endPort)",
            Box::new(|| ask(&ops.0, web_range)),
            true,
        ),
        (
            "ops/client -> web:7000 (not in matchExpressions' namespace)",
            Box::new(|| ask(&ops.0, web_app)),
            false,
        ),
        (
            "192.0.2.5 -> web:7000 (ipBlock, named port)",
            Box::new(|| ask_from(tor, tor_allowed, web_app)),
            true,
        ),
        (
            "192.0.2.1 -> web:7000 (ipBlock except)",
            Box::new(|| ask_from(tor, tor_denied, web_app)),
            false,
        ),
        (
            "client -> other:7000 (client's egress allows only web)",
            Box::new(|| ask(&client.0, other_app)),
            false,
        ),
        (
            "other -> web:7000 (default deny)",
            Box::new(|| ask(&other.0, web_app)),
            false,
        ),
    ];
    for (what, f, allowed) in &cases {
        // Twice each: a verdict, not a lucky moment.
        for _ in 0..2 {
            let r = f();
            assert_eq!(r.is_ok(), *allowed, "{what}: {r:?}");
        }
        if *allowed {
            assert_eq!(f().unwrap(), web.0.name(), "{what}: answered by web");
        }
    }
    // Deleting the policies by their manifest opens everything again.
    let out = ctl(&["delete", "-f", &file]);
    assert!(out.status.success(), "{out:?}");
    within("open again after the delete", T, || {
        ask(&other.0, web_app).is_ok() && ask(&client.0, other_app).is_ok()
    });
    alive();
    drop(stop);
    Ok(())
}

const CHECKED: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: checked
  annotations:
    ironmesh.io/health-check: tcp
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 7000
"#;

/// `ironmesh.io/health-check: tcp`: the node checks its own backends every second; a pod whose
/// server stops is quarantined (no new connection reaches it, on every node) after three
/// failed checks, and comes back after two passing ones.
#[test]
fn e2e_backends_health_check_quarantines_a_failing_pod_and_restores_it() -> Result<()> {
    let f1 = Node1::start("e2e_health", &["192.0.2.1/24"])?;
    let etcd = &f1.etcd;
    let ctl = |args: &[&str]| f1.ctl(args);
    let pods = f1.add_pods(&[
        ("client", "default", "client"),
        ("web1", "default", "web"),
        ("web2", "default", "web"),
    ])?;
    let (client, web1, web2) = (&pods[0].0, &pods[1].0, &pods[2].0);
    let stop1 = Stop::new();
    tcp::who_server(web1, PORT, stop1.0.clone(), Duration::from_secs(120));
    let stop2 = Stop::new();
    tcp::who_server(web2, PORT, stop2.0.clone(), Duration::from_secs(120));
    let file = f1.file("checked.yaml", CHECKED);
    let out = ctl(&["apply", "-f", &file]);
    assert!(out.status.success(), "{out:?}");
    let got: serde_json::Value =
        serde_json::from_slice(&ctl(&["get", "svc", "checked", "-o", "json"]).stdout).unwrap();
    let vip = SocketAddr::new(
        got["spec"]["clusterIP"].as_str().unwrap().parse().unwrap(),
        80,
    );
    let mut seen = std::collections::BTreeSet::new();
    within("both pods serve", T, || {
        if let Ok(w) = ask(client, vip) {
            seen.insert(w);
        }
        seen.len() == 2
    });
    let health_key = format!("ironmesh/v1/clusters/{CLUSTER}/health/{}", pods[2].1);

    // web2's server stops: quarantined after three failed checks; then only web1 answers.
    drop(stop2);
    let stopped = Instant::now();
    within("web2 quarantined (its health key in etcd)", T, || {
        etcd.get(0, &health_key).unwrap().is_some()
    });
    let took = within("no request reaches web2", T, || {
        (0..10).all(|_| ask(client, vip).as_deref() == Ok(web1.name()))
    });
    eprintln!(
        "web2 quarantined {:?} after its server stopped (3 checks, 1 s apart)",
        stopped.elapsed() - took
    );
    for _ in 0..20 {
        assert_eq!(
            ask(client, vip).as_deref(),
            Ok(web1.name()),
            "only web1 serves"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&etcd.get(0, &health_key).unwrap().unwrap()).unwrap();
    assert_eq!(v["ports"], serde_json::json!([PORT]), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("connect"), "{v}");

    // It serves again: back after two passing checks, the key gone.
    let stop2 = Stop::new();
    tcp::who_server(web2, PORT, stop2.0.clone(), Duration::from_secs(120));
    let back = Instant::now();
    within("web2's health key gone", T, || {
        etcd.get(0, &health_key).unwrap().is_none()
    });
    let mut seen = std::collections::BTreeSet::new();
    within("both pods serve again", T, || {
        if let Ok(w) = ask(client, vip) {
            seen.insert(w);
        }
        seen.len() == 2
    });
    eprintln!("web2 back {:?} after its server returned", back.elapsed());
    f1.alive().unwrap();
    drop((stop1, stop2));
    Ok(())
}
