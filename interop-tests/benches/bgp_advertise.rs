//! Advertising LoadBalancer VIPs through a daemon's own API to BIRD ToRs: bgpd vs GoBGP.
//!
//! A node host runs the daemon under test (AS 65101), dual-homed to two BIRD 2 ToRs (AS 65000,
//! import all, no kernel protocol). Per daemon, one after the other on the same machine:
//! - **idle_rss_mb**: `VmRSS` of the daemon with both sessions up and 1,000 /32 adverts that
//!   both ToRs hold, 3 s after they arrived (the 1,000 are then withdrawn again);
//! - **advertise_seconds**: 10,000 /32 VIPs from 100.64.0.0/10 added through the API in batches
//!   of 1,000 (as a controller would) until ToR 1's BIRD has imported all 10,000 (`Routes: N
//!   imported` of `show protocols all node`, polled every 20 ms);
//! - **withdraw_seconds**: all 10,000 removed the same way until ToR 1 has none.
//!
//! bgpd is driven over its gRPC API (`AddAdverts`/`RemoveAdverts`, Unix socket, one call per
//! batch). GoBGP 3.10 is driven over its own gRPC API, as Cilium's embedded GoBGP is driven by
//! its Go API: one `AddPathStream` call carrying one request of 1,000 paths per batch (the bulk
//! call GoBGP offers; `gobgp global rib add` runs one process per prefix and would measure
//! process start-up), and the withdrawal as the same stream with `is_withdraw` paths (GoBGP
//! has no bulk delete of chosen paths; `DeletePath` takes one path per call). Paths carry ORIGIN
//! IGP and next hop 0.0.0.0 (GoBGP's "self"), as `gobgp global rib add` does.
//!
//! `IRONMESH_BENCH_VIPS` (default 10,000) and `IRONMESH_BENCH_BATCH` (default 1,000) change the
//! sizes; daemons may be named as arguments (`scripts/bench bgp_advertise gobgp`). Every wait is
//! bounded (60 s) and fails loudly; a failed daemon is reported, the others still run, and the
//! benchmark exits non-zero.

// `common` is also a dependency crate name: load the shared module under another name.
#[path = "common/mod.rs"]
mod shared;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use interop_tests::{
    Bgpd, BgpdConfig, BgpdPeer, Bird, BirdConfig, BirdPeer, Gobgp, GobgpConfig, GobgpNeighbor,
    Host, Lab,
};
use shared::{kb_to_mb, r3, s};

const DAEMONS: [&str; 2] = ["bgpd", "gobgp"];
const NODE_ASN: u32 = 65101;
const TOR_ASN: u32 = 65000;
const TOR1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NODE1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const TOR2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NODE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const IDLE_ADVERTS: usize = 1_000;
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// The `n` VIPs from `first` on, as /32s: 100.64.0.0/10 is 4M addresses.
fn vips(first: u32, n: usize) -> Vec<Ipv4Net> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    (0..n as u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(base + first + i), 32).unwrap())
        .collect()
}

