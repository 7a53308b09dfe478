//! `--log-format json`: meshd (here without a reachable etcd, so it logs its retries) writes
//! one JSON object per line to stderr, each with a level and a message; a format that is not
//! one is refused naming the choices.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn meshd_logs_json_lines_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("meshd.toml");
    // Port 9 (discard) on loopback: nothing answers, meshd retries and says so.
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"n1\"\ncluster = \"red\"\nstate_dir = {:?}\n\n\
             [mesh]\netcd_endpoints = [\"http://127.0.0.1:9\"]\ncluster_id = 1\n",
            dir.path().join("state")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .arg("--config")
        .arg(&conf)
        .arg("--api")
        .arg(dir.path().join("meshd.sock"))
        .args(["--log-format", "json"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    while lines.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let _ = child.kill(); // by PID: the child this test spawned
    let _ = child.wait();
    assert!(lines.len() >= 2, "meshd logged {lines:?} in 10 s");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string(), "{l}");
        assert!(v["timestamp"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(["--config", "/nonexistent.toml", "--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("\"text\" or \"json\""),
        "{err}"
    );
}
