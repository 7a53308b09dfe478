//! WireGuard's peer semantics in memory, for the tests' fake devices: an allowed IP belongs to
//! one peer (setting it on a peer takes it from any other, wg(8)); an update of a peer that is
//! gone does nothing.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{DeviceState, PeerChange, PeerState};
use crate::keys::PublicKey;

/// Applies `c` to the device state `st`.
pub(crate) fn apply(st: &mut DeviceState, c: &PeerChange) {
    match c {
        PeerChange::Add(cfg) => {
            claim(st, &cfg.public_key, &cfg.allowed_ips);
            st.peers.insert(
                cfg.public_key,
                PeerState {
                    config: cfg.clone(),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            );
        }
        PeerChange::Update {
            public_key,
            endpoint,
            allowed_ips,
            persistent_keepalive,
        } => {
            if !st.peers.contains_key(public_key) {
                return;
            }
            if let Some(ips) = allowed_ips {
                claim(st, public_key, ips);
            }
            let p = &mut st.peers.get_mut(public_key).unwrap().config;
            p.endpoint = endpoint.or(p.endpoint);
            if let Some(ips) = allowed_ips {
                p.allowed_ips = ips.clone();
            }
            p.persistent_keepalive = persistent_keepalive.unwrap_or(p.persistent_keepalive);
        }
        PeerChange::Remove(k) => {
            st.peers.remove(k);
        }
    }
}

fn claim(st: &mut DeviceState, key: &PublicKey, ips: &BTreeSet<IpNet>) {
    for (k, p) in st.peers.iter_mut() {
        if k != key {
            p.config.allowed_ips.retain(|ip| !ips.contains(ip));
        }
    }
}
