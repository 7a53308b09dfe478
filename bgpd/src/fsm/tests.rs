//! The FSM as small stories (RFC 4271 §8.2.2).

use std::time::Duration;

use super::*;
use crate::wire::{Afi, Safi, UpdateMsg, cease_subcode};

const LOCAL_AS: u32 = 65001;
const PEER_AS: u32 = 65002;

fn cfg() -> SessionConfig {
    SessionConfig {
        local_asn: LOCAL_AS,
        router_id: "192.0.2.1".parse().unwrap(),
        peer_as: PeerAs::Exact(PEER_AS),
        hold_time: 90,
        keepalive: None,
        connect_retry: Duration::from_secs(5),
        passive: false,
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
        ],
        idle_hold: Duration::from_secs(1),
        idle_hold_max: Duration::from_secs(60),
    }
}

fn peer_open(asn: u32, hold: u16) -> OpenMsg {
    build_open(
        asn,
        hold,
        "192.0.2.2".parse().unwrap(),
        &[
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
        ],
    )
}

fn sends(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn notification(actions: &[Action]) -> Option<&NotificationMsg> {
    sends(actions).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

/// Idle → Connect → OpenSent → OpenConfirm → Established.
fn established(cfg: SessionConfig) -> Session {
    let mut s = Session::new(cfg);
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    s.handle(Event::Message(Message::Open(peer_open(PEER_AS, 30))));
    let a = s.handle(Event::Message(Message::Keepalive));
    assert!(matches!(a.last(), Some(Action::Established(_))), "{a:?}");
    s
}

#[test]
fn start_connects_and_arms_connect_retry() {
    let mut s = Session::new(cfg());
    let a = s.handle(Event::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(
        a,
        vec![
            Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(5)),
            Action::Connect
        ]
    );
}

#[test]
fn passive_peer_waits_in_active() {
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..cfg()
    });
    let a = s.handle(Event::ManualStart);
    assert_eq!(s.state(), State::Active);
    assert!(!a.contains(&Action::Connect));
    // ConnectRetry expiry never makes a passive peer connect.
    let a = s.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(!a.contains(&Action::Connect));
    assert_eq!(s.state(), State::Active);
}

#[test]
fn connected_sends_open_with_large_hold_timer() {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    let a = s.handle(Event::TcpConnected);
    assert_eq!(s.state(), State::OpenSent);
    let Message::Open(open) = sends(&a)[0] else {
        panic!("{a:?}")
    };
    assert_eq!((open.my_as, open.hold_time), (65001, 90));
    assert_eq!(open.four_octet_as(), Some(LOCAL_AS));
    assert!(a.contains(&Action::StartTimer(Timer::Hold, OPEN_HOLD_TIME)));
}

#[test]
fn four_octet_local_asn_sends_as_trans() {
    let mut s = Session::new(SessionConfig {
        local_asn: 4_200_000_001,
        ..cfg()
    });
    s.handle(Event::ManualStart);
    let a = s.handle(Event::TcpConnected);
    let Message::Open(open) = sends(&a)[0] else {
        panic!()
    };
    assert_eq!(open.my_as, crate::wire::AS_TRANS);
    assert_eq!(open.asn(), 4_200_000_001);
}

