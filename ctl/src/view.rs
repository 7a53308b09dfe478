//! What `ironctl bgp` shows: rows built from the API's protobuf values, rendered as tables and
//! detail text for people or as JSON (`-o json`) with stable field names for scripts.

use api::bgp as pb;
use serde::Serialize;

use crate::table::{Align, Table, human_duration, key_values, shorten};

/// Widest LAST ERROR cell in the peers table (`bgp peer NAME` shows it whole).
const LAST_ERROR_WIDTH: usize = 48;

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub name: String,
    pub address: String,
    /// `None` until learned from the peer's OPEN.
    pub peer_asn: Option<u32>,
    pub local_asn: u32,
    /// `idle`, `connect`, `active`, `opensent`, `openconfirm`, `established`.
    pub state: &'static str,
    /// Time in the current state.
    pub uptime_seconds: u64,
    /// Negotiated; `None` before a session.
    pub hold_time: Option<u32>,
    pub router_id: Option<String>,
    pub capabilities: Vec<String>,
    pub counters: CountersRow,
    pub last_error: Option<String>,
    /// The peer's BFD session; `None` when BFD is off for it.
    pub bfd: Option<BfdRow>,
}

/// A BFD session (RFC 5880) as bgpd reports it.
#[derive(Debug, Serialize)]
pub struct BfdRow {
    /// `AdminDown`, `Down`, `Init` or `Up`.
    pub state: String,
    pub remote_state: String,
    pub diag: String,
    pub local_discriminator: u32,
    /// `None` until the peer was heard.
    pub remote_discriminator: Option<u32>,
    pub tx_interval_ms: u32,
    pub required_min_rx_ms: u32,
    pub remote_min_rx_ms: u32,
    pub remote_desired_min_tx_ms: u32,
    pub detect_mult: u32,
    pub remote_detect_mult: u32,
    /// `None` until the peer was heard.
    pub detection_time_ms: Option<u32>,
}

impl From<pb::Bfd> for BfdRow {
    fn from(b: pb::Bfd) -> Self {
        BfdRow {
            state: b.state,
            remote_state: b.remote_state,
            diag: b.diag,
            local_discriminator: b.local_discriminator,
            remote_discriminator: (b.remote_discriminator != 0).then_some(b.remote_discriminator),
            tx_interval_ms: b.tx_interval_ms,
            required_min_rx_ms: b.required_min_rx_ms,
            remote_min_rx_ms: b.remote_min_rx_ms,
            remote_desired_min_tx_ms: b.remote_desired_min_tx_ms,
            detect_mult: b.detect_mult,
            remote_detect_mult: b.remote_detect_mult,
            detection_time_ms: (b.detection_time_ms != 0).then_some(b.detection_time_ms),
        }
    }
}

/// One line: state, discriminators, intervals, detection time, and the diagnostic unless Up.
fn bfd_line(b: &BfdRow) -> String {
    let mut s = format!(
        "{} (peer {}), discriminators {}/{}, tx {} ms, rx {} ms, multiplier {}, detection {}",
        b.state,
        b.remote_state,
        b.local_discriminator,
        opt(b.remote_discriminator),
        b.tx_interval_ms,
        b.required_min_rx_ms,
        b.detect_mult,
        b.detection_time_ms
            .map(|t| format!("{t} ms"))
            .unwrap_or_else(|| "-".into()),
    );
    if b.state != "Up" {
        s.push_str(&format!(", diag {}", b.diag));
    }
    s
}

#[derive(Debug, Default, Serialize)]
pub struct CountersRow {
    pub updates_in: u64,
    pub updates_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
}

#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub prefix: String,
    pub next_hop: Option<String>,
    pub as_path: Vec<u32>,
    pub origin: Option<String>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    /// Learned from; `None` for routes this node originates (and in Adj-RIB-Out views).
    pub peer: Option<String>,
    pub best: bool,
    pub stale: bool,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// JSON name of a state (also the `state` label of bgpd's `bgp_sessions` metric).
pub fn state_name(s: i32) -> &'static str {
    match pb::SessionState::try_from(s).unwrap_or(pb::SessionState::Unspecified) {
        pb::SessionState::Unspecified => "unknown",
        pb::SessionState::Idle => "idle",
        pb::SessionState::Connect => "connect",
        pb::SessionState::Active => "active",
        pb::SessionState::OpenSent => "opensent",
        pb::SessionState::OpenConfirm => "openconfirm",
        pb::SessionState::Established => "established",
    }
}

