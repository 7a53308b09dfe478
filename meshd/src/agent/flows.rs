//! The node's flow records (`datapath.flows`, issue 17): with the datapath meshd owns, a
//! thread reads its events ring buffer (the one reader: `ironctl monitor` then has nothing to
//! read and `ironctl observe` is the way in), names both ends of each event and keeps the last
//! `datapath.flows` of them in a [`FlowRing`], which the API's `Flows` call serves (last N,
//! then follow).
//!
//! Naming ([`Namer`]): the merged view gives every cluster's endpoints (cluster, node) and
//! identities (labels), re-indexed when its generation changes; the CNI plugin's endpoint
//! records give this node's pods their `namespace/name` (re-read, at most every 2 s, when an
//! address of a local PodCIDR is not known yet).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::flows::{Flow, FlowEnd, FlowFilter, FlowRing};
use datapath::events::{EventError, EventReader};
use datapath::pin::PinRoot;
use tokio::sync::watch;

use crate::federation::MergedView;
use crate::identity::IdentityValue;
use crate::schema::Resource;

/// How long one wait on the ring buffer lasts (the stop flag is checked in between).
const POLL: Duration = Duration::from_millis(200);
/// The CNI records are re-read at most this often for an unknown local address.
const REREAD: Duration = Duration::from_secs(2);

/// The ring and who waits on it; shared by the collector and the API.
#[derive(Debug)]
pub struct FlowStore {
    ring: Mutex<FlowRing>,
    /// The next sequence number, published after each push (followers wait on it).
    next: watch::Sender<u64>,
}

