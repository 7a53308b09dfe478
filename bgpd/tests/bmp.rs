//! BMP export (RFC 7854) from a running speaker to a collector on loopback: Initiation, Peer Up
//! with both OPENs, live pre-policy Route Monitoring, the post-policy initial dump of a new BMP
//! session (after the collector reconnects), Peer Down with the NOTIFICATION, Termination.

use std::time::Duration;

use bytes::BytesMut;
use ironmesh_bgpd::bmp::BmpMessage;
use ironmesh_bgpd::bmp::msg::{down_reason, info_type, peer_flags, stat_type};
use ironmesh_bgpd::rib::Advert;

mod support;
use ironmesh_bgpd::wire::{Context, Message};
use support::{start_a, start_b};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const CTX: Context = Context {
    four_octet_as: true,
    extended_message: false,
};

struct Collector {
    s: TcpStream,
    buf: BytesMut,
}

impl Collector {
    async fn accept(l: &TcpListener) -> Collector {
        let (s, _) = tokio::time::timeout(Duration::from_secs(15), l.accept())
            .await
            .expect("bgpd connects to the collector within 15 s")
            .unwrap();
        Collector {
            s,
            buf: BytesMut::new(),
        }
    }

    async fn next(&mut self) -> BmpMessage {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(m) = BmpMessage::decode_from(&mut self.buf).expect("valid BMP") {
                return m;
            }
            let n = tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf))
                .await
                .expect("a BMP message within 15 s")
                .unwrap();
            assert!(n > 0, "bgpd closed the BMP session early");
        }
    }

    /// Skips messages until `pick` returns something.
    async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&BmpMessage) -> Option<T>) -> T {
        for _ in 0..1000 {
            let m = self.next().await;
            if let Some(t) = pick(&m) {
                return t;
            }
        }
        panic!("no {what} in 1000 messages");
    }
}

/// The IPv4 prefixes an UPDATE PDU announces, and whether it is an End-of-RIB.
fn announced(pdu: &bytes::Bytes) -> (Vec<String>, bool) {
    match Message::decode(pdu.clone(), &CTX).expect("a valid UPDATE inside") {
        Message::Update(u) => (
            u.nlri.iter().map(|p| p.to_string()).collect(),
            u.end_of_rib().is_some(),
        ),
        other => panic!("not an UPDATE: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bmp_export_follows_sessions_and_updates() {
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cport = collector.local_addr().unwrap().port();
    let a = start_a("").await;
    let port = a.listen_addr().unwrap().port();
    let b = start_b(
        port,
        &format!("[bgp.bmp]\ncollectors = [\"127.0.0.1:{cport}\"]"),
        "",
        "",
    )
    .await;

    // First BMP session: Initiation naming the node, Peer Up with both OPENs.
    let mut c = Collector::accept(&collector).await;
    match c.next().await {
        BmpMessage::Initiation(tlvs) => {
            assert!(
                tlvs.contains(&(info_type::SYS_NAME, "b".into())),
                "{tlvs:?}"
            );
            assert!(
                tlvs.iter()
                    .any(|(t, v)| *t == info_type::SYS_DESCR && v.starts_with(b"ironmesh bgpd"))
            );
        }
        m => panic!("expected Initiation first, got {m:?}"),
    }
    let (peer, sent, received) = c
        .until("Peer Up", |m| match m {
            BmpMessage::PeerUp {
                peer,
                sent_open,
                received_open,
                ..
            } => Some((*peer, sent_open.clone(), received_open.clone())),
            _ => None,
        })
        .await;
    assert_eq!(peer.address.to_string(), "127.0.0.1");
    assert_eq!(
        (peer.asn, peer.bgp_id.to_string()),
        (65001, "192.0.2.1".into())
    );
    assert_eq!(peer.flags & peer_flags::A, 0, "4-octet AS negotiated");
    let open_id = |b: &bytes::Bytes| match Message::decode(b.clone(), &CTX).unwrap() {
        Message::Open(o) => o.bgp_id.to_string(),
        m => panic!("not an OPEN: {m:?}"),
    };
    assert_eq!(
        (open_id(&sent), open_id(&received)),
        ("192.0.2.2".into(), "192.0.2.1".into())
    );

    // Live route monitoring: A's routes as received, pre-policy (L clear).
    let want = |p: &'static str| {
        move |m: &BmpMessage| match m {
            BmpMessage::RouteMonitoring { peer, update }
                if announced(update).0.contains(&p.to_string()) =>
            {
                Some(peer.flags)
            }
            _ => None,
        }
    };
    let flags = c.until("10.244.1.0/24", want("10.244.1.0/24")).await;
    assert_eq!(flags & peer_flags::L, 0, "live UPDATEs are pre-policy");
    a.handle()
        .add_adverts(vec![Advert {
            prefix: "10.244.2.0/24".parse().unwrap(),
            ..Advert::default()
        }])
        .await
        .unwrap();
    let flags = c.until("10.244.2.0/24", want("10.244.2.0/24")).await;
    assert_eq!(
        flags & peer_flags::L,
        0,
        "the UPDATE as received comes first"
    );
    // Then its post-policy state (L set): what the import policy let into the Adj-RIB-In.
    let flags = c
        .until("post-policy 10.244.2.0/24", want("10.244.2.0/24"))
        .await;
    assert_ne!(
        flags & peer_flags::L,
        0,
        "post-policy route monitoring follows"
    );

    // The collector goes away and comes back: a new BMP session carries the whole state, as
    // the post-policy Adj-RIB-In (L set), an End-of-RIB and the route count.
    drop(c);
    let mut c = Collector::accept(&collector).await;
    assert!(matches!(c.next().await, BmpMessage::Initiation(_)));
    assert!(matches!(c.next().await, BmpMessage::PeerUp { .. }));
    let mut dumped = Vec::new();
    let count = c
        .until("the dump's statistics", |m| match m {
            BmpMessage::RouteMonitoring { peer, update } => {
                assert_ne!(peer.flags & peer_flags::L, 0, "the dump is post-policy");
                dumped.extend(announced(update).0);
                None
            }
            BmpMessage::Statistics { stats, .. } => Some(stats.clone()),
            _ => None,
        })
        .await;
    dumped.sort();
    assert_eq!(dumped, vec!["10.244.1.0/24", "10.244.2.0/24"]);
    assert_eq!(count, vec![(stat_type::ADJ_RIB_IN_ROUTES, 2)]);

    // A stops with a Cease: Peer Down carries A's NOTIFICATION.
    a.stop(true).await;
    let (reason, data) = c
        .until("Peer Down", |m| match m {
            BmpMessage::PeerDown { reason, data, .. } => Some((*reason, data.clone())),
            _ => None,
        })
        .await;
    assert_eq!(reason, down_reason::REMOTE_NOTIFICATION);
    assert!(
        matches!(Message::decode(data, &CTX).unwrap(), Message::Notification(n) if n.code == 6)
    );

    // B stops: Termination, then the connection closes.
    b.stop(true).await;
    c.until("Termination", |m| match m {
        BmpMessage::Termination(_) => Some(()),
        _ => None,
    })
    .await;
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.s.read(&mut rest))
        .await
        .expect("closed after Termination")
        .unwrap();
    assert_eq!(n, 0);
}
