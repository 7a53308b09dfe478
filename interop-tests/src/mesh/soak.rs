//! Counting what the mesh lab holds, for the soak run (`lab-soak`): per node the eBPF map
//! entries, pinned program links, meshd's fds on BPF objects, WireGuard peers, kernel routes
//! and rules, bgpd's routes and the CNI's records; per cluster the etcd keys by prefix and the
//! leases; per ToR the BGP routes from each node and its kernel routes. And each daemon's
//! memory (VmRSS) and open fds.
//!
//! Counters are compared with a baseline: [`Class::Strict`] ones must come back to it,
//! [`Class::Aging`] ones (conntrack) age out on their own and are only reported, and
//! [`Class::Identity`] ones may keep identities unused for less than meshd's GC grace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use api::bgp as pb;
use serde_json::Value;

use super::tor::TorKind;
use super::{Cluster, MeshLab, Node, Tor};
use crate::cmd::run;
use crate::error::{LabError, Result};

/// The datapath's maps that must return to their baseline (conntrack is [`Class::Aging`]).
pub const MAPS: [&str; 7] = [
    "ipcache",
    "endpoints",
    "services",
    "backend_slots",
    "backends",
    "maglev",
    "policy",
];

/// How a counter is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Must equal the baseline after the churn.
    Strict,
    /// Reported only (entries age out by themselves: conntrack).
    Aging,
    /// Identities: the baseline plus those still in meshd's GC grace.
    Identity,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Strict => "strict",
            Class::Aging => "aging",
            Class::Identity => "identity",
        }
    }
}

/// Every counter of the lab at one moment: name -> (class, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, (Class, u64)>);

impl Snapshot {
    fn set(&mut self, name: String, class: Class, v: u64) {
        self.0.insert(name, (class, v));
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).map(|(_, v)| *v)
    }
}

/// Counts everything: every node, both clusters' etcd, both ToRs.
pub fn snapshot(mesh: &MeshLab) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    for n in mesh.nodes() {
        node_counters(n, &mut s)?;
    }
    for c in [&mesh.red, &mesh.blue] {
        etcd_counters(c, &mut s)?;
    }
    for t in [&mesh.red_tor, &mesh.blue_tor] {
        tor_counters(t, &mut s)?;
    }
    Ok(s)
}

fn node_counters(n: &Node, s: &mut Snapshot) -> Result<()> {
    let at = format!("{}/{}", n.cluster, n.name);
    let root = n.dp.pin_root();
    for m in MAPS {
        s.set(
            format!("{at} map {m}"),
            Class::Strict,
            map_entries(root, m)?,
        );
    }
    s.set(
        format!("{at} map conntrack"),
        Class::Aging,
        map_entries(root, "conntrack")?,
    );
    // A link per attached program (pods' veths, the uplink), pinned as `link_<prog>_<if>`.
    let links = files(root, |f| f.starts_with("link_"));
    s.set(format!("{at} pinned links"), Class::Strict, links);
    if let Some(pid) = n.meshd.pid() {
        for (kind, count) in bpf_fds(pid) {
            s.set(format!("{at} meshd {kind} fds"), Class::Strict, count);
        }
    }

    let peers = n.host.exec("wg", &["show", &n.wg.ifname, "peers"])?;
    s.set(format!("{at} wg peers"), Class::Strict, lines(&peers));
    let ips = n.host.exec("wg", &["show", &n.wg.ifname, "allowed-ips"])?;
    let allowed: usize = ips
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter(|w| *w != "(none)")
                .count()
        })
        .sum();
    s.set(
        format!("{at} wg allowed-ips"),
        Class::Strict,
        allowed as u64,
    );

    for (table, count) in route_tables(&n.host.ip(&["-4", "route", "show", "table", "all"])?) {
        s.set(format!("{at} routes table {table}"), Class::Strict, count);
    }
    s.set(
        format!("{at} ip rules"),
        Class::Strict,
        lines(&n.host.ip(&["rule"])?),
    );
    s.set(
        format!("{at} links"),
        Class::Strict,
        lines(&n.host.ip(&["-o", "link"])?),
    );

    for (what, rib) in [
        ("adj-in", pb::RibKind::AdjIn),
        ("adj-out", pb::RibKind::AdjOut),
        ("loc-rib", pb::RibKind::Loc),
    ] {
        let peer = if rib == pb::RibKind::Loc { "" } else { "tor" };
        let count = n.bgpd.routes(rib, peer)?.len() as u64;
        s.set(format!("{at} bgpd {what}"), Class::Strict, count);
    }

    let net = n.cni_dir.join("mesh");
    let ipam = files(&net.join("ipam"), |f| f.parse::<std::net::IpAddr>().is_ok());
    s.set(format!("{at} cni ipam addresses"), Class::Strict, ipam);
    let eps = files(&net.join("endpoints"), |f| f.ends_with(".json"));
    s.set(format!("{at} cni endpoint records"), Class::Strict, eps);
    Ok(())
}

