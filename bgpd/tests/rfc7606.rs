//! RFC 7606 against a running speaker: a scripted peer on loopback sends malformed UPDATEs.
//! Treat-as-withdraw and attribute-discard keep the session; a broken header resets it with
//! the right NOTIFICATION (RFC 4271 §6.1).

use std::io::Write;
use std::time::{Duration, Instant};

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::speaker::{Speaker, SpeakerHandle};
use ironmesh_bgpd::wire::Message;

mod support;
use support::scripted::{Scripted, speaker_config};

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const ORIGIN_BAD: [u8; 4] = [0x40, 1, 1, 5];
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 127, 0, 0, 3];
/// AGGREGATOR with 5 octets instead of 8 (RFC 7606 §7.7: attribute discard).
const AGGREGATOR_BAD: [u8; 8] = [0xc0, 7, 5, 0, 0, 0xfd, 0xe8, 1];
const NLRI_198_51_100: [u8; 4] = [24, 198, 51, 100];

async fn loc_rib(h: &SpeakerHandle) -> Vec<String> {
    h.query(|rib| rib.loc_rib().map(|r| r.prefix.to_string()).collect())
        .await
        .unwrap()
}

async fn wait(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_follow_rfc7606() {
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
    wait("Established", async || {
        h.peers()[0].status.lock().unwrap().state == State::Established
    })
    .await;

    // A valid route.
    let attrs = [&ORIGIN_IGP[..], &AS_PATH, &NEXT_HOP].concat();
    peer.update(&attrs, &NLRI_198_51_100);
    wait("the route", async || {
        loc_rib(&h).await == ["198.51.100.0/24"]
    })
    .await;

    // §7.1: a malformed ORIGIN withdraws the route, the session stays.
    let attrs = [&ORIGIN_BAD[..], &AS_PATH, &NEXT_HOP].concat();
    peer.update(&attrs, &NLRI_198_51_100);
    wait("treat-as-withdraw", async || loc_rib(&h).await.is_empty()).await;
    assert_eq!(
        h.peers()[0].status.lock().unwrap().state,
        State::Established
    );
    let taw = h
        .query(|rib| {
            rib.counters(rib.peers().next().unwrap().id)
                .unwrap()
                .treat_as_withdraw
        })
        .await
        .unwrap();
    assert_eq!(taw, 1);

    // §7.7: a malformed AGGREGATOR is discarded; the route is accepted without it.
    let attrs = [&ORIGIN_IGP[..], &AS_PATH, &NEXT_HOP, &AGGREGATOR_BAD].concat();
    peer.update(&attrs, &NLRI_198_51_100);
    wait("attribute discard", async || {
        loc_rib(&h).await == ["198.51.100.0/24"]
    })
    .await;
    let agg = h
        .query(|rib| {
            rib.loc_rib()
                .next()
                .map(|r| r.attrs.attrs.aggregator.is_some())
        })
        .await
        .unwrap();
    assert_eq!(agg, Some(false));

    // §6.1: a broken marker is a session reset with Connection Not Synchronized (1/1).
    let notification = tokio::task::spawn_blocking(move || {
        let mut bad = vec![0u8; 16];
        bad.extend_from_slice(&[0, 19, 4]);
        peer.sock.write_all(&bad).unwrap();
        loop {
            match peer.recv() {
                Some(Message::Notification(n)) => return Some((n.code, n.subcode)),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(notification, Some((1, 1)));
    wait("session down, routes flushed", async || {
        h.peers()[0].status.lock().unwrap().state != State::Established
            && loc_rib(&h).await.is_empty()
    })
    .await;
    sp.stop(false).await;
}
