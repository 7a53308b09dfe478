//! The cluster rollout's gates, sans-IO: which mode one node runs for the cluster's desired
//! mode, given what every node of its cluster published, and what holds the rollout back.
//!
//! Every node publishes a [`NodeRollout`] (its mode, whether it is ready for strict, its peers
//! ready/expected). From those and the desired mode, [`next_mode`] decides this node's mode:
//!
//! | desired | this node moves to | only when |
//! |---|---|---|
//! | `opportunistic` | `opportunistic` | always (from off: publishes its key; from strict: accepts plaintext again) |
//! | `strict` | `opportunistic` first (from off) | always |
//! | `strict` | `strict` | every node of the cluster published `ready_for_strict` (every peer tunnelled after a fresh handshake, no plaintext counted), or is strict already |
//! | `off` | `opportunistic` first (from strict) | always |
//! | `off` | `opportunistic`, draining | no node of the cluster is strict any more (a strict node drops plaintext) |
//! | `off` | `off` | this node drained, and every node that published drains or is off |
//!
//! Draining ([`super::NodeEncryption::set_draining`]) sends every peer's traffic in clear but
//! keeps the peers, so what other nodes still tunnel to this one is decrypted; once every node
//! drains, nothing is in the tunnel and removing peers loses nothing. So the step to strict
//! waits for the last node to be ready and names it; going back passes through opportunistic
//! and draining on every node before any node goes off. A node that joins mid-rollout
//! starts in opportunistic when the cluster is strict (it has no handshakes yet) and follows.
//! A node that stopped publishing (no record) blocks strict: it cannot be shown ready.

use super::EncryptionMode;

/// What one node publishes about its encryption for the rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRollout {
    pub node: String,
    /// The mode the node runs now.
    pub mode: EncryptionMode,
    /// Every peer in the tunnel after a fresh handshake and no plaintext pod packet counted.
    pub ready_for_strict: bool,
    /// Peers in the tunnel.
    pub peers_ready: usize,
    /// Other nodes it must talk to.
    pub peers_expected: usize,
    /// Why the node is not ready (peers not tunnelled, plaintext counted); empty when ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_ready: String,
    /// Opportunistic on its way to off: sends in clear, keeps its peers.
    #[serde(default)]
    pub draining: bool,
}

/// The mode a node should run now, and what keeps it from the desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub mode: EncryptionMode,
    /// Drain (only with `opportunistic`): clear out, peers kept.
    pub drain: bool,
    /// Why `mode` is not the desired mode yet (names the node holding it back).
    pub blocked: Option<String>,
}

/// Why `n` is not ready for strict, naming it.
fn not_ready(n: &NodeRollout) -> String {
    let detail = if n.not_ready.is_empty() {
        format!("{}/{} peers ready", n.peers_ready, n.peers_expected)
    } else {
        n.not_ready.clone()
    };
    format!("node {} is not ready for strict ({detail})", n.node)
}

/// This node's (`local`) next mode for the cluster's `desired` mode. `nodes` is what every node
/// of the cluster published, this one included (a missing node blocks strict: list it in
/// `expected` by name). `current` is the mode the node runs, `draining` whether it drains.
pub fn next_mode(
    desired: EncryptionMode,
    current: EncryptionMode,
    draining: bool,
    local: &str,
    expected: &[String],
    nodes: &[NodeRollout],
) -> Gate {
    let find = |name: &str| nodes.iter().find(|n| n.node == name);
    let open = |mode| Gate {
        mode,
        drain: false,
        blocked: None,
    };
    let wait = |mode, drain, why: String| Gate {
        mode,
        drain,
        blocked: Some(why),
    };
    match desired {
        EncryptionMode::Opportunistic => open(EncryptionMode::Opportunistic),
        EncryptionMode::Strict if current == EncryptionMode::Strict => open(current),
        EncryptionMode::Strict => {
            let blocker = expected.iter().find_map(|name| match find(name) {
                None => Some(format!("node {name} has published no encryption state")),
                Some(n) if n.mode == EncryptionMode::Strict => None,
                // This node's own readiness is read now, not from what it published.
                Some(n) if n.node == local && current == EncryptionMode::Off => {
                    Some(format!("node {} is off", n.node))
                }
                Some(n) if !n.ready_for_strict => Some(not_ready(n)),
                Some(_) => None,
            });
            match blocker {
                None if current == EncryptionMode::Opportunistic => open(EncryptionMode::Strict),
                None => wait(
                    EncryptionMode::Opportunistic,
                    false,
                    format!("node {local} is off; strict comes after opportunistic"),
                ),
                Some(b) => wait(EncryptionMode::Opportunistic, false, b),
            }
        }
        EncryptionMode::Off if current == EncryptionMode::Off => open(current),
        EncryptionMode::Off => {
            let others = || nodes.iter().filter(|n| n.node != local);
            let strict = others().find(|n| n.mode == EncryptionMode::Strict);
            // Nodes that published nothing send nothing: only published ones are waited for.
            let tunnelling = others().find(|n| n.mode != EncryptionMode::Off && !n.draining);
            match (current, strict, tunnelling) {
                (EncryptionMode::Strict, ..) => wait(
                    EncryptionMode::Opportunistic,
                    false,
                    format!("node {local} leaves strict first; off comes after opportunistic"),
                ),
                (_, Some(s), _) => wait(
                    current,
                    false,
                    format!("node {} is still strict (it would drop plaintext)", s.node),
                ),
                (_, None, Some(t)) => wait(
                    EncryptionMode::Opportunistic,
                    true,
                    format!(
                        "node {} still tunnels to its peers; off once every node drains",
                        t.node
                    ),
                ),
                (_, None, None) if draining => open(EncryptionMode::Off),
                // This node has not drained yet: drain first, off at a later step.
                (_, None, None) => wait(
                    EncryptionMode::Opportunistic,
                    true,
                    format!("node {local} drains first; off once every node drains"),
                ),
            }
        }
    }
}

