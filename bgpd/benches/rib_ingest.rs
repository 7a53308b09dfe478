//! Full-table ingest into the RIB: 1M IPv4 + 200k IPv6 prefixes from one eBGP peer, as packed
//! UPDATEs decoded by the codec (as the speaker would), then the decision process, then the first
//! export of everything to a second eBGP peer. Prints a table and writes JSON to
//! `$IRONMESH_BENCH_JSON` when set. Run with `scripts/bench rib_ingest`.
//!
//! Bytes per route are measured with a counting global allocator: live heap after the flush
//! minus live heap before the RIB existed (the encoded input stays allocated in both).

// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};
use ironmesh_bgpd::policy::Policy;
use ironmesh_bgpd::rib::{PeerId, PeerInfo, Rib, SessionInfo};
use ironmesh_bgpd::synth::{self, Rng};
use ironmesh_bgpd::wire::{Afi, Context, Message, MpNextHop, Safi, UpdateBuilder};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            LIVE.fetch_add(new, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const V4_PREFIXES: usize = 1_000_000;
const V6_PREFIXES: usize = 200_000;
const ATTR_SETS: usize = 50_000;
const LOCAL_ASN: u32 = 65000;
const FEED_ASN: u32 = 65010;

/// The feed as the peer would send it: packed UPDATEs, one run per attribute set.
fn encode_feed(rng: &mut Rng, ctx: Context) -> (Bytes, usize) {
    let v4 = synth::v4_prefixes(rng, V4_PREFIXES, |_| true);
    let v6 = synth::v6_prefixes(rng, V6_PREFIXES, |_| true);
    let sets = synth::attr_sets(rng, ATTR_SETS, FEED_ASN);
    let mut by4: Vec<Vec<Ipv4Net>> = vec![Vec::new(); ATTR_SETS];
    let mut by6: Vec<Vec<Ipv6Net>> = vec![Vec::new(); ATTR_SETS];
    for p in v4 {
        by4[synth::pick_set(rng, ATTR_SETS)].push(p);
    }
    for p in v6 {
        by6[synth::pick_set(rng, ATTR_SETS)].push(p);
    }
    let b = UpdateBuilder::new(ctx);
    let nh4 = MpNextHop::Ipv4(Ipv4Addr::new(192, 0, 2, 1));
    let nh6 = MpNextHop::Ipv6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let mut buf = BytesMut::new();
    let mut msgs = 0;
    for i in 0..ATTR_SETS {
        if !by4[i].is_empty() {
            msgs += b.announce_ipv4(&sets[i], nh4, &by4[i], &mut buf).unwrap();
        }
        if !by6[i].is_empty() {
            msgs += b.announce_ipv6(&sets[i], nh6, &by6[i], &mut buf).unwrap();
        }
    }
    (buf.freeze(), msgs)
}

/// Splits the feed into message frames (zero-copy).
fn frames(feed: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off >= feed.len() {
            return None;
        }
        let len = u16::from_be_bytes([feed[off + 16], feed[off + 17]]) as usize;
        let f = feed.slice(off..off + len);
        off += len;
        Some(f)
    })
}

fn peer(id: u32, asn: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId(id),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id as u8)),
        asn,
        router_id: Ipv4Addr::new(10, 0, 0, id as u8),
        ibgp: false,
        import: Policy::accept_all(),
        export: Policy::accept_all(),
        next_hop_self: false,
        enforce_first_as: false,
        max_accepted: None,
    }
}

fn session(ctx: Context) -> SessionInfo {
    SessionInfo {
        families: vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)],
        ctx,
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 254)),
        local_v6: Some("2001:db8::254".parse().unwrap()),
        local_v6_link_local: Some("fe80::254".parse().unwrap()),
        ipv4_over_ipv6_next_hop: false,
        long_lived_gr: false,
    }
}

