//! `<dataDir>/<network>/pod-cidrs.json` and `pool-requests/`: how meshd tells the CNI plugin
//! the node's PodCIDR blocks and pools, and how the plugin asks for another block. Both sides
//! use these definitions, so the format has one source.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The file meshd writes into the network's directory.
pub const FILE_NAME: &str = "pod-cidrs.json";
/// The directory (beside it) the plugin drops its requests into.
pub const REQUESTS_DIR: &str = "pool-requests";

/// The file: every block the node holds, and the pools pods take addresses from (the first
/// whose `namespaces` lists the pod's namespace, or has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodCidrsFile {
    /// Every block the node holds (an address in any of them is this node's pod).
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<IpNet>,
    /// Absent (an older meshd): one pool of every block.
    #[serde(default)]
    pub pools: Vec<FilePool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub name: String,
    /// Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// The families the pool gives addresses of (`ipv4`, `ipv6`), each also when the node has
    /// no block of it yet (the plugin then asks for one).
    pub families: Vec<String>,
    /// The node's blocks of this pool.
    pub cidrs: Vec<IpNet>,
}

/// The name of a request (and, with `.failed`, of meshd's refusal): `<pool>.<ipv4|ipv6>`.
pub fn request_name(pool: &str, family: &str) -> String {
    format!("{pool}.{family}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_as_written_and_refuses_unknown_fields() {
        let f = PodCidrsFile {
            pod_cidrs: vec!["10.1.3.0/24".parse().unwrap()],
            pools: vec![FilePool {
                name: "mesh.pod_cidr_pools".into(),
                namespaces: None,
                families: vec!["ipv4".into()],
                cidrs: vec!["10.1.3.0/24".parse().unwrap()],
            }],
        };
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("namespaces"), "{json}");
        assert_eq!(serde_json::from_str::<PodCidrsFile>(&json).unwrap(), f);
        let old: PodCidrsFile = serde_json::from_str(r#"{"podCIDRs":["10.1.3.0/24"]}"#).unwrap();
        assert!(old.pools.is_empty());
        assert!(serde_json::from_str::<PodCidrsFile>(r#"{"podCIDRs":[],"x":1}"#).is_err());
        assert_eq!(request_name("tenants", "ipv6"), "tenants.ipv6");
    }
}
