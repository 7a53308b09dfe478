//! The node registry: each node's record at `clusters/<c>/nodes/<node>`, attached to an etcd
//! lease the node keeps alive. When the node stops renewing, the lease expires and etcd deletes
//! the record (watchers see a delete). One key per lease, so a lease never carries many keys
//! (etcd's put-with-lease slows down with the keys per lease).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ClusterName, Labels, NodeName};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod retry;
use retry::{Backoff, FailureLog, Verdict};

use crate::kvstore::{Decoder, KvError, KvStore};
use crate::schema::{Key, Resource, ResourceKind, Scope};

/// How a node reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeHealth {
    #[default]
    Ready,
    NotReady,
}

/// The value of `clusters/<c>/nodes/<node>` (JSON). Unknown fields are ignored, so a newer
/// writer may add fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: NodeName,
    pub cluster: ClusterName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
    /// Base64 of the node's WireGuard public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec_key_index: Option<u8>,
    /// The node's number in the mesh, part of the SPIs it sends with (unique per receiver;
    /// `agent::sinks::ipsec::ids`). Absent from records of older meshd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec_node_id: Option<u32>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub health: NodeHealth,
}

impl NodeRecord {
    pub fn new(cluster: ClusterName, name: NodeName) -> Self {
        Self {
            name,
            cluster,
            ipv4: None,
            ipv6: None,
            pod_cidrs: Vec::new(),
            wireguard_public_key: None,
            ipsec_key_index: None,
            ipsec_node_id: None,
            labels: Labels::new(),
            health: NodeHealth::Ready,
        }
    }

    pub fn key(&self) -> String {
        Key::cluster(&self.cluster, Resource::Node(self.name.clone())).to_string()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node record always serializes")
    }

    /// Decodes the value stored at the key of `(cluster, name)`; the record must name the same
    /// node and cluster as its key.
    pub fn decode(cluster: &ClusterName, name: &NodeName, value: &[u8]) -> Result<Self, String> {
        let r: NodeRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if &r.name != name || &r.cluster != cluster {
            return Err(format!(
                "record names node {}/{} but is stored under {cluster}/{name}",
                r.cluster, r.name
            ));
        }
        Ok(r)
    }
}

/// Decodes the node records of one scope (own cluster or a mirrored one) for a
/// [`Reflector`](crate::kvstore::Reflector).
#[derive(Debug, Clone)]
pub struct NodeDecoder {
    pub scope: Scope,
}

impl NodeDecoder {
    pub fn prefix(&self) -> String {
        self.scope.kind_prefix(ResourceKind::Nodes)
    }

    fn cluster(&self) -> &ClusterName {
        match &self.scope {
            Scope::Cluster(c) | Scope::Mirror(c) => c,
        }
    }
}

impl Decoder for NodeDecoder {
    type Key = NodeName;
    type Value = NodeRecord;

    fn decode_key(&self, key: &[u8]) -> Result<NodeName, String> {
        match Key::parse_bytes(key).map_err(|e| e.to_string())? {
            Key::Resource {
                scope,
                resource: Resource::Node(n),
            } if scope == self.scope => Ok(n),
            other => Err(format!("not a node key of {:?}: {other:?}", self.scope)),
        }
    }

    fn decode_value(&self, key: &NodeName, value: &[u8]) -> Result<NodeRecord, String> {
        NodeRecord::decode(self.cluster(), key, value)
    }
}

/// A run of keep-alive failures is warned about once per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Registration settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// Lease TTL in seconds (etcd's minimum is a few seconds).
    pub ttl_secs: i64,
    /// How often the lease is renewed; default TTL/4, so that one renewal that fails after
    /// the op timeout plus a failover to another etcd member still lands before the TTL
    /// (`configs::LeaseTiming`, which also bounds the op timeout).
    pub keepalive_interval: Duration,
}

impl LeaseConfig {
    pub fn with_ttl(ttl_secs: i64) -> Self {
        let ttl_secs = ttl_secs.max(1);
        Self {
            ttl_secs,
            keepalive_interval: Duration::from_millis((ttl_secs as u64 * 1000 / 4).max(200)),
        }
    }
}

