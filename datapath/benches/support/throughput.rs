//! iperf3 pod-to-pod throughput across two nodes, one run per routing mode, side by side:
//! - plain: veth pods routed by the kernel, no BPF anywhere (the baseline);
//! - native: our programs on the pod veths and the uplink (bpf_fib_lookup + redirect_neigh);
//! - vxlan: our programs on the pod veths and an `external` VXLAN device (identity in the VNI).
//!
//! Pods are attached by the real CNI plugin; each mode gets a fresh lab (namespaces gone on
//! drop) and per-node pin roots (removed on drop).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use interop_tests::{Host, Lab};
use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::pin::PinRoot;
use ironmesh_datapath::{Config, Datapath, Endpoint, Routing};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Plain,
    Native,
    Vxlan,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Plain, Mode::Native, Mode::Vxlan];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Native => "native",
            Mode::Vxlan => "vxlan",
        }
    }
}

/// Removes a pin root and its pins (maps, links), also on error.
struct Pins(PinRoot);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.path()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.path());
    }
}

fn ifindex(host: &Host, name: &str) -> Res<u32> {
    let out = host.ip(&["-o", "link", "show", name])?;
    Ok(out.split(':').next().unwrap_or("").trim().parse()?)
}

struct Node {
    host: Host,
    underlay: Ipv4Addr,
    cidr: &'static str,
    dp: Option<(Datapath, Pins)>,
}

/// Two nodes with a pod each, wired for one mode; kept up so runs of the modes can alternate.
pub struct Setup {
    pub mode: Mode,
    pods: Vec<(Host, Ipv4Addr, String)>,
    _nodes: Vec<Node>,
    _lab: Lab,
}

impl Setup {
    /// One iperf3 TCP stream of `seconds` from pod a to pod b: bits per second received.
    pub fn iperf(&self, seconds: u32) -> Res<f64> {
        let (pa, pb) = (&self.pods[0], &self.pods[1]);
        iperf(&pa.0, &pb.0, &pb.1.to_string(), seconds)
    }
}

/// Builds the lab for `mode` and checks the pods reach each other.
pub fn setup(cni: &Path, mode: Mode) -> Res<Setup> {
    let lab = Lab::new(&format!("bench_tput_{}", mode.name()))?;
    let n1 = lab.host("n1")?;
    let n2 = lab.host("n2")?;
    lab.link(&n1, &["192.0.2.1/24"], &n2, &["192.0.2.2/24"])?;
    let mtu = if mode == Mode::Vxlan { 1450 } else { 1500 };
    let mut nodes = vec![
        Node {
            host: n1,
            underlay: Ipv4Addr::new(192, 0, 2, 1),
            cidr: "10.244.1.0/24",
            dp: None,
        },
        Node {
            host: n2,
            underlay: Ipv4Addr::new(192, 0, 2, 2),
            cidr: "10.244.2.0/24",
            dp: None,
        },
    ];
    for i in 0..2 {
        let other = &nodes[1 - i];
        let route = format!("{} via {}", other.cidr, other.underlay);
        let node = &mut nodes[i];
        if mode != Mode::Vxlan {
            node.host.route_add(&route)?;
        }
        if mode == Mode::Plain {
            continue;
        }
        let root = PinRoot::new(format!("/sys/fs/bpf/{}-{}", lab.id(), node.host.name()))?;
        let pins = Pins(root.clone());
        let mut dp = Datapath::load(&root)?;
        let routing = if mode == Mode::Native {
            node.host.in_netns(|| dp.attach_uplink("eth0"))??;
            Routing::Native
        } else {
            node.host.ip(&[
                "link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789",
            ])?;
            node.host.ip(&["link", "set", "vx0", "mtu", "1450", "up"])?;
            node.host.in_netns(|| dp.attach_overlay("vx0"))??;
            Routing::Vxlan {
                ifindex: ifindex(&node.host, "vx0")?,
            }
        };
        dp.set_config(&Config {
            routing,
            ..Default::default()
        })?;
        node.dp = Some((dp, pins));
    }

    let mut pods = Vec::new();
    for (i, name) in ["pa", "pb"].into_iter().enumerate() {
        let pod = lab.host(name)?;
        let conf = serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "mesh",
            "type": "ironmesh-cni",
            "dataDir": lab.dir().join(format!("n{i}-cni")),
            "mtu": mtu,
            "ipam": {"type": "ironmesh", "podCIDR": nodes[i].cidr},
        });
        let (ip, host_if) = interop_tests::cni::add(cni, &nodes[i].host, &pod, name, &conf)?;
        pods.push((pod, ip, host_if));
    }
    if mode != Mode::Plain {
        for (p, (_, ip, host_if)) in pods.iter().enumerate() {
            let identity = 1000 + p as u32;
            for n in 0..2 {
                let underlay = nodes[p].underlay;
                let mut v = IpcacheValue {
                    identity,
                    ..Default::default()
                };
                if n != p && mode == Mode::Vxlan {
                    v = v.with_tunnel(underlay);
                }
                let (dp, _) = nodes[n].dp.as_mut().expect("loaded");
                dp.ipcache_upsert(IpAddr::V4(*ip).into(), v)?;
            }
            let node = &mut nodes[p];
            let index = ifindex(&node.host, host_if)?;
            let (dp, _) = node.dp.as_mut().expect("loaded");
            dp.upsert_endpoint(&Endpoint {
                id: p as u32 + 1,
                identity,
                ifindex: index,
                addresses: vec![IpAddr::V4(*ip)],
            })?;
            node.host.in_netns(|| dp.attach(host_if))??;
        }
    }
    let (pa, pb) = (&pods[0], &pods[1]);
    let ping =
        pa.0.ping(&pb.1.to_string(), 3, Duration::from_millis(100))?;
    if ping.received == 0 {
        return Err(format!("{}: pod a cannot reach pod b: {ping:?}", mode.name()).into());
    }
    Ok(Setup {
        mode,
        pods,
        _nodes: nodes,
        _lab: lab,
    })
}

/// One iperf3 TCP run from `a` to `dst` (server in `b`); bits per second received.
fn iperf(a: &Host, b: &Host, dst: &str, seconds: u32) -> Res<f64> {
    let server = b.spawn(
        "iperf3-server",
        "iperf3",
        &["-s", "-1", "-p", "5201"].map(String::from),
    )?;
    let t = Instant::now();
    while !b.exec("ss", &["-ltnH"])?.contains(":5201") {
        if t.elapsed() > Duration::from_secs(5) {
            return Err("iperf3 server did not listen within 5 s (apt install iperf3)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = seconds.to_string();
    let out = a.exec("iperf3", &["-c", dst, "-p", "5201", "-t", &secs, "--json"])?;
    server.terminate();
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("no bits_per_second in iperf3's JSON: {out}").into())
}
