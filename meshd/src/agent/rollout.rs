//! This node's part in the cluster's encryption rollout ([`crate::rollout`]): every second it
//! reads the desired mode and every node's published state from the merged view, lets the
//! WireGuard worker's agent take the gate's mode (no restart), and publishes this node's
//! state at `encryption/nodes/<node>` under a lease of the node (a stopped node's state goes
//! with its lease, and it then blocks strict as "published no encryption state").

use std::sync::Arc;
use std::time::Duration;

use common::{ClusterName, NodeName};
use tokio::sync::watch;

use super::sinks::wireguard::RolloutSource;
use crate::federation::MergedView;
use crate::kvstore::KvStore;
use crate::leases::{LeasePoolConfig, LeasedKeys};
use crate::rollout::Published;
use crate::schema::{Key, Resource};

const INTERVAL: Duration = Duration::from_secs(1);

/// The running rollout task; stops when dropped.
#[derive(Debug)]
pub struct RolloutTask(tokio::task::JoinHandle<()>);

impl Drop for RolloutTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RolloutTask {
    pub fn spawn(
        store: KvStore,
        cluster: ClusterName,
        node: NodeName,
        lease_ttl_secs: i64,
        view: Arc<MergedView>,
        source: RolloutSource,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let keys = LeasedKeys::new(store, LeasePoolConfig::new(lease_ttl_secs, 10));
        let key = Key::cluster(&cluster, Resource::EncryptionNode(node)).to_string();
        Self(tokio::spawn(async move {
            let mut published: Option<Vec<u8>> = None;
            let mut last_blocked: Option<String> = None;
            let mut ticks: u32 = 0;
            loop {
                ticks = ticks.wrapping_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(INTERVAL) => {}
                    _ = stop.changed() => return,
                }
                if !view.with(|st| st.listed()) {
                    continue;
                }
                let seen = view.with(|st| Published::read(st, &cluster));
                let src = source.clone();
                let desired = seen.desired.as_ref().map(|d| d.mode);
                let step = tokio::task::spawn_blocking(move || {
                    src.step(desired, &seen.expected, &seen.nodes)
                })
                .await;
                let Ok(Some((state, blocked))) = step else {
                    continue;
                };
                if blocked != last_blocked {
                    if let Some(b) = &blocked {
                        tracing::info!(reason = %b, "encryption rollout: waiting");
                    }
                    last_blocked = blocked;
                }
                let value = match serde_json::to_vec(&state) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                // Unchanged: written again every 30 s only (the key may have gone with a lease).
                if published.as_ref() == Some(&value) && !ticks.is_multiple_of(30) {
                    continue;
                }
                match keys.put(key.clone(), value.clone()).await {
                    Ok(()) => published = Some(value),
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the encryption rollout state failed; retrying")
                    }
                }
            }
        }))
    }
}
