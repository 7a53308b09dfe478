//! RFC 4724 §4.2 / §3 (and RFC 9494 §4.2) with bgpd as the helper, wire bytes in: a scripted peer on loopback
//! sends its Graceful Restart capability octet by octet, a route, then drops the TCP connection
//! without a NOTIFICATION. What bgpd keeps depends on the address families (and the restart
//! time) in that capability.

use std::time::{Duration, Instant};

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::speaker::{Speaker, SpeakerHandle};
use ironmesh_bgpd::wire::Community;

mod support;
use support::scripted::{Scripted, speaker_config_with};
use support::wait;

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 127, 0, 0, 3];
const NLRI_198_51_100: [u8; 4] = [24, 198, 51, 100];
/// Capability code 64 (RFC 4724 §3).
const GR: u8 = 64;
/// Capability code 71 (RFC 9494 §3).
const LLGR: u8 = 71;

/// (prefix, stale) of the Loc-RIB.
async fn loc_rib(h: &SpeakerHandle) -> Vec<(String, bool)> {
    h.query(|rib| {
        rib.loc_rib()
            .map(|r| (r.prefix.to_string(), r.stale))
            .collect()
    })
    .await
    .unwrap()
}

async fn state(h: &SpeakerHandle) -> State {
    h.peers()[0].status.lock().unwrap().state
}

/// The speaker (`peer_extra` in its peer's config), the scripted peer established with `caps`
/// (code, value) besides IPv4 unicast, and its route 198.51.100.0/24 in the Loc-RIB.
async fn session_with_route(
    peer_extra: &str,
    caps: &'static [(u8, &'static [u8])],
) -> (Speaker, Scripted) {
    let sp = Speaker::start(speaker_config_with(peer_extra))
        .await
        .unwrap();
    let h = sp.handle();
    let addr = sp.listen_addr().unwrap();
    let peer = tokio::task::spawn_blocking(move || {
        let mut p = Scripted::connect(addr);
        p.establish_with_raw_capabilities(caps);
        p.update(
            &[&ORIGIN_IGP[..], &AS_PATH, &NEXT_HOP].concat(),
            &NLRI_198_51_100,
        );
        p
    })
    .await
    .unwrap();
    wait("the route", async || {
        loc_rib(&h).await == [("198.51.100.0/24".to_string(), false)]
    })
    .await;
    (sp, peer)
}

/// Closes the connection (FIN, no NOTIFICATION) and waits until bgpd saw the session go.
async fn crash(h: &SpeakerHandle, peer: Scripted) {
    drop(peer);
    wait("the session down", async || {
        state(h).await != State::Established
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gr_capability_with_no_address_family_keeps_nothing() {
    // Restart time 120 s, no flags, no AFI/SAFI tuple: "aware" only.
    let (sp, peer) = session_with_route("", &[(GR, &[0x00, 0x78])]).await;
    let h = sp.handle();
    let t = Instant::now();
    crash(&h, peer).await;
    wait("the route gone", async || loc_rib(&h).await.is_empty()).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the route outlived the session by {:?}",
        t.elapsed()
    );
    sp.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gr_restart_time_zero_keeps_nothing() {
    // Restart time 0, IPv4 unicast with the F bit.
    let (sp, peer) = session_with_route("", &[(GR, &[0x00, 0x00, 0x00, 0x01, 0x01, 0x80])]).await;
    let h = sp.handle();
    let t = Instant::now();
    crash(&h, peer).await;
    wait("the route gone", async || loc_rib(&h).await.is_empty()).await;
    // Gone with the session, not after a restart timer (bgpd once floored 0 to 1 s).
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "the route outlived the session by {:?}",
        t.elapsed()
    );
    sp.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gr_capability_listing_ipv4_keeps_the_route_stale_until_the_peer_returns_without_f() {
    // Restart time 120 s, IPv4 unicast (AFI 1, SAFI 1), F bit clear.
    let (sp, peer) = session_with_route("", &[(GR, &[0x00, 0x78, 0x00, 0x01, 0x01, 0x00])]).await;
    let h = sp.handle();
    crash(&h, peer).await;
    wait("the route kept, stale", async || {
        loc_rib(&h).await == [("198.51.100.0/24".to_string(), true)]
    })
    .await;
    // Kept, marked stale, for as long as we look (well under the restart time).
    for _ in 0..10 {
        assert_eq!(
            loc_rib(&h).await,
            [("198.51.100.0/24".to_string(), true)],
            "the route must stay, stale, while the peer restarts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The peer comes back with the F bit clear: it did not preserve forwarding state, so the
    // stale route goes at re-establishment (§4.2) without waiting for End-of-RIB.
    let addr = sp.listen_addr().unwrap();
    let peer = tokio::task::spawn_blocking(move || {
        let mut p = Scripted::connect(addr);
        p.establish_with_raw_capabilities(&[(GR, &[0x80, 0x78, 0x00, 0x01, 0x01, 0x00])]);
        p
    })
    .await
    .unwrap();
    wait("the stale route gone", async || {
        loc_rib(&h).await.is_empty()
    })
    .await;
    assert_eq!(state(&h).await, State::Established);
    drop(peer);
    sp.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llgr_with_restart_time_zero_keeps_the_route_long_lived_stale_at_once() {
    // GR: restart time 0, no family. LLGR: IPv4 unicast, F clear, long-lived stale time 60 s.
    let (sp, peer) = session_with_route(
        "graceful_restart_time = 2\nlong_lived_stale_time = 60",
        &[
            (GR, &[0x00, 0x00]),
            (LLGR, &[0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x3c]),
        ],
    )
    .await;
    let h = sp.handle();
    crash(&h, peer).await;
    let tagged = async || {
        h.query(|rib| {
            rib.loc_rib()
                .map(|r| {
                    (
                        r.prefix.to_string(),
                        r.stale,
                        r.attrs.attrs.communities.contains(&Community::LLGR_STALE),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    wait("the route tagged LLGR_STALE", async || {
        tagged().await == [("198.51.100.0/24".to_string(), true, true)]
    })
    .await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            tagged().await,
            [("198.51.100.0/24".to_string(), true, true)]
        );
    }
    sp.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gr_restart_time_runs_out_and_the_stale_route_goes() {
    // Restart time 1 s, IPv4 unicast listed: kept while the peer restarts, gone after 1 s.
    let (sp, peer) = session_with_route("", &[(GR, &[0x00, 0x01, 0x00, 0x01, 0x01, 0x00])]).await;
    let h = sp.handle();
    let t = Instant::now();
    crash(&h, peer).await;
    wait("the route kept, stale", async || {
        loc_rib(&h).await == [("198.51.100.0/24".to_string(), true)]
    })
    .await;
    wait("the stale route gone", async || {
        loc_rib(&h).await.is_empty()
    })
    .await;
    let gone = t.elapsed();
    assert!(
        gone >= Duration::from_millis(900),
        "removed after {gone:?}, before the 1 s restart time"
    );
    assert!(gone < Duration::from_secs(5), "removed only after {gone:?}");
    sp.stop(false).await;
}