/// What the keep-alive task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationStatus {
    pub lease_id: i64,
    /// Times the lease had expired and the record was written again with a new lease.
    pub re_registrations: u64,
    pub last_error: Option<String>,
    /// When the lease runs out unless renewed (from the TTL etcd granted at the last renewal).
    pub lease_expires: Option<Instant>,
}

/// A node's record kept alive in etcd. Drop or [`stop`](Self::stop) it to stop renewing (the
/// record then disappears after the TTL); [`deregister`](Self::deregister) removes it at once.
#[derive(Debug)]
pub struct NodeRegistration {
    store: KvStore,
    record: Arc<watch::Sender<NodeRecord>>,
    status: watch::Receiver<RegistrationStatus>,
    task: tokio::task::JoinHandle<()>,
    /// Serialises read-modify-writes of the record ([`modify`](Self::modify)): the key
    /// publisher and the PodCIDR grower change different fields of one record.
    writing: tokio::sync::Mutex<()>,
}

impl Drop for NodeRegistration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeRegistration {
    /// Grants a lease, writes the record with it and starts the keep-alive task.
    pub async fn register(
        store: KvStore,
        record: NodeRecord,
        cfg: LeaseConfig,
    ) -> Result<Self, KvError> {
        let lease_id = put_with_new_lease(&store, &record, cfg.ttl_secs).await?;
        let (status_tx, status) = watch::channel(RegistrationStatus {
            lease_id,
            re_registrations: 0,
            last_error: None,
            lease_expires: Some(Instant::now() + Duration::from_secs(cfg.ttl_secs as u64)),
        });
        let (record_tx, record_rx) = watch::channel(record);
        let task = tokio::spawn(keepalive(
            store.clone(),
            cfg,
            lease_id,
            record_rx,
            status_tx,
        ));
        Ok(Self {
            store,
            record: Arc::new(record_tx),
            status,
            task,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn status(&self) -> RegistrationStatus {
        self.status.borrow().clone()
    }

    /// The status as it changes (renewals, errors, re-registrations).
    pub fn watch_status(&self) -> watch::Receiver<RegistrationStatus> {
        self.status.clone()
    }

    pub fn record(&self) -> NodeRecord {
        self.record.borrow().clone()
    }

    /// Changes the record with `f` and writes it under the same lease, one change at a time
    /// (two writers changing different fields never undo each other). Nothing is written
    /// when `f` changes nothing. Returns the record as written.
    pub async fn modify(&self, f: impl FnOnce(&mut NodeRecord)) -> Result<NodeRecord, KvError> {
        let _one = self.writing.lock().await;
        let mut r = self.record();
        f(&mut r);
        if r != self.record() {
            self.put(r.clone()).await?;
        }
        Ok(r)
    }

    /// Writes a changed record under the same lease.
    pub async fn update(&self, record: NodeRecord) -> Result<(), KvError> {
        let _one = self.writing.lock().await;
        self.put(record).await
    }

    async fn put(&self, record: NodeRecord) -> Result<(), KvError> {
        let lease = self.status.borrow().lease_id;
        self.store
            .put(&record.key(), record.encode(), Some(lease))
            .await?;
        self.record.send_replace(record);
        Ok(())
    }

    /// Stops renewing the lease (as a node that died): the record goes after the TTL.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Removes the record now by revoking the lease.
    pub async fn deregister(self) -> Result<(), KvError> {
        self.task.abort();
        let lease = self.status.borrow().lease_id;
        self.store.lease_revoke(lease).await
    }
}

async fn put_with_new_lease(
    store: &KvStore,
    record: &NodeRecord,
    ttl: i64,
) -> Result<i64, KvError> {
    let lease = store.lease_grant(ttl).await?;
    store
        .put(&record.key(), record.encode(), Some(lease))
        .await?;
    Ok(lease)
}

/// Failures of the keep-alive task: reported in the status, logged without flooding.
struct Failures<'a> {
    status: &'a watch::Sender<RegistrationStatus>,
    log: FailureLog,
}

impl Failures<'_> {
    fn failed(&mut self, e: String) {
        match self.log.failed(Instant::now()) {
            Verdict::Warn { quiet: 0 } => {
                tracing::warn!(error = %e, "node lease keep-alive failed; retrying")
            }
            Verdict::Warn { quiet } => tracing::warn!(
                error = %e, failures_since_last_warning = quiet,
                "node lease keep-alive still failing; retrying"
            ),
            Verdict::Quiet => tracing::debug!(error = %e, "node lease keep-alive failed"),
        }
        self.status.send_modify(|s| s.last_error = Some(e));
    }

    fn renewed(&mut self, ttl: i64, sent: Instant) {
        if let Some(d) = self.log.recovered(Instant::now()) {
            tracing::info!(after = ?d, "node lease renewed again");
        }
        self.status.send_modify(|s| {
            s.last_error = None;
            s.lease_expires = Some(sent + Duration::from_secs(ttl.max(0) as u64));
        });
    }
}

async fn keepalive(
    store: KvStore,
    cfg: LeaseConfig,
    mut lease: i64,
    record: watch::Receiver<NodeRecord>,
    status: watch::Sender<RegistrationStatus>,
) {
    let mut failures = Failures {
        status: &status,
        log: FailureLog::new(WARN_EVERY),
    };
    // Retries while no member can renew (an election) are quick: the lease is running out.
    let mut backoff = Backoff::new(cfg.keepalive_interval.min(Duration::from_millis(250)));
    // One attempt gets half the op timeout, so a member that does not answer (a follower
    // forwarding to a leader that is gone) leaves time for a second attempt elsewhere.
    let attempt = store.op_timeout() / 2;
    loop {
        // (Re)open the keep-alive stream on a healthy member (opening it renews the lease);
        // if the lease is gone, register again.
        let (member, mut client) = store.member_client();
        let sent = Instant::now();
        let opened = tokio::time::timeout(attempt, client.lease_keep_alive(lease)).await;
        let (mut keeper, mut responses) = match opened {
            Ok(Ok(s)) => {
                store.report_ok(member);
                failures.renewed(cfg.ttl_secs, sent);
                backoff.reset();
                s
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                let r = record.borrow().clone();
                match put_with_new_lease(&store, &r, cfg.ttl_secs).await {
                    Ok(l) => {
                        tracing::info!(
                            old = lease,
                            new = l,
                            "node lease expired; registered again"
                        );
                        lease = l;
                        status.send_modify(|s| {
                            s.lease_id = l;
                            s.re_registrations += 1;
                        });
                        failures.renewed(cfg.ttl_secs, sent);
                        backoff.reset();
                    }
                    Err(e) => failures.failed(e.to_string()),
                }
                tokio::time::sleep(cfg.keepalive_interval).await;
                continue;
            }
            Ok(Err(e)) => {
                let e = KvError::from_etcd("lease keep-alive", e);
                store.report_failure(member, &e);
                failures.failed(format!("{} (member {})", e, store.member_endpoint(member)));
                // A member without leader or refusing connections has left the rotation:
                // another member is tried soon, then less often while none answers.
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
            Err(_) => {
                let e = KvError::Timeout {
                    op: "lease keep-alive".into(),
                    timeout: attempt,
                    endpoints: store.member_endpoint(member).into(),
                };
                store.report_failure(member, &e);
                failures.failed(e.to_string());
                continue;
            }
        };
        // Renew every interval while the stream works; a failure reopens it at once (on
        // another member when this one went unhealthy).
        let lost = store.member_lost(member);
        tokio::pin!(lost);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.keepalive_interval) => {}
                _ = &mut lost => {
                    failures.failed(format!("etcd member {} went unhealthy; renewing through another", store.member_endpoint(member)));
                    break;
                }
            }
            let sent = Instant::now();
            if let Err(e) = keeper.keep_alive().await {
                failures.failed(e.to_string());
                break;
            }
            let answer = tokio::select! {
                r = tokio::time::timeout(attempt, responses.message()) => Some(r),
                _ = &mut lost => None,
            };
            match answer {
                None => {
                    failures.failed(format!(
                        "etcd member {} went unhealthy; renewing through another",
                        store.member_endpoint(member)
                    ));
                    break;
                }
                Some(Ok(Ok(Some(r)))) if r.ttl() > 0 => {
                    failures.renewed(r.ttl(), sent);
                    backoff.reset();
                }
                Some(Ok(Ok(Some(_)))) => {
                    failures.failed(format!("lease {lease} expired"));
                    break;
                }
                Some(Ok(Ok(None))) => {
                    failures.failed("keep-alive stream ended".into());
                    break;
                }
                Some(Ok(Err(e))) => {
                    let e = KvError::from_etcd("lease keep-alive", e);
                    store.report_failure(member, &e);
                    failures.failed(e.to_string());
                    break;
                }
                Some(Err(_)) => {
                    let e = KvError::Timeout {
                        op: "lease keep-alive".into(),
                        timeout: attempt,
                        endpoints: store.member_endpoint(member).into(),
                    };
                    store.report_failure(member, &e);
                    failures.failed(e.to_string());
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        let mut r = NodeRecord::new("blue".parse().unwrap(), "worker-1".parse().unwrap());
        r.ipv4 = Some("192.0.2.10".parse().unwrap());
        r.ipv6 = Some("2001:db8::10".parse().unwrap());
        r.pod_cidrs = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:10:0:1::/64".parse().unwrap(),
        ];
        r.wireguard_public_key = Some("hZn7e8Yq0JX2kX0yS5c0c9mZ8nL4v7u0q0g3iW8l7Xo=".into());
        r.ipsec_node_id = Some(0x1_0001);
        r.labels = "topology.kubernetes.io/zone=a".parse().unwrap();
        r
    }

    #[test]
    fn record_round_trips() {
        let r = record();
        assert_eq!(r.key(), "ironmesh/v1/clusters/blue/nodes/worker-1");
        let bytes = r.encode();
        let back = NodeRecord::decode(&r.cluster, &r.name, &bytes).unwrap();
        assert_eq!(back, r);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["health"], "ready");
        assert_eq!(json["pod_cidrs"][0], "10.244.1.0/24");
        assert_eq!(json["ipsec_node_id"], 0x1_0001);
        // Without a number (IPsec off, or an older meshd): no field, and back to None.
        let mut old = r.clone();
        old.ipsec_node_id = None;
        let bytes = old.encode();
        assert!(!String::from_utf8_lossy(&bytes).contains("ipsec_node_id"));
        let back = NodeRecord::decode(&r.cluster, &r.name, &bytes).unwrap();
        assert_eq!(back.ipsec_node_id, None);
    }

