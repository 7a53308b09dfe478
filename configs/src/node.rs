//! `[node]`: who this node is and where it keeps state.

use std::path::PathBuf;

use common::{ClusterName, NodeName};

use crate::error::Errors;
use crate::raw::RawNode;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ironmesh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    pub cluster: ClusterName,
    /// Keys and local state; created by the daemons if missing.
    pub state_dir: PathBuf,
}

pub(crate) fn validate(raw: RawNode, errs: &mut Errors) -> Option<Node> {
    let name = errs.check("node.name", NodeName::new(&raw.name));
    let cluster = errs.check("node.cluster", ClusterName::new(&raw.cluster));
    let state_dir = absolute_path(
        errs,
        "node.state_dir",
        raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
    );
    Some(Node {
        name: name?,
        cluster: cluster?,
        state_dir: state_dir?,
    })
}

/// Requires an absolute path, so the meaning does not depend on the cwd.
pub(crate) fn absolute_path(errs: &mut Errors, path: &str, v: &str) -> Option<PathBuf> {
    if v.starts_with('/') {
        Some(PathBuf::from(v))
    } else {
        errs.push(
            path,
            format!("{v:?} is not an absolute path; write it starting with '/'"),
        );
        None
    }
}
