//! The plugin driven exactly as a runtime drives it: the built binary, CNI_* environment
//! variables, the network configuration on stdin, result or error JSON on stdout.
//!
//! Tests that attach pods need root: they make their own network namespaces (a "node" with
//! forwarding on, and pods), named `imcni-<pid>-<seq>-<role>`, deleted on drop (also when a
//! test fails) and swept when a dead run left them behind.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Netns, is_root, sh, sweep_stale};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh-cni");

/// The outcome of one plugin call.
#[derive(Debug)]
struct Out {
    ok: bool,
    json: Value,
    stderr: String,
}

/// One invocation's parameters; `node` is the namespace the runtime (and so the plugin) runs in.
struct Call<'a> {
    node: Option<&'a Netns>,
    vars: Vec<(&'a str, String)>,
    stdin: String,
}

impl Call<'_> {
    fn run(&self) -> Out {
        let mut cmd = match self.node {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        for v in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            cmd.env_remove(v);
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (*k, v.as_str())));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        Out {
            ok: out.status.success(),
            json: if stdout.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn conf(version: &str, data_dir: &Path) -> String {
    json!({
        "cniVersion": version,
        "name": "mesh",
        "type": "ironmesh-cni",
        "dataDir": data_dir,
        "ipam": {"type": "ironmesh", "podCIDR": "10.244.1.0/24", "podCIDRv6": "fd00:244:1::/64"},
        "dns": {"nameservers": ["10.96.0.10"]},
        "runtimeConfig": {"labels": {"app": "web"}}
    })
    .to_string()
}

/// A runtime's view: node namespace, data dir, network config.
struct Runtime<'a> {
    node: &'a Netns,
    conf: String,
}

impl<'a> Runtime<'a> {
    fn call(&self, command: &str, id: &str, pod: Option<&Netns>, stdin: Option<String>) -> Out {
        self.call_in(command, id, pod.map(Netns::path), "", stdin)
    }

    /// [`Runtime::call`] with `CNI_NETNS` exactly as given and `extra_args` appended to
    /// `CNI_ARGS`.
    fn call_in(
        &self,
        command: &str,
        id: &str,
        netns: Option<String>,
        extra_args: &str,
        stdin: Option<String>,
    ) -> Out {
        let mut vars = vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/opt/cni/bin".to_string()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={id}{extra_args}"),
            ),
        ];
        if let Some(p) = netns {
            vars.push(("CNI_NETNS", p));
        }
        Call {
            node: Some(self.node),
            vars,
            stdin: stdin.unwrap_or_else(|| self.conf.clone()),
        }
        .run()
    }
}

fn assert_error(out: &Out, code: u64, field: &str) {
    assert!(!out.ok, "expected failure, got {:?}", out.json);
    assert_eq!(out.json["code"], code, "{:?}", out.json);
    let msg = out.json["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(field), "msg {msg:?} should name {field}");
    assert!(out.json["cniVersion"].is_string(), "{:?}", out.json);
}

#[test]
fn version_matches_the_spec() {
    let out = Call {
        node: None,
        vars: vec![("CNI_COMMAND", "VERSION".into())],
        stdin: r#"{"cniVersion":"1.1.0"}"#.into(),
    }
    .run();
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.json,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn bad_input_gets_spec_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = conf("1.0.0", dir.path());
    let env = |command: &str| {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/run/netns/does-not-exist".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ]
    };
    let call = |vars: Vec<(&'static str, String)>, stdin: &str| {
        Call {
            node: None,
            vars,
            stdin: stdin.into(),
        }
        .run()
    };
    // Unknown command, missing variables: 4.
    assert_error(&call(env("FROB"), &good), 4, "CNI_COMMAND");
    assert_error(&call(vec![], &good), 4, "CNI_COMMAND");
    for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
        let vars = env("ADD")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        assert_error(&call(vars, &good), 4, missing);
    }
    // Malformed JSON: 6.
    assert_error(&call(env("ADD"), "{\"cniVersion\": "), 6, "JSON");
    // Wrong version: 1, and the error object itself is in a version we speak.
    let out = call(env("ADD"), &good.replace("1.0.0", "0.2.0"));
    assert_error(&out, 1, "cniVersion");
    assert_eq!(out.json["cniVersion"], "1.1.0");
    // Invalid network config: 7.
    let no_name = good.replace("\"name\":\"mesh\",", "");
    assert_error(&call(env("ADD"), &no_name), 7, "name");
    assert_error(
        &call(env("ADD"), &good.replace("10.244.1.0/24", "10.244.1.0/33")),
        7,
        "ipam.podCIDR",
    );
    // A netns that is not there on ADD.
    assert_error(&call(env("ADD"), &good), 4, "CNI_NETNS");
    // CHECK of a container whose netns is gone: 3.
    assert_error(&call(env("CHECK"), &good), 3, "CNI_NETNS");
    // Nothing was allocated by any of these.
    let ipam = dir.path().join("mesh/ipam");
    let files: Vec<_> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(files.is_empty(), "{files:?}");
}

