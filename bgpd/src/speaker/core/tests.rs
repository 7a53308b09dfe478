//! Core stories, sans-IO: inputs and the time in, actions out. Graceful restart and LLGR as the
//! helper (RFC 4724 §4.2, RFC 9494 §4.2), max-prefix (RFC 4486), route refresh (RFC 2918,
//! RFC 7313), session generations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::state::*;
use crate::fib::FibMsg;
use crate::fsm::{DownReason, Negotiated, negotiate};
use crate::policy::Policy;
use crate::rib::{PeerId, PeerInfo, Rib};
use crate::wire::{
    Afi, AsPath, Capability, Community, Context, GrFamily, GracefulRestart, LlgrFamily, Message,
    MpNextHop, MpReach, OpenMsg, Origin, PathAttrs, RouteRefreshMsg, RouteRefreshSubtype, Safi,
    UpdateMsg, cease_subcode,
};

const LOCAL_ASN: u32 = 65101;
const TOR_ASN: u32 = 65000;
const TOR: PeerId = PeerId(1);
const CTX: Context = Context {
    four_octet_as: true,
    extended_message: false,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn tor_info() -> PeerInfo {
    PeerInfo {
        id: TOR,
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        asn: TOR_ASN,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        ibgp: false,
        import: Policy::accept_all(),
        export: Policy::accept_all(),
        next_hop_self: false,
        enforce_first_as: true,
        max_accepted: None,
    }
}

/// A core with the ToR configured (installing learned routes), at `t0`.
fn core(max_prefixes: Option<configs::MaxPrefixes>) -> CoreState {
    let mut c = CoreState::new(
        Rib::new(LOCAL_ASN, Ipv4Addr::new(192, 0, 2, 2)),
        true,
        false,
    );
    let a = c.on(
        Input::AddPeer(NewPeer {
            info: tor_info(),
            name: "tor".into(),
            max_prefixes,
        }),
        Instant::now(),
    );
    assert!(matches!(a[..], [Action::Reply(Reply::Done)]), "{a:?}");
    c
}

/// What the ToR sends besides the families: GR, LLGR, enhanced route refresh.
#[derive(Default, Clone)]
struct TorCaps {
    gr: Option<GracefulRestart>,
    llgr: Option<Vec<LlgrFamily>>,
    enhanced_rr: bool,
}

fn gr(restart_time: u16, families: &[(Afi, bool)]) -> Option<GracefulRestart> {
    Some(GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time,
        families: families
            .iter()
            .map(|&(afi, forwarding)| GrFamily {
                afi,
                safi: Safi::UNICAST,
                forwarding,
            })
            .collect(),
    })
}

fn llgr(stale_time: u32, afis: &[Afi]) -> Option<Vec<LlgrFamily>> {
    Some(
        afis.iter()
            .map(|&afi| LlgrFamily {
                afi,
                safi: Safi::UNICAST,
                forwarding: false,
                stale_time,
            })
            .collect(),
    )
}

/// The session as negotiated: we send GR, LLGR (1 day) and enhanced route refresh, as bgpd
/// does with `graceful_restart_time`/`long_lived_stale_time`; the ToR what `caps` says.
fn negotiated(caps: &TorCaps) -> Box<Negotiated> {
    let base = |asn: u32| {
        vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
        ]
    };
    let mut ours = base(LOCAL_ASN);
    ours.push(Capability::EnhancedRouteRefresh);
    ours.push(Capability::GracefulRestart(GracefulRestart {
        notification: true,
        ..gr(120, &[(Afi::IPV4, false), (Afi::IPV6, false)]).unwrap()
    }));
    ours.push(Capability::LongLivedGracefulRestart(
        llgr(86400, &[Afi::IPV4, Afi::IPV6]).unwrap(),
    ));
    let mut theirs = base(TOR_ASN);
    if caps.enhanced_rr {
        theirs.push(Capability::EnhancedRouteRefresh);
    }
    if let Some(g) = &caps.gr {
        theirs.push(Capability::GracefulRestart(g.clone()));
    }
    if let Some(l) = &caps.llgr {
        theirs.push(Capability::LongLivedGracefulRestart(l.clone()));
    }
    let open = |asn: u32, id: [u8; 4], capabilities| OpenMsg {
        my_as: asn as u16,
        hold_time: 90,
        bgp_id: Ipv4Addr::from(id),
        capabilities,
    };
    Box::new(negotiate(
        &open(LOCAL_ASN, [192, 0, 2, 2], ours),
        None,
        &open(TOR_ASN, [192, 0, 2, 1], theirs),
    ))
}

