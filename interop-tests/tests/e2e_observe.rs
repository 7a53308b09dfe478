//! Seeing the node's flows (issue 17): one node ([`interop_tests::node1`]) whose meshd keeps
//! the flow records of the datapath it owns (`datapath.flows`), pods from the real CNI, a
//! NetworkPolicy applied with `ironctl apply`, flows read with `ironctl observe` only.
//!
//! - `e2e_observe_denied_connect_names_both_pods_and_the_reason_within_1s`: a pod the policy
//!   does not allow connects to a web pod: `ironctl observe --verdict DROPPED --from-pod
//!   --to-pod` shows the drop within 1 s of the connect, both ends named (pod, cluster, node,
//!   identity labels), the reason and the direction; the allowed client's flow shows as
//!   FORWARDED; `--follow` streams a new drop as it happens; bad filters are refused naming
//!   the flag.
//!
//! Needs root, bpffs; builds meshd, ironctl and ironmesh-cni.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::flows::{Flow, FlowVerdict};
use interop_tests::datapath_lab::Stop;
use interop_tests::node1::{CLUSTER, NODE, Node1, POD_PORT};
use interop_tests::scrape;
use interop_tests::*;

const T: Duration = Duration::from_secs(20);

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-client
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: client}
    ports:
    - port: app
"#;

/// One TCP connect from `pod` to `dst` with a short timeout.
fn connect(pod: &Host, dst: SocketAddr) -> Result<(), String> {
    pod.in_netns(move || {
        TcpStream::connect_timeout(&dst, Duration::from_millis(300))
            .map(drop)
            .map_err(|e| format!("connect {dst}: {e}"))
    })
    .unwrap()
}

