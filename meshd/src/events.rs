//! Events of applied objects, as `kubectl describe` lists them: why a VIP is pending, which
//! address a Service got, which node took a block of a PodCIDR pool, a backend failing its
//! health check. Stored at `clusters/<c>/events/<plural>/[<ns>/]<name>/<id>` under an events
//! lease of the writing meshd: each lasts between one hour and 70 minutes (a lease is used
//! for 10 minutes, granted for 70), so nothing has to delete them. The same event again on
//! the same node updates its key (`count`, `lastTimestamp`), as Kubernetes aggregates them.
//! Best effort: a failed write is logged, never fails what it describes; writes are rate
//! limited (a storm of changes must not become a storm of etcd writes).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::{ClusterName, NodeName};
use serde::{Deserialize, Serialize};

use crate::kvstore::KvStore;
use crate::schema::{Key, ObjectName, Resource, ResourceKind, Scope};

/// How long one events lease is used, and how much longer than an hour it is granted for.
const LEASE_USE: Duration = Duration::from_secs(600);
const LEASE_TTL_SECS: i64 = 3600 + 600;
/// Token bucket: sustained writes per second and the burst.
const RATE_PER_S: f64 = 20.0;
const BURST: f64 = 100.0;
/// Bounds on what is stored and shown.
const MAX_MESSAGE: usize = 1024;
pub const MAX_SHOWN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event, as stored (Kubernetes' Event fields that `kubectl describe` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    /// The meshd that saw it (its node).
    pub source: String,
    pub count: u32,
    pub first_timestamp: String,
    pub last_timestamp: String,
}

struct Inner {
    lease: Option<(i64, Instant)>,
    /// (object, reason, message) → (id, count, first timestamp) of this meshd's events.
    seen: HashMap<(ObjectName, String, String), (String, u32, String)>,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

/// Writes events for one meshd. Share one per process.
pub struct Recorder {
    store: KvStore,
    cluster: ClusterName,
    node: NodeName,
    inner: tokio::sync::Mutex<Inner>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("cluster", &self.cluster)
            .field("node", &self.node)
            .finish()
    }
}

impl Recorder {
    pub fn new(store: KvStore, cluster: ClusterName, node: NodeName) -> Self {
        Recorder {
            store,
            cluster,
            node,
            inner: tokio::sync::Mutex::new(Inner {
                lease: None,
                seen: HashMap::new(),
                tokens: BURST,
                refilled: Instant::now(),
                dropped: 0,
            }),
        }
    }

    /// Records an event of `object` (best effort: failures are logged).
    pub async fn record(
        &self,
        object: &ObjectName,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let mut g = self.inner.lock().await;
        let now = Instant::now();
        let elapsed = now.duration_since(g.refilled).as_secs_f64();
        g.tokens = (g.tokens + elapsed * RATE_PER_S).min(BURST);
        g.refilled = now;
        if g.tokens < 1.0 {
            g.dropped += 1;
            if g.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = g.dropped,
                    "events over the rate limit are dropped"
                );
            }
            return;
        }
        g.tokens -= 1.0;
        let stamp = crate::objects::rfc3339(SystemTime::now());
        let k = (object.clone(), reason.to_string(), message.clone());
        let (id, count, first) = match g.seen.get(&k) {
            Some((id, count, first)) => (id.clone(), count + 1, first.clone()),
            None => (new_id(&self.node), 1, stamp.clone()),
        };
        let lease = match g.lease {
            Some((id, at)) if now.duration_since(at) < LEASE_USE => id,
            _ => match self.store.lease_grant(LEASE_TTL_SECS).await {
                Ok(id) => {
                    g.lease = Some((id, now));
                    // Events of the old lease go with it: start counting afresh.
                    g.seen.clear();
                    id
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot grant the events lease; event not recorded");
                    return;
                }
            },
        };
        let ev = Event {
            type_,
            reason: reason.to_string(),
            message,
            source: self.node.to_string(),
            count,
            first_timestamp: first.clone(),
            last_timestamp: stamp,
        };
        let key = Key::cluster(&self.cluster, Resource::Event(object.clone(), id.clone()));
        let value = serde_json::to_vec(&ev).expect("serializes");
        match self.store.put(&key.to_string(), value, Some(lease)).await {
            Ok(()) => {
                g.seen.insert(k, (id, count, first));
                // Bounded memory: a long-running meshd forgets its oldest aggregations.
                if g.seen.len() > 10_000 {
                    g.seen.clear();
                }
            }
            Err(e) => tracing::warn!(error = %e, %key, "cannot record an event"),
        }
    }
}

/// A unique id for a new event of this node: node name and the time in nanoseconds.
fn new_id(node: &NodeName) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name: String = node
        .as_ref()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{name}.{nanos}")
}

/// The latest [`MAX_SHOWN`] events of `object`, oldest first (what describe shows).
pub async fn list(
    store: &KvStore,
    cluster: &ClusterName,
    object: &ObjectName,
) -> Result<Vec<Event>, crate::kvstore::KvError> {
    let prefix = format!(
        "{}{object}/",
        Scope::Cluster(cluster.clone()).kind_prefix(ResourceKind::Events)
    );
    let (kvs, _) = store.list(&prefix, false).await?;
    let mut out: Vec<Event> = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    out.sort_by(|a: &Event, b: &Event| a.last_timestamp.cmp(&b.last_timestamp));
    let skip = out.len().saturating_sub(MAX_SHOWN);
    Ok(out.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_key_safe_and_events_round_trip_in_kubernetes_words() {
        let id = new_id(
            &"Worker_1.example"
                .parse()
                .unwrap_or_else(|_| "w1".parse().unwrap()),
        );
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        );
        let e = Event {
            type_: EventType::Warning,
            reason: "PoolExhausted".into(),
            message: "no address left in IPPool red-public".into(),
            source: "n1".into(),
            count: 2,
            first_timestamp: "2026-12-07T19:00:00Z".into(),
            last_timestamp: "2026-12-07T19:01:00Z".into(),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""type":"Warning""#), "{json}");
        assert!(json.contains(r#""lastTimestamp""#), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        assert!(serde_json::from_str::<Event>(r#"{"type":"Normal"}"#).is_err());
    }
}
