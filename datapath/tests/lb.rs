//! The service datapath through BPF_PROG_TEST_RUN: crafted packets in, the
//! kernel runs the real programs against real (pinned) maps, packets and
//! map contents out. Needs root and bpffs on /sys/fs/bpf (scripts/setup).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ironmesh_datapath::events::{DropReason, EventKind};
use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::lb::{BackendState, CT_DIR_FORWARD, CT_DIR_REPLY, CtKey, Proto};
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::maglev::{self, MaglevBackend};
use ironmesh_datapath::{Backend, Datapath, Program, Service};
use support::*;

const VIP: &str = "192.0.2.10";
const CLIENT: &str = "10.0.0.5";

fn web(maglev: bool, backends: Vec<Backend>) -> Service {
    Service {
        id: 7,
        vip: ip(VIP),
        port: 80,
        proto: Proto::Tcp,
        maglev,
        backends,
    }
}

fn three() -> Vec<Backend> {
    vec![
        backend(1, "10.0.1.1", BackendState::Active),
        backend(2, "10.0.1.2", BackendState::Active),
        backend(3, "10.0.1.3", BackendState::Active),
    ]
}

fn backend_ips(svc: &Service) -> HashSet<IpAddr> {
    svc.backends.iter().map(|b| b.ip).collect()
}

/// Sends one packet through pod_egress; asserts it passed with valid checksums.
fn egress(dp: &Datapath, src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> Parsed {
    let out = dp
        .run(Program::PodEgress, &packet(src, dst, proto), 1)
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_OK);
    let p = parse(&out.packet);
    assert!(p.ip_csum_ok, "IP checksum broken: {p:?}");
    assert!(p.l4_csum_ok, "L4 checksum broken: {p:?}");
    assert_eq!(p.src, src, "source must not change");
    p
}

#[test]
fn a_service_packet_is_translated_to_a_backend_with_valid_checksums() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    for maglev in [true, false] {
        let svc = web(maglev, three());
        dp.upsert_service(&svc).unwrap();
        let src = (ip(CLIENT), 40000 + u16::from(maglev));
        let p = egress(&dp, src, (ip(VIP), 80), TCP);
        assert!(
            backend_ips(&svc).contains(&p.dst.0),
            "maglev={maglev}: {p:?}"
        );
        assert_eq!(p.dst.1, 8080);
        assert_eq!(p.payload, b"ironmesh test payload");
    }
}

#[test]
fn the_same_flow_keeps_its_backend_even_when_the_backend_set_changes() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let mut svc = web(true, three());
    dp.upsert_service(&svc).unwrap();
    let src = (ip(CLIENT), 41000);
    let first = egress(&dp, src, (ip(VIP), 80), TCP).dst;
    for _ in 0..5 {
        assert_eq!(egress(&dp, src, (ip(VIP), 80), TCP).dst, first);
    }
    // Both conntrack entries exist: the flow as sent, and its reply.
    let fwd = dp
        .conntrack_get(&CtKey::new(src, (ip(VIP), 80), Proto::Tcp, CT_DIR_FORWARD))
        .unwrap()
        .expect("forward entry");
    assert_eq!((fwd.nat_port(), fwd.svc_id), (8080, 7));
    let rev = dp
        .conntrack_get(&CtKey::new(first, src, Proto::Tcp, CT_DIR_REPLY))
        .unwrap()
        .expect("reply entry");
    assert_eq!(rev.nat_port(), 80);

    // Its backend starts terminating and a fourth arrives: the Maglev table
    // no longer holds it, but the established flow stays.
    for b in &mut svc.backends {
        if b.ip == first.0 {
            b.state = BackendState::Terminating;
        }
    }
    svc.backends
        .push(backend(4, "10.0.1.4", BackendState::Active));
    dp.upsert_service(&svc).unwrap();
    assert_eq!(egress(&dp, src, (ip(VIP), 80), TCP).dst, first);
    // ...and takes no new flows.
    for port in 0..300 {
        let p = egress(&dp, (ip(CLIENT), 20000 + port), (ip(VIP), 80), TCP);
        assert_ne!(p.dst, first, "a new flow went to a terminating backend");
    }

    // Quarantined: the established flow moves to an active backend.
    let moved = svc.backends.iter().find(|b| b.ip == first.0).unwrap();
    dp.set_backend(&Backend {
        state: BackendState::Quarantined,
        ..*moved
    })
    .unwrap();
    let now = egress(&dp, src, (ip(VIP), 80), TCP).dst;
    assert_ne!(now, first);
    assert!(backend_ips(&svc).contains(&now.0));
    // Deleted: same (rebalanced on the next packet, then sticky again).
    dp.remove_backend(moved.id).unwrap();
    assert_eq!(egress(&dp, src, (ip(VIP), 80), TCP).dst, now);
}

