//! `ironctl mesh` rows: API messages to stable JSON fields and tables (pure, unit-tested).

use api::mesh as pb;
use serde::Serialize;

use crate::table::{Align, Table, human_duration, key_values, shorten};

/// A remote cluster in `ironctl mesh status`.
#[derive(Debug, Serialize, PartialEq)]
pub struct RemoteRow {
    pub name: String,
    pub id: u32,
    pub connected: bool,
    pub stale: bool,
    pub synced: bool,
    /// Seconds since the last complete listing; absent when never synced.
    pub last_sync_age_secs: Option<u64>,
    pub stale_since_unix_ms: Option<u64>,
    pub mirror_leader: String,
    pub local_is_mirror: bool,
    pub nodes: u64,
    pub endpoints: u64,
    pub identities: u64,
    pub services: u64,
    pub error: String,
    /// Records refused by the checks against what the cluster may claim (count, and the
    /// reasons of the first ones).
    pub refused_count: u64,
    pub refused: Vec<String>,
}

/// `ironctl mesh status`.
#[derive(Debug, Serialize, PartialEq)]
pub struct StatusView {
    pub node: String,
    pub cluster: String,
    pub cluster_id: u32,
    pub etcd_connected: bool,
    pub etcd_endpoints: String,
    pub etcd_error: String,
    pub registered: bool,
    pub ipv4: String,
    pub ipv6: String,
    pub pod_cidrs: Vec<String>,
    pub uptime_secs: u64,
    pub local: Counts,
    pub remotes: Vec<RemoteRow>,
    /// Each member of the local etcd as meshd sees it.
    pub etcd_members: Vec<EtcdMemberRow>,
    /// How long the node's lease lasts unless renewed (ms); absent when not registered.
    pub lease_ttl_remaining_ms: Option<i64>,
}

/// One local etcd member in `ironctl mesh status`.
#[derive(Debug, Serialize, PartialEq)]
pub struct EtcdMemberRow {
    pub endpoint: String,
    pub health: String,
    pub reachable: bool,
    pub has_leader: bool,
    pub last_error: String,
    pub rtt_us: u64,
    pub failures: u64,
    pub since_secs: u64,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    pub nodes: u64,
    pub endpoints: u64,
    pub identities: u64,
    pub services: u64,
}

fn counts(c: Option<pb::Counts>) -> Counts {
    let c = c.unwrap_or_default();
    Counts {
        nodes: c.nodes,
        endpoints: c.endpoints,
        identities: c.identities,
        services: c.services,
    }
}

