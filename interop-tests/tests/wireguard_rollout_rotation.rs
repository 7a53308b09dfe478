//! Key rotation in opportunistic mode under a running flow (100 pings/s each way across the
//! rotating node): zero lost pings. The rotating node first moves its traffic out of the
//! tunnel, takes the new key, and re-enters the tunnel per peer after the first handshake with
//! the new key; the other nodes do the same when they see its new record.
//!
//! Limits: userspace WireGuard (wireguard-go); records handed over directly (no etcd). Strict
//! mode has no plaintext fallback: `wireguard_rotation_strict` covers it.

mod wireguard_support;

use std::time::{Duration, Instant, SystemTime};

use crypto::rollout::{EncryptionMode, PeerPath};
use crypto::wireguard::WireGuardBackend;
use interop_tests::cmd::wait_for;
use interop_tests::*;
use wireguard_support::flows::*;
use wireguard_support::rollout::*;
use wireguard_support::*;

const PINGS: u32 = 800;

#[test]
fn wireguard_rollout_rotation_loses_nothing_in_opportunistic() -> Result<()> {
    cmd::require_binary("nft", "nftables")?;
    let lab = Lab::new("wg-rot-opp")?;
    let mut nodes = rollout_mesh(&lab, 3)?;
    for i in 0..3 {
        let records = rollout_records(&nodes);
        nodes[i].set_mode(EncryptionMode::Opportunistic, &records);
        converge(&nodes);
    }
    for i in 0..3 {
        let st = status_of(&mut nodes, i);
        assert!(
            st.peers.iter().all(|p| p.path == PeerPath::Tunnel),
            "{st:#?}"
        );
    }

    let flows = [
        quiet_ping_flow(&nodes[0].pod, &pod_ip(2), PINGS)?,
        quiet_ping_flow(&nodes[1].pod, &pod_ip(3), PINGS)?,
        quiet_ping_flow(&nodes[2].pod, &pod_ip(2), PINGS)?,
    ];
    std::thread::sleep(Duration::from_secs(1));
    let old = nodes[1].store.public_key();
    let t = Instant::now();
    let rotated_at = SystemTime::now();
    let records = rollout_records(&nodes);
    let new = nodes[1].rotate_key(&records);
    assert_ne!(old, new);
    let took = converge(&nodes);
    eprintln!(
        "n2 rotated; mesh converged in {took:?} ({:?} in all)",
        t.elapsed()
    );

    wait_for(
        "the ping flows to end",
        Duration::from_secs(30),
        Duration::from_millis(100),
        |_| Ok(flows.iter().all(|p| !p.is_running()).then_some(())),
    )?;
    for p in &flows {
        let (sent, received) = ping_result(p);
        eprintln!("{}: {sent} sent, {received} received", p.name());
        assert_eq!((sent, received), (PINGS, PINGS), "{}", p.name());
    }

    // Back in the tunnel with the new key: n1 handshaked with it after the rotation, and
    // every node routes every peer through WireGuard again.
    let dev = nodes[0].agent.reconciler().backend().device().unwrap();
    assert!(!dev.peers.contains_key(&old));
    let hs = dev.peers[&new]
        .last_handshake
        .expect("handshake with the new key");
    assert!(hs > rotated_at);
    for i in 0..3 {
        let st = status_of(&mut nodes, i);
        assert_eq!(st.tunnel_prefixes, 2, "{st:#?}");
    }
    Ok(())
}
