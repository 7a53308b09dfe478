//! North-south load balancing through BPF_PROG_TEST_RUN: a LoadBalancer VIP
//! reached from outside the cluster on the uplink (host_ingress), DNATed to
//! one of *this node's* backends (the service's external entry,
//! externalTrafficPolicy=Local), the reply reverse-translated by the
//! backend's pod_egress; east-west service flows stay as they were.
//! Needs root and bpffs on /sys/fs/bpf (scripts/setup).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ironmesh_datapath::events::{DropReason, EventKind, Verdict};
use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::lb::{
    BackendState, CT_DIR_FORWARD, CT_DIR_REPLY, CT_F_EXTERNAL, CT_F_SERVICE, CtKey, Proto,
};
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::maglev;
use ironmesh_datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use ironmesh_datapath::{Backend, Datapath, Endpoint, EndpointPolicy, Event, Program, Service};
use support::*;

const VIP: &str = "203.0.113.10";
const CLIENT: &str = "198.51.100.7"; // outside the cluster
const POD_CLIENT: &str = "10.0.0.5"; // a pod of this node
const LOCAL1: &str = "10.0.1.1";
const LOCAL2: &str = "10.0.1.2";
const REMOTE: &str = "10.9.0.1"; // a backend on another node
const INTERNAL_ID: u32 = 7;
const EXTERNAL_ID: u32 = 107;
const WORLD: u32 = 2;

fn svc(id: u32, proto: Proto, backends: Vec<Backend>) -> Service {
    Service {
        id,
        vip: ip(VIP),
        port: 80,
        proto,
        maglev: true,
        backends,
    }
}

fn locals() -> Vec<Backend> {
    vec![
        backend(1, LOCAL1, BackendState::Active),
        backend(2, LOCAL2, BackendState::Active),
    ]
}

/// The internal entry (all three backends) and the external one (the two local ones).
fn both(dp: &mut Datapath, proto: Proto) {
    let mut all = locals();
    all.push(backend(3, REMOTE, BackendState::Active));
    dp.upsert_service(&svc(INTERNAL_ID, proto, all)).unwrap();
    dp.upsert_external_service(&svc(EXTERNAL_ID, proto, locals()))
        .unwrap();
}

fn run_ok(dp: &Datapath, program: Program, pkt: &[u8]) -> Parsed {
    let out = dp.run(program, pkt, 1).unwrap();
    assert_eq!(out.verdict, TC_ACT_OK, "{program:?}");
    let p = parse(&out.packet);
    assert!(p.ip_csum_ok, "{program:?}: IP checksum broken: {p:?}");
    assert!(p.l4_csum_ok, "{program:?}: L4 checksum broken: {p:?}");
    p
}

/// An external client's packet through host_ingress.
fn inbound(dp: &Datapath, src: (IpAddr, u16), proto: u8) -> Parsed {
    let p = run_ok(dp, Program::HostIngress, &packet(src, (ip(VIP), 80), proto));
    assert_eq!(p.src, src, "the client's address must stay (no SNAT)");
    assert_eq!(p.payload, b"ironmesh test payload");
    p
}

fn events(dp: &mut Datapath) -> Vec<Event> {
    dp.drain_events().into_iter().map(Result::unwrap).collect()
}

