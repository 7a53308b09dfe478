//! Prometheus metrics, rendered at scrape time from the [`SpeakerHandle`]: nothing is counted on
//! the hot path for them. Each scrape reads every peer's status (one short lock each) and asks
//! the core task for the RIB counters (one query), then builds a fresh registry and encodes it
//! in the OpenMetrics text format.
//!
//! Served by `api::metrics` (a small HTTP/1.1 server with request-size, time and concurrency
//! limits, shared with meshd).

use std::future::Future;
use std::net::SocketAddr;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::SpeakerHandle;
use crate::fsm::State;
use crate::rib::{PeerCounters, PeerId};

/// One peer at scrape time.
#[derive(Clone, Debug)]
pub struct PeerSample {
    pub name: String,
    pub state: State,
    pub updates_in: u64,
    pub updates_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    /// Prefixes received/accepted/advertised, from the RIB.
    pub rib: PeerCounters,
    /// The BFD session's state, when the peer has one.
    pub bfd: Option<crate::bfd::BfdState>,
}

/// Everything a scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub peers: Vec<PeerSample>,
    pub loc_rib_ipv4: u64,
    pub loc_rib_ipv6: u64,
    pub attribute_sets: u64,
}

/// Reads the speaker's state now; `None` when the speaker is stopping.
pub async fn sample(h: &SpeakerHandle) -> Option<Sample> {
    let ids: Vec<PeerId> = h.peers().iter().map(|p| p.id).collect();
    let (rib, (v4, v6), attribute_sets) = h
        .query(move |rib| {
            let c: Vec<PeerCounters> = ids
                .iter()
                .map(|id| rib.counters(*id).unwrap_or_default())
                .collect();
            (c, rib.prefix_count(), rib.attribute_sets())
        })
        .await?;
    let bfd = h.bfd_status().await;
    let peers = h
        .peers()
        .iter()
        .zip(rib)
        .map(|(p, rib)| {
            let st = p.status.lock().unwrap_or_else(|e| e.into_inner());
            PeerSample {
                name: p.name.clone(),
                state: st.state,
                updates_in: st.counters.updates_in,
                updates_out: st.counters.updates_out,
                notifications_in: st.counters.notifications_in,
                notifications_out: st.counters.notifications_out,
                rib,
                bfd: bfd.get(&p.name).map(|b| b.state),
            }
        })
        .collect();
    Some(Sample {
        peers,
        loc_rib_ipv4: v4 as u64,
        loc_rib_ipv6: v6 as u64,
        attribute_sets: attribute_sets as u64,
    })
}

/// RFC 4271 §8.2.2 numbering (also the BGP4-MIB's bgpPeerState): Idle 1 .. Established 6.
pub fn state_number(s: State) -> i64 {
    match s {
        State::Idle => 1,
        State::Connect => 2,
        State::Active => 3,
        State::OpenSent => 4,
        State::OpenConfirm => 5,
        State::Established => 6,
    }
}

fn state_label(s: State) -> &'static str {
    match s {
        State::Idle => "idle",
        State::Connect => "connect",
        State::Active => "active",
        State::OpenSent => "opensent",
        State::OpenConfirm => "openconfirm",
        State::Established => "established",
    }
}

const STATES: [State; 6] = [
    State::Idle,
    State::Connect,
    State::Active,
    State::OpenSent,
    State::OpenConfirm,
    State::Established,
];

