//! Identity policy through BPF_PROG_TEST_RUN: real programs, real pinned
//! maps (incl. the map-in-map policy), events read back from the ring
//! buffer with [`EventReader`]. Needs root and bpffs (scripts/setup).

mod support;

use aya::maps::{HashMap, IterableMap, MapData};

use std::time::Duration;

use ironmesh_datapath::events::{DropReason, EventKind, Verdict};
use ironmesh_datapath::ipcache::IpcacheValue;
use ironmesh_datapath::lb::{BackendState, Proto};
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::policy::{
    Action, Direction, MARK_MAGIC_IDENTITY, POLICY_ALLOW, Peer, PolicyKey, PortMatch, Rule,
};
use ironmesh_datapath::{
    Backend, Config, Datapath, Endpoint, EndpointPolicy, Event, EventReader, PolicyMode, Program,
    Service,
};
use support::*;

const A: &str = "10.0.1.5"; // local endpoint 1, identity 4242
const B: &str = "10.0.2.7"; // identity 4243 (remote or local, per test)
const A_ID: u32 = 4242;
const B_ID: u32 = 4243;
const WORLD: u32 = 2;

struct Node {
    _root: TestRoot,
    dp: Datapath,
    events: EventReader,
}

fn identity(id: u32) -> IpcacheValue {
    IpcacheValue {
        identity: id,
        ..Default::default()
    }
}

/// A datapath with endpoint A local and B known in the IP cache.
fn node() -> Node {
    let root = TestRoot::new();
    let mut dp = Datapath::load(&root.0).unwrap();
    let events = EventReader::open(&root.0).unwrap();
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: A_ID,
        ifindex: 0,
        addresses: vec![ip(A)],
    })
    .unwrap();
    dp.ipcache_upsert(ip(A).into(), identity(A_ID)).unwrap();
    dp.ipcache_upsert(ip(B).into(), identity(B_ID)).unwrap();
    Node {
        _root: root,
        dp,
        events,
    }
}

fn rule(direction: Direction, peer: Peer, ports: PortMatch, action: Action) -> Rule {
    Rule {
        direction,
        peer,
        ports,
        action,
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    packet((ip(src), sport), (ip(dst), dport), TCP)
}

fn verdict(dp: &Datapath, program: Program, pkt: &[u8]) -> u32 {
    dp.run(program, pkt, 1).unwrap().verdict
}

fn drain(n: &mut Node) -> Vec<Event> {
    n.events.drain().into_iter().map(Result::unwrap).collect()
}

fn egress_allow_b_80() -> EndpointPolicy {
    EndpointPolicy {
        egress_selected: true,
        rules: vec![rule(
            Direction::Egress,
            Peer::Identity(B_ID),
            PortMatch::Port(6, 80),
            Action::Allow,
        )],
        ..Default::default()
    }
}

#[test]
fn allowed_by_a_rule_with_a_verdict_event_naming_both_identities() {
    let mut n = node();
    n.dp.set_policy(1, &egress_allow_b_80()).unwrap();
    let pkt = tcp(A, 40000, B, 80);
    let out = n.dp.run(Program::PodEgress, &pkt, 1).unwrap();
    assert_eq!(out.verdict, TC_ACT_OK);
    assert_eq!(out.packet, pkt, "policy must not touch the packet");
    let ev = drain(&mut n);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].kind, EventKind::PolicyVerdict(Verdict::Allowed));
    assert_eq!((ev[0].src_identity, ev[0].dst_identity), (A_ID, B_ID));
    assert_eq!(
        (ev[0].endpoint_id, ev[0].direction),
        (1, Some(Direction::Egress))
    );
    assert_eq!(
        ev[0].to_string(),
        "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243) TCP 80 policy-verdict: allowed (egress)"
    );
    // The second packet of the flow is allowed again, without a new verdict event.
    assert_eq!(verdict(&n.dp, Program::PodEgress, &pkt), TC_ACT_OK);
    assert!(drain(&mut n).is_empty());
}