impl FlowStore {
    pub fn new(capacity: usize) -> Arc<FlowStore> {
        Arc::new(FlowStore {
            ring: Mutex::new(FlowRing::new(capacity)),
            next: watch::channel(0).0,
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, FlowRing> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, f: Flow) {
        let next = {
            let mut r = self.ring();
            r.push(f);
            r.next_seq()
        };
        self.next.send_replace(next);
    }

    pub fn capacity(&self) -> usize {
        self.ring().capacity()
    }

    /// The last `n` flows `filter` passes and the sequence number after them.
    pub fn last(&self, n: usize, filter: &FlowFilter) -> (Vec<Flow>, u64) {
        let r = self.ring();
        let out = r.last(n, filter).into_iter().map(|(_, f)| f).collect();
        (out, r.next_seq())
    }

    /// The flows from `seq` on that `filter` passes, how many were lost, the next seq.
    pub fn since(&self, seq: u64, filter: &FlowFilter) -> (Vec<Flow>, u64, u64) {
        let r = self.ring();
        let (out, lost) = r.since(seq, filter);
        (
            out.into_iter().map(|(_, f)| f).collect(),
            lost,
            r.next_seq(),
        )
    }

    /// Changes whenever a flow is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }
}

/// What is known about one address of the merged view.
#[derive(Debug, Clone)]
struct Known {
    cluster: String,
    node: String,
}

/// Names both ends of an event (see the module docs).
#[derive(Debug)]
pub struct Namer {
    cluster: String,
    node: String,
    view: Arc<Mutex<Option<Arc<MergedView>>>>,
    generation: Option<u64>,
    by_ip: HashMap<IpAddr, Known>,
    labels: HashMap<u32, BTreeMap<String, String>>,
    cni_dir: Option<PathBuf>,
    pods: HashMap<IpAddr, String>,
    pods_read: Option<Instant>,
}

impl Namer {
    fn refresh_view(&mut self) {
        let Some(view) = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        view.with(|st| {
            if self.generation == Some(st.generation()) {
                return;
            }
            self.generation = Some(st.generation());
            self.by_ip.clear();
            self.labels.clear();
            for (_, r, v) in st.entries() {
                if let Resource::Identity(id) = r
                    && let Ok(v) = serde_json::from_slice::<IdentityValue>(v)
                {
                    self.labels.insert(
                        id.raw(),
                        v.labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    );
                }
            }
            for ep in st.endpoints() {
                self.by_ip.insert(
                    ep.ip,
                    Known {
                        cluster: ep.cluster.to_string(),
                        node: ep.node.to_string(),
                    },
                );
            }
        });
    }

    fn reread_pods(&mut self) {
        let Some(dir) = &self.cni_dir else {
            return;
        };
        if self.pods_read.is_some_and(|t| t.elapsed() < REREAD) {
            return;
        }
        self.pods_read = Some(Instant::now());
        let Ok(scan) = super::endpoints::cni::scan(dir) else {
            return;
        };
        self.pods.clear();
        for ep in scan.records.values() {
            let name = ep.labels.get(super::endpoints::cni::LABEL_POD_NAME);
            let ns = ep.labels.get(crate::objects::NAMESPACE_LABEL);
            if let (Some(ns), Some(name)) = (ns, name) {
                for a in &ep.addresses {
                    self.pods.insert(*a, format!("{ns}/{name}"));
                }
            }
        }
    }

    fn reserved(identity: u32) -> Option<BTreeMap<String, String>> {
        common::Identity::from_raw(identity)
            .ok()
            .and_then(common::Identity::reserved)
            .map(|r| [(format!("reserved:{}", r.name()), String::new())].into())
    }

    fn end(&self, ip: IpAddr, port: u16, identity: u32) -> FlowEnd {
        let known = self.by_ip.get(&ip);
        FlowEnd {
            ip,
            port,
            identity,
            labels: self
                .labels
                .get(&identity)
                .cloned()
                .or_else(|| Namer::reserved(identity))
                .unwrap_or_default(),
            pod: self.pods.get(&ip).cloned(),
            cluster: known.map(|k| k.cluster.clone()),
            node: known.map(|k| k.node.clone()),
        }
    }

    fn label_string(&self, identity: u32) -> Option<String> {
        let l = self
            .labels
            .get(&identity)
            .cloned()
            .or_else(|| Namer::reserved(identity))?;
        Some(
            l.iter()
                .filter(|(k, _)| !k.starts_with("io.ironmesh.cluster"))
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The flow record of `e`, observed now.
    pub fn flow(&mut self, e: &datapath::Event) -> Flow {
        self.refresh_view();
        let local_unknown = [e.src.0, e.dst.0].iter().any(|ip| {
            !self.pods.contains_key(ip)
                && self
                    .by_ip
                    .get(ip)
                    .is_some_and(|k| k.node == self.node && k.cluster == self.cluster)
        });
        if local_unknown || self.pods_read.is_none() {
            self.reread_pods();
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        e.flow(
            (&self.cluster, &self.node),
            now_ms,
            &|ip, port, id| self.end(ip, port, id),
            &|id| self.label_string(id),
        )
    }
}

/// The collector thread; stops (and is joined) on drop.
#[derive(Debug)]
pub struct FlowCollector {
    stop: Arc<AtomicBool>,
    view: Arc<Mutex<Option<Arc<MergedView>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlowCollector {
    /// Opens the events ring buffer under `pin_root` and starts reading it into `store`.
    pub fn spawn(
        pin_root: &Path,
        store: Arc<FlowStore>,
        (cluster, node): (String, String),
        cni_dir: Option<PathBuf>,
    ) -> Result<FlowCollector, String> {
        let root = PinRoot::new(pin_root).map_err(|e| format!("datapath.flows: {e}"))?;
        let mut reader = EventReader::open(&root).map_err(|e| format!("datapath.flows: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let view = Arc::new(Mutex::new(None));
        let mut namer = Namer {
            cluster,
            node,
            view: view.clone(),
            generation: None,
            by_ip: HashMap::new(),
            labels: HashMap::new(),
            cni_dir,
            pods: HashMap::new(),
            pods_read: None,
        };
        let capacity = store.capacity();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flows".into())
            .spawn(move || {
                let mut skipped = 0u64;
                while !stopping.load(Ordering::Relaxed) {
                    match reader.next_timeout(POLL) {
                        Ok(None) => {}
                        Ok(Some(e)) => store.push(namer.flow(&e)),
                        Err(e @ (EventError::Short { .. } | EventError::Family(_))) => {
                            skipped += 1;
                            if skipped.is_power_of_two() {
                                tracing::warn!(skipped, "flows: skipping an event record: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::error!(
                                "flows: reading the datapath's events: {e}; no more flow records"
                            );
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("datapath.flows: starting the reader thread: {e}"))?;
        tracing::info!(pin_root = %pin_root.display(), capacity, "keeping the node's flow records");
        Ok(FlowCollector {
            stop,
            view,
            thread: Some(thread),
        })
    }

    /// The merged view to name ends from (set once it exists).
    pub fn set_view(&self, v: Arc<MergedView>) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
}

impl Drop for FlowCollector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