#[test]
fn open_exchange_negotiates_smaller_hold_time_and_common_families() {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let a = s.handle(Event::Message(Message::Open(peer_open(PEER_AS, 30))));
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(sends(&a), vec![&Message::Keepalive]);
    assert!(a.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
    assert!(a.contains(&Action::StartTimer(
        Timer::Keepalive,
        Duration::from_secs(10)
    )));
    let n = s.negotiated().unwrap();
    assert_eq!(n.families, vec![(Afi::IPV4, Safi::UNICAST)]);
    assert!(n.four_octet_as && n.route_refresh);
    assert_eq!(n.peer_asn, PEER_AS);
}

#[test]
fn keepalive_in_open_confirm_establishes() {
    let s = established(cfg());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn wrong_peer_as_is_refused_with_bad_peer_as() {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let a = s.handle(Event::Message(Message::Open(peer_open(65099, 90))));
    let n = notification(&a).expect("a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (2, 2));
    assert_eq!(&n.data[..], &65099u16.to_be_bytes());
    assert!(a.contains(&Action::Disconnect));
    assert_eq!(s.state(), State::Idle);
    // It will try again after the idle hold.
    assert!(a.contains(&Action::StartTimer(Timer::IdleHold, Duration::from_secs(1))));
}

#[test]
fn as_zero_in_open_is_bad_peer_as_even_with_any_peer_as() {
    // RFC 7607 §2: My AS 0, or AS_TRANS with a 4-octet AS capability of 0.
    for open in [peer_open(0, 90), {
        let mut o = peer_open(0, 90);
        o.my_as = crate::wire::AS_TRANS;
        o
    }] {
        let mut s = Session::new(SessionConfig {
            peer_as: PeerAs::Any,
            ..cfg()
        });
        s.handle(Event::ManualStart);
        s.handle(Event::TcpConnected);
        assert_eq!(open.asn(), 0);
        let a = s.handle(Event::Message(Message::Open(open)));
        let n = notification(&a).expect("a NOTIFICATION");
        assert_eq!((n.code, n.subcode), (2, 2));
        assert_eq!(s.state(), State::Idle);
    }
}

#[test]
fn any_peer_as_learns_it_from_open() {
    let mut s = Session::new(SessionConfig {
        peer_as: PeerAs::Any,
        ..cfg()
    });
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    s.handle(Event::Message(Message::Open(peer_open(4_200_000_007, 90))));
    assert_eq!(s.negotiated().unwrap().peer_asn, 4_200_000_007);
}

#[test]
fn ibgp_peer_with_our_router_id_is_refused() {
    let mut s = Session::new(SessionConfig {
        peer_as: PeerAs::Exact(LOCAL_AS),
        ..cfg()
    });
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let mut open = peer_open(LOCAL_AS, 90);
    open.bgp_id = "192.0.2.1".parse().unwrap();
    let a = s.handle(Event::Message(Message::Open(open)));
    let n = notification(&a).unwrap();
    assert_eq!((n.code, n.subcode), (2, 3));
}

/// A session where both sides sent the N bit (RFC 8538), or only we did.
fn established_with_n(peer_n: bool) -> Session {
    let gr = |notification| {
        Capability::GracefulRestart(crate::wire::GracefulRestart {
            restart_state: false,
            notification,
            restart_time: 120,
            families: vec![],
        })
    };
    let mut c = cfg();
    c.capabilities.push(gr(true));
    let mut s = Session::new(c);
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let mut open = peer_open(PEER_AS, 30);
    open.capabilities.push(gr(peer_n));
    s.handle(Event::Message(Message::Open(open)));
    let a = s.handle(Event::Message(Message::Keepalive));
    assert!(matches!(a.last(), Some(Action::Established(_))), "{a:?}");
    s
}

#[test]
fn with_the_n_bit_route_removing_ceases_go_out_as_hard_reset() {
    // RFC 8538 §5: Administrative Shutdown (manual stop) and Maximum Number of Prefixes are
    // wrapped; the Down reason carries what was sent.
    let mut s = established_with_n(true);
    let a = s.handle(Event::ManualStop {
        communication: Some("bye".into()),
    });
    let n = notification(&a).unwrap();
    assert_eq!((n.code, n.subcode), (6, 9));
    assert_eq!(&n.data[..], b"\x06\x02\x03bye");
    let mut s = established_with_n(true);
    let a = s.handle(Event::Cease {
        subcode: cease_subcode::MAXIMUM_PREFIXES_REACHED,
        communication: None,
    });
    let n = notification(&a).unwrap();
    assert_eq!((n.code, n.subcode, &n.data[..2]), (6, 9, &[6u8, 1][..]));
    assert!(
        a.iter().any(
            |x| matches!(x, Action::Down(DownReason::NotificationSent(d)) if d.is_hard_reset())
        )
    );
    // Connection Collision Resolution stays a plain (graceful) Cease.
    let mut s = established_with_n(true);
    let a = s.handle(Event::Cease {
        subcode: cease_subcode::CONNECTION_COLLISION_RESOLUTION,
        communication: None,
    });
    assert_eq!(notification(&a).map(|n| (n.code, n.subcode)), Some((6, 7)));
}

#[test]
fn without_the_peers_n_bit_a_cease_is_not_wrapped() {
    let mut s = established_with_n(false);
    let a = s.handle(Event::ManualStop {
        communication: None,
    });
    assert_eq!(notification(&a).map(|n| (n.code, n.subcode)), Some((6, 2)));
}

#[test]
fn hold_timer_expiry_sends_notification_and_goes_idle() {
    let mut s = established(cfg());
    let a = s.handle(Event::TimerExpired(Timer::Hold));
    let n = notification(&a).unwrap();
    assert_eq!((n.code, n.subcode), (4, 0));
    assert_eq!(s.state(), State::Idle);
    assert!(matches!(
        a.iter().find(|x| matches!(x, Action::Down(_))),
        Some(Action::Down(DownReason::NotificationSent(_)))
    ));
}

#[test]
fn updates_and_keepalives_restart_the_hold_timer() {
    let mut s = established(cfg());
    let a = s.handle(Event::Message(Message::Keepalive));
    assert_eq!(
        a,
        vec![Action::StartTimer(Timer::Hold, Duration::from_secs(30))]
    );
    let u = UpdateMsg::end_of_rib_marker(Afi::IPV4, Safi::UNICAST);
    let a = s.handle(Event::Message(Message::Update(Box::new(u.clone()))));
    assert_eq!(
        a,
        vec![
            Action::StartTimer(Timer::Hold, Duration::from_secs(30)),
            Action::Update(Box::new(u))
        ]
    );
}

#[test]
fn keepalive_timer_sends_keepalive() {
    let mut s = established(cfg());
    let a = s.handle(Event::TimerExpired(Timer::Keepalive));
    assert_eq!(
        a,
        vec![
            Action::Send(Message::Keepalive),
            Action::StartTimer(Timer::Keepalive, Duration::from_secs(10))
        ]
    );
}

#[test]
fn zero_hold_time_means_no_timers() {
    let mut s = Session::new(SessionConfig {
        hold_time: 0,
        ..cfg()
    });
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let a = s.handle(Event::Message(Message::Open(peer_open(PEER_AS, 90))));
    assert!(a.contains(&Action::StopTimer(Timer::Hold)));
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::Keepalive, _)))
    );
    assert_eq!(s.negotiated().unwrap().keepalive, 0);
}