/// How a state reads in tables, spelled as in RFC 4271.
fn state_title(s: &str) -> &'static str {
    match s {
        "idle" => "Idle",
        "connect" => "Connect",
        "active" => "Active",
        "opensent" => "OpenSent",
        "openconfirm" => "OpenConfirm",
        "established" => "Established",
        _ => "Unknown",
    }
}

impl From<pb::Peer> for PeerRow {
    fn from(p: pb::Peer) -> Self {
        let c = p.counters.unwrap_or_default();
        PeerRow {
            name: p.name,
            address: p.address,
            peer_asn: (p.peer_asn != 0).then_some(p.peer_asn),
            local_asn: p.local_asn,
            state: state_name(p.state),
            uptime_seconds: p.uptime_seconds,
            hold_time: (p.hold_time != 0 || p.state == pb::SessionState::Established as i32)
                .then_some(p.hold_time),
            router_id: non_empty(p.peer_router_id),
            capabilities: p.capabilities,
            counters: CountersRow {
                updates_in: c.updates_in,
                updates_out: c.updates_out,
                notifications_in: c.notifications_in,
                notifications_out: c.notifications_out,
                keepalives_in: c.keepalives_in,
                keepalives_out: c.keepalives_out,
                prefixes_received: c.prefixes_received,
                prefixes_accepted: c.prefixes_accepted,
                prefixes_advertised: c.prefixes_advertised,
            },
            last_error: non_empty(p.last_error),
            bfd: p.bfd.map(Into::into),
        }
    }
}

impl From<pb::Route> for RouteRow {
    fn from(r: pb::Route) -> Self {
        RouteRow {
            prefix: r.prefix,
            next_hop: non_empty(r.next_hop),
            as_path: r.as_path,
            origin: non_empty(r.origin),
            med: r.med,
            local_pref: r.local_pref,
            communities: r.communities,
            large_communities: r.large_communities,
            peer: non_empty(r.peer),
            best: r.best,
            stale: r.stale,
        }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `ironctl bgp peers`.
pub fn peers_table(peers: &[PeerRow]) -> String {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ADDRESS", Align::Left),
        ("AS", Align::Right),
        ("STATE", Align::Left),
        ("UPTIME", Align::Right),
        ("RCVD", Align::Right),
        ("ACCEPTED", Align::Right),
        ("ADV", Align::Right),
        ("LAST ERROR", Align::Left),
    ]);
    for p in peers {
        t.row(vec![
            p.name.clone(),
            p.address.clone(),
            opt(p.peer_asn),
            state_title(p.state).into(),
            human_duration(p.uptime_seconds),
            p.counters.prefixes_received.to_string(),
            p.counters.prefixes_accepted.to_string(),
            p.counters.prefixes_advertised.to_string(),
            p.last_error
                .as_deref()
                .map(|e| shorten(e, LAST_ERROR_WIDTH))
                .unwrap_or_default(),
        ]);
    }
    t.render()
}

/// `ironctl bgp peer NAME`: everything the API knows of one peer.
pub fn peer_detail(p: &PeerRow) -> String {
    let c = &p.counters;
    let mut out = format!("peer {} ({})\n", p.name, p.address);
    let mut rows = vec![
        (
            "state",
            format!(
                "{} for {}",
                state_title(p.state),
                human_duration(p.uptime_seconds)
            ),
        ),
        ("peer AS", opt(p.peer_asn)),
        ("local AS", p.local_asn.to_string()),
        ("router id", opt(p.router_id.as_deref())),
        (
            "hold time",
            p.hold_time.map(|h| format!("{h}s")).unwrap_or_default(),
        ),
        ("capabilities", p.capabilities.join(", ")),
        (
            "prefixes",
            format!(
                "received {}, accepted {}, advertised {}",
                c.prefixes_received, c.prefixes_accepted, c.prefixes_advertised
            ),
        ),
        (
            "updates",
            format!("in {}, out {}", c.updates_in, c.updates_out),
        ),
        (
            "notifications",
            format!("in {}, out {}", c.notifications_in, c.notifications_out),
        ),
        (
            "keepalives",
            format!("in {}, out {}", c.keepalives_in, c.keepalives_out),
        ),
    ];
    if let Some(b) = &p.bfd {
        rows.push(("bfd", bfd_line(b)));
    }
    rows.push(("last error", opt(p.last_error.as_deref())));
    out.push_str(&key_values(&rows));
    out
}

