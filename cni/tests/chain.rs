//! The plugin in a chain with the reference plugins, driven through libcni as a container
//! runtime drives it: ironmesh-cni → bandwidth → portmap (Debian's
//! `containernetworking-plugins`), ADD/CHECK/DEL through libcni (Debian's
//! `golang-github-containernetworking-cni-dev`: libcni 1.1, spec 1.0.0, so the list is
//! 1.0.0) and GC as libcni 1.2 sends it (libcni 1.1 has no GC; see libcni_driver/main.go).
//!
//! The driver is built at test time with `golang-go` (GOPATH mode, offline); all three
//! come from scripts/setup. Root only: the node and the pods are network namespaces of the
//! test's own (support module), deleted on drop; a driver that hangs is killed by its PID.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Netns, is_root, sweep_stale};

const BIN: &str = env!("CARGO_BIN_EXE_ironmesh-cni");
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
const LIBCNI_GOPATH: &str = "/usr/share/gocode";

/// The libcni driver, built once per test run (or why it could not be).
fn driver() -> &'static Path {
    static DRIVER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = DRIVER.get_or_init(|| {
        let missing = |what: &str, pkg: &str| {
            format!("{what} is missing: install the Debian package {pkg} (scripts/setup does)")
        };
        if !Path::new(LIBCNI_GOPATH)
            .join("src/github.com/containernetworking/cni/libcni")
            .is_dir()
        {
            return Err(missing(
                "libcni's source",
                "golang-github-containernetworking-cni-dev",
            ));
        }
        for p in ["bandwidth", "portmap"] {
            if !Path::new(REFERENCE_PLUGINS).join(p).exists() {
                return Err(missing(
                    &format!("{REFERENCE_PLUGINS}/{p}"),
                    "containernetworking-plugins",
                ));
            }
        }
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libcni-driver");
        let out = tmp.join("driver");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libcni_driver");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", LIBCNI_GOPATH)
            .env("GOCACHE", tmp.join("gocache"))
            .env("GOFLAGS", "")
            .output()
            .map_err(|e| format!("{}: {e}", missing("go", "golang-go")))?;
        if !built.status.success() {
            return Err(format!(
                "building the libcni driver: {}",
                String::from_utf8_lossy(&built.stderr)
            ));
        }
        Ok(out)
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A runtime: the node it runs in, its CNI_PATH (only the three plugins), the conflist,
/// libcni's cache.
struct Runtime<'a> {
    node: &'a Netns,
    dir: tempfile::TempDir,
}

/// One driver run.
#[derive(Debug)]
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.stdout, self.stderr))
    }
}

impl<'a> Runtime<'a> {
    fn new(node: &'a Netns) -> Runtime<'a> {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("ironmesh-cni")).unwrap();
        for p in ["bandwidth", "portmap"] {
            std::os::unix::fs::symlink(Path::new(REFERENCE_PLUGINS).join(p), bin.join(p)).unwrap();
        }
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "mesh",
            "plugins": [
                {
                    "type": "ironmesh-cni",
                    "dataDir": dir.path().join("data"),
                    "ipam": {"type": "ironmesh", "podCIDR": "10.244.1.0/24", "podCIDRv6": "fd00:244:1::/64"},
                    "dns": {"nameservers": ["10.96.0.10"]}
                },
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        });
        std::fs::write(dir.path().join("mesh.conflist"), conflist.to_string()).unwrap();
        // portmap 1.1.1's CHECK looks for IPv6 rules its ADD did not make (upstream
        // containernetworking/plugins#819, fixed after Debian 12's version): CHECK runs the
        // same list without it, against the whole chain's cached result.
        let mut check = conflist.clone();
        check["plugins"].as_array_mut().unwrap().pop();
        std::fs::write(dir.path().join("mesh-check.conflist"), check.to_string()).unwrap();
        Runtime { node, dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data/mesh")
    }