#[test]
fn a_new_external_flow_goes_to_the_local_backend_maglev_picks() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    both(&mut dp, Proto::Tcp);
    let table = dp.maglev_table(EXTERNAL_ID).unwrap().unwrap();
    let by_id: HashMap<u32, IpAddr> = locals().iter().map(|b| (b.id, b.ip)).collect();
    let mut seen: HashMap<IpAddr, u32> = HashMap::new();
    for i in 0..400u32 {
        let src = (
            IpAddr::from([198, 51, (i >> 8) as u8 + 100, i as u8]),
            20000 + i as u16,
        );
        let p = inbound(&dp, src, TCP);
        let want = maglev::pick(&table, src, (ip(VIP), 80), TCP).unwrap();
        assert_eq!(p.dst, (by_id[&want], 8080), "flow {src:?}");
        *seen.entry(p.dst.0).or_default() += 1;
    }
    // Only local backends, both of them, never the remote one.
    assert_eq!(
        seen.keys().copied().collect::<HashSet<_>>(),
        HashSet::from([ip(LOCAL1), ip(LOCAL2)]),
        "{seen:?}"
    );

    // The flow's entries are the external service's and marked external.
    let src = (ip(CLIENT), 40000);
    let be = inbound(&dp, src, TCP).dst;
    let fwd = dp
        .conntrack_get(&CtKey::new(src, (ip(VIP), 80), Proto::Tcp, CT_DIR_FORWARD))
        .unwrap()
        .expect("forward entry");
    assert_eq!(fwd.svc_id, EXTERNAL_ID);
    assert_eq!(fwd.flags, CT_F_SERVICE | CT_F_EXTERNAL);
    let rev = dp
        .conntrack_get(&CtKey::new(be, src, Proto::Tcp, CT_DIR_REPLY))
        .unwrap()
        .expect("reply entry");
    assert_eq!(
        rev.flags & (CT_F_SERVICE | CT_F_EXTERNAL),
        CT_F_SERVICE | CT_F_EXTERNAL
    );
    assert_eq!(rev.nat_port(), 80);
    assert!(events(&mut dp).is_empty());
}

#[test]
fn an_established_external_flow_keeps_its_backend() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    both(&mut dp, Proto::Tcp);
    let src = (ip(CLIENT), 41000);
    let first = inbound(&dp, src, TCP).dst;
    for _ in 0..5 {
        assert_eq!(inbound(&dp, src, TCP).dst, first);
    }
    // Its backend terminates and a third local one arrives: the flow stays,
    // new flows avoid the terminating backend.
    let mut backends = locals();
    for b in &mut backends {
        if b.ip == first.0 {
            b.state = BackendState::Terminating;
        }
    }
    backends.push(backend(4, "10.0.1.3", BackendState::Active));
    dp.upsert_external_service(&svc(EXTERNAL_ID, Proto::Tcp, backends.clone()))
        .unwrap();
    assert_eq!(inbound(&dp, src, TCP).dst, first);
    for port in 0..200 {
        let p = inbound(&dp, (ip(CLIENT), 10000 + port), TCP);
        assert_ne!(p.dst, first, "a new flow went to a terminating backend");
    }
    // Quarantined: re-balanced onto an active local backend.
    let moved = backends.iter().find(|b| b.ip == first.0).unwrap();
    dp.set_backend(&Backend {
        state: BackendState::Quarantined,
        ..*moved
    })
    .unwrap();
    let now = inbound(&dp, src, TCP).dst;
    assert_ne!(now, first);
    assert!(
        backends
            .iter()
            .any(|b| b.ip == now.0 && b.state == BackendState::Active)
    );
}

#[test]
fn the_backends_pod_egress_restores_the_vip_on_an_external_reply() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    for (proto, proto_no) in [(Proto::Tcp, TCP), (Proto::Udp, UDP)] {
        both(&mut dp, proto);
        let client = (ip(CLIENT), 42000);
        let be = inbound(&dp, client, proto_no).dst;
        let reply = packet(be, client, proto_no);
        let p = run_ok(&dp, Program::PodEgress, &reply);
        assert_eq!(
            p.src,
            (ip(VIP), 80),
            "{proto:?}: reply source must be the VIP"
        );
        assert_eq!(p.dst, client);
        assert_eq!(p.payload, b"ironmesh test payload");
        // The same reply seen by a pod_ingress (never happens: the client is
        // outside) is not translated there: only pod_egress owns it.
        assert_untouched(&dp, Program::PodIngress, &reply);
        // A packet from the backend to another port of the client: untouched.
        let other = packet(be, (ip(CLIENT), 42001), proto_no);
        assert_untouched(&dp, Program::PodEgress, &other);
    }
}

