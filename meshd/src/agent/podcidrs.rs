//! The node's PodCIDR blocks as its pods need them (the I/O around [`crate::podpools`]):
//! every `mesh.endpoint_poll` it resolves the pools (the config's and the `IPPool`s of type
//! PodCIDR in the merged view, with their namespaces), reads which pod addresses the CNI
//! holds (`<network>/ipam/`) and what it asked for (`<network>/pool-requests/`), adds a block
//! where one is needed (`PodCidrAllocator::grow`, an etcd transaction), publishes it in the
//! node record (so every node routes, tunnels and announces it) and only then tells the CNI
//! plugin (`pod-cidrs.json`), so no pod gets an address the mesh does not know yet.
//!
//! A request that cannot be served is answered in `pool-requests/<pool>.<family>.failed`
//! (the reason the CNI plugin puts into its error), and logged once per reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use resources::{Kind, Spec};
use tokio::sync::watch;

use super::config::AgentConfig;
use super::state::Shared;
use crate::federation::MergedView;
use crate::ipam::PodCidrAllocator;
use crate::nodes::NodeRegistration;
use common::podcidrs::PodCidrsFile;

use crate::podpools::{self, PodPool, Request};
use crate::schema::Resource;

use common::podcidrs::REQUESTS_DIR;
/// Bounds on what is read from the CNI's directories (hostile or broken files).
const MAX_ENTRIES: usize = 65_536;

pub(super) struct Grower<'a> {
    pub cfg: &'a AgentConfig,
    pub shared: &'a Shared,
    pub reg: &'a NodeRegistration,
    pub ipam: Arc<PodCidrAllocator>,
    pub view: Arc<MergedView>,
    /// This node's blocks as published (the CNI endpoint controller checks against them).
    pub cidrs: watch::Sender<Vec<IpNet>>,
    /// `<dataDir>/<network>`.
    pub network_dir: PathBuf,
}

/// How long a block is kept out of the CNI file before it is given back: an ADD that read
/// the file before may still take an address in it (the plugin waits at most 10 s for meshd).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(15);

/// What the grower remembers between ticks.
#[derive(Default)]
struct Memory {
    written: Option<PodCidrsFile>,
    logged: BTreeMap<String, String>,
    /// Since when each of the node's blocks has held no pod.
    empty_since: BTreeMap<IpNet, Instant>,
    /// A block on its way back: out of the CNI file since then.
    draining: BTreeMap<IpNet, Instant>,
    /// Blocks out of the node record whose etcd keys still have to go.
    to_free: BTreeSet<IpNet>,
    /// The pools as resolved at a view generation (resolving walks every entry of the view).
    pools: Option<(u64, Vec<PodPool>)>,
}

