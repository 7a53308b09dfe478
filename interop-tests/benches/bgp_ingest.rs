//! Full-table ingest over a real BGP session, side by side: bgpd, BIRD 2, GoBGP and FRR.
//!
//! A feeder (a minimal BGP speaker written here with bgpd's codec, on a thread inside its own lab
//! host) listens on 192.0.2.1:179; the daemon under test, in a second host, connects to it. The
//! feeder sends OPEN (multiprotocol IPv4 + IPv6 unicast, 4-octet AS, route refresh), answers
//! with KEEPALIVEs, waits for a go from the benchmark, then writes a generated table as packed
//! UPDATEs (1M IPv4 + 200k IPv6 prefixes by default, ~50k attribute sets with skewed sharing,
//! AS paths of 2-8 ASNs, some 4-octet, communities, MEDs, large communities) and End-of-RIB for
//! both families, then keeps the session up with KEEPALIVEs.
//!
//! Per daemon, one after the other on the same machine and the same feed:
//! - **seconds**: from the first UPDATE byte written until the daemon's own count of the peer's
//!   routes reaches the table size (polled every 200 ms): bgpd's `prefixes_accepted` counter
//!   (gRPC `ListPeers`, answered by the core task after the RIB flush, so the routes are in the
//!   Loc-RIB), BIRD's `Routes: N imported` (`show protocols all feed`), GoBGP's global RIB
//!   (`gobgp global rib summary`, destinations), FRR's `pfxRcd` (`show bgp summary json`);
//! - **settled_seconds**: when the daemon's CPU then went quiet (<10% over 500 ms), which also
//!   covers work a daemon does after counting (FRR runs best-path selection from a work queue);
//! - **rss_mb**: peak RSS (`VmHWM` of the daemon's process) in MiB, read after settling;
//! - **bytes_per_route**: (`VmHWM` - `VmRSS` just before the feed) / routes.
//!
//! Import policy accept-all everywhere, nothing installed in the kernel: bgpd has no kernel FIB
//! writer yet, BIRD runs without a `kernel` protocol, GoBGP without zebra, FRR's bgpd with `-Z`
//! (no zebra). Each daemon sees the same bytes.
//!
//! `IRONMESH_BENCH_PREFIXES` (IPv4 count, default 1,000,000) and `IRONMESH_BENCH_PREFIXES6`
//! (default a fifth of it) shrink the table for quick runs; `IRONMESH_BENCH_TIMEOUT` (seconds,
//! default 180) bounds each daemon's ingest. Daemons may be named as arguments:
//! `scripts/bench bgp_ingest bgpd bird`. A daemon that fails or times out is reported loudly,
//! the others still run, and the benchmark exits non-zero.

// `common` is also a dependency crate name: load the shared module under another name.
#[path = "common/mod.rs"]
mod shared;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};
use ironmesh_bgpd::synth::{self, Rng};
use ironmesh_bgpd::wire::{
    AS_TRANS, Afi, Capability, Context, Message, MpNextHop, OpenMsg, Safi, UpdateBuilder, UpdateMsg,
};
use serde_json::{Value, json};

use interop_tests::{
    BgpdConfig, BgpdPeer, Bird, BirdConfig, BirdPeer, Frr, FrrConfig, FrrNeighbor, Gobgp,
    GobgpConfig, GobgpNeighbor, Host, Lab,
};
use shared::{kb_to_mb, r3, s};

const DAEMONS: [&str; 4] = ["bgpd", "bird", "gobgp", "frr"];
const SUT_ASN: u32 = 65000;
const FEED_ASN: u32 = 65010;
const FEED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SUT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const FEED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const HOLD_TIME: u16 = 90;
const POLL: Duration = Duration::from_millis(200);

fn ctx() -> Context {
    Context {
        four_octet_as: true,
        extended_message: false,
    }
}

// ---------------------------------------------------------------------------------------------
// The table (`ironmesh_bgpd::synth`, as in bgpd/benches/rib_ingest.rs, with the feeder's next hops).

/// The encoded feed: packed UPDATEs, one run per attribute set, then End-of-RIB for both
/// families.
struct Feed {
    bytes: Bytes,
    messages: usize,
    v4: usize,
    v6: usize,
    attr_sets: usize,
}

impl Feed {
    fn routes(&self) -> u64 {
        (self.v4 + self.v6) as u64
    }
}