fn wait_ping(from: &Netns, dst: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if from.ping(dst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn allocation_files(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("mesh/ipam"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

#[test]
fn two_pods_attach_ping_check_and_detach() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let p1 = Netns::new("pod1");
    let p2 = Netns::new("pod2");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };

    let a1 = rt.call("ADD", "pod1", Some(&p1), None);
    assert!(a1.ok, "ADD pod1: {:?} {}", a1.json, a1.stderr);
    let a2 = rt.call("ADD", "pod2", Some(&p2), None);
    assert!(a2.ok, "ADD pod2: {:?} {}", a2.json, a2.stderr);

    // The result in the spec's shape.
    let r = &a1.json;
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.244.1.2/32");
    assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["ips"][1]["address"], "fd00:244:1::2/128");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], p1.path());
    assert!(r["interfaces"][0].get("sandbox").is_none());
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
    );
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    let host_if = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let pod_mac = r["interfaces"][1]["mac"].as_str().unwrap();
    assert!(p1.ip(&["link", "show", "eth0"]).contains(pod_mac));
    assert!(node.ip(&["link", "show", &host_if]).contains("state UP"));
    assert!(
        node.ip(&["route", "show", "10.244.1.2/32"])
            .contains(&host_if),
        "host route to pod1"
    );
    assert_eq!(a2.json["ips"][0]["address"], "10.244.1.3/32");

    // Pod to pod through the node, both families; the node reaches the pods too.
    assert!(wait_ping(&p1, "10.244.1.3"), "pod1 -> pod2 (IPv4)");
    assert!(wait_ping(&p2, "10.244.1.2"), "pod2 -> pod1 (IPv4)");
    assert!(wait_ping(&p1, "fd00:244:1::3"), "pod1 -> pod2 (IPv6)");
    assert!(wait_ping(&node, "10.244.1.2"), "node -> pod1");

    // The endpoint record for meshd, with the labels.
    let ep: Value = serde_json::from_slice(
        &std::fs::read(data.path().join("mesh/endpoints/pod1-eth0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(ep["labels"]["app"], "web");
    assert_eq!(ep["labels"]["io.kubernetes.pod.namespace"], "default");
    assert_eq!(ep["labels"]["io.kubernetes.pod.name"], "pod1");
    assert_eq!(ep["hostIfname"], host_if.as_str());

    // CHECK passes, also against the previous result.
    let mut with_prev: Value = serde_json::from_str(&rt.conf).unwrap();
    with_prev["prevResult"] = a1.json.clone();
    let c = rt.call("CHECK", "pod1", Some(&p1), Some(with_prev.to_string()));
    assert!(c.ok, "CHECK pod1: {:?} {}", c.json, c.stderr);

    // ADD again: same addresses (idempotent), still connected.
    let again = rt.call("ADD", "pod1", Some(&p1), None);
    assert!(again.ok, "{:?}", again.json);
    assert_eq!(again.json["ips"], a1.json["ips"]);
    assert!(
        wait_ping(&p1, "10.244.1.3"),
        "pod1 -> pod2 after repeated ADD"
    );

    // CHECK detects a removed address.
    p2.ip(&["addr", "del", "10.244.1.3/32", "dev", "eth0"]);
    let c = rt.call("CHECK", "pod2", Some(&p2), None);
    assert_error(&c, 100, "10.244.1.3/32");
    // ... and a removed host route.
    let h1 = a1.json["interfaces"][0]["name"].as_str().unwrap();
    node.ip(&["route", "del", "10.244.1.2/32", "dev", h1]);
    assert_error(
        &rt.call("CHECK", "pod1", Some(&p1), None),
        100,
        "host route",
    );

    // DEL removes the veth pair and the allocation; DEL again is fine.
    assert_eq!(
        allocation_files(data.path()),
        ["10.244.1.2", "10.244.1.3", "fd00:244:1::2", "fd00:244:1::3"]
    );
    let d = rt.call("DEL", "pod1", Some(&p1), None);
    assert!(d.ok, "DEL pod1: {:?} {}", d.json, d.stderr);
    assert!(
        node.exec("ip", &["link", "show", h1]).is_err(),
        "host veth left"
    );
    assert!(
        p1.exec("ip", &["link", "show", "eth0"]).is_err(),
        "pod veth left"
    );
    assert!(!data.path().join("mesh/endpoints/pod1-eth0.json").exists());
    assert_eq!(
        allocation_files(data.path()),
        ["10.244.1.3", "fd00:244:1::3"]
    );
    let d = rt.call("DEL", "pod1", Some(&p1), None);
    assert!(d.ok, "second DEL pod1: {:?} {}", d.json, d.stderr);

    // DEL after the runtime already lost the netns (no CNI_NETNS): still releases.
    p2.delete();
    let d = rt.call("DEL", "pod2", None, None);
    assert!(d.ok, "DEL pod2 without netns: {:?} {}", d.json, d.stderr);
    assert!(allocation_files(data.path()).is_empty());
    assert!(
        !node.ip(&["link", "show"]).contains("im"),
        "host veths left: {}",
        node.ip(&["link", "show"])
    );
}

#[test]
fn concurrent_adds_get_distinct_addresses() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let pods: Vec<Netns> = (0..6).map(|i| Netns::new(&format!("c{i}"))).collect();
    let conf = conf("1.0.0", data.path());
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rt = Runtime {
                    node: &node,
                    conf: conf.clone(),
                };
                s.spawn(move || rt.call("ADD", &format!("c{i}"), Some(p), None))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<String> = outs
        .iter()
        .map(|o| {
            assert!(o.ok, "{:?} {}", o.json, o.stderr);
            o.json["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 6, "{addrs:?}");
    // 1.0.0 results have no per-IP `version` (0.4.0 ones do).
    assert!(outs[0].json["ips"][0].get("version").is_none());
}

#[test]
fn failed_add_gives_back_its_address_and_gc_frees_stale_attachments() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    // The pod already has an eth0 we did not make: ADD fails and keeps nothing.
    let busy = Netns::new("busy");
    busy.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    let out = rt.call("ADD", "busy", Some(&busy), None);
    assert_error(&out, 999, "CNI_IFNAME");
    assert!(allocation_files(data.path()).is_empty());
    assert!(!node.ip(&["link", "show"]).contains("im"));

    // STATUS: ready.
    let status = rt.call("STATUS", "", None, None);
    assert!(status.ok, "{:?} {}", status.json, status.stderr);

    // GC keeps the valid attachment and frees the other one (veth, address, record).
    let keep = Netns::new("keep");
    let lost = Netns::new("lost");
    let k = rt.call("ADD", "keep", Some(&keep), None);
    assert!(k.ok);
    let l = rt.call("ADD", "lost", Some(&lost), None);
    assert!(l.ok);
    let mut gc: Value = serde_json::from_str(&rt.conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = rt.call("GC", "", None, Some(gc.to_string()));
    assert!(out.ok, "{:?} {}", out.json, out.stderr);
    let kept: Vec<String> = k.json["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(allocation_files(data.path()), kept);
    let lost_if = l.json["interfaces"][0]["name"].as_str().unwrap();
    assert!(node.exec("ip", &["link", "show", lost_if]).is_err());
    assert!(!data.path().join("mesh/endpoints/lost-eth0.json").exists());
    assert!(wait_ping(&node, &kept[0]), "the kept pod still works");
}

/// The allocation files, none when the IPAM dir was never made.
fn allocations(data: &Path) -> Vec<String> {
    if data.join("mesh/ipam").exists() {
        allocation_files(data)
    } else {
        Vec::new()
    }
}

/// `conf` with `patch`'s top-level keys set.
fn conf_with(data: &Path, patch: Value) -> String {
    let mut c: Value = serde_json::from_str(&conf("1.1.0", data)).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

#[test]
fn cni_refuses_host_netns_and_leaves_host_routes_alone() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    // The node's uplink and default routes: what ADD used to replace and DEL to delete.
    node.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    node.ip(&["link", "set", "up1", "up"]);
    node.ip(&["link", "set", "up0", "up"]);
    node.ip(&["addr", "add", "192.0.2.10/24", "dev", "up0"]);
    node.ip(&["route", "add", "default", "via", "192.0.2.1"]);
    node.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::10/64",
        "dev",
        "up0",
        "nodad",
    ]);
    node.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"]);
    // A live pod, to show a DEL naming the host netns does not touch it either.
    let pod = Netns::new("live");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    let live = rt.call("ADD", "live", Some(&pod), None);
    assert!(live.ok, "{:?} {}", live.json, live.stderr);
    let snapshot = || {
        [
            node.ip(&["route", "show"]),
            node.ip(&["-6", "route", "show"]),
            node.ip(&["-o", "link", "show"]),
            node.ip(&["-o", "addr", "show"]),
        ]
    };
    let before = snapshot();
    let held = allocations(data.path());

    // The node's namespace by its path, and by the plugin's own /proc/self/ns/net.
    for netns in [node.path(), "/proc/self/ns/net".to_string()] {
        let out = rt.call_in("ADD", "hostpod", Some(netns.clone()), "", None);
        assert_error(&out, 4, "CNI_NETNS");
        assert!(
            out.json["msg"].as_str().unwrap().contains("host"),
            "{:?}",
            out.json
        );
        assert_eq!(snapshot(), before, "ADD in the host netns changed the host");
        assert_eq!(allocations(data.path()), held);
        assert!(
            !data
                .path()
                .join("mesh/endpoints/hostpod-eth0.json")
                .exists()
        );

        // DEL with the host netns, for the refused attachment and for the live pod.
        for id in ["hostpod", "live"] {
            let d = rt.call_in("DEL", id, Some(netns.clone()), "", None);
            assert!(
                d.ok,
                "DEL {id} in the host netns: {:?} {}",
                d.json, d.stderr
            );
            assert_eq!(
                snapshot(),
                before,
                "DEL {id} in the host netns changed the host"
            );
        }
        assert_eq!(allocations(data.path()), held);
        assert!(data.path().join("mesh/endpoints/live-eth0.json").exists());
    }
    assert!(wait_ping(&node, "10.244.1.2"), "the live pod still works");

    // Paths that are no network namespace at all: a file, a directory, a FIFO (which a
    // plain open would block on).
    let file = data.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let fifo = data.path().join("fifo");
    sh("mkfifo", &[fifo.to_str().unwrap()]).unwrap();
    for bad in [&file, &data.path().to_path_buf(), &fifo] {
        let out = rt.call_in("ADD", "bogus", Some(bad.display().to_string()), "", None);
        assert_error(&out, 4, "CNI_NETNS");
        assert_eq!(snapshot(), before);
    }
    assert_eq!(allocations(data.path()), held);
}

#[test]
fn cni_refuses_pod_addresses_outside_the_pod_cidr() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let pod = Netns::new("static");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    let with = |patch: Value| Some(conf_with(data.path(), patch));
    // Outside the PodCIDRs, or not a pod address of them: refused, naming the field.
    for (ips, why) in [
        (json!(["10.9.9.9/24"]), "10.244.1.0/24"),
        (json!(["10.244.2.5"]), "outside"),
        (json!(["10.244.1.1"]), "gateway"),
        (json!(["10.244.1.255/24"]), "broadcast"),
        (json!(["10.244.1.0"]), "network"),
        (json!(["fd00:245::5"]), "fd00:244:1::/64"),
        (
            json!(["10.244.1.5", "10.244.1.6"]),
            "one address per PodCIDR",
        ),
        (json!(["banana"]), "not an IP address"),
    ] {
        let out = rt.call_in(
            "ADD",
            "static",
            Some(pod.path()),
            "",
            with(json!({"runtimeConfig": {"ips": ips}})),
        );
        assert_error(&out, 7, "runtimeConfig.ips[");
        let msg = out.json["msg"].as_str().unwrap();
        assert!(msg.contains(why), "{msg:?} should say {why:?}");
    }
    let out = rt.call_in(
        "ADD",
        "static",
        Some(pod.path()),
        "",
        with(json!({"args": {"cni": {"ips": ["192.168.0.9"]}}})),
    );
    assert_error(&out, 7, "args.cni.ips[0]");
    let out = rt.call_in("ADD", "static", Some(pod.path()), ";IP=10.244.7.7", None);
    assert_error(&out, 4, "CNI_ARGS IP");
    assert!(allocations(data.path()).is_empty());
    assert!(pod.exec("ip", &["link", "show", "eth0"]).is_err());

    // Inside: that address, on the pod, reachable.
    let ok = rt.call_in(
        "ADD",
        "static",
        Some(pod.path()),
        "",
        with(json!({"runtimeConfig": {"ips": ["10.244.1.77/24"]}})),
    );
    assert!(ok.ok, "{:?} {}", ok.json, ok.stderr);
    assert_eq!(ok.json["ips"][0]["address"], "10.244.1.77/32");
    assert!(pod.ip(&["addr", "show", "eth0"]).contains("10.244.1.77/32"));
    assert!(wait_ping(&node, "10.244.1.77"), "node -> static pod");
    // The same address for another pod: refused, naming who has it.
    let other = Netns::new("other");
    let out = rt.call_in("ADD", "other", Some(other.path()), ";IP=10.244.1.77", None);
    assert_error(&out, 11, "10.244.1.77");
    assert!(out.json["msg"].as_str().unwrap().contains("static"));
    let mut files = allocations(data.path());
    files.retain(|f| f.starts_with("10."));
    assert_eq!(files, ["10.244.1.77"]);
}

#[test]
fn cni_chained_add_keeps_the_prev_result_and_indexes_its_own_ips() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let pod = Netns::new("chain");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    // What an earlier plugin of the chain returned (1.1.0 fields it alone knows included).
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "bond0", "mac": "02:00:00:00:00:01", "sandbox": pod.path(), "socketPath": "/run/x.sock"},
            {"name": "net9", "pciID": "0000:00:1f.6"}
        ],
        "ips": [{"address": "192.168.50.2/24", "gateway": "192.168.50.1", "interface": 0}],
        "routes": [{"dst": "192.168.60.0/24", "gw": "192.168.50.1", "mtu": 1400, "table": 7}],
        "dns": {"nameservers": ["192.168.50.53", "10.96.0.10"], "domain": "corp.example", "search": ["corp.example"]}
    });
    // A prevResult whose IP points past its interfaces is refused before anything is taken.
    let mut bad = prev.clone();
    bad["ips"][0]["interface"] = json!(5);
    let out = rt.call(
        "ADD",
        "chain",
        Some(&pod),
        Some(conf_with(data.path(), json!({"prevResult": bad}))),
    );
    assert_error(&out, 6, "prevResult.ips[0].interface");
    assert!(allocations(data.path()).is_empty());

    let out = rt.call(
        "ADD",
        "chain",
        Some(&pod),
        Some(conf_with(data.path(), json!({"prevResult": prev}))),
    );
    assert!(out.ok, "{:?} {}", out.json, out.stderr);
    let r = &out.json;
    // Theirs first, unchanged; ours appended.
    assert_eq!(r["interfaces"][0], prev["interfaces"][0]);
    assert_eq!(r["interfaces"][1], prev["interfaces"][1]);
    assert!(r["interfaces"][2].get("sandbox").is_none(), "host veth");
    assert_eq!(r["interfaces"][3]["name"], "eth0");
    assert_eq!(r["interfaces"][3]["sandbox"], pod.path());
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(r["ips"][0], prev["ips"][0]);
    assert_eq!(r["ips"][1]["address"], "10.244.1.2/32");
    assert_eq!(r["ips"][2]["address"], "fd00:244:1::2/128");
    // Every IP's index points at the interface it is on.
    for ip in r["ips"].as_array().unwrap() {
        let i = ip["interface"].as_u64().unwrap() as usize;
        let iface = &r["interfaces"][i];
        if ip["address"] == "192.168.50.2/24" {
            assert_eq!(iface["name"], "bond0");
        } else {
            assert_eq!(iface["name"], "eth0", "{ip}");
            let mac = iface["mac"].as_str().unwrap();
            assert!(pod.ip(&["link", "show", "eth0"]).contains(mac));
        }
    }
    assert_eq!(r["routes"][0], prev["routes"][0]);
    assert_eq!(
        r["routes"][1],
        json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"})
    );
    assert_eq!(r["routes"].as_array().unwrap().len(), 3);
    assert_eq!(
        r["dns"],
        json!({"nameservers": ["192.168.50.53", "10.96.0.10"], "domain": "corp.example", "search": ["corp.example"]})
    );
    assert!(wait_ping(&node, "10.244.1.2"), "node -> chained pod");

    // CHECK with the chain's final result (other plugins' IPs in it) passes.
    let check = rt.call(
        "CHECK",
        "chain",
        Some(&pod),
        Some(conf_with(data.path(), json!({"prevResult": r}))),
    );
    assert!(check.ok, "{:?} {}", check.json, check.stderr);
    // ... and fails when ours are missing from it.
    let mut theirs_only = r.clone();
    theirs_only["ips"] = json!([prev["ips"][0]]);
    let check = rt.call(
        "CHECK",
        "chain",
        Some(&pod),
        Some(conf_with(data.path(), json!({"prevResult": theirs_only}))),
    );
    assert_error(&check, 100, "prevResult.ips");
}

