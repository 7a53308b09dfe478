//! `ironctl monitor`: the datapath's drop, policy-verdict and trace events as they happen, like
//! `hubble observe`, read from the `events` ring buffer pinned under the pin root.
//!
//! Identities are named by labels: the CNI plugin's endpoint records (`<dataDir>/<network>/
//! endpoints/*.json`) give each local pod's addresses and labels, the pinned `endpoints` map
//! gives each local address its identity; an identity's labels are those its local pods share
//! (without the pod name, which is not part of an identity).
//! An event whose address is a recorded pod teaches ironctl that pod's identity too. Reserved
//! identities show as `reserved:<name>`. When meshd's API answers (`--meshd`), every identity of
//! every cluster is named by the labels meshd stores for it, so pods of other nodes and other
//! clusters are named too; the records stay the fallback.
//!
//! The ring buffer has one consumer position, shared by every reader: two monitors (or a monitor
//! and another consumer) running at once each see part of the events.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use clap::{Args, ValueEnum};
use common::Identity;
use datapath::events::{EventError, EventKind, Trace};
use datapath::pin::{DEFAULT_PIN_ROOT, PinRoot, bpffs_mounted};
use datapath::policy::{Direction, EndpointInfo, EndpointKey};
use datapath::{Event, EventReader};
use serde::Serialize;

/// Longest single wait on the ring buffer while following without `--timeout`.
const FOLLOW_POLL: Duration = Duration::from_secs(60);
/// An identity without labels re-reads the endpoint records (and asks meshd) at most this often.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long one question to meshd may take (the monitor waits for it).
const MESHD_LIMIT: Duration = Duration::from_secs(2);
/// After meshd did not answer, it is asked again only after this long (each try may block).
const MESHD_RETRY: Duration = Duration::from_secs(30);
/// meshd's API socket when `--meshd` is not given (as `ironctl mesh`).
const DEFAULT_MESHD_SOCKET: &str = "/var/lib/ironmesh/meshd.sock";

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The datapath's pin root on bpffs (where the agent pinned its maps).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// The CNI plugin's endpoint records, to name identities by labels: a data dir
    /// (`<DIR>/<network>/endpoints/*.json`), a network dir or an endpoints dir.
    /// [default: /var/lib/ironmesh/cni]
    #[arg(long, value_name = "DIR")]
    endpoints: Option<PathBuf>,
    /// meshd's API socket, to name every identity (other nodes', other clusters') by the
    /// labels meshd stores; without an answer, identities are named from the records only.
    /// [default: /var/lib/ironmesh/meshd.sock]
    #[arg(long, value_name = "PATH", env = "IRONMESH_MESHD_SOCKET")]
    meshd: Option<PathBuf>,
    /// Only these events (repeat the option or separate with commas); default: all.
    #[arg(long = "type", value_enum, value_name = "TYPE", value_delimiter = ',')]
    types: Vec<EventType>,
    /// Stop after N events (after filtering).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after SECS (e.g. 5 or 0.5) without an event to show; default: follow forever.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    /// Dropped packets (policy, no backend, tunnel, conntrack).
    Drop,
    /// Policy verdicts for new flows under an enforced policy.
    Verdict,
    /// Routing traces (to/from overlay, FIB redirect), when the datapath's trace flag is on.
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One hubble-like line per event.
    Text,
    /// One JSON object per line (stable field names).
    Json,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: use 0 or more seconds"))
}

/// Runs `monitor`; the error is the message to print.
pub fn run(args: MonitorArgs) -> Result<(), String> {
    let root = PinRoot::new(&args.pin_root).map_err(|e| format!("--pin-root: {e}"))?;
    let mut reader = open_reader(&root)?;
    let (records_dir, explicit) = match &args.endpoints {
        Some(d) => (d.clone(), true),
        None => (PathBuf::from(cni::config::DEFAULT_DATA_DIR), false),
    };
    if explicit && !records_dir.is_dir() {
        return Err(format!(
            "--endpoints {}: not a directory (the CNI plugin's dataDir, e.g. {})",
            records_dir.display(),
            cni::config::DEFAULT_DATA_DIR
        ));
    }
    let mut labels = Labeler::new(records_dir, open_endpoints_map(&root));
    labels.meshd = Some(match args.meshd {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_MESHD_SOCKET), false),
    });
    labels.refresh();

    let json = args.output == Output::Json;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut shown = 0u64;
    let mut last_shown = Instant::now();
    while args.count.is_none_or(|n| shown < n) {
        let wait = match args.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_shown.elapsed());
                if left.is_zero() {
                    eprintln!(
                        "ironctl: monitor: no event for {}, stopping ({shown} shown)",
                        human_secs(t)
                    );
                    break;
                }
                left
            }
            None => FOLLOW_POLL,
        };
        let event = match reader.next_timeout(wait) {
            Ok(None) => continue,
            Ok(Some(e)) => e,
            Err(e @ (EventError::Short { .. } | EventError::Family(_))) => {
                eprintln!("ironctl: monitor: skipping a record: {e}");
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "reading events under {}: {e}",
                    root.path().display()
                ));
            }
        };
        if !matches_types(&args.types, &event) {
            continue;
        }
        labels.learn(&event);
        let line = if json {
            serde_json::to_string(&json_event(&event, &labels))
                .map_err(|e| format!("encoding JSON: {e}"))?
        } else {
            text_line(&event, &labels)
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // `ironctl monitor | head`: the reader went away; that is a normal end.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing to stdout: {e}")),
        }
        shown += 1;
        last_shown = Instant::now();
    }
    Ok(())
}

