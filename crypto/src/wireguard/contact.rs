//! First contact: which side of a new pair of nodes starts the WireGuard handshake.
//!
//! Two nodes that add each other at about the same moment both send a handshake initiation;
//! each consumes the other's (which discards its own pending one), answers it, and rejects
//! the answer to its own, no longer pending, initiation ("Received invalid response message"
//! in wireguard-go). Neither can send data until a retransmit 5 s (REKEY_TIMEOUT) plus jitter
//! later breaks the tie (see [`super::keepalive`]).
//!
//! So the pair decides, deterministically and without talking: the node whose public key is
//! lower (bytewise) is the **initiator** and programs the peer whole at once (endpoint and
//! keepalive: the keepalive makes it initiate immediately). The other, the **responder**,
//! programs the peer without an endpoint and without keepalive, so it cannot initiate; it
//! answers the initiator's initiation (WireGuard learns the endpoint from it). The hold ends
//! at the first handshake, or after [`FIRST_CONTACT_HOLD`]: then the responder programs the
//! peer whole and, if no handshake happened (the initiator is dead, not yet programmed, or
//! its initiation was dropped because it came before this node had the peer), initiates
//! itself. A new pair therefore passes traffic within about the hold of both being
//! programmed, whichever was first.
//!
//! Initiating at the end of the hold takes a fresh peer: traffic to the held peer made the
//! device try an initiation already (it failed, no endpoint), and WireGuard then sends none for
//! REKEY_TIMEOUT (5 s), whatever the configuration says. So a hold that ends without a
//! handshake *restarts* the peer (removed and added whole, [`ContactPlan::restart`]); nothing
//! passed through it yet, so nothing is lost.
//!
//! Only a *first* contact is held: a key the device does not have yet and whose prefixes no
//! other peer holds. A re-keyed node (its new key takes over the prefixes of its old peer,
//! [`super::diff`]) is not held: the rotating node initiated already and stays silent for
//! REKEY_TIMEOUT ([`super::rotate_key`]), so the other side must initiate at once. A peer
//! already on the device when this tracker first sees it (after a restart) is not held
//! either.
//!
//! Sans-IO: [`FirstContact::hold`] takes the desired peers, the device's state and `now`, and
//! returns when the next hold ends, so the caller steps again then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::{PeerConfig, PeerState};
use crate::keys::PublicKey;

/// How long a responder withholds its endpoint from a new peer before initiating itself.
/// Bounds the time to first contact when the initiator's first initiation was lost (it was
/// programmed first, or is down); short against WireGuard's 5 s retransmit.
pub const FIRST_CONTACT_HOLD: Duration = Duration::from_millis(300);

/// Which side of a pair initiates the first handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRole {
    /// Programs the peer whole at once and initiates.
    Initiator,
    /// Waits up to the hold for the initiator's handshake.
    Responder,
}

/// The lower public key (bytewise) initiates. Both sides compute the same answer.
pub fn role(local: &PublicKey, peer: &PublicKey) -> ContactRole {
    if local.as_bytes() < peer.as_bytes() {
        ContactRole::Initiator
    } else {
        ContactRole::Responder
    }
}

/// What [`FirstContact::hold`] decided besides rewriting the held peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPlan {
    /// When the earliest hold ends: step again then.
    pub wake_at: Option<SystemTime>,
    /// Peers whose hold just ended without a handshake: remove them, then add them whole, so
    /// the device initiates at once.
    pub restart: BTreeSet<PublicKey>,
}

/// Remembers when each peer key was first wanted, to hold new peers for a bounded time.
#[derive(Debug, Clone)]
pub struct FirstContact {
    hold: Duration,
    /// Per desired key: when the hold started, or `None` when the key is not held (the local
    /// node initiates, the key was on the device already, or it re-keys a known node).
    first_seen: BTreeMap<PublicKey, Option<SystemTime>>,
}

impl Default for FirstContact {
    fn default() -> Self {
        Self::new(FIRST_CONTACT_HOLD)
    }
}

