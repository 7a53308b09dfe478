//! Sans-IO: which nodes get a peer, which PodCIDRs go through the tunnel, which filter applies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::EncryptionMode;
use super::filter::FilterSpec;
use crate::keys::PublicKey;
use crate::wireguard::{DeviceState, MeshNode};

/// A handshake older than this no longer proves the peer can decrypt our traffic (WireGuard's
/// Reject-After-Time, 180 s; persistent keepalive re-keys every 120 s while the peer is up).
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

/// How one remote node's pod traffic leaves this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerPath {
    /// Through WireGuard.
    Tunnel,
    /// In clear: the node publishes no usable key (it is `off`, or its record was rejected).
    PlainNoKey,
    /// In clear: a peer is configured but no fresh handshake proved the other side has ours
    /// yet (opportunistic only).
    PlainAwaitingHandshake,
    /// Dropped: strict mode and the node has no usable key.
    Blocked,
    /// In clear although the tunnel is up: this node is draining on its way to off (the
    /// peer stays, so traffic still arriving through the tunnel is decrypted).
    PlainDraining,
}

/// Draining (opportunistic on its way to off): every tunnelled peer's traffic goes in clear,
/// peers stay. Once every node drains, none sends through the tunnel, so peers can go.
pub fn drain(
    (paths, _): (BTreeMap<String, PeerPath>, BTreeSet<IpNet>),
) -> (BTreeMap<String, PeerPath>, BTreeSet<IpNet>) {
    let paths = paths
        .into_iter()
        .map(|(n, p)| match p {
            PeerPath::Tunnel => (n, PeerPath::PlainDraining),
            p => (n, p),
        })
        .collect();
    (paths, BTreeSet::new())
}

/// The nodes that should get a peer in `mode`: every other node with a key, none when off.
pub fn keyed_nodes(mode: EncryptionMode, local: &str, nodes: &[MeshNode]) -> Vec<MeshNode> {
    if mode == EncryptionMode::Off {
        return Vec::new();
    }
    nodes
        .iter()
        .filter(|n| n.name != local && n.wireguard_public_key.is_some())
        .cloned()
        .collect()
}

/// The per-node path and the set of PodCIDRs to route through the device.
///
/// `peers` maps each desired peer's key to its node name (from the reconciler); `device` is
/// what the device reports. Strict tunnels every keyed peer (its traffic starts the handshake);
/// opportunistic only peers with a fresh handshake, so a peer that does not know our key yet
/// is never sent traffic it cannot decrypt. Handshakes before `not_before` (our last key
/// rotation) do not count: they were made with the old key.
pub fn paths(
    mode: EncryptionMode,
    local: &str,
    nodes: &[MeshNode],
    peers: &BTreeMap<PublicKey, String>,
    device: &DeviceState,
    now: SystemTime,
    not_before: Option<SystemTime>,
) -> (BTreeMap<String, PeerPath>, BTreeSet<IpNet>) {
    let by_name: BTreeMap<&str, &PublicKey> = peers.iter().map(|(k, n)| (n.as_str(), k)).collect();
    let mut out = BTreeMap::new();
    let mut tunnel = BTreeSet::new();
    for node in nodes.iter().filter(|n| n.name != local) {
        let key = by_name.get(node.name.as_str());
        let on_device = key.and_then(|k| device.peers.get(*k));
        let fresh = on_device.and_then(|p| p.last_handshake).is_some_and(|t| {
            now.duration_since(t).unwrap_or_default() < HANDSHAKE_FRESH
                && not_before.is_none_or(|nb| t > nb)
        });
        let path = match (mode, key.is_some(), on_device.is_some(), fresh) {
            (EncryptionMode::Off, ..) => PeerPath::PlainNoKey,
            (EncryptionMode::Strict, false, ..) => PeerPath::Blocked,
            (EncryptionMode::Strict, true, true, _) => PeerPath::Tunnel,
            (EncryptionMode::Strict, true, false, _) => PeerPath::Blocked,
            (EncryptionMode::Opportunistic, false, ..) => PeerPath::PlainNoKey,
            (EncryptionMode::Opportunistic, true, true, true) => PeerPath::Tunnel,
            (EncryptionMode::Opportunistic, true, _, _) => PeerPath::PlainAwaitingHandshake,
        };
        if path == PeerPath::Tunnel {
            tunnel.extend(node.pod_cidrs.iter().map(IpNet::trunc));
        }
        out.insert(node.name.clone(), path);
    }
    (out, tunnel)
}

