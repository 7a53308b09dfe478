//! Key rotation driven by meshd: on command (`RotateKey`) or by the schedule
//! (`encryption.wireguard.rotate_every`, see [`super::schedule`]).
//!
//! Order (why: `docs/encryption.md`): `NodeEncryption::rotate_key` first steps with handshakes
//! older than now not counting (opportunistic: this node's traffic leaves the tunnel; strict:
//! the routes stay), then writes the new key file (atomically, 0600; the old key is zeroized)
//! and puts the key on the device; then the new public key goes to the node record
//! ([`super::publish`]). Peers replace this node's peer when they see the record, with
//! keepalive on, so they handshake at once. Only public keys are ever logged.

use std::time::SystemTime;

use crypto::KeyStore;
use crypto::rollout::RolloutError;
use crypto::wireguard::RotateError;

use super::schedule::{self, Due};
use super::{Agent, EncryptionStatusSource, Inner};

/// A rotation that the device took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub previous: String,
    pub public_key: String,
    pub at: SystemTime,
}

/// Why no rotation happened (or only half of one).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("meshd is still loading the node records (the first etcd listing); retry in a moment")]
    Loading,
    #[error("WireGuard device {device} is not ready: {detail}")]
    NoDevice { device: String, detail: String },
    /// The store or the device refused; the message says which key is in use.
    #[error("{0}")]
    Failed(String),
}

/// When the key file was last written (created or rotated), from its mtime.
pub(super) fn key_written(store: &KeyStore) -> Option<SystemTime> {
    std::fs::metadata(store.path())
        .and_then(|m| m.modified())
        .ok()
}

impl Inner {
    /// Rotates with the agent locked (`slot` is the worker's agent).
    pub(super) fn rotate_locked(
        &self,
        slot: &mut Option<Agent>,
        why: &str,
    ) -> Result<Rotated, RotationError> {
        if !self.complete.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RotationError::Loading);
        }
        let Some(agent) = slot.as_mut() else {
            return Err(RotationError::NoDevice {
                device: self.settings.device.clone(),
                detail: self
                    .last_error
                    .lock()
                    .expect("error lock")
                    .clone()
                    .unwrap_or_else(|| "not opened yet".into()),
            });
        };
        let nodes = self.mesh();
        let mut store = self.store.lock().expect("store lock");
        let previous = store.public_key().to_string();
        let at = SystemTime::now();
        match agent.rotate_key(&mut store, &nodes, at) {
            Ok(new) => {
                let public_key = new.to_string();
                tracing::info!(%previous, public_key, why, "WireGuard key rotated; publishing it");
                self.key_want.send_replace(public_key.clone());
                Ok(Rotated {
                    previous,
                    public_key,
                    at,
                })
            }
            Err(RolloutError::Rotate(e @ RotateError::Apply { .. })) => {
                // The new key is stored, the device still has the old one: reopen (which
                // puts the stored key on the device, then publishes it) at the next step.
                drop(store);
                *slot = None;
                Err(RotationError::Failed(e.to_string()))
            }
            Err(e) => Err(RotationError::Failed(format!(
                "key rotation failed, the key {previous} stays in use: {e}"
            ))),
        }
    }

    /// Rotates if the schedule says so (worker thread, agent locked).
    pub(super) fn scheduled_rotation(&self, slot: &mut Option<Agent>) {
        let every = self.settings.rotate_every;
        let written = key_written(&self.store.lock().expect("store lock"));
        let failed = *self.schedule_failed.lock().expect("schedule lock");
        let now = SystemTime::now();
        if schedule::decide(every, written, failed, now) != Due::Now {
            return;
        }
        let every = every.map(configs::format_duration).unwrap_or_default();
        match self.rotate_locked(slot, &format!("schedule (rotate_every = {every})")) {
            Ok(_) => *self.schedule_failed.lock().expect("schedule lock") = None,
            Err(e) => {
                tracing::warn!(
                    "scheduled WireGuard key rotation failed: {e}; retrying in {}s",
                    schedule::RETRY.as_secs()
                );
                *self.schedule_failed.lock().expect("schedule lock") = Some(now);
            }
        }
    }
}

impl EncryptionStatusSource {
    /// Rotates now (blocking: the device is reached over its UAPI socket).
    pub fn rotate(&self) -> Result<Rotated, RotationError> {
        let inner = &self.0;
        let mut agent = inner.agent.lock().expect("agent lock");
        inner.rotate_locked(&mut agent, "command")
    }

    /// Follows the public key last written to the node record.
    pub fn published(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.0.key_published.subscribe()
    }

    pub fn node(&self) -> String {
        self.0.me.to_string()
    }
}