fn up(c: &mut CoreState, generation: u64, caps: &TorCaps, now: Instant) -> Vec<Action> {
    c.on(
        Input::Up(SessionUp {
            peer: TOR,
            generation,
            negotiated: negotiated(caps),
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 179),
            remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000),
            link_local: None,
        }),
        now,
    )
}

fn down(c: &mut CoreState, generation: u64, reason: DownReason, now: Instant) -> Vec<Action> {
    c.on(
        Input::Down {
            peer: TOR,
            generation,
            reason,
        },
        now,
    )
}

/// An UPDATE as received: encoded and decoded by the codec.
fn wire(u: UpdateMsg) -> UpdateMsg {
    let bytes = Message::Update(Box::new(u)).to_bytes(&CTX).unwrap();
    match Message::decode(bytes, &CTX).unwrap() {
        Message::Update(u) => *u,
        m => panic!("{m:?}"),
    }
}

fn attrs() -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(vec![TOR_ASN])),
        ..PathAttrs::default()
    }
}

fn announce4(prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..attrs()
        },
        nlri: prefixes
            .iter()
            .map(|p| p.parse::<Ipv4Net>().unwrap())
            .collect(),
        ..UpdateMsg::default()
    })
}

fn announce6(prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: attrs(),
        mp_reach: Some(MpReach::Ipv6Unicast {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: prefixes
                .iter()
                .map(|p| p.parse::<Ipv6Net>().unwrap())
                .collect(),
        }),
        ..UpdateMsg::default()
    })
}

/// End-of-RIB for IPv4 unicast (RFC 4724 §2): an empty UPDATE.
fn end_of_rib4() -> UpdateMsg {
    wire(UpdateMsg::default())
}

fn updates(c: &mut CoreState, generation: u64, u: Vec<UpdateMsg>, now: Instant) -> Vec<Action> {
    c.on(
        Input::Updates {
            peer: TOR,
            generation,
            updates: u,
        },
        now,
    )
}

/// (prefix, stale, communities) of every route from the ToR.
fn adj_in(c: &CoreState) -> Vec<(IpNet, bool, Vec<Community>)> {
    let mut v: Vec<_> = c
        .rib()
        .adj_rib_in(TOR)
        .map(|r| (r.prefix, r.stale, r.attrs.attrs.communities.clone()))
        .collect();
    v.sort_by_key(|r| r.0);
    v
}

fn prefixes(c: &CoreState) -> Vec<IpNet> {
    adj_in(c).into_iter().map(|r| r.0).collect()
}

/// The kernel FIB changes of a flush: (prefix, installed).
fn fib_changes(actions: &[Action]) -> Vec<(IpNet, bool)> {
    let mut v = Vec::new();
    for a in actions {
        if let Action::Fib(FibMsg::Changes(ch)) = a {
            v.extend(ch.iter().map(|f| (f.prefix, !f.next_hops.is_empty())));
        }
    }
    v.sort();
    v
}

fn armed(actions: &[Action]) -> Vec<(CoreTimer, Instant)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ArmTimer { timer, at } => Some((*timer, *at)),
            _ => None,
        })
        .collect()
}

/// Every message sent to the ToR, decoded, in order.
fn sent(actions: &[Action]) -> Vec<Message> {
    let mut v = Vec::new();
    for a in actions {
        if let Action::Send { peer, bytes, .. } = a {
            assert_eq!(*peer, TOR);
            let mut buf = BytesMut::from(&bytes[..]);
            while !buf.is_empty() {
                v.push(Message::decode_from(&mut buf, &CTX).unwrap().unwrap());
            }
        }
    }
    v
}