/// Routes that stay while the peers are reconciled, even if the device does not have the
/// node's (new) key yet: in strict mode, every node with a desired peer. A re-keyed node's
/// peer is replaced by the reconcile that follows; dropping its route meanwhile would make
/// the strict filter drop its traffic for that moment. Opportunistic falls back to clear
/// instead (its traffic waits for a handshake with the new key), so nothing is held there.
pub fn held_through_reconcile(
    mode: EncryptionMode,
    nodes: &[MeshNode],
    peers: &BTreeMap<PublicKey, String>,
) -> BTreeSet<IpNet> {
    if mode != EncryptionMode::Strict {
        return BTreeSet::new();
    }
    let named: BTreeSet<&str> = peers.values().map(String::as_str).collect();
    nodes
        .iter()
        .filter(|n| named.contains(n.name.as_str()))
        .flat_map(|n| n.pod_cidrs.iter().map(IpNet::trunc))
        .collect()
}

/// The filter for `mode`: none when off, counting when opportunistic, dropping when strict.
pub fn filter(
    mode: EncryptionMode,
    local: &str,
    nodes: &[MeshNode],
    tunnel_if: &str,
) -> Option<FilterSpec> {
    if mode == EncryptionMode::Off {
        return None;
    }
    let mut local_pods = BTreeSet::new();
    let mut remote_pods = BTreeSet::new();
    for n in nodes {
        let set = if n.name == local {
            &mut local_pods
        } else {
            &mut remote_pods
        };
        set.extend(n.pod_cidrs.iter().map(IpNet::trunc));
    }
    Some(FilterSpec {
        enforce: mode == EncryptionMode::Strict,
        tunnel_if: tunnel_if.into(),
        local_pods: local_pods.into_iter().collect(),
        remote_pods: remote_pods.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::keys::PrivateKey;
    use crate::wireguard::{PeerConfig, PeerState};

    fn node(i: u8, key: Option<PublicKey>) -> MeshNode {
        MeshNode {
            name: format!("n{i}"),
            wireguard_public_key: key.map(|k| k.to_string()),
            ipv4: Some([192, 0, 2, i].into()),
            ipv6: None,
            pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
        }
    }

    fn on_device(dev: &mut DeviceState, key: PublicKey, handshake: Option<SystemTime>) {
        dev.peers.insert(
            key,
            PeerState {
                config: PeerConfig {
                    public_key: key,
                    endpoint: None,
                    allowed_ips: Default::default(),
                    persistent_keepalive: 25,
                },
                last_handshake: handshake,
                rx_bytes: 0,
                tx_bytes: 0,
            },
        );
    }

    /// n2 handshaked, n3 configured but silent, n4 off (no key), n5 keyed but not yet on the
    /// device: only n2's PodCIDR is tunnelled in opportunistic; strict tunnels what is on the
    /// device and blocks the rest.
    #[test]
    fn opportunistic_waits_for_a_handshake_strict_does_not() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (k2, k3, k5) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let nodes = [
            node(1, None),
            node(2, Some(k2)),
            node(3, Some(k3)),
            node(4, None),
            node(5, Some(k5)),
        ];
        let peers: BTreeMap<_, _> =
            [(k2, "n2".into()), (k3, "n3".into()), (k5, "n5".into())].into();
        let mut dev = DeviceState::default();
        on_device(&mut dev, k2, Some(now - Duration::from_secs(5)));
        on_device(&mut dev, k3, None);

        let (p, t) = paths(
            EncryptionMode::Opportunistic,
            "n1",
            &nodes,
            &peers,
            &dev,
            now,
            None,
        );
        assert_eq!(
            p.values().copied().collect::<Vec<_>>(),
            [
                PeerPath::Tunnel,
                PeerPath::PlainAwaitingHandshake,
                PeerPath::PlainNoKey,
                PeerPath::PlainAwaitingHandshake
            ]
        );
        assert_eq!(t, ["10.244.2.0/24".parse().unwrap()].into());

        let (p, t) = paths(
            EncryptionMode::Strict,
            "n1",
            &nodes,
            &peers,
            &dev,
            now,
            None,
        );
        assert_eq!(p["n3"], PeerPath::Tunnel);
        assert_eq!(p["n4"], PeerPath::Blocked);
        assert_eq!(p["n5"], PeerPath::Blocked);
        assert_eq!(t.len(), 2);

        // A stale handshake (peer gone for > 180 s) sends opportunistic traffic back in clear.
        on_device(&mut dev, k2, Some(now - HANDSHAKE_FRESH));
        let (p, t) = paths(
            EncryptionMode::Opportunistic,
            "n1",
            &nodes,
            &peers,
            &dev,
            now,
            None,
        );
        assert_eq!(p["n2"], PeerPath::PlainAwaitingHandshake);
        assert!(t.is_empty());

        let (p, t) = paths(EncryptionMode::Off, "n1", &nodes, &peers, &dev, now, None);
        assert!(p.values().all(|&x| x == PeerPath::PlainNoKey) && t.is_empty());

        // After our own key rotation, only handshakes made since count.
        on_device(&mut dev, k2, Some(now - Duration::from_secs(5)));
        let rotated = Some(now - Duration::from_secs(2));
        let (p, _) = paths(
            EncryptionMode::Opportunistic,
            "n1",
            &nodes,
            &peers,
            &dev,
            now,
            rotated,
        );
        assert_eq!(p["n2"], PeerPath::PlainAwaitingHandshake);
        let (p, _) = paths(
            EncryptionMode::Strict,
            "n1",
            &nodes,
            &peers,
            &dev,
            now,
            rotated,
        );
        assert_eq!(p["n2"], PeerPath::Tunnel);
    }

    /// Strict holds the routes of nodes that keep a peer (n2 re-keyed); a node without a
    /// desired peer (n3, no key) and every node in opportunistic mode are not held.
    #[test]
    fn strict_holds_routes_of_peers_through_the_reconcile() {
        let k2b = PrivateKey::generate().public_key();
        let nodes = [node(1, None), node(2, Some(k2b)), node(3, None)];
        let peers: BTreeMap<_, _> = [(k2b, "n2".into())].into();
        let held = held_through_reconcile(EncryptionMode::Strict, &nodes, &peers);
        assert_eq!(held, ["10.244.2.0/24".parse().unwrap()].into());
        for mode in [EncryptionMode::Opportunistic, EncryptionMode::Off] {
            assert!(held_through_reconcile(mode, &nodes, &peers).is_empty());
        }
    }

    #[test]
    fn keyed_nodes_and_filter_follow_the_mode() {
        let k = PrivateKey::generate().public_key();
        let nodes = [node(1, Some(k)), node(2, Some(k)), node(3, None)];
        assert!(keyed_nodes(EncryptionMode::Off, "n1", &nodes).is_empty());
        let names: Vec<_> = keyed_nodes(EncryptionMode::Strict, "n1", &nodes)
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["n2"]);

        assert_eq!(filter(EncryptionMode::Off, "n1", &nodes, "wg0"), None);
        let f = filter(EncryptionMode::Opportunistic, "n1", &nodes, "wg0").unwrap();
        assert!(!f.enforce);
        assert_eq!(f.local_pods, ["10.244.1.0/24".parse().unwrap()]);
        assert_eq!(
            f.remote_pods.len(),
            2,
            "keyless nodes' pods are remote pods too"
        );
        assert!(
            filter(EncryptionMode::Strict, "n1", &nodes, "wg0")
                .unwrap()
                .enforce
        );
    }
}
