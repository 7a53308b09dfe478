//! Per-node agent and cluster state: etcd kvstore, IPAM, identities, federation.
//!
//! - [`schema`]: the versioned etcd key layout every component shares.
//! - [`kvstore`]: the etcd client layer and the list-then-watch [`kvstore::Reflector`].
//! - [`nodes`]: node records kept alive by a lease.
//! - [`identity`]: label set → cluster-unique numeric identity, by transaction.
//! - [`ipam`]: per-node PodCIDRs carved from cluster pools, by transaction.
//! - [`federation`]: remote cluster checks, mirror election, the mirror, the merged view.
//!
//! etcd is the only replication engine: everything shared goes through its transactions,
//! leases and watches.

pub mod federation;
pub mod identity;
pub mod ipam;
pub mod kvstore;
pub mod nodes;
pub mod schema;