/// GoBGP 3.x API messages we use (api/gobgp.proto, api/attribute.proto; package `apipb`),
/// declared by hand with their field numbers: only these few are needed.
mod apipb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Family {
        /// AFI_IP = 1
        #[prost(int32, tag = "1")]
        pub afi: i32,
        /// SAFI_UNICAST = 1
        #[prost(int32, tag = "2")]
        pub safi: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Path {
        #[prost(message, optional, tag = "1")]
        pub nlri: Option<Any>,
        #[prost(message, repeated, tag = "2")]
        pub pattrs: Vec<Any>,
        #[prost(bool, tag = "5")]
        pub is_withdraw: bool,
        #[prost(message, optional, tag = "9")]
        pub family: Option<Family>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AddPathStreamRequest {
        /// TableType GLOBAL = 0
        #[prost(int32, tag = "1")]
        pub table_type: i32,
        #[prost(string, tag = "2")]
        pub vrf_id: String,
        #[prost(message, repeated, tag = "3")]
        pub paths: Vec<Path>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IpAddressPrefix {
        #[prost(uint32, tag = "1")]
        pub prefix_len: u32,
        #[prost(string, tag = "2")]
        pub prefix: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OriginAttribute {
        #[prost(uint32, tag = "1")]
        pub origin: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NextHopAttribute {
        #[prost(string, tag = "1")]
        pub next_hop: String,
    }

    pub fn any(name: &str, m: &impl prost::Message) -> Any {
        Any {
            type_url: format!("type.googleapis.com/apipb.{name}"),
            value: m.encode_to_vec(),
        }
    }
}

/// A gRPC client of gobgpd, connected from inside the node host (its API is on the host's
/// loopback). Must be used on the thread that made it.
struct GobgpApi {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl GobgpApi {
    fn connect() -> Result<GobgpApi, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(s)?;
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
                    .connect_timeout(Duration::from_secs(5))
                    .connect(),
            )
            .map_err(|e| format!("connecting to gobgpd's API: {e}"))?;
        Ok(GobgpApi { rt, channel })
    }

    /// One `AddPathStream` call with one request per batch of paths.
    fn add_path_stream(
        &self,
        prefixes: &[Ipv4Net],
        batch: usize,
        withdraw: bool,
    ) -> Result<(), String> {
        use apipb::*;
        let family = Family { afi: 1, safi: 1 };
        let origin = any("OriginAttribute", &OriginAttribute { origin: 0 });
        let next_hop = any(
            "NextHopAttribute",
            &NextHopAttribute {
                next_hop: "0.0.0.0".into(),
            },
        );
        let reqs: Vec<AddPathStreamRequest> = prefixes
            .chunks(batch)
            .map(|chunk| AddPathStreamRequest {
                table_type: 0,
                vrf_id: String::new(),
                paths: chunk
                    .iter()
                    .map(|p| Path {
                        nlri: Some(any(
                            "IPAddressPrefix",
                            &IpAddressPrefix {
                                prefix_len: u32::from(p.prefix_len()),
                                prefix: p.addr().to_string(),
                            },
                        )),
                        pattrs: vec![origin.clone(), next_hop.clone()],
                        is_withdraw: withdraw,
                        family: Some(family.clone()),
                    })
                    .collect(),
            })
            .collect();
        self.rt.block_on(async {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            grpc.ready()
                .await
                .map_err(|e| format!("gobgpd API not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<AddPathStreamRequest, Empty>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/apipb.GobgpApi/AddPathStream",
            );
            grpc.client_streaming(tonic::Request::new(tokio_stream::iter(reqs)), path, codec)
                .await
                .map(drop)
                .map_err(|e| format!("AddPathStream: {}", e.message()))
        })
    }
}

/// The daemon under test and how its API is driven.
enum Node {
    Bgpd(Bgpd),
    Gobgp(Gobgp),
}

impl Node {
    fn start(name: &str, host: &Host) -> Result<Node, String> {
        Ok(match name {
            "bgpd" => {
                let cfg = BgpdConfig::new(NODE_ASN, &NODE1.to_string())
                    .peer(BgpdPeer::new("tor1", &TOR1.to_string(), TOR_ASN))
                    .peer(BgpdPeer::new("tor2", &TOR2.to_string(), TOR_ASN));
                Node::Bgpd(shared::start_bgpd(host, &cfg.render())?)
            }
            "gobgp" => {
                let mut c = GobgpConfig::new(NODE_ASN, NODE1);
                c.neighbors
                    .push(GobgpNeighbor::new(IpAddr::V4(TOR1), TOR_ASN));
                c.neighbors
                    .push(GobgpNeighbor::new(IpAddr::V4(TOR2), TOR_ASN));
                Node::Gobgp(Gobgp::start(host, &c).map_err(s)?)
            }
            other => return Err(format!("unknown daemon {other}")),
        })
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Node::Bgpd(b) => b.process.pid(),
            Node::Gobgp(g) => g.process.pid(),
        }
    }
}

/// Adds or removes prefixes through the daemon's API in batches.
fn drive(
    node: &Node,
    gobgp: Option<&GobgpApi>,
    prefixes: &[Ipv4Net],
    batch: usize,
    add: bool,
) -> Result<(), String> {
    match node {
        Node::Bgpd(b) => {
            for chunk in prefixes.chunks(batch) {
                if add {
                    let adverts = chunk
                        .iter()
                        .map(|p| interop_tests::bgpd::advert(&p.to_string(), &[], &[]))
                        .collect();
                    b.add_adverts(adverts).map_err(s)?;
                } else {
                    let strs: Vec<String> = chunk.iter().map(|p| p.to_string()).collect();
                    let refs: Vec<&str> = strs.iter().map(String::as_str).collect();
                    b.remove_adverts(&refs).map_err(s)?;
                }
            }
            Ok(())
        }
        Node::Gobgp(_) => gobgp
            .ok_or("no GoBGP API client")?
            .add_path_stream(prefixes, batch, !add),
    }
}

/// Polls `bird`'s import count from the node until it is `want`; returns when it was seen.
fn wait_count(bird: &Bird, want: u64, t0: Instant, what: &str) -> Result<Duration, String> {
    loop {
        let last = shared::bird_imported(bird, "node").map_err(|e| format!("{what}: {e}"))?;
        if last == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > WAIT {
            return Err(format!(
                "{what}: BIRD on {} has {last} routes from the node, want {want}, after {WAIT:?}",
                bird.host.name()
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[derive(Debug)]
struct Outcome {
    advertise_seconds: f64,
    withdraw_seconds: f64,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
    api: &'static str,
}

fn run_one(name: &str, n: usize, batch: usize) -> Result<Outcome, String> {
    let lab = Lab::new(&format!("bgp_advertise_{name}")).map_err(s)?;
    let node_host = lab.host("node").map_err(s)?;
    let tor1_host = lab.host("tor1").map_err(s)?;
    let tor2_host = lab.host("tor2").map_err(s)?;
    lab.link(&node_host, &["192.0.2.2/24"], &tor1_host, &["192.0.2.1/24"])
        .map_err(s)?;
    lab.link(
        &node_host,
        &["198.51.100.2/24"],
        &tor2_host,
        &["198.51.100.1/24"],
    )
    .map_err(s)?;
    let mut tors = Vec::new();
    for (host, id, node) in [(&tor1_host, TOR1, NODE1), (&tor2_host, TOR2, NODE2)] {
        let mut c = BirdConfig::new(id);
        c.peers
            .push(BirdPeer::new("node", TOR_ASN, IpAddr::V4(node), NODE_ASN));
        tors.push(Bird::start(host, &c).map_err(s)?);
    }
    let node = Node::start(name, &node_host)?;
    let pid = node.pid().ok_or(format!("{name} is not running"))?;
    for t in &tors {
        t.wait_established("node", WAIT).map_err(s)?;
    }
    let (tor1, tor2) = (&tors[0], &tors[1]);
    let api = match &node {
        Node::Bgpd(_) => "gRPC AddAdverts/RemoveAdverts, one call per batch (Unix socket)",
        Node::Gobgp(_) => {
            "gRPC AddPathStream, one request per batch (withdraw: is_withdraw paths), TCP loopback"
        }
    };
    // Everything that talks to the API runs in the node's namespace: gobgpd listens on the
    // node's own loopback.
    shared::in_netns(&node_host, || -> Result<Outcome, String> {
        let gobgp = match node {
            Node::Gobgp(_) => Some(GobgpApi::connect()?),
            Node::Bgpd(_) => None,
        };
        let gobgp = gobgp.as_ref();

        // Idle footprint: 2 sessions, 1k adverts held by both ToRs.
        let idle = vips(1 << 20, IDLE_ADVERTS);
        let t = Instant::now();
        drive(&node, gobgp, &idle, batch, true)?;
        for tor in [tor1, tor2] {
            wait_count(tor, IDLE_ADVERTS as u64, t, "idle adverts")?;
        }
        std::thread::sleep(Duration::from_secs(3));
        let idle_rss = shared::must_status_kb(pid, "VmRSS", name)?;
        let t = Instant::now();
        drive(&node, gobgp, &idle, batch, false)?;
        for tor in [tor1, tor2] {
            wait_count(tor, 0, t, "idle adverts withdrawn")?;
        }

        let list = vips(0, n);
        let t0 = Instant::now();
        drive(&node, gobgp, &list, batch, true)?;
        let advertise = wait_count(tor1, n as u64, t0, "advertise")?;
        wait_count(tor2, n as u64, t0, "advertise (ToR 2)")?;
        let t1 = Instant::now();
        drive(&node, gobgp, &list, batch, false)?;
        let withdraw = wait_count(tor1, 0, t1, "withdraw")?;
        wait_count(tor2, 0, t1, "withdraw (ToR 2)")?;
        let peak = shared::must_status_kb(pid, "VmHWM", name)?;
        Ok(Outcome {
            advertise_seconds: advertise.as_secs_f64(),
            withdraw_seconds: withdraw.as_secs_f64(),
            idle_rss_mb: kb_to_mb(idle_rss),
            peak_rss_mb: kb_to_mb(peak),
            api,
        })
    })?
}

fn main() {
    if !shared::invoked_as_bench() {
        return;
    }
    let n = shared::env_usize("IRONMESH_BENCH_VIPS", 10_000);
    let batch = shared::env_usize("IRONMESH_BENCH_BATCH", 1_000).max(1);
    let daemons = shared::selected(&DAEMONS);
    let mut results: Vec<(&str, Result<Outcome, String>)> = Vec::new();
    for d in daemons {
        eprintln!("bgp_advertise: {d} ...");
        let r = run_one(d, n, batch);
        match &r {
            Ok(o) => eprintln!(
                "  {d}: advertise {:.3} s, withdraw {:.3} s, idle RSS {:.1} MB",
                o.advertise_seconds, o.withdraw_seconds, o.idle_rss_mb
            ),
            Err(e) => eprintln!("  {d}: FAILED: {e}"),
        }
        results.push((d, r));
    }
    report(n, batch, &results);
    if results.iter().any(|(_, r)| r.is_err()) {
        eprintln!("bgp_advertise: at least one daemon FAILED (see above)");
        std::process::exit(1);
    }
}

fn report(n: usize, batch: usize, results: &[(&str, Result<Outcome, String>)]) {
    let bgpd = results
        .iter()
        .find(|(n, _)| *n == "bgpd")
        .and_then(|(_, r)| r.as_ref().ok());
    let ratio = |x: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    };
    println!(
        "\nbgp_advertise: {n} /32 VIPs through the daemon's API in batches of {batch}, to a \
         dual-homed node's BIRD ToRs; one daemon at a time on this machine"
    );
    println!(
        "{:<7} {:>12} {:>8} {:>11} {:>8} {:>12} {:>8} {:>12}",
        "daemon",
        "advertise s",
        "vs bgpd",
        "withdraw s",
        "vs bgpd",
        "idle RSS MB",
        "vs bgpd",
        "peak RSS MB"
    );
    let mut ok: Vec<(&str, &Outcome)> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|o| (*n, o)))
        .collect();
    ok.sort_by(|a, b| a.1.advertise_seconds.total_cmp(&b.1.advertise_seconds));
    for (name, o) in &ok {
        println!(
            "{:<7} {:>12.3} {:>8} {:>11.3} {:>8} {:>12.1} {:>8} {:>12.1}",
            name,
            o.advertise_seconds,
            ratio(o.advertise_seconds, bgpd.map(|b| b.advertise_seconds)),
            o.withdraw_seconds,
            ratio(o.withdraw_seconds, bgpd.map(|b| b.withdraw_seconds)),
            o.idle_rss_mb,
            ratio(o.idle_rss_mb, bgpd.map(|b| b.idle_rss_mb)),
            o.peak_rss_mb,
        );
    }
    for (name, r) in results {
        if let Err(e) = r {
            println!("{name:<7} FAILED: {e}");
        }
    }
    println!(
        "\nadvertise/withdraw s: first API call -> ToR 1's BIRD imports all / none (polled every \
         {} ms); idle RSS: VmRSS with 2 sessions and {IDLE_ADVERTS} adverts; peak: VmHWM (MiB)",
        POLL.as_millis()
    );
    for (name, o) in &ok {
        println!("  {name:<6} driven by {}", o.api);
    }
    let mut j = serde_json::Map::new();
    for (name, r) in results {
        let v = match r {
            Ok(o) => json!({
                "advertise_seconds": r3(o.advertise_seconds),
                "withdraw_seconds": r3(o.withdraw_seconds),
                "idle_rss_mb": r3(o.idle_rss_mb),
                "peak_rss_mb": r3(o.peak_rss_mb),
                "api": o.api,
            }),
            Err(e) => json!({ "error": e }),
        };
        j.insert(name.to_string(), v);
    }
    j.insert("vips".into(), json!({ "count": n, "batch": batch }));
    shared::write_json(&Value::Object(j));
}
