//! Naming identities by labels (see the module docs of `monitor`): the CNI plugin's endpoint
//! records, the pinned `endpoints` map, meshd's identities.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Identity;
use datapath::Event;
use datapath::policy::EndpointKey;

use super::open::EndpointsMap;
use super::{MESHD_LIMIT, MESHD_RETRY, REFRESH_EVERY};

pub type LabelSet = BTreeMap<String, String>;

/// Names identities by labels (see the module docs).
#[derive(Debug)]
pub struct Labeler {
    dir: PathBuf,
    map: Option<EndpointsMap>,
    /// Address → labels of the recorded pod.
    by_addr: HashMap<IpAddr, LabelSet>,
    /// Identity → the labels its local pods share.
    pub(super) by_identity: HashMap<u32, LabelSet>,
    /// meshd's API socket, and whether it was given (only then is a failure reported).
    pub(super) meshd: Option<(PathBuf, bool)>,
    /// Identity → its labels as meshd stores them (every cluster).
    from_meshd: HashMap<u32, LabelSet>,
    last_refresh: Option<Instant>,
    warned: bool,
    meshd_warned: bool,
    /// meshd did not answer: not asked again before this.
    meshd_quiet_until: Option<Instant>,
}

impl Labeler {
    pub(super) fn new(dir: PathBuf, map: Option<EndpointsMap>) -> Self {
        Self {
            dir,
            map,
            by_addr: HashMap::new(),
            by_identity: HashMap::new(),
            meshd: None,
            from_meshd: HashMap::new(),
            last_refresh: None,
            warned: false,
            meshd_warned: false,
            meshd_quiet_until: None,
        }
    }

    /// A labeler over fixed records, without the datapath's map or a records dir.
    #[cfg(test)]
    pub(super) fn from_records(records: impl IntoIterator<Item = (Vec<IpAddr>, LabelSet)>) -> Self {
        let mut l = Self::new(PathBuf::new(), None);
        for (addrs, labels) in records {
            for a in addrs {
                l.by_addr.insert(a, labels.clone());
            }
        }
        l
    }

    /// Re-reads the endpoint records and their identities from the endpoints map, and asks
    /// meshd for every identity's labels.
    pub(super) fn refresh(&mut self) {
        self.last_refresh = Some(Instant::now());
        self.ask_meshd();
        let (records, errors) = read_records(&self.dir);
        if !self.warned {
            for e in &errors {
                eprintln!("ironctl: monitor: {e}");
            }
            self.warned = !errors.is_empty();
        }
        self.by_addr.clear();
        self.by_identity.clear();
        for (addrs, labels) in records {
            for a in addrs {
                if let Some(map) = &self.map
                    && let Ok(info) = map.get(&EndpointKey::new(a), 0)
                {
                    merge(&mut self.by_identity, info.identity, &labels);
                }
                self.by_addr.insert(a, labels.clone());
            }
        }
    }

    fn ask_meshd(&mut self) {
        let Some((socket, explicit)) = &self.meshd else {
            return;
        };
        if self.meshd_quiet_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match crate::mesh::identities_blocking(socket, MESHD_LIMIT) {
            Ok(ids) => {
                self.from_meshd = ids
                    .into_iter()
                    .map(|i| (i.id, i.labels.into_iter().collect()))
                    .collect();
            }
            Err(e) => {
                // Labels already learned from meshd stay (last good answer).
                self.meshd_quiet_until = Some(Instant::now() + MESHD_RETRY);
                if *explicit && !self.meshd_warned {
                    self.meshd_warned = true;
                    eprintln!(
                        "ironctl: monitor: no identity labels from meshd ({e}); naming identities from the endpoint records only"
                    );
                }
            }
        }
    }

    /// Learns the identity of an event's ends that are recorded pods; re-reads the records
    /// and asks meshd again (rate-limited) when an end is still unknown, e.g. a pod added
    /// since the start.
    pub fn learn(&mut self, e: &Event) {
        let unknown = |l: &Self, ip: &IpAddr, id: u32| {
            !l.by_addr.contains_key(ip)
                && !l.by_identity.contains_key(&id)
                && !l.from_meshd.contains_key(&id)
                && reserved(id).is_none()
        };
        if (!self.dir.as_os_str().is_empty() || self.meshd.is_some())
            && (unknown(self, &e.src.0, e.src_identity) || unknown(self, &e.dst.0, e.dst_identity))
            && self
                .last_refresh
                .is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
        {
            self.refresh();
        }
        for (ip, id) in [(e.src.0, e.src_identity), (e.dst.0, e.dst_identity)] {
            if let Some(labels) = self.by_addr.get(&ip).cloned() {
                merge(&mut self.by_identity, id, &labels);
            }
        }
    }

    /// The labels of `identity`, if known: meshd's, else those its local pods share
    /// (`reserved:<name>` for reserved identities).
    pub fn labels(&self, identity: u32) -> Option<LabelSet> {
        if let Some(l) = self.from_meshd.get(&identity) {
            return Some(l.clone());
        }
        if let Some(l) = self.by_identity.get(&identity) {
            return Some(l.clone());
        }
        reserved(identity).map(|name| [(format!("reserved:{name}"), String::new())].into())
    }

    /// `k1=v1,k2=v2` (sorted by key, as `common::labels` writes label sets); a reserved
    /// identity's single label shows as `reserved:world`.
    pub fn label_string(&self, identity: u32) -> Option<String> {
        self.labels(identity).map(|l| {
            l.iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// An identity's labels are the ones all its pods share. The pod name is never one of them:
/// it names one pod, and pods with the same other labels share an identity (a remote pod of
/// that identity must not show a local pod's name).
pub(super) fn merge(by_identity: &mut HashMap<u32, LabelSet>, identity: u32, labels: &LabelSet) {
    if identity == 0 || reserved(identity).is_some() {
        return;
    }
    let mut labels = labels.clone();
    labels.remove(cni::endpoint::LABEL_POD_NAME);
    by_identity
        .entry(identity)
        .and_modify(|have| have.retain(|k, v| labels.get(k) == Some(v)))
        .or_insert(labels);
}

fn reserved(identity: u32) -> Option<&'static str> {
    Identity::from_raw(identity)
        .ok()
        .and_then(Identity::reserved)
        .map(|r| r.name())
}

/// The endpoint records (addresses, labels) under `dir`: `*.json` in `dir`, in
/// `dir/endpoints` and in `dir/*/endpoints` (so a data dir, a network dir and an endpoints dir
/// all work); plus one message per file that could not be read. A missing `dir` has none.
pub fn read_records(dir: &Path) -> (Vec<(Vec<IpAddr>, LabelSet)>, Vec<String>) {
    let mut dirs = vec![dir.to_path_buf(), dir.join("endpoints")];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut nets: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("endpoints"))
            .filter(|p| p.is_dir())
            .collect();
        nets.sort();
        dirs.extend(nets);
    }
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            match cni::endpoint::read(&f) {
                Ok(Some(ep)) => records.push((ep.addresses, ep.labels)),
                Ok(None) => {} // removed by a DEL meanwhile
                Err(e) => errors.push(format!("skipping endpoint record: {e}")),
            }
        }
    }
    (records, errors)
}