#[test]
fn denied_by_a_deny_rule_even_when_another_rule_allows() {
    let mut n = node();
    let mut p = egress_allow_b_80();
    p.rules.push(rule(
        Direction::Egress,
        Peer::Identity(B_ID),
        PortMatch::Proto(6),
        Action::Deny,
    ));
    n.dp.set_policy(1, &p).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 40001, B, 80)),
        TC_ACT_SHOT
    );
    let ev = drain(&mut n);
    let drop = ev
        .iter()
        .find(|e| matches!(e.kind, EventKind::Drop(_)))
        .expect("a drop event");
    assert_eq!(drop.kind, EventKind::Drop(DropReason::PolicyDenied));
    assert_eq!(
        drop.to_string(),
        "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243) TCP 80 dropped: policy denied (egress)"
    );
    assert!(
        ev.iter()
            .any(|e| e.kind == EventKind::PolicyVerdict(Verdict::Denied))
    );
}

#[test]
fn a_selected_endpoint_is_default_deny_only_in_the_selected_direction() {
    let mut n = node();
    n.dp.set_policy(1, &egress_allow_b_80()).unwrap();
    // Egress is selected: another port, another peer and ICMP are denied.
    for pkt in [
        tcp(A, 40002, B, 443),
        tcp(A, 40003, "10.0.9.9", 80),
        packet((ip(A), 7), (ip(B), 0), ICMP),
    ] {
        assert_eq!(verdict(&n.dp, Program::PodEgress, &pkt), TC_ACT_SHOT);
    }
    let ev = drain(&mut n);
    let drops: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Drop(_)))
        .collect();
    assert_eq!(drops.len(), 3, "{ev:?}");
    assert!(
        drops
            .iter()
            .all(|e| e.kind == EventKind::Drop(DropReason::PolicyDefaultDeny))
    );
    assert_eq!(drops[1].dst_identity, WORLD, "unknown address is world");
    // Ingress is not selected: anything may reach A, and no event is written.
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 5000, A, 9999)),
        TC_ACT_OK
    );
    assert!(drain(&mut n).is_empty());
}

#[test]
fn replies_of_allowed_flows_pass_both_default_deny_directions() {
    let mut n = node();
    let mut p = egress_allow_b_80();
    p.ingress_selected = true; // and no ingress rule at all
    n.dp.set_policy(1, &p).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 80, A, 40010)),
        TC_ACT_SHOT,
        "before the flow exists, the 'reply' is a new flow and ingress denies it"
    );
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 40010, B, 80)),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 80, A, 40010)),
        TC_ACT_OK,
        "the reply of an allowed flow"
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 80, A, 40011)),
        TC_ACT_SHOT,
        "another port is not a reply"
    );
}

#[test]
fn ingress_policy_allows_by_peer_identity() {
    let mut n = node();
    n.dp.set_policy(
        1,
        &EndpointPolicy {
            ingress_selected: true,
            rules: vec![rule(
                Direction::Ingress,
                Peer::Identity(B_ID),
                PortMatch::Port(6, 8080),
                Action::Allow,
            )],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 5000, A, 8080)),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp("10.0.3.3", 5000, A, 8080)),
        TC_ACT_SHOT
    );
    let ev = drain(&mut n);
    let verdicts: Vec<_> = ev
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::PolicyVerdict(v) => Some((v, e.src_identity, e.dst_identity)),
            _ => None,
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (Verdict::Allowed, B_ID, A_ID),
            (Verdict::DefaultDeny, WORLD, A_ID)
        ]
    );
}

#[test]
fn the_identity_from_the_overlay_mark_wins_over_the_ip_cache() {
    let mut n = node();
    let tunnel_id = 5555;
    n.dp.set_policy(
        1,
        &EndpointPolicy {
            ingress_selected: true,
            rules: vec![rule(
                Direction::Ingress,
                Peer::Identity(tunnel_id),
                PortMatch::Any,
                Action::Allow,
            )],
            ..Default::default()
        },
    )
    .unwrap();
    let pkt = tcp(B, 6000, A, 22);
    // The IP cache says B is 4243 (not allowed); the VNI said 5555 (allowed).
    assert_eq!(verdict(&n.dp, Program::PodIngress, &pkt), TC_ACT_SHOT);
    let out =
        n.dp.run_with_mark(
            Program::PodIngress,
            &pkt,
            1,
            MARK_MAGIC_IDENTITY | tunnel_id,
        )
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_OK);
    let ev = drain(&mut n);
    assert!(
        ev.iter()
            .any(|e| e.kind == EventKind::PolicyVerdict(Verdict::Allowed)
                && e.src_identity == tunnel_id),
        "{ev:?}"
    );
    // A mark without our magic is not an identity.
    let other = tcp(B, 6001, A, 22);
    assert_eq!(
        n.dp.run_with_mark(Program::PodIngress, &other, 1, tunnel_id)
            .unwrap()
            .verdict,
        TC_ACT_SHOT
    );
}