    #[test]
    fn decode_is_strict_on_identity_and_lenient_on_new_fields() {
        let r = record();
        let other: NodeName = "worker-2".parse().unwrap();
        assert!(NodeRecord::decode(&r.cluster, &other, &r.encode()).is_err());
        let minimal = br#"{"name":"worker-1","cluster":"blue","future_field":1}"#;
        let m = NodeRecord::decode(&r.cluster, &r.name, minimal).unwrap();
        assert_eq!(m.health, NodeHealth::Ready);
        for bad in [
            &b"{"[..],
            b"null",
            br#"{"name":"Bad_Name","cluster":"blue"}"#,
        ] {
            assert!(NodeRecord::decode(&r.cluster, &r.name, bad).is_err());
        }
    }

    #[test]
    fn decoder_checks_scope() {
        let d = NodeDecoder {
            scope: Scope::Cluster("blue".parse().unwrap()),
        };
        assert_eq!(d.prefix(), "ironmesh/v1/clusters/blue/nodes/");
        assert!(
            d.decode_key(b"ironmesh/v1/clusters/blue/nodes/worker-1")
                .is_ok()
        );
        assert!(
            d.decode_key(b"ironmesh/v1/clusters/green/nodes/worker-1")
                .is_err()
        );
        assert!(d.decode_key(b"ironmesh/v1/clusters/blue/nodes/").is_err());
    }

    #[test]
    fn keepalive_interval_is_a_quarter_of_the_ttl() {
        assert_eq!(
            LeaseConfig::with_ttl(4).keepalive_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            LeaseConfig::with_ttl(0).keepalive_interval,
            Duration::from_millis(250)
        );
    }
}
