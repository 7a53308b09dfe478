//! Stories of one node's agent against in-memory device, routes and filter that log every
//! write, so the order of tightening and loosening is checked, not just the end state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::*;
use crate::keys::{PrivateKey, PublicKey};
use crate::rollout::filter::{FilterError, FilterSpec, PlaintextCounters, PlaintextFilter};
use crate::rollout::routes::{RouteError, TunnelRoutes};
use crate::wireguard::{
    DeviceSettings, DeviceState, MeshNode, PeerChange, PeerPolicy, Reconciler, WgError,
    WireGuardBackend,
};

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Debug)]
struct Device {
    log: Log,
    state: Mutex<DeviceState>,
}

impl WireGuardBackend for Device {
    fn device_name(&self) -> &str {
        "wg0"
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn device(&self) -> Result<DeviceState, WgError> {
        Ok(self.state.lock().unwrap().clone())
    }
    fn configure(&self, _: &DeviceSettings<'_>) -> Result<(), WgError> {
        Ok(())
    }
    fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError> {
        let mut st = self.state.lock().unwrap();
        for c in changes {
            let what = match c {
                PeerChange::Add(_) => "peer add",
                PeerChange::Update { .. } => "peer update",
                PeerChange::Remove(_) => "peer remove",
            };
            self.log.lock().unwrap().push(what.into());
            crate::wireguard::fake::apply(&mut st, c);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Routes {
    log: Log,
    table: Mutex<BTreeMap<IpNet, bool>>,
    rules: Mutex<bool>,
}

impl TunnelRoutes for Routes {
    fn current(&self) -> Result<BTreeMap<IpNet, bool>, RouteError> {
        Ok(self.table.lock().unwrap().clone())
    }
    fn put(&self, prefix: IpNet) -> Result<(), RouteError> {
        self.log.lock().unwrap().push(format!("route put {prefix}"));
        self.table.lock().unwrap().insert(prefix, true);
        Ok(())
    }
    fn delete(&self, prefix: IpNet) -> Result<(), RouteError> {
        self.log.lock().unwrap().push(format!("route del {prefix}"));
        self.table.lock().unwrap().remove(&prefix);
        Ok(())
    }
    fn rules(&self, on: bool) -> Result<(), RouteError> {
        let mut rules = self.rules.lock().unwrap();
        if *rules != on {
            *rules = on;
            let entry = format!("rules {}", if on { "on" } else { "off" });
            self.log.lock().unwrap().push(entry);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Filter {
    log: Log,
    spec: Mutex<Option<FilterSpec>>,
    counters: Mutex<PlaintextCounters>,
}

impl PlaintextFilter for Filter {
    fn apply(&self, spec: Option<&FilterSpec>) -> Result<bool, FilterError> {
        let mut cur = self.spec.lock().unwrap();
        if cur.as_ref() == spec {
            return Ok(false);
        }
        let what = match spec {
            None => "none",
            Some(s) if s.enforce => "drop",
            Some(_) => "count",
        };
        self.log.lock().unwrap().push(format!("filter {what}"));
        *cur = spec.cloned();
        Ok(true)
    }
    fn counters(&self) -> Result<Option<PlaintextCounters>, FilterError> {
        let on = self.spec.lock().unwrap().is_some();
        Ok(on.then(|| *self.counters.lock().unwrap()))
    }
}

type Agent = NodeEncryption<Device, Routes, Filter>;

fn agent() -> (Agent, Log) {
    let log = Log::default();
    let policy = PeerPolicy {
        listen_port: 51820,
        node_encryption: false,
        persistent_keepalive: 25,
    };
    let device = Device {
        log: log.clone(),
        state: Mutex::default(),
    };
    let a = NodeEncryption::new(
        Reconciler::new(device, "n1", policy),
        Routes {
            log: log.clone(),
            table: Mutex::default(),
            rules: Mutex::default(),
        },
        Filter {
            log: log.clone(),
            spec: Mutex::default(),
            counters: Mutex::default(),
        },
    );
    (a, log)
}

fn node(i: u8, key: Option<PublicKey>) -> MeshNode {
    MeshNode {
        name: format!("n{i}"),
        wireguard_public_key: key.map(|k| k.to_string()),
        ipv4: Some([192, 0, 2, i].into()),
        ipv6: None,
        pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
    }
}

fn handshake(a: &Agent, key: &PublicKey, at: SystemTime) {
    let dev = a.reconciler().backend();
    dev.state
        .lock()
        .unwrap()
        .peers
        .get_mut(key)
        .unwrap()
        .last_handshake = Some(at);
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// off → opportunistic (traffic waits for the handshake) → strict (routes before the drop
/// rules) → off (filter first, then routes, then peers).
#[test]
fn tightening_and_loosening_run_in_safe_order() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let k2 = PrivateKey::generate().public_key();
    let nodes = [node(1, None), node(2, Some(k2))];
    let (mut a, log) = agent();

    assert!(
        a.step(&nodes, now).unwrap().is_quiet(),
        "off with nothing to remove"
    );
    assert!(take(&log).is_empty());
    assert!(!a.publishes_key());

    a.set_mode(EncryptionMode::Opportunistic);
    let r = a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["filter count", "rules on", "peer add"]);
    assert_eq!(r.awaiting_handshake(), 1, "no route before a handshake");
    assert!(a.publishes_key());
    handshake(&a, &k2, now - Duration::from_secs(1));
    let r = a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["route put 10.244.2.0/24"]);
    assert_eq!(r.paths["n2"], PeerPath::Tunnel);
    assert!(a.step(&nodes, now).unwrap().is_quiet(), "idempotent");

    a.set_mode(EncryptionMode::Strict);
    a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["filter drop"]);

    // n2 leaves the mesh while strict: its route goes before its peer.
    let r = a.step(&nodes[..1], now).unwrap();
    assert_eq!(
        take(&log),
        ["route del 10.244.2.0/24", "peer remove", "filter drop"]
    );
    assert!(r.paths.is_empty());
    a.step(&nodes, now).unwrap();
    assert_eq!(
        take(&log),
        ["peer add", "route put 10.244.2.0/24", "filter drop"]
    );

    a.set_mode(EncryptionMode::Off);
    a.step(&nodes, now).unwrap();
    assert_eq!(
        take(&log),
        [
            "filter none",
            "route del 10.244.2.0/24",
            "peer remove",
            "rules off"
        ]
    );
    assert!(!a.publishes_key());
}

/// Strict tunnels a keyed peer without waiting for a handshake (traffic starts it) and has
/// no path at all for a node without a key; opportunistic falls back to clear when the
/// handshake goes stale.
#[test]
fn strict_blocks_keyless_nodes_and_stale_handshakes_fall_back() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let k2 = PrivateKey::generate().public_key();
    let nodes = [node(1, None), node(2, Some(k2)), node(3, None)];
    let (mut a, log) = agent();
    a.set_mode(EncryptionMode::Strict);
    a.step(&nodes, now).unwrap();
    let r = a.step(&nodes, now).unwrap();
    assert_eq!(r.paths["n2"], PeerPath::Tunnel);
    assert_eq!(r.paths["n3"], PeerPath::Blocked);
    assert!(take(&log).contains(&"route put 10.244.2.0/24".to_string()));

    a.set_mode(EncryptionMode::Opportunistic);
    handshake(&a, &k2, now - Duration::from_secs(200));
    let r = a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["filter count", "route del 10.244.2.0/24"]);
    assert_eq!(r.paths["n2"], PeerPath::PlainAwaitingHandshake);
    assert_eq!(r.paths["n3"], PeerPath::PlainNoKey);
}

/// `ready_for_strict` needs every peer in the tunnel and no plaintext counted since the
/// previous status read.
#[test]
fn ready_for_strict_needs_tunnels_and_quiet_counters() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let k2 = PrivateKey::generate().public_key();
    let nodes = [node(1, None), node(2, Some(k2))];
    let (mut a, _log) = agent();
    a.set_mode(EncryptionMode::Opportunistic);
    a.step(&nodes, now).unwrap();
    let st = a
        .status(&nodes, Some(Duration::from_secs(90)), now)
        .unwrap();
    assert!(!st.ready_for_strict);
    assert_eq!(
        (st.peers_configured, st.peers_expected, st.peers_handshaked),
        (1, 1, 0)
    );
    assert_eq!(st.key_age_seconds, Some(90));

    handshake(&a, &k2, now - Duration::from_secs(3));
    a.step(&nodes, now).unwrap();
    // The first read above is the earlier counter sample; nothing was counted since.
    let st = a.status(&nodes, None, now).unwrap();
    assert!(st.ready_for_strict, "{st:?}");
    assert_eq!(st.last_handshake_unix, Some(999_997));
    assert_eq!(st.tunnel_prefixes, 1);

    // Plaintext shows up (a peer still sends in clear): not ready.
    a.filter.counters.lock().unwrap().packets_in = 4;
    let st = a.status(&nodes, None, now).unwrap();
    assert!(!st.ready_for_strict);
    assert_eq!(st.plaintext.unwrap().packets_in, 4);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["mode"], "opportunistic");
    assert_eq!(json["peers"][0]["path"], "tunnel");
}