#[test]
fn enforcement_modes_default_always_never() {
    let mut n = node();
    let pkt = || tcp(A, 41000, B, 80);
    // default, no policy: allowed.
    assert_eq!(verdict(&n.dp, Program::PodEgress, &pkt()), TC_ACT_OK);
    // always, no policy: denied both ways.
    n.dp.set_config(&Config {
        policy_mode: PolicyMode::Always,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 41001, B, 80)),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 41002, A, 80)),
        TC_ACT_SHOT
    );
    // always, with an allow rule: that flow passes; an unselected direction
    // stays default-deny (always means selected everywhere).
    n.dp.set_policy(1, &egress_allow_b_80()).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 41003, B, 80)),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 41004, A, 80)),
        TC_ACT_SHOT
    );
    // never: even an explicit deny is not enforced.
    n.dp.set_policy(
        1,
        &EndpointPolicy {
            egress_selected: true,
            rules: vec![rule(
                Direction::Egress,
                Peer::Any,
                PortMatch::Any,
                Action::Deny,
            )],
            ..Default::default()
        },
    )
    .unwrap();
    n.dp.set_config(&Config {
        policy_mode: PolicyMode::Never,
        ..Default::default()
    })
    .unwrap();
    drain(&mut n);
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 41005, B, 80)),
        TC_ACT_OK
    );
    assert!(drain(&mut n).is_empty(), "never: no verdicts either");
    n.dp.set_config(&Config::default()).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 41006, B, 80)),
        TC_ACT_SHOT
    );
}

#[test]
fn cidr_peers_match_world_traffic_by_longest_prefix() {
    let mut n = node();
    let cidr_id = 16_777_001; // an identity the control plane gave 203.0.113.0/24
    let carved_id = 16_777_002; // and one for a /28 carved out of it
    n.dp.ipcache_upsert("203.0.113.0/24".parse().unwrap(), identity(cidr_id))
        .unwrap();
    n.dp.ipcache_upsert("203.0.113.16/28".parse().unwrap(), identity(carved_id))
        .unwrap();
    n.dp.set_policy(
        1,
        &EndpointPolicy {
            egress_selected: true,
            rules: vec![rule(
                Direction::Egress,
                Peer::Identity(cidr_id),
                PortMatch::Port(6, 443),
                Action::Allow,
            )],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        verdict(
            &n.dp,
            Program::PodEgress,
            &tcp(A, 42000, "203.0.113.9", 443)
        ),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(
            &n.dp,
            Program::PodEgress,
            &tcp(A, 42001, "203.0.113.20", 443)
        ),
        TC_ACT_SHOT,
        "the /28 has its own identity"
    );
    assert_eq!(
        verdict(
            &n.dp,
            Program::PodEgress,
            &tcp(A, 42002, "198.51.100.9", 443)
        ),
        TC_ACT_SHOT,
        "outside the CIDR is plain world"
    );
    let ids: Vec<u32> = drain(&mut n)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Drop(_)))
        .map(|e| e.dst_identity)
        .collect();
    assert_eq!(ids, [carved_id, WORLD]);
}

#[test]
fn egress_policy_sees_the_backend_after_service_translation() {
    let mut n = node();
    n.dp.upsert_service(&Service {
        id: 9,
        vip: ip("192.0.2.10"),
        port: 80,
        proto: Proto::Tcp,
        maglev: false,
        backends: vec![Backend {
            id: 1,
            ip: ip(B),
            port: 80,
            state: BackendState::Active,
        }],
    })
    .unwrap();
    n.dp.set_policy(1, &egress_allow_b_80()).unwrap();
    let out =
        n.dp.run(Program::PodEgress, &tcp(A, 43000, "192.0.2.10", 80), 1)
            .unwrap();
    assert_eq!(out.verdict, TC_ACT_OK);
    assert_eq!(parse(&out.packet).dst, (ip(B), 80));
    let ev = drain(&mut n);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].dst, (ip(B), 80), "the verdict names the backend");
}

