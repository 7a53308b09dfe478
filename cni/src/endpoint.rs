//! Endpoint records: what ADD attached, with its labels, for meshd to register.
//!
//! The plugin does not talk to meshd: it writes one JSON file per attachment under
//! `<dataDir>/<network>/endpoints/` and removes it on DEL. meshd reads them
//! (`mesh.cni_endpoints_dir`, meshd/src/agent/endpoints/): it resolves the labels (pod name
//! left out, cluster added) to an identity, publishes the endpoint records, programs the
//! endpoints map and attaches the pod programs to the host veth; a removed file undoes that.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Env, NetConf};
use crate::error::{CniError, Result};

/// Label keys for the pod's namespace and name (from `CNI_ARGS`).
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub host_ifname: String,
    pub addresses: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's named ports (`runtimeConfig.ports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<common::ContainerPort>,
}

/// Labels of the attachment: the runtime's `runtimeConfig.labels` plus the pod's namespace
/// and name from `CNI_ARGS` (those two win on a clash: they are what the runtime vouches for).
pub fn labels(env: &Env, conf: &NetConf) -> BTreeMap<String, String> {
    let mut out = conf.runtime_config.labels.clone();
    if let Some(ns) = &env.args.pod_namespace {
        out.insert(LABEL_POD_NAMESPACE.into(), ns.clone());
    }
    if let Some(name) = &env.args.pod_name {
        out.insert(LABEL_POD_NAME.into(), name.clone());
    }
    out
}

/// `<network dir>/endpoints/<container id>-<ifname>.json`.
pub fn path(network_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    network_dir
        .join("endpoints")
        .join(format!("{container_id}-{ifname}.json"))
}

/// Writes the record atomically (temp file + rename).
pub fn write(path: &Path, ep: &Endpoint) -> Result<()> {
    let dir = path.parent().expect("endpoint path has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| CniError::io(format!("creating {}", dir.display()), e))?;
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(ep).expect("endpoint serializes");
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CniError::io(format!("writing {}", path.display()), e))
}

pub fn read(path: &Path) -> Result<Option<Endpoint>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| CniError::io(format!("reading {}", path.display()), e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("reading {}", path.display()), e)),
    }
}

/// Removes the record; a missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::io(format!("removing {}", path.display()), e)),
    }
}

/// The host-side veth name: `im` + 11 hex digits of a hash of container ID and ifname
/// (13 bytes, within IFNAMSIZ-1 = 15). Stable across processes and releases (FNV-1a).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("im{:011x}", h & 0xfff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_short_stable_and_distinct() {
        let a = host_ifname("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("im"));
        assert_eq!(a, host_ifname("0123456789abcdef0123456789abcdef", "eth0"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdef", "net1"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdee", "eth0"));
        // Pinned: the name must not change between releases (DEL after an upgrade).
        assert_eq!(host_ifname("c1", "eth0"), host_ifname("c1", "eth0"));
    }

    #[test]
    fn record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "c1", "eth0");
        let ep = Endpoint {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/p".into(),
            host_ifname: host_ifname("c1", "eth0"),
            addresses: vec!["10.244.1.2".parse().unwrap()],
            labels: [("app".to_string(), "web".to_string())].into(),
            pod_uid: None,
            ports: vec![common::ContainerPort {
                name: "http".into(),
                container_port: 8080,
                protocol: common::PortProtocol::Tcp,
            }],
        };
        write(&p, &ep).unwrap();
        assert_eq!(read(&p).unwrap(), Some(ep));
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read(&p).unwrap(), None);
    }
}