/// n2 rotates its key (its record now names k2b). Strict: n2's route stays while the old
/// peer is replaced by the new one (a gap would let the drop rule eat n2's traffic);
/// opportunistic: the route leaves first and comes back after a handshake with k2b.
#[test]
fn a_peer_rotating_its_key_keeps_its_route_in_strict() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (k2, k2b) = (
        PrivateKey::generate().public_key(),
        PrivateKey::generate().public_key(),
    );
    let before = [node(1, None), node(2, Some(k2))];
    let after = [node(1, None), node(2, Some(k2b))];
    let (mut a, log) = agent();
    a.set_mode(EncryptionMode::Strict);
    a.step(&before, now).unwrap();
    take(&log);

    let r = a.step(&after, now).unwrap();
    // Make before break: k2b added bare, then given n2's prefixes, then k2 removed.
    assert_eq!(take(&log), ["peer add", "peer update", "peer remove"]);
    assert_eq!(r.paths["n2"], PeerPath::Tunnel);
    assert!(r.routes_removed.is_empty() && r.routes_added.is_empty());

    // Rotated once more and gone from the list at once: no peer to hold the route for.
    let r = a.step(&before[..1], now).unwrap();
    assert_eq!(
        take(&log),
        ["route del 10.244.2.0/24", "peer remove", "filter drop"]
    );
    assert!(r.paths.is_empty());

    a.set_mode(EncryptionMode::Opportunistic);
    a.step(&before, now).unwrap();
    handshake(&a, &k2, now - Duration::from_secs(1));
    a.step(&before, now).unwrap();
    take(&log);
    let r = a.step(&after, now).unwrap();
    assert_eq!(
        take(&log),
        [
            "route del 10.244.2.0/24",
            "peer add",
            "peer update",
            "peer remove"
        ]
    );
    assert_eq!(r.paths["n2"], PeerPath::PlainAwaitingHandshake);
    handshake(&a, &k2b, now);
    a.step(&after, now).unwrap();
    assert_eq!(take(&log), ["route put 10.244.2.0/24"]);
}

