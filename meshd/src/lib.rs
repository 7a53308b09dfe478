//! Per-node agent and cluster state: etcd kvstore, IPAM, identities, federation.
//!
//! For now: [`schema`], the versioned etcd key layout every component shares.

pub mod schema;
