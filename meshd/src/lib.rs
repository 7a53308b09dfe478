//! Per-node agent and cluster state: etcd kvstore, IPAM, identities, federation.
//!
//! - [`schema`]: the versioned etcd key layout every component shares.
//! - [`kvstore`]: the etcd client layer and the list-then-watch [`kvstore::Reflector`].
//! - [`nodes`]: node records kept alive by a lease.
//! - [`identity`]: label set → cluster-unique numeric identity, by transaction.
//! - [`ipam`]: per-node PodCIDRs carved from cluster pools, by transaction.
//! - [`leases`]: keys on a pool of leases with a bounded number of keys each.
//! - [`endpoints`]: endpoint IP -> identity, node, tunnel endpoint, key index (the IP cache).
//! - [`services`]: services and their backends; global services merged across clusters.
//! - [`lbipam`]: LoadBalancer VIPs from VIP pools, by transaction.
//! - [`federation`]: remote cluster checks, mirror election, the mirror, the merged view.
//! - [`reconcile`]: desired-state reconcilers driven by the merged view, for crypto, datapath
//!   and bgpd.
//! - [`gc`]: identity garbage collection and PodCIDR release after a grace period.
//!
//! etcd is the only replication engine: everything shared goes through its transactions,
//! leases and watches.

pub mod agent;
pub mod endpoints;
pub mod events;
pub mod federation;
pub mod gc;
pub mod health;
pub mod identity;
pub mod ipam;
pub mod kvstore;
pub mod lbipam;
pub mod leases;
pub mod nodes;
pub mod objects;
pub mod podpools;
pub mod policy;
pub mod reconcile;
pub mod records;
pub mod rollout;
pub mod schema;
pub mod services;
