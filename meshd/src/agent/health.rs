//! Active health checks of this node's own backends (`ironmesh.io/health-check` on a Service
//! object of the local cluster): every second each (pod address, target port) of this node
//! that such a service selects is checked from the node (TCP connect, or HTTP GET of the
//! path, 500 ms each, concurrently); [`crate::health::HealthTracker`] decides when one fails
//! or recovers, and the failing ports of an address go to `health/<ip>` under this node's
//! leases (deleted when healthy again), which every node's service controller reads to
//! quarantine the backend. A dead node's health keys go with its leases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{ClusterName, NodeName, ServiceKey};
use resources::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::federation::MergedView;
use crate::health::HealthTracker;
use crate::kvstore::KvStore;
use crate::leases::{LeasePoolConfig, LeasedKeys};
use crate::objects::{HealthValue, ServiceObject};
use crate::schema::{Key, Resource};

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);

/// The running checker; stops when dropped.
#[derive(Debug)]
pub struct HealthChecks(tokio::task::JoinHandle<()>);

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What to check now: (address, port) -> the check, and the services of each address.
type Targets = (
    BTreeMap<(IpAddr, u16), HealthCheck>,
    BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
);

fn targets(view: &MergedView, cluster: &ClusterName, me: &NodeName) -> Targets {
    view.with(|st| {
        let mut checked = BTreeMap::new();
        for (c, r, v) in st.entries() {
            if c != cluster {
                continue;
            }
            let Resource::Object(name) = r else { continue };
            let Some(key) = name.service_key() else {
                continue;
            };
            let Some(obj) = crate::objects::decode(name, v)
                .ok()
                .and_then(|s| ServiceObject::from_stored(key.clone(), &s))
            else {
                continue;
            };
            if let Some(h) = obj.spec.health_check.clone() {
                checked.insert(key, h);
            }
        }
        if checked.is_empty() {
            return Default::default();
        }
        let mut out = BTreeMap::new();
        let mut of: BTreeMap<IpAddr, BTreeSet<ServiceKey>> = BTreeMap::new();
        for rec in st.services().iter() {
            if &rec.cluster != cluster {
                continue;
            }
            let Some(h) = checked.get(&rec.service) else {
                continue;
            };
            for b in &rec.backends {
                if b.node.as_ref() == Some(me) {
                    out.insert((b.ip, b.port), h.clone());
                    of.entry(b.ip).or_default().insert(rec.service.clone());
                }
            }
        }
        (out, of)
    })
}

async fn check(ip: IpAddr, port: u16, how: &HealthCheck) -> Result<(), String> {
    let addr = SocketAddr::new(ip, port);
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let HealthCheck::Http(path) = how else {
            return Ok(());
        };
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: ironmesh-health\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut buf = [0u8; 64];
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("GET {path}: status {code}"))
        }
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("{addr}: no answer within {TIMEOUT:?}")))
}

impl HealthChecks {
    pub fn spawn(
        store: KvStore,
        cluster: ClusterName,
        node: NodeName,
        lease_ttl_secs: i64,
        view: Arc<MergedView>,
        events: Option<Arc<crate::events::Recorder>>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let keys = LeasedKeys::new(store, LeasePoolConfig::new(lease_ttl_secs, 1000));
        Self(tokio::spawn(async move {
            let mut tracker = HealthTracker::new();
            let mut published: BTreeMap<IpAddr, Vec<u16>> = BTreeMap::new();
            loop {
                let (want, services_of) = targets(&view, &cluster, &node);
                let mut changed = tracker.retain(&want.keys().copied().collect());
                let mut set = tokio::task::JoinSet::new();
                for ((ip, port), how) in &want {
                    let (ip, port, how) = (*ip, *port, how.clone());
                    set.spawn(async move { ((ip, port), check(ip, port, &how).await) });
                }
                let results = set.join_all().await;
                for ((ip, port), r) in results {
                    if tracker.observe(ip, port, r) {
                        changed.insert(ip);
                    }
                }
                // Also retry what failed to publish last time.
                let addrs: BTreeSet<IpAddr> = changed
                    .into_iter()
                    .chain(published.keys().copied())
                    .collect();
                for ip in addrs {
                    let (ports, reason) = tracker.failing(ip);
                    if published.get(&ip).map(Vec::as_slice).unwrap_or(&[]) == ports.as_slice() {
                        continue;
                    }
                    let key = Key::cluster(&cluster, Resource::Health(ip)).to_string();
                    let r = if ports.is_empty() {
                        keys.delete(key).await
                    } else {
                        let v = HealthValue {
                            ip,
                            node: node.clone(),
                            ports: ports.clone(),
                            reason: reason.clone(),
                        };
                        keys.put(key, v.encode()).await
                    };
                    match r {
                        Ok(()) => {
                            let event = if ports.is_empty() {
                                tracing::info!(%ip, "backend healthy again");
                                published.remove(&ip);
                                (
                                    crate::events::EventType::Normal,
                                    "BackendHealthy",
                                    format!(
                                        "backend {ip} on node {node} passes its health check again: back in rotation"
                                    ),
                                )
                            } else {
                                tracing::warn!(%ip, ?ports, %reason, "backend failing its health check: quarantined");
                                let msg = format!(
                                    "backend {ip} (ports {ports:?}) on node {node} failed its health check {} times in a row: {reason}; quarantined (no new connections)",
                                    crate::health::FALL
                                );
                                published.insert(ip, ports);
                                (crate::events::EventType::Warning, "BackendUnhealthy", msg)
                            };
                            if let Some(rec) = &events {
                                for svc in services_of.get(&ip).into_iter().flatten() {
                                    if let Ok(name) = crate::schema::ObjectName::new(
                                        resources::Kind::Service,
                                        Some(svc.namespace()),
                                        svc.name(),
                                    ) {
                                        rec.record(&name, event.0, event.1, event.2.clone()).await;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%ip, error = %e, "cannot publish a backend's health; retrying")
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(INTERVAL) => {}
                    _ = stop.changed() => return,
                }
            }
        }))
    }
}