/// The cluster's rollout as `ironctl encryption rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutStatus {
    pub desired: EncryptionMode,
    /// Every expected node runs the desired mode.
    pub complete: bool,
    /// The first reason the rollout is not complete, naming a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<String>,
    pub nodes: Vec<NodeRollout>,
    /// Expected nodes that published nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Sums up the rollout: which nodes are not at `desired` yet and why.
pub fn status(
    desired: EncryptionMode,
    expected: &[String],
    nodes: &[NodeRollout],
) -> RolloutStatus {
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !nodes.iter().any(|n| &n.node == *e))
        .cloned()
        .collect();
    let behind = nodes.iter().find(|n| n.mode != desired);
    let blocking = if let Some(m) = missing.first() {
        Some(format!("node {m} has published no encryption state"))
    } else if let Some(b) = behind {
        // The node's own gate, as it sees the cluster now.
        let gate = next_mode(desired, b.mode, b.draining, &b.node, expected, nodes);
        Some(gate.blocked.unwrap_or_else(|| {
            format!(
                "node {} runs {} and moves to {} at its next step",
                b.node, b.mode, gate.mode
            )
        }))
    } else {
        None
    };
    RolloutStatus {
        desired,
        complete: blocking.is_none(),
        blocking,
        nodes: nodes.to_vec(),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EncryptionMode::{Off, Opportunistic, Strict};

    fn n(name: &str, mode: EncryptionMode, ready: bool) -> NodeRollout {
        NodeRollout {
            node: name.into(),
            mode,
            ready_for_strict: ready,
            peers_ready: if ready { 2 } else { 1 },
            peers_expected: 2,
            not_ready: String::new(),
            draining: false,
        }
    }

    fn names() -> Vec<String> {
        ["n1", "n2", "n3"].map(String::from).to_vec()
    }

    #[test]
    fn opportunistic_is_always_open() {
        for current in [Off, Opportunistic, Strict] {
            let g = next_mode(Opportunistic, current, false, "n1", &names(), &[]);
            assert_eq!(
                g,
                Gate {
                    mode: Opportunistic,
                    drain: false,
                    blocked: None
                }
            );
        }
    }

    /// Strict waits until every node is ready and names the one that is not; from off a node
    /// goes to opportunistic first.
    #[test]
    fn strict_waits_for_every_node_and_names_the_blocker() {
        let mut nodes = vec![
            n("n1", Opportunistic, true),
            n("n2", Opportunistic, false),
            n("n3", Opportunistic, true),
        ];
        let g = next_mode(Strict, Opportunistic, false, "n1", &names(), &nodes);
        assert_eq!(g.mode, Opportunistic);
        assert_eq!(
            g.blocked.as_deref(),
            Some("node n2 is not ready for strict (1/2 peers ready)")
        );
        nodes[1].not_ready = "peer n3 awaits a handshake".into();
        let g = next_mode(Strict, Opportunistic, false, "n1", &names(), &nodes);
        assert_eq!(
            g.blocked.as_deref(),
            Some("node n2 is not ready for strict (peer n3 awaits a handshake)")
        );

        nodes[1] = n("n2", Opportunistic, true);
        let g = next_mode(Strict, Opportunistic, false, "n1", &names(), &nodes);
        assert_eq!(
            g,
            Gate {
                mode: Strict,
                drain: false,
                blocked: None
            }
        );
        // A node that published nothing blocks.
        let g = next_mode(Strict, Opportunistic, false, "n1", &names(), &nodes[..2]);
        assert_eq!(
            g.blocked.as_deref(),
            Some("node n3 has published no encryption state")
        );
        // Nodes already strict count as ready; a strict node stays strict.
        nodes[2] = n("n3", Strict, false);
        assert_eq!(
            next_mode(Strict, Opportunistic, false, "n1", &names(), &nodes).mode,
            Strict
        );
        nodes[1] = n("n2", Opportunistic, false);
        assert_eq!(
            next_mode(Strict, Strict, false, "n3", &names(), &nodes).mode,
            Strict
        );

        // From off: opportunistic first, even when everyone else is ready.
        let all_ready = vec![
            n("n1", Off, true),
            n("n2", Opportunistic, true),
            n("n3", Opportunistic, true),
        ];
        let g = next_mode(Strict, Off, false, "n1", &names(), &all_ready);
        assert_eq!(g.mode, Opportunistic);
        assert!(g.blocked.unwrap().contains("n1 is off"));
    }

    /// Back to off: strict nodes go to opportunistic first; no node drains while another is
    /// still strict; a node goes off only after it drained and every other published node
    /// drains or is off (a node that published nothing does not hold it).
    #[test]
    fn off_passes_through_opportunistic_and_draining() {
        let nodes = vec![
            n("n1", Strict, true),
            n("n2", Strict, true),
            n("n3", Opportunistic, true),
        ];
        let g = next_mode(Off, Strict, false, "n1", &names(), &nodes);
        assert_eq!((g.mode, g.drain), (Opportunistic, false));
        let g = next_mode(Off, Opportunistic, false, "n3", &names(), &nodes);
        assert_eq!((g.mode, g.drain), (Opportunistic, false));
        assert_eq!(
            g.blocked.as_deref(),
            Some("node n1 is still strict (it would drop plaintext)")
        );

        let mut nodes = vec![
            n("n1", Opportunistic, true),
            n("n2", Off, false),
            n("n3", Opportunistic, true),
        ];
        // n3 drains first, even though everyone else is off or opportunistic.
        let g = next_mode(Off, Opportunistic, false, "n3", &names(), &nodes);
        assert_eq!((g.mode, g.drain), (Opportunistic, true));
        // Draining, but n1 still tunnels: n3 stays draining and names n1.
        let g = next_mode(Off, Opportunistic, true, "n3", &names(), &nodes);
        assert_eq!((g.mode, g.drain), (Opportunistic, true));
        assert_eq!(
            g.blocked.as_deref(),
            Some("node n1 still tunnels to its peers; off once every node drains")
        );
        nodes[0].draining = true;
        let g = next_mode(Off, Opportunistic, true, "n3", &names(), &nodes);
        assert_eq!(
            g,
            Gate {
                mode: Off,
                drain: false,
                blocked: None
            }
        );
        assert_eq!(next_mode(Off, Off, false, "n2", &names(), &nodes).mode, Off);
        // Without n1's state at all, n3 does not wait for it.
        let g = next_mode(Off, Opportunistic, true, "n3", &names(), &nodes[1..]);
        assert_eq!(g.mode, Off);
        // Back to opportunistic mid-drain: the drain ends.
        let g = next_mode(Opportunistic, Opportunistic, true, "n3", &names(), &nodes);
        assert_eq!((g.mode, g.drain), (Opportunistic, false));
    }

    #[test]
    fn status_names_what_holds_the_rollout_back() {
        let nodes = vec![
            n("n1", Opportunistic, true),
            n("n2", Opportunistic, false),
            n("n3", Opportunistic, true),
        ];
        let s = status(Strict, &names(), &nodes);
        assert!(!s.complete);
        assert_eq!(
            s.blocking.as_deref(),
            Some("node n2 is not ready for strict (1/2 peers ready)")
        );
        let s = status(Strict, &names(), &nodes[..2]);
        assert_eq!(s.missing, ["n3"]);
        assert_eq!(
            s.blocking.as_deref(),
            Some("node n3 has published no encryption state")
        );
        let s = status(Opportunistic, &names(), &nodes);
        assert!(s.complete && s.blocking.is_none());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["desired"], "opportunistic");
        assert_eq!(json["nodes"][1]["peers_ready"], 1);
        // Everyone ready but still opportunistic: they move at their next step.
        let ready: Vec<_> = names().iter().map(|m| n(m, Opportunistic, true)).collect();
        let s = status(Strict, &names(), &ready);
        assert_eq!(
            s.blocking.as_deref(),
            Some("node n1 runs opportunistic and moves to strict at its next step")
        );
    }
}
