//! The metrics endpoint's request parser, datapath ring-buffer events and the TOML config.

use api::metrics::{Head, Route, parse_head};
use datapath::events::{
    DROP_POLICY_DENIED, EVENT_DIR_NONE, EVENT_DROP, EVENT_POLICY_VERDICT, EVENT_TRACE, Event,
    RawEvent, TRACE_FIB_REDIRECT, TRACE_TO_OVERLAY, VERDICT_ALLOWED,
};
use datapath::ipcache::{FAMILY_IPV4, FAMILY_IPV6};

use crate::Outcome;

/// `metrics_request`: the bytes a scraper sent so far into `api::metrics::parse_head`: a head
/// with its blank line is answered, one without is read on until the limit.
pub fn metrics_request(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let head = parse_head(data);
    o.note(head);
    let complete = data.windows(4).any(|w| w == b"\r\n\r\n");
    match head {
        Head::Complete(route) => {
            assert!(complete);
            if route == Route::Metrics {
                assert!(data.starts_with(b"GET /metrics"));
            }
        }
        Head::TooLarge | Head::Partial => assert!(!complete),
    }
    o.accepted = matches!(head, Head::Complete(_));
    o
}

pub fn metrics_seeds() -> Vec<Vec<u8>> {
    [
        "GET /metrics HTTP/1.1\r\nHost: 192.0.2.11:9963\r\nUser-Agent: Prometheus/2.45.0\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        "GET /metrics?name[]=up HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `datapath_event`: ring-buffer records into `RawEvent::from_bytes` and `Event::try_from`
/// (as `EventReader` and `ironctl monitor` do), then their description.
pub fn datapath_event(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let raw = RawEvent::from_bytes(data);
    assert_eq!(raw.is_some(), data.len() >= RawEvent::SIZE);
    o.step_opt("raw", &raw);
    let Some(raw) = raw else {
        return o;
    };
    let ev = Event::try_from(raw);
    o.step_opt("event", &ev.as_ref().ok());
    if let Ok(ev) = ev {
        o.note(std::mem::discriminant(&ev.kind));
        let text = ev.describe(&|id| (id % 3 == 0).then(|| format!("app=id{id}")));
        assert!(!text.is_empty());
        let _ = ev.to_string();
    }
    o
}

/// Records as the datapath writes them (`struct event`, native byte order).
pub fn datapath_seeds() -> Vec<Vec<u8>> {
    let record = |kind: u8, reason: u8, family: u8, dir: u8| {
        let mut b = vec![0u8; RawEvent::SIZE];
        b[0..8].copy_from_slice(&123_456_789u64.to_ne_bytes());
        b[8..12].copy_from_slice(&0x0001_0100u32.to_ne_bytes());
        b[12..16].copy_from_slice(&0x0002_0100u32.to_ne_bytes());
        if family == FAMILY_IPV4 {
            b[16..20].copy_from_slice(&[10, 1, 1, 5]);
            b[32..36].copy_from_slice(&[10, 2, 1, 7]);
        } else {
            b[16] = 0xfd;
            b[31] = 5;
            b[32] = 0xfd;
            b[47] = 7;
        }
        b[48..50].copy_from_slice(&40000u16.to_be_bytes());
        b[50..52].copy_from_slice(&8080u16.to_be_bytes());
        b[52] = kind;
        b[53] = reason;
        b[54] = 6;
        b[55] = family;
        b[56..60].copy_from_slice(&7u32.to_ne_bytes());
        b[60..64].copy_from_slice(&3u32.to_ne_bytes());
        b[64..68].copy_from_slice(&12u32.to_ne_bytes());
        b[68] = dir;
        b[72..76].copy_from_slice(&[198, 51, 100, 11]);
        b[76..80].copy_from_slice(&0x0002_0100u32.to_ne_bytes());
        b
    };
    vec![
        record(EVENT_DROP, DROP_POLICY_DENIED, FAMILY_IPV4, 0),
        record(EVENT_POLICY_VERDICT, VERDICT_ALLOWED, FAMILY_IPV4, 1),
        record(EVENT_TRACE, TRACE_TO_OVERLAY, FAMILY_IPV6, EVENT_DIR_NONE),
        record(EVENT_TRACE, TRACE_FIB_REDIRECT, FAMILY_IPV4, EVENT_DIR_NONE),
    ]
}

/// `config_toml`: a node's TOML config (`configs::Config::from_toml`), as bgpd, meshd and
/// `ironctl config check` read it; an accepted config's warnings.
pub fn config_toml(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return o;
    };
    let r = configs::Config::from_toml(text);
    o.step("config", &r);
    if let Ok(c) = &r {
        o.note(c.warnings().len().min(3));
    }
    o
}

pub fn config_seeds() -> Vec<Vec<u8>> {
    [
        include_str!("../../../configs/examples/minimal.toml"),
        include_str!("../../../configs/examples/node-dual-homed.toml"),
        include_str!("../../../configs/examples/mesh-two-clusters.toml"),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub const CONFIG_TOKENS: &[&[u8]] = &[
    b"[bgp]\n",
    b"[mesh]\n",
    b"[encryption]\n",
    b"[datapath]\n",
    b"[[bgp.peers]]\n",
    b" = ",
    b"\"\"\"",
    b"'''",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"0x",
];
