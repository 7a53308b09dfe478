//! `ironctl bgp` against a real bgpd: two in-process speakers peer on loopback (real TCP,
//! codec, FSM and RIB), A serves its gRPC API on a temporary Unix socket, and the built
//! `ironctl` binary is run against it as an operator would.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::speaker::{Speaker, SpeakerConfig, SpeakerHandle, serve_api};

fn cfg(toml: &str) -> SpeakerConfig {
    let c = configs::Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    SpeakerConfig::from_config(&c).unwrap()
}

/// Runs ironctl off the runtime's threads (it is a blocking child process).
async fn ironctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ironctl"))
            .args(&args)
            .env_remove("IRONMESH_BGPD_SOCKET")
            .output()
            .expect("run ironctl")
    })
    .await
    .unwrap()
}

/// ironctl `args` must succeed; returns its stdout.
async fn ok(args: &[&str]) -> String {
    let out = ironctl(args).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "ironctl {args:?}: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// ironctl `args` must exit with `code`; returns its stderr.
async fn fails(args: &[&str], code: i32) -> String {
    let out = ironctl(args).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "ironctl {args:?}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

async fn wait(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn established(h: &SpeakerHandle) -> bool {
    h.peers()[0].status.lock().unwrap().state == State::Established
}

async fn loc_rib_has(h: &SpeakerHandle, prefix: &str) -> bool {
    let prefix = prefix.to_string();
    h.query(move |rib| rib.loc_rib().any(|r| r.prefix.to_string() == prefix))
        .await
        .unwrap()
}

/// The line of a table whose cells include `cell`.
fn line_with<'a>(table: &'a str, cell: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().any(|c| c == cell))
}

/// A (AS 65001, listening, passive) and B (AS 65002, connecting from 127.0.0.2).
async fn pair() -> (Speaker, Speaker) {
    let mut ca = cfg(r#"
[node]
name = "a"
cluster = "lab"
[bgp]
local_asn = 65001
router_id = "192.0.2.1"
[[bgp.peers]]
name = "b"
address = "127.0.0.2"
peer_asn = 65002
passive = true
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
[[bgp.adverts]]
prefix = "10.244.1.0/24"
communities = ["65001:100"]
"#);
    ca.listen = Some("127.0.0.1:0".parse().unwrap());
    let a = Speaker::start(ca).await.unwrap();
    let port = a.listen_addr().unwrap().port();
    let b = Speaker::start(cfg(&format!(
        r#"
[node]
name = "b"
cluster = "lab"
[bgp]
local_asn = 65002
router_id = "192.0.2.2"
listen_port = 0
[[bgp.peers]]
name = "a"
address = "127.0.0.1"
port = {port}
local_address = "127.0.0.2"
peer_asn = 65001
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
[[bgp.adverts]]
prefix = "10.244.2.0/24"
communities = ["65002:7"]
large_communities = ["65002:1:2"]
"#
    )))
    .await
    .unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ironctl_drives_a_running_bgpd() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bgpd.sock");
    let (a, b) = pair().await;
    let (ha, hb) = (a.handle(), b.handle());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(
        serve_api(ha.clone(), &sock, async {
            let _ = stop_rx.await;
        })
        .unwrap(),
    );
    let s = sock.to_str().unwrap();
    wait("Established", async || established(&ha) && established(&hb)).await;
    wait("B's advert at A", async || {
        loc_rib_has(&ha, "10.244.2.0/24").await
    })
    .await;
    wait("A's advert at B", async || {
        loc_rib_has(&hb, "10.244.1.0/24").await
    })
    .await;

    // peers: the table like `birdc show protocols`.
    let out = ok(&["bgp", "peers", "--bgpd", s]).await;
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE") && header.ends_with("LAST ERROR"),
        "{out}"
    );
    let row: Vec<&str> = line_with(&out, "b")
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..4],
        &["b", "127.0.0.2", "65002", "Established"],
        "{out}"
    );
    // RCVD ACCEPTED ADV, then LAST ERROR "-".
    assert_eq!(&row[5..], &["1", "1", "1", "-"], "{out}");

    // The socket can come from the environment too; -o json parses with stable names.
    let out = tokio::task::spawn_blocking({
        let s = s.to_string();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ironctl"))
                .args(["bgp", "peers", "-o", "json"])
                .env("IRONMESH_BGPD_SOCKET", s)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "b");
    assert_eq!(v[0]["state"], "established");
    assert_eq!(v[0]["peer_asn"], 65002);
    assert_eq!(v[0]["hold_time"], 9);
    assert_eq!(v[0]["counters"]["prefixes_received"], 1);
    assert!(v[0]["counters"]["updates_in"].as_u64().unwrap() >= 1, "{v}");

    // peer NAME: the details.
    let out = ok(&["bgp", "--bgpd", s, "peer", "b"]).await;
    for want in [
        "peer b (127.0.0.2)",
        "Established for ",
        "router id      192.0.2.2",
        "hold time      9s",
        "ipv4-unicast",
        "4-octet-asn",
        "route-refresh",
        "received 1, accepted 1, advertised 1",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["bgp", "peer", "b", "--bgpd", s, "-o", "json"]).await).unwrap();
    assert_eq!(v["router_id"], "192.0.2.2");
    let err = fails(&["bgp", "peer", "nosuch", "--bgpd", s], 1).await;
    assert!(err.contains("no peer named \"nosuch\""), "{err}");

    // routes: the Loc-RIB, with B's advert, its AS path and communities, and A's own.
    let out = ok(&["bgp", "routes", "--bgpd", s]).await;
    let line = line_with(&out, "10.244.2.0/24").unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "*",
            "10.244.2.0/24",
            "127.0.0.2",
            "65002",
            "igp",
            "-",
            "-",
            "65002:7",
            "65002:1:2",
            "b"
        ],
        "{out}"
    );
    let line = line_with(&out, "10.244.1.0/24").unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.ends_with("  local") && line.contains("65001:100"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["bgp", "routes", "--bgpd", s, "-o", "json"]).await).unwrap();
    let r = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "10.244.2.0/24")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(r["as_path"], serde_json::json!([65002]));
    assert_eq!(r["peer"], "b");
    assert_eq!(r["best"], true);
    assert_eq!(r["large_communities"], serde_json::json!(["65002:1:2"]));

    // Filters: family, prefix, Adj-RIB-In.
    let out = ok(&["bgp", "routes", "--bgpd", s, "--family", "ipv6-unicast"]).await;
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let out = ok(&["bgp", "routes", "--bgpd", s, "--prefix", "10.244.2.0/24"]).await;
    assert!(
        line_with(&out, "10.244.2.0/24").is_some() && line_with(&out, "10.244.1.0/24").is_none(),
        "{out}"
    );
    let out = ok(&["bgp", "routes", "--bgpd", s, "--received", "--peer", "b"]).await;
    assert!(line_with(&out, "10.244.2.0/24").is_some(), "{out}");
    assert!(line_with(&out, "10.244.1.0/24").is_none(), "{out}");

    // advert add, then it is in B's Adj-RIB-Out with its attributes.
    let out = ok(&[
        "bgp",
        "--bgpd",
        s,
        "advert",
        "add",
        "203.0.113.10/32",
        "--community",
        "65001:200",
        "--large-community",
        "65001:1:1",
        "--local-pref",
        "150",
    ])
    .await;
    assert_eq!(out, "added 1, replaced 0\n");
    let mut adv = String::new();
    wait("the VIP in B's Adj-RIB-Out", async || {
        adv = ok(&["bgp", "routes", "--advertised", "--peer", "b", "--bgpd", s]).await;
        line_with(&adv, "203.0.113.10/32").is_some()
    })
    .await;
    let line = line_with(&adv, "203.0.113.10/32").unwrap();
    assert!(
        line.contains("65001:200") && line.contains("65001:1:1"),
        "{adv}"
    );
    assert!(
        adv.starts_with("PREFIX "),
        "no best marker or PEER column: {adv}"
    );
    wait("the VIP at B", async || {
        loc_rib_has(&hb, "203.0.113.10/32").await
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(
        &ok(&[
            "bgp",
            "routes",
            "--advertised",
            "--peer",
            "b",
            "--bgpd",
            s,
            "-o",
            "json",
        ])
        .await,
    )
    .unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|r| r["prefix"] == "203.0.113.10/32" && r["as_path"] == serde_json::json!([65001])),
        "{v}"
    );

    // Bad input: the server's message, exit 1; usage errors exit 2.
    let err = fails(&["bgp", "--bgpd", s, "advert", "add", "203.0.113.10/33"], 1).await;
    assert!(
        err.contains("prefix \"203.0.113.10/33\": use CIDR notation"),
        "{err}"
    );
    let err = fails(&["bgp", "--bgpd", s, "advert", "add", "10.0.0.1/24"], 1).await;
    assert!(err.contains("did you mean 10.0.0.0/24?"), "{err}");
    let err = fails(
        &[
            "bgp",
            "--bgpd",
            s,
            "advert",
            "add",
            "10.0.0.0/24",
            "--community",
            "x",
        ],
        1,
    )
    .await;
    assert!(err.contains("\"x\" is not a community"), "{err}");
    let err = fails(&["bgp", "routes", "--bgpd", s, "--prefix", "nonsense"], 1).await;
    assert!(err.contains("\"nonsense\""), "{err}");
    fails(&["bgp", "routes", "--bgpd", s, "--received"], 2).await;
    fails(&["bgp", "routes", "--bgpd", s, "--family", "ipv9"], 2).await;

    // advert del withdraws it.
    assert_eq!(
        ok(&["bgp", "--bgpd", s, "advert", "del", "203.0.113.10/32"]).await,
        "removed 1\n"
    );
    wait("the VIP withdrawn at B", async || {
        !loc_rib_has(&hb, "203.0.113.10/32").await
    })
    .await;

    // drain: every advert goes out again with GRACEFUL_SHUTDOWN.
    let out = ok(&["bgp", "--bgpd", s, "drain"]).await;
    assert!(out.contains("1 session(s)"), "{out}");
    wait("65535:0 in B's Adj-RIB-Out", async || {
        let out = ok(&["bgp", "routes", "--advertised", "--peer", "b", "--bgpd", s]).await;
        line_with(&out, "10.244.1.0/24").is_some_and(|l| l.contains("65535:0"))
    })
    .await;

    // reload: this in-process speaker has no config file; the refusal is passed on, exit 1.
    let err = fails(&["bgp", "--bgpd", s, "reload"], 1).await;
    assert!(
        err.contains("reload refused") && err.contains("without a config file"),
        "{err}"
    );

    let _ = stop_tx.send(());
    api.await.unwrap().unwrap();
    a.stop(false).await;
    b.stop(false).await;
}

#[test]
fn missing_socket_gives_the_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nope.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(["bgp", "peers", "--bgpd", sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "ironctl: cannot reach bgpd at {}: is bgpd running? (--bgpd or IRONMESH_BGPD_SOCKET)\n",
            sock.display()
        )
    );
    // The environment names the socket when --bgpd is absent.
    let out = Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(["bgp", "routes"])
        .env("IRONMESH_BGPD_SOCKET", &sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&*sock.to_string_lossy()),
        "{out:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(["bgp", "advert", "add"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
