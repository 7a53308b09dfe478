//! Scrapes bgpd's Prometheus endpoint over real HTTP while two in-process speakers peer on
//! loopback: the peer's state and prefix counts follow the session and the adverts.

use std::time::{Duration, Instant};

use ironmesh_bgpd::rib::Advert;
use ironmesh_bgpd::speaker::metrics;

mod support;
use support::{start_a, start_b};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let resp = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    body.to_string()
}

/// The value of the sample line `name` (with its labels), if present.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_metric(addr: std::net::SocketAddr, name: &str, want: f64) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(addr).await;
        if value(&text, name) == Some(want) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {name} = {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_follows_session_and_adverts() {
    let a = start_a("").await;
    let port = a.listen_addr().unwrap().port();
    let listener = metrics::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let maddr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metrics::serve(listener, a.handle(), async {
        let _ = stop_rx.await;
    }));

    // Before B exists: A's passive session is not up, nothing received.
    let text = wait_metric(maddr, "bgp_loc_rib_prefixes{family=\"ipv4-unicast\"}", 1.0).await;
    assert_ne!(
        value(&text, "bgp_peer_state{peer=\"b\"}"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "bgp_prefixes_received{peer=\"b\"}"),
        Some(0.0),
        "{text}"
    );

    let b = start_b(
        port,
        "",
        "",
        "[[bgp.adverts]]\nprefix = \"10.244.2.0/24\"\n[[bgp.adverts]]\nprefix = \"10.244.3.0/24\"\n",
    )
    .await;

    let text = wait_metric(maddr, "bgp_peer_state{peer=\"b\"}", 6.0).await;
    assert!(
        text.contains("bgp_sessions{state=\"established\"} 1"),
        "{text}"
    );
    let text = wait_metric(maddr, "bgp_prefixes_received{peer=\"b\"}", 2.0).await;
    assert_eq!(
        value(&text, "bgp_prefixes_accepted{peer=\"b\"}"),
        Some(2.0),
        "{text}"
    );
    wait_metric(maddr, "bgp_prefixes_advertised{peer=\"b\"}", 1.0).await;
    let text = wait_metric(maddr, "bgp_loc_rib_prefixes{family=\"ipv4-unicast\"}", 3.0).await;
    assert!(
        value(&text, "bgp_updates_received_total{peer=\"b\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "bgp_updates_sent_total{peer=\"b\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert!(value(&text, "bgp_attribute_sets").unwrap() >= 1.0, "{text}");

    // An advert added through the handle counts as advertised to B.
    let vip = Advert {
        prefix: "203.0.113.10/32".parse().unwrap(),
        ..Advert::default()
    };
    a.handle().add_adverts(vec![vip]).await.unwrap();
    wait_metric(maddr, "bgp_prefixes_advertised{peer=\"b\"}", 2.0).await;

    // B goes away with a Cease: A's session drops, its counts empty, the NOTIFICATION counts.
    b.stop(true).await;
    let text = wait_metric(maddr, "bgp_prefixes_received{peer=\"b\"}", 0.0).await;
    assert_ne!(
        value(&text, "bgp_peer_state{peer=\"b\"}"),
        Some(6.0),
        "{text}"
    );
    wait_metric(maddr, "bgp_notifications_received_total{peer=\"b\"}", 1.0).await;

    // Anything but GET /metrics is refused; an oversized request head too.
    assert!(
        http(maddr, "GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        http(maddr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405")
    );
    // One byte over the 8 KiB limit and unterminated: the server reads all of it, then refuses.
    let mut big = String::from("GET /metrics HTTP/1.1\r\nX: ");
    big.push_str(&"a".repeat(8 * 1024 + 1 - big.len()));
    assert!(http(maddr, &big).await.starts_with("HTTP/1.1 431"));

    let _ = stop_tx.send(());
    server.await.unwrap();
    a.stop(false).await;
}