/// The API's status as shown; `now_ms` (Unix ms) gives the sync ages.
pub fn status_view(s: pb::StatusResponse, now_ms: u64) -> StatusView {
    let remotes = s
        .remotes
        .into_iter()
        .map(|r| {
            let c = counts(r.counts);
            RemoteRow {
                last_sync_age_secs: (r.last_sync_unix_ms > 0)
                    .then(|| now_ms.saturating_sub(r.last_sync_unix_ms) / 1000),
                stale_since_unix_ms: (r.stale_since_unix_ms > 0).then_some(r.stale_since_unix_ms),
                name: r.name,
                id: r.id,
                connected: r.connected,
                stale: r.stale,
                synced: r.synced,
                mirror_leader: r.mirror_leader,
                local_is_mirror: r.local_is_mirror,
                nodes: c.nodes,
                endpoints: c.endpoints,
                identities: c.identities,
                services: c.services,
                error: r.error,
                refused_count: r.refused_count,
                refused: r.refused,
            }
        })
        .collect();
    StatusView {
        node: s.node,
        cluster: s.cluster,
        cluster_id: s.cluster_id,
        etcd_connected: s.etcd_connected,
        etcd_endpoints: s.etcd_endpoints,
        etcd_error: s.etcd_error,
        registered: s.registered,
        ipv4: s.ipv4,
        ipv6: s.ipv6,
        pod_cidrs: s.pod_cidrs,
        uptime_secs: s.uptime_secs,
        local: counts(s.local_counts),
        remotes,
        etcd_members: s
            .etcd_members
            .into_iter()
            .map(|m| EtcdMemberRow {
                endpoint: m.endpoint,
                health: m.health,
                reachable: m.reachable,
                has_leader: m.has_leader,
                last_error: m.last_error,
                rtt_us: m.rtt_us,
                failures: m.failures,
                since_secs: m.since_secs,
            })
            .collect(),
        lease_ttl_remaining_ms: s.lease_ttl_remaining_ms,
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The `etcd` line: a summary of the member table (how many members are healthy, which are
/// slow or failed, whether a leader is reachable through a usable member), or, before any
/// member answered, the endpoints and the error.
pub fn etcd_summary(v: &StatusView) -> String {
    let m = &v.etcd_members;
    if m.is_empty() {
        return if v.etcd_error.is_empty() {
            format!("connecting ({})", v.etcd_endpoints)
        } else {
            format!(
                "no member answered yet ({}): {}",
                v.etcd_endpoints, v.etcd_error
            )
        };
    }
    let with = |h: &str| m.iter().filter(|r| r.health == h).collect::<Vec<_>>();
    let (healthy, slow, failed) = (with("healthy"), with("slow"), with("unhealthy"));
    let names = |rs: &[&EtcdMemberRow]| {
        rs.iter()
            .map(|r| r.endpoint.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = format!("{}/{} members healthy", healthy.len(), m.len());
    if !slow.is_empty() {
        out.push_str(&format!(", {} slow ({})", slow.len(), names(&slow)));
    }
    if !failed.is_empty() {
        out.push_str(&format!(", {} failed ({})", failed.len(), names(&failed)));
    }
    let leader = m
        .iter()
        .any(|r| r.has_leader && (r.health == "healthy" || r.health == "slow"));
    out.push_str(if leader {
        ", leader reachable"
    } else {
        ", NO leader reachable"
    });
    if !v.etcd_error.is_empty() {
        out.push_str(&format!("; {}", v.etcd_error));
    }
    out
}

pub fn status_text(v: &StatusView) -> String {
    let etcd = etcd_summary(v);
    let mut out = key_values(&[
        (
            "node",
            format!("{} (cluster {}, id {})", v.node, v.cluster, v.cluster_id),
        ),
        ("etcd", etcd),
        ("registered", yes(v.registered)),
        (
            "addresses",
            [v.ipv4.as_str(), v.ipv6.as_str()]
                .iter()
                .filter(|a| !a.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("pod cidrs", v.pod_cidrs.join(" ")),
        ("uptime", human_duration(v.uptime_secs)),
        (
            "local",
            format!(
                "{} nodes, {} endpoints, {} identities, {} services",
                v.local.nodes, v.local.endpoints, v.local.identities, v.local.services
            ),
        ),
    ]);
    if let Some(ms) = v.lease_ttl_remaining_ms {
        out.push_str(&format!("lease ttl left: {:.1}s\n", ms as f64 / 1000.0));
    }
    if !v.etcd_members.is_empty() {
        let mut t = Table::new(&[
            ("ETCD MEMBER", Align::Left),
            ("HEALTH", Align::Left),
            ("REACHABLE", Align::Left),
            ("LEADER", Align::Left),
            ("RTT", Align::Right),
            ("FAILURES", Align::Right),
            ("LAST ERROR", Align::Left),
        ]);
        for m in &v.etcd_members {
            t.row(vec![
                m.endpoint.clone(),
                format!("{} {}", m.health, human_duration(m.since_secs)),
                yes(m.reachable),
                yes(m.has_leader),
                if m.rtt_us > 0 {
                    format!("{:.1}ms", m.rtt_us as f64 / 1000.0)
                } else {
                    "-".into()
                },
                m.failures.to_string(),
                shorten(&m.last_error, 80),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if v.remotes.is_empty() {
        out.push_str("\nno remote clusters configured\n");
        return out;
    }
    let mut t = Table::new(&[
        ("CLUSTER", Align::Left),
        ("ID", Align::Right),
        ("STATE", Align::Left),
        ("LAST SYNC", Align::Right),
        ("MIRROR", Align::Left),
        ("NODES", Align::Right),
        ("ENDPOINTS", Align::Right),
        ("IDENTITIES", Align::Right),
        ("SERVICES", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for r in &v.remotes {
        let state = match (r.connected, r.stale, r.synced) {
            (_, true, _) => "stale",
            (true, _, _) => "connected",
            (false, false, true) => "synced",
            _ => "not synced",
        };
        let mirror = match (r.local_is_mirror, r.mirror_leader.as_str()) {
            (true, _) => "this node".to_string(),
            (false, "") => String::new(),
            (false, l) => l.to_string(),
        };
        t.row(vec![
            r.name.clone(),
            r.id.to_string(),
            state.into(),
            r.last_sync_age_secs
                .map(|s| format!("{} ago", human_duration(s)))
                .unwrap_or_default(),
            mirror,
            r.nodes.to_string(),
            r.endpoints.to_string(),
            r.identities.to_string(),
            r.services.to_string(),
            shorten(&r.error, 60),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    for r in v.remotes.iter().filter(|r| r.refused_count > 0) {
        let s = if r.refused_count == 1 { "" } else { "s" };
        out.push_str(&format!(
            "\n{}: {} record{s} refused:\n",
            r.name, r.refused_count
        ));
        for why in &r.refused {
            out.push_str(&format!("  {}\n", shorten(why, 160)));
        }
        if r.refused_count > r.refused.len() as u64 {
            out.push_str(&format!(
                "  ... and {} more (meshd's log has each)\n",
                r.refused_count - r.refused.len() as u64
            ));
        }
    }
    out
}

#[derive(Debug, Serialize, PartialEq)]
pub struct NodeRow {
    pub cluster: String,
    pub name: String,
    pub ipv4: String,
    pub ipv6: String,
    pub pod_cidrs: Vec<String>,
    pub health: String,
    pub wireguard_public_key: String,
    pub local: bool,
}

impl From<pb::Node> for NodeRow {
    fn from(n: pb::Node) -> Self {
        NodeRow {
            cluster: n.cluster,
            name: n.name,
            ipv4: n.ipv4,
            ipv6: n.ipv6,
            pod_cidrs: n.pod_cidrs,
            health: n.health,
            wireguard_public_key: n.wireguard_public_key,
            local: n.local,
        }
    }
}

pub fn nodes_table(rows: &[NodeRow]) -> String {
    let mut t = Table::new(&[
        ("CLUSTER", Align::Left),
        ("NODE", Align::Left),
        ("IPV4", Align::Left),
        ("IPV6", Align::Left),
        ("POD CIDRS", Align::Left),
        ("HEALTH", Align::Left),
        ("WIREGUARD KEY", Align::Left),
    ]);
    for n in rows {
        let name = if n.local {
            format!("{} (this node)", n.name)
        } else {
            n.name.clone()
        };
        t.row(vec![
            n.cluster.clone(),
            name,
            n.ipv4.clone(),
            n.ipv6.clone(),
            n.pod_cidrs.join(","),
            n.health.clone(),
            shorten(&n.wireguard_public_key, 12),
        ]);
    }
    t.render()
}

#[derive(Debug, Serialize, PartialEq)]
pub struct IdentityRow {
    pub id: u32,
    pub cluster: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

pub fn identities_table(rows: &[IdentityRow]) -> String {
    let mut t = Table::new(&[
        ("ID", Align::Right),
        ("CLUSTER", Align::Left),
        ("LABELS", Align::Left),
    ]);
    for i in rows {
        let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![i.id.to_string(), i.cluster.clone(), labels.join(",")]);
    }
    t.render()
}

#[derive(Debug, Serialize, PartialEq)]
pub struct BackendRow {
    pub ip: String,
    pub port: u32,
    pub cluster: String,
    pub node: String,
    pub state: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    pub cluster: String,
    pub vips: Vec<String>,
    pub ports: Vec<String>,
    pub global: bool,
    pub affinity: String,
    pub backends: Vec<BackendRow>,
    pub global_backends: Vec<BackendRow>,
    pub selected_backends: Vec<BackendRow>,
}

fn backends(b: Vec<pb::Backend>) -> Vec<BackendRow> {
    b.into_iter()
        .map(|b| BackendRow {
            ip: b.ip,
            port: b.port,
            cluster: b.cluster,
            node: b.node,
            state: b.state,
        })
        .collect()
}

impl From<pb::Service> for ServiceRow {
    fn from(s: pb::Service) -> Self {
        ServiceRow {
            namespace: s.namespace,
            name: s.name,
            cluster: s.cluster,
            vips: s.vips,
            ports: s
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol))
                .collect(),
            global: s.global,
            affinity: s.affinity,
            backends: backends(s.backends),
            global_backends: backends(s.global_backends),
            selected_backends: backends(s.selected_backends),
        }
    }
}

pub fn services_table(rows: &[ServiceRow]) -> String {
    let mut t = Table::new(&[
        ("SERVICE", Align::Left),
        ("CLUSTER", Align::Left),
        ("VIPS", Align::Left),
        ("PORTS", Align::Left),
        ("GLOBAL", Align::Left),
        ("AFFINITY", Align::Left),
        ("BACKENDS", Align::Left),
    ]);
    for s in rows {
        let shown = if s.global && !s.global_backends.is_empty() {
            &s.global_backends
        } else {
            &s.backends
        };
        let b: Vec<String> = shown
            .iter()
            .map(|b| match b.cluster.as_str() {
                "" => format!("{}:{}", b.ip, b.port),
                c => format!("{}:{}@{c}", b.ip, b.port),
            })
            .collect();
        t.row(vec![
            format!("{}/{}", s.namespace, s.name),
            s.cluster.clone(),
            s.vips.join(","),
            s.ports.join(","),
            yes(s.global),
            s.affinity.clone(),
            b.join(","),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> pb::StatusResponse {
        pb::StatusResponse {
            node: "r1".into(),
            cluster: "red".into(),
            cluster_id: 1,
            etcd_connected: true,
            etcd_endpoints: "http://192.0.2.11:2379".into(),
            registered: true,
            ipv4: "192.0.2.21".into(),
            pod_cidrs: vec!["10.1.0.0/24".into()],
            local_counts: Some(pb::Counts {
                nodes: 2,
                ..Default::default()
            }),
            remotes: vec![pb::RemoteClusterStatus {
                name: "green".into(),
                id: 2,
                stale: true,
                synced: true,
                last_sync_unix_ms: 100_000,
                stale_since_unix_ms: 110_000,
                mirror_leader: "r2".into(),
                counts: Some(pb::Counts {
                    nodes: 2,
                    endpoints: 5,
                    ..Default::default()
                }),
                error: "etcd is unreachable".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn status_names_each_etcd_member_and_the_lease_left() {
        let mut s = status();
        s.etcd_members = vec![
            pb::EtcdMemberStatus {
                endpoint: "http://192.0.2.11:2379".into(),
                health: "unhealthy".into(),
                reachable: true,
                has_leader: false,
                last_error: "etcdserver: no leader".into(),
                failures: 1,
                ..Default::default()
            },
            pb::EtcdMemberStatus {
                endpoint: "http://192.0.2.12:2379".into(),
                health: "healthy".into(),
                reachable: true,
                has_leader: true,
                rtt_us: 1500,
                ..Default::default()
            },
        ];
        s.lease_ttl_remaining_ms = Some(3200);
        let v = status_view(s, 130_500);
        let text = status_text(&v);
        assert!(text.contains("lease ttl left: 3.2s"), "{text}");
        let etcd = text
            .lines()
            .find(|l| l.trim_start().starts_with("etcd "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            etcd.ends_with(
                "1/2 members healthy, 1 failed (http://192.0.2.11:2379), leader reachable"
            ),
            "{etcd}"
        );
        let bad = text
            .lines()
            .find(|l| l.starts_with("http://192.0.2.11:2379"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            bad.contains("unhealthy") && bad.contains("no leader"),
            "{bad}"
        );
        let good = text
            .lines()
            .find(|l| l.starts_with("http://192.0.2.12:2379"))
            .unwrap();
        assert!(good.contains("healthy") && good.contains("1.5ms"), "{good}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["etcd_members"][0]["has_leader"], false);
        assert_eq!(json["lease_ttl_remaining_ms"], 3200);
    }

    #[test]
    fn status_view_computes_ages_and_keeps_flags() {
        let v = status_view(status(), 130_500);
        let r = &v.remotes[0];
        assert_eq!(r.last_sync_age_secs, Some(30));
        assert_eq!(r.stale_since_unix_ms, Some(110_000));
        assert!(r.stale && r.synced && !r.connected && !r.local_is_mirror);
        assert_eq!((r.nodes, r.endpoints), (2, 5));
        assert_eq!(v.local.nodes, 2);
        let text = status_text(&v);
        assert!(text.contains("green"), "{text}");
        let line = text.lines().find(|l| l.starts_with("green")).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&f[..4], ["green", "2", "stale", "30s"], "{line}");
        assert!(line.contains("r2"), "{line}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["remotes"][0]["stale"], true);
        assert_eq!(json["remotes"][0]["mirror_leader"], "r2");
        assert!(!text.contains("refused"), "{text}");
    }

    #[test]
    fn refused_records_are_listed_under_their_cluster() {
        let mut s = status();
        s.remotes[0].refused_count = 3;
        s.remotes[0].refused = vec![
            "node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)".into(),
            "endpoint 10.1.0.5 ip 10.1.0.5 outside green's pools (10.2.0.0/16)".into(),
        ];
        let v = status_view(s, 130_500);
        assert_eq!(v.remotes[0].refused_count, 3);
        let text = status_text(&v);
        assert!(text.contains("green: 3 records refused:\n  node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)\n"), "{text}");
        assert!(text.contains("  ... and 1 more"), "{text}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["remotes"][0]["refused_count"], 3);
    }

    #[test]
    fn never_synced_has_no_age() {
        let mut s = status();
        s.remotes[0].last_sync_unix_ms = 0;
        s.remotes[0].stale_since_unix_ms = 0;
        let v = status_view(s, 5);
        assert_eq!(v.remotes[0].last_sync_age_secs, None);
        assert_eq!(v.remotes[0].stale_since_unix_ms, None);
    }

    #[test]
    fn services_show_global_backends_with_cluster() {
        let b = |ip: &str, c: &str| pb::Backend {
            ip: ip.into(),
            port: 8080,
            cluster: c.into(),
            state: "active".into(),
            ..Default::default()
        };
        let s = pb::Service {
            namespace: "shop".into(),
            name: "web".into(),
            cluster: "red".into(),
            vips: vec!["10.96.0.10".into()],
            ports: vec![pb::ServicePort {
                name: String::new(),
                port: 80,
                protocol: "tcp".into(),
            }],
            backends: vec![b("10.1.0.5", "red")],
            global: true,
            affinity: "local".into(),
            global_backends: vec![b("10.1.0.5", "red"), b("10.2.0.7", "green")],
            selected_backends: vec![b("10.1.0.5", "red")],
        };
        let row = ServiceRow::from(s);
        assert_eq!(row.ports, ["80/tcp"]);
        let t = services_table(&[row]);
        assert!(t.contains("10.1.0.5:8080@red,10.2.0.7:8080@green"), "{t}");
    }

    fn member(endpoint: &str, health: &str, has_leader: bool) -> pb::EtcdMemberStatus {
        pb::EtcdMemberStatus {
            endpoint: endpoint.into(),
            health: health.into(),
            reachable: true,
            has_leader,
            ..Default::default()
        }
    }

    #[test]
    fn the_etcd_line_summarizes_the_member_table() {
        let summary = |members: Vec<pb::EtcdMemberStatus>, error: &str| {
            let mut s = status();
            s.etcd_members = members;
            s.etcd_error = error.into();
            etcd_summary(&status_view(s, 0))
        };
        assert_eq!(
            summary(
                vec![
                    member("http://a:2379", "healthy", true),
                    member("http://b:2379", "healthy", true),
                    member("http://c:2379", "healthy", true),
                ],
                ""
            ),
            "3/3 members healthy, leader reachable"
        );
        assert_eq!(
            summary(
                vec![
                    member("http://a:2379", "slow", true),
                    member("http://b:2379", "healthy", true),
                    member("http://c:2379", "unhealthy", false),
                ],
                ""
            ),
            "1/3 members healthy, 1 slow (http://a:2379), 1 failed (http://c:2379), leader reachable"
        );
        // A member that is not usable does not count as a way to the leader.
        assert_eq!(
            summary(
                vec![
                    member("http://a:2379", "unhealthy", true),
                    member("http://b:2379", "unhealthy", false),
                ],
                "listing the local etcd"
            ),
            "0/2 members healthy, 2 failed (http://a:2379 http://b:2379), NO leader reachable; listing the local etcd"
        );
        // Before any member answered: the endpoints and why.
        assert_eq!(
            summary(vec![], "etcd is unreachable"),
            "no member answered yet (http://192.0.2.11:2379): etcd is unreachable"
        );
        assert_eq!(summary(vec![], ""), "connecting (http://192.0.2.11:2379)");
    }
}