#[test]
fn maglev_spreads_10k_flows_evenly_across_3_backends() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let svc = web(true, three());
    dp.upsert_service(&svc).unwrap();

    // The table in the map is the one Rust computes.
    let expected = maglev::table(
        &svc.backends
            .iter()
            .map(|b| MaglevBackend {
                id: b.id,
                ip: b.ip,
                port: b.port,
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(dp.maglev_table(7).unwrap().unwrap(), expected);

    let mut per_backend: HashMap<IpAddr, u32> = HashMap::new();
    for i in 0..10_000u32 {
        let client = IpAddr::from([10, 0, (i >> 8) as u8 & 0x0f, i as u8]);
        let src = (client, 1024 + (i % 50_000) as u16);
        let p = egress(&dp, src, (ip(VIP), 80), TCP);
        *per_backend.entry(p.dst.0).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    for (b, n) in &per_backend {
        let share = f64::from(*n) / (10_000.0 / 3.0);
        assert!(
            (0.85..=1.15).contains(&share),
            "{b}: {n} flows ({per_backend:?})"
        );
    }
}

#[test]
fn the_agent_predicts_each_flows_maglev_backend_exactly() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let svc = web(true, three());
    dp.upsert_service(&svc).unwrap();
    let table = dp.maglev_table(7).unwrap().unwrap();
    for i in 0..500u32 {
        let src = (
            IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
            30000 + i as u16,
        );
        let got = egress(&dp, src, (ip(VIP), 80), TCP).dst.0;
        let id = maglev::pick(&table, src, (ip(VIP), 80), TCP).unwrap();
        let want = svc.backends.iter().find(|b| b.id == id).unwrap().ip;
        assert_eq!(got, want, "flow {src:?}");
    }
}

#[test]
fn a_reply_from_the_backend_is_reverse_nated_to_the_vip() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.upsert_service(&web(true, three())).unwrap();
    let client = (ip(CLIENT), 42000);
    let be = egress(&dp, client, (ip(VIP), 80), TCP).dst;

    let out = dp
        .run(Program::PodIngress, &packet(be, client, TCP), 1)
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_OK);
    let p = parse(&out.packet);
    assert_eq!(p.src, (ip(VIP), 80), "reply source must be the VIP");
    assert_eq!(p.dst, client);
    assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");

    // A reply for a flow never translated (other client port) passes untouched.
    assert_untouched(
        &dp,
        Program::PodIngress,
        &packet(be, (ip(CLIENT), 42001), TCP),
    );
}

#[test]
fn udp_services_translate_both_ways_and_keep_a_zero_checksum() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let dns = Service {
        id: 53,
        vip: ip("192.0.2.53"),
        port: 53,
        proto: Proto::Udp,
        maglev: false,
        backends: vec![Backend {
            id: 10,
            ip: ip("10.0.2.1"),
            port: 5353,
            state: BackendState::Active,
        }],
    };
    dp.upsert_service(&dns).unwrap();
    let client = (ip(CLIENT), 5000);
    let p = egress(&dp, client, (ip("192.0.2.53"), 53), UDP);
    assert_eq!(p.dst, (ip("10.0.2.1"), 5353));
    assert_ne!(p.l4_csum, 0);
    let out = dp
        .run(Program::PodIngress, &packet(p.dst, client, UDP), 1)
        .unwrap();
    let r = parse(&out.packet);
    assert_eq!((r.src, r.dst), ((ip("192.0.2.53"), 53), client));
    assert!(r.ip_csum_ok && r.l4_csum_ok && r.l4_csum != 0, "{r:?}");

    // UDP/IPv4 without a checksum: translated, and the checksum stays "none".
    let no_csum = build((ip(CLIENT), 5001), (ip("192.0.2.53"), 53), UDP, false);
    let out = dp.run(Program::PodEgress, &no_csum, 1).unwrap();
    let p = parse(&out.packet);
    assert_eq!(
        (p.dst, p.l4_csum, p.ip_csum_ok),
        ((ip("10.0.2.1"), 5353), 0, true)
    );
}

#[test]
fn ipv6_service_translation_and_reverse_nat() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let svc = Service {
        id: 443,
        vip: ip("2001:db8::10"),
        port: 443,
        proto: Proto::Tcp,
        maglev: true,
        backends: vec![
            Backend {
                id: 20,
                ip: ip("2001:db8:1::1"),
                port: 8443,
                state: BackendState::Active,
            },
            Backend {
                id: 21,
                ip: ip("2001:db8:1::2"),
                port: 8443,
                state: BackendState::Active,
            },
        ],
    };
    dp.upsert_service(&svc).unwrap();
    let client = (ip("2001:db8:2::5"), 50000);
    let p = egress(&dp, client, (ip("2001:db8::10"), 443), TCP);
    assert!(backend_ips(&svc).contains(&p.dst.0), "{p:?}");
    assert_eq!(p.dst.1, 8443);

    let out = dp
        .run(Program::PodIngress, &packet(p.dst, client, TCP), 1)
        .unwrap();
    let r = parse(&out.packet);
    assert_eq!((r.src, r.dst), ((ip("2001:db8::10"), 443), client));
    assert!(r.l4_csum_ok, "{r:?}");
}

