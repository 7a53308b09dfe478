//! Prometheus metrics, rendered at scrape time from the same status the API returns (nothing
//! is counted on the hot path for them), served by `api::metrics` as bgpd's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::state::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabel {
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabel {
    cluster: String,
    kind: &'static str,
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn entries(f: &Family<EntryLabel, Gauge>, cluster: &str, c: Option<&pb::Counts>) {
    let c = c.cloned().unwrap_or_default();
    for (kind, n) in [
        ("nodes", c.nodes),
        ("endpoints", c.endpoints),
        ("identities", c.identities),
        ("services", c.services),
    ] {
        f.get_or_create(&EntryLabel {
            cluster: cluster.into(),
            kind,
        })
        .set(n as i64);
    }
}

/// The OpenMetrics text of one status snapshot; `now_ms` is the Unix time in ms.
pub fn render(st: &pb::StatusResponse, now_ms: u64) -> String {
    let mut reg = Registry::with_prefix("meshd");
    gauge(
        &mut reg,
        "local_etcd_connected",
        "The local etcd answers (1) or not (0)",
        i64::from(st.etcd_connected),
    );
    gauge(
        &mut reg,
        "node_registered",
        "This node's record is registered under a lease",
        i64::from(st.registered),
    );
    gauge(
        &mut reg,
        "pod_cidrs_allocated",
        "PodCIDRs allocated to this node",
        st.pod_cidrs.len() as i64,
    );
    let connected = Family::<ClusterLabel, Gauge>::default();
    let stale = Family::<ClusterLabel, Gauge>::default();
    let synced = Family::<ClusterLabel, Gauge>::default();
    let leader = Family::<ClusterLabel, Gauge>::default();
    let age = Family::<ClusterLabel, Gauge>::default();
    let refused = Family::<ClusterLabel, Gauge>::default();
    let ents = Family::<EntryLabel, Gauge>::default();
    entries(&ents, &st.cluster, st.local_counts.as_ref());
    for r in &st.remotes {
        let l = ClusterLabel {
            cluster: r.name.clone(),
        };
        connected.get_or_create(&l).set(i64::from(r.connected));
        stale.get_or_create(&l).set(i64::from(r.stale));
        synced.get_or_create(&l).set(i64::from(r.synced));
        leader.get_or_create(&l).set(i64::from(r.local_is_mirror));
        let secs = if r.last_sync_unix_ms == 0 {
            -1
        } else {
            (now_ms.saturating_sub(r.last_sync_unix_ms) / 1000) as i64
        };
        age.get_or_create(&l).set(secs);
        refused
            .get_or_create(&l)
            .set(i64::try_from(r.refused_count).unwrap_or(i64::MAX));
        entries(&ents, &r.name, r.counts.as_ref());
    }
    reg.register(
        "remote_connected",
        "The remote cluster's mirror is synced and not stale",
        connected,
    );
    reg.register(
        "remote_stale",
        "The remote etcd is unreachable; its last good state is kept",
        stale,
    );
    reg.register(
        "remote_synced",
        "The remote's mirror has its synced marker",
        synced,
    );
    reg.register(
        "remote_mirror_leader",
        "This meshd is the elected mirror of the remote",
        leader,
    );
    reg.register(
        "remote_sync_age_seconds",
        "Seconds since the last complete listing of the remote (-1: never)",
        age,
    );
    reg.register(
        "remote_records_refused",
        "Records of the remote refused now by the checks against what it may claim",
        refused,
    );
    reg.register(
        "entries",
        "Entries of the merged view per cluster and kind",
        ents,
    );
    let healthy = Family::<MemberLabel, Gauge>::default();
    let slow = Family::<MemberLabel, Gauge>::default();
    let has_leader = Family::<MemberLabel, Gauge>::default();
    let rtt = Family::<MemberLabel, Gauge>::default();
    let failures = Family::<MemberLabel, Gauge>::default();
    for m in &st.etcd_members {
        let l = MemberLabel {
            member: m.endpoint.clone(),
        };
        healthy
            .get_or_create(&l)
            .set(i64::from(m.health == "healthy" || m.health == "slow"));
        slow.get_or_create(&l).set(i64::from(m.health == "slow"));
        has_leader.get_or_create(&l).set(i64::from(m.has_leader));
        rtt.get_or_create(&l).set(m.rtt_us as i64);
        failures.get_or_create(&l).set(m.failures as i64);
    }
    reg.register(
        "etcd_member_healthy",
        "The local etcd member is in rotation (1) or left out until a probe succeeds (0)",
        healthy,
    );
    reg.register(
        "etcd_member_slow",
        "The local etcd member answers, but slowly: used only when no fast member is left",
        slow,
    );
    reg.register(
        "etcd_member_has_leader",
        "The local etcd member had a leader at its last probe or request",
        has_leader,
    );
    reg.register(
        "etcd_member_rtt_microseconds",
        "Smoothed round trip of the member's probe reads and requests",
        rtt,
    );
    reg.register(
        "etcd_member_unhealthy_total",
        "Times the member went unhealthy since meshd started",
        failures,
    );
    gauge(
        &mut reg,
        "node_lease_remaining_milliseconds",
        "How long the node's lease lasts unless renewed (-1: not registered)",
        st.lease_ttl_remaining_ms.unwrap_or(-1),
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    reason: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// Flows read since start by (type, reason, direction).
pub type FlowCounts = std::collections::BTreeMap<(String, String, String), u64>;

/// What the status does not carry: the flow collector's counts, the encryption status.
#[derive(Debug, Default)]
pub struct Extra {
    /// (type, reason, direction) → flows read since start, records kept, capacity; `None`:
    /// no flow records kept.
    pub flows: Option<(FlowCounts, usize, usize)>,
    pub encryption: Option<pb::EncryptionStatusResponse>,
}

/// The metrics of [`Extra`], appended to [`render`]'s (`now_s`: Unix seconds).
pub fn render_extra(x: &Extra, now_s: u64) -> String {
    let mut reg = Registry::with_prefix("meshd");
    if let Some((counts, kept, capacity)) = &x.flows {
        let drops = Family::<EventLabel, Counter>::default();
        let verdicts = Family::<EventLabel, Counter>::default();
        for ((kind, reason, direction), n) in counts {
            let l = EventLabel {
                reason: reason.clone(),
                direction: direction.clone(),
            };
            match kind.as_str() {
                "drop" => drops.get_or_create(&l).inc_by(*n),
                "verdict" => verdicts.get_or_create(&l).inc_by(*n),
                _ => 0,
            };
        }
        reg.register(
            "datapath_drops",
            "Packets the datapath dropped, by reason and direction (from its events; needs datapath.flows)",
            drops,
        );
        reg.register(
            "datapath_policy_verdicts",
            "Policy verdicts on new flows, by verdict (reason) and direction (from the datapath's events)",
            verdicts,
        );
        gauge(
            &mut reg,
            "flows_kept",
            "Flow records in the node's ring",
            *kept as i64,
        );
        gauge(
            &mut reg,
            "flows_capacity",
            "Flow records the node's ring holds at most (datapath.flows)",
            *capacity as i64,
        );
    }
    if let Some(e) = &x.encryption {
        gauge(
            &mut reg,
            "encryption_enabled",
            "Node-to-node encryption is on (1) or off (0)",
            i64::from(e.enabled),
        );
        gauge(
            &mut reg,
            "encryption_peers_configured",
            "Peers configured on the device",
            i64::from(e.peers_configured),
        );
        gauge(
            &mut reg,
            "encryption_peers_expected",
            "Peers the mesh's node records call for",
            i64::from(e.peers_expected),
        );
        gauge(
            &mut reg,
            "encryption_peers_handshaked",
            "Peers with a fresh handshake",
            i64::from(e.peers_handshaked),
        );
        gauge(
            &mut reg,
            "encryption_ready_for_strict",
            "Every expected peer has a fresh handshake (1)",
            i64::from(e.ready_for_strict),
        );
        gauge(
            &mut reg,
            "encryption_key_age_seconds",
            "Age of this node's key (-1: unknown)",
            e.key_age_seconds.map_or(-1, |a| a as i64),
        );
        let age = Family::<PeerLabel, Gauge>::default();
        let rx = Family::<PeerLabel, Gauge>::default();
        let tx = Family::<PeerLabel, Gauge>::default();
        for p in &e.peers {
            let l = PeerLabel {
                peer: p.node.clone(),
            };
            age.get_or_create(&l).set(
                p.last_handshake_unix
                    .map_or(-1, |t| now_s.saturating_sub(t) as i64),
            );
            rx.get_or_create(&l).set(p.rx_bytes as i64);
            tx.get_or_create(&l).set(p.tx_bytes as i64);
        }
        reg.register(
            "encryption_peer_last_handshake_age_seconds",
            "Seconds since the peer's last handshake (-1: none yet)",
            age,
        );
        reg.register(
            "encryption_peer_rx_bytes",
            "Bytes received from the peer through the tunnel",
            rx,
        );
        reg.register(
            "encryption_peer_tx_bytes",
            "Bytes sent to the peer through the tunnel",
            tx,
        );
    }
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    // One exposition: the `# EOF` terminator is render()'s.
    out.strip_suffix("# EOF\n").unwrap_or(&out).to_string()
}

/// The extra metrics' inputs now (the encryption status is read off the async runtime).
async fn extra(shared: &Shared) -> Extra {
    let flows = shared.flows().map(|f| (f.counts(), f.len(), f.capacity()));
    // Off is a state too: the gauges say 0 rather than vanish.
    let encryption = match shared.encryption() {
        Some(src) => tokio::task::spawn_blocking(move || src.status()).await.ok(),
        None => Some(pb::EncryptionStatusResponse::default()),
    };
    Extra { flows, encryption }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let scrape = move || {
        let shared = shared.clone();
        async move {
            let x = extra(&shared).await;
            let now = now_ms();
            let base = render(&shared.status(), now);
            let head = base.strip_suffix("# EOF\n").unwrap_or(&base);
            Some(format!("{head}{}# EOF\n", render_extra(&x, now / 1000)))
        }
    };
    api::metrics::serve(listener, scrape, shutdown).await;
}

/// Binds the listener before anything starts (a bad address fails at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    api::metrics::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_datapath_counters_and_encryption_gauges() {
        let counts = [
            (("drop", "policy-denied", "ingress"), 3),
            (("drop", "no-backend", ""), 1),
            (("verdict", "allowed", "egress"), 5),
            (("trace", "fib-redirect", ""), 9),
        ]
        .into_iter()
        .map(|((k, r, d), n)| ((k.to_string(), r.to_string(), d.to_string()), n))
        .collect();
        let x = Extra {
            flows: Some((counts, 18, 4096)),
            encryption: Some(pb::EncryptionStatusResponse {
                enabled: true,
                peers_configured: 3,
                peers_expected: 3,
                peers_handshaked: 2,
                key_age_seconds: Some(60),
                peers: vec![
                    pb::EncryptionPeer {
                        node: "blue/n1".into(),
                        last_handshake_unix: Some(990),
                        rx_bytes: 100,
                        tx_bytes: 200,
                        ..Default::default()
                    },
                    pb::EncryptionPeer {
                        node: "n2".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        };
        let text = render_extra(&x, 1000);
        for want in [
            "meshd_datapath_drops_total{reason=\"policy-denied\",direction=\"ingress\"} 3",
            "meshd_datapath_drops_total{reason=\"no-backend\",direction=\"\"} 1",
            "meshd_datapath_policy_verdicts_total{reason=\"allowed\",direction=\"egress\"} 5",
            "meshd_flows_kept 18",
            "meshd_flows_capacity 4096",
            "meshd_encryption_peers_handshaked 2",
            "meshd_encryption_key_age_seconds 60",
            "meshd_encryption_peer_last_handshake_age_seconds{peer=\"blue/n1\"} 10",
            "meshd_encryption_peer_last_handshake_age_seconds{peer=\"n2\"} -1",
            "meshd_encryption_peer_tx_bytes{peer=\"blue/n1\"} 200",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(
            !text.contains("fib-redirect"),
            "traces are not drops or verdicts"
        );
        assert!(!text.contains("# EOF"), "one terminator, render()'s");
        assert_eq!(render_extra(&Extra::default(), 0), "");
    }

    #[test]
    fn renders_remote_gauges() {
        let st = pb::StatusResponse {
            cluster: "red".into(),
            etcd_connected: true,
            pod_cidrs: vec!["10.1.3.0/24".into()],
            local_counts: Some(pb::Counts {
                nodes: 2,
                ..Default::default()
            }),
            remotes: vec![pb::RemoteClusterStatus {
                name: "green".into(),
                stale: true,
                synced: true,
                last_sync_unix_ms: 10_000,
                local_is_mirror: true,
                refused_count: 3,
                counts: Some(pb::Counts {
                    nodes: 3,
                    endpoints: 7,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            etcd_members: vec![
                pb::EtcdMemberStatus {
                    endpoint: "http://192.0.2.11:2379".into(),
                    health: "unhealthy".into(),
                    reachable: true,
                    has_leader: false,
                    failures: 2,
                    ..Default::default()
                },
                pb::EtcdMemberStatus {
                    endpoint: "http://192.0.2.12:2379".into(),
                    health: "slow".into(),
                    reachable: true,
                    has_leader: true,
                    ..Default::default()
                },
            ],
            lease_ttl_remaining_ms: Some(3100),
            ..Default::default()
        };
        let text = render(&st, 25_500);
        for want in [
            "meshd_local_etcd_connected 1",
            "meshd_pod_cidrs_allocated 1",
            "meshd_remote_connected{cluster=\"green\"} 0",
            "meshd_remote_stale{cluster=\"green\"} 1",
            "meshd_remote_mirror_leader{cluster=\"green\"} 1",
            "meshd_remote_sync_age_seconds{cluster=\"green\"} 15",
            "meshd_remote_records_refused{cluster=\"green\"} 3",
            "meshd_entries{cluster=\"green\",kind=\"endpoints\"} 7",
            "meshd_entries{cluster=\"red\",kind=\"nodes\"} 2",
            "meshd_etcd_member_healthy{member=\"http://192.0.2.11:2379\"} 0",
            "meshd_etcd_member_slow{member=\"http://192.0.2.11:2379\"} 0",
            "meshd_etcd_member_healthy{member=\"http://192.0.2.12:2379\"} 1",
            "meshd_etcd_member_slow{member=\"http://192.0.2.12:2379\"} 1",
            "meshd_etcd_member_has_leader{member=\"http://192.0.2.11:2379\"} 0",
            "meshd_etcd_member_unhealthy_total{member=\"http://192.0.2.11:2379\"} 2",
            "meshd_node_lease_remaining_milliseconds 3100",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