#[test]
fn ipv6_external_flows_translate_both_ways() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let vip = ip("2001:db8:ff::10");
    dp.upsert_external_service(&Service {
        id: EXTERNAL_ID,
        vip,
        port: 443,
        proto: Proto::Tcp,
        maglev: true,
        backends: vec![Backend {
            id: 20,
            ip: ip("2001:db8:1::1"),
            port: 8443,
            state: BackendState::Active,
        }],
    })
    .unwrap();
    let client = (ip("2001:db8:99::7"), 50000);
    let p = run_ok(&dp, Program::HostIngress, &packet(client, (vip, 443), TCP));
    assert_eq!(p.dst, (ip("2001:db8:1::1"), 8443));
    let r = run_ok(&dp, Program::PodEgress, &packet(p.dst, client, TCP));
    assert_eq!((r.src, r.dst), ((vip, 443), client));
}

#[test]
fn an_east_west_reply_is_left_to_the_clients_pod_ingress() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    both(&mut dp, Proto::Tcp);
    // A pod of this node to the VIP: the internal entry (all backends).
    let client = (ip(POD_CLIENT), 43000);
    let be = run_ok(&dp, Program::PodEgress, &packet(client, (ip(VIP), 80), TCP)).dst;
    let fwd = dp
        .conntrack_get(&CtKey::new(
            client,
            (ip(VIP), 80),
            Proto::Tcp,
            CT_DIR_FORWARD,
        ))
        .unwrap()
        .unwrap();
    assert_eq!((fwd.svc_id, fwd.flags), (INTERNAL_ID, CT_F_SERVICE));
    // The backend (possibly on this node) replies: its pod_egress leaves the
    // source alone...
    let reply = packet(be, client, TCP);
    assert_untouched(&dp, Program::PodEgress, &reply);
    // ...and the client's pod_ingress restores the VIP, as before.
    let p = run_ok(&dp, Program::PodIngress, &reply);
    assert_eq!((p.src, p.dst), ((ip(VIP), 80), client));
}

#[test]
fn each_program_uses_only_its_own_scope() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    // Internal entry only: host_ingress does not translate.
    dp.upsert_service(&svc(INTERNAL_ID, Proto::Tcp, locals()))
        .unwrap();
    let from_outside = packet((ip(CLIENT), 44000), (ip(VIP), 80), TCP);
    assert_untouched(&dp, Program::HostIngress, &from_outside);
    assert_eq!(dp.conntrack_len(), 0);
    assert!(
        dp.external_service(ip(VIP), 80, Proto::Tcp)
            .unwrap()
            .is_none()
    );

    // External entry only: pods' packets to the VIP are not translated.
    dp.remove_service(ip(VIP), 80, Proto::Tcp).unwrap();
    dp.upsert_external_service(&svc(EXTERNAL_ID, Proto::Tcp, locals()))
        .unwrap();
    assert!(dp.service(ip(VIP), 80, Proto::Tcp).unwrap().is_none());
    let from_pod = packet((ip(POD_CLIENT), 44000), (ip(VIP), 80), TCP);
    assert_untouched(&dp, Program::PodEgress, &from_pod);
    assert_eq!(dp.conntrack_len(), 0);
    assert_eq!(
        dp.external_service(ip(VIP), 80, Proto::Tcp)
            .unwrap()
            .unwrap()
            .id,
        EXTERNAL_ID
    );

    // Removing the external entry: host_ingress passes the VIP untouched.
    dp.remove_external_service(ip(VIP), 80, Proto::Tcp).unwrap();
    assert_untouched(&dp, Program::HostIngress, &from_outside);
    assert_eq!(dp.maglev_table(EXTERNAL_ID).unwrap(), None);

    // The two entries of one VIP must not share an id.
    dp.upsert_service(&svc(INTERNAL_ID, Proto::Tcp, locals()))
        .unwrap();
    let err = dp
        .upsert_external_service(&svc(INTERNAL_ID, Proto::Tcp, locals()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("different ids"), "{err}");
}

