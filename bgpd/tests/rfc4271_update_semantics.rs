//! RFC 4271 §6.3 semantic checks against a running speaker, wire bytes in: a scripted peer on
//! loopback sends routes whose NEXT_HOP is semantically incorrect, or whose AS_PATH does not
//! start with its AS (enforce-first-as). They are ignored (an earlier route for the prefix
//! goes), counted, and the session stays up without a NOTIFICATION.

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::speaker::{Speaker, SpeakerHandle};

mod support;
use support::scripted::{Scripted, speaker_config, speaker_config_with};
use support::wait;

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
const NLRI_198_51_100: [u8; 4] = [24, 198, 51, 100];

fn next_hop(a: [u8; 4]) -> [u8; 7] {
    [0x40, 3, 4, a[0], a[1], a[2], a[3]]
}

async fn loc_rib(h: &SpeakerHandle) -> Vec<String> {
    h.query(|rib| rib.loc_rib().map(|r| r.prefix.to_string()).collect())
        .await
        .unwrap()
}

async fn bad_next_hops(h: &SpeakerHandle) -> u64 {
    h.query(|rib| {
        rib.counters(rib.peers().next().unwrap().id)
            .unwrap()
            .bad_next_hop
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_with_a_semantically_incorrect_next_hop_are_ignored_without_a_reset() {
    let sp = Speaker::start(speaker_config()).await.unwrap();
    let h = sp.handle();
    let addr = sp.listen_addr().unwrap();
    let mut peer = tokio::task::spawn_blocking(move || {
        let mut p = Scripted::connect(addr);
        p.establish();
        p
    })
    .await
    .unwrap();
    let route = |nh: [u8; 4]| [&ORIGIN_IGP[..], &AS_PATH, &next_hop(nh)].concat();
    peer.update(&route([127, 0, 0, 3]), &NLRI_198_51_100);
    wait("the route", async || {
        loc_rib(&h).await == ["198.51.100.0/24"]
    })
    .await;

    // Multicast, bgpd's own address on this session (127.0.0.1), unspecified, broadcast.
    for (n, nh) in [
        [224, 0, 0, 9],
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        [255, 255, 255, 255],
    ]
    .into_iter()
    .enumerate()
    {
        peer.update(&route(nh), &NLRI_198_51_100);
        wait("the route ignored", async || {
            bad_next_hops(&h).await == n as u64 + 1
        })
        .await;
        assert!(loc_rib(&h).await.is_empty(), "{nh:?}");
        // The same prefix with a good next hop comes back: the session is healthy.
        peer.update(&route([127, 0, 0, 3]), &NLRI_198_51_100);
        wait("the route again", async || {
            loc_rib(&h).await == ["198.51.100.0/24"]
        })
        .await;
    }
    let status = h.peers()[0].status.lock().unwrap().clone();
    assert_eq!(status.state, State::Established);
    assert_eq!(status.counters.notifications_out, 0);
    drop(peer);
    sp.stop(false).await;
}

/// AS_PATH of one AS_SEQUENCE with AS 65002 (the scripted peer is AS 65000).
const AS_PATH_65002: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xea];

async fn first_as_mismatches(h: &SpeakerHandle) -> u64 {
    h.query(|rib| {
        rib.counters(rib.peers().next().unwrap().id)
            .unwrap()
            .first_as_mismatch
    })
    .await
    .unwrap()
}

/// The scripted peer established with a speaker configured with `peer_extra`.
async fn established(peer_extra: &str) -> (Speaker, Scripted) {
    let sp = Speaker::start(speaker_config_with(peer_extra))
        .await
        .unwrap();
    let addr = sp.listen_addr().unwrap();
    let peer = tokio::task::spawn_blocking(move || {
        let mut p = Scripted::connect(addr);
        p.establish();
        p
    })
    .await
    .unwrap();
    (sp, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_first_as_ignores_routes_without_the_peers_as_first() {
    let (sp, mut peer) = established("").await;
    let h = sp.handle();
    let nh = next_hop([127, 0, 0, 3]);
    peer.update(&[&ORIGIN_IGP[..], &AS_PATH, &nh].concat(), &NLRI_198_51_100);
    wait("the route", async || {
        loc_rib(&h).await == ["198.51.100.0/24"]
    })
    .await;
    // The same prefix with AS 65002 first: ignored, the earlier route withdrawn.
    peer.update(
        &[&ORIGIN_IGP[..], &AS_PATH_65002, &nh].concat(),
        &NLRI_198_51_100,
    );
    wait("the route ignored", async || {
        first_as_mismatches(&h).await == 1
    })
    .await;
    assert!(loc_rib(&h).await.is_empty());
    let status = h.peers()[0].status.lock().unwrap().clone();
    assert_eq!(status.state, State::Established);
    assert_eq!(status.counters.notifications_out, 0);
    drop(peer);
    sp.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_first_as_off_accepts_them() {
    let (sp, mut peer) = established("enforce_first_as = false").await;
    let h = sp.handle();
    let nh = next_hop([127, 0, 0, 3]);
    peer.update(
        &[&ORIGIN_IGP[..], &AS_PATH_65002, &nh].concat(),
        &NLRI_198_51_100,
    );
    wait("the route", async || {
        loc_rib(&h).await == ["198.51.100.0/24"]
    })
    .await;
    assert_eq!(first_as_mismatches(&h).await, 0);
    drop(peer);
    sp.stop(false).await;
}