fn generate(v4n: usize, v6n: usize) -> Feed {
    let mut rng = Rng(0x1e03_e5b9);
    let n_sets = ((v4n + v6n) / 24).max(16);
    // Keep the lab link's own subnet and the host/link-scope ranges BIRD refuses as BGP
    // routes (127/8, 169.254/16) out of the table: a real table has none of them.
    let v4 = synth::v4_prefixes(&mut rng, v4n, |p| {
        let o = p.addr().octets();
        let martian = o[0] == 127 || (o[0] == 169 && (p.prefix_len() < 16 || o[1] == 254));
        !martian && !p.contains(&FEED_V4)
    });
    let v6 = synth::v6_prefixes(&mut rng, v6n, |p| !p.contains(&FEED_V6));
    // Never SUT_ASN (65000) in a path: synth's ASNs are 1..64000 or 200000..400000.
    let sets = synth::attr_sets(&mut rng, n_sets, FEED_ASN);
    let pick = |rng: &mut Rng| synth::pick_set(rng, n_sets);
    let mut by4: Vec<Vec<Ipv4Net>> = vec![Vec::new(); n_sets];
    let mut by6: Vec<Vec<Ipv6Net>> = vec![Vec::new(); n_sets];
    for p in v4 {
        by4[pick(&mut rng)].push(p);
    }
    for p in v6 {
        by6[pick(&mut rng)].push(p);
    }
    let b = UpdateBuilder::new(ctx());
    let nh4 = MpNextHop::Ipv4(FEED_V4);
    let nh6 = MpNextHop::Ipv6 {
        global: FEED_V6,
        link_local: None,
    };
    let mut buf = BytesMut::new();
    let mut messages = 0;
    let mut used_sets = 0;
    for i in 0..n_sets {
        used_sets += usize::from(!by4[i].is_empty() || !by6[i].is_empty());
        if !by4[i].is_empty() {
            messages += b.announce_ipv4(&sets[i], nh4, &by4[i], &mut buf).unwrap();
        }
        if !by6[i].is_empty() {
            messages += b.announce_ipv6(&sets[i], nh6, &by6[i], &mut buf).unwrap();
        }
    }
    for afi in [Afi::IPV4, Afi::IPV6] {
        let eor = UpdateMsg::end_of_rib_marker(afi, Safi::UNICAST);
        Message::Update(Box::new(eor))
            .encode(&mut buf, &ctx())
            .unwrap();
        messages += 1;
    }
    Feed {
        bytes: buf.freeze(),
        messages,
        v4: v4n,
        v6: v6n,
        attr_sets: used_sets,
    }
}

// ---------------------------------------------------------------------------------------------
// The feeder.

enum FeedEvent {
    Listening,
    Established(String),
    /// The first UPDATE byte is about to be written.
    Started(Instant),
    /// The whole feed (and End-of-RIB) is in the socket.
    Sent(Instant),
    Error(String),
}

