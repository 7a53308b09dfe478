//! bgpd's adverts from meshd: the node's PodCIDRs and LoadBalancer VIPs.
//!
//! The [`Sink`] half only records the desired adverts (it never fails: bgpd being away is not
//! the reconciler's business) and wakes the connection task, which converges bgpd to them
//! over its API socket (`AddAdverts`/`RemoveAdverts`, see `api/proto/bgp.proto`):
//!
//! - while connected, only differences are sent, in one batch per wake-up;
//! - bgpd keeps API adverts in memory only, so after every (re)connect, and whenever the
//!   socket file was replaced (bgpd restarted between two calls), everything desired is
//!   sent again (resync);
//! - every prefix meshd may have left at bgpd is remembered in `<state_dir>/bgp-adverts.json`,
//!   so a resync (even after a meshd restart) also removes the ones no longer desired; those
//!   only once the desired state is complete ([`BgpAdverts::set_complete`], after the merged
//!   view was listed), so a restarting meshd never withdraws its own PodCIDR meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::bgp as pb;
use api::bgp::bgp_client::BgpClient;
use ipnet::IpNet;
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;

use crate::reconcile::{Advert, Sink, SinkError};

/// How often the socket file is checked for a restarted bgpd.
const PROBE: Duration = Duration::from_millis(500);
/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why talking to bgpd failed (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum BgpSinkError {
    #[error("cannot reach bgpd's API at {path}: {detail}; is bgpd running with --api {path}?")]
    Connect { path: PathBuf, detail: String },
    #[error("bgpd's API at {path} refused {call}: {detail}")]
    Call {
        path: PathBuf,
        call: &'static str,
        detail: String,
    },
}

#[derive(Debug, Default)]
struct State {
    desired: Mutex<BTreeMap<IpNet, Advert>>,
    wake: Notify,
    /// The desired adverts are complete (the merged view was listed and applied): until then
    /// only what this meshd itself withdrew is removed, never what only the ledger names,
    /// so a restarting meshd does not withdraw the PodCIDR it is about to re-learn.
    complete: AtomicBool,
}

/// What the connection task reports (for status and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpSinkStatus {
    pub connected: bool,
    /// Adverts bgpd has from meshd (as far as meshd knows).
    pub applied: usize,
    /// Full resyncs done (one per connection to a bgpd).
    pub resyncs: u64,
    pub last_error: Option<String>,
}

/// The sink the reconcile driver writes to.
#[derive(Debug, Clone)]
pub struct BgpAdvertSink(Arc<State>);

impl BgpAdvertSink {
    /// See [`BgpAdverts::set_complete`].
    pub fn set_complete(&self) {
        self.0.complete.store(true, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

impl Sink<IpNet, Advert> for BgpAdvertSink {
    fn upsert(&mut self, key: &IpNet, value: &Advert) -> Result<(), SinkError> {
        self.0
            .desired
            .lock()
            .expect("adverts lock")
            .insert(*key, value.clone());
        self.0.wake.notify_one();
        Ok(())
    }

    fn remove(&mut self, key: &IpNet) -> Result<(), SinkError> {
        self.0.desired.lock().expect("adverts lock").remove(key);
        self.0.wake.notify_one();
        Ok(())
    }
}

/// The connection task; dropping it stops the task (adverts stay at bgpd).
#[derive(Debug)]
pub struct BgpAdverts {
    sink: BgpAdvertSink,
    status: watch::Receiver<BgpSinkStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BgpAdverts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BgpAdverts {
    /// Starts converging the bgpd listening on `socket`; `retry` is the wait between
    /// connection attempts; `ledger` is where the prefixes sent are remembered.
    pub fn spawn(socket: PathBuf, ledger: PathBuf, retry: Duration) -> Self {
        let state = Arc::new(State::default());
        let (tx, status) = watch::channel(BgpSinkStatus::default());
        let task = tokio::spawn(run(state.clone(), socket, ledger, retry, tx));
        Self {
            sink: BgpAdvertSink(state),
            status,
            task,
        }
    }

    pub fn sink(&self) -> BgpAdvertSink {
        self.sink.clone()
    }

    /// Says the desired adverts are complete: prefixes only the ledger names may go now.
    pub fn set_complete(&self) {
        self.sink.set_complete();
    }

    pub fn status(&self) -> watch::Receiver<BgpSinkStatus> {
        self.status.clone()
    }
}

/// Identifies one socket file: a restarted bgpd binds a new one.
fn socket_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

fn load_ledger(path: &Path) -> BTreeSet<IpNet> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice::<Vec<IpNet>>(&b)
            .map(|v| v.into_iter().collect())
            .unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a malformed advert ledger");
                BTreeSet::new()
            }),
        Err(_) => BTreeSet::new(),
    }
}

fn save_ledger(path: &Path, sent: &BTreeSet<IpNet>) {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(&sent.iter().collect::<Vec<_>>()).expect("prefixes serialize");
    let r = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the adverts sent to bgpd");
    }
}

