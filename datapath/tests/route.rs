//! Routing through BPF_PROG_TEST_RUN: VXLAN encapsulation (tunnel key read
//! back from the kernel), native FIB redirects against real routes in a
//! network namespace of the test's own, and the overlay program's refusal
//! of packets without tunnel metadata. A test run cannot carry tunnel
//! metadata *into* a program, so decapsulation with identity is shown here
//! through the mark the overlay program sets (tests/policy.rs) and for real
//! in interop-tests/tests/datapath_e2e.rs. Needs root and bpffs.
#![allow(unsafe_code)] // unshare(2) for the test's namespace; see SAFETY below

mod support;

use std::net::Ipv4Addr;
use std::process::Command;

use ironmesh_datapath::events::{DropReason, EventKind, Trace};
use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::{Config, Datapath, Endpoint, Event, EventReader, Program, Routing};
use support::*;

const TC_ACT_REDIRECT: u32 = 7;
const A: &str = "10.0.1.5";
const B: &str = "10.0.2.7";
const A_ID: u32 = 4242;
const B_ID: u32 = 4243;

fn identity(id: u32) -> IpcacheValue {
    IpcacheValue {
        identity: id,
        ..Default::default()
    }
}

fn setup(dp: &mut Datapath, routing: Routing) {
    dp.set_config(&Config {
        routing,
        trace: true,
        ..Default::default()
    })
    .unwrap();
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: A_ID,
        ifindex: 0,
        addresses: vec![ip(A)],
    })
    .unwrap();
    dp.ipcache_upsert(ip(A).into(), identity(A_ID)).unwrap();
}

fn traces(r: &mut EventReader) -> Vec<Event> {
    r.drain()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| matches!(e.kind, EventKind::Trace(_)))
        .collect()
}

#[test]
fn vxlan_mode_encapsulates_with_the_source_identity_as_vni() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let mut events = EventReader::open(&root.0).unwrap();
    setup(&mut dp, Routing::Vxlan { ifindex: 42 });
    let node_b = Ipv4Addr::new(192, 0, 2, 2);
    dp.ipcache_upsert(
        "10.0.2.0/24".parse().unwrap(),
        identity(B_ID).with_tunnel(node_b),
    )
    .unwrap();

    let pkt = packet((ip(A), 40000), (ip(B), 80), TCP);
    let out = dp.run(Program::PodEgress, &pkt, 1).unwrap();
    assert_eq!(out.verdict, TC_ACT_REDIRECT, "to the VXLAN device");
    assert_eq!(out.packet, pkt, "the inner packet is not rewritten");
    let t = traces(&mut events);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        t[0].kind,
        EventKind::Trace(Trace::ToOverlay {
            node: node_b,
            vni: A_ID
        }),
        "the VNI as the kernel holds it"
    );
    assert_eq!((t[0].src_identity, t[0].dst_identity), (A_ID, B_ID));
    assert_eq!(
        t[0].to_string(),
        "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243) TCP 80 to-overlay: node 192.0.2.2 vni 4242"
    );

    // ICMP goes the same way.
    let ping = packet((ip(A), 7), (ip(B), 0), ICMP);
    assert_eq!(
        dp.run(Program::PodEgress, &ping, 1).unwrap().verdict,
        TC_ACT_REDIRECT
    );
    // Addresses without a tunnel endpoint (local pods, the world) go to the stack.
    for dst in ["10.0.1.9", "198.51.100.1"] {
        let p = packet((ip(A), 40001), (ip(dst), 80), TCP);
        assert_eq!(
            dp.run(Program::PodEgress, &p, 1).unwrap().verdict,
            TC_ACT_OK
        );
    }
    // A skip-tunnel entry is routed natively even in VXLAN mode.
    dp.ipcache_upsert(
        ip("10.0.2.99").into(),
        identity(B_ID)
            .with_tunnel(node_b)
            .with_flags(ironmesh_datapath::ipcache::F_SKIP_TUNNEL),
    )
    .unwrap();
    let p = packet((ip(A), 40002), (ip("10.0.2.99"), 80), TCP);
    assert_eq!(
        dp.run(Program::PodEgress, &p, 1).unwrap().verdict,
        TC_ACT_OK
    );
}

#[test]
fn a_policy_drop_happens_before_encapsulation() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let mut events = EventReader::open(&root.0).unwrap();
    setup(&mut dp, Routing::Vxlan { ifindex: 42 });
    dp.ipcache_upsert(
        ip(B).into(),
        identity(B_ID).with_tunnel(Ipv4Addr::new(192, 0, 2, 2)),
    )
    .unwrap();
    dp.set_policy(
        1,
        &ironmesh_datapath::EndpointPolicy {
            egress_selected: true,
            ..Default::default()
        },
    )
    .unwrap();
    let out = dp
        .run(Program::PodEgress, &packet((ip(A), 1), (ip(B), 80), TCP), 1)
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let all: Vec<Event> = events.drain().into_iter().map(Result::unwrap).collect();
    assert!(
        all.iter()
            .any(|e| e.kind == EventKind::Drop(DropReason::PolicyDefaultDeny))
    );
    assert!(!all.iter().any(|e| matches!(e.kind, EventKind::Trace(_))));
}