/// The kernel's id of a map: a new id is a new map.
fn map_id<K: aya::Pod, V: aya::Pod>(m: &HashMap<MapData, K, V>) -> u32 {
    m.map().info().unwrap().id()
}

fn v1() -> EndpointPolicy {
    EndpointPolicy {
        ingress_selected: true,
        rules: (0..100)
            .map(|i| {
                rule(
                    Direction::Ingress,
                    Peer::Identity(B_ID),
                    PortMatch::Port(6, 1000 + i),
                    Action::Allow,
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn v2() -> EndpointPolicy {
    EndpointPolicy {
        ingress_selected: true,
        rules: vec![rule(
            Direction::Ingress,
            Peer::Identity(B_ID),
            PortMatch::Port(6, 2000),
            Action::Allow,
        )],
        ..Default::default()
    }
}

#[test]
fn a_policy_is_replaced_as_a_whole_by_swapping_its_inner_map() {
    let mut n = node();
    n.dp.set_policy(1, &v1()).unwrap();
    let old = n.dp.policy_map(1).unwrap().expect("policy v1 in force");
    let old_id = map_id(&old);
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 7000, A, 1050)),
        TC_ACT_OK
    );

    n.dp.set_policy(1, &v2()).unwrap();
    let new = n.dp.policy_map(1).unwrap().expect("policy v2 in force");
    assert_ne!(map_id(&new), old_id, "a new inner map was swapped in");
    // The old map was never edited: it still holds exactly v1, so no packet
    // could have seen a mix of v1 and v2.
    let old_entries: Vec<(PolicyKey, _)> = old.iter().map(Result::unwrap).collect();
    assert_eq!(old_entries.len(), v1().entries().unwrap().len());
    assert_eq!(
        n.dp.policy_entries(1).unwrap().unwrap(),
        v2().entries().unwrap()
    );
    assert!(
        n.dp.policy_entries(1)
            .unwrap()
            .unwrap()
            .values()
            .filter(|v| v.action == POLICY_ALLOW)
            .count()
            == 1
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 7001, A, 1050)),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 7002, A, 2000)),
        TC_ACT_OK
    );
    // An invalid policy changes nothing.
    let bad = EndpointPolicy {
        rules: vec![rule(
            Direction::Ingress,
            Peer::Identity(0),
            PortMatch::Any,
            Action::Allow,
        )],
        ..v2()
    };
    assert!(n.dp.set_policy(1, &bad).is_err());
    assert_eq!(map_id(&n.dp.policy_map(1).unwrap().unwrap()), map_id(&new));
    // Removing the policy: nothing selects the endpoint any more.
    n.dp.remove_policy(1).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodIngress, &tcp(B, 7003, A, 1050)),
        TC_ACT_OK
    );
    n.dp.remove_policy(1).unwrap(); // idempotent
}