#[test]
fn unexpected_messages_are_fsm_errors_rfc6608() {
    // UPDATE in OpenSent → subcode 1.
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    s.handle(Event::TcpConnected);
    let a = s.handle(Event::Message(Message::Update(Box::default())));
    assert_eq!(notification(&a).map(|n| (n.code, n.subcode)), Some((5, 1)));
    // OPEN in Established → subcode 3.
    let mut s = established(cfg());
    let a = s.handle(Event::Message(Message::Open(peer_open(PEER_AS, 90))));
    assert_eq!(notification(&a).map(|n| (n.code, n.subcode)), Some((5, 3)));
}

#[test]
fn decode_error_sends_its_notification() {
    let mut s = established(cfg());
    let a = s.handle(Event::DecodeError(
        crate::wire::DecodeError::BadMessageType(9),
    ));
    let n = notification(&a).unwrap();
    assert_eq!((n.code, n.subcode, &n.data[..]), (1, 3, &[9u8][..]));
    assert_eq!(s.state(), State::Idle);
}

/// RFC 4271 §6.1: a broken header is answered, then the connection closed, in OpenSent,
/// OpenConfirm and Established alike; the NOTIFICATION goes out before the close.
#[test]
fn a_header_error_in_every_connected_state_sends_its_notification_then_disconnects() {
    use crate::wire::DecodeError::{BadMessageLength, ConnectionNotSynchronized};
    let open_sent = || {
        let mut s = Session::new(cfg());
        s.handle(Event::ManualStart);
        s.handle(Event::TcpConnected);
        s
    };
    let open_confirm = || {
        let mut s = open_sent();
        s.handle(Event::Message(Message::Open(peer_open(PEER_AS, 30))));
        s
    };
    let stages: [(&str, &dyn Fn() -> Session); 3] = [
        ("OpenSent", &open_sent),
        ("OpenConfirm", &open_confirm),
        ("Established", &|| established(cfg())),
    ];
    for (stage, at) in stages {
        for (e, want) in [
            (ConnectionNotSynchronized, (1, 1, &[][..])),
            (BadMessageLength(18), (1, 2, &[0, 18][..])),
            (BadMessageLength(4097), (1, 2, &[0x10, 0x01][..])),
        ] {
            let mut s = at();
            let a = s.handle(Event::DecodeError(e.clone()));
            let n = notification(&a).unwrap_or_else(|| panic!("{stage} {e:?}: {a:?}"));
            assert_eq!((n.code, n.subcode, &n.data[..]), want, "{stage} {e:?}");
            let sent = a.iter().position(|x| matches!(x, Action::Send(_)));
            let closed = a.iter().position(|x| *x == Action::Disconnect);
            assert!(sent < closed && sent.is_some(), "{stage} {e:?}: {a:?}");
            assert_eq!(s.state(), State::Idle, "{stage} {e:?}");
        }
    }
}