#[test]
fn traffic_that_is_not_for_a_service_passes_untouched() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.upsert_service(&web(true, three())).unwrap();
    let cases = [
        packet((ip(CLIENT), 40000), (ip("10.0.1.1"), 8080), TCP), // pod IP, not a VIP
        packet((ip(CLIENT), 40000), (ip(VIP), 443), TCP),         // VIP, other port
        packet((ip(CLIENT), 40000), (ip(VIP), 80), UDP),          // VIP, other protocol
        packet((ip(CLIENT), 7), (ip(VIP), 0), ICMP),              // ping to the VIP
        packet((ip("2001:db8::5"), 7), (ip("2001:db8::10"), 0), ICMPV6),
        {
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
            arp.extend_from_slice(&[0u8; 28]);
            arp
        },
    ];
    for pkt in cases {
        for program in Program::POD {
            assert_untouched(&dp, program, &pkt);
        }
    }
    assert_eq!(dp.conntrack_len(), 0);
}

#[test]
fn a_service_without_active_backends_drops_and_reports_identities() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let client_identity = common_identity(4242);
    dp.ipcache_upsert("10.0.0.0/24".parse().unwrap(), client_identity)
        .unwrap();
    let mut backends = three();
    for b in &mut backends {
        b.state = BackendState::Terminating;
    }
    for maglev in [true, false] {
        dp.upsert_service(&web(maglev, backends.clone())).unwrap();
        let src = (ip(CLIENT), 43000);
        let out = dp
            .run(Program::PodEgress, &packet(src, (ip(VIP), 80), TCP), 1)
            .unwrap();
        assert_eq!(out.verdict, TC_ACT_SHOT);
        let events = dp.drain_events();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = events[0].as_ref().unwrap();
        assert_eq!(e.kind, EventKind::Drop(DropReason::NoBackend));
        assert_eq!((e.src, e.dst, e.proto), (src, (ip(VIP), 80), TCP));
        assert_eq!((e.src_identity, e.dst_identity, e.svc_id), (4242, 2, 7));
    }
}

fn common_identity(raw: u32) -> IpcacheValue {
    IpcacheValue {
        identity: raw,
        ..IpcacheValue::default()
    }
}

#[test]
fn pinned_maps_survive_a_reload() {
    let root = TestRoot::new();
    let client = (ip(CLIENT), 44000);
    let (first, table) = {
        let mut dp = Datapath::load(&root.0).unwrap();
        dp.upsert_service(&web(true, three())).unwrap();
        dp.ipcache_upsert("10.0.1.0/24".parse().unwrap(), common_identity(5000))
            .unwrap();
        let first = egress(&dp, client, (ip(VIP), 80), TCP).dst;
        (first, dp.maglev_table(7).unwrap().unwrap())
    }; // programs and map fds closed here; only the pins hold the maps

    let dp = Datapath::load(&root.0).unwrap();
    let svc = dp
        .service(ip(VIP), 80, Proto::Tcp)
        .unwrap()
        .expect("service kept");
    assert_eq!((svc.id, svc.backend_count), (7, 3));
    assert_eq!(dp.backend(2).unwrap().unwrap().port(), 8080);
    assert_eq!(dp.maglev_table(7).unwrap().unwrap(), table);
    assert_eq!(
        dp.ipcache_lookup(ip("10.0.1.77"))
            .unwrap()
            .unwrap()
            .identity,
        5000
    );
    assert_eq!(dp.conntrack_len(), 2);
    // The reloaded program finds the flow in the kept conntrack.
    assert_eq!(egress(&dp, client, (ip(VIP), 80), TCP).dst, first);
}

#[test]
fn a_pinned_map_with_another_layout_is_refused() {
    let root = TestRoot::new();
    std::fs::create_dir_all(root.0.path()).unwrap();
    let pin = root.0.pin_path("services").unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pin)
        .args([
            "type", "hash", "key", "20", "value", "4", "entries", "16", "name", "services",
        ])
        .output()
        .expect("bpftool (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = Datapath::load(&root.0).unwrap_err().to_string();
    assert!(err.contains("pinned map services"), "{err}");
    assert!(err.contains("remove the pin"), "{err}");
}