#[test]
fn every_swap_leaves_one_complete_version_in_force() {
    // 50 swaps between a policy allowing ports 3000..3200 and one allowing
    // none of them: after each, the inner map in force holds exactly one of
    // the two versions and the verdicts follow it. (A packet cannot observe
    // a mix by itself; that no mix exists is shown by the swap test above:
    // inner maps are never edited once in force.)
    let mut n = node();
    let all = EndpointPolicy {
        ingress_selected: true,
        rules: (0..200)
            .map(|i| {
                rule(
                    Direction::Ingress,
                    Peer::Identity(B_ID),
                    PortMatch::Port(6, 3000 + i),
                    Action::Allow,
                )
            })
            .collect(),
        ..Default::default()
    };
    let none = EndpointPolicy {
        ingress_selected: true,
        ..Default::default()
    };
    let sizes = [all.entries().unwrap().len(), none.entries().unwrap().len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for round in 0..50 {
        assert!(std::time::Instant::now() < deadline, "too slow");
        let p = if round % 2 == 0 { &all } else { &none };
        n.dp.set_policy(1, p).unwrap();
        let in_force = n.dp.policy_map(1).unwrap().unwrap();
        let len = in_force.iter().count();
        assert!(sizes.contains(&len), "round {round}: {len} entries");
        let want = if round % 2 == 0 {
            TC_ACT_OK
        } else {
            TC_ACT_SHOT
        };
        let port = 3000 + (round as u16 * 7) % 200;
        assert_eq!(
            verdict(
                &n.dp,
                Program::PodIngress,
                &tcp(B, 50000 + round as u16, A, port)
            ),
            want,
            "round {round}"
        );
    }
}

#[test]
fn the_event_reader_waits_and_times_out() {
    let mut n = node();
    let t0 = std::time::Instant::now();
    assert!(
        n.events
            .next_timeout(Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    assert!(t0.elapsed() >= Duration::from_millis(150));
    n.dp.set_policy(1, &egress_allow_b_80()).unwrap();
    let _ =
        n.dp.run(Program::PodEgress, &tcp(A, 44000, B, 81), 1)
            .unwrap();
    let first = n
        .events
        .next_timeout(Duration::from_secs(2))
        .unwrap()
        .expect("an event");
    assert_eq!(first.src.0, ip(A));
    assert!(matches!(first.kind, EventKind::PolicyVerdict(_)));
}

#[test]
fn ipv6_policy_and_neighbour_discovery_under_default_deny() {
    let mut n = node();
    let (a6, b6) = ("2001:db8:1::5", "2001:db8:2::7");
    n.dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: A_ID,
        ifindex: 0,
        addresses: vec![ip(A), ip(a6)],
    })
    .unwrap();
    n.dp.ipcache_upsert(ip(b6).into(), identity(B_ID)).unwrap();
    n.dp.set_policy(
        1,
        &EndpointPolicy {
            ingress_selected: true,
            rules: vec![rule(
                Direction::Ingress,
                Peer::Identity(B_ID),
                PortMatch::Port(6, 80),
                Action::Allow,
            )],
            ..Default::default()
        },
    )
    .unwrap();
    let allowed = packet((ip(b6), 5000), (ip(a6), 80), TCP);
    assert_eq!(verdict(&n.dp, Program::PodIngress, &allowed), TC_ACT_OK);
    let other = packet((ip(b6), 5000), (ip(a6), 81), TCP);
    assert_eq!(verdict(&n.dp, Program::PodIngress, &other), TC_ACT_SHOT);
    // Neighbour solicitation (type 135) is never policed; an echo request is.
    let mut ns = packet((ip(b6), 0), (ip(a6), 0), ICMPV6);
    ns[14 + 40] = 135;
    assert_eq!(verdict(&n.dp, Program::PodIngress, &ns), TC_ACT_OK);
    let echo = packet((ip(b6), 9), (ip(a6), 0), ICMPV6);
    assert_eq!(verdict(&n.dp, Program::PodIngress, &echo), TC_ACT_SHOT);
    let drops: Vec<Event> = drain(&mut n)
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Drop(_)))
        .collect();
    assert_eq!(drops.len(), 2, "{drops:?}");
    assert_eq!(
        drops[1].to_string(),
        "2001:db8:2::7 (id 4243) -> 2001:db8:1::5 (id 4242) ICMPv6 dropped: policy denied (default deny) (ingress)"
    );
}

#[test]
fn an_endpoint_without_policy_pays_for_no_flow_tracking() {
    let n = node();
    for port in 0..20 {
        assert_eq!(
            verdict(&n.dp, Program::PodEgress, &tcp(A, 45000 + port, B, 80)),
            TC_ACT_OK
        );
    }
    assert_eq!(n.dp.conntrack_len(), 0, "no policy: nothing to remember");
    let mut n = node();
    n.dp.set_policy(1, &EndpointPolicy::default()).unwrap();
    assert_eq!(
        verdict(&n.dp, Program::PodEgress, &tcp(A, 46000, B, 80)),
        TC_ACT_OK
    );
    assert_eq!(
        n.dp.conntrack_len(),
        1,
        "with a policy, the reply entry is written"
    );
    assert!(drain(&mut n).is_empty(), "selected nowhere: no verdicts");
}