fn lines(text: &str) -> u64 {
    text.lines().filter(|l| !l.trim().is_empty()).count() as u64
}

/// Files in `dir` whose name passes `keep` (0 if the dir is absent).
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Entries of the map pinned at `<root>/<name>` (`bpftool -j map dump`: a JSON array). Run
/// from this process: the pins are in its mount namespace.
pub fn map_entries(root: &Path, name: &str) -> Result<u64> {
    let path = root.join(name).display().to_string();
    let out = run("bpftool", &["-j", "map", "dump", "pinned", &path])?;
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(entries)) => Ok(entries.len() as u64),
        _ => Err(LabError::Parse {
            what: format!("bpftool map dump {path}"),
            detail: out.chars().take(200).collect(),
        }),
    }
}

/// Routes per table of `ip route show table all` (main when no table is named), without the
/// kernel's own `local` table.
fn route_tables(out: &str) -> BTreeMap<String, u64> {
    let mut t = BTreeMap::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let table = w
            .windows(2)
            .find(|p| p[0] == "table")
            .map_or("main", |p| p[1]);
        if table != "local" {
            *t.entry(table.to_string()).or_default() += 1;
        }
    }
    t
}

/// The group of an etcd key: `clusters/<c>/<kind>` (`ipam/<kind>` for IPAM), or
/// `mirror/<r>/<kind>`.
pub fn key_group(key: &str) -> String {
    let tail = key.strip_prefix("ironmesh/v1/").unwrap_or(key);
    let seg: Vec<&str> = tail.split('/').collect();
    let n = match seg.get(2) {
        Some(&"ipam") => 4,
        _ => 3,
    };
    seg[..n.min(seg.len())].join("/")
}

fn is_identity_group(g: &str) -> bool {
    g.ends_with("/identities") || g.ends_with("/identities-by-labels")
}

fn etcdctl_any(c: &Cluster, args: &[&str]) -> Result<String> {
    let mut last = None;
    for i in 0..c.etcd.members.len() {
        match c.etcd.etcdctl(i, args) {
            Ok(out) => return Ok(out),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| LabError::Invalid("no etcd member".into())))
}