impl FirstContact {
    /// `hold` zero turns holding off (both sides initiate at once, as WireGuard does alone).
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            first_seen: BTreeMap::new(),
        }
    }

    pub fn hold_duration(&self) -> Duration {
        self.hold
    }

    /// Rewrites the peers this node must not initiate to yet (no endpoint, no keepalive) and
    /// says when the earliest such hold ends and which peers to restart. `local` is the
    /// device's public key (no hold without one); `actual` the device's peers.
    pub fn hold(
        &mut self,
        local: Option<&PublicKey>,
        desired: &mut BTreeMap<PublicKey, PeerConfig>,
        actual: &BTreeMap<PublicKey, PeerState>,
        now: SystemTime,
    ) -> ContactPlan {
        let mut plan = ContactPlan::default();
        self.first_seen.retain(|k, _| desired.contains_key(k));
        let (Some(local), false) = (local, self.hold.is_zero()) else {
            self.first_seen.clear();
            return plan;
        };
        // Prefixes other peers hold: a new key taking one over is a re-keyed node.
        let held_by: BTreeMap<&IpNet, &PublicKey> = actual
            .iter()
            .flat_map(|(k, s)| s.config.allowed_ips.iter().map(move |p| (p, k)))
            .collect();
        for (key, want) in desired.iter_mut() {
            let started = *self.first_seen.entry(*key).or_insert_with(|| {
                let first = !actual.contains_key(key)
                    && !want
                        .allowed_ips
                        .iter()
                        .any(|p| held_by.get(p).is_some_and(|owner| *owner != key));
                (first && role(local, key) == ContactRole::Responder).then_some(now)
            });
            let Some(started) = started else { continue };
            let on_device = actual.get(key);
            let handshaked = on_device.is_some_and(|s| s.last_handshake.is_some());
            let ends = started + self.hold;
            if handshaked || now >= ends {
                self.first_seen.insert(*key, None);
                if !handshaked && on_device.is_some() {
                    plan.restart.insert(*key);
                }
                continue;
            }
            want.endpoint = None;
            want.persistent_keepalive = 0;
            plan.wake_at = Some(plan.wake_at.map_or(ends, |n| n.min(ends)));
        }
        plan
    }

    /// The keys held now (for status and tests).
    pub fn held(&self) -> BTreeSet<PublicKey> {
        self.first_seen
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::keys::PrivateKey;

    fn cfg(key: PublicKey, net: &str) -> PeerConfig {
        PeerConfig {
            public_key: key,
            endpoint: Some("192.0.2.9:51820".parse().unwrap()),
            allowed_ips: [net.parse().unwrap()].into(),
            persistent_keepalive: 25,
        }
    }

    fn state(config: PeerConfig, handshake: Option<SystemTime>) -> PeerState {
        PeerState {
            config,
            last_handshake: handshake,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// Two keys ordered: (lower, higher).
    fn ordered() -> (PublicKey, PublicKey) {
        let (a, b) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        if a.as_bytes() < b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(ms)
    }

    #[test]
    fn the_lower_key_initiates_and_both_sides_agree() {
        let (lo, hi) = ordered();
        assert_eq!(role(&lo, &hi), ContactRole::Initiator);
        assert_eq!(role(&hi, &lo), ContactRole::Responder);
    }

    /// The initiator programs the peer whole at once; the responder withholds endpoint and
    /// keepalive until the hold ends, then programs it whole (and so initiates itself).
    #[test]
    fn the_responder_holds_for_a_bounded_time_then_initiates() {
        let (lo, hi) = ordered();
        let none = BTreeMap::new();

        let mut initiator = FirstContact::default();
        let mut want = BTreeMap::from([(hi, cfg(hi, "10.244.2.0/24"))]);
        assert_eq!(
            initiator.hold(Some(&lo), &mut want, &none, t(0)).wake_at,
            None
        );
        assert_eq!(want[&hi], cfg(hi, "10.244.2.0/24"), "initiator: untouched");

        let mut responder = FirstContact::default();
        let whole = cfg(lo, "10.244.1.0/24");
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        let plan = responder.hold(Some(&hi), &mut want, &none, t(0));
        assert_eq!(plan.wake_at, Some(t(0) + FIRST_CONTACT_HOLD));
        assert!(plan.restart.is_empty());
        assert_eq!(want[&lo].endpoint, None);
        assert_eq!(want[&lo].persistent_keepalive, 0);
        assert_eq!(want[&lo].allowed_ips, whole.allowed_ips, "routes as usual");
        assert_eq!(responder.held(), [lo].into());

        // Still held just before the end (the peer is on the device now, no handshake).
        let on_dev = BTreeMap::from([(lo, state(want[&lo].clone(), None))]);
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert_eq!(
            responder
                .hold(Some(&hi), &mut want, &on_dev, t(299))
                .wake_at,
            Some(t(300))
        );
        assert_eq!(want[&lo].endpoint, None);

        // The hold ends without a handshake: programmed whole and restarted once (the device
        // may be rate-limiting initiations after a failed one), never held again.
        for (ms, restart) in [(300, vec![lo]), (301, vec![]), (10_000, vec![])] {
            let mut want = BTreeMap::from([(lo, whole.clone())]);
            let plan = responder.hold(Some(&hi), &mut want, &on_dev, t(ms));
            assert_eq!(plan.wake_at, None);
            assert_eq!(
                plan.restart.into_iter().collect::<Vec<_>>(),
                restart,
                "{ms}"
            );
            assert_eq!(want[&lo], whole);
        }
        assert!(responder.held().is_empty());
    }

    /// The initiator's handshake arrives during the hold: the hold ends at once.
    #[test]
    fn a_handshake_ends_the_hold() {
        let (lo, hi) = ordered();
        let whole = cfg(lo, "10.244.1.0/24");
        let mut c = FirstContact::default();
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert!(
            c.hold(Some(&hi), &mut want, &BTreeMap::new(), t(0))
                .wake_at
                .is_some()
        );
        let mut learned = want[&lo].clone();
        learned.endpoint = whole.endpoint;
        let dev = BTreeMap::from([(lo, state(learned, Some(t(40))))]);
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert_eq!(
            c.hold(Some(&hi), &mut want, &dev, t(50)),
            ContactPlan::default()
        );
        assert_eq!(want[&lo], whole);
    }

    /// Not first contacts: a peer on the device already (restart), a new key that takes over
    /// another peer's prefixes (a re-keyed node), no local key, hold zero.
    #[test]
    fn known_peers_rekeyed_nodes_and_unkeyed_devices_are_not_held() {
        let (lo, hi) = ordered();
        let whole = cfg(lo, "10.244.1.0/24");

        let mut c = FirstContact::default();
        let dev = BTreeMap::from([(lo, state(whole.clone(), None))]);
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert_eq!(c.hold(Some(&hi), &mut want, &dev, t(0)).wake_at, None);
        assert_eq!(want[&lo], whole);

        // The node behind `old` re-keyed to `lo`: same prefix, new key.
        let old = PrivateKey::generate().public_key();
        let dev = BTreeMap::from([(old, state(cfg(old, "10.244.1.0/24"), Some(t(0))))]);
        let mut c = FirstContact::default();
        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert_eq!(c.hold(Some(&hi), &mut want, &dev, t(0)).wake_at, None);
        assert_eq!(want[&lo], whole);

        let mut want = BTreeMap::from([(lo, whole.clone())]);
        assert_eq!(
            FirstContact::default()
                .hold(None, &mut want, &BTreeMap::new(), t(0))
                .wake_at,
            None
        );
        assert_eq!(
            FirstContact::new(Duration::ZERO)
                .hold(Some(&hi), &mut want, &BTreeMap::new(), t(0))
                .wake_at,
            None
        );
        assert_eq!(want[&lo], whole);
    }

    /// Several new peers: each held from its own first sight; the wake-up is the earliest end;
    /// a peer that leaves and comes back later is a first contact again.
    #[test]
    fn holds_are_per_peer_and_forgotten_when_the_peer_goes() {
        // The local key is the highest of three: it responds to both others.
        let mut keys: Vec<PublicKey> = (0..3)
            .map(|_| PrivateKey::generate().public_key())
            .collect();
        keys.sort_by_key(|k| *k.as_bytes());
        let (a, b, local) = (keys[0], keys[1], keys[2]);
        let none = BTreeMap::new();
        let mut c = FirstContact::default();
        let mut want = BTreeMap::from([(a, cfg(a, "10.244.1.0/24"))]);
        assert_eq!(
            c.hold(Some(&local), &mut want, &none, t(0)).wake_at,
            Some(t(300))
        );
        let mut want = BTreeMap::from([(a, cfg(a, "10.244.1.0/24")), (b, cfg(b, "10.244.2.0/24"))]);
        assert_eq!(
            c.hold(Some(&local), &mut want, &none, t(100)).wake_at,
            Some(t(300))
        );
        let mut want = BTreeMap::from([(a, cfg(a, "10.244.1.0/24")), (b, cfg(b, "10.244.2.0/24"))]);
        assert_eq!(
            c.hold(Some(&local), &mut want, &none, t(350)).wake_at,
            Some(t(400))
        );
        assert_eq!(want[&a].persistent_keepalive, 25);
        assert_eq!(want[&b].persistent_keepalive, 0);
        // a goes, comes back: held again from its return.
        let mut want = BTreeMap::from([(b, cfg(b, "10.244.2.0/24"))]);
        c.hold(Some(&local), &mut want, &none, t(500));
        let mut want = BTreeMap::from([(a, cfg(a, "10.244.1.0/24")), (b, cfg(b, "10.244.2.0/24"))]);
        assert_eq!(
            c.hold(Some(&local), &mut want, &none, t(600)).wake_at,
            Some(t(900))
        );
        assert_eq!(c.held(), [a].into());
    }
}
