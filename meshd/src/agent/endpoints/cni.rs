//! The CNI plugin's endpoint records (`<dataDir>/<network>/endpoints/<containerID>-<ifname>.json`,
//! written by `ironmesh-cni` on ADD, removed on DEL), read as meshd sees them.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::{ClusterName, Labels};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::LABEL_CLUSTER;

/// The pod name label: left out of identities (one identity per pod would defeat them).
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";

/// One record as the CNI plugin writes it (cni/src/endpoint.rs; unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniEndpoint {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
    pub host_ifname: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's named ports (checked like Kubernetes' container ports).
    #[serde(default)]
    pub ports: Vec<common::ContainerPort>,
}

impl CniEndpoint {
    /// The identity labels: the pod's labels without its name, plus the cluster label.
    /// `namespace/name` of the pod, when the runtime named both and they are valid names.
    pub fn pod_name(&self) -> Option<String> {
        let ns = self.labels.get(crate::objects::NAMESPACE_LABEL)?;
        let name = self.labels.get(LABEL_POD_NAME)?;
        let p = format!("{ns}/{name}");
        crate::endpoints::check_pod_name(&p).ok().map(|()| p)
    }

    pub fn identity_labels(&self, cluster: &ClusterName) -> Result<Labels, String> {
        let pairs = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != LABEL_POD_NAME && k.as_str() != LABEL_CLUSTER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain([(LABEL_CLUSTER.to_string(), cluster.to_string())]);
        Labels::from_pairs(pairs).map_err(|e| format!("labels: {e}"))
    }

    /// Every address must be in one of this node's PodCIDRs: a record naming any other
    /// address (another node's pod, a service VIP, the node itself) would have meshd publish
    /// it as this node's endpoint and steer that traffic here.
    pub fn check_pod_cidrs(&self, pod_cidrs: &[IpNet]) -> Result<(), String> {
        if pod_cidrs.is_empty() {
            return Err(
                "this node has no PodCIDR (mesh.pod_cidr_pools gave it none), so no address is one of its pods'"
                    .into(),
            );
        }
        let outside: Vec<String> = self
            .addresses
            .iter()
            .filter(|a| !pod_cidrs.iter().any(|c| c.contains(*a)))
            .map(ToString::to_string)
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let cidrs: Vec<String> = pod_cidrs.iter().map(ToString::to_string).collect();
        Err(format!(
            "addresses {} are outside this node's PodCIDRs {}; the CNI plugin's ipam.podCIDR must be one of them",
            outside.join(", "),
            cidrs.join(", ")
        ))
    }

    fn check(&self, stem: &str) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err("no addresses; a pod is found by its addresses".into());
        }
        if self.host_ifname.is_empty() || self.host_ifname.len() > 15 {
            return Err(format!(
                "hostIfname {:?} is not an interface name",
                self.host_ifname
            ));
        }
        common::port::check_container_ports(&self.ports).map_err(|e| format!("ports{e}"))?;
        let expected = format!("{}-{}", self.container_id, self.ifname);
        if stem != expected {
            return Err(format!(
                "the file is named {stem}.json but the record is {expected}; \
                 the CNI plugin names records <containerID>-<ifname>.json"
            ));
        }
        Ok(())
    }
}

/// What one read of the directory found: records by file stem, and bad files with why.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: BTreeMap<String, CniEndpoint>,
    pub bad: BTreeMap<PathBuf, String>,
}

/// Parses one record file's bytes.
pub fn parse(stem: &str, bytes: &[u8]) -> Result<CniEndpoint, String> {
    let ep: CniEndpoint =
        serde_json::from_slice(bytes).map_err(|e| format!("not a record: {e}"))?;
    ep.check(stem)?;
    Ok(ep)
}

impl Scan {
    /// Moves the records with an address outside `pod_cidrs` (this node's) to `bad`, with
    /// why: they are skipped like unreadable ones, the others stay.
    pub fn refuse_outside(&mut self, dir: &Path, pod_cidrs: &[IpNet]) {
        let refused: Vec<(String, String)> = self
            .records
            .iter()
            .filter_map(|(stem, ep)| {
                ep.check_pod_cidrs(pod_cidrs)
                    .err()
                    .map(|why| (stem.clone(), why))
            })
            .collect();
        for (stem, why) in refused {
            self.records.remove(&stem);
            self.bad.insert(dir.join(format!("{stem}.json")), why);
        }
    }
}

/// [`scan`], keeping only records whose addresses are all in this node's `pod_cidrs`; the
/// others go to [`Scan::bad`] with the addresses and the PodCIDRs named.
pub fn scan_within(dir: &Path, pod_cidrs: &[IpNet]) -> std::io::Result<Scan> {
    let mut s = scan(dir)?;
    s.refuse_outside(dir, pod_cidrs);
    Ok(s)
}

