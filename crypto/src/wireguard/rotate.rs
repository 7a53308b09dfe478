//! The device's own key and port: set at start, repaired on drift, replaced on rotation.
//!
//! Rotation order: the new key is stored first (atomically), then put on the device, then its
//! public key is returned for the caller to publish in the node record (meshd's job). Peers
//! pick it up when their reconcilers see the new record: the old peer is removed and the new
//! one added with persistent keepalive, which makes them handshake at once. Until then the
//! peers' traffic to this node still arrives on the old sessions (the device keeps them for
//! receiving) and this node's traffic to them waits in the daemon's staging queue (128 packets
//! per peer). Switching before publishing is deliberate: see `docs/encryption.md`.

use std::path::PathBuf;

use super::{DeviceSettings, PeerChange, WgError, WireGuardBackend};
use crate::keys::{PrivateKey, PublicKey};
use crate::store::{KeyStore, StoreError};

/// Why a rotation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("key rotation: could not store a new key ({0}); the old key stays in use")]
    Store(#[from] StoreError),
    #[error(
        "key rotation: new key {new} is stored in {path} but the device did not take it: {source}; \
         `ensure_device` with the stored key retries (it also runs at start)"
    )]
    Apply {
        new: PublicKey,
        path: PathBuf,
        /// Names the device.
        source: Box<WgError>,
    },
}

/// Makes the device use `key` and `listen_port`; changes only what differs. Returns true if
/// something had to change (first start, or drift such as a restarted daemon).
pub fn ensure_device(
    backend: &dyn WireGuardBackend,
    key: &PrivateKey,
    listen_port: u16,
) -> Result<bool, WgError> {
    let dev = backend.device()?;
    let want_key = dev.public_key != Some(key.public_key());
    let want_port = dev.listen_port != listen_port;
    if !want_key && !want_port {
        return Ok(false);
    }
    backend.configure(&DeviceSettings {
        private_key: want_key.then_some(key),
        listen_port: want_port.then_some(listen_port),
        fwmark: None,
    })?;
    Ok(true)
}

/// Generates a new key, stores it, applies it to the device and returns its public key (to
/// publish). On a device error the new key is already stored: see [`RotateError::Apply`].
pub fn rotate_key(
    store: &mut KeyStore,
    backend: &dyn WireGuardBackend,
) -> Result<PublicKey, RotateError> {
    let new = store.rotate()?;
    backend
        .configure(&DeviceSettings {
            private_key: Some(store.private_key()),
            ..Default::default()
        })
        .map_err(|source| RotateError::Apply {
            new,
            path: store.path().to_owned(),
            source: Box::new(source),
        })?;
    // Best effort: a failed kick only risks crossing handshakes, not the rotation.
    if let Err(e) = initiate_now(backend) {
        tracing::warn!(device = backend.device_name(), error = %e, "could not kick the peers' handshakes");
    }
    tracing::info!(device = backend.device_name(), public_key = %new, "WireGuard key rotated");
    Ok(new)
}

/// Makes the device send a handshake initiation to every peer now, before the new public key
/// is published: the peers reject it (they do not know the key yet) and the device does not
/// initiate again for REKEY_TIMEOUT (5 s), so once they have the key only they initiate.
/// Otherwise our first initiation, sent with our next packet, can cross theirs: each side
/// answers the other's and rejects the answer to its own, and traffic stops for 5 s.
/// Turning persistent keepalive on sends a keepalive at once (wireguard-go and the kernel).
fn initiate_now(backend: &dyn WireGuardBackend) -> Result<(), WgError> {
    let peers = backend.device()?.peers;
    let set = |pick: &dyn Fn(u16) -> Option<u16>| -> Vec<PeerChange> {
        peers
            .values()
            .filter_map(|p| {
                pick(p.config.persistent_keepalive).map(|k| PeerChange::Update {
                    public_key: p.config.public_key,
                    endpoint: None,
                    allowed_ips: None,
                    persistent_keepalive: Some(k),
                })
            })
            .collect()
    };
    backend.apply(&set(&|_| Some(0)))?;
    backend.apply(&set(&|k| Some(if k > 0 { k } else { KICK_KEEPALIVE })))?;
    backend.apply(&set(&|k| (k == 0).then_some(0)))
}

/// Keepalive briefly set on peers that have none, only to send one keepalive.
const KICK_KEEPALIVE: u16 = 25;