#[test]
fn cni_gc_without_valid_attachments_frees_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let pod = Netns::new("gclive");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    let a = rt.call("ADD", "gclive", Some(&pod), None);
    assert!(a.ok, "{:?} {}", a.json, a.stderr);
    let host_if = a.json["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let held = allocations(data.path());
    assert_eq!(held.len(), 2);

    let out = rt.call("GC", "", None, None);
    assert_error(&out, 7, "cni.dev/valid-attachments");
    assert!(
        out.json["msg"].as_str().unwrap().contains("freed nothing"),
        "{:?}",
        out.json
    );
    assert_eq!(allocations(data.path()), held);
    assert!(node.ip(&["link", "show", &host_if]).contains("state UP"));
    assert!(pod.exec("ip", &["link", "show", "eth0"]).is_ok());
    assert!(data.path().join("mesh/endpoints/gclive-eth0.json").exists());
    assert!(wait_ping(&node, "10.244.1.2"), "the live pod still works");

    // With the list naming it: kept too.
    let mut gc: Value = serde_json::from_str(&rt.conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gclive", "ifname": "eth0"}]);
    let out = rt.call("GC", "", None, Some(gc.to_string()));
    assert!(out.ok, "{:?} {}", out.json, out.stderr);
    assert_eq!(allocations(data.path()), held);
    assert!(wait_ping(&node, "10.244.1.2"), "the live pod still works");
}

#[test]
fn cni_add_for_an_attachment_in_another_netns_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let data = tempfile::tempdir().unwrap();
    let node = Netns::node();
    let p1 = Netns::new("first");
    let p2 = Netns::new("second");
    let rt = Runtime {
        node: &node,
        conf: conf("1.1.0", data.path()),
    };
    let a = rt.call("ADD", "c1", Some(&p1), None);
    assert!(a.ok, "{:?} {}", a.json, a.stderr);
    let held = allocations(data.path());

    let out = rt.call("ADD", "c1", Some(&p2), None);
    assert_error(&out, 4, "CNI_NETNS");
    assert!(out.json["msg"].as_str().unwrap().contains(&p1.path()));
    assert!(p2.exec("ip", &["link", "show", "eth0"]).is_err());
    assert_eq!(allocations(data.path()), held);
    assert!(
        wait_ping(&node, "10.244.1.2"),
        "the first attachment still works"
    );

    // Same netns: the same attachment again (idempotent).
    let again = rt.call("ADD", "c1", Some(&p1), None);
    assert!(again.ok, "{:?} {}", again.json, again.stderr);
    assert_eq!(again.json["ips"], a.json["ips"]);
    assert_eq!(allocations(data.path()), held);

    // The first netns gone: still refused until the runtime DELs it, then fine.
    p1.delete();
    let out = rt.call("ADD", "c1", Some(&p2), None);
    assert_error(&out, 4, "CNI_NETNS");
    let d = rt.call("DEL", "c1", None, None);
    assert!(d.ok, "{:?} {}", d.json, d.stderr);
    let b = rt.call("ADD", "c1", Some(&p2), None);
    assert!(b.ok, "{:?} {}", b.json, b.stderr);
    assert!(p2.exec("ip", &["link", "show", "eth0"]).is_ok());
}
