//! Prometheus metrics, rendered at scrape time from the same status the API returns (nothing
//! is counted on the hot path for them), served by `api::metrics` as bgpd's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
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

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let scrape = move || {
        let shared = shared.clone();
        async move { Some(render(&shared.status(), now_ms())) }
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