    fn allocations(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.data().join("ipam"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `driver ACTION ...` in the node's namespace, killed if it runs over 60 s. CHECK
    /// goes through the list without portmap (see [`Runtime::new`]).
    fn run(&self, action: &str, id: &str, pod: Option<&Netns>, caps: &Value, valid: &str) -> Out {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(driver())
            .arg(action)
            .arg(self.dir.path().join(if action == "check" {
                "mesh-check.conflist"
            } else {
                "mesh.conflist"
            }))
            .arg(self.dir.path().join("bin"))
            .arg(self.dir.path().join("cache"))
            .arg(id)
            .arg(pod.map(Netns::path).unwrap_or_default())
            .arg("eth0")
            .arg(caps.to_string())
            .arg(valid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("libcni driver {action} {id} ran over 60 s (killed)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

fn caps(host_port: u16) -> Value {
    json!({
        "bandwidth": {
            "ingressRate": 8_000_000, "ingressBurst": 800_000,
            "egressRate": 8_000_000, "egressBurst": 800_000
        },
        "portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]
    })
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

fn nat_rules(node: &Netns) -> String {
    node.exec("iptables-save", &["-t", "nat"])
        .unwrap_or_default()
}

#[test]
fn cni_chain_add_check_del_through_libcni_with_bandwidth_and_portmap() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let node = Netns::node();
    let pod = Netns::new("chain");
    let rt = Runtime::new(&node);
    let caps = caps(18080);

    let add = rt.run("add", "pod1", Some(&pod), &caps, "-");
    assert!(add.ok, "ADD: {} {}", add.stdout, add.stderr);
    let r = add.json();
    assert_eq!(r["cniVersion"], "1.0.0");
    // Ours came through bandwidth and portmap; each IP points at the pod's eth0.
    assert_eq!(r["ips"][0]["address"], "10.244.1.2/32");
    assert_eq!(r["ips"][1]["address"], "fd00:244:1::2/128");
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    let ifaces = r["interfaces"].as_array().unwrap();
    for ip in r["ips"].as_array().unwrap() {
        let i = ip["interface"].as_u64().unwrap() as usize;
        assert_eq!(ifaces[i]["name"], "eth0", "{r}");
        assert_eq!(ifaces[i]["sandbox"], pod.path(), "{r}");
    }
    let host_if = ifaces[0]["name"].as_str().unwrap().to_string();
    assert!(host_if.starts_with("im"), "{r}");
    // bandwidth shaped our host veth, portmap mapped the port to our address.
    let qdisc = node
        .exec("tc", &["qdisc", "show", "dev", &host_if])
        .unwrap();
    assert!(qdisc.contains("tbf"), "no tbf on {host_if}: {qdisc}");
    let nat = nat_rules(&node);
    assert!(
        nat.contains("--dport 18080") && nat.contains("10.244.1.2:80"),
        "no DNAT 18080 -> 10.244.1.2:80: {nat}"
    );
    assert!(wait_ping(&node, "10.244.1.2"), "node -> pod");
    // libcni cached the chain's result, which is what CHECK and DEL get as prevResult.
    let cached = rt.run("cached", "pod1", Some(&pod), &caps, "-");
    assert!(cached.ok, "{}", cached.stderr);
    assert_eq!(cached.json()["ips"], r["ips"]);

    let check = rt.run("check", "pod1", Some(&pod), &caps, "-");
    assert!(check.ok, "CHECK: {} {}", check.stdout, check.stderr);
    // CHECK runs ours too: a removed address fails it, naming the address.
    pod.ip(&["addr", "del", "10.244.1.2/32", "dev", "eth0"]);
    let check = rt.run("check", "pod1", Some(&pod), &caps, "-");
    assert!(!check.ok, "CHECK passed without the pod's address");
    assert!(check.stderr.contains("10.244.1.2/32"), "{}", check.stderr);

    let del = rt.run("del", "pod1", Some(&pod), &caps, "-");
    assert!(del.ok, "DEL: {} {}", del.stdout, del.stderr);
    assert!(node.exec("ip", &["link", "show", &host_if]).is_err());
    assert!(pod.exec("ip", &["link", "show", "eth0"]).is_err());
    assert!(rt.allocations().is_empty(), "{:?}", rt.allocations());
    assert!(!rt.data().join("endpoints/pod1-eth0.json").exists());
    assert!(!nat_rules(&node).contains("--dport 18080"));
    // DEL again (the runtime retries; libcni has no cached result now): fine.
    let del = rt.run("del", "pod1", Some(&pod), &caps, "-");
    assert!(del.ok, "second DEL: {} {}", del.stdout, del.stderr);
}

#[test]
fn cni_chain_gc_frees_only_attachments_the_runtime_no_longer_lists() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    sweep_stale();
    let node = Netns::node();
    let keep = Netns::new("gckeep");
    let lost = Netns::new("gclost");
    let rt = Runtime::new(&node);
    let a = rt.run("add", "keep", Some(&keep), &caps(18081), "-");
    assert!(a.ok, "ADD keep: {} {}", a.stdout, a.stderr);
    let b = rt.run("add", "lost", Some(&lost), &caps(18082), "-");
    assert!(b.ok, "ADD lost: {} {}", b.stdout, b.stderr);
    let lost_if = b.json()["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let both = rt.allocations();
    assert_eq!(
        both,
        ["10.244.1.2", "10.244.1.3", "fd00:244:1::2", "fd00:244:1::3"]
    );

    // Without the runtime's list: nothing freed, and the runtime is told why.
    let gc = rt.run("gc", "", None, &json!({}), "-");
    assert!(!gc.ok, "GC without valid attachments succeeded");
    assert!(
        gc.stderr.contains("cni.dev/valid-attachments"),
        "{}",
        gc.stderr
    );
    assert_eq!(rt.allocations(), both);
    assert!(node.exec("ip", &["link", "show", &lost_if]).is_ok());

    // With it: only the attachment not listed goes.
    let valid = json!([{"containerID": "keep", "ifname": "eth0"}]).to_string();
    let gc = rt.run("gc", "", None, &json!({}), &valid);
    assert!(gc.ok, "GC: {} {}", gc.stdout, gc.stderr);
    assert_eq!(rt.allocations(), ["10.244.1.2", "fd00:244:1::2"]);
    assert!(node.exec("ip", &["link", "show", &lost_if]).is_err());
    assert!(!rt.data().join("endpoints/lost-eth0.json").exists());
    assert!(rt.data().join("endpoints/keep-eth0.json").exists());
    assert!(wait_ping(&node, "10.244.1.2"), "the kept pod still works");
    let check = rt.run("check", "keep", Some(&keep), &caps(18081), "-");
    assert!(check.ok, "CHECK keep: {} {}", check.stdout, check.stderr);

    // The runtime's DELs afterwards still succeed (the GC'd one finds ours gone).
    for (id, pod, port) in [("lost", &lost, 18082), ("keep", &keep, 18081)] {
        let d = rt.run("del", id, Some(pod), &caps(port), "-");
        assert!(d.ok, "DEL {id}: {} {}", d.stdout, d.stderr);
    }
    assert!(rt.allocations().is_empty());
    let nat = nat_rules(&node);
    assert!(!nat.contains("--dport 1808"), "{nat}");
}
