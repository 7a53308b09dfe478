//! Per-node agent and cluster state: etcd kvstore, IPAM, identities, federation.