fn etcd_counters(c: &Cluster, s: &mut Snapshot) -> Result<()> {
    let out = etcdctl_any(c, &["get", "--prefix", "ironmesh/", "--keys-only"])?;
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for k in out.lines().filter(|l| l.starts_with("ironmesh/")) {
        *groups.entry(key_group(k)).or_default() += 1;
    }
    // Kinds that are empty now but may fill during the churn are still counters (0).
    for kind in ["endpoints", "services", "identity-refs", "policies"] {
        groups
            .entry(format!("clusters/{}/{kind}", c.name))
            .or_default();
    }
    for kind in ["ipam/vips", "ipam/vips-by-service"] {
        groups
            .entry(format!("clusters/{}/{kind}", c.name))
            .or_default();
    }
    for (g, n) in groups {
        let class = if is_identity_group(&g) {
            Class::Identity
        } else {
            Class::Strict
        };
        s.set(format!("{} etcd {g}", c.name), class, n);
    }
    let leases = etcdctl_any(c, &["lease", "list"])?;
    let n = leases
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("found ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    s.set(format!("{} etcd leases", c.name), Class::Strict, n);
    Ok(())
}

/// Identities of a cluster (`clusters/<c>/identities/<id>`) with their labels.
pub fn identities(c: &Cluster) -> Result<BTreeMap<u32, BTreeMap<String, String>>> {
    let prefix = format!("ironmesh/v1/clusters/{}/identities/", c.name);
    let out = etcdctl_any(c, &["get", "--prefix", &prefix])?;
    let mut ids = BTreeMap::new();
    let mut it = out.lines();
    while let Some(k) = it.next() {
        let Some(id) = k.strip_prefix(&prefix).and_then(|i| i.parse().ok()) else {
            continue;
        };
        let v: Value = serde_json::from_str(it.next().unwrap_or("")).unwrap_or(Value::Null);
        let labels = v["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ids.insert(id, labels);
    }
    Ok(ids)
}

fn tor_counters(t: &Tor, s: &mut Snapshot) -> Result<()> {
    let at = t.host().name().to_string();
    for (name, addr) in &t.peers {
        let routes = match &t.kind {
            TorKind::Bird(b) => b.routes_from(name)?,
            TorKind::Frr(f) => f.routes_from(*addr)?,
        };
        let what = format!("{at} bgp routes from {name}");
        s.set(what, Class::Strict, routes.len() as u64);
    }
    let kernel = lines(&t.host().ip(&["-4", "route"])?);
    s.set(format!("{at} kernel routes"), Class::Strict, kernel);
    Ok(())
}

/// Strict counters that differ from `base` (identity ones are checked by the caller).
pub fn strict_diff(base: &Snapshot, now: &Snapshot) -> Vec<(String, Option<u64>, Option<u64>)> {
    let names: BTreeSet<&String> = base.0.keys().chain(now.0.keys()).collect();
    names
        .into_iter()
        .filter(|n| {
            let class = base.0.get(*n).or(now.0.get(*n)).map(|(c, _)| *c);
            class == Some(Class::Strict) && base.get(n) != now.get(n)
        })
        .map(|n| (n.clone(), base.get(n), now.get(n)))
        .collect()
}

/// A daemon whose memory the soak follows.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: String,
    pub pid: u32,
    /// Judged (flat memory required) or only reported.
    pub judged: bool,
}

/// meshd, bgpd and wireguard-go of every node (judged); etcd members and the ToRs' daemons
/// (reported).
pub fn daemons(mesh: &MeshLab) -> Vec<Daemon> {
    let mut out = Vec::new();
    let mut add = |name: String, pid: Option<u32>, judged: bool| {
        if let Some(pid) = pid {
            out.push(Daemon { name, pid, judged });
        }
    };
    for n in mesh.nodes() {
        let at = format!("{}/{}", n.cluster, n.name);
        add(format!("{at} meshd"), n.meshd.pid(), true);
        add(format!("{at} bgpd"), n.bgpd.process.pid(), true);
        add(format!("{at} wireguard-go"), n.wg.process.pid(), true);
    }
    for c in [&mesh.red, &mesh.blue] {
        for m in &c.etcd.members {
            add(format!("{} {}", c.name, m.name), m.process.pid(), false);
        }
    }
    for t in [&mesh.red_tor, &mesh.blue_tor] {
        let (what, p) = match &t.kind {
            TorKind::Bird(b) => ("bird", &b.process),
            TorKind::Frr(f) => ("frr bgpd", &f.bgpd),
        };
        add(format!("{} {what}", t.host().name()), p.pid(), false);
    }
    out
}

/// Lab daemons that are no longer running: every node's, the etcd members, the ToRs'.
pub fn exited(mesh: &MeshLab) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: String, p: &crate::process::Process| {
        if !p.is_running() {
            out.push(name);
        }
    };
    for n in mesh.nodes() {
        let at = format!("{}/{}", n.cluster, n.name);
        check(format!("{at} meshd"), &n.meshd);
        check(format!("{at} bgpd"), &n.bgpd.process);
        check(format!("{at} wireguard-go"), &n.wg.process);
    }
    for c in [&mesh.red, &mesh.blue] {
        for m in &c.etcd.members {
            check(format!("{} etcd {}", c.name, m.name), &m.process);
        }
    }
    for t in [&mesh.red_tor, &mesh.blue_tor] {
        let p = match &t.kind {
            TorKind::Bird(b) => &b.process,
            TorKind::Frr(f) => &f.bgpd,
        };
        check(format!("{} daemon", t.host().name()), p);
    }
    out
}

/// VmRSS of a process in KiB (`/proc/PID/status`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's fds on BPF objects by kind (`bpf-link`, `bpf-map`, `bpf-prog`; each kind
/// present, possibly 0).
pub fn bpf_fds(pid: u32) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = ["bpf-link", "bpf-map", "bpf-prog"]
        .into_iter()
        .map(|k| (k.to_string(), 0))
        .collect();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(c) = t.strip_prefix("anon_inode:").and_then(|k| out.get_mut(k)) {
            *c += 1;
        }
    }
    out
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_by_kind() {
        let g = |k: &str| key_group(k);
        assert_eq!(
            g("ironmesh/v1/clusters/red/identities/65792"),
            "clusters/red/identities"
        );
        assert_eq!(
            g("ironmesh/v1/clusters/red/ipam/podcidrs/10.1.0.0%2F24"),
            "clusters/red/ipam/podcidrs"
        );
        assert_eq!(
            g("ironmesh/v1/clusters/red/identity-refs/5/n1"),
            "clusters/red/identity-refs"
        );
        assert_eq!(g("ironmesh/v1/mirror/blue/synced"), "mirror/blue/synced");
        assert_eq!(g("ironmesh/v1/mirror/blue/nodes/n1"), "mirror/blue/nodes");
    }

    #[test]
    fn routes_count_per_table_without_local() {
        let out = "default via 192.0.2.1 dev eth0\n10.1.1.2 dev im0 scope link\n\
                   10.2.0.0/24 dev wg0 table 202\nlocal 192.0.2.11 dev eth0 table local\n";
        let t = route_tables(out);
        assert_eq!(t.get("main"), Some(&2));
        assert_eq!(t.get("202"), Some(&1));
        assert_eq!(t.get("local"), None);
    }
}
