//! The node's flow records (`datapath.flows`, issue 17): with the datapath meshd owns, a
//! thread reads its events ring buffer (the one reader: `ironctl monitor` then has nothing to
//! read and `ironctl observe` is the way in), names both ends of each event and keeps the last
//! `datapath.flows` of them in a [`FlowRing`], which the API's `Flows` call serves (last N,
//! then follow).
//!
//! Naming ([`Namer`]): the merged view gives every cluster's endpoints (cluster, node, pod
//! `namespace/name`) and identities (labels), re-indexed when its generation changes; the CNI
//! plugin's endpoint records name this node's pods before their records are published
//! (re-read, at most every 2 s, when a local address is not named yet).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::mesh as pb;
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
    /// Every flow read since meshd started, by (type, reason, direction): the metrics.
    counts: Mutex<BTreeMap<(String, String, String), u64>>,
    /// The next sequence number, published after each push (followers wait on it).
    next: watch::Sender<u64>,
}

impl FlowStore {
    pub fn new(capacity: usize) -> Arc<FlowStore> {
        Arc::new(FlowStore {
            ring: Mutex::new(FlowRing::new(capacity)),
            counts: Mutex::new(BTreeMap::new()),
            next: watch::channel(0).0,
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, FlowRing> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, f: Flow) {
        {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let dir = f.direction.clone().unwrap_or_default();
            *c.entry((f.kind.clone(), f.reason.clone(), dir))
                .or_default() += 1;
        }
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

    /// How many flow records the ring holds now.
    pub fn len(&self) -> usize {
        self.ring().len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring().is_empty()
    }

    /// Flows read since meshd started by (type, reason, direction; "" when none).
    pub fn counts(&self) -> BTreeMap<(String, String, String), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    pod: Option<String>,
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
                        pod: ep.pod.clone(),
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
            if let Some(pod) = ep.pod_name() {
                for a in &ep.addresses {
                    self.pods.insert(*a, pod.clone());
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
            pod: self
                .pods
                .get(&ip)
                .cloned()
                .or_else(|| known.and_then(|k| k.pod.clone())),
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

/// The API's filter argument: JSON of [`FlowFilter`], checked.
pub fn parse_filter(json: &str) -> Result<FlowFilter, tonic::Status> {
    let filter: FlowFilter = if json.is_empty() {
        FlowFilter::default()
    } else {
        serde_json::from_str(json)
            .map_err(|e| tonic::Status::invalid_argument(format!("filter: {e}")))?
    };
    filter.validate().map_err(tonic::Status::invalid_argument)?;
    Ok(filter)
}

type Sent = Result<pb::FlowsResponse, tonic::Status>;
pub type FlowStream = tokio_stream::wrappers::ReceiverStream<Sent>;

fn flow_msg(f: &Flow) -> pb::FlowsResponse {
    pb::FlowsResponse {
        flow_json: serde_json::to_string(f).unwrap_or_default(),
        ..Default::default()
    }
}

/// This node's flows: the last `last` passing `filter`, then with `follow` each new one.
pub fn stream_node(
    store: Arc<FlowStore>,
    last: usize,
    follow: bool,
    filter: FlowFilter,
) -> FlowStream {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut changed = store.subscribe();
    let (first, mut next) = store.last(last, &filter);
    tokio::spawn(async move {
        for f in &first {
            if tx.send(Ok(flow_msg(f))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            tokio::select! {
                c = changed.changed() => if c.is_err() { return },
                () = tx.closed() => return,
            }
            let (flows, lost, after) = store.since(next, &filter);
            next = after;
            if lost > 0 {
                let m = pb::FlowsResponse {
                    lost,
                    ..Default::default()
                };
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            for f in &flows {
                if tx.send(Ok(flow_msg(f))).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The `NodeFlows` service: this node's flows to relays (`observe.serve`).
#[derive(Debug)]
pub struct NodeFlowsApi {
    shared: Arc<super::state::Shared>,
}

#[tonic::async_trait]
impl pb::node_flows_server::NodeFlows for NodeFlowsApi {
    type FlowsStream = FlowStream;

    async fn flows(
        &self,
        req: tonic::Request<pb::FlowsRequest>,
    ) -> Result<tonic::Response<FlowStream>, tonic::Status> {
        let r = req.into_inner();
        let filter = parse_filter(&r.filter_json)?;
        let store = self.shared.flows().ok_or_else(|| {
            tonic::Status::failed_precondition(format!(
                "node {}/{} keeps no flow records",
                self.shared.cluster, self.shared.node
            ))
        })?;
        Ok(tonic::Response::new(stream_node(
            store,
            r.last as usize,
            r.follow,
            filter,
        )))
    }
}

/// Binds `addr` now (a bad address fails at start) and returns the `NodeFlows` server, which
/// serves until `shutdown` completes.
pub async fn serve_node_flows(
    shared: Arc<super::state::Shared>,
    addr: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<
    impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    String,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("observe.serve: binding {addr}: {e}"))?;
    tracing::info!(%addr, "serving this node's flows to relays");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    Ok(tonic::transport::Server::builder()
        .add_service(pb::node_flows_server::NodeFlowsServer::new(NodeFlowsApi {
            shared,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown))
}

/// How long a relay waits for a node to connect and to answer a `--last` request.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a node stopped answering a following relay tries it again.
const NODE_RETRY: Duration = Duration::from_secs(5);

/// A node a relay reads: `cluster/node` and where its flows are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    pub name: String,
    pub addr: std::net::SocketAddr,
}

/// The nodes of `nodes` a relay can reach at `port`: each node's IPv4 address, except
/// addresses no node can have (unspecified, loopback, multicast, broadcast), which a hostile
/// record could name to turn the relay against the host it runs on.
pub fn relay_targets(nodes: &[crate::nodes::NodeRecord], port: u16) -> Vec<RelayTarget> {
    let mut out: Vec<RelayTarget> = nodes
        .iter()
        .filter_map(|n| {
            let ip = n.ipv4?;
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                tracing::warn!(node = %n.name, cluster = %n.cluster, %ip, "relay: not reading a node at this address");
                return None;
            }
            Some(RelayTarget {
                name: format!("{}/{}", n.cluster, n.name),
                addr: std::net::SocketAddr::new(ip.into(), port),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn node_stream(
    t: &RelayTarget,
    req: pb::FlowsRequest,
) -> Result<tonic::Streaming<pb::FlowsResponse>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", t.addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(NODE_TIMEOUT);
    let ch = tokio::time::timeout(NODE_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| format!("no answer within {}s", NODE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut c = pb::node_flows_client::NodeFlowsClient::new(ch);
    let r = tokio::time::timeout(NODE_TIMEOUT, c.flows(req))
        .await
        .map_err(|_| format!("no answer within {}s", NODE_TIMEOUT.as_secs()))?
        .map_err(|s| s.message().to_string())?;
    Ok(r.into_inner())
}

/// A node's message as the relay passes it on: a flow that parses and was observed on that
/// node (a node, possibly of another cluster, speaks only for itself), re-encoded; anything
/// else is dropped with a warning.
fn checked(t: &RelayTarget, m: &pb::FlowsResponse) -> Option<Flow> {
    if m.flow_json.is_empty() {
        return None;
    }
    match serde_json::from_str::<Flow>(&m.flow_json) {
        Ok(f) if format!("{}/{}", f.cluster, f.node) == t.name => Some(f),
        Ok(f) => {
            tracing::warn!(node = %t.name, claimed = %format!("{}/{}", f.cluster, f.node),
                "relay: dropping a flow a node sent as another node's");
            None
        }
        Err(e) => {
            tracing::warn!(node = %t.name, error = %e, "relay: dropping a flow that is not one");
            None
        }
    }
}

fn node_error(t: &RelayTarget, why: &str) -> pb::FlowsResponse {
    pb::FlowsResponse {
        node_error: format!("{} ({}): {why}", t.name, t.addr),
        ..Default::default()
    }
}

/// One node's last `last` flows (a `--last` request to it).
async fn node_last(t: RelayTarget, last: u32, filter_json: String) -> Result<Vec<Flow>, String> {
    let req = pb::FlowsRequest {
        last,
        follow: false,
        filter_json,
        mesh: false,
    };
    let read = async {
        let mut s = node_stream(&t, req).await?;
        let mut out = Vec::new();
        while let Some(m) = s.message().await.map_err(|e| e.message().to_string())? {
            if let Some(f) = checked(&t, &m) {
                out.push(f);
            }
        }
        Ok(out)
    };
    tokio::time::timeout(NODE_TIMEOUT * 2, read)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", NODE_TIMEOUT.as_secs() * 2)))
}

/// The relay: the last `last` flows of every target merged by time (each node's own
/// answer checked), then with `follow` every target's new flows as they come. A target that
/// does not answer is reported (`node_error`) and, when following, tried again every 5 s;
/// the others go on.
pub fn relay(targets: Vec<RelayTarget>, last: u32, follow: bool, filter: FlowFilter) -> FlowStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Sent>(1024);
    let filter_json = serde_json::to_string(&filter).unwrap_or_default();
    tokio::spawn(async move {
        // Followers first (from now on), so nothing falls between the history and them.
        let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<pb::FlowsResponse>(1024);
        let mut followers = Vec::new();
        if follow {
            for t in &targets {
                followers.push(tokio::spawn(follow_node(
                    t.clone(),
                    filter_json.clone(),
                    live_tx.clone(),
                )));
            }
        }
        drop(live_tx);
        let mut history = Vec::new();
        let answers = futures_join(
            targets
                .iter()
                .map(|t| node_last(t.clone(), last, filter_json.clone())),
        )
        .await;
        for (t, a) in targets.iter().zip(answers) {
            match a {
                Ok(flows) => history.extend(flows.into_iter().filter(|f| filter.matches(f))),
                Err(why) => {
                    if tx.send(Ok(node_error(t, &why))).await.is_err() {
                        return;
                    }
                }
            }
        }
        history.sort_by_key(|f| f.time_ms);
        let skip = history.len().saturating_sub(last as usize);
        let history: Vec<Flow> = history.into_iter().skip(skip).collect();
        for f in &history {
            if tx.send(Ok(flow_msg(f))).await.is_err() {
                return;
            }
        }
        if follow {
            loop {
                tokio::select! {
                    m = live_rx.recv() => match m {
                        Some(m) => {
                            // A flow of the history may come again from its follower.
                            if !m.flow_json.is_empty()
                                && let Ok(f) = serde_json::from_str::<Flow>(&m.flow_json)
                                && history.contains(&f)
                            {
                                continue;
                            }
                            if tx.send(Ok(m)).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = tx.closed() => break,
                }
            }
        }
        for f in followers {
            f.abort();
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Follows one node until the relay's client goes, reconnecting after errors.
async fn follow_node(
    t: RelayTarget,
    filter_json: String,
    out: tokio::sync::mpsc::Sender<pb::FlowsResponse>,
) {
    let mut reported = false;
    loop {
        let req = pb::FlowsRequest {
            last: 0,
            follow: true,
            filter_json: filter_json.clone(),
            mesh: false,
        };
        let why = match node_stream(&t, req).await {
            Ok(mut s) => {
                if reported {
                    tracing::info!(node = %t.name, "relay: the node answers again");
                    reported = false;
                }
                loop {
                    match s.message().await {
                        Ok(Some(m)) => {
                            // Only what the node may say: its own flows, or a loss count.
                            let m = match checked(&t, &m) {
                                Some(f) => flow_msg(&f),
                                None if m.flow_json.is_empty() && m.lost > 0 => pb::FlowsResponse {
                                    lost: m.lost,
                                    ..Default::default()
                                },
                                None => continue,
                            };
                            if out.send(m).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the node ended the stream".to_string(),
                        Err(e) => break e.message().to_string(),
                    }
                }
            }
            Err(why) => why,
        };
        if !reported {
            reported = true;
            if out.send(node_error(&t, &why)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(NODE_RETRY) => {}
            () = out.closed() => return,
        }
    }
}

/// Runs every node's `--last` request at once; their answers in order.
async fn futures_join(
    fs: impl Iterator<
        Item = impl std::future::Future<Output = Result<Vec<Flow>, String>> + Send + 'static,
    >,
) -> Vec<Result<Vec<Flow>, String>> {
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| Err(format!("the relay task failed: {e}"))),
        );
    }
    out
}

/// The flows page (`observe.ui`): a plain HTML file with its script, served as is.
pub const PAGE: &str = include_str!("ui/flows.html");
/// How many flows the page gets (the relay's last, merged).
const PAGE_FLOWS: u32 = 1000;

/// The page's answers: `/` the page, `/flows.json` the relay's last flows of every node of
/// every cluster and the nodes that did not answer (`{"flows": [...], "errors": [...]}`).
pub async fn page_answer(
    shared: Arc<super::state::Shared>,
    route: api::metrics::Route,
) -> api::metrics::Answer {
    use api::metrics::Route;
    match route {
        Route::Index => Some(Some(("text/html; charset=utf-8", PAGE.to_string()))),
        Route::Flows => {
            if !shared.ready() {
                return Some(None);
            }
            let targets = relay_targets(&shared.node_records(), shared.observe().port);
            let mut rx = relay(targets, PAGE_FLOWS, false, FlowFilter::default()).into_inner();
            let mut flows = Vec::new();
            let mut errors = Vec::new();
            while let Some(Ok(m)) = rx.recv().await {
                if !m.node_error.is_empty() {
                    errors.push(m.node_error);
                } else if let Ok(f) = serde_json::from_str::<serde_json::Value>(&m.flow_json) {
                    flows.push(f);
                }
            }
            let body = serde_json::json!({"flows": flows, "errors": errors}).to_string();
            Some(Some(("application/json", body)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::NodeRecord;

    fn node(cluster: &str, name: &str, ip: Option<&str>) -> NodeRecord {
        let mut n = NodeRecord::new(cluster.parse().unwrap(), name.parse().unwrap());
        n.ipv4 = ip.map(|i| i.parse().unwrap());
        n
    }

    #[test]
    fn a_relay_reads_nodes_at_their_address_never_at_one_no_node_can_have() {
        let nodes = [
            node("red", "n2", Some("192.0.2.12")),
            node("blue", "n1", Some("198.51.100.11")),
            node("blue", "evil", Some("127.0.0.1")),
            node("blue", "zero", Some("0.0.0.0")),
            node("blue", "multi", Some("224.0.0.1")),
            node("blue", "bcast", Some("255.255.255.255")),
            node("red", "v6only", None),
        ];
        let t = relay_targets(&nodes, 4244);
        let got: Vec<(String, String)> = t
            .iter()
            .map(|t| (t.name.clone(), t.addr.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("blue/n1".to_string(), "198.51.100.11:4244".to_string()),
                ("red/n2".to_string(), "192.0.2.12:4244".to_string()),
            ]
        );
    }

    #[test]
    fn a_node_speaks_only_for_itself() {
        let t = RelayTarget {
            name: "blue/n1".into(),
            addr: "198.51.100.11:4244".parse().unwrap(),
        };
        let end = FlowEnd {
            ip: "10.2.0.5".parse().unwrap(),
            port: 80,
            identity: 1,
            labels: Default::default(),
            pod: None,
            cluster: None,
            node: None,
        };
        let mut f = Flow {
            time_ms: 1,
            cluster: "blue".into(),
            node: "n1".into(),
            verdict: common::flows::FlowVerdict::Dropped,
            kind: "drop".into(),
            reason: "policy-denied".into(),
            direction: None,
            protocol: "TCP".into(),
            source: end.clone(),
            destination: end,
            service_id: 0,
            summary: String::new(),
        };
        let msg = |f: &Flow| flow_msg(f);
        assert_eq!(checked(&t, &msg(&f)), Some(f.clone()));
        f.cluster = "red".into();
        assert_eq!(checked(&t, &msg(&f)), None, "another cluster's flow");
        let junk = pb::FlowsResponse {
            flow_json: "{\"time_ms\":".into(),
            ..Default::default()
        };
        assert_eq!(checked(&t, &junk), None);
    }
}