/// Draining on the way to off: the tunnel route goes, the peer stays (traffic still arriving
/// through the tunnel is decrypted), the node is not ready for strict; ending the drain brings
/// the route back, and off then removes the peer.
#[test]
fn draining_sends_in_clear_and_keeps_the_peer() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let k2 = PrivateKey::generate().public_key();
    let nodes = [node(1, None), node(2, Some(k2))];
    let (mut a, log) = agent();
    a.set_mode(EncryptionMode::Opportunistic);
    a.step(&nodes, now).unwrap();
    handshake(&a, &k2, now - Duration::from_secs(1));
    a.step(&nodes, now).unwrap();
    take(&log);

    a.set_draining(true);
    assert!(a.draining());
    let r = a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["route del 10.244.2.0/24"]);
    assert_eq!(r.paths["n2"], PeerPath::PlainDraining);
    assert!(
        a.reconciler()
            .backend()
            .device()
            .unwrap()
            .peers
            .contains_key(&k2)
    );
    a.status(&nodes, None, now).unwrap();
    assert!(!a.status(&nodes, None, now).unwrap().ready_for_strict);

    a.set_draining(false);
    a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["route put 10.244.2.0/24"]);

    a.set_draining(true);
    a.step(&nodes, now).unwrap();
    take(&log);
    a.set_mode(EncryptionMode::Off);
    assert!(!a.draining(), "draining is an opportunistic state");
    a.step(&nodes, now).unwrap();
    assert_eq!(take(&log), ["filter none", "peer remove", "rules off"]);
}
