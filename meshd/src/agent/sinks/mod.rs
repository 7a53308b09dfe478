//! The agent's reconciler sinks: meshd's desired state applied to the real components.
//!
//! | sink | component | how |
//! |---|---|---|
//! | [`bgp::BgpAdverts`] | bgpd | `AddAdverts`/`RemoveAdverts` over bgpd's API socket, resynced after every reconnect |
//! | [`wireguard::WireGuardPeers`] | crypto | `NodeEncryption` steps: WireGuard peers, tunnel routes, nftables filter |
//! | [`ipsec::IpsecPeers`] | crypto | XFRM policies and ESP SAs per peer, SPI rotation via node records |
//! | [`datapath::DatapathMaps`] | datapath | IP cache and service entries written to the maps pinned under `datapath.bpffs` |
//!
//! A component that is not configured gets a [`NullSink`].

pub mod bgp;
pub mod datapath;
pub mod ipsec;
pub mod wireguard;

use api::mesh as pb;

use crate::reconcile::{Sink, SinkError};

/// Where `EncryptionStatus` comes from: the backend this node runs.
#[derive(Debug, Clone)]
pub enum EncryptionStatusSource {
    WireGuard(wireguard::EncryptionStatusSource),
    Ipsec(ipsec::IpsecStatusSource),
}

impl EncryptionStatusSource {
    /// Blocking (WireGuard reads the device over its UAPI socket).
    pub fn status(&self) -> pb::EncryptionStatusResponse {
        match self {
            Self::WireGuard(w) => w.status(),
            Self::Ipsec(i) => i.status(),
        }
    }
}

/// Accepts everything and does nothing: the sink of a component this node does not run.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl<K, V> Sink<K, V> for NullSink {
    fn upsert(&mut self, _key: &K, _value: &V) -> Result<(), SinkError> {
        Ok(())
    }

    fn remove(&mut self, _key: &K) -> Result<(), SinkError> {
        Ok(())
    }
}