/// `ironctl observe ARGS -o json`: the flows.
fn observe(f1: &Node1, args: &[&str]) -> Vec<Flow> {
    let mut all = vec!["observe", "-o", "json"];
    all.extend_from_slice(args);
    f1.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn e2e_observe_denied_connect_names_both_pods_and_the_reason_within_1s() -> Result<()> {
    let f1 = Node1::start("e2e_observe", &["192.0.2.1/24"])?;
    let pods = f1.add_pods(&[
        ("client", "shop", "client"),
        ("w1", "shop", "web"),
        ("intruder", "shop", "other"),
    ])?;
    let (client, web, intruder) = (&pods[0], &pods[1], &pods[2]);
    let stop = Stop::new();
    tcp::who_server(&web.0, POD_PORT, stop.0.clone(), Duration::from_secs(120));
    let dst = SocketAddr::new(web.1.into(), POD_PORT);
    connect(&intruder.0, dst).expect("no policy yet: the intruder connects");

    let out = f1.apply("policy.yaml", POLICY);
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io/web-from-client created"
    );
    cmd::wait_for(
        "the policy in force",
        T,
        Duration::from_millis(100),
        |last| {
            let r = connect(&intruder.0, dst);
            *last = format!("{r:?}");
            Ok(r.is_err().then_some(()))
        },
    )?;

    // A denied connect: in `observe` within 1 s, both ends named, with the reason.
    let denied = [
        "--verdict",
        "DROPPED",
        "--from-pod",
        "shop/intruder",
        "--to-pod",
        "shop/w1",
    ];
    let before = observe(&f1, &[&denied[..], &["--last", "1000"]].concat()).len();
    let start = Instant::now();
    assert!(connect(&intruder.0, dst).is_err(), "the policy denies it");
    let flows = cmd::wait_for(
        "the denied connect in ironctl observe",
        Duration::from_secs(1),
        Duration::from_millis(20),
        |last| {
            let flows = observe(&f1, &[&denied[..], &["--last", "1000"]].concat());
            *last = format!("{flows:?}");
            Ok((flows.len() > before).then_some(flows))
        },
    )?;
    eprintln!(
        "denied connect in ironctl observe {:?} after the connect",
        start.elapsed()
    );
    let f = flows.last().unwrap();
    assert_eq!(f.verdict, FlowVerdict::Dropped);
    assert_eq!(f.kind, "drop");
    assert!(
        f.reason == "policy-denied" || f.reason == "policy-default-deny",
        "{f:?}"
    );
    assert_eq!(f.direction.as_deref(), Some("ingress"), "{f:?}");
    assert_eq!(f.protocol, "TCP");
    assert_eq!((f.cluster.as_str(), f.node.as_str()), (CLUSTER, NODE));
    for (end, pod, ip, app) in [
        (&f.source, "shop/intruder", intruder.1, "other"),
        (&f.destination, "shop/w1", web.1, "web"),
    ] {
        assert_eq!(end.pod.as_deref(), Some(pod), "{f:?}");
        assert_eq!(end.ip, std::net::IpAddr::V4(ip));
        assert_eq!(end.cluster.as_deref(), Some(CLUSTER), "{f:?}");
        assert_eq!(end.node.as_deref(), Some(NODE), "{f:?}");
        assert_eq!(
            end.labels.get("app").map(String::as_str),
            Some(app),
            "{f:?}"
        );
    }
    assert_eq!(f.destination.port, POD_PORT);
    assert!(f.summary.contains("app=other"), "{}", f.summary);

    // The allowed client: FORWARDED (the policy's verdict for its new flow), never DROPPED.
    connect(&client.0, dst).expect("the client is allowed");
    let fwd = cmd::wait_for(
        "the allowed flow in ironctl observe",
        T,
        Duration::from_millis(50),
        |_| {
            let flows = observe(
                &f1,
                &["--verdict", "FORWARDED", "--from-pod", "shop/client"],
            );
            Ok((!flows.is_empty()).then_some(flows))
        },
    )?;
    assert_eq!(fwd[0].reason, "allowed", "{:?}", fwd[0]);
    assert_eq!(fwd[0].destination.pod.as_deref(), Some("shop/w1"));
    assert!(observe(&f1, &["--verdict", "DROPPED", "--from-pod", "shop/client"]).is_empty());
    // Label and port filters.
    assert!(!observe(&f1, &["--from-label", "app=other", "--port", "7000"]).is_empty());
    assert!(observe(&f1, &["--from-label", "app=nope"]).is_empty());

    // --follow streams a new drop as it happens.
    let mut child = Command::new(&f1.ironctl)
        .args(["observe", "-f", "-o", "json", "--verdict", "DROPPED"])
        .env("IRONMESH_MESHD_SOCKET", &f1.sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let _ = connect(&intruder.0, dst);
    let got = rx.recv_timeout(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    let line = got.unwrap_or_else(|_| panic!("no flow followed within 2 s"));
    let followed: Flow = serde_json::from_str(&line).unwrap();
    eprintln!("followed drop after {:?}", start.elapsed());
    assert_eq!(followed.source.pod.as_deref(), Some("shop/intruder"));

    // Bad filters: refused naming the flag and the fix.
    for (args, want) in [
        (
            vec!["observe", "--verdict", "LOST"],
            "FORWARDED, DROPPED or TRACED",
        ),
        (vec!["observe", "--from-label", "=x"], "--from-label"),
        (vec!["observe", "--protocol", "tcpp"], "--protocol"),
        (vec!["observe", "--since", "5d"], "e.g. 30s"),
    ] {
        let out = f1.ctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    f1.alive()?;
    drop(stop);
    Ok(())
}

/// `e2e_metrics_*`: meshd's metrics move when the lab causes them: a denied connect counts as
/// a policy drop on the destination's ingress, an allowed one as an allowed verdict; the flow
/// ring's fill shows too.
#[test]
fn e2e_metrics_policy_drops_and_verdicts_move_when_the_lab_causes_them() -> Result<()> {
    let f1 = Node1::start("e2e_metrics", &["192.0.2.1/24"])?;
    let pods = f1.add_pods(&[
        ("client", "shop", "client"),
        ("w1", "shop", "web"),
        ("intruder", "shop", "other"),
    ])?;
    let (client, web, intruder) = (&pods[0], &pods[1], &pods[2]);
    let stop = Stop::new();
    tcp::who_server(&web.0, POD_PORT, stop.0.clone(), Duration::from_secs(120));
    let dst = SocketAddr::new(web.1.into(), POD_PORT);
    f1.apply("policy.yaml", POLICY);
    cmd::wait_for("the policy in force", T, Duration::from_millis(100), |_| {
        Ok(connect(&intruder.0, dst).is_err().then_some(()))
    })?;

    let drops = |t: &str| {
        scrape::sample(
            t,
            "meshd_datapath_drops_total{reason=\"policy-default-deny\",direction=\"ingress\"}",
        ) + scrape::sample(
            t,
            "meshd_datapath_drops_total{reason=\"policy-denied\",direction=\"ingress\"}",
        )
    };
    let allowed = |t: &str| {
        scrape::sample(
            t,
            "meshd_datapath_policy_verdicts_total{reason=\"allowed\",direction=\"ingress\"}",
        )
    };
    let before = f1.metrics()?;
    assert_eq!(
        scrape::sample(&before, "meshd_flows_capacity"),
        4096.0,
        "{before}"
    );
    for _ in 0..3 {
        assert!(connect(&intruder.0, dst).is_err());
    }
    connect(&client.0, dst).expect("the client is allowed");
    let after = cmd::wait_for(
        "the counters moved",
        Duration::from_secs(5),
        Duration::from_millis(100),
        |last| {
            let t = f1.metrics()?;
            let moved = drops(&t) >= drops(&before) + 3.0 && allowed(&t) > allowed(&before);
            *last = t.clone();
            Ok(moved.then_some(t))
        },
    )?;
    eprintln!(
        "drops {} -> {}, allowed verdicts {} -> {}",
        drops(&before),
        drops(&after),
        allowed(&before),
        allowed(&after)
    );
    assert!(scrape::sample(&after, "meshd_flows_kept") >= 4.0, "{after}");
    f1.alive()?;
    drop(stop);
    Ok(())
}