fn human_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

const NOT_LOADED_HINT: &str = "is the agent running? pass --pin-root";

fn permission_denied(path: &Path) -> String {
    format!(
        "permission denied reading {}: the datapath's pinned maps need root \
         (CAP_BPF and access to the pin root); run ironctl monitor with sudo",
        path.display()
    )
}

/// Opens the events ring buffer with an error an operator can act on.
fn open_reader(root: &PinRoot) -> Result<EventReader, String> {
    let dir = root.path();
    let not_loaded = || format!("no datapath loaded at {}: {NOT_LOADED_HINT}", dir.display());
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "{}: not a directory; {NOT_LOADED_HINT}",
                dir.display()
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_loaded()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(permission_denied(dir)),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let events = root
        .pin_path("events")
        .map_err(|e| format!("--pin-root: {e}"))?;
    match std::fs::symlink_metadata(&events) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !bpffs_mounted(dir).unwrap_or(true) {
                return Err(format!(
                    "no datapath loaded at {} (not on bpffs): {NOT_LOADED_HINT}",
                    dir.display()
                ));
            }
            return Err(not_loaded());
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(permission_denied(dir)),
        Err(e) => return Err(format!("{}: {e}", events.display())),
    }
    EventReader::open(root).map_err(|e| match io_error(&e).map(io::Error::kind) {
        Some(ErrorKind::PermissionDenied) => permission_denied(&events),
        Some(ErrorKind::NotFound) => not_loaded(),
        _ => format!("opening {}: {}", events.display(), error_chain(&e)),
    })
}

/// The first `io::Error` in an error's source chain (aya wraps the syscall's error).
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let next = err.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = err.source();
    }
    s
}

type EndpointsMap = BpfHashMap<MapData, EndpointKey, EndpointInfo>;

/// The pinned `endpoints` map (local address → endpoint id, identity), if it can be opened;
/// without it identities are learned from events only.
fn open_endpoints_map(root: &PinRoot) -> Option<EndpointsMap> {
    let path = root.pin_path("endpoints").ok()?;
    let data = MapData::from_pin(&path).ok()?;
    EndpointsMap::try_from(Map::HashMap(data)).ok()
}

/// Whether `e` is of one of `types` (all types when empty).
pub fn matches_types(types: &[EventType], e: &Event) -> bool {
    types.is_empty()
        || types.iter().any(|t| {
            matches!(
                (t, e.kind),
                (EventType::Drop, EventKind::Drop(_))
                    | (EventType::Verdict, EventKind::PolicyVerdict(_))
                    | (EventType::Trace, EventKind::Trace(_))
            )
        })
}

pub type LabelSet = BTreeMap<String, String>;

/// Names identities by labels (see the module docs).
#[derive(Debug)]
pub struct Labeler {
    dir: PathBuf,
    map: Option<EndpointsMap>,
    /// Address → labels of the recorded pod.
    by_addr: HashMap<IpAddr, LabelSet>,
    /// Identity → the labels its local pods share.
    by_identity: HashMap<u32, LabelSet>,
    /// meshd's API socket, and whether it was given (only then is a failure reported).
    meshd: Option<(PathBuf, bool)>,
    /// Identity → its labels as meshd stores them (every cluster).
    from_meshd: HashMap<u32, LabelSet>,
    last_refresh: Option<Instant>,
    warned: bool,
    meshd_warned: bool,
    /// meshd did not answer: not asked again before this.
    meshd_quiet_until: Option<Instant>,
}