const S: fn(u64) -> Duration = Duration::from_secs;

/// The ToR up (generation 1) with a v4 and a v6 route, flushed into the FIB.
fn tor_with_routes(caps: &TorCaps, t0: Instant) -> CoreState {
    let mut c = core(None);
    up(&mut c, 1, caps, t0);
    updates(
        &mut c,
        1,
        vec![
            announce4(&["198.51.100.0/24"]),
            announce6(&["2001:db8:1::/48"]),
        ],
        t0,
    );
    let f = c.on(Input::Flush, t0);
    assert_eq!(
        fib_changes(&f),
        vec![
            (net("198.51.100.0/24"), true),
            (net("2001:db8:1::/48"), true)
        ]
    );
    c
}

// ---- graceful restart, helper side (RFC 4724 §4.2) ----

#[test]
fn gr_capability_without_families_keeps_nothing_when_the_session_is_lost() {
    // BIRD's default ("graceful restart aware"): a capability with a restart time and no
    // address family. A crash of that ToR must take its routes out of the kernel at once.
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    let a = down(&mut c, 1, DownReason::TcpFailed, t0 + S(5));
    assert!(armed(&a).is_empty(), "a restart timer was armed: {a:?}");
    assert!(prefixes(&c).is_empty(), "{:?}", adj_in(&c));
    let f = c.on(Input::Flush, t0 + S(5));
    assert_eq!(
        fib_changes(&f),
        vec![
            (net("198.51.100.0/24"), false),
            (net("2001:db8:1::/48"), false)
        ]
    );
}

#[test]
fn gr_retains_only_the_families_the_capability_lists_and_marks_them_stale() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, false)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    let a = down(&mut c, 1, DownReason::TcpFailed, t0 + S(5));
    assert_eq!(armed(&a), vec![(CoreTimer::Restart(TOR), t0 + S(125))]);
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), true, vec![])]);
    let f = c.on(Input::Flush, t0 + S(5));
    assert_eq!(fib_changes(&f), vec![(net("2001:db8:1::/48"), false)]);
    // The stale route stays best (and in the API as stale).
    let best = c
        .rib()
        .best(net("198.51.100.0/24"))
        .expect("still selected");
    assert!(best.stale && best.best);
}

#[test]
fn gr_restart_timer_removes_stale_routes_when_due_and_not_before() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, false), (Afi::IPV6, false)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    assert_eq!(prefixes(&c).len(), 2);
    // A timer handed back early changes nothing.
    let a = c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(119));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(prefixes(&c).len(), 2);
    c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(120));
    assert!(prefixes(&c).is_empty(), "{:?}", adj_in(&c));
    let f = c.on(Input::Flush, t0 + S(120));
    assert_eq!(
        fib_changes(&f),
        vec![
            (net("198.51.100.0/24"), false),
            (net("2001:db8:1::/48"), false)
        ]
    );
    // Fired once: a second expiry is ignored.
    assert!(
        c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(200))
            .is_empty()
    );
}

#[test]
fn gr_restart_time_zero_keeps_nothing() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(0, &[(Afi::IPV4, true), (Afi::IPV6, true)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    let a = down(&mut c, 1, DownReason::TcpFailed, t0);
    assert!(armed(&a).is_empty(), "{a:?}");
    assert!(prefixes(&c).is_empty());
}

#[test]
fn gr_does_not_apply_after_a_notification_or_bfd_down() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, true), (Afi::IPV6, true)]),
        ..TorCaps::default()
    };
    for reason in [DownReason::BfdDown, DownReason::ManualStop] {
        let mut c = tor_with_routes(&caps, t0);
        let a = down(&mut c, 1, reason.clone(), t0);
        assert!(armed(&a).is_empty(), "{reason:?}: {a:?}");
        assert!(prefixes(&c).is_empty(), "{reason:?}");
    }
}