fn main() {
    let ctx = Context {
        four_octet_as: true,
        extended_message: false,
    };
    let mut rng = Rng(0x1e03_e5b9);
    let t = Instant::now();
    let (feed, msgs) = encode_feed(&mut rng, ctx);
    let gen_s = t.elapsed().as_secs_f64();
    let routes = V4_PREFIXES + V6_PREFIXES;

    // Decode alone, for reference.
    let t = Instant::now();
    let mut decoded = 0usize;
    for f in frames(&feed) {
        if let Message::Update(u) = Message::decode(f, &ctx).unwrap() {
            decoded += u.nlri.len() + u.ipv6_nlri().len();
        }
    }
    let decode_s = t.elapsed().as_secs_f64();
    assert_eq!(decoded, routes);

    let base = live();
    let mut rib = Rib::new(LOCAL_ASN, Ipv4Addr::new(10, 255, 255, 1));
    rib.add_peer(peer(1, FEED_ASN)).unwrap();
    rib.peer_up(PeerId(1), session(ctx)).unwrap();
    rib.flush();

    let t = Instant::now();
    for f in frames(&feed) {
        if let Message::Update(u) = Message::decode(f, &ctx).unwrap() {
            rib.apply_update(PeerId(1), &u).unwrap();
        }
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = rib.flush();
    let decide_s = t.elapsed().as_secs_f64();
    assert_eq!(out.fib.len(), routes);
    drop(out);
    let rib_bytes = live() - base;
    let attr_sets = rib.attribute_sets();

    rib.add_peer(peer(2, 65020)).unwrap();
    rib.peer_up(PeerId(2), session(ctx)).unwrap();
    let t = Instant::now();
    let out = rib.flush();
    let export_s = t.elapsed().as_secs_f64();
    let export_bytes: usize = out.updates.iter().map(|(_, b)| b.len()).sum();
    let export_msgs = out
        .updates
        .iter()
        .map(|(_, b)| frames(b).count())
        .sum::<usize>();
    drop(out);
    let with_out_bytes = live() - base;
    assert_eq!(rib.counters(PeerId(2)).unwrap().advertised as usize, routes);

    let per_route = rib_bytes as f64 / routes as f64;
    let per_route_out = with_out_bytes as f64 / routes as f64;
    let rate = routes as f64 / ingest_s;
    let rows: Vec<(&str, String)> = vec![
        (
            "routes (IPv4 + IPv6)",
            format!("{V4_PREFIXES} + {V6_PREFIXES}"),
        ),
        ("feed UPDATE messages", format!("{msgs}")),
        ("feed bytes", format!("{}", feed.len())),
        ("distinct attribute sets", format!("{attr_sets}")),
        ("feed generation s", format!("{gen_s:.3}")),
        ("decode only s", format!("{decode_s:.3}")),
        ("ingest (decode + apply_update) s", format!("{ingest_s:.3}")),
        ("ingest prefixes/s", format!("{rate:.0}")),
        ("first flush (decision + FIB) s", format!("{decide_s:.3}")),
        (
            "RIB bytes per route (Adj-RIB-In + Loc-RIB)",
            format!("{per_route:.1}"),
        ),
        ("export flush to one eBGP peer s", format!("{export_s:.3}")),
        ("export UPDATE messages", format!("{export_msgs}")),
        ("export bytes", format!("{export_bytes}")),
        (
            "bytes per route with that Adj-RIB-Out",
            format!("{per_route_out:.1}"),
        ),
    ];
    println!("rib_ingest");
    for (k, v) in &rows {
        println!("  {k:<44} {v:>16}");
    }
    if let Ok(path) = std::env::var("IRONMESH_BENCH_JSON") {
        let json = format!(
            concat!(
                "{{\n  \"bench\": \"rib_ingest\",\n  \"v4_prefixes\": {},\n  \"v6_prefixes\": {},\n",
                "  \"feed_messages\": {},\n  \"attribute_sets\": {},\n  \"decode_s\": {:.4},\n",
                "  \"ingest_s\": {:.4},\n  \"ingest_prefixes_per_s\": {:.0},\n",
                "  \"decision_flush_s\": {:.4},\n  \"bytes_per_route\": {:.1},\n",
                "  \"export_flush_s\": {:.4},\n  \"export_messages\": {},\n  \"export_bytes\": {},\n",
                "  \"bytes_per_route_with_adj_rib_out\": {:.1}\n}}\n"
            ),
            V4_PREFIXES,
            V6_PREFIXES,
            msgs,
            attr_sets,
            decode_s,
            ingest_s,
            rate,
            decide_s,
            per_route,
            export_s,
            export_msgs,
            export_bytes,
            per_route_out
        );
        std::fs::write(&path, json).expect("write IRONMESH_BENCH_JSON");
    }
}
