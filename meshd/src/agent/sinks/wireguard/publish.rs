//! Keeps the node record's `wireguard_public_key` equal to the key on the device: written at
//! once after a rotation (the propagation time is what the peers' traffic waits for, see
//! [`super::rotation`]), retried while etcd refuses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Inner;
use crate::agent::state::Shared;
use crate::nodes::NodeRegistration;

/// The key the record should carry, and where to report the key written.
#[derive(Debug)]
pub struct KeyPublication {
    want: watch::Receiver<String>,
    inner: Arc<Inner>,
}

impl KeyPublication {
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        Self {
            want: inner.key_want.subscribe(),
            inner: inner.clone(),
        }
    }

    /// Until `stop`: writes every new key into the node record (same lease).
    pub async fn run(
        mut self,
        shared: &Shared,
        reg: &NodeRegistration,
        retry: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let want = self.want.borrow_and_update().clone();
            loop {
                if reg.record().wireguard_public_key.as_deref() == Some(want.as_str()) {
                    self.inner.key_published.send_replace(Some(want.clone()));
                    break;
                }
                match reg
                    .modify(|r| r.wireguard_public_key = Some(want.clone()))
                    .await
                {
                    Ok(r) => {
                        tracing::info!(public_key = %want, "WireGuard public key published in the node record");
                        shared.set_record(Some(r));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the WireGuard public key failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
            }
            let closed = tokio::select! {
                changed = self.want.changed() => changed.is_err(),
                _ = stop.wait_for(|s| *s) => return,
            };
            if closed {
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
        }
    }
}