#[test]
fn gr_reestablished_without_the_f_bit_sweeps_stale_routes_at_once() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, false), (Afi::IPV6, false)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    // Back with F set for IPv4 only: the IPv6 stale route goes, the IPv4 one stays stale.
    let back = TorCaps {
        gr: gr(120, &[(Afi::IPV4, true), (Afi::IPV6, false)]),
        ..TorCaps::default()
    };
    up(&mut c, 2, &back, t0 + S(10));
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), true, vec![])]);
    // Its End-of-RIB without the route: the stale route goes (§4.2).
    updates(&mut c, 2, vec![end_of_rib4()], t0 + S(11));
    assert!(prefixes(&c).is_empty(), "{:?}", adj_in(&c));
}

#[test]
fn gr_fresh_route_after_restart_replaces_the_stale_one() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, true)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    up(&mut c, 2, &caps, t0 + S(10));
    updates(&mut c, 2, vec![announce4(&["198.51.100.0/24"])], t0 + S(11));
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), false, vec![])]);
    updates(&mut c, 2, vec![end_of_rib4()], t0 + S(11));
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), false, vec![])]);
    // The restart timer of the previous session bounds the wait; it finds nothing stale.
    c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(120));
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), false, vec![])]);
}

#[test]
fn events_of_an_old_session_are_ignored() {
    let t0 = Instant::now();
    let mut c = tor_with_routes(&TorCaps::default(), t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    up(&mut c, 2, &TorCaps::default(), t0);
    // A late batch and a late Down of session 1.
    updates(&mut c, 1, vec![announce4(&["203.0.113.0/24"])], t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    assert!(prefixes(&c).is_empty());
    assert!(c.rib().is_up(TOR), "a stale Down took the new session down");
    updates(&mut c, 2, vec![announce4(&["203.0.113.0/24"])], t0);
    assert_eq!(prefixes(&c), vec![net("203.0.113.0/24")]);
}

// ---- graceful NOTIFICATION (RFC 8538) ----

/// A GR capability listing both families, with the N bit as given.
fn gr_n(notification: bool) -> Option<GracefulRestart> {
    Some(GracefulRestart {
        notification,
        ..gr(120, &[(Afi::IPV4, false), (Afi::IPV6, false)]).unwrap()
    })
}

fn hold_timer_expired() -> crate::wire::NotificationMsg {
    crate::wire::NotificationMsg::new(4, 0, bytes::Bytes::new())
}

#[test]
fn with_the_n_bit_a_notification_other_than_hard_reset_keeps_the_routes() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr_n(true),
        ..TorCaps::default()
    };
    for reason in [
        DownReason::NotificationReceived(hold_timer_expired()),
        DownReason::NotificationSent(hold_timer_expired()),
    ] {
        let mut c = tor_with_routes(&caps, t0);
        let a = down(&mut c, 1, reason.clone(), t0);
        assert_eq!(
            armed(&a),
            vec![(CoreTimer::Restart(TOR), t0 + S(120))],
            "{reason:?}"
        );
        assert!(
            adj_in(&c).iter().all(|r| r.1),
            "{reason:?}: {:?}",
            adj_in(&c)
        );
        assert_eq!(adj_in(&c).len(), 2);
    }
}

#[test]
fn a_hard_reset_or_a_missing_n_bit_removes_the_routes() {
    let t0 = Instant::now();
    let hard = crate::wire::NotificationMsg::hard_reset(
        &crate::wire::NotificationMsg::cease_with_communication(
            cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            "maintenance",
        ),
    );
    for (caps, reason) in [
        (gr_n(true), DownReason::NotificationReceived(hard.clone())),
        (gr_n(true), DownReason::NotificationSent(hard)),
        // The peer did not send N: any NOTIFICATION ends GR (RFC 4724 §4.2).
        (
            gr_n(false),
            DownReason::NotificationReceived(hold_timer_expired()),
        ),
    ] {
        let mut c = tor_with_routes(
            &TorCaps {
                gr: caps,
                ..TorCaps::default()
            },
            t0,
        );
        let a = down(&mut c, 1, reason.clone(), t0);
        assert!(armed(&a).is_empty(), "{reason:?}: {a:?}");
        assert!(prefixes(&c).is_empty(), "{reason:?}");
    }
}

