//! RFC 4271 §6.1 against a running speaker: a scripted peer on loopback sends a broken message
//! header before its OPEN (OpenSent), after the OPENs (OpenConfirm) and once Established. The
//! speaker answers at once with the Message Header Error NOTIFICATION and closes the connection,
//! whatever the header claims is still to come (the hold timer, 30 s here and 240 s before the
//! OPENs, would otherwise be what ends it).

use std::io::Write;
use std::time::{Duration, Instant};

use ironmesh_bgpd::fsm::State;
use ironmesh_bgpd::speaker::Speaker;
use ironmesh_bgpd::wire::{Message, NotificationMsg};

mod support;
use support::scripted::{Scripted, speaker_config};

/// How long the answer may take: far below any timer of the session.
const BOUND: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Stage {
    /// We have the speaker's OPEN, it has not got ours: OpenSent.
    BeforeOpen,
    /// OPENs exchanged, its KEEPALIVE received, ours not sent: OpenConfirm.
    OpenConfirm,
    Established,
}

const STAGES: [Stage; 3] = [Stage::BeforeOpen, Stage::OpenConfirm, Stage::Established];

/// Brings a fresh speaker and the scripted peer to `stage`, sends `raw`, and returns the
/// NOTIFICATION the speaker answers with; asserts it came and the connection closed within
/// [`BOUND`] each.
async fn answer_to(stage: Stage, raw: Vec<u8>) -> NotificationMsg {
    let sp = Speaker::start(speaker_config()).await.unwrap();
    let h = sp.handle();
    let addr = sp.listen_addr().unwrap();
    let n = tokio::task::spawn_blocking(move || {
        let mut p = Scripted::connect(addr);
        match stage {
            Stage::BeforeOpen => assert!(matches!(p.recv(), Some(Message::Open(_)))),
            Stage::OpenConfirm => {
                p.send_open();
                assert!(matches!(p.recv(), Some(Message::Open(_))));
                assert!(matches!(p.recv(), Some(Message::Keepalive)));
            }
            Stage::Established => p.establish(),
        }
        let sent = Instant::now();
        p.sock.write_all(&raw).unwrap();
        let n = loop {
            match p.recv_within(BOUND) {
                Some(Message::Notification(n)) => break n,
                Some(_) => continue,
                None => panic!("{stage:?}: connection closed without a NOTIFICATION"),
            }
        };
        let answered = sent.elapsed();
        assert!(
            answered < BOUND,
            "{stage:?}: NOTIFICATION after {answered:?}"
        );
        assert!(
            p.recv_within(BOUND).is_none(),
            "{stage:?}: a message after the NOTIFICATION"
        );
        let closed = sent.elapsed();
        assert!(closed < 2 * BOUND, "{stage:?}: closed after {closed:?}");
        n
    })
    .await
    .unwrap();
    // The speaker records the reset just after closing: wait for it.
    support::wait("the reset recorded as the peer's last error", async || {
        let st = h.peers()[0].status.lock().unwrap().clone();
        st.state != State::Established
            && st
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("NOTIFICATION sent: "))
    })
    .await;
    sp.stop(false).await;
    n
}

fn header(marker: [u8; 16], length: u16, msg_type: u8) -> Vec<u8> {
    let mut v = marker.to_vec();
    v.extend_from_slice(&length.to_be_bytes());
    v.push(msg_type);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_marker_gets_connection_not_synchronized_at_once_in_every_state() {
    for stage in STAGES {
        // The length field of this garbage claims 43690 octets: only the marker check
        // coming first answers before they arrive.
        let n = answer_to(stage, header([0xaa; 16], 0xaaaa, 0xaa)).await;
        assert_eq!((n.code, n.subcode), (1, 1), "{stage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_below_19_gets_bad_message_length_with_the_length_at_once_in_every_state() {
    for stage in STAGES {
        let n = answer_to(stage, header([0xff; 16], 18, 4)).await;
        assert_eq!((n.code, n.subcode), (1, 2), "{stage:?}");
        assert_eq!(&n.data[..], &[0, 18], "{stage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_above_4096_gets_bad_message_length_with_the_length_at_once_in_every_state() {
    // No extended messages (RFC 8654) are offered, so 4097 can never be right.
    for stage in STAGES {
        let n = answer_to(stage, header([0xff; 16], 4097, 2)).await;
        assert_eq!((n.code, n.subcode), (1, 2), "{stage:?}");
        assert_eq!(&n.data[..], &4097u16.to_be_bytes(), "{stage:?}");
    }
}
