//! Key rotation under a running flow: a node takes a new key, publishes it in its record, the
//! other nodes reconcile; pings at 100/s keep flowing, losing at most a bounded few.
//!
//! The loss window is the time between the rotating device taking the new key and the other
//! nodes' reconcile (here: milliseconds, the record is handed over directly; in a cluster it is
//! the etcd watch latency). This is the bare reconciler (no agent, routes or filter); the
//! agent loses nothing in opportunistic (`wireguard_rollout_rotation`) and strict mode
//! (`wireguard_rotation_strict`).

mod wireguard_support;

use std::time::{Duration, Instant};

use crypto::wireguard::WireGuardBackend;
use crypto::wireguard::rotate_key;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use wireguard_support::flows::*;
use wireguard_support::*;

/// Loss allowed while the new key propagates (pings at 10 ms).
const MAX_LOST: u32 = 20;

#[test]
fn wireguard_rotation_keeps_traffic_flowing() -> Result<()> {
    let lab = Lab::new("wg-rotate")?;
    let mut nodes = mesh(&lab, 3)?;
    let all = records(&nodes);
    for n in &nodes {
        n.reconcile(&all);
    }
    wait_handshakes(&nodes)?;
    assert!(ping_all_pairs(&nodes, 2).is_empty());

    // A flow p1 -> p2 at 100 pings/s for 4 s.
    let pinger = quiet_ping_flow(&nodes[0].pod, &pod_ip(2), 400)?;
    std::thread::sleep(Duration::from_millis(1000));

    let old = nodes[1].public_key();
    let t = Instant::now();
    let n2 = &mut nodes[1];
    let new = rotate_key(&mut n2.store, n2.reconciler.backend())
        .map_err(|e| LabError::Invalid(e.to_string()))?;
    n2.record.wireguard_public_key = Some(new.to_string());
    let all = records(&nodes);
    for n in &nodes {
        let report = n.reconcile(&all);
        if n.host.name() != "n2" {
            assert_eq!((report.added(), report.removed()), (1, 1), "{report:?}");
        }
    }
    eprintln!(
        "rotation published and applied on all nodes in {:?}",
        t.elapsed()
    );
    assert_ne!(old, new.to_string());

    wait_for(
        "the ping flow to end",
        Duration::from_secs(15),
        Duration::from_millis(100),
        |_| Ok((!pinger.is_running()).then_some(())),
    )?;
    let line = ping_summary(&pinger);
    let (sent, received) = ping_counts(&line);
    let lost = sent - received;
    eprintln!("rotation under a 100/s ping flow: {sent} sent, {received} received, {lost} lost");
    assert_eq!(sent, 400);
    assert!(lost <= MAX_LOST, "{line}");

    // The peers now use the new key: n1 completed a handshake with it.
    let dev = nodes[0].reconciler.backend().device().unwrap();
    let p = &dev.peers[&new];
    assert!(p.last_handshake.is_some(), "{p:?}");
    assert!(ping_all_pairs(&nodes, 2).is_empty());
    Ok(())
}