// ---- long-lived graceful restart, helper side (RFC 9494 §4.2) ----

#[test]
fn llgr_after_the_restart_time_routes_become_long_lived_stale_then_go() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(2, &[(Afi::IPV4, false)]),
        llgr: llgr(60, &[Afi::IPV4]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    let a = down(&mut c, 1, DownReason::TcpFailed, t0);
    assert_eq!(armed(&a), vec![(CoreTimer::Restart(TOR), t0 + S(2))]);
    // IPv6 is in neither capability: gone now.
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), true, vec![])]);
    let a = c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(2));
    assert_eq!(
        armed(&a),
        vec![(CoreTimer::LongLivedStale(TOR, Afi::IPV4), t0 + S(62))]
    );
    assert_eq!(
        adj_in(&c),
        vec![(net("198.51.100.0/24"), true, vec![Community::LLGR_STALE])]
    );
    // Still forwarding: no FIB removal for it.
    let f = c.on(Input::Flush, t0 + S(2));
    assert_eq!(fib_changes(&f), vec![(net("2001:db8:1::/48"), false)]);
    c.on(
        Input::Timer(CoreTimer::LongLivedStale(TOR, Afi::IPV4)),
        t0 + S(62),
    );
    assert!(prefixes(&c).is_empty());
    let f = c.on(Input::Flush, t0 + S(62));
    assert_eq!(fib_changes(&f), vec![(net("198.51.100.0/24"), false)]);
}

#[test]
fn llgr_with_restart_time_zero_starts_long_lived_stale_at_once() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(0, &[]),
        llgr: llgr(60, &[Afi::IPV4, Afi::IPV6]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    let a = down(&mut c, 1, DownReason::TcpFailed, t0);
    let mut timers = armed(&a);
    timers.sort();
    assert_eq!(
        timers,
        vec![
            (CoreTimer::LongLivedStale(TOR, Afi::IPV4), t0 + S(60)),
            (CoreTimer::LongLivedStale(TOR, Afi::IPV6), t0 + S(60)),
        ]
    );
    assert!(
        adj_in(&c)
            .iter()
            .all(|(_, stale, comms)| *stale && comms == &[Community::LLGR_STALE]),
        "{:?}",
        adj_in(&c)
    );
}

#[test]
fn llgr_session_back_before_the_restart_time_ends_keeps_fresh_routes() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(2, &[(Afi::IPV4, true)]),
        llgr: llgr(60, &[Afi::IPV4]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    up(&mut c, 2, &caps, t0 + S(1));
    updates(&mut c, 2, vec![announce4(&["198.51.100.0/24"])], t0 + S(1));
    // The restart timer runs out with the peer up: no long-lived phase, nothing fresh lost.
    let a = c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(2));
    assert!(armed(&a).is_empty(), "{a:?}");
    assert_eq!(adj_in(&c), vec![(net("198.51.100.0/24"), false, vec![])]);
}

#[test]
fn a_non_graceful_down_cancels_the_timers() {
    let t0 = Instant::now();
    let caps = TorCaps {
        gr: gr(120, &[(Afi::IPV4, true)]),
        ..TorCaps::default()
    };
    let mut c = tor_with_routes(&caps, t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    up(&mut c, 2, &caps, t0 + S(1));
    let a = down(&mut c, 2, DownReason::BfdDown, t0 + S(2));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::CancelTimer(CoreTimer::Restart(TOR)))),
        "{a:?}"
    );
    // The cancelled timer, handed back anyway, is ignored.
    assert!(
        c.on(Input::Timer(CoreTimer::Restart(TOR)), t0 + S(121))
            .is_empty()
    );
}

