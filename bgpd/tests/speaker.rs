//! Two bgpd speakers in one process on loopback: sessions, adverts added and removed at run
//! time, MD5 and the API handle. Real TCP, real codec, real FSM and RIB; ports chosen by the
//! kernel (port 0).

use std::time::Duration;

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::rib::Advert;
use ironmesh_bgpd::speaker::{Speaker, SpeakerHandle};

mod support;
use support::{start_a, start_b, wait};

async fn state(h: &SpeakerHandle) -> State {
    h.peers()[0].status.lock().unwrap().state
}

async fn loc_rib(h: &SpeakerHandle) -> Vec<(String, Vec<u32>)> {
    h.query(|rib| {
        rib.loc_rib()
            .filter(|r| r.peer.is_some())
            .map(|r| {
                let path = r
                    .attrs
                    .attrs
                    .as_path
                    .iter()
                    .flat_map(|p| p.segments.iter())
                    .flat_map(|s| s.asns.clone())
                    .collect();
                (r.prefix.to_string(), path)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A (AS 65001, listening, passive) and B (AS 65002, connecting from 127.0.0.2).
async fn pair(md5_a: &str, md5_b: &str) -> (Speaker, Speaker) {
    let a = start_a(md5_a).await;
    let port = a.listen_addr().unwrap().port();
    let b = start_b(port, "", md5_b, "").await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_establish_and_exchange_adverts() {
    let (a, b) = pair("", "").await;
    let (ha, hb) = (a.handle(), b.handle());
    wait("Established", async || {
        state(&ha).await == State::Established && state(&hb).await == State::Established
    })
    .await;
    wait("config advert at B", async || {
        loc_rib(&hb)
            .await
            .contains(&("10.244.1.0/24".into(), vec![65001]))
    })
    .await;

    // A VIP added at run time reaches B without resetting the session.
    let est_since = ha.peers()[0].status.lock().unwrap().since;
    let vip = Advert {
        prefix: "203.0.113.10/32".parse().unwrap(),
        ..Advert::default()
    };
    assert_eq!(
        ha.add_adverts(vec![vip])
            .await
            .map(|n| (n.added, n.replaced)),
        Some((1, 0))
    );
    wait("VIP at B", async || {
        loc_rib(&hb)
            .await
            .iter()
            .any(|(p, _)| p == "203.0.113.10/32")
    })
    .await;
    ha.remove_adverts(vec!["203.0.113.10/32".parse().unwrap()])
        .await
        .unwrap();
    wait("VIP withdrawn at B", async || {
        !loc_rib(&hb)
            .await
            .iter()
            .any(|(p, _)| p == "203.0.113.10/32")
    })
    .await;
    assert_eq!(
        ha.peers()[0].status.lock().unwrap().since,
        est_since,
        "session was reset"
    );

    // Stop with a shutdown communication: B records it.
    ha.stop_peer("b", Some("maintenance".into())).await;
    wait("B sees the Cease", async || {
        hb.peers()[0].status.lock().unwrap().last_error.as_deref()
            // Both speakers send the N bit (RFC 8538): the Cease comes as a Hard Reset.
            == Some(
                "NOTIFICATION received: Cease/Hard Reset (Cease/Administrative Shutdown: \"maintenance\")"
            )
    })
    .await;
    a.stop(true).await;
    b.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_mismatch_never_establishes() {
    let (a, b) = pair("md5_password = \"right\"", "md5_password = \"wrong\"").await;
    let hb = b.handle();
    wait("B to give up connecting", async || {
        hb.peers()[0].status.lock().unwrap().last_error.is_some()
    })
    .await;
    assert_ne!(state(&a.handle()).await, State::Established);
    let err = hb.peers()[0]
        .status
        .lock()
        .unwrap()
        .last_error
        .clone()
        .unwrap();
    assert!(
        err.contains("TCP MD5 is configured") && err.contains("timed out"),
        "{err}"
    );
    a.stop(false).await;
    b.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_match_establishes() {
    let (a, b) = pair("md5_password = \"s3cret\"", "md5_password = \"s3cret\"").await;
    let ha = a.handle();
    wait("Established with MD5", async || {
        state(&ha).await == State::Established
    })
    .await;
    a.stop(false).await;
    b.stop(false).await;
}

/// Reload: an advert added keeps the session; a changed peer restarts only its session with
/// Cease/Other Configuration Change; a global change is refused; a removed peer gets
/// Cease/Peer De-configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_only_what_changed() {
    let (a, b) = pair("", "").await;
    let (ha, hb) = (a.handle(), b.handle());
    wait("Established", async || {
        state(&hb).await == State::Established
    })
    .await;
    let since = hb.peers()[0].status.lock().unwrap().since;

    // The running config of A, plus one advert.
    let current = ha.reload_config_snapshot().await;
    let mut more = current.clone();
    more.adverts.push(Advert {
        prefix: "203.0.113.20/32".parse().unwrap(),
        ..Advert::default()
    });
    assert_eq!(ha.reload(more.clone()).await.unwrap(), Vec::<String>::new());
    wait("reloaded advert at B", async || {
        loc_rib(&hb)
            .await
            .iter()
            .any(|(p, _)| p == "203.0.113.20/32")
    })
    .await;
    assert_eq!(
        hb.peers()[0].status.lock().unwrap().since,
        since,
        "session was reset"
    );

    // A global change is refused and changes nothing.
    let mut bad = more.clone();
    bad.local_asn = 65009;
    let e = ha.reload(bad).await.unwrap_err().to_string();
    assert!(e.contains("restart bgpd"), "{e}");
    assert_eq!(state(&hb).await, State::Established);

    // The peer's hold time changes: its session restarts with Cease 6.
    let mut changed = more.clone();
    changed.peers[0].session.hold_time = 6;
    assert_eq!(
        ha.reload(changed.clone()).await.unwrap(),
        vec!["b".to_string()]
    );
    wait("B sees Other Configuration Change", async || {
        hb.peers()[0]
            .status
            .lock()
            .unwrap()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Other Configuration Change"))
    })
    .await;
    wait("re-established with the new hold time", async || {
        ha.peers()[0]
            .status
            .lock()
            .unwrap()
            .negotiated
            .as_ref()
            .is_some_and(|n| n.hold_time == 6)
            && state(&ha).await == State::Established
    })
    .await;

    // The peer is removed: Cease 3 at B, and A has no peers left.
    let mut gone = changed.clone();
    gone.peers.clear();
    assert_eq!(ha.reload(gone).await.unwrap(), vec!["b".to_string()]);
    assert!(ha.peers().is_empty());
    wait("B sees Peer De-configured", async || {
        hb.peers()[0]
            .status
            .lock()
            .unwrap()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Peer De-configured"))
    })
    .await;
    a.stop(false).await;
    b.stop(false).await;
}

/// A asks B for its routes again (RFC 2918); with enhanced route refresh negotiated B
/// brackets them with BoRR/EoRR (RFC 7313) and A keeps every route throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_refresh_with_borr_eorr_keeps_routes() {
    let (a, b) = pair("", "").await;
    let (ha, hb) = (a.handle(), b.handle());
    wait("Established", async || {
        state(&hb).await == State::Established
    })
    .await;
    wait("A's advert at B", async || {
        loc_rib(&hb)
            .await
            .contains(&("10.244.1.0/24".into(), vec![65001]))
    })
    .await;
    let caps = hb.peers()[0]
        .status
        .lock()
        .unwrap()
        .negotiated
        .clone()
        .unwrap();
    assert!(caps.enhanced_route_refresh);
    let sent_before = ha.peers()[0].status.lock().unwrap().counters.updates_out;
    assert!(hb.request_refresh("a").await);
    wait("A re-sent its routes", async || {
        ha.peers()[0].status.lock().unwrap().counters.updates_out > sent_before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        loc_rib(&hb)
            .await
            .contains(&("10.244.1.0/24".into(), vec![65001]))
    );
    a.stop(false).await;
    b.stop(false).await;
}

/// A reload that changes only policies keeps the session: a new export policy at A reaches B as
/// changed attributes; a new import policy at B makes B ask A for a ROUTE-REFRESH and judge the
/// re-sent routes by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_apply_without_a_session_reset() {
    use ironmesh_bgpd::policy::{Policy, Rule, Set, Verdict};
    let (a, b) = pair("", "").await;
    let (ha, hb) = (a.handle(), b.handle());
    wait("the advert at B", async || {
        loc_rib(&hb)
            .await
            .contains(&("10.244.1.0/24".into(), vec![65001]))
    })
    .await;
    let since = hb.peers()[0].status.lock().unwrap().since;

    // Export at A: originated-only, then prepend twice.
    let prepend = Policy {
        rules: vec![Rule {
            matches: vec![],
            actions: vec![Set::Prepend(2)],
            verdict: Verdict::Accept,
        }],
        default: Verdict::Reject,
        then: None,
    };
    let mut new_a = ha.reload_config_snapshot().await;
    new_a.peers[0].export = Policy::chain(vec![Policy::originated_only(), prepend]).unwrap();
    assert_eq!(ha.reload(new_a).await.unwrap(), Vec::<String>::new());
    wait("the prepended path at B", async || {
        loc_rib(&hb)
            .await
            .contains(&("10.244.1.0/24".into(), vec![65001, 65001, 65001]))
    })
    .await;

    // Import at B: reject everything; the routes B holds are re-judged after a refresh.
    let accepted = async |h: &SpeakerHandle| {
        h.query(|rib| {
            rib.loc_rib()
                .filter(|r| r.peer.is_some() && r.accepted)
                .count()
        })
        .await
        .unwrap()
    };
    assert_eq!(accepted(&hb).await, 1);
    let mut new_b = hb.reload_config_snapshot().await;
    new_b.peers[0].import = Policy::reject_all();
    assert_eq!(hb.reload(new_b).await.unwrap(), Vec::<String>::new());
    wait("the route rejected by B's new import policy", async || {
        accepted(&hb).await == 0
    })
    .await;
    for (h, who) in [(&ha, "A"), (&hb, "B")] {
        assert_eq!(state(h).await, State::Established, "{who}");
    }
    assert_eq!(
        hb.peers()[0].status.lock().unwrap().since,
        since,
        "a policy change reset the session"
    );
}