impl Labeler {
    fn new(dir: PathBuf, map: Option<EndpointsMap>) -> Self {
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
    fn from_records(records: impl IntoIterator<Item = (Vec<IpAddr>, LabelSet)>) -> Self {
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
    fn refresh(&mut self) {
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
fn merge(by_identity: &mut HashMap<u32, LabelSet>, identity: u32, labels: &LabelSet) {
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

/// The hubble-like line of an event, identities named by their labels.
pub fn text_line(e: &Event, labels: &Labeler) -> String {
    e.describe(&|id| labels.label_string(id))
}

#[derive(Debug, Serialize, PartialEq)]
pub struct JsonEnd {
    pub ip: IpAddr,
    pub port: u16,
    pub identity: u32,
    pub labels: LabelSet,
}

/// `-o json`: one object per event.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonEvent {
    /// `drop`, `verdict`, `trace` or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Drop: `no-backend`, `family-mismatch`, `policy-denied`, `policy-default-deny`,
    /// `no-tunnel-key`, `tunnel-key`, `conntrack-full`. Verdict: `allowed`, `denied`,
    /// `default-deny`. Trace: `to-overlay`, `from-overlay`, `fib-redirect`.
    /// Unknown: `kind K reason R`.
    pub reason: String,
    /// `ingress` or `egress` (policy events, seen from the endpoint), else null.
    pub direction: Option<&'static str>,
    pub source: JsonEnd,
    pub destination: JsonEnd,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP` or the number.
    pub protocol: String,
    /// The IP protocol number.
    pub proto: u8,
    /// The service of a load-balancing drop (0 if none).
    pub service_id: u32,
    /// The local endpoint a policy event concerns (0 if none).
    pub endpoint_id: u32,
    pub ifindex: u32,
    /// Overlay traces: the other node and the VNI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// FIB redirect traces: the interface the packet was redirected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_ifindex: Option<u32>,
    /// Kernel CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) when the event was written.
    pub ts_ns: u64,
    /// The text line.
    pub summary: String,
}

pub fn json_event(e: &Event, labels: &Labeler) -> JsonEvent {
    let end = |(ip, port): (IpAddr, u16), identity: u32| JsonEnd {
        ip,
        port,
        identity,
        labels: labels.labels(identity).unwrap_or_default(),
    };
    let (kind, reason) = (e.kind.kind_name(), e.kind.reason_name());
    let (node, vni, redirect_ifindex) = match e.kind {
        EventKind::Trace(Trace::ToOverlay { node, vni } | Trace::FromOverlay { node, vni }) => {
            (Some(IpAddr::V4(node)), Some(vni), None)
        }
        EventKind::Trace(Trace::FibRedirect { ifindex }) => (None, None, Some(ifindex)),
        _ => (None, None, None),
    };
    JsonEvent {
        kind,
        reason,
        direction: e.direction.map(|d| match d {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }),
        source: end(e.src, e.src_identity),
        destination: end(e.dst, e.dst_identity),
        protocol: datapath::events::protocol_name(e.proto),
        proto: e.proto,
        service_id: e.svc_id,
        endpoint_id: e.endpoint_id,
        ifindex: e.ifindex,
        node,
        vni,
        redirect_ifindex,
        ts_ns: e.ts_ns,
        summary: text_line(e, labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::events::{DropReason, Verdict};

    fn ev(kind: EventKind) -> Event {
        Event {
            kind,
            src: ("10.0.1.5".parse().unwrap(), 40000),
            dst: ("10.0.2.7".parse().unwrap(), 80),
            proto: 6,
            src_identity: 4242,
            dst_identity: 4243,
            svc_id: 0,
            ifindex: 0,
            endpoint_id: 1,
            direction: Some(Direction::Egress),
            ts_ns: 123,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_by_type() {
        let drop = ev(EventKind::Drop(DropReason::PolicyDenied));
        let verdict = ev(EventKind::PolicyVerdict(Verdict::Allowed));
        let trace = ev(EventKind::Trace(Trace::FibRedirect { ifindex: 3 }));
        let unknown = ev(EventKind::Unknown(9, 9));
        for e in [&drop, &verdict, &trace, &unknown] {
            assert!(matches_types(&[], e), "no filter shows everything");
        }
        assert!(matches_types(&[EventType::Drop], &drop));
        assert!(!matches_types(&[EventType::Drop], &verdict));
        assert!(!matches_types(&[EventType::Drop], &unknown));
        let dv = [EventType::Drop, EventType::Verdict];
        assert!(matches_types(&dv, &drop) && matches_types(&dv, &verdict));
        assert!(!matches_types(&dv, &trace));
        assert!(matches_types(&[EventType::Trace], &trace));
    }

    #[test]
    fn names_identities_by_the_labels_their_pods_share() {
        let web = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("io.kubernetes.pod.name", "web-0"),
            ("io.kubernetes.pod.namespace", "shop"),
        ]);
        let mut l = Labeler::from_records([(vec!["10.0.1.5".parse().unwrap()], web)]);
        let e = ev(EventKind::Drop(DropReason::PolicyDenied));
        assert_eq!(l.label_string(4242), None, "not learned yet");
        l.learn(&e);
        assert_eq!(
            text_line(&e, &l),
            "10.0.1.5 (id 4242 app=web,io.kubernetes.pod.namespace=shop,tier=front) -> \
             10.0.2.7 (id 4243) TCP 80 dropped: policy denied (egress)"
        );
        // Another pod of the same identity: only the shared labels name the identity.
        let mut by_identity = l.by_identity.clone();
        merge(
            &mut by_identity,
            4242,
            &labels(&[
                ("app", "web"),
                ("tier", "back"),
                ("io.kubernetes.pod.namespace", "shop"),
            ]),
        );
        assert_eq!(
            by_identity[&4242],
            labels(&[("app", "web"), ("io.kubernetes.pod.namespace", "shop")])
        );
        // Reserved identities are named, never merged with pod labels.
        assert_eq!(l.label_string(2).as_deref(), Some("reserved:world"));
        merge(&mut by_identity, 2, &labels(&[("app", "x")]));
        assert!(!by_identity.contains_key(&2));
    }

    #[test]
    fn json_has_the_fields_and_labels() {
        let db = labels(&[("app", "db")]);
        let mut l = Labeler::from_records([(vec!["10.0.2.7".parse().unwrap()], db.clone())]);
        let e = ev(EventKind::Drop(DropReason::PolicyDefaultDeny));
        l.learn(&e);
        let j = serde_json::to_value(json_event(&e, &l)).unwrap();
        assert_eq!(j["type"], "drop");
        assert_eq!(j["reason"], "policy-default-deny");
        assert_eq!(j["direction"], "egress");
        assert_eq!(j["protocol"], "TCP");
        assert_eq!(j["source"]["ip"], "10.0.1.5");
        assert_eq!(j["source"]["port"], 40000);
        assert_eq!(j["source"]["identity"], 4242);
        assert_eq!(j["source"]["labels"], serde_json::json!({}));
        assert_eq!(j["destination"]["identity"], 4243);
        assert_eq!(j["destination"]["labels"], serde_json::json!({"app": "db"}));
        assert_eq!(j["endpoint_id"], 1);
        assert_eq!(j["ts_ns"], 123);
        assert!(j.get("node").is_none() && j.get("vni").is_none());
        assert_eq!(
            j["summary"],
            "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243 app=db) TCP 80 \
             dropped: policy denied (default deny) (egress)"
        );
        let t = ev(EventKind::Trace(Trace::ToOverlay {
            node: "192.0.2.2".parse().unwrap(),
            vni: 4242,
        }));
        let j = serde_json::to_value(json_event(&t, &l)).unwrap();
        assert_eq!(
            (&j["type"], &j["reason"]),
            (&"trace".into(), &"to-overlay".into())
        );
        assert_eq!((&j["node"], &j["vni"]), (&"192.0.2.2".into(), &4242.into()));
    }

    #[test]
    fn reads_records_from_a_data_dir_a_network_dir_or_an_endpoints_dir() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("mesh");
        let ep = cni::endpoint::Endpoint {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/p".into(),
            host_ifname: cni::endpoint::host_ifname("c1", "eth0"),
            addresses: vec!["10.244.1.2".parse().unwrap()],
            labels: labels(&[("app", "web")]),
            pod_uid: None,
            ports: Vec::new(),
        };
        cni::endpoint::write(&cni::endpoint::path(&net, "c1", "eth0"), &ep).unwrap();
        std::fs::write(net.join("endpoints").join("broken.json"), "{").unwrap();
        for d in [dir.path().to_path_buf(), net.clone(), net.join("endpoints")] {
            let (records, errors) = read_records(&d);
            assert_eq!(
                records,
                vec![(ep.addresses.clone(), ep.labels.clone())],
                "{d:?}"
            );
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].contains("broken.json"), "{errors:?}");
        }
        let (records, errors) = read_records(&dir.path().join("missing"));
        assert!(records.is_empty() && errors.is_empty());
    }

    #[test]
    fn parses_timeouts() {
        assert_eq!(parse_secs("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err() && parse_secs("soon").is_err());
    }
}