// ---- max-prefix (RFC 4486 subcode 1) ----

fn ceases(actions: &[Action]) -> Vec<PeerCommand> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Peer { peer, cmd } if *peer == TOR => Some(cmd.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn max_prefix_teardown_ceases_once_per_session_with_the_restart_hold_down() {
    let t0 = Instant::now();
    let mut c = core(Some(configs::MaxPrefixes {
        limit: 2,
        action: configs::MaxPrefixAction::Teardown,
        restart: 30,
    }));
    up(&mut c, 1, &TorCaps::default(), t0);
    let a = updates(
        &mut c,
        1,
        vec![announce4(&["10.0.1.0/24", "10.0.2.0/24"])],
        t0,
    );
    assert!(ceases(&a).is_empty(), "at the limit is not over it");
    let a = updates(&mut c, 1, vec![announce4(&["10.0.3.0/24"])], t0);
    match &ceases(&a)[..] {
        [
            PeerCommand::Cease {
                subcode,
                hold_down,
                communication,
                ..
            },
        ] => {
            assert_eq!(*subcode, cease_subcode::MAXIMUM_PREFIXES_REACHED);
            assert_eq!(*hold_down, S(30));
            assert!(communication.as_deref().unwrap().contains('2'));
        }
        other => panic!("{other:?}"),
    }
    // More before the session is gone: no second Cease.
    let a = updates(&mut c, 1, vec![announce4(&["10.0.4.0/24"])], t0);
    assert!(ceases(&a).is_empty(), "{a:?}");
    // The session restarts (after the hold-down, in the peer task) and goes over again.
    down(
        &mut c,
        1,
        DownReason::NotificationSent(crate::wire::NotificationMsg::cease_with_communication(
            cease_subcode::MAXIMUM_PREFIXES_REACHED,
            "",
        )),
        t0,
    );
    assert!(prefixes(&c).is_empty());
    up(&mut c, 2, &TorCaps::default(), t0 + S(30));
    let a = updates(
        &mut c,
        2,
        vec![announce4(&["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"])],
        t0 + S(30),
    );
    assert_eq!(ceases(&a).len(), 1, "{a:?}");
}

#[test]
fn max_prefix_warn_reports_once_and_keeps_everything() {
    let t0 = Instant::now();
    let mut c = core(Some(configs::MaxPrefixes {
        limit: 1,
        action: configs::MaxPrefixAction::Warn,
        restart: 0,
    }));
    up(&mut c, 1, &TorCaps::default(), t0);
    let a = updates(
        &mut c,
        1,
        vec![announce4(&["10.0.1.0/24", "10.0.2.0/24"])],
        t0,
    );
    match &ceases(&a)[..] {
        [PeerCommand::Notice(s)] => assert!(s.contains("warn only"), "{s}"),
        other => panic!("{other:?}"),
    }
    let a = updates(&mut c, 1, vec![announce4(&["10.0.3.0/24"])], t0);
    assert!(ceases(&a).is_empty());
    assert_eq!(prefixes(&c).len(), 3);
}

// ---- route refresh (RFC 2918, RFC 7313) ----

fn refresh(c: &mut CoreState, generation: u64, subtype: RouteRefreshSubtype) -> Vec<Action> {
    c.on(
        Input::RouteRefresh {
            peer: TOR,
            generation,
            msg: RouteRefreshMsg {
                afi: Afi::IPV4,
                subtype,
                safi: Safi::UNICAST,
            },
        },
        Instant::now(),
    )
}

/// A core with one advert, the ToR up and the initial UPDATEs flushed.
fn core_advertising(caps: &TorCaps) -> CoreState {
    let mut c = core(None);
    c.add_initial(vec![(
        crate::rib::Advert {
            prefix: net("10.244.1.0/24"),
            ..Default::default()
        },
        None,
    )]);
    up(&mut c, 1, caps, Instant::now());
    let first = sent(&c.on(Input::Flush, Instant::now()));
    assert!(
        first
            .iter()
            .any(|m| matches!(m, Message::Update(u) if !u.nlri.is_empty())),
        "{first:?}"
    );
    c
}

fn kinds(msgs: &[Message]) -> Vec<&'static str> {
    msgs.iter()
        .map(|m| match m {
            Message::RouteRefresh(r) if r.subtype == RouteRefreshSubtype::BoRR => "BoRR",
            Message::RouteRefresh(r) if r.subtype == RouteRefreshSubtype::EoRR => "EoRR",
            Message::RouteRefresh(_) => "REFRESH",
            Message::Update(u) if u.nlri.is_empty() && u.mp_reach.is_none() => "EoR/withdraw",
            Message::Update(_) => "UPDATE",
            _ => "other",
        })
        .collect()
}