#[test]
fn notification_received_closes_without_replying() {
    let mut s = established(cfg());
    let n = NotificationMsg::new(6, cease_subcode::ADMINISTRATIVE_RESET, Default::default());
    let a = s.handle(Event::Message(Message::Notification(n.clone())));
    assert!(notification(&a).is_none());
    assert!(a.contains(&Action::Disconnect));
    assert!(a.contains(&Action::Down(DownReason::NotificationReceived(n))));
}

#[test]
fn manual_stop_sends_cease_with_shutdown_communication_and_stays_down() {
    let mut s = established(cfg());
    let a = s.handle(Event::ManualStop {
        communication: Some("maintenance, back at 14:00".into()),
    });
    let n = notification(&a).unwrap();
    assert_eq!(
        (n.code, n.subcode),
        (6, cease_subcode::ADMINISTRATIVE_SHUTDOWN)
    );
    assert_eq!(
        n.shutdown_communication(),
        Some("maintenance, back at 14:00")
    );
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::StartTimer(Timer::IdleHold, _)))
    );
    // Nothing restarts it but a ManualStart.
    assert!(s.handle(Event::TimerExpired(Timer::IdleHold)).is_empty());
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn repeated_failures_back_off_up_to_the_maximum() {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    let mut delays = Vec::new();
    for _ in 0..8 {
        s.handle(Event::TcpConnected);
        let a = s.handle(Event::TimerExpired(Timer::Hold));
        delays.extend(a.iter().filter_map(|x| match x {
            Action::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
            _ => None,
        }));
        s.handle(Event::TimerExpired(Timer::IdleHold));
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn tcp_failure_while_connecting_goes_active_and_retries() {
    let mut s = Session::new(cfg());
    s.handle(Event::ManualStart);
    let a = s.handle(Event::TcpFailed);
    assert_eq!(s.state(), State::Active);
    assert!(a.contains(&Action::StartTimer(
        Timer::ConnectRetry,
        Duration::from_secs(5)
    )));
    let a = s.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(a.contains(&Action::Connect));
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn cease_event_tears_down_with_its_subcode() {
    let mut s = established(cfg());
    let a = s.handle(Event::Cease {
        subcode: cease_subcode::MAXIMUM_PREFIXES_REACHED,
        communication: None,
    });
    assert_eq!(notification(&a).map(|n| (n.code, n.subcode)), Some((6, 1)));
    assert_eq!(s.state(), State::Idle);
}