#[test]
fn overlay_ingress_refuses_packets_without_tunnel_metadata() {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let mut events = EventReader::open(&root.0).unwrap();
    setup(&mut dp, Routing::Vxlan { ifindex: 42 });
    let out = dp
        .run(
            Program::OverlayIngress,
            &packet((ip(B), 80), (ip(A), 40000), TCP),
            1,
        )
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_SHOT);
    let e: Vec<Event> = events.drain().into_iter().map(Result::unwrap).collect();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].kind, EventKind::Drop(DropReason::NoTunnelKey));
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interface's index in this thread's namespace (/sys shows the
/// namespace that mounted it, so ask ip).
fn ifindex(name: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-o", "link", "show", name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':').next().unwrap().trim().parse().unwrap()
}

/// Runs `f` on a thread of its own in a new network namespace (gone with
/// the thread), with an uplink `up0` (192.0.2.1/24, neighbour 192.0.2.2)
/// and routes to the remote PodCIDR 10.0.2.0/24 via 192.0.2.2.
fn in_netns(f: impl FnOnce(u32) + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it only changes this thread's
        // network namespace, which nothing else in the thread relies on.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1",
        ]);
        sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"]);
        sh(&["ip", "link", "set", "up0", "up"]);
        sh(&["ip", "link", "set", "up1", "up"]);
        sh(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
        sh(&[
            "ip",
            "neigh",
            "replace",
            "192.0.2.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "up0",
            "nud",
            "permanent",
        ]);
        sh(&["ip", "route", "add", "10.0.2.0/24", "via", "192.0.2.2"]);
        f(ifindex("up0"));
    })
    .join()
    .unwrap();
}

#[test]
fn native_mode_redirects_through_the_fib_and_decrements_the_ttl() {
    let root = TestRoot::new();
    let pins = root.0.clone();
    in_netns(move |uplink| {
        let mut dp = Datapath::load(&pins).unwrap();
        let mut events = EventReader::open(&pins).unwrap();
        setup(&mut dp, Routing::Native);
        dp.ipcache_upsert(ip(B).into(), identity(B_ID)).unwrap();

        let pkt = packet((ip(A), 40000), (ip(B), 80), TCP);
        let out = dp.run(Program::PodEgress, &pkt, 1).unwrap();
        assert_eq!(out.verdict, TC_ACT_REDIRECT);
        let p = parse(&out.packet);
        assert_eq!(out.packet[14 + 8], 63, "TTL decremented");
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        let t = traces(&mut events);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            t[0].kind,
            EventKind::Trace(Trace::FibRedirect { ifindex: uplink })
        );

        // No route: the stack decides (and answers with ICMP unreachable).
        let lost = packet((ip(A), 40001), (ip("203.0.113.1"), 80), TCP);
        assert_eq!(
            dp.run(Program::PodEgress, &lost, 1).unwrap().verdict,
            TC_ACT_OK
        );
        // Local delivery (the node's own address) is not forwarded.
        let local = packet((ip(A), 40002), (ip("192.0.2.1"), 80), TCP);
        assert_eq!(
            dp.run(Program::PodEgress, &local, 1).unwrap().verdict,
            TC_ACT_OK
        );
        // TTL 1 would expire: the stack sends time exceeded.
        let mut dying = pkt.clone();
        dying[14 + 8] = 1;
        let out = dp.run(Program::PodEgress, &dying, 1).unwrap();
        assert_eq!(out.verdict, TC_ACT_OK);
        assert_eq!(out.packet, dying);
    });
}

#[test]
fn host_ingress_forwards_to_local_endpoints_in_native_mode() {
    let root = TestRoot::new();
    let pins = root.0.clone();
    in_netns(move |_| {
        sh(&[
            "ip", "link", "add", "lxc0", "type", "veth", "peer", "name", "pod0",
        ]);
        sh(&["ip", "link", "set", "lxc0", "up"]);
        sh(&["ip", "link", "set", "pod0", "up"]);
        sh(&["ip", "route", "add", "10.0.1.5/32", "dev", "lxc0"]);
        let lxc = ifindex("lxc0");
        let mut dp = Datapath::load(&pins).unwrap();
        let mut events = EventReader::open(&pins).unwrap();
        setup(&mut dp, Routing::Native);

        let pkt = packet((ip(B), 80), (ip(A), 40000), TCP);
        let out = dp.run(Program::HostIngress, &pkt, 1).unwrap();
        assert_eq!(out.verdict, TC_ACT_REDIRECT);
        let t = traces(&mut events);
        assert_eq!(
            t.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Trace(Trace::FibRedirect { ifindex: lxc })]
        );
        // Not a local endpoint: the stack.
        let other = packet((ip(B), 80), (ip("10.0.1.77"), 40000), TCP);
        assert_eq!(
            dp.run(Program::HostIngress, &other, 1).unwrap().verdict,
            TC_ACT_OK
        );
        // VXLAN mode: host_ingress leaves everything to the stack.
        dp.set_config(&Config {
            routing: Routing::Vxlan { ifindex: 9 },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            dp.run(Program::HostIngress, &pkt, 1).unwrap().verdict,
            TC_ACT_OK
        );
    });
}