#[test]
fn route_refresh_resends_our_routes_bracketed_when_enhanced() {
    let mut c = core_advertising(&TorCaps {
        enhanced_rr: true,
        ..TorCaps::default()
    });
    refresh(&mut c, 1, RouteRefreshSubtype::Normal);
    let msgs = sent(&c.on(Input::Flush, Instant::now()));
    let k = kinds(&msgs);
    assert_eq!(k.first(), Some(&"BoRR"), "{k:?}");
    assert_eq!(k.last(), Some(&"EoRR"), "{k:?}");
    assert!(k.contains(&"UPDATE"), "{k:?}");
}

#[test]
fn route_refresh_without_enhanced_resends_without_markers() {
    let mut c = core_advertising(&TorCaps::default());
    refresh(&mut c, 1, RouteRefreshSubtype::Normal);
    let k = kinds(&sent(&c.on(Input::Flush, Instant::now())));
    assert!(k.contains(&"UPDATE"), "{k:?}");
    assert!(!k.contains(&"BoRR") && !k.contains(&"EoRR"), "{k:?}");
}

#[test]
fn enhanced_refresh_from_the_peer_removes_what_it_did_not_resend() {
    let t0 = Instant::now();
    let caps = TorCaps {
        enhanced_rr: true,
        ..TorCaps::default()
    };
    let mut c = core(None);
    up(&mut c, 1, &caps, t0);
    updates(
        &mut c,
        1,
        vec![announce4(&["10.0.1.0/24", "10.0.2.0/24"])],
        t0,
    );
    refresh(&mut c, 1, RouteRefreshSubtype::BoRR);
    assert!(adj_in(&c).iter().all(|r| r.1), "BoRR marks them stale");
    updates(&mut c, 1, vec![announce4(&["10.0.1.0/24"])], t0);
    refresh(&mut c, 1, RouteRefreshSubtype::EoRR);
    assert_eq!(adj_in(&c), vec![(net("10.0.1.0/24"), false, vec![])]);
}

#[test]
fn refresh_markers_of_an_old_session_are_ignored() {
    let t0 = Instant::now();
    let mut c = core(None);
    up(&mut c, 1, &TorCaps::default(), t0);
    down(&mut c, 1, DownReason::TcpFailed, t0);
    up(&mut c, 2, &TorCaps::default(), t0);
    updates(&mut c, 2, vec![announce4(&["10.0.1.0/24"])], t0);
    refresh(&mut c, 1, RouteRefreshSubtype::BoRR);
    refresh(&mut c, 1, RouteRefreshSubtype::EoRR);
    assert_eq!(adj_in(&c), vec![(net("10.0.1.0/24"), false, vec![])]);
}

#[test]
fn an_import_policy_change_asks_the_peer_for_a_refresh() {
    let mut c = core_advertising(&TorCaps::default());
    let a = c.on(
        Input::SetPolicies {
            peer: TOR,
            import: Policy::reject_all(),
            export: Policy::accept_all(),
        },
        Instant::now(),
    );
    assert!(matches!(a[..], [Action::Reply(Reply::Done)]), "{a:?}");
    let k = kinds(&sent(&c.on(Input::Flush, Instant::now())));
    assert_eq!(k.iter().filter(|k| **k == "REFRESH").count(), 2, "{k:?}");
}
