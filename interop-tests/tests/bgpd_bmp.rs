//! BMP export (RFC 7854) from bgpd, peering with BIRD 2, decoded by Wireshark's BMP dissector
//! (tshark) as an independent check (`bird_bgp_bmp_*`).

use std::io::Read;
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::bgp::RibKind;
use interop_tests::cmd::wait_for;
use interop_tests::route::find;
use interop_tests::*;

const T: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcpdump(host: &Host, ifname: &str, file: &Path) -> Result<Process> {
    cmd::require_binary("tcpdump", "tcpdump")?;
    let p = host.spawn(
        "tcpdump-bmp",
        "tcpdump",
        &[
            "-i",
            ifname,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            &file.display().to_string(),
            "tcp",
            "port",
            "11019",
        ]
        .map(String::from),
    )?;
    wait_for(
        "tcpdump to listen",
        Duration::from_secs(5),
        Duration::from_millis(50),
        |_| Ok(p.log_tail(4096).contains("listening on").then_some(())),
    )?;
    Ok(p)
}

/// `tshark` fields of every BMP message in the capture, all occurrences, comma-separated.
fn tshark(file: &Path, filter: &str, field: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            &file.display().to_string(),
            "-d",
            "tcp.port==11019,bmp",
            "-Y",
            filter,
        ])
        .args([
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            field,
        ])
        .output()
        .map_err(|e| LabError::Invalid(format!("tshark: {e}")))?;
    if !out.status.success() {
        return Err(LabError::Invalid(format!(
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

#[test]
fn bird_bgp_bmp_export_read_by_tshark() -> Result<()> {
    cmd::require_binary("tshark", "tshark")?;
    let lab = Lab::new("bird_bgp_bmp")?;
    let tor_h = lab.host("tor")?;
    let node_h = lab.host("node")?;
    let mon_h = lab.host("mon")?;
    lab.link(&tor_h, &["192.0.2.1/24"], &node_h, &["192.0.2.2/24"])?;
    let mon_link = lab.link(&node_h, &["198.18.0.1/24"], &mon_h, &["198.18.0.2/24"])?;
    let mut bc = BirdConfig::new("192.0.2.1".parse().unwrap());
    let mut p = BirdPeer::new("node4", 65000, ip("192.0.2.2"), 65101);
    p.hold_time = Some(9);
    bc.peers.push(p);
    bc.statics = vec!["198.51.100.0/24".into()];
    let bird = Bird::start(&tor_h, &bc)?;
    let bgpd = Bgpd::start(
        &node_h,
        r#"
[node]
name = "node1"
cluster = "lab"
[bgp]
local_asn = 65101
router_id = "192.0.2.2"
listen_port = 0
[bgp.bmp]
collectors = ["198.18.0.2:11019"]
[[bgp.peers]]
name = "tor4"
address = "192.0.2.1"
peer_asn = 65000
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
"#,
    )?;
    bgpd.wait_established("tor4", T)?;
    bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| {
        find(r, "198.51.100.0/24").is_some()
    })?;

    // The monitoring station comes up after the session: bgpd (retrying) connects and sends
    // the state so far as its initial dump.
    let pcap = mon_h.path("bmp.pcap");
    let capture = tcpdump(&mon_h, &mon_link.b_if, &pcap)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let connected = Arc::new(AtomicBool::new(false));
    let connected2 = connected.clone();
    let collector = mon_h.spawn_thread("bmp-collector", move || {
        let l = TcpListener::bind("198.18.0.2:11019")
            .map_err(|e| LabError::Invalid(format!("collector bind: {e}")))?;
        l.set_nonblocking(true).ok();
        let start = Instant::now();
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(40) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(LabError::Invalid(format!("no BMP connection: {e}"))),
            }
        };
        connected2.store(true, Ordering::Relaxed);
        s.set_nonblocking(false).ok();
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut total = 0usize;
        let mut buf = [0u8; 4096];
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(90) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {}
            }
        }
        Ok(total)
    })?;
    // Then, once the BMP session is up and its dump sent, a live change: BIRD announces one
    // more prefix.
    wait_for(
        "bgpd's BMP session",
        Duration::from_secs(40),
        Duration::from_millis(50),
        |_| Ok(connected.load(Ordering::Relaxed).then_some(())),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    bc.statics.push("203.0.113.0/24".into());
    bird.reconfigure(&bc)?;
    bgpd.wait_routes(RibKind::AdjIn, "tor4", T, |r| {
        find(r, "203.0.113.0/24").is_some()
    })?;
    wait_for(
        "the live UPDATE in the capture",
        T,
        Duration::from_millis(300),
        |_| {
            Ok(tshark(&pcap, "bmp.type == 0", "bgp.nlri_prefix")?
                .contains(&"203.0.113.0".to_string())
                .then_some(()))
        },
    )?;
    stop.store(true, Ordering::Relaxed);
    let bytes = collector.join().expect("collector thread")?;
    capture.terminate();
    assert!(bytes > 0);

    // Wireshark's dissector reads every message, finds nothing malformed.
    assert_eq!(
        tshark(&pcap, "_ws.malformed", "frame.number")?,
        Vec::<String>::new()
    );
    let types = tshark(&pcap, "bmp", "bmp.type")?;
    for (t, what) in [
        ("4", "Initiation"),
        ("3", "Peer Up"),
        ("0", "Route Monitoring"),
        ("1", "Statistics"),
    ] {
        assert!(types.contains(&t.to_string()), "no {what} in {types:?}");
    }
    let peers = tshark(&pcap, "bmp.type == 3", "bmp.peer.ip.addr")?;
    assert!(peers.contains(&"192.0.2.1".to_string()), "{peers:?}");
    assert!(tshark(&pcap, "bmp.type == 3", "bmp.peer.asn")?.contains(&"65000".to_string()));
    // Dump (post-policy, L set) and live (pre-policy) route monitoring both decode to BIRD's
    // prefixes; the statistics count the one route of the dump.
    let prefixes = tshark(&pcap, "bmp.type == 0", "bgp.nlri_prefix")?;
    for p in ["198.51.100.0", "203.0.113.0"] {
        assert!(prefixes.contains(&p.to_string()), "{p} not in {prefixes:?}");
    }
    let flags = tshark(&pcap, "bmp.type == 0", "bmp.peer.flags.post_policy")?;
    assert!(flags.iter().any(|f| f == "1" || f == "True"), "{flags:?}");
    assert!(flags.iter().any(|f| f == "0" || f == "False"), "{flags:?}");
    let stats = tshark(&pcap, "bmp.type == 1", "bmp.stats.data.routes_adj_rib_in")?;
    assert!(stats.contains(&"1".to_string()), "{stats:?}");
    Ok(())
}
