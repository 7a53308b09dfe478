//! The mirror of one remote cluster: the elected meshd reflects the remote's
//! `clusters/<remote>/` (read-only) and copies it into the local `mirror/<remote>/`.
//!
//! [`MirrorState`] is the sans-IO core. It starts from what the local mirror already holds
//! (a previous leader's work), so a takeover writes only differences: nothing is downloaded
//! into an empty mirror twice. After each complete remote listing it deletes the mirrored keys
//! the remote no longer has, then writes the `synced` marker with the remote revision.
//!
//! [`MirrorController`] is the I/O shell: election, leader term, batching of writes into
//! transactions fenced by the election key, and the `status` key (stale while the remote etcd
//! is unreachable; the mirrored state is kept as it was).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::ClusterName;
use etcd_client::{Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::election::{self, Campaign, ElectionConfig, Leadership};
use super::trust::{self, Refusal, Trust};
use crate::kvstore::{Decoder, Kv, KvConfig, KvStore, Reflector, ReflectorConfig, ReflectorEvent};
use crate::schema::{Key, Resource, Scope};

/// The value of `mirror/<remote>/synced`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedValue {
    /// The remote etcd revision the mirror was complete at.
    pub remote_revision: i64,
    pub entries: usize,
    pub at_unix_ms: u64,
}

/// The value of `mirror/<remote>/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatusValue {
    /// The remote etcd is unreachable; the mirror holds the last good state.
    pub stale: bool,
    /// Since when it is stale (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since_unix_ms: Option<u64>,
    /// The last complete remote revision mirrored.
    pub remote_revision: i64,
    /// The meshd that writes the mirror.
    pub leader: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_unix_ms: u64,
    /// The remote's records the mirror refuses now (checked on arrival against what the remote
    /// may claim; never written to the local mirror): at most [`MAX_PUBLISHED_REFUSALS`]
    /// reasons of at most [`MAX_REFUSAL_LEN`] bytes each, so every node's status lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// How many records the mirror refuses now (all of them, listed or not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many refusals the mirror's status key lists (all are counted).
pub const MAX_PUBLISHED_REFUSALS: usize = 20;
/// The longest refusal reason the status key carries (longer ones are cut, marked `…`).
pub const MAX_REFUSAL_LEN: usize = 300;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads a remote cluster's own keys, as they are to be mirrored: every resource of
/// `clusters/<remote>/` except the remote's own election keys. Node records must name the
/// remote cluster (a remote cannot inject another cluster's nodes); other values must be JSON.
#[derive(Debug, Clone)]
pub struct MirrorDecoder {
    pub remote: ClusterName,
}

impl Decoder for MirrorDecoder {
    type Key = Resource;
    type Value = Vec<u8>;

    fn ignore(&self, key: &[u8]) -> bool {
        matches!(
            Key::parse_bytes(key),
            Ok(Key::Resource { resource, .. }) if !resource.kind().is_mirrored()
        )
    }

    fn decode_key(&self, key: &[u8]) -> Result<Resource, String> {
        match Key::parse_bytes(key).map_err(|e| e.to_string())? {
            Key::Resource {
                scope: Scope::Cluster(c),
                resource,
            } if c == self.remote && resource.kind().is_mirrored() => Ok(resource),
            other => Err(format!(
                "not a key of cluster {} to mirror: {other:?}",
                self.remote
            )),
        }
    }

    fn decode_value(&self, key: &Resource, value: &[u8]) -> Result<Vec<u8>, String> {
        crate::records::check_value(&self.remote, key, value)?;
        Ok(value.to_vec())
    }
}

/// One write to the local mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl MirrorOp {
    fn key(&self) -> &str {
        match self {
            MirrorOp::Put { key, .. } | MirrorOp::Delete { key } => key,
        }
    }

    fn txn_op(&self) -> TxnOp {
        match self {
            MirrorOp::Put { key, value } => TxnOp::put(key.clone(), value.clone(), None),
            MirrorOp::Delete { key } => TxnOp::delete(key.clone(), None),
        }
    }
}

/// What the local mirror holds and what the remote has, and the writes that reconcile them.
///
/// With a [`Trust`] ([`MirrorState::checked`]), every record is checked on arrival by
/// [`trust::check_static`] (the claims alone; what depends on the local records is checked again
/// on use by the merged view): a refused record is never written to the local mirror, one that
/// becomes invalid is deleted from it, and the refusals go into the status key.
#[derive(Debug)]
pub struct MirrorState {
    remote: ClusterName,
    trust: Option<Trust>,
    /// The remote's records refused now, with the reason.
    refused: BTreeMap<Resource, Refusal>,
    /// The refusals changed since the status was last written.
    refusals_changed: bool,
    /// Records refused (a record refused again for another reason counts again).
    refused_total: u64,
    /// A complete remote listing was seen in this term: until then `refused` is partial, and
    /// the status keeps the refusals the previous leader published.
    listed: bool,
    /// What the local etcd holds under `mirror/<remote>/` (after our writes).
    mirrored: BTreeMap<Resource, Vec<u8>>,
    /// What the remote reflector has reported (its cache).
    seen: BTreeMap<Resource, Vec<u8>>,
    /// The status key's value as last read or written.
    status: Option<MirrorStatusValue>,
    synced: Option<SyncedValue>,
    puts: u64,
    deletes: u64,
}

