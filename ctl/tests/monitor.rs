//! `ironctl monitor` against a real datapath: the programs are loaded into a pin root of the
//! test's own, a policy drop is produced with BPF_PROG_TEST_RUN, endpoint records are written
//! as the CNI plugin writes them, and the built `ironctl` binary reads the pinned ring buffer as
//! an operator would. Needs root and bpffs (scripts/setup).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use api::mesh as pb;
use datapath::ipcache::IpcacheValue;
use datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use datapath::pin::{PinRoot, bpffs_mounted};
use datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use datapath::{Datapath, Endpoint, EndpointPolicy, Program};

const A: &str = "10.0.1.5"; // local pod web-0, identity 4242
const C: &str = "10.0.1.9"; // local pod db-0, identity 4243
const B: &str = "10.0.2.7"; // a db pod on another node: identity 4243, no record here
const A_ID: u32 = 4242;
const DB_ID: u32 = 4243;
const R: &str = "10.9.3.4"; // a cache pod of another cluster: no record here, no local pod
const R_ID: u32 = 0x2_0005;

const DROP_LINE: &str = "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop) -> \
     10.0.2.7 (id 4243 app=db,io.kubernetes.pod.namespace=shop) TCP 80 dropped: policy denied (egress)";
const VERDICT_LINE: &str = "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop) -> \
     10.0.2.7 (id 4243 app=db,io.kubernetes.pod.namespace=shop) TCP 80 policy-verdict: denied (egress)";

/// A pin root of the test's own under /sys/fs/bpf, removed with its pins on drop (also when
/// the test fails).
struct TestRoot(PinRoot);

impl TestRoot {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = PinRoot::new(format!(
            "/sys/fs/bpf/ironctl-monitor-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .unwrap();
        assert!(
            bpffs_mounted(root.path()).unwrap(),
            "bpffs is not mounted on /sys/fs/bpf: run scripts/setup as root"
        );
        Self(root)
    }

    fn path(&self) -> &str {
        self.0.path().to_str().unwrap()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.path()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.path());
    }
}