struct Feeder {
    events: mpsc::Receiver<FeedEvent>,
    go: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    /// Errors the reader thread saw (NOTIFICATION, close).
    reader_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Feeder {
    fn start(host: &Host, feed: Bytes) -> Feeder {
        let (ev_tx, events) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let reader_error = Arc::new(std::sync::Mutex::new(None));
        let (st, re) = (stop.clone(), reader_error.clone());
        let tx = ev_tx.clone();
        let _detached = host
            .spawn_thread("feeder", move || {
                let r = feed_session(feed, &tx, go_rx, st, re);
                if let Err(e) = &r {
                    let _ = tx.send(FeedEvent::Error(e.clone()));
                }
                r.map_err(interop_tests::LabError::Invalid)
            })
            .expect("spawning the feeder thread");
        Feeder {
            events,
            go,
            stop,
            reader_error,
        }
    }

    /// The next event, failing on feeder errors and after `timeout`.
    fn expect(&self, what: &str, timeout: Duration) -> Result<FeedEvent, String> {
        match self.events.recv_timeout(timeout) {
            Ok(FeedEvent::Error(e)) => Err(format!("feeder: {e}")),
            Ok(ev) => Ok(ev),
            Err(_) => Err(format!("feeder: no {what} within {timeout:?}")),
        }
    }

    /// Fails if the session broke (NOTIFICATION from the daemon, connection closed).
    fn check(&self) -> Result<(), String> {
        if let Some(e) = self.reader_error.lock().unwrap().clone() {
            return Err(format!("feeder session: {e}"));
        }
        Ok(())
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn encode(m: &Message) -> Bytes {
    m.to_bytes(&ctx()).expect("encoding a feeder message")
}

/// Reads one message, blocking (the socket has a read timeout).
fn read_msg(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Message, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(m) = Message::decode_from(buf, &ctx()).map_err(|e| format!("decode: {e:?}"))? {
            return Ok(m);
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the daemon".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn feed_session(
    feed: Bytes,
    events: &mpsc::Sender<FeedEvent>,
    go: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
    reader_error: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(), String> {
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(FEED_V4), 179))
        .map_err(|e| format!("bind {FEED_V4}:179: {e}"))?;
    listener.set_nonblocking(true).map_err(s)?;
    let _ = events.send(FeedEvent::Listening);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match listener.accept() {
            Ok((st, _)) => break st,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                    return Err("the daemon did not connect within 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    drop(listener);
    stream.set_nonblocking(false).map_err(s)?;
    stream.set_nodelay(true).map_err(s)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(s)?;
    let open = Message::Open(OpenMsg {
        my_as: AS_TRANS,
        hold_time: HOLD_TIME,
        bgp_id: FEED_V4,
        capabilities: vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(FEED_ASN),
        ],
    });
    stream.write_all(&encode(&open)).map_err(s)?;
    let mut buf = BytesMut::new();
    let their_open = match read_msg(&mut stream, &mut buf)? {
        Message::Open(o) => o,
        Message::Notification(n) => return Err(format!("NOTIFICATION instead of OPEN: {n:?}")),
        m => return Err(format!("expected OPEN, got {:?}", m.msg_type())),
    };
    let hold = their_open.hold_time.min(HOLD_TIME);
    stream.write_all(&encode(&Message::Keepalive)).map_err(s)?;
    match read_msg(&mut stream, &mut buf)? {
        Message::Keepalive => {}
        Message::Notification(n) => {
            return Err(format!("NOTIFICATION instead of KEEPALIVE: {n:?}"));
        }
        m => return Err(format!("expected KEEPALIVE, got {:?}", m.msg_type())),
    }
    let _ = events.send(FeedEvent::Established(format!(
        "AS{} id {} hold {hold}s, {} capabilities",
        their_open.asn(),
        their_open.bgp_id,
        their_open.capabilities.len()
    )));

    // Drain whatever the daemon sends (KEEPALIVEs), failing on NOTIFICATION or close.
    let mut reader = stream.try_clone().map_err(s)?;
    reader.set_read_timeout(None).map_err(s)?;
    let (rstop, rerr) = (stop.clone(), reader_error.clone());
    std::thread::spawn(move || {
        loop {
            match read_msg(&mut reader, &mut buf) {
                Ok(Message::Notification(n)) => {
                    *rerr.lock().unwrap() = Some(format!("NOTIFICATION from the daemon: {n:?}"));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    if !rstop.load(Ordering::Relaxed) {
                        *rerr.lock().unwrap() = Some(e);
                    }
                    return;
                }
            }
        }
    });

    let keepalive = Duration::from_secs(u64::from(hold / 3).max(1));
    let mut last_sent = Instant::now();
    // Keep the session up until the benchmark says go.
    loop {
        match go.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if last_sent.elapsed() >= keepalive {
            stream.write_all(&encode(&Message::Keepalive)).map_err(s)?;
            last_sent = Instant::now();
        }
    }
    let _ = events.send(FeedEvent::Started(Instant::now()));
    stream
        .write_all(&feed)
        .map_err(|e| format!("writing the feed: {e}"))?;
    let _ = events.send(FeedEvent::Sent(Instant::now()));
    let mut last_sent = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_sent.elapsed() >= keepalive {
            stream.write_all(&encode(&Message::Keepalive)).map_err(s)?;
            last_sent = Instant::now();
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The daemons under test.

enum Sut {
    Bgpd(interop_tests::Bgpd),
    Bird(Bird),
    Gobgp(Gobgp),
    Frr(Frr),
}

impl Sut {
    fn start(name: &str, host: &Host) -> Result<Sut, String> {
        let feed = IpAddr::V4(FEED_V4);
        Ok(match name {
            "bgpd" => {
                let mut p = BgpdPeer::new("feed", &FEED_V4.to_string(), FEED_ASN);
                p.hold_time = HOLD_TIME;
                p.families = vec!["ipv4-unicast".into(), "ipv6-unicast".into()];
                let cfg = BgpdConfig::new(SUT_ASN, &SUT_V4.to_string()).peer(p);
                Sut::Bgpd(shared::start_bgpd(host, &cfg.render())?)
            }
            "bird" => {
                let mut c = BirdConfig::new(SUT_V4);
                let mut p = BirdPeer::new("feed", SUT_ASN, feed, FEED_ASN);
                p.ipv4 = true;
                p.ipv6 = true;
                p.hold_time = Some(HOLD_TIME);
                c.peers.push(p);
                Sut::Bird(Bird::start(host, &c).map_err(s)?)
            }
            "gobgp" => {
                let mut c = GobgpConfig::new(SUT_ASN, SUT_V4);
                let mut n = GobgpNeighbor::new(feed, FEED_ASN);
                n.families = vec!["ipv4-unicast", "ipv6-unicast"];
                c.neighbors.push(n);
                Sut::Gobgp(Gobgp::start(host, &c).map_err(s)?)
            }
            "frr" => {
                let mut c = FrrConfig::new(SUT_ASN, SUT_V4);
                let mut n = FrrNeighbor::new(feed, FEED_ASN);
                n.ipv4 = true;
                n.ipv6 = true;
                c.neighbors.push(n);
                c.with_zebra = false;
                Sut::Frr(Frr::start(host, &c).map_err(s)?)
            }
            other => return Err(format!("unknown daemon {other}")),
        })
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Sut::Bgpd(b) => b.process.pid(),
            Sut::Bird(b) => b.process.pid(),
            Sut::Gobgp(g) => g.process.pid(),
            Sut::Frr(f) => f.bgpd.pid(),
        }
    }

    fn kernel(&self) -> &'static str {
        match self {
            Sut::Bgpd(_) => "no [bgp.fib] configured, so bgpd installs nothing",
            Sut::Bird(_) => "no kernel protocol configured",
            Sut::Gobgp(_) => "no zebra (GoBGP default)",
            Sut::Frr(_) => "bgpd -Z, no zebra",
        }
    }

    fn how_counted(&self) -> &'static str {
        match self {
            Sut::Bgpd(_) => "ListPeers prefixes_accepted (after the core's RIB flush)",
            Sut::Bird(_) => "show protocols all: Routes imported",
            Sut::Gobgp(_) => "gobgp global rib summary: destinations",
            Sut::Frr(_) => "show bgp summary json: pfxRcd",
        }
    }

    /// The daemon's own count of the feeder's routes (both families).
    fn count(&self) -> Result<u64, String> {
        match self {
            Sut::Bgpd(b) => Ok(b
                .peer("feed")
                .map_err(s)?
                .counters
                .map(|c| c.prefixes_accepted)
                .unwrap_or(0)),
            Sut::Bird(b) => shared::bird_imported(b, "feed"),
            Sut::Gobgp(g) => {
                let mut total = 0;
                for afi in ["ipv4", "ipv6"] {
                    let out = g.cli(&["global", "rib", "summary", "-a", afi]).map_err(s)?;
                    // "Table ipv4-unicast\nDestination: 1000, Path: 1000"
                    total += out
                        .split("Destination:")
                        .nth(1)
                        .and_then(|r| r.split(',').next())
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .ok_or_else(|| format!("gobgp global rib summary: {out}"))?;
                }
                Ok(total)
            }
            Sut::Frr(f) => {
                let out = f.vtysh(&["show bgp summary json"]).map_err(s)?;
                let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
                let peer = FEED_V4.to_string();
                Ok(["ipv4Unicast", "ipv6Unicast"]
                    .iter()
                    .filter_map(|af| v[af]["peers"][&peer]["pfxRcd"].as_u64())
                    .sum())
            }
        }
    }
}

#[derive(Debug)]
struct Outcome {
    seconds: f64,
    settled_seconds: Option<f64>,
    feed_written_seconds: Option<f64>,
    rss_before_mb: f64,
    rss_mb: f64,
    bytes_per_route: f64,
    kernel: &'static str,
    counted_by: &'static str,
}

fn run_one(name: &str, feed: &Feed, timeout: Duration) -> Result<Outcome, String> {
    let lab = Lab::new(&format!("bgp_ingest_{name}")).map_err(s)?;
    let feeder_host = lab.host("feed").map_err(s)?;
    let sut_host = lab.host("sut").map_err(s)?;
    lab.link(
        &feeder_host,
        &["192.0.2.1/24", "2001:db8::1/64"],
        &sut_host,
        &["192.0.2.2/24", "2001:db8::2/64"],
    )
    .map_err(s)?;
    let feeder = Feeder::start(&feeder_host, feed.bytes.clone());
    match feeder.expect("listening socket", Duration::from_secs(10))? {
        FeedEvent::Listening => {}
        _ => return Err("feeder: unexpected event before listening".into()),
    }
    let sut = Sut::start(name, &sut_host)?;
    let pid = sut.pid().ok_or(format!("{name} is not running"))?;
    let peer = match feeder.expect("session (Established)", Duration::from_secs(60))? {
        FeedEvent::Established(p) => p,
        _ => return Err("feeder: unexpected event before Established".into()),
    };
    eprintln!("  {name}: pid {pid}, session up with {peer}");
    // Let the daemon settle after session setup, then take the baseline.
    std::thread::sleep(Duration::from_secs(1));
    feeder.check()?;
    let rss_before = shared::must_status_kb(pid, "VmRSS", name)?;
    feeder.go.send(()).map_err(|_| "feeder gone before go")?;
    let t0 = match feeder.expect("start of feed", Duration::from_secs(5))? {
        FeedEvent::Started(t) => t,
        _ => return Err("feeder: unexpected event before the feed".into()),
    };
    let want = feed.routes();
    let mut written = None;
    let mut last = 0;
    let mut next_report = Duration::from_secs(10);
    let seconds = loop {
        while let Ok(ev) = feeder.events.try_recv() {
            match ev {
                FeedEvent::Sent(t) => written = Some(t.duration_since(t0).as_secs_f64()),
                FeedEvent::Error(e) => return Err(format!("feeder: {e}")),
                _ => {}
            }
        }
        feeder.check()?;
        if sut.pid().is_none() {
            return Err(format!("{name} exited during the feed"));
        }
        // A failed query (daemon busy) counts as "not yet".
        if let Ok(n) = sut.count() {
            last = n;
        }
        let elapsed = t0.elapsed();
        if last >= want {
            break elapsed.as_secs_f64();
        }
        if elapsed > timeout {
            return Err(format!(
                "{name}: timed out after {timeout:?} with {last} of {want} routes \
                 (raise IRONMESH_BENCH_TIMEOUT or lower IRONMESH_BENCH_PREFIXES)"
            ));
        }
        if elapsed > next_report {
            eprintln!("  {name}: {last} of {want} routes after {elapsed:.0?}");
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(POLL);
    };
    let settled = shared::settle(pid, t0, Duration::from_secs(60)).map(|d| d.as_secs_f64());
    // Written-out time arrives at the latest when the daemon has read everything.
    if written.is_none()
        && let Ok(FeedEvent::Sent(t)) = feeder.events.recv_timeout(Duration::from_secs(5))
    {
        written = Some(t.duration_since(t0).as_secs_f64());
    }
    feeder.check()?;
    let hwm = shared::must_status_kb(pid, "VmHWM", name)?;
    let bytes_per_route = (hwm.saturating_sub(rss_before) * 1024) as f64 / want as f64;
    let out = Outcome {
        seconds,
        settled_seconds: settled,
        feed_written_seconds: written,
        rss_before_mb: kb_to_mb(rss_before),
        rss_mb: kb_to_mb(hwm),
        bytes_per_route,
        kernel: sut.kernel(),
        counted_by: sut.how_counted(),
    };
    drop(feeder);
    drop(sut);
    drop(lab);
    Ok(out)
}

fn main() {
    if !shared::invoked_as_bench() {
        return;
    }
    let v4 = shared::env_usize("IRONMESH_BENCH_PREFIXES", 1_000_000);
    let v6 = shared::env_usize("IRONMESH_BENCH_PREFIXES6", v4 / 5);
    let timeout = Duration::from_secs(shared::env_usize("IRONMESH_BENCH_TIMEOUT", 180) as u64);
    let daemons = shared::selected(&DAEMONS);
    let t = Instant::now();
    let feed = generate(v4, v6);
    eprintln!(
        "bgp_ingest: feed of {} IPv4 + {} IPv6 prefixes, {} attribute sets, {} UPDATEs, {:.1} MB \
         (generated in {:.1?}); daemons: {}",
        feed.v4,
        feed.v6,
        feed.attr_sets,
        feed.messages,
        feed.bytes.len() as f64 / 1e6,
        t.elapsed(),
        daemons.join(", ")
    );
    let mut results: Vec<(&str, Result<Outcome, String>)> = Vec::new();
    for d in daemons {
        eprintln!("bgp_ingest: {d} ...");
        let r = run_one(d, &feed, timeout);
        match &r {
            Ok(o) => eprintln!(
                "  {d}: {:.2} s, peak RSS {:.1} MB, {:.0} bytes/route",
                o.seconds, o.rss_mb, o.bytes_per_route
            ),
            Err(e) => eprintln!("  {d}: FAILED: {e}"),
        }
        results.push((d, r));
    }
    report(&feed, &results);
    if results.iter().any(|(_, r)| r.is_err()) {
        eprintln!("bgp_ingest: at least one daemon FAILED (see above)");
        std::process::exit(1);
    }
}

fn report(feed: &Feed, results: &[(&str, Result<Outcome, String>)]) {
    let bgpd = results
        .iter()
        .find(|(n, _)| *n == "bgpd")
        .and_then(|(_, r)| r.as_ref().ok());
    let mut ok: Vec<(&str, &Outcome)> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|o| (*n, o)))
        .collect();
    ok.sort_by(|a, b| a.1.seconds.total_cmp(&b.1.seconds));
    println!(
        "\nbgp_ingest: {} IPv4 + {} IPv6 prefixes ({} attribute sets, {} UPDATEs, {:.1} MB) over \
         one eBGP session, same feed, one daemon at a time on this machine",
        feed.v4,
        feed.v6,
        feed.attr_sets,
        feed.messages,
        feed.bytes.len() as f64 / 1e6
    );
    println!(
        "{:<7} {:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8} {:>9}",
        "daemon",
        "seconds",
        "vs bgpd",
        "settled s",
        "wrote s",
        "peak MB",
        "vs bgpd",
        "B/route",
        "vs bgpd"
    );
    let ratio = |x: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".into(),
    };
    let opt = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    for (n, o) in &ok {
        println!(
            "{:<7} {:>9.2} {:>9} {:>10} {:>8} {:>9.1} {:>9} {:>8.0} {:>9}",
            n,
            o.seconds,
            ratio(o.seconds, bgpd.map(|b| b.seconds)),
            opt(o.settled_seconds),
            opt(o.feed_written_seconds),
            o.rss_mb,
            ratio(o.rss_mb, bgpd.map(|b| b.rss_mb)),
            o.bytes_per_route,
            ratio(o.bytes_per_route, bgpd.map(|b| b.bytes_per_route)),
        );
    }
    for (n, r) in results {
        if let Err(e) = r {
            println!("{n:<7} FAILED: {e}");
        }
    }
    println!(
        "\nseconds: first UPDATE written -> daemon's own count of the feed's routes complete \
         (polled every {} ms)",
        POLL.as_millis()
    );
    println!(
        "settled s: CPU quiet (<10% over 500 ms) afterwards; wrote s: last feed byte accepted by \
         the socket; peak MB: VmHWM (MiB); B/route: (VmHWM - VmRSS before the feed) / routes"
    );
    for (n, o) in &ok {
        println!(
            "  {n:<6} counted by {}; kernel: {}; RSS before feed {:.1} MB",
            o.counted_by, o.kernel, o.rss_before_mb
        );
    }
    let mut j = serde_json::Map::new();
    for (n, r) in results {
        let v = match r {
            Ok(o) => json!({
                "seconds": r3(o.seconds),
                "rss_mb": r3(o.rss_mb),
                "bytes_per_route": r3(o.bytes_per_route),
                "settled_seconds": o.settled_seconds.map(r3),
                "feed_written_seconds": o.feed_written_seconds.map(r3),
                "rss_before_mb": r3(o.rss_before_mb),
                "counted_by": o.counted_by,
                "kernel": o.kernel,
            }),
            Err(e) => json!({ "error": e }),
        };
        j.insert(n.to_string(), v);
    }
    j.insert(
        "feed".into(),
        json!({
            "ipv4_prefixes": feed.v4,
            "ipv6_prefixes": feed.v6,
            "attribute_sets": feed.attr_sets,
            "update_messages": feed.messages,
            "bytes": feed.bytes.len(),
        }),
    );
    shared::write_json(&Value::Object(j));
}
