//! `ironctl mesh` against the meshd agent run in process with its API on a temporary Unix
//! socket, while its local etcd is unreachable (nothing listens on 127.0.0.1:1): status must
//! say so and name the endpoint; the lists refuse clearly. The lab test
//! `interop-tests/tests/etcd_mesh_agent.rs` covers the connected mesh with real etcd.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ironmesh_meshd::agent::{AgentConfig, run};

fn ironctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(args)
        .env_remove("IRONMESH_MESHD_SOCKET")
        .output()
        .expect("run ironctl")
}

const TOML: &str = r#"
[node]
name = "n1"
cluster = "red"
state_dir = "/nonexistent"

[mesh]
etcd_endpoints = ["http://127.0.0.1:1"]
cluster_id = 1
pod_cidr_pools = [{ cidr = "10.1.0.0/16", node_mask = 24 }]

[[mesh.remote_clusters]]
name = "green"
id = 2
endpoints = ["http://127.0.0.1:2"]
"#;

#[test]
fn mesh_status_while_etcd_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("meshd.sock");
    let cfg = configs::Config::from_toml(TOML).unwrap();
    let mut agent = AgentConfig::from_config(&cfg).unwrap();
    agent.state_dir = dir.path().to_path_buf();
    agent.api_socket = Some(sock.clone());
    agent.local_etcd.connect_timeout = Duration::from_millis(300);
    agent.retry_interval = Duration::from_millis(200);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(run(agent, async {
        let _ = stop_rx.await;
    }));
    let s = sock.to_str().unwrap();

    // Wait until the first attempt failed (the error is known).
    let start = Instant::now();
    let json = loop {
        let out = ironctl(&["mesh", "--meshd", s, "-o", "json", "status"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["etcd_error"].as_str().is_some_and(|e| !e.is_empty()) {
                break v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no etcd error reported"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(json["node"], "n1");
    assert_eq!(json["etcd_connected"], false);
    assert_eq!(json["registered"], false);
    assert!(
        json["etcd_error"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:1"),
        "{json}"
    );
    let r = &json["remotes"][0];
    assert_eq!(
        (r["name"].as_str(), r["id"].as_u64()),
        (Some("green"), Some(2))
    );
    assert_eq!(
        (r["connected"].as_bool(), r["synced"].as_bool()),
        (Some(false), Some(false))
    );

    let out = ironctl(&["mesh", "--meshd", s, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("no member answered yet (http://127.0.0.1:1)"),
        "{text}"
    );
    let green = text.lines().find(|l| l.starts_with("green")).expect(&text);
    assert!(green.contains("not synced"), "{green}");

    for what in ["nodes", "identities", "services"] {
        let out = ironctl(&["mesh", "--meshd", s, what]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains("has not reached its local etcd at http://127.0.0.1:1"),
            "{err}"
        );
    }

    // Policies: list refuses the same way; apply checks the record first and names the field.
    let out = ironctl(&["mesh", "--meshd", s, "policy", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not reached its local etcd"));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"namespace":"shop","name":"p","ingress":[{"from":[{}]}]}"#,
    )
    .unwrap();
    let out = ironctl(&[
        "mesh",
        "--meshd",
        s,
        "policy",
        "apply",
        "-f",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "ingress[0].from[0]: a peer has exactly one of selector/namespace_selector or cidr"
        ),
        "{err}"
    );

    let _ = stop_tx.send(());
    let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    assert!(matches!(r, Ok(Ok(Ok(())))), "clean stop: {r:?}");
    assert!(!sock.exists(), "socket removed on stop");
    let out = ironctl(&["mesh", "--meshd", s, "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is meshd running?"));
}
