//! The changes that turn the device's peers into the desired ones, in stages that never leave a
//! prefix without a running peer (make before break):
//!
//! 1. **make**: new peers and updates. A new peer that takes over a prefix another peer holds
//!    (a node's key rotated: same prefixes, new key) is added with no allowed IPs and no
//!    keepalive, so it is running before any traffic can reach it;
//! 2. **handover**: those peers get their allowed IPs and keepalive in one change. WireGuard
//!    moves a prefix between peers atomically (wg(8): an allowed IP belongs to one peer), and
//!    turning the keepalive on makes the new peer handshake at once;
//! 3. **break**: peers no node claims are removed, once nothing routes to them.
//!
//! Removing the old peer first would drop every packet routed to its prefixes until the new
//! peer is created and started (wireguard-go waits for the old peer's routines to stop in
//! between): a lost ping per key rotation on a loaded machine.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{PeerChange, PeerConfig, PeerState};
use crate::keys::PublicKey;

/// The stages of a diff: apply each fully before the next. Empty stages are left out.
pub type Stages = Vec<Vec<PeerChange>>;

/// The changes that turn `actual` into `desired`, staged as the module explains; only the
/// fields that differ are updated.
pub fn diff(
    desired: &BTreeMap<PublicKey, PeerConfig>,
    actual: &BTreeMap<PublicKey, PeerState>,
) -> Stages {
    let held: BTreeMap<IpNet, PublicKey> = actual
        .iter()
        .flat_map(|(k, s)| s.config.allowed_ips.iter().map(move |p| (*p, *k)))
        .collect();
    let mut make = Vec::new();
    let mut handover = Vec::new();
    for (key, want) in desired {
        let Some(have) = actual.get(key).map(|s| &s.config) else {
            let takes_over = want
                .allowed_ips
                .iter()
                .any(|p| held.get(p).is_some_and(|owner| owner != key));
            if takes_over {
                make.push(PeerChange::Add(PeerConfig {
                    allowed_ips: BTreeSet::new(),
                    persistent_keepalive: 0,
                    ..want.clone()
                }));
                handover.push(PeerChange::Update {
                    public_key: *key,
                    endpoint: None,
                    allowed_ips: Some(want.allowed_ips.clone()),
                    persistent_keepalive: (want.persistent_keepalive > 0)
                        .then_some(want.persistent_keepalive),
                });
            } else {
                make.push(PeerChange::Add(want.clone()));
            }
            continue;
        };
        let endpoint = (want.endpoint.is_some() && want.endpoint != have.endpoint)
            .then_some(want.endpoint)
            .flatten();
        let allowed_ips = (want.allowed_ips != have.allowed_ips).then(|| want.allowed_ips.clone());
        let persistent_keepalive = (want.persistent_keepalive != have.persistent_keepalive)
            .then_some(want.persistent_keepalive);
        if endpoint.is_some() || allowed_ips.is_some() || persistent_keepalive.is_some() {
            make.push(PeerChange::Update {
                public_key: *key,
                endpoint,
                allowed_ips,
                persistent_keepalive,
            });
        }
    }
    let remove: Vec<PeerChange> = actual
        .keys()
        .filter(|k| !desired.contains_key(k))
        .map(|k| PeerChange::Remove(*k))
        .collect();
    [make, handover, remove]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
}
