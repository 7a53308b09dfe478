//! Two nodes that add each other at the same moment (both react to the same node-record event)
//! send crossing handshake initiations. With a persistent keepalive ≤ 5 s (REKEY_TIMEOUT) the
//! keepalive timers, restarted by every handshake message, make them cross again every time:
//! the `e2e_encryption` flake. ironmesh programs at least 6 s (`effective_keepalive`), so the
//! jittered retransmit breaks the tie and the pair settles within one retry.
//!
//! Each trial removes the peers and adds them on both devices at once (two threads behind a
//! barrier, UAPI requests tens of µs apart). The raw 5 s keepalive is run too and reported,
//! not asserted (it stalls in most trials here, not all).

mod wireguard_support;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crypto::wireguard::{
    PeerChange, PeerConfig, PeerPolicy, UserspaceBackend, WireGuardBackend, desired_peers,
};
use interop_tests::*;
use wireguard_support::*;

const CONFIGURED_KEEPALIVE: u16 = 5;
const TRIALS: usize = 3;
const SETTLE: Duration = Duration::from_secs(12);

/// Removes both peers, adds them on both devices at once, returns the time to a handshake on
/// both sides (None: none within `SETTLE`).
fn trial(devs: &[UserspaceBackend; 2], peers: &[PeerConfig; 2]) -> Option<Duration> {
    for (dev, other) in devs.iter().zip(peers.iter()) {
        dev.apply(&[PeerChange::Remove(other.public_key)]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let barrier = Barrier::new(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for (dev, peer) in devs.iter().zip(peers.iter()) {
            let b = &barrier;
            s.spawn(move || {
                b.wait();
                dev.apply(&[PeerChange::Add(peer.clone())]).unwrap();
            });
        }
    });
    while start.elapsed() < SETTLE {
        let done = devs.iter().zip(peers.iter()).all(|(d, p)| {
            d.device().unwrap().peers[&p.public_key]
                .last_handshake
                .is_some()
        });
        if done {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn wireguard_handshake_crossing_settles_with_ironmesh_keepalive() -> Result<()> {
    let lab = Lab::new("wg-crossing")?;
    let nodes = mesh(&lab, 2)?;
    let policy = PeerPolicy {
        persistent_keepalive: CONFIGURED_KEEPALIVE,
        ..POLICY
    };
    let recs = records(&nodes);
    let mesh_nodes: Vec<_> = recs.iter().map(mesh_node).collect();
    // n1's peer is n2 and the other way round, as the reconciler would program them.
    let peer_of = |local: &str| {
        let d = desired_peers(local, &mesh_nodes, &policy);
        d.peers.into_values().next().unwrap()
    };
    let peers = [peer_of("n1"), peer_of("n2")];
    assert_eq!(peers[0].persistent_keepalive, 6, "1-5 s are raised to 6 s");
    let devs = [
        UserspaceBackend::new(&nodes[0].dev.ifname),
        UserspaceBackend::new(&nodes[1].dev.ifname),
    ];
    // The raw configured value, for the record.
    let raw = peers.clone().map(|p| PeerConfig {
        persistent_keepalive: CONFIGURED_KEEPALIVE,
        ..p
    });
    let raw_results: Vec<_> = (0..2).map(|_| trial(&devs, &raw)).collect();
    eprintln!("keepalive {CONFIGURED_KEEPALIVE} s (raw): {raw_results:?}");

    let mut results = Vec::new();
    for _ in 0..TRIALS {
        results.push(trial(&devs, &peers));
    }
    eprintln!("keepalive 6 s (ironmesh): {results:?}");
    assert!(
        results.iter().all(|r| r.is_some_and(|t| t < SETTLE)),
        "a crossing handshake did not settle: {results:?}"
    );
    Ok(())
}