/// Reads every `*.json` in `dir` (temp files and others are not records). `Err`: the
/// directory could not be read (not: it does not exist, which means no endpoints).
pub fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let stem = stem.to_string();
        match std::fs::read(&path) {
            Ok(bytes) => match parse(&stem, &bytes) {
                Ok(ep) => {
                    out.records.insert(stem, ep);
                }
                Err(why) => {
                    out.bad.insert(path, why);
                }
            },
            // Removed between listing and reading: gone.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                out.bad.insert(path, e.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"containerID":"c1","ifname":"eth0","netns":"/var/run/netns/p",
        "hostIfname":"im0123456789a","addresses":["10.244.1.2"],
        "labels":{"app":"web","io.kubernetes.pod.namespace":"shop","io.kubernetes.pod.name":"web-0"},
        "podUid":"u1"}"#;

    #[test]
    fn identity_labels_drop_the_pod_name_and_add_the_cluster() {
        let ep = parse("c1-eth0", GOOD.as_bytes()).unwrap();
        let l = ep.identity_labels(&"red".parse().unwrap()).unwrap();
        assert_eq!(
            l.to_string(),
            "app=web,io.ironmesh.cluster=red,io.kubernetes.pod.namespace=shop"
        );
    }

    #[test]
    fn a_directory_with_bad_files_keeps_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan(&dir.path().join("absent")).unwrap().records.is_empty());
        std::fs::write(dir.path().join("c1-eth0.json"), GOOD).unwrap();
        std::fs::write(dir.path().join("c2-eth0.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("c9-eth0.json"), GOOD).unwrap();
        std::fs::write(dir.path().join("c3-eth0.json.tmp"), "partial").unwrap();
        let s = scan(dir.path()).unwrap();
        assert_eq!(s.records.keys().collect::<Vec<_>>(), ["c1-eth0"]);
        assert_eq!(s.bad.len(), 2);
        let why = &s.bad[&dir.path().join("c9-eth0.json")];
        assert!(
            why.contains("named c9-eth0.json but the record is c1-eth0"),
            "{why}"
        );
        assert!(s.bad[&dir.path().join("c2-eth0.json")].starts_with("not a record"));
    }

    #[test]
    fn records_without_addresses_or_with_bad_labels_are_refused() {
        let no_addr = GOOD.replace(r#"["10.244.1.2"]"#, "[]");
        assert!(
            parse("c1-eth0", no_addr.as_bytes())
                .unwrap_err()
                .contains("no addresses")
        );
        let bad = GOOD.replace(r#""app":"web""#, r#""app":"-web-""#);
        let ep = parse("c1-eth0", bad.as_bytes()).unwrap();
        assert!(ep.identity_labels(&"red".parse().unwrap()).is_err());
    }

    #[test]
    fn records_with_an_address_outside_the_nodes_pod_cidrs_are_skipped_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let cidrs: Vec<IpNet> = vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:244:1::/64".parse().unwrap(),
        ];
        let rec = |id: &str, addrs: &str| {
            GOOD.replace(r#""c1""#, &format!("{id:?}"))
                .replace(r#"["10.244.1.2"]"#, addrs)
        };
        std::fs::write(dir.path().join("c1-eth0.json"), GOOD).unwrap();
        std::fs::write(
            dir.path().join("c2-eth0.json"),
            rec("c2", r#"["10.244.1.3","fd00:244:1::3"]"#),
        )
        .unwrap();
        // Another node's pod address, and one good plus one outside (v6 of another node).
        std::fs::write(
            dir.path().join("c3-eth0.json"),
            rec("c3", r#"["10.244.2.7"]"#),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c4-eth0.json"),
            rec("c4", r#"["10.244.1.4","fd00:244:9::4"]"#),
        )
        .unwrap();
        let s = scan_within(dir.path(), &cidrs).unwrap();
        assert_eq!(s.records.keys().collect::<Vec<_>>(), ["c1-eth0", "c2-eth0"]);
        assert_eq!(s.bad.len(), 2);
        let why = &s.bad[&dir.path().join("c3-eth0.json")];
        assert!(
            why.contains(
                "10.244.2.7 are outside this node's PodCIDRs 10.244.1.0/24, fd00:244:1::/64"
            ),
            "{why}"
        );
        let why = &s.bad[&dir.path().join("c4-eth0.json")];
        assert!(why.contains("fd00:244:9::4"), "{why}");
        assert!(!why.contains("10.244.1.4,"), "{why}");
        // No PodCIDR at all: nothing is this node's pod.
        let s = scan_within(dir.path(), &[]).unwrap();
        assert!(s.records.is_empty());
        assert!(
            s.bad[&dir.path().join("c1-eth0.json")].contains("no PodCIDR"),
            "{:?}",
            s.bad
        );
    }
}