/// Which RIB a routes table shows: the PEER column and the best marker mean nothing in an
/// Adj-RIB-Out, so that view leaves them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RibView {
    Loc,
    AdjIn,
    AdjOut,
}

/// `ironctl bgp routes`.
pub fn routes_table(routes: &[RouteRow], view: RibView) -> String {
    let with_peer = view != RibView::AdjOut;
    let mut headers = Vec::new();
    if with_peer {
        headers.push(("", Align::Left));
    }
    headers.extend([
        ("PREFIX", Align::Left),
        ("NEXT HOP", Align::Left),
        ("AS PATH", Align::Left),
        ("ORIGIN", Align::Left),
        ("MED", Align::Right),
        ("LOCPRF", Align::Right),
        ("COMMUNITIES", Align::Left),
        ("LARGE", Align::Left),
    ]);
    if with_peer {
        headers.push(("PEER", Align::Left));
    }
    let mut t = Table::new(&headers);
    for r in routes {
        let mut row = Vec::new();
        if with_peer {
            // `*` best, `S` stale (kept by graceful restart or LLGR, RFC 4724 / RFC 9494).
            let best = if r.best { "*" } else { " " };
            row.push(format!("{best}{}", if r.stale { "S" } else { "" }));
        }
        row.extend([
            r.prefix.clone(),
            opt(r.next_hop.as_deref()),
            r.as_path
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            opt(r.origin.as_deref()),
            opt(r.med),
            opt(r.local_pref),
            r.communities.join(","),
            r.large_communities.join(","),
        ]);
        if with_peer {
            row.push(r.peer.clone().unwrap_or_else(|| "local".into()));
        }
        t.row(row);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> pb::Peer {
        pb::Peer {
            name: "tor-a".into(),
            address: "10.10.1.1".into(),
            peer_asn: 65100,
            local_asn: 4_200_000_107,
            state: pb::SessionState::Established as i32,
            uptime_seconds: 3725,
            hold_time: 90,
            capabilities: vec!["ipv4-unicast".into(), "4-octet-asn".into()],
            counters: Some(pb::Counters {
                updates_in: 12,
                updates_out: 3,
                prefixes_received: 1200,
                prefixes_accepted: 1100,
                prefixes_advertised: 2,
                ..pb::Counters::default()
            }),
            last_error: String::new(),
            peer_router_id: "10.10.1.1".into(),
            bfd: Some(pb::Bfd {
                state: "Up".into(),
                remote_state: "Up".into(),
                diag: "No Diagnostic".into(),
                local_discriminator: 7,
                remote_discriminator: 0x1234,
                tx_interval_ms: 300,
                required_min_rx_ms: 300,
                remote_min_rx_ms: 300,
                remote_desired_min_tx_ms: 300,
                detect_mult: 3,
                remote_detect_mult: 3,
                detection_time_ms: 900,
            }),
        }
    }

    fn idle_peer() -> pb::Peer {
        pb::Peer {
            name: "tor-b".into(),
            address: "fe80::1%eth1".into(),
            peer_asn: 0,
            local_asn: 4_200_000_107,
            state: pb::SessionState::Active as i32,
            uptime_seconds: 42,
            hold_time: 0,
            capabilities: vec![],
            counters: None,
            last_error:
                "NOTIFICATION received: Cease/Administrative Shutdown: \"maintenance window\""
                    .into(),
            peer_router_id: String::new(),
            bfd: None,
        }
    }

    #[test]
    fn peers_table_reads_like_birdc() {
        let rows: Vec<PeerRow> = [peer(), idle_peer()].into_iter().map(Into::into).collect();
        assert_eq!(
            peers_table(&rows),
            "NAME   ADDRESS          AS  STATE        UPTIME  RCVD  ACCEPTED  ADV  LAST ERROR\n\
             tor-a  10.10.1.1     65100  Established   1h02m  1200      1100    2  -\n\
             tor-b  fe80::1%eth1      -  Active          42s     0         0    0  NOTIFICATION received: Cease/Administrative Shu…\n"
        );
    }

    #[test]
    fn empty_tables_are_headers() {
        assert_eq!(
            peers_table(&[]),
            "NAME  ADDRESS  AS  STATE  UPTIME  RCVD  ACCEPTED  ADV  LAST ERROR\n"
        );
        assert_eq!(
            routes_table(&[], RibView::AdjOut),
            "PREFIX  NEXT HOP  AS PATH  ORIGIN  MED  LOCPRF  COMMUNITIES  LARGE\n"
        );
    }

    #[test]
    fn peer_detail_shows_everything() {
        let d = peer_detail(&peer().into());
        assert!(d.starts_with("peer tor-a (10.10.1.1)\n"), "{d}");
        for line in [
            "  state          Established for 1h02m",
            "  peer AS        65100",
            "  router id      10.10.1.1",
            "  hold time      90s",
            "  capabilities   ipv4-unicast, 4-octet-asn",
            "  prefixes       received 1200, accepted 1100, advertised 2",
            "  updates        in 12, out 3",
            "  bfd            Up (peer Up), discriminators 7/4660, tx 300 ms, rx 300 ms, multiplier 3, detection 900 ms",
            "  last error     -",
        ] {
            assert!(d.lines().any(|l| l == line), "missing {line:?} in\n{d}");
        }
        let d = peer_detail(&idle_peer().into());
        assert!(!d.contains("  bfd "), "no BFD line without BFD: {d}");
        assert!(d.contains("  hold time      -\n"), "{d}");
        assert!(d.contains("\"maintenance window\""), "the whole error: {d}");
    }

    fn routes() -> Vec<RouteRow> {
        vec![
            pb::Route {
                prefix: "10.244.2.0/24".into(),
                next_hop: "10.10.1.1".into(),
                as_path: vec![65100, 65002],
                origin: "igp".into(),
                med: Some(10),
                local_pref: None,
                communities: vec!["65100:1".into(), "65535:0".into()],
                large_communities: vec!["65100:1:2".into()],
                peer: "tor-a".into(),
                best: true,
                stale: false,
            }
            .into(),
            pb::Route {
                prefix: "203.0.113.10/32".into(),
                origin: "igp".into(),
                local_pref: Some(200),
                ..pb::Route::default()
            }
            .into(),
        ]
    }

    #[test]
    fn routes_table_marks_the_best_and_fills_blanks() {
        assert_eq!(
            routes_table(&routes(), RibView::Loc),
            "   PREFIX           NEXT HOP   AS PATH      ORIGIN  MED  LOCPRF  COMMUNITIES      LARGE      PEER\n\
             *  10.244.2.0/24    10.10.1.1  65100 65002  igp      10       -  65100:1,65535:0  65100:1:2  tor-a\n   \
                203.0.113.10/32  -          -            igp       -     200  -                -          local\n"
        );
        let out = routes_table(&routes(), RibView::AdjOut);
        assert!(out.starts_with("PREFIX "), "{out}");
        assert!(!out.contains("PEER") && !out.contains('*'), "{out}");
    }

    #[test]
    fn routes_table_marks_stale_routes() {
        let mut rows = routes();
        rows[0].stale = true;
        let out = routes_table(&rows, RibView::AdjIn);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("*S  10.244.2.0/24"), "{out}");
        assert!(lines[2].starts_with("    203.0.113.10/32"), "{out}");
        let v = serde_json::to_value(&rows).unwrap();
        assert_eq!(v[0]["stale"], true);
        assert_eq!(v[1]["stale"], false);
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(PeerRow::from(peer())).unwrap();
        assert_eq!(v["bfd"]["state"], "Up");
        assert_eq!(v["bfd"]["remote_discriminator"], 0x1234);
        assert_eq!(v["bfd"]["detection_time_ms"], 900);
        let v = serde_json::to_value(PeerRow::from(idle_peer())).unwrap();
        assert_eq!(v["bfd"], serde_json::Value::Null);
        assert_eq!(v["state"], "active");
        assert_eq!(v["peer_asn"], serde_json::Value::Null);
        assert_eq!(v["counters"]["prefixes_received"], 0);
        let v = serde_json::to_value(routes()).unwrap();
        assert_eq!(v[0]["as_path"], serde_json::json!([65100, 65002]));
        assert_eq!(v[0]["large_communities"][0], "65100:1:2");
        assert_eq!(v[1]["peer"], serde_json::Value::Null);
        assert_eq!(v[1]["local_pref"], 200);
        assert_eq!(v[1]["med"], serde_json::Value::Null);
    }
}
