//! The encryption rollout as cluster state: `encryption/desired` (the cluster's desired mode,
//! written by `ironctl encryption rollout --to MODE` through meshd's API) and
//! `encryption/nodes/<node>` (what each node runs, [`crypto::rollout::NodeRollout`], under the
//! node's lease). Every node's meshd reads both from the merged view and moves its own mode
//! through `crypto::rollout::gate` without a restart (`agent::rollout`).

use common::ClusterName;
use crypto::rollout::{EncryptionMode, NodeRollout, RolloutStatus};

use crate::federation::MergedState;
use crate::schema::Resource;

/// The value of `encryption/desired`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DesiredValue {
    pub mode: EncryptionMode,
    /// When it was set (Unix milliseconds) and through which node's meshd.
    pub set_at_unix_ms: u64,
    pub set_by: String,
}

/// The rollout as the view holds it for `cluster`: the desired mode (None: never set, every
/// node runs its configured mode), the node names (from the node records) and what each
/// published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub desired: Option<DesiredValue>,
    pub expected: Vec<String>,
    pub nodes: Vec<NodeRollout>,
}

impl Published {
    pub fn read(st: &MergedState, cluster: &ClusterName) -> Self {
        let mut out = Published::default();
        for (c, r, v) in st.entries() {
            if c != cluster {
                continue;
            }
            match r {
                Resource::EncryptionDesired => out.desired = serde_json::from_slice(v).ok(),
                Resource::EncryptionNode(n) => {
                    // A node publishes only its own state: the key names the node.
                    if let Ok(state) = serde_json::from_slice::<NodeRollout>(v)
                        && state.node == n.as_str()
                    {
                        out.nodes.push(state);
                    }
                }
                Resource::Node(n) => out.expected.push(n.to_string()),
                _ => {}
            }
        }
        out.expected.sort();
        out.nodes.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// `ironctl encryption rollout status`; None when no desired mode was ever set.
    pub fn status(&self) -> Option<RolloutStatus> {
        let desired = self.desired.as_ref()?.mode;
        Some(crypto::rollout::gate::status(
            desired,
            &self.expected,
            &self.nodes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_value_round_trips_with_lowercase_modes() {
        let v = DesiredValue {
            mode: EncryptionMode::Strict,
            set_at_unix_ms: 1,
            set_by: "n1".into(),
        };
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"mode":"strict","set_at_unix_ms":1,"set_by":"n1"}"#
        );
        assert_eq!(serde_json::from_str::<DesiredValue>(&text).unwrap(), v);
        assert!(serde_json::from_str::<DesiredValue>(r#"{"mode":"Strict"}"#).is_err());
    }
}