impl MirrorState {
    pub fn new(remote: ClusterName) -> Self {
        Self {
            remote,
            trust: None,
            refused: BTreeMap::new(),
            refusals_changed: false,
            refused_total: 0,
            listed: false,
            mirrored: BTreeMap::new(),
            seen: BTreeMap::new(),
            status: None,
            synced: None,
            puts: 0,
            deletes: 0,
        }
    }

    /// A state that mirrors only the records that pass the static checks against what the
    /// remote may claim in `trust` (a remote `trust` does not name: shape checks only).
    pub fn checked(remote: ClusterName, trust: Trust) -> Self {
        Self {
            trust: Some(trust),
            ..Self::new(remote)
        }
    }

    /// The remote's records refused now.
    pub fn refused(&self) -> &BTreeMap<Resource, Refusal> {
        &self.refused
    }

    /// How many times a record was refused on arrival.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    fn check(&self, resource: &Resource, value: &[u8]) -> Result<(), Refusal> {
        match &self.trust {
            Some(t) => match t.remotes.get(&self.remote) {
                Some(claims) => trust::check_static(t, claims, resource, value),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Starts from a listing of the local `mirror/<remote>/` prefix.
    pub fn load(&mut self, kvs: &[Kv]) {
        self.mirrored.clear();
        self.seen.clear();
        for kv in kvs {
            match Key::parse_bytes(&kv.key) {
                Ok(Key::Resource {
                    scope: Scope::Mirror(r),
                    resource,
                }) if r == self.remote => {
                    self.mirrored.insert(resource, kv.value.clone());
                }
                Ok(Key::MirrorSynced { remote }) if remote == self.remote => {
                    self.synced = serde_json::from_slice(&kv.value).ok();
                }
                Ok(Key::MirrorStatus { remote }) if remote == self.remote => {
                    self.status = serde_json::from_slice(&kv.value).ok();
                }
                _ => tracing::warn!(
                    key = %String::from_utf8_lossy(&kv.key),
                    "unexpected key in the mirror prefix; left alone"
                ),
            }
        }
    }

    pub fn mirrored(&self) -> &BTreeMap<Resource, Vec<u8>> {
        &self.mirrored
    }

    /// Entry puts and deletes written so far (markers and status not counted).
    pub fn writes(&self) -> (u64, u64) {
        (self.puts, self.deletes)
    }

    pub fn status(&self) -> Option<&MirrorStatusValue> {
        self.status.as_ref()
    }

    fn key(&self, r: &Resource) -> String {
        Key::mirror(&self.remote, r.clone()).to_string()
    }

    /// The writes one reflector event calls for. `leader` names us in the status.
    pub fn on_event(
        &mut self,
        ev: ReflectorEvent<Resource, Vec<u8>>,
        leader: &str,
    ) -> Vec<MirrorOp> {
        let mut ops = Vec::new();
        match ev {
            ReflectorEvent::Upsert { key, value } => {
                if let Err(r) = self.check(&key, &value) {
                    if self.refused.get(&key) != Some(&r) {
                        tracing::warn!(remote = %self.remote, refusal = %r, "remote record refused on arrival; not mirrored");
                        self.refused_total += 1;
                        self.refusals_changed = true;
                    }
                    self.refused.insert(key.clone(), r);
                    // Never half-applied: a record that became invalid leaves the mirror.
                    if self.mirrored.remove(&key).is_some() {
                        ops.push(MirrorOp::Delete {
                            key: self.key(&key),
                        });
                        self.deletes += 1;
                    }
                    self.seen.insert(key, value);
                    return ops;
                }
                if self.refused.remove(&key).is_some() {
                    self.refusals_changed = true;
                }
                if self.mirrored.get(&key) != Some(&value) {
                    ops.push(MirrorOp::Put {
                        key: self.key(&key),
                        value: value.clone(),
                    });
                    self.puts += 1;
                    self.mirrored.insert(key.clone(), value.clone());
                }
                self.seen.insert(key, value);
            }
            ReflectorEvent::Delete { key, .. } => {
                self.seen.remove(&key);
                if self.refused.remove(&key).is_some() {
                    self.refusals_changed = true;
                }
                if self.mirrored.remove(&key).is_some() {
                    ops.push(MirrorOp::Delete {
                        key: self.key(&key),
                    });
                    self.deletes += 1;
                }
            }
            ReflectorEvent::Synced { revision, entries } => {
                // A complete listing: whatever is mirrored and not seen vanished from the
                // remote (possibly while no one was mirroring).
                let gone: Vec<Resource> = self
                    .mirrored
                    .keys()
                    .filter(|k| !self.seen.contains_key(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.mirrored.remove(&k);
                    ops.push(MirrorOp::Delete { key: self.key(&k) });
                    self.deletes += 1;
                }
                let synced = SyncedValue {
                    remote_revision: revision,
                    entries,
                    at_unix_ms: now_unix_ms(),
                };
                ops.push(MirrorOp::Put {
                    key: Key::MirrorSynced {
                        remote: self.remote.clone(),
                    }
                    .to_string(),
                    value: serde_json::to_vec(&synced).expect("serializes"),
                });
                self.synced = Some(synced);
                self.listed = true;
                ops.push(self.set_status(false, None, revision, leader));
            }
        }
        ops
    }

    /// The status write that publishes changed refusals (after the term's first complete
    /// listing, whose status carries them; `None` when nothing changed).
    pub fn on_refusals(&mut self, leader: &str) -> Option<MirrorOp> {
        if !self.refusals_changed || !self.listed {
            return None;
        }
        let (stale, error) = self
            .status
            .as_ref()
            .map_or((false, None), |s| (s.stale, s.error.clone()));
        let revision = self.synced.as_ref().map_or(0, |s| s.remote_revision);
        Some(self.set_status(stale, error, revision, leader))
    }

    /// The status write for "the remote is unreachable" (keeps `since` of an earlier stale).
    pub fn on_stale(&mut self, error: String, leader: &str) -> Option<MirrorOp> {
        if self
            .status
            .as_ref()
            .is_some_and(|s| s.stale && s.leader == leader)
        {
            return None;
        }
        let revision = self.synced.as_ref().map_or(0, |s| s.remote_revision);
        Some(self.set_status(true, Some(error), revision, leader))
    }

    /// The status write for "the remote answers again" after a stale period that ended
    /// without a listing (the remote watch resumed from its revision); `None` when not stale.
    pub fn on_live(&mut self, remote_revision: i64, leader: &str) -> Option<MirrorOp> {
        if !self.status.as_ref().is_some_and(|s| s.stale) {
            return None;
        }
        Some(self.set_status(false, None, remote_revision, leader))
    }

    fn set_status(
        &mut self,
        stale: bool,
        error: Option<String>,
        remote_revision: i64,
        leader: &str,
    ) -> MirrorOp {
        let now = now_unix_ms();
        let since = match &self.status {
            Some(s) if stale && s.stale => s.stale_since_unix_ms.or(Some(now)),
            _ if stale => Some(now),
            _ => None,
        };
        let v = MirrorStatusValue {
            stale,
            stale_since_unix_ms: since,
            remote_revision,
            leader: leader.to_owned(),
            error,
            updated_unix_ms: now,
            refused: Vec::new(),
            refused_count: 0,
        };
        let v = match (&self.status, self.listed) {
            // Before this term's first complete listing: what the previous leader published.
            (Some(prev), false) => MirrorStatusValue {
                refused: prev.refused.clone(),
                refused_count: prev.refused_count,
                ..v
            },
            _ => MirrorStatusValue {
                refused: self
                    .refused
                    .values()
                    .take(MAX_PUBLISHED_REFUSALS)
                    .map(|r| bounded(&r.to_string(), MAX_REFUSAL_LEN))
                    .collect(),
                refused_count: self.refused.len() as u64,
                ..v
            },
        };
        self.refusals_changed = false;
        self.status = Some(v.clone());
        MirrorOp::Put {
            key: Key::MirrorStatus {
                remote: self.remote.clone(),
            }
            .to_string(),
            value: serde_json::to_vec(&v).expect("serializes"),
        }
    }
}

/// Settings of one remote's mirror on one meshd.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub local: ClusterName,
    pub remote: ClusterName,
    /// How to reach the remote etcd (read-only credentials).
    pub remote_etcd: KvConfig,
    /// This meshd's name (the election candidate).
    pub candidate: String,
    /// Election lease TTL (seconds): a dead mirror is replaced within about this.
    pub lease_ttl_secs: i64,
    /// How often the remote is probed while watching (a cut link is silence).
    pub probe_interval: Duration,
    /// What the remote may claim: its records are checked on arrival and refused ones never
    /// reach the local mirror (`None`: shape checks only).
    pub trust: Option<Trust>,
}

impl MirrorConfig {
    pub fn election_key(&self) -> String {
        Key::cluster(&self.local, Resource::MirrorLeader(self.remote.clone())).to_string()
    }
}

/// This meshd's part in one remote's mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorRole {
    Campaigning,
    Follower { leader: Option<String> },
    Leader,
}

/// What a [`MirrorController`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    pub role: MirrorRole,
    /// Times this meshd became the leader.
    pub terms: u64,
    /// Entry puts and deletes this meshd wrote into the local mirror (all terms).
    pub puts: u64,
    pub deletes: u64,
    /// Complete remote listings mirrored (first sync and resyncs), all terms.
    pub syncs: u64,
    /// The remote is unreachable (as the leader sees it).
    pub stale: bool,
    pub last_error: Option<String>,
}

