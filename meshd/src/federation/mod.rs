//! Multi-cluster federation (Cluster Mesh).
//!
//! - [`config`]: refuses remotes whose name or cluster ID clashes or whose identity layout
//!   differs; detects PodCIDRs overlapping between clusters.
//! - [`election`]: etcd lease-based election of one meshd per cluster and remote.
//! - [`mirror`]: the elected meshd reflects the remote cluster (read-only) into the local
//!   `mirror/<remote>/` prefix, with the `synced` marker and a `status` key (stale while the
//!   remote is unreachable; the mirrored state is kept).
//! - [`trust`]: what each remote may claim, and the checks of its records against it (a
//!   refused record is skipped, logged and listed in the status).
//! - [`view`]: node agents' merged view of the local cluster and the mirrors, from the local
//!   etcd only; remote entries are not garbage-collected before the remote's `synced` marker.

pub mod config;
pub mod election;
pub mod mirror;
pub mod trust;
pub mod view;

pub use config::{
    CidrOverlap, ClusterInfo, FederationConfigError, RemoteCluster, admit, check_remotes,
};
pub use mirror::{
    MAX_PUBLISHED_REFUSALS, MAX_REFUSAL_LEN, MirrorConfig, MirrorController, MirrorOp, MirrorRole,
    MirrorState, MirrorStatus, MirrorStatusValue, SyncedValue, bounded,
};
pub use trust::{Refusal, RemoteClaims, Trust};
pub use view::{MergedState, MergedView, ViewChange, ViewKey};