#[test]
fn an_external_entry_without_an_active_local_backend_drops_new_flows_with_an_event() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    both(&mut dp, Proto::Tcp);
    let est = (ip(CLIENT), 45000);
    let first = inbound(&dp, est, TCP).dst;
    // Every local backend terminating: no new flows here (the agent stops
    // announcing the VIP), established ones finish.
    let mut backends = locals();
    for b in &mut backends {
        b.state = BackendState::Terminating;
    }
    dp.upsert_external_service(&svc(EXTERNAL_ID, Proto::Tcp, backends))
        .unwrap();
    assert_eq!(inbound(&dp, est, TCP).dst, first);
    events(&mut dp);
    let new = (ip(CLIENT), 45001);
    let out = dp
        .run(Program::HostIngress, &packet(new, (ip(VIP), 80), TCP), 1)
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let ev = events(&mut dp);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].kind, EventKind::Drop(DropReason::NoBackend));
    assert_eq!(
        (ev[0].src, ev[0].dst, ev[0].svc_id),
        (new, (ip(VIP), 80), EXTERNAL_ID)
    );
    assert_eq!(ev[0].src_identity, WORLD);
}

/// host_ingress then the backend's pod_ingress (what the node does to an
/// inbound packet), returning pod_ingress's verdict.
fn inbound_to_pod(dp: &Datapath, src: (IpAddr, u16)) -> u32 {
    let p = inbound(dp, src, TCP);
    assert_eq!(p.dst, (ip(LOCAL1), 8080));
    let fwd = packet(src, p.dst, TCP);
    dp.run(Program::PodIngress, &fwd, 1).unwrap().verdict
}

#[test]
fn the_backends_ingress_policy_sees_the_external_client_as_world_or_its_cidr() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    // One local backend, an endpoint with an ingress policy.
    dp.upsert_external_service(&svc(
        EXTERNAL_ID,
        Proto::Tcp,
        vec![backend(1, LOCAL1, BackendState::Active)],
    ))
    .unwrap();
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: 4242,
        ifindex: 0,
        addresses: vec![ip(LOCAL1)],
    })
    .unwrap();
    let allow = |peer: u32| EndpointPolicy {
        ingress_selected: true,
        rules: vec![Rule {
            direction: Direction::Ingress,
            peer: Peer::Identity(peer),
            ports: PortMatch::Port(TCP, 8080),
            action: Action::Allow,
        }],
        ..Default::default()
    };

    // Allowed from world: one verdict event for the new flow, naming world.
    dp.set_policy(1, &allow(WORLD)).unwrap();
    let src = (ip(CLIENT), 46000);
    assert_eq!(inbound_to_pod(&dp, src), TC_ACT_OK);
    let ev = events(&mut dp);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].kind, EventKind::PolicyVerdict(Verdict::Allowed));
    assert_eq!((ev[0].src_identity, ev[0].dst_identity), (WORLD, 4242));
    assert_eq!(ev[0].direction, Some(Direction::Ingress));
    // Later packets of the flow: no more verdict events.
    assert_eq!(inbound_to_pod(&dp, src), TC_ACT_OK);
    assert!(events(&mut dp).is_empty());
    // The reply still leaves as the VIP.
    let r = run_ok(
        &dp,
        Program::PodEgress,
        &packet((ip(LOCAL1), 8080), src, TCP),
    );
    assert_eq!(r.src, (ip(VIP), 80));

    // The client's CIDR has an identity: world no longer matches it.
    dp.ipcache_upsert(
        "198.51.100.0/24".parse().unwrap(),
        IpcacheValue {
            identity: 0x10_0001,
            ..Default::default()
        },
    )
    .unwrap();
    let src2 = (ip(CLIENT), 46001);
    assert_eq!(inbound_to_pod(&dp, src2), TC_ACT_SHOT);
    let ev = events(&mut dp);
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EventKind::PolicyVerdict(Verdict::DefaultDeny),
            EventKind::Drop(DropReason::PolicyDefaultDeny)
        ],
        "{ev:?}"
    );
    assert!(ev.iter().all(|e| e.src_identity == 0x10_0001), "{ev:?}");
    // A denied flow stays "new": its retransmission gets a verdict again.
    assert_eq!(inbound_to_pod(&dp, src2), TC_ACT_SHOT);
    assert_eq!(events(&mut dp).len(), 2);
    // Allowing the CIDR's identity lets the next flow in.
    dp.set_policy(1, &allow(0x10_0001)).unwrap();
    assert_eq!(inbound_to_pod(&dp, (ip(CLIENT), 46002)), TC_ACT_OK);
}