/// A node: the datapath loaded, A and C local endpoints, B remote; A's egress denies B's
/// identity on TCP; the CNI records of A and C in a data dir.
struct Node {
    dp: Datapath,
    data_dir: tempfile::TempDir,
    // Last: the pins go after the datapath's handles.
    root: TestRoot,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn record(network_dir: &Path, container: &str, addr: &str, app: &str, pod: &str) {
    let ep = cni::endpoint::Endpoint {
        container_id: container.into(),
        ifname: "eth0".into(),
        netns: format!("/var/run/netns/{pod}"),
        host_ifname: cni::endpoint::host_ifname(container, "eth0"),
        addresses: vec![ip(addr)],
        labels: [
            ("app", app),
            (cni::endpoint::LABEL_POD_NAMESPACE, "shop"),
            (cni::endpoint::LABEL_POD_NAME, pod),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        pod_uid: None,
        ports: Vec::new(),
    };
    cni::endpoint::write(&cni::endpoint::path(network_dir, container, "eth0"), &ep).unwrap();
}

fn node() -> Node {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    for (id, identity, addr) in [(1, A_ID, A), (2, DB_ID, C)] {
        dp.upsert_endpoint(&Endpoint {
            id,
            identity,
            ifindex: 0,
            addresses: vec![ip(addr)],
        })
        .unwrap();
    }
    for (addr, identity) in [(A, A_ID), (C, DB_ID), (B, DB_ID), (R, R_ID)] {
        dp.ipcache_upsert(
            ip(addr).into(),
            IpcacheValue {
                identity,
                ..Default::default()
            },
        )
        .unwrap();
    }
    dp.set_policy(
        1,
        &EndpointPolicy {
            egress_selected: true,
            rules: [DB_ID, R_ID]
                .map(|id| Rule {
                    direction: Direction::Egress,
                    peer: Peer::Identity(id),
                    ports: PortMatch::Proto(6),
                    action: Action::Deny,
                })
                .to_vec(),
            ..Default::default()
        },
    )
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let net = data_dir.path().join("mesh");
    record(&net, "c-web-0", A, "web", "web-0");
    record(&net, "c-db-0", C, "db", "db-0");
    Node { dp, data_dir, root }
}

impl Node {
    /// A → B TCP 80: denied by A's egress policy (a verdict event, then a drop event).
    fn deny_a_to_b(&self, sport: u16) {
        self.deny_a_to(B, sport);
    }

    fn deny_a_to(&self, dst: &str, sport: u16) {
        let pkt = tcp_syn((A.parse().unwrap(), sport), (dst.parse().unwrap(), 80));
        let out = self.dp.run(Program::PodEgress, &pkt, 1).unwrap();
        assert_eq!(out.verdict, TC_ACT_SHOT, "the policy must drop A -> {dst}");
        assert_ne!(TC_ACT_SHOT, TC_ACT_OK);
    }

    /// `monitor` for one drop event, asking the meshd API at `socket`.
    fn one_drop_via_meshd<'a>(&'a self, socket: &'a str) -> Vec<&'a str> {
        let extra = ["--type", "drop", "--count", "1", "--timeout", "5"];
        let mut v = self.monitor_args(&["--meshd", socket]);
        v.extend(extra);
        v
    }

    fn monitor_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "monitor",
            "--pin-root",
            self.root.path(),
            "--endpoints",
            self.data_dir.path().to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v
    }
}

fn ironctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(args)
        .env_remove("IRONMESH_MESHD_SOCKET")
        .output()
        .expect("run ironctl")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_ok(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "ironctl {args:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An Ethernet + IPv4 + TCP SYN frame with valid checksums.
fn tcp_syn(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    fn sum(mut acc: u32, data: &[u8]) -> u32 {
        for c in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    }
    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let c = fold(sum(sum(0, &pseudo), &tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ipv4 = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    ipv4.extend_from_slice(&src.0.octets());
    ipv4.extend_from_slice(&dst.0.octets());
    let c = fold(sum(0, &ipv4));
    ipv4[10..12].copy_from_slice(&c.to_be_bytes());

    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    frame.extend_from_slice(&ipv4);
    frame.extend_from_slice(&tcp);
    frame
}

#[test]
fn prints_a_policy_drop_with_both_identities_their_labels_and_the_reason() {
    let n = node();
    n.deny_a_to_b(40000);
    let args = n.monitor_args(&["--type", "drop", "--count", "1", "--timeout", "5"]);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    // B has no record on this node: its identity's labels come from C, the local pod of the
    // same identity (without C's pod name).
    assert_eq!(stdout_lines(&out), [DROP_LINE]);
}

#[test]
fn without_a_filter_shows_the_verdict_then_the_drop() {
    let n = node();
    n.deny_a_to_b(40001);
    let args = n.monitor_args(&["--count", "2", "--timeout", "5"]);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    assert_eq!(stdout_lines(&out), [VERDICT_LINE, DROP_LINE]);
}

#[test]
fn json_lines_carry_the_event_fields_and_labels() {
    let n = node();
    n.deny_a_to_b(40002);
    let args = n.monitor_args(&["-o", "json", "--count", "2", "--timeout", "5"]);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let objs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (verdict, drop) = (&objs[0], &objs[1]);
    assert_eq!(verdict["type"], "verdict");
    assert_eq!(verdict["reason"], "denied");
    assert_eq!(drop["type"], "drop");
    assert_eq!(drop["reason"], "policy-denied");
    assert_eq!(drop["summary"], DROP_LINE);
    for o in &objs {
        assert_eq!(o["direction"], "egress");
        assert_eq!(o["protocol"], "TCP");
        assert_eq!(o["proto"], 6);
        assert_eq!(o["endpoint_id"], 1);
        assert!(o["ts_ns"].as_u64().unwrap() > 0, "{o}");
        assert_eq!(
            o["source"],
            serde_json::json!({
                "ip": A, "port": 40002, "identity": A_ID,
                "labels": {"app": "web", "io.kubernetes.pod.namespace": "shop"},
            })
        );
        assert_eq!(
            o["destination"],
            serde_json::json!({
                "ip": B, "port": 80, "identity": DB_ID,
                "labels": {"app": "db", "io.kubernetes.pod.namespace": "shop"},
            })
        );
    }
}

#[test]
fn follows_events_written_after_it_started() {
    let n = node();
    let args = n.monitor_args(&["--type", "verdict", "--count", "1", "--timeout", "10"]);
    let child = Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ironctl");
    // Give it time to open the ring buffer and wait on it.
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    n.deny_a_to_b(40003);
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, &args);
    assert_eq!(stdout_lines(&out), [VERDICT_LINE]);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the event must wake the monitor, not its timeout: {:?}",
        sent.elapsed()
    );
}

#[test]
fn stops_after_the_timeout_without_events() {
    let n = node();
    let args = n.monitor_args(&["--timeout", "0.3"]);
    let start = Instant::now();
    let out = ironctl(&args);
    assert_ok(&out, &args);
    assert!(stdout_lines(&out).is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no event for 0.3s"), "{stderr}");
}

fn assert_fails_with(args: &[&str], wanted: &str) {
    let out = ironctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "ironctl {args:?}: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(wanted),
        "ironctl {args:?}\nwanted: {wanted}\ngot: {stderr}"
    );
}

#[test]
fn a_missing_pin_root_is_a_clear_error() {
    let missing = format!("/sys/fs/bpf/ironctl-monitor-missing-{}", std::process::id());
    assert!(!Path::new(&missing).exists());
    assert_fails_with(
        &[
            "monitor",
            "--pin-root",
            &missing,
            "--count",
            "1",
            "--timeout",
            "1",
        ],
        &format!("no datapath loaded at {missing}: is the agent running? pass --pin-root"),
    );

    // A pin root directory with no datapath in it.
    let empty = TestRoot::new();
    std::fs::create_dir(empty.0.path()).unwrap();
    assert_fails_with(
        &["monitor", "--pin-root", empty.path(), "--timeout", "1"],
        &format!(
            "no datapath loaded at {}: is the agent running? pass --pin-root",
            empty.path()
        ),
    );

    // A directory off bpffs says so.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_str().unwrap();
    assert_fails_with(
        &["monitor", "--pin-root", tmp_path, "--timeout", "1"],
        &format!("no datapath loaded at {tmp_path} (not on bpffs)"),
    );

    assert_fails_with(
        &["monitor", "--pin-root", "relative/dir"],
        "--pin-root: pin root \"relative/dir\" must be an absolute path",
    );
}

#[test]
fn a_missing_endpoints_dir_is_an_error_when_given() {
    let n = node();
    let missing = n.data_dir.path().join("nope");
    assert_fails_with(
        &[
            "monitor",
            "--pin-root",
            n.root.path(),
            "--endpoints",
            missing.to_str().unwrap(),
            "--timeout",
            "1",
        ],
        &format!("--endpoints {}: not a directory", missing.display()),
    );
}

#[test]
fn permission_denied_is_named() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if !setpriv.exists() {
        eprintln!("skipped: no {} to run ironctl as nobody", setpriv.display());
        return;
    }
    let n = node();
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_ironctl"))
        .args(["monitor", "--pin-root", n.root.path(), "--timeout", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("permission denied reading {}", n.root.path()))
            && stderr.contains("need root"),
        "{stderr}"
    );
}

/// A meshd API that only answers ListIdentities, on a Unix socket in a temp dir; stops on drop.
struct FakeMeshd {
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeMeshd {
    fn start(identities: Vec<pb::Identity>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meshd.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let incoming = api::unix::bind(&path).unwrap();
                ready_tx.send(()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(pb::mesh_server::MeshServer::new(Identities(identities)))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn socket(&self) -> String {
        self.dir
            .path()
            .join("meshd.sock")
            .to_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for FakeMeshd {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

struct Identities(Vec<pb::Identity>);

/// The fake's `Mesh` impl: ListIdentities answers, every other RPC is unimplemented.
macro_rules! only_identities {
    ($($rpc:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl pb::mesh_server::Mesh for Identities {
            async fn list_identities(
                &self,
                _: tonic::Request<pb::ListIdentitiesRequest>,
            ) -> Result<tonic::Response<pb::ListIdentitiesResponse>, tonic::Status> {
                Ok(tonic::Response::new(pb::ListIdentitiesResponse {
                    identities: self.0.clone(),
                }))
            }
            type FlowsStream = tonic::codegen::BoxStream<pb::FlowsResponse>;
            async fn flows(
                &self,
                _: tonic::Request<pb::FlowsRequest>,
            ) -> Result<tonic::Response<Self::FlowsStream>, tonic::Status> {
                Err(tonic::Status::unimplemented("not in this fake"))
            }
            $(
                async fn $rpc(
                    &self,
                    _: tonic::Request<pb::$req>,
                ) -> Result<tonic::Response<pb::$resp>, tonic::Status> {
                    Err(tonic::Status::unimplemented("not in this fake"))
                }
            )*
        }
    };
}

only_identities! {
    status(StatusRequest) -> StatusResponse;
    list_nodes(ListNodesRequest) -> ListNodesResponse;
    list_services(ListServicesRequest) -> ListServicesResponse;
    encryption_status(EncryptionStatusRequest) -> EncryptionStatusResponse;
    rotate_key(RotateKeyRequest) -> RotateKeyResponse;
    set_encryption_rollout(SetEncryptionRolloutRequest) -> EncryptionRolloutStatusResponse;
    encryption_rollout_status(EncryptionRolloutStatusRequest) -> EncryptionRolloutStatusResponse;
    apply_policy(ApplyPolicyRequest) -> ApplyPolicyResponse;
    list_policies(ListPoliciesRequest) -> ListPoliciesResponse;
    delete_policy(DeletePolicyRequest) -> DeletePolicyResponse;
    apply(ApplyRequest) -> ApplyResponse;
    get(GetRequest) -> GetResponse;
    delete(DeleteRequest) -> DeleteResponse;
}

fn identity(id: u32, cluster: &str, labels: &[(&str, &str)]) -> pb::Identity {
    pb::Identity {
        id,
        cluster: cluster.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A pod of another cluster has no record and no local pod of its identity: without meshd its
/// identity shows as a bare number; with meshd's API it is named by the labels meshd stores
/// (and meshd's labels win for local identities too).
#[test]
fn identities_of_other_clusters_are_named_by_meshd() {
    let n = node();
    let bare = "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop) -> \
         10.9.3.4 (id 131077) TCP 80 dropped: policy denied (egress)";
    n.deny_a_to(R, 40010);
    let args = n.monitor_args(&["--type", "drop", "--count", "1", "--timeout", "5"]);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    assert_eq!(stdout_lines(&out), [bare]);

    let meshd = FakeMeshd::start(vec![
        identity(
            A_ID,
            "blue",
            &[
                ("app", "web"),
                ("io.kubernetes.pod.namespace", "shop"),
                ("tier", "front"),
            ],
        ),
        identity(
            R_ID,
            "red",
            &[("app", "cache"), ("io.kubernetes.pod.namespace", "shop")],
        ),
    ]);
    n.deny_a_to(R, 40011);
    let socket = meshd.socket();
    let args = n.one_drop_via_meshd(&socket);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    assert_eq!(
        stdout_lines(&out),
        [
            "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop,tier=front) -> \
          10.9.3.4 (id 131077 app=cache,io.kubernetes.pod.namespace=shop) TCP 80 dropped: policy denied (egress)"
        ]
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A given `--meshd` that does not answer is reported once; the records still name what they
/// can and the events are shown.
#[test]
fn an_unreachable_meshd_is_reported_and_the_records_still_name() {
    let n = node();
    n.deny_a_to_b(40012);
    let missing = n.data_dir.path().join("no-meshd.sock");
    let missing = missing.to_str().unwrap();
    let args = n.one_drop_via_meshd(missing);
    let out = ironctl(&args);
    assert_ok(&out, &args);
    assert_eq!(stdout_lines(&out), [DROP_LINE]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "ironctl: monitor: no identity labels from meshd (cannot reach meshd at {missing}"
        )) && stderr.contains("naming identities from the endpoint records only")
            && stderr.matches("no identity labels").count() == 1,
        "{stderr}"
    );
}