/// The advert as bgpd's API takes it: the prefix with its communities and LOCAL_PREF.
fn to_pb(prefix: &IpNet, advert: &Advert) -> pb::Advert {
    let a = &advert.attributes;
    pb::Advert {
        prefix: prefix.to_string(),
        communities: a.communities.iter().map(ToString::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(ToString::to_string)
            .collect(),
        local_pref: a.local_pref,
        pool: String::new(),
    }
}

struct Conn {
    client: BgpClient<Channel>,
    path: PathBuf,
    id: Option<(u64, u64, i64, i64)>,
}

impl Conn {
    async fn open(path: &Path) -> Result<Conn, BgpSinkError> {
        let id = socket_id(path);
        let err = |detail: String| BgpSinkError::Connect {
            path: path.to_path_buf(),
            detail,
        };
        let ch = tokio::time::timeout(CALL_TIMEOUT, api::unix::connect(path))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(format!("{e} ({:?})", std::error::Error::source(&e))))?;
        Ok(Conn {
            client: BgpClient::new(ch),
            path: path.to_path_buf(),
            id,
        })
    }

    fn call_err(&self, call: &'static str, detail: String) -> BgpSinkError {
        BgpSinkError::Call {
            path: self.path.clone(),
            call,
            detail,
        }
    }

    async fn add(&mut self, adverts: Vec<pb::Advert>) -> Result<(), BgpSinkError> {
        let req = pb::AddAdvertsRequest { adverts };
        match tokio::time::timeout(CALL_TIMEOUT, self.client.add_adverts(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(self.call_err("AddAdverts", s.message().to_string())),
            Err(_) => Err(self.call_err("AddAdverts", "timed out".into())),
        }
    }

    async fn remove(&mut self, prefixes: &[IpNet]) -> Result<(), BgpSinkError> {
        let req = pb::RemoveAdvertsRequest {
            prefixes: prefixes.iter().map(ToString::to_string).collect(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, self.client.remove_adverts(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(self.call_err("RemoveAdverts", s.message().to_string())),
            Err(_) => Err(self.call_err("RemoveAdverts", "timed out".into())),
        }
    }

    /// Whether the socket file is still the one connected to.
    fn same_bgpd(&self) -> bool {
        self.id.is_some() && socket_id(&self.path) == self.id
    }
}

/// Sends bgpd the differences between `sent` (what it may have from us) and `want`: new
/// prefixes and prefixes whose attributes changed (bgpd replaces those), and removals. Until
/// `complete`, only prefixes sent on this connection are removed.
async fn converge(
    conn: &mut Conn,
    sent: &mut BTreeSet<IpNet>,
    applied: &mut BTreeMap<IpNet, pb::Advert>,
    want: &BTreeMap<IpNet, pb::Advert>,
    complete: bool,
    ledger: &Path,
) -> Result<(), BgpSinkError> {
    let add: Vec<(&IpNet, &pb::Advert)> = want
        .iter()
        .filter(|(p, a)| applied.get(p) != Some(a))
        .collect();
    let remove: Vec<IpNet> = sent
        .iter()
        .filter(|p| !want.contains_key(p) && (complete || applied.contains_key(p)))
        .copied()
        .collect();
    if add.is_empty() && remove.is_empty() {
        return Ok(());
    }
    let added: Vec<IpNet> = add.iter().map(|(p, _)| **p).collect();
    if !add.is_empty() {
        // Remembered before sending: a prefix bgpd may have must be in the ledger.
        sent.extend(added.iter().copied());
        save_ledger(ledger, sent);
        conn.add(add.iter().map(|(_, a)| (*a).clone()).collect())
            .await?;
        applied.extend(add.into_iter().map(|(p, a)| (*p, a.clone())));
    }
    if !remove.is_empty() {
        conn.remove(&remove).await?;
        for p in &remove {
            sent.remove(p);
            applied.remove(p);
        }
        save_ledger(ledger, sent);
    }
    tracing::debug!(added = ?added, removed = ?remove, "bgpd adverts converged");
    Ok(())
}

async fn run(
    state: Arc<State>,
    socket: PathBuf,
    ledger: PathBuf,
    retry: Duration,
    status: watch::Sender<BgpSinkStatus>,
) {
    let mut sent = load_ledger(&ledger);
    let mut logged = false;
    loop {
        let mut conn = match Conn::open(&socket).await {
            Ok(c) => c,
            Err(e) => {
                if !logged {
                    tracing::warn!("{e}; retrying every {}s", retry.as_secs_f32());
                    logged = true;
                }
                status.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        logged = false;
        // A new connection may be a new bgpd: it has nothing from us, or an old meshd's
        // adverts. Send everything desired; remove everything else we may have sent.
        let mut applied: BTreeMap<IpNet, pb::Advert> = BTreeMap::new();
        let mut first = true;
        let err = loop {
            let want: BTreeMap<IpNet, pb::Advert> = state
                .desired
                .lock()
                .expect("adverts lock")
                .iter()
                .map(|(p, a)| (*p, to_pb(p, a)))
                .collect();
            let complete = state.complete.load(Ordering::SeqCst);
            if let Err(e) =
                converge(&mut conn, &mut sent, &mut applied, &want, complete, &ledger).await
            {
                break e;
            }
            if first {
                first = false;
                tracing::info!(adverts = applied.len(), socket = %socket.display(), "bgpd adverts resynced");
                status.send_modify(|s| {
                    s.connected = true;
                    s.resyncs += 1;
                    s.last_error = None;
                });
            }
            status.send_modify(|s| s.applied = applied.len());
            tokio::select! {
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep(PROBE) => {}
            }
            if !conn.same_bgpd() {
                break BgpSinkError::Connect {
                    path: socket.clone(),
                    detail: "the socket was replaced (bgpd restarted)".into(),
                };
            }
        };
        tracing::warn!("{err}; reconnecting and resyncing");
        status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(err.to_string());
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