impl Grower<'_> {
    /// Until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut m = Memory::default();
        loop {
            if self.view.with(|v| v.listed()) {
                self.tick(&mut m).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.endpoint_poll) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// An event of an IPPool (the config's pool is no object: the log says it).
    async fn event(&self, pool: &str, t: crate::events::EventType, reason: &str, msg: String) {
        let (Some(rec), Ok(name)) = (
            self.shared.events(),
            crate::schema::ObjectName::new(Kind::IpPool, None, pool),
        ) else {
            return;
        };
        rec.record(&name, t, reason, msg).await;
    }

    async fn tick(&self, m: &mut Memory) {
        let Memory {
            written,
            logged,
            empty_since,
            draining,
            to_free,
            pools: resolved,
        } = m;
        let pools = self.view.with(|v| match resolved {
            Some((g, p)) if *g == v.generation() => p.clone(),
            _ => {
                let (ippools, namespaces) = local_pools(v, &self.cfg.cluster);
                let p = podpools::resolve(&self.cfg.pools, &ippools, &namespaces);
                *resolved = Some((v.generation(), p.clone()));
                p
            }
        });
        let mut blocks = self.reg.record().pod_cidrs;
        let used = read_used(&self.network_dir.join("ipam"));
        let req_dir = self.network_dir.join(REQUESTS_DIR);
        let requests = read_requests(&req_dir);
        for r in &requests {
            if let Some(why) = podpools::refuse(&pools, &blocks, r) {
                answer(&req_dir, r, Some(&why), logged);
            }
        }
        for g in podpools::to_grow(&pools, &blocks, &used, &requests) {
            let pool = &pools[g.pool];
            let r = Request {
                pool: pool.name.clone(),
                family: g.family,
            };
            match self
                .ipam
                .grow(&self.cfg.node, &pool.of(g.family), g.family)
                .await
            {
                Ok(all) => {
                    tracing::info!(
                        pool = %pool.name, family = %g.family, why = ?g.why,
                        block = ?all.last(), "the node took another PodCIDR block"
                    );
                    let why = match &g.why {
                        podpools::Why::Requested => "the CNI found no free address".to_string(),
                        podpools::Why::LowWater { free } => format!("{free} address(es) left"),
                    };
                    if let Some(b) = all.last() {
                        self.event(
                            &pool.name,
                            crate::events::EventType::Normal,
                            "BlockAllocated",
                            format!(
                                "node {} took {b} ({} block: {why})",
                                self.cfg.node, g.family
                            ),
                        )
                        .await;
                    }
                    blocks = all;
                }
                Err(e) => {
                    let why = format!("pool {:?}: {e}", pool.name);
                    if logged.get(&podpools::request_name(&r.pool, r.family)) != Some(&why) {
                        tracing::warn!(pool = %pool.name, family = %g.family, error = %e, "cannot grow the node's PodCIDR blocks");
                        self.event(
                            &pool.name,
                            crate::events::EventType::Warning,
                            "BlockAllocationFailed",
                            format!(
                                "node {} could not take a {} block: {e}",
                                self.cfg.node, g.family
                            ),
                        )
                        .await;
                    }
                    answer(&req_dir, &r, Some(&why), logged);
                }
            }
        }
        // Giving back: an extra block empty for RELEASE_AFTER leaves the CNI file, and after
        // DRAIN (still empty) the node record and then etcd.
        let now = Instant::now();
        blocks.retain(|b| !to_free.contains(b));
        for b in &blocks {
            if used.iter().any(|a| b.contains(a)) {
                empty_since.remove(b);
            } else {
                empty_since.entry(*b).or_insert(now);
            }
        }
        empty_since.retain(|b, _| blocks.contains(b));
        draining.retain(|b, _| blocks.contains(b));
        // The CNI asking for a pool means its blocks are needed after all.
        draining.retain(|b, _| {
            !requests.iter().any(|r| {
                crate::ipam::family(b) == r.family
                    && pools.iter().any(|p| p.name == r.pool && p.holds(b))
            })
        });
        let mut release = None;
        for (b, since) in draining.clone() {
            if used.iter().any(|a| b.contains(a)) {
                tracing::info!(block = %b, "a pod took an address in a draining block; the node keeps it");
                draining.remove(&b);
            } else if now.saturating_duration_since(since) >= DRAIN {
                release = Some(b);
            }
        }
        if draining.is_empty()
            && let Some(b) = podpools::to_release(
                &pools,
                &blocks,
                &used,
                empty_since,
                now,
                self.cfg.pod_cidr_block_idle,
            )
        {
            tracing::info!(block = %b, idle = ?self.cfg.pod_cidr_block_idle, "a PodCIDR block held no pod for mesh.pod_cidr_block_idle; draining it");
            draining.insert(b, now);
        }
        if let Some(b) = release {
            blocks.retain(|x| *x != b);
            draining.remove(&b);
            to_free.insert(b);
        }
        // The record first: every node must know a block before a pod gets an address in it
        // (and forget one only once no pod can take an address in it).
        if self.reg.record().pod_cidrs != blocks {
            match self.reg.modify(|r| r.pod_cidrs = blocks.clone()).await {
                Ok(r) => self.shared.set_record(Some(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "publishing the node's new PodCIDR block failed; retrying");
                    return;
                }
            }
        }
        self.cidrs.send_if_modified(|c| {
            let changed = *c != blocks;
            *c = blocks.clone();
            changed
        });
        for b in to_free.clone() {
            match self.ipam.release_block(&self.cfg.node, b).await {
                Ok(_) => {
                    to_free.remove(&b);
                    tracing::info!(block = %b, "PodCIDR block given back");
                    if let Some(p) = pools.iter().find(|p| p.holds(&b)) {
                        self.event(
                            &p.name,
                            crate::events::EventType::Normal,
                            "BlockReleased",
                            format!(
                                "node {} gave {b} back (no pod in it for {:?}: mesh.pod_cidr_block_idle)",
                                self.cfg.node,
                                self.cfg.pod_cidr_block_idle
                            ),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(block = %b, error = %e, "giving a PodCIDR block back failed; retrying")
                }
            }
        }
        let offered: Vec<IpNet> = blocks
            .iter()
            .filter(|b| !draining.contains_key(b))
            .copied()
            .collect();
        let file = podpools::cni_file(&pools, &offered);
        if written.as_ref() != Some(&file) && write_cni_file(&self.network_dir, &file) {
            *written = Some(file);
        }
        // Requests with room now (a block added, or a DEL freed an address) are done.
        for r in &requests {
            let left = pools
                .iter()
                .find(|p| p.name == r.pool)
                .map(|p| podpools::free(&p.blocks(r.family, &blocks), &used));
            if left.is_some_and(|n| n > 0) {
                answer(&req_dir, r, None, logged);
            }
        }
    }
}

/// The local cluster's PodCIDR IPPools and Namespaces (with their labels) in the view.
#[allow(clippy::type_complexity)]
fn local_pools(
    v: &crate::federation::MergedState,
    local: &common::ClusterName,
) -> (
    Vec<(String, resources::IpPoolSpec)>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut pools = Vec::new();
    let mut namespaces = BTreeMap::new();
    for (c, r, value) in v.entries() {
        let Resource::Object(n) = r else { continue };
        if c != local || !matches!(n.kind, Kind::IpPool | Kind::Namespace) {
            continue;
        }
        let Ok(s) = crate::objects::decode(n, value) else {
            continue;
        };
        match s.object.spec {
            Spec::IpPool(p) => pools.push((s.object.meta.name, p)),
            Spec::Namespace => {
                namespaces.insert(s.object.meta.name, s.object.meta.labels);
            }
            _ => {}
        }
    }
    (pools, namespaces)
}

/// The addresses the CNI holds: the names of its IPAM files (bounded).
fn read_used(dir: &Path) -> BTreeSet<IpAddr> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The CNI's open requests (`<pool>.<ipv4|ipv6>`; answers and other names are ignored).
fn read_requests(dir: &Path) -> Vec<Request> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Request> = rd
        .flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| podpools::parse_request(e.file_name().to_str()?))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Closes a request: served (`None`: the request file goes, an old failure with it), or
/// refused (the reason goes into `<request>.failed` first, then the request goes).
fn answer(dir: &Path, r: &Request, failure: Option<&str>, logged: &mut BTreeMap<String, String>) {
    let name = podpools::request_name(&r.pool, r.family);
    let failed = dir.join(format!("{name}.failed"));
    match failure {
        Some(why) => {
            if logged.get(&name).map(String::as_str) != Some(why) {
                tracing::warn!(request = %name, reason = %why, "a CNI request for a PodCIDR block was refused");
                logged.insert(name.clone(), why.to_string());
            }
            let tmp = dir.join(format!(".{name}.failed.tmp"));
            if let Err(e) = std::fs::write(&tmp, why).and_then(|()| std::fs::rename(&tmp, &failed))
            {
                tracing::warn!(path = %failed.display(), error = %e, "cannot answer the CNI's request");
            }
        }
        None => {
            logged.remove(&name);
            let _ = std::fs::remove_file(&failed);
        }
    }
    let _ = std::fs::remove_file(dir.join(&name));
}

/// Writes `pod-cidrs.json` atomically. Nothing when the CNI's `dataDir` does not exist (no
/// plugin installed on this host: meshd creates no directory tree of its own outside its
/// state dir). Whether it was written.
fn write_cni_file(network_dir: &Path, file: &PodCidrsFile) -> bool {
    if file.pod_cidrs.is_empty() || !network_dir.parent().is_some_and(Path::is_dir) {
        return false;
    }
    let path = network_dir.join(common::podcidrs::FILE_NAME);
    let tmp = network_dir.join(".pod-cidrs.json.tmp");
    let body = serde_json::to_vec(file).expect("serializes");
    let r = std::fs::create_dir_all(network_dir)
        .and_then(|()| std::fs::write(&tmp, body))
        .and_then(|()| std::fs::rename(&tmp, &path));
    match r {
        Ok(()) => {
            tracing::info!(path = %path.display(), cidrs = ?file.pod_cidrs, pools = file.pools.len(), "PodCIDRs written for the CNI plugin");
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the PodCIDRs for the CNI plugin");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::Family;

    #[test]
    fn requests_are_read_by_name_and_answered_with_the_reason_or_removed() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "tenants.ipv4",
            "mesh.pod_cidr_pools.ipv6",
            "junk",
            "x.ipv4.failed",
        ] {
            std::fs::write(d.path().join(n), "c1").unwrap();
        }
        let got = read_requests(d.path());
        assert_eq!(
            got,
            vec![
                Request {
                    pool: "mesh.pod_cidr_pools".into(),
                    family: Family::V6
                },
                Request {
                    pool: "tenants".into(),
                    family: Family::V4
                },
            ]
        );
        let mut logged = BTreeMap::new();
        answer(
            d.path(),
            &got[1],
            Some("pool \"tenants\": exhausted"),
            &mut logged,
        );
        assert!(!d.path().join("tenants.ipv4").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("tenants.ipv4.failed")).unwrap(),
            "pool \"tenants\": exhausted"
        );
        answer(d.path(), &got[1], None, &mut logged);
        assert!(!d.path().join("tenants.ipv4.failed").exists());
        assert!(logged.is_empty());
    }

    #[test]
    fn used_addresses_are_the_ipam_file_names() {
        let d = tempfile::tempdir().unwrap();
        for n in ["10.9.0.2", "fd00:9::5", "lock", "last_reserved_ip.0"] {
            std::fs::write(d.path().join(n), "c1\neth0\n").unwrap();
        }
        let used = read_used(d.path());
        assert_eq!(used.len(), 2);
        assert!(used.contains(&"10.9.0.2".parse::<IpAddr>().unwrap()));
    }
}
