//! Rollout modes: moving a live cluster from plaintext to strict encryption without loss.
//!
//! | mode | key published | peers | pod traffic to another node | plaintext from other nodes' pods |
//! |---|---|---|---|---|
//! | `off` | no | none | main table (clear) | accepted |
//! | `opportunistic` | yes | every node with a key | tunnel once a handshake with that peer completed, else clear | accepted, counted |
//! | `strict` | yes | every node with a key | tunnel; never clear | dropped, counted |
//!
//! Zero loss comes from three orderings:
//! 1. A node takes a peer (it can decrypt) before anyone sends to it through the tunnel: a
//!    node only routes a peer's PodCIDRs into the tunnel after a handshake with that peer
//!    completed, which proves the peer holds our key too ([`plan::paths`]).
//! 2. Every node is `opportunistic` before any is `strict`, and a node goes strict only when
//!    every node of its cluster published `ready_for_strict` (every keyed peer tunnelled and
//!    no plaintext pod packet counted by the audit rules since the last check); going back,
//!    every node leaves strict before any goes off ([`gate::next_mode`], which decides a
//!    node's mode from the cluster's desired one).
//! 3. Within one step, tightening goes peers → routes → filter and loosening goes
//!    filter → routes → peers ([`NodeEncryption::step`]).
//!
//! Enforcement is an nftables table in the node's netns naming the pod CIDRs ([`filter`]), and
//! the tunnel routes live in an ironmesh table behind one `ip rule` ([`routes`]); both are
//! plain to inspect with `nft list table inet ironmesh_crypto`, `ip rule`, `ip route show
//! table 202`.

use std::fmt;
use std::str::FromStr;

mod agent;
pub mod filter;
pub mod gate;
pub mod plan;
pub mod routes;
mod status;

pub use agent::{NodeEncryption, RolloutError, StepReport};
pub use filter::{FilterSpec, NftFilter, PlaintextCounters, PlaintextFilter};
pub use gate::{Gate, NodeRollout, RolloutStatus, next_mode};
pub use plan::PeerPath;
pub use routes::{NetlinkRoutes, RouteError, TunnelRoutes};
pub use status::{EncryptionStatus, PeerStatus};

/// The cluster's (or, during a rollout, one node's) encryption mode.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    #[default]
    Off,
    Opportunistic,
    Strict,
}

impl EncryptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionMode::Off => "off",
            EncryptionMode::Opportunistic => "opportunistic",
            EncryptionMode::Strict => "strict",
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encryption mode {0:?}; use off, opportunistic or strict")]
pub struct ModeError(pub String);

impl FromStr for EncryptionMode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Self, ModeError> {
        match s {
            "off" => Ok(EncryptionMode::Off),
            "opportunistic" => Ok(EncryptionMode::Opportunistic),
            "strict" => Ok(EncryptionMode::Strict),
            _ => Err(ModeError(s.chars().take(40).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_print_and_serialize() {
        for m in [
            EncryptionMode::Off,
            EncryptionMode::Opportunistic,
            EncryptionMode::Strict,
        ] {
            assert_eq!(m.as_str().parse::<EncryptionMode>(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(
            "Strict".parse::<EncryptionMode>().unwrap_err().to_string(),
            "unknown encryption mode \"Strict\"; use off, opportunistic or strict"
        );
        assert!(EncryptionMode::Off < EncryptionMode::Strict);
    }
}