type Labels = Vec<(&'static str, String)>;

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The OpenMetrics text of a sample.
pub fn render(s: &Sample) -> String {
    let mut reg = Registry::default();
    let sessions = gauge_family(&mut reg, "bgp_sessions", "BGP sessions by FSM state");
    for st in STATES {
        let n = s.peers.iter().filter(|p| p.state == st).count();
        sessions
            .get_or_create(&vec![("state", state_label(st).to_string())])
            .set(n as i64);
    }
    let state = gauge_family(
        &mut reg,
        "bgp_peer_state",
        "Session state of the peer (RFC 4271: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established)",
    );
    let received = gauge_family(
        &mut reg,
        "bgp_prefixes_received",
        "Prefixes in the peer's Adj-RIB-In",
    );
    let accepted = gauge_family(
        &mut reg,
        "bgp_prefixes_accepted",
        "Prefixes of the peer's Adj-RIB-In accepted by import policy",
    );
    let advertised = gauge_family(
        &mut reg,
        "bgp_prefixes_advertised",
        "Prefixes in the peer's Adj-RIB-Out",
    );
    // prometheus-client appends `_total` to counter names.
    let updates_in = counter_family(&mut reg, "bgp_updates_received", "UPDATE messages received");
    let updates_out = counter_family(&mut reg, "bgp_updates_sent", "UPDATE messages sent");
    let notif_out = counter_family(
        &mut reg,
        "bgp_notifications_sent",
        "NOTIFICATION messages sent",
    );
    let notif_in = counter_family(
        &mut reg,
        "bgp_notifications_received",
        "NOTIFICATION messages received",
    );
    let withdrawn = counter_family(
        &mut reg,
        "bgp_updates_treat_as_withdraw",
        "Malformed UPDATEs handled as withdrawals (RFC 7606) in the current session",
    );
    let bad_next_hop = counter_family(
        &mut reg,
        "bgp_routes_bad_next_hop",
        "Routes ignored for a semantically incorrect NEXT_HOP (RFC 4271 §6.3) in the current session",
    );
    let bfd_state = gauge_family(
        &mut reg,
        "bgp_bfd_state",
        "BFD session state of peers with BFD (RFC 5880 §4.1: 0 AdminDown, 1 Down, 2 Init, 3 Up)",
    );
    let first_as = counter_family(
        &mut reg,
        "bgp_routes_first_as_mismatch",
        "Routes ignored because the eBGP peer's AS was not first in AS_PATH (RFC 4271 §6.3) in the current session",
    );
    for p in &s.peers {
        let l = vec![("peer", p.name.clone())];
        state.get_or_create(&l).set(state_number(p.state));
        received.get_or_create(&l).set(gauge(p.rib.received));
        accepted.get_or_create(&l).set(gauge(p.rib.accepted));
        advertised.get_or_create(&l).set(gauge(p.rib.advertised));
        updates_in.get_or_create(&l).inc_by(p.updates_in);
        updates_out.get_or_create(&l).inc_by(p.updates_out);
        notif_out.get_or_create(&l).inc_by(p.notifications_out);
        notif_in.get_or_create(&l).inc_by(p.notifications_in);
        withdrawn.get_or_create(&l).inc_by(p.rib.treat_as_withdraw);
        bad_next_hop.get_or_create(&l).inc_by(p.rib.bad_next_hop);
        first_as.get_or_create(&l).inc_by(p.rib.first_as_mismatch);
        if let Some(b) = p.bfd {
            bfd_state.get_or_create(&l).set(b as i64);
        }
    }
    let loc = gauge_family(
        &mut reg,
        "bgp_loc_rib_prefixes",
        "Prefixes in the Loc-RIB (learned or originated) by address family",
    );
    loc.get_or_create(&vec![("family", "ipv4-unicast".to_string())])
        .set(gauge(s.loc_rib_ipv4));
    loc.get_or_create(&vec![("family", "ipv6-unicast".to_string())])
        .set(gauge(s.loc_rib_ipv6));
    let sets = Gauge::<i64>::default();
    sets.set(gauge(s.attribute_sets));
    reg.register(
        "bgp_attribute_sets",
        "Distinct interned path attribute sets",
        sets,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Binds the metrics listener (before serving, so a bad address fails at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    api::metrics::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes (503 while the core task
/// does not answer).
pub async fn serve(
    listener: TcpListener,
    h: SpeakerHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let scrape = move || {
        let h = h.clone();
        async move { sample(&h).await.map(|s| render(&s)) }
    };
    api::metrics::serve(listener, scrape, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, state: State, received: u64) -> PeerSample {
        PeerSample {
            name: name.into(),
            state,
            updates_in: 3,
            updates_out: 2,
            notifications_in: 0,
            notifications_out: 1,
            rib: PeerCounters {
                received,
                accepted: received,
                advertised: 4,
                bad_next_hop: 2,
                first_as_mismatch: 3,
                ..PeerCounters::default()
            },
            bfd: (name == "tor-a").then_some(crate::bfd::BfdState::Up),
        }
    }

    #[test]
    fn renders_every_family_with_labels() {
        let s = Sample {
            peers: vec![
                peer("tor-a", State::Established, 7),
                peer("tor-b", State::Active, 0),
            ],
            loc_rib_ipv4: 9,
            loc_rib_ipv6: 1,
            attribute_sets: 5,
        };
        let text = render(&s);
        for line in [
            "bgp_sessions{state=\"established\"} 1",
            "bgp_sessions{state=\"active\"} 1",
            "bgp_sessions{state=\"idle\"} 0",
            "bgp_peer_state{peer=\"tor-a\"} 6",
            "bgp_peer_state{peer=\"tor-b\"} 3",
            "bgp_prefixes_received{peer=\"tor-a\"} 7",
            "bgp_prefixes_accepted{peer=\"tor-a\"} 7",
            "bgp_prefixes_advertised{peer=\"tor-b\"} 4",
            "bgp_updates_received_total{peer=\"tor-a\"} 3",
            "bgp_updates_sent_total{peer=\"tor-a\"} 2",
            "bgp_notifications_sent_total{peer=\"tor-b\"} 1",
            "bgp_notifications_received_total{peer=\"tor-b\"} 0",
            "bgp_updates_treat_as_withdraw_total{peer=\"tor-a\"} 0",
            "bgp_routes_bad_next_hop_total{peer=\"tor-a\"} 2",
            "bgp_routes_first_as_mismatch_total{peer=\"tor-a\"} 3",
            "bgp_bfd_state{peer=\"tor-a\"} 3",
            "bgp_loc_rib_prefixes{family=\"ipv4-unicast\"} 9",
            "bgp_loc_rib_prefixes{family=\"ipv6-unicast\"} 1",
            "bgp_attribute_sets 5",
            "# TYPE bgp_updates_received counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("bgp_bfd_state{peer=\"tor-b\"}"),
            "a peer without BFD has no BFD state:\n{text}"
        );
    }

    #[test]
    fn renders_without_peers() {
        let text = render(&Sample::default());
        assert!(
            text.contains("bgp_sessions{state=\"established\"} 0"),
            "{text}"
        );
        assert!(text.contains("bgp_attribute_sets 0"), "{text}");
        assert!(!text.contains("bgp_peer_state{"), "{text}");
    }
}
