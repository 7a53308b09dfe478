//! ICMP errors about allowed flows pass a default-deny policy (path MTU discovery keeps
//! working); errors about unknown flows, or about another host's packets, do not.
//! BPF_PROG_TEST_RUN on the real programs. Needs root and bpffs (scripts/setup).

mod support;

use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::policy::{Action, Direction, Peer, PortMatch, Rule};
use ironmesh_datapath::{Datapath, Endpoint, EndpointPolicy, Program};
use support::*;

const A: &str = "10.0.1.5"; // the local endpoint, default-deny both ways
const B: &str = "10.0.2.7";
const ROUTER: &str = "192.0.2.1";
const A6: &str = "fd00:1::5";
const B6: &str = "fd00:2::7";
const ROUTER6: &str = "2001:db8::1";

/// An ICMP error from `from` to `to` quoting `quoted` (a frame from `packet`): RFC 792
/// type 3 code 4 (fragmentation needed) or RFC 4443 type 2 (packet too big).
fn icmp_error(from: &str, to: &str, quoted: &[u8]) -> Vec<u8> {
    let v6 = ip(from).is_ipv6();
    let (proto, ip_hlen, ty) = if v6 { (ICMPV6, 40, 2) } else { (ICMP, 20, 3) };
    let mut p = packet((ip(from), 1), (ip(to), 0), proto);
    p.truncate(14 + ip_hlen + 8);
    p[14 + ip_hlen] = ty;
    p[14 + ip_hlen + 1] = if v6 { 0 } else { 4 };
    // The quoted packet: its IP header and the first 8 bytes of its L4 header.
    let q_hlen = if v6 { 40 } else { 20 };
    p.extend_from_slice(&quoted[14..14 + q_hlen + 8]);
    let l4_len = (p.len() - 14 - ip_hlen) as u16;
    if v6 {
        p[18..20].copy_from_slice(&l4_len.to_be_bytes());
    } else {
        p[16..18].copy_from_slice(&(l4_len + 20).to_be_bytes());
    }
    p
}

fn rule(direction: Direction, peer: u32, port: u16) -> Rule {
    Rule {
        direction,
        peer: Peer::Identity(peer),
        ports: PortMatch::Port(6, port),
        action: Action::Allow,
    }
}

/// Endpoint A: may open TCP to B:80 and accept TCP from B on 8080; nothing else.
fn node(root: &TestRoot) -> Datapath {
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: 4242,
        ifindex: 0,
        addresses: vec![ip(A), ip(A6)],
    })
    .unwrap();
    for (addr, id) in [(A, 4242), (A6, 4242), (B, 4243), (B6, 4243)] {
        let v = IpcacheValue {
            identity: id,
            ..Default::default()
        };
        dp.ipcache_upsert(ip(addr).into(), v).unwrap();
    }
    dp.set_policy(
        1,
        &EndpointPolicy {
            ingress_selected: true,
            egress_selected: true,
            rules: vec![
                rule(Direction::Egress, 4243, 80),
                rule(Direction::Ingress, 4243, 8080),
            ],
        },
    )
    .unwrap();
    dp
}

fn verdict(dp: &Datapath, program: Program, pkt: &[u8]) -> u32 {
    dp.run(program, pkt, 1).unwrap().verdict
}

#[test]
fn errors_about_flows_the_endpoint_opened_reach_it() {
    let root = TestRoot::new();
    let dp = node(&root);
    for (a, b, router) in [(A, B, ROUTER), (A6, B6, ROUTER6)] {
        let syn = packet((ip(a), 40000), (ip(b), 80), TCP);
        assert_eq!(verdict(&dp, Program::PodEgress, &syn), TC_ACT_OK, "{a}");
        let too_big = icmp_error(router, a, &syn);
        assert_eq!(
            verdict(&dp, Program::PodIngress, &too_big),
            TC_ACT_OK,
            "{a}: an error about its allowed flow"
        );

        // A flow never opened (port 81 is not allowed, so it was never noted).
        let other = packet((ip(a), 40001), (ip(b), 81), TCP);
        assert_eq!(verdict(&dp, Program::PodEgress, &other), TC_ACT_SHOT);
        let stray = icmp_error(router, a, &other);
        assert_eq!(verdict(&dp, Program::PodIngress, &stray), TC_ACT_SHOT);

        // An echo request from the router is no error: still denied.
        let echo = packet(
            (ip(router), 7),
            (ip(a), 0),
            if a == A { ICMP } else { ICMPV6 },
        );
        assert_eq!(verdict(&dp, Program::PodIngress, &echo), TC_ACT_SHOT);
    }
}

#[test]
fn an_error_quoting_another_hosts_packet_is_not_related() {
    let root = TestRoot::new();
    let dp = node(&root);
    let syn = packet((ip(A), 40002), (ip(B), 80), TCP);
    assert_eq!(verdict(&dp, Program::PodEgress, &syn), TC_ACT_OK);
    // Same flow quoted, but sent to A as if it were about B's packet (B -> A reversed).
    let reversed = packet((ip(B), 80), (ip(A), 40002), TCP);
    let forged = icmp_error(ROUTER, A, &reversed);
    assert_eq!(verdict(&dp, Program::PodIngress, &forged), TC_ACT_SHOT);
}

#[test]
fn the_endpoint_may_send_errors_about_flows_it_accepted() {
    let root = TestRoot::new();
    let dp = node(&root);
    let syn = packet((ip(B), 50000), (ip(A), 8080), TCP);
    assert_eq!(verdict(&dp, Program::PodIngress, &syn), TC_ACT_OK);
    // A answers with an ICMP error about B's packet: its egress allows only TCP to B:80.
    let unreachable = icmp_error(A, B, &syn);
    assert_eq!(verdict(&dp, Program::PodEgress, &unreachable), TC_ACT_OK);
    // About a packet A never accepted: denied.
    let never = packet((ip(B), 50001), (ip(A), 9999), TCP);
    assert_eq!(
        verdict(&dp, Program::PodEgress, &icmp_error(A, B, &never)),
        TC_ACT_SHOT
    );
}
