//! What `ironctl encryption status` shows for one node.

use std::time::{SystemTime, UNIX_EPOCH};

use super::filter::PlaintextCounters;
use super::{EncryptionMode, PeerPath};

/// One node's encryption status. Times are Unix seconds; nothing here is secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncryptionStatus {
    pub node: String,
    pub mode: EncryptionMode,
    /// `userspace-uapi` or `kernel-netlink`.
    pub backend: String,
    pub device: String,
    /// Base64; published in the node record unless the mode is off.
    pub public_key: String,
    /// Seconds since the key was generated or rotated (None if unknown).
    pub key_age_seconds: Option<u64>,
    /// Peers on the device.
    pub peers_configured: usize,
    /// Other nodes in the mesh (each should end up with a peer).
    pub peers_expected: usize,
    /// Peers with a handshake fresher than 180 s.
    pub peers_handshaked: usize,
    /// The most recent handshake with any peer.
    pub last_handshake_unix: Option<u64>,
    /// Remote PodCIDRs routed through the tunnel.
    pub tunnel_prefixes: usize,
    /// Plaintext pod packets counted (opportunistic) or dropped (strict); None when off.
    pub plaintext: Option<PlaintextCounters>,
    /// True when every other node is tunnelled and no plaintext pod packet was counted.
    pub ready_for_strict: bool,
    pub peers: Vec<PeerStatus>,
    /// Nodes whose records were rejected, with the reason.
    pub rejected: Vec<String>,
}

/// One remote node as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub node: String,
    pub path: PeerPath,
    pub public_key: Option<String>,
    pub last_handshake_unix: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