/// Runs the election for one remote and, while elected, the mirror. Dropping it (or
/// [`abort`](Self::abort)) stops everything without resigning, as a crash would: the others
/// take over when the lease expires. [`resign`](Self::resign) hands over at once.
#[derive(Debug)]
pub struct MirrorController {
    status: watch::Receiver<MirrorStatus>,
    resign: Option<mpsc::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MirrorController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Entry writes per transaction (etcd's default limit is 128 operations).
const BATCH: usize = 100;

impl MirrorController {
    pub fn spawn(local: KvStore, cfg: MirrorConfig) -> Self {
        let (tx, status) = watch::channel(MirrorStatus {
            role: MirrorRole::Campaigning,
            terms: 0,
            puts: 0,
            deletes: 0,
            syncs: 0,
            stale: false,
            last_error: None,
        });
        let (resign_tx, resign_rx) = mpsc::channel(1);
        let task = tokio::spawn(run(local, cfg, tx, resign_rx));
        Self {
            status,
            resign: Some(resign_tx),
            task,
        }
    }

    pub fn status(&self) -> MirrorStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<MirrorStatus> {
        self.status.clone()
    }

    /// Stops as a crash would (the lease is not revoked).
    pub fn abort(self) {
        self.task.abort();
    }

    /// Stops and, if leading, revokes the lease so another meshd takes over at once.
    pub async fn resign(mut self) {
        if let Some(tx) = self.resign.take() {
            let _ = tx.send(()).await;
        }
        let _ = (&mut self.task).await;
    }
}

async fn run(
    local: KvStore,
    cfg: MirrorConfig,
    status: watch::Sender<MirrorStatus>,
    mut resign: mpsc::Receiver<()>,
) {
    let election = ElectionConfig {
        key: cfg.election_key(),
        candidate: cfg.candidate.clone(),
        ttl_secs: cfg.lease_ttl_secs,
    };
    let ttl = election.ttl();
    let mut backoff = Duration::from_millis(100);
    loop {
        status.send_modify(|s| s.role = MirrorRole::Campaigning);
        let lead = match election::campaign(&local, &election).await {
            Ok(Campaign::Won(lead)) => lead,
            Ok(Campaign::Held { holder, revision }) => {
                status.send_modify(|s| s.role = MirrorRole::Follower { leader: holder });
                tokio::select! {
                    _ = election::wait_vacant(&local, &election.key, revision, ttl) => {}
                    _ = resign.recv() => return,
                }
                continue;
            }
            Err(e) => {
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = resign.recv() => return,
                }
                backoff = (backoff * 2).min(ttl);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::info!(remote = %cfg.remote, candidate = %cfg.candidate, "elected mirror");
        status.send_modify(|s| {
            s.role = MirrorRole::Leader;
            s.terms += 1;
        });
        let why = tokio::select! {
            why = election::hold(&local, lead, ttl) => why,
            why = lead_term(&local, &cfg, &election, lead, &status) => why,
            _ = resign.recv() => {
                let _ = local.lease_revoke(lead.lease).await;
                return;
            }
        };
        tracing::warn!(remote = %cfg.remote, reason = %why, "stepped down as mirror");
        status.send_modify(|s| {
            s.last_error = Some(why);
            s.stale = false;
        });
        // Best effort: let the others take over at once.
        let _ =
            tokio::time::timeout(Duration::from_millis(500), local.lease_revoke(lead.lease)).await;
    }
}

/// The mirror's work while leading; returns only when leadership was found lost.
async fn lead_term(
    local: &KvStore,
    cfg: &MirrorConfig,
    election: &ElectionConfig,
    lead: Leadership,
    status: &watch::Sender<MirrorStatus>,
) -> String {
    let mut backoff = Duration::from_millis(100);
    loop {
        match mirror_once(local, cfg, election, lead, status).await {
            TermEnd::Lost(why) => return why,
            TermEnd::Retry(why) => {
                tracing::warn!(remote = %cfg.remote, error = %why, "mirror failed; restarting from the local state");
                status.send_modify(|s| s.last_error = Some(why));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum TermEnd {
    /// A fenced write failed: someone else leads.
    Lost(String),
    /// A local write or read failed: start again from the local state.
    Retry(String),
}

/// Transactions in flight at once while writing a large batch of distinct keys (a first sync):
/// etcd commits concurrent transactions together, so this divides the sync time.
const PIPELINE: usize = 8;

async fn write(
    local: &KvStore,
    key: &str,
    lead: Leadership,
    ops: &[MirrorOp],
) -> Result<(), TermEnd> {
    // The synced marker (and the status after it) must land after every entry of the listing.
    let marker = ops
        .iter()
        .position(|o| {
            matches!(o, MirrorOp::Put { key, .. }
                if matches!(Key::parse(key), Ok(Key::MirrorSynced { .. })))
        })
        .unwrap_or(ops.len());
    let (entries, tail) = ops.split_at(marker);
    let mut seen = std::collections::HashSet::new();
    let distinct = entries.iter().all(|o| seen.insert(o.key()));
    if distinct && entries.len() > BATCH {
        write_pipelined(local, key, lead, entries).await?;
    } else {
        write_in_order(local, key, lead, entries).await?;
    }
    write_in_order(local, key, lead, tail).await
}

fn fenced(key: &str, lead: Leadership, chunk: &[MirrorOp]) -> Txn {
    Txn::new()
        .when([lead.fence(key)])
        .and_then(chunk.iter().map(MirrorOp::txn_op).collect::<Vec<_>>())
}

fn lost() -> TermEnd {
    TermEnd::Lost("the election key changed hands; not writing the mirror".into())
}

async fn write_in_order(
    local: &KvStore,
    key: &str,
    lead: Leadership,
    ops: &[MirrorOp],
) -> Result<(), TermEnd> {
    for chunk in ops.chunks(BATCH) {
        let resp = local
            .txn(fenced(key, lead, chunk))
            .await
            .map_err(|e| TermEnd::Retry(e.to_string()))?;
        if !resp.succeeded() {
            return Err(lost());
        }
    }
    Ok(())
}

/// Writes chunks of distinct keys concurrently (order between them does not matter).
async fn write_pipelined(
    local: &KvStore,
    key: &str,
    lead: Leadership,
    ops: &[MirrorOp],
) -> Result<(), TermEnd> {
    let mut set = tokio::task::JoinSet::new();
    let mut chunks = ops.chunks(BATCH);
    loop {
        while set.len() < PIPELINE {
            let Some(chunk) = chunks.next() else { break };
            let (store, txn) = (local.clone(), fenced(key, lead, chunk));
            set.spawn(async move { store.txn(txn).await });
        }
        let Some(done) = set.join_next().await else {
            return Ok(());
        };
        match done {
            Ok(Ok(resp)) if resp.succeeded() => {}
            Ok(Ok(_)) => return Err(lost()),
            Ok(Err(e)) => return Err(TermEnd::Retry(e.to_string())),
            Err(e) => return Err(TermEnd::Retry(format!("mirror write task: {e}"))),
        }
    }
}

async fn mirror_once(
    local: &KvStore,
    cfg: &MirrorConfig,
    election: &ElectionConfig,
    lead: Leadership,
    status: &watch::Sender<MirrorStatus>,
) -> TermEnd {
    match mirror_loop(local, cfg, election, lead, status).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

async fn mirror_loop(
    local: &KvStore,
    cfg: &MirrorConfig,
    election: &ElectionConfig,
    lead: Leadership,
    status: &watch::Sender<MirrorStatus>,
) -> Result<std::convert::Infallible, TermEnd> {
    let me = cfg.candidate.as_str();
    let ekey = election.key.as_str();
    let (kvs, _) = local
        .list(&Scope::Mirror(cfg.remote.clone()).prefix(), false)
        .await
        .map_err(|e| TermEnd::Retry(e.to_string()))?;
    let mut state = match &cfg.trust {
        Some(t) => MirrorState::checked(cfg.remote.clone(), t.clone()),
        None => MirrorState::new(cfg.remote.clone()),
    };
    state.load(&kvs);
    tracing::info!(remote = %cfg.remote, mirrored = state.mirrored().len(), "mirror term starts from the local state");

    // Connect to the remote; while it is unreachable the mirror is stale (and kept).
    let mut backoff = Duration::from_millis(100);
    // The remote's read-only user may read only the remote cluster's prefix: probe inside it.
    let mut remote_etcd = cfg.remote_etcd.clone();
    remote_etcd.probe_prefix = Scope::Cluster(cfg.remote.clone()).prefix();
    let remote = loop {
        match KvStore::connect(&remote_etcd).await {
            Ok(s) => break s,
            Err(e) => {
                if let Some(op) = state.on_stale(e.to_string(), me) {
                    write(local, ekey, lead, &[op]).await?;
                }
                status.send_modify(|s| {
                    s.stale = true;
                    s.last_error = Some(e.to_string());
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    let mut rcfg = ReflectorConfig::new(Scope::Cluster(cfg.remote.clone()).prefix());
    rcfg.probe_interval = cfg.probe_interval;
    let (refl, mut rx) = Reflector::spawn(
        remote,
        rcfg,
        MirrorDecoder {
            remote: cfg.remote.clone(),
        },
    );
    let mut rstatus = refl.watch_status();
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else {
                    return Err(TermEnd::Retry("the remote reflector stopped".into()));
                };
                // Batch what is already queued, up to a complete listing's end.
                let mut ops = Vec::new();
                let mut synced = matches!(ev, ReflectorEvent::Synced { .. });
                ops.extend(state.on_event(ev, me));
                while !synced && ops.len() < BATCH * PIPELINE {
                    match rx.try_recv() {
                        Ok(ev) => {
                            synced = matches!(ev, ReflectorEvent::Synced { .. });
                            ops.extend(state.on_event(ev, me));
                        }
                        Err(_) => break,
                    }
                }
                ops.extend(state.on_refusals(me));
                write(local, ekey, lead, &ops).await?;
                let (puts, deletes) = state.writes();
                status.send_modify(|s| {
                    s.puts += puts;
                    s.deletes += deletes;
                    if synced {
                        s.syncs += 1;
                        s.stale = false;
                        s.last_error = None;
                    }
                });
                state.puts = 0;
                state.deletes = 0;
            }
            changed = rstatus.changed() => {
                if changed.is_err() {
                    return Err(TermEnd::Retry("the remote reflector stopped".into()));
                }
                let st = rstatus.borrow_and_update().clone();
                if st.is_stale() || (!st.synced_once && st.last_error.is_some()) {
                    let err = st.last_error.clone().unwrap_or_else(|| "remote unreachable".into());
                    if let Some(op) = state.on_stale(err.clone(), me) {
                        write(local, ekey, lead, &[op]).await?;
                        tracing::warn!(remote = %cfg.remote, error = %err, "remote etcd unreachable; mirror kept and marked stale");
                    }
                    status.send_modify(|s| {
                        s.stale = true;
                        s.last_error = Some(err);
                    });
                } else if st.synced_once
                    && let Some(op) = state.on_live(st.revision, me)
                {
                    // The remote watch resumed from its revision (no listing): live again.
                    write(local, ekey, lead, &[op]).await?;
                    tracing::info!(remote = %cfg.remote, "remote etcd answers again; mirror live");
                    status.send_modify(|s| {
                        s.stale = false;
                        s.last_error = None;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::NodeRecord;

    fn node_value(cluster: &str, name: &str, ip: &str) -> Vec<u8> {
        let mut r = NodeRecord::new(cluster.parse().unwrap(), name.parse().unwrap());
        r.ipv4 = Some(ip.parse().unwrap());
        r.encode()
    }

    fn node(name: &str) -> Resource {
        Resource::Node(name.parse().unwrap())
    }

    fn up(name: &str, v: &[u8]) -> ReflectorEvent<Resource, Vec<u8>> {
        ReflectorEvent::Upsert {
            key: node(name),
            value: v.to_vec(),
        }
    }

    fn kv(key: String, value: Vec<u8>) -> Kv {
        Kv {
            key: key.into_bytes(),
            value,
            create_revision: 1,
            mod_revision: 1,
            lease: 0,
        }
    }

    fn puts_of(ops: &[MirrorOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                MirrorOp::Put { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    fn deletes_of(ops: &[MirrorOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                MirrorOp::Delete { key } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn decoder_takes_the_remotes_resources_only() {
        let d = MirrorDecoder {
            remote: "green".parse().unwrap(),
        };
        assert!(d.decode_key(b"ironmesh/v1/clusters/green/nodes/n1").is_ok());
        assert!(d.decode_key(b"ironmesh/v1/clusters/red/nodes/n1").is_err());
        let leader = b"ironmesh/v1/clusters/green/mirror-leader/red";
        assert!(d.ignore(leader) && d.decode_key(leader).is_err());
        let n1 = node("n1");
        assert!(
            d.decode_value(&n1, &node_value("green", "n1", "192.0.2.1"))
                .is_ok()
        );
        // A record claiming another cluster is refused.
        assert!(
            d.decode_value(&n1, &node_value("red", "n1", "192.0.2.1"))
                .is_err()
        );
        assert!(
            d.decode_value(&Resource::Endpoint("10.0.0.1".parse().unwrap()), b"{x")
                .is_err()
        );
    }

    #[test]
    fn first_sync_writes_everything_then_the_marker() {
        let mut s = MirrorState::new("green".parse().unwrap());
        let a = node_value("green", "a", "192.0.2.1");
        let mut ops = s.on_event(up("a", &a), "m1");
        ops.extend(s.on_event(
            ReflectorEvent::Synced {
                revision: 42,
                entries: 1,
            },
            "m1",
        ));
        assert_eq!(
            puts_of(&ops),
            [
                "ironmesh/v1/mirror/green/nodes/a",
                "ironmesh/v1/mirror/green/synced",
                "ironmesh/v1/mirror/green/status"
            ]
        );
        assert_eq!(s.writes(), (1, 0));
        let MirrorOp::Put { value, .. } = &ops[1] else {
            panic!()
        };
        let v: SyncedValue = serde_json::from_slice(value).unwrap();
        assert_eq!((v.remote_revision, v.entries), (42, 1));
    }

    #[test]
    fn takeover_diffs_against_the_existing_mirror() {
        let a = node_value("green", "a", "192.0.2.1");
        let b = node_value("green", "b", "192.0.2.2");
        let b2 = node_value("green", "b", "192.0.2.22");
        let mut s = MirrorState::new("green".parse().unwrap());
        s.load(&[
            kv("ironmesh/v1/mirror/green/nodes/a".into(), a.clone()),
            kv("ironmesh/v1/mirror/green/nodes/b".into(), b.clone()),
            kv("ironmesh/v1/mirror/green/nodes/c".into(), a.clone()),
            kv(
                "ironmesh/v1/mirror/green/synced".into(),
                br#"{"remote_revision":5,"entries":3,"at_unix_ms":1}"#.to_vec(),
            ),
        ]);
        assert_eq!(s.mirrored().len(), 3);
        // The new leader's first listing: a unchanged, b changed, c gone, d new.
        let mut ops = Vec::new();
        ops.extend(s.on_event(up("a", &a), "m2"));
        ops.extend(s.on_event(up("b", &b2), "m2"));
        ops.extend(s.on_event(up("d", &b), "m2"));
        assert_eq!(
            puts_of(&ops),
            [
                "ironmesh/v1/mirror/green/nodes/b",
                "ironmesh/v1/mirror/green/nodes/d"
            ],
            "the unchanged entry is not written again"
        );
        let ops = s.on_event(
            ReflectorEvent::Synced {
                revision: 9,
                entries: 3,
            },
            "m2",
        );
        assert_eq!(deletes_of(&ops), ["ironmesh/v1/mirror/green/nodes/c"]);
        assert_eq!(s.writes(), (2, 1));
        // A later delete from the watch.
        let ops = s.on_event(
            ReflectorEvent::Delete {
                key: node("a"),
                last: a,
            },
            "m2",
        );
        assert_eq!(deletes_of(&ops), ["ironmesh/v1/mirror/green/nodes/a"]);
    }

    #[test]
    fn a_stale_mirror_is_live_again_without_a_listing() {
        let mut s = MirrorState::new("green".parse().unwrap());
        assert!(s.on_live(5, "m1").is_none(), "not stale: nothing to write");
        assert!(s.on_stale("cut".into(), "m1").is_some());
        let Some(MirrorOp::Put { value, .. }) = s.on_live(9, "m1") else {
            panic!("a status write")
        };
        let v: MirrorStatusValue = serde_json::from_slice(&value).unwrap();
        assert!(!v.stale && v.stale_since_unix_ms.is_none() && v.error.is_none());
        assert_eq!(v.remote_revision, 9);
        assert!(s.on_live(10, "m1").is_none(), "written once");
    }

    #[test]
    fn stale_keeps_its_since_and_is_written_once() {
        let mut s = MirrorState::new("green".parse().unwrap());
        let Some(MirrorOp::Put { value, .. }) = s.on_stale("cut".into(), "m1") else {
            panic!()
        };
        let v: MirrorStatusValue = serde_json::from_slice(&value).unwrap();
        assert!(v.stale && v.stale_since_unix_ms.is_some());
        assert_eq!(s.on_stale("still cut".into(), "m1"), None);
        // Another leader takes over while stale: it says so, with the first since.
        let since = v.stale_since_unix_ms;
        let Some(MirrorOp::Put { value, .. }) = s.on_stale("cut".into(), "m2") else {
            panic!()
        };
        let v2: MirrorStatusValue = serde_json::from_slice(&value).unwrap();
        assert_eq!(v2.stale_since_unix_ms, since);
        assert_eq!(v2.leader, "m2");
        // Synced again: not stale.
        let ops = s.on_event(
            ReflectorEvent::Synced {
                revision: 3,
                entries: 0,
            },
            "m2",
        );
        let MirrorOp::Put { value, .. } = ops.last().unwrap() else {
            panic!()
        };
        let v3: MirrorStatusValue = serde_json::from_slice(value).unwrap();
        assert!(!v3.stale && v3.stale_since_unix_ms.is_none());
    }

    fn blue_trust() -> Trust {
        use super::super::trust::RemoteClaims;
        let green = RemoteClaims {
            name: "green".parse().unwrap(),
            id: common::ClusterId::new(2).unwrap(),
            pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
            node_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
            service_cidrs: vec![],
        };
        Trust {
            local: "red".parse().unwrap(),
            local_id: common::ClusterId::new(1).unwrap(),
            layout: common::IdentityLayout::default(),
            local_pools: vec!["10.1.0.0/16".parse().unwrap()],
            remotes: [(green.name.clone(), green)].into(),
        }
    }

    fn node_with(name: &str, ip: &str, cidr: &str) -> Vec<u8> {
        let mut r = NodeRecord::new("green".parse().unwrap(), name.parse().unwrap());
        r.ipv4 = Some(ip.parse().unwrap());
        r.pod_cidrs = vec![cidr.parse().unwrap()];
        r.encode()
    }

    fn status_of(ops: &[MirrorOp]) -> Option<MirrorStatusValue> {
        ops.iter().find_map(|o| match o {
            MirrorOp::Put { key, value } if key.ends_with("/status") => {
                Some(serde_json::from_slice(value).unwrap())
            }
            _ => None,
        })
    }

    #[test]
    fn refused_records_never_reach_the_mirror_and_are_published_in_the_status() {
        let mut s = MirrorState::checked("green".parse().unwrap(), blue_trust());
        let good = node_with("a", "198.51.100.1", "10.2.1.0/24");
        let evil = node_with("evil", "198.51.100.66", "0.0.0.0/0");
        let mut ops = s.on_event(up("a", &good), "m1");
        ops.extend(s.on_event(up("evil", &evil), "m1"));
        assert!(
            s.on_refusals("m1").is_none(),
            "no status before the first listing"
        );
        ops.extend(s.on_event(
            ReflectorEvent::Synced {
                revision: 7,
                entries: 2,
            },
            "m1",
        ));
        assert!(!puts_of(&ops).iter().any(|k| k.contains("evil")), "{ops:?}");
        assert!(s.mirrored().contains_key(&node("a")));
        assert!(!s.mirrored().contains_key(&node("evil")));
        let st = status_of(&ops).expect("a status write");
        assert_eq!(st.refused_count, 1);
        assert_eq!(
            st.refused,
            ["node evil pod_cidrs 0.0.0.0/0 outside green's pools (10.2.0.0/16)"]
        );
        // Seen again unchanged: neither counted nor published again.
        assert!(s.on_event(up("evil", &evil), "m1").is_empty());
        assert!(s.on_refusals("m1").is_none());
        assert_eq!(s.refused_total(), 1);

        // A mirrored record that becomes invalid is deleted from the mirror, and published.
        let thief = node_with("a", "198.51.100.1", "10.1.1.0/24");
        let ops = s.on_event(up("a", &thief), "m1");
        assert_eq!(deletes_of(&ops), ["ironmesh/v1/mirror/green/nodes/a"]);
        assert!(!s.mirrored().contains_key(&node("a")));
        let st = status_of(&s.on_refusals("m1").into_iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(st.refused_count, 2);
        assert_eq!(st.remote_revision, 7);
        // Good again: mirrored again. The evil one deleted at the remote: no longer refused.
        let ops = s.on_event(up("a", &good), "m1");
        assert_eq!(puts_of(&ops), ["ironmesh/v1/mirror/green/nodes/a"]);
        s.on_event(
            ReflectorEvent::Delete {
                key: node("evil"),
                last: evil,
            },
            "m1",
        );
        let st = status_of(&s.on_refusals("m1").into_iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((st.refused_count, st.refused.len()), (0, 0));
        // A stale status keeps the refusals it lists.
        s.on_event(
            up("evil", &node_with("evil", "198.51.100.66", "0.0.0.0/0")),
            "m1",
        );
        let Some(MirrorOp::Put { value, .. }) = s.on_stale("cut".into(), "m1") else {
            panic!()
        };
        let st: MirrorStatusValue = serde_json::from_slice(&value).unwrap();
        assert!(st.stale && st.refused_count == 1);
    }

    #[test]
    fn a_new_term_keeps_the_published_refusals_until_its_first_listing() {
        let published = MirrorStatusValue {
            remote_revision: 4,
            leader: "m1".into(),
            refused: vec!["node evil pod_cidrs 0.0.0.0/0 outside green's pools".into()],
            refused_count: 1,
            ..Default::default()
        };
        let mut s = MirrorState::checked("green".parse().unwrap(), blue_trust());
        s.load(&[
            kv(
                "ironmesh/v1/mirror/green/status".into(),
                serde_json::to_vec(&published).unwrap(),
            ),
            kv(
                "ironmesh/v1/mirror/green/synced".into(),
                br#"{"remote_revision":4,"entries":2,"at_unix_ms":1}"#.to_vec(),
            ),
        ]);
        // The remote is cut at the start of the term: stale, the refusals still listed.
        let Some(MirrorOp::Put { value, .. }) = s.on_stale("cut".into(), "m2") else {
            panic!()
        };
        let v: MirrorStatusValue = serde_json::from_slice(&value).unwrap();
        assert!(v.stale && v.refused_count == 1 && v.refused == published.refused);
        // Mid-listing, nothing partial is published; the listing's end says what is refused now.
        let good = node_with("a", "198.51.100.1", "10.2.1.0/24");
        s.on_event(up("a", &good), "m2");
        assert!(s.on_refusals("m2").is_none());
        let ops = s.on_event(
            ReflectorEvent::Synced {
                revision: 9,
                entries: 1,
            },
            "m2",
        );
        let v = status_of(&ops).unwrap();
        assert_eq!((v.refused_count, v.refused.len()), (0, 0));
    }

    #[test]
    fn a_takeover_deletes_what_an_unchecked_mirror_holds() {
        let evil = node_with("evil", "198.51.100.66", "0.0.0.0/0");
        let mut s = MirrorState::checked("green".parse().unwrap(), blue_trust());
        s.load(&[kv(
            "ironmesh/v1/mirror/green/nodes/evil".into(),
            evil.clone(),
        )]);
        let ops = s.on_event(up("evil", &evil), "m2");
        assert_eq!(deletes_of(&ops), ["ironmesh/v1/mirror/green/nodes/evil"]);
    }

    #[test]
    fn published_refusals_are_bounded_in_count_and_size() {
        let mut s = MirrorState::checked("green".parse().unwrap(), blue_trust());
        for i in 0..(MAX_PUBLISHED_REFUSALS + 5) {
            let name = format!("n{i}");
            s.on_event(
                up(&name, &node_with(&name, "192.0.2.1", "10.2.1.0/24")),
                "m1",
            );
        }
        let ops = s.on_event(
            ReflectorEvent::Synced {
                revision: 1,
                entries: MAX_PUBLISHED_REFUSALS + 5,
            },
            "m1",
        );
        let st = status_of(&ops).unwrap();
        assert_eq!(st.refused_count as usize, MAX_PUBLISHED_REFUSALS + 5);
        assert_eq!(st.refused.len(), MAX_PUBLISHED_REFUSALS);
        assert_eq!(bounded("abc", 3), "abc");
        let cut = bounded(&"é".repeat(400), MAX_REFUSAL_LEN);
        assert!(cut.len() <= MAX_REFUSAL_LEN && cut.ends_with('…'), "{cut}");
    }
}
