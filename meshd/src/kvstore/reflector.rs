//! List-then-watch of one etcd prefix into a consumer.
//!
//! [`Cache`] is the sans-IO core: it holds the last good decoded state and turns a full listing
//! or one watch event into [`Change`]s. A listing after a disconnect or a compaction is diffed
//! against the cache, so keys that vanished while we were away come out as deletes. Values that
//! fail to decode (written by someone else) are skipped with a log line and the last good value
//! is kept: a bad record never crashes the reader and never wipes state.
//!
//! [`Reflector`] is the I/O shell: list at revision R, watch from R+1, probe the cluster while
//! watching (a cut link leaves a TCP stream silent, not broken), and on any failure mark the
//! state stale, back off and relist. The status (synced / stale since when) is published on a
//! `tokio::sync::watch` channel.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{KvError, KvStore};

/// Turns raw keys and values of one prefix into typed ones.
pub trait Decoder: Send + Sync + 'static {
    type Key: Clone + Ord + Debug + Send + Sync + 'static;
    type Value: Clone + PartialEq + Debug + Send + Sync + 'static;

    /// Keys of the prefix this reader does not want at all (another component's keys): skipped
    /// silently, not counted as skipped records. `decode_key` must reject them too.
    fn ignore(&self, _key: &[u8]) -> bool {
        false
    }
    /// `Err` skips the key (and logs why).
    fn decode_key(&self, key: &[u8]) -> Result<Self::Key, String>;
    /// `Err` skips the value and keeps the last good value of the key, if any.
    fn decode_value(&self, key: &Self::Key, value: &[u8]) -> Result<Self::Value, String>;
}

/// A change of the reflected state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, V> {
    Upsert { key: K, value: V },
    Delete { key: K, last: V },
}

/// The last good state of a prefix and the revision it is current at.
#[derive(Debug)]
pub struct Cache<D: Decoder> {
    decoder: D,
    entries: BTreeMap<D::Key, D::Value>,
    revision: i64,
    skipped: u64,
}

impl<D: Decoder> Cache<D> {
    pub fn new(decoder: D) -> Self {
        Self {
            decoder,
            entries: BTreeMap::new(),
            revision: 0,
            skipped: 0,
        }
    }

    pub fn entries(&self) -> &BTreeMap<D::Key, D::Value> {
        &self.entries
    }

    /// The etcd revision the state is current at (0 before the first listing).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Records skipped because their key or value did not decode.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn decode_key(&mut self, key: &[u8]) -> Option<D::Key> {
        if self.decoder.ignore(key) {
            return None;
        }
        match self.decoder.decode_key(key) {
            Ok(k) => Some(k),
            Err(e) => {
                self.skipped += 1;
                tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "skipping etcd key");
                None
            }
        }
    }

    fn decode_value(&mut self, key: &D::Key, value: &[u8]) -> Option<D::Value> {
        match self.decoder.decode_value(key, value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.skipped += 1;
                tracing::warn!(
                    ?key,
                    error = %e,
                    kept_last_good = self.entries.contains_key(key),
                    "skipping malformed etcd value"
                );
                None
            }
        }
    }

    /// Replaces the state with a complete listing taken at `revision`; returns the difference.
    pub fn apply_list<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        revision: i64,
    ) -> Vec<Change<D::Key, D::Value>> {
        let mut next = BTreeMap::new();
        let mut changes = Vec::new();
        for (k, v) in kvs {
            let Some(key) = self.decode_key(k) else {
                continue;
            };
            match self.decode_value(&key, v) {
                Some(value) => {
                    if self.entries.get(&key) != Some(&value) {
                        changes.push(Change::Upsert {
                            key: key.clone(),
                            value: value.clone(),
                        });
                    }
                    next.insert(key, value);
                }
                // Present but unreadable: keep what we had, if anything.
                None => {
                    if let Some(old) = self.entries.get(&key) {
                        next.insert(key, old.clone());
                    }
                }
            }
        }
        for (key, last) in &self.entries {
            if !next.contains_key(key) {
                changes.push(Change::Delete {
                    key: key.clone(),
                    last: last.clone(),
                });
            }
        }
        self.entries = next;
        self.revision = self.revision.max(revision);
        changes
    }

    /// A put seen by the watch at `mod_revision`.
    pub fn apply_put(
        &mut self,
        key: &[u8],
        value: &[u8],
        mod_revision: i64,
    ) -> Option<Change<D::Key, D::Value>> {
        self.revision = self.revision.max(mod_revision);
        let key = self.decode_key(key)?;
        let value = self.decode_value(&key, value)?;
        if self.entries.get(&key) == Some(&value) {
            return None;
        }
        self.entries.insert(key.clone(), value.clone());
        Some(Change::Upsert { key, value })
    }

    /// A delete seen by the watch at `mod_revision`.
    pub fn apply_delete(
        &mut self,
        key: &[u8],
        mod_revision: i64,
    ) -> Option<Change<D::Key, D::Value>> {
        self.revision = self.revision.max(mod_revision);
        let key = self.decoder.decode_key(key).ok()?;
        let last = self.entries.remove(&key)?;
        Some(Change::Delete { key, last })
    }

    /// Moves the revision forward (watch progress with no events).
    pub fn advance(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }
}

/// Where a reflector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Before the first complete listing.
    Connecting,
    /// Listed and watching.
    Synced,
    /// Lost the cluster; the last good state is kept. `since` is when it was lost.
    Stale { since: Instant },
}

/// What a reflector reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReflectorStatus {
    pub state: SyncState,
    /// True once the first listing has been delivered (stays true while stale).
    pub synced_once: bool,
    pub revision: i64,
    pub entries: usize,
    pub skipped: u64,
    /// Complete listings after the first one (reconnects, compactions).
    pub resyncs: u64,
    /// Watches moved to another member and resumed from their revision, without a listing
    /// (the member lost quorum or the stream broke).
    pub resumes: u64,
    pub last_error: Option<String>,
}

impl ReflectorStatus {
    pub fn is_stale(&self) -> bool {
        matches!(self.state, SyncState::Stale { .. })
    }
}

/// What the consumer receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReflectorEvent<K, V> {
    Upsert {
        key: K,
        value: V,
    },
    Delete {
        key: K,
        last: V,
    },
    /// A complete listing has been delivered (the first one, and every resync): the consumer
    /// now holds exactly the prefix's state at `revision`.
    Synced {
        revision: i64,
        entries: usize,
    },
}

impl<K, V> From<Change<K, V>> for ReflectorEvent<K, V> {
    fn from(c: Change<K, V>) -> Self {
        match c {
            Change::Upsert { key, value } => ReflectorEvent::Upsert { key, value },
            Change::Delete { key, last } => ReflectorEvent::Delete { key, last },
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReflectorConfig {
    pub prefix: String,
    /// How often the cluster is probed while watching (detects a silently dead link).
    pub probe_interval: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Capacity of the event channel (the reflector waits when the consumer lags).
    pub channel_capacity: usize,
}

impl ReflectorConfig {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            probe_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            channel_capacity: 1024,
        }
    }
}

/// A running list-then-watch of one prefix. Dropping it stops the task.
#[derive(Debug)]
pub struct Reflector {
    status: watch::Receiver<ReflectorStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Events<D> = mpsc::Receiver<ReflectorEvent<<D as Decoder>::Key, <D as Decoder>::Value>>;

impl Reflector {
    /// Starts reflecting `cfg.prefix`; events arrive on the returned receiver.
    pub fn spawn<D: Decoder>(
        store: KvStore,
        cfg: ReflectorConfig,
        decoder: D,
    ) -> (Self, Events<D>) {
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let (status_tx, status) = watch::channel(ReflectorStatus {
            state: SyncState::Connecting,
            synced_once: false,
            revision: 0,
            entries: 0,
            skipped: 0,
            resyncs: 0,
            resumes: 0,
            last_error: None,
        });
        let task = tokio::spawn(run(store, cfg, Cache::new(decoder), tx, status_tx));
        (Reflector { status, task }, rx)
    }

    pub fn status(&self) -> ReflectorStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status updates.
    pub fn watch_status(&self) -> watch::Receiver<ReflectorStatus> {
        self.status.clone()
    }
}

enum Outcome {
    /// The consumer went away: stop.
    Closed,
    /// The watch ended or failed: relist.
    Lost(String),
    /// The watch's member failed (no leader, stream broken, no member could take it): watch
    /// again from the last revision on a healthy member; etcd says so when that revision was
    /// compacted (then it is `Lost` and a listing follows).
    Moved(String),
}

async fn run<D: Decoder>(
    store: KvStore,
    cfg: ReflectorConfig,
    mut cache: Cache<D>,
    tx: mpsc::Sender<ReflectorEvent<D::Key, D::Value>>,
    status: watch::Sender<ReflectorStatus>,
) {
    let mut backoff = cfg.min_backoff;
    let mut listings: u64 = 0;
    loop {
        // List.
        let (kvs, revision) = match store.list(&cfg.prefix, false).await {
            Ok(r) => r,
            Err(e) => {
                mark_stale(&status, &e.to_string());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
                continue;
            }
        };
        let changes = cache.apply_list(
            kvs.iter()
                .map(|kv| (kv.key.as_slice(), kv.value.as_slice())),
            revision,
        );
        for c in changes {
            if tx.send(c.into()).await.is_err() {
                return;
            }
        }
        let synced = ReflectorEvent::Synced {
            revision: cache.revision(),
            entries: cache.entries().len(),
        };
        if tx.send(synced).await.is_err() {
            return;
        }
        listings += 1;
        status.send_modify(|s| {
            s.state = SyncState::Synced;
            s.synced_once = true;
            s.revision = cache.revision();
            s.entries = cache.entries().len();
            s.skipped = cache.skipped();
            s.resyncs = listings - 1;
            s.last_error = None;
        });
        tracing::debug!(prefix = %cfg.prefix, revision, entries = cache.entries().len(), "listed");

        // Watch from the listing's revision; a watch whose member failed resumes from the
        // last revision seen, on another member, without relisting.
        let mut start = revision + 1;
        let mut moves_in_a_row = 0u32;
        loop {
            let began = Instant::now();
            let outcome = watch_from(&store, &cfg, &mut cache, &tx, &status, start).await;
            if began.elapsed() >= Duration::from_secs(5) {
                // It ran a while: this move is not part of a run of failing ones.
                moves_in_a_row = 0;
            }
            match outcome {
                Outcome::Closed => return,
                Outcome::Moved(why) => {
                    moves_in_a_row += 1;
                    if moves_in_a_row > 1 {
                        // Moving again at once (an election, etcd away): wait a little longer
                        // each time.
                        tokio::time::sleep((cfg.min_backoff * moves_in_a_row).min(cfg.max_backoff))
                            .await;
                    }
                    if moves_in_a_row >= 2 {
                        // No member took the watch (or kept it): say so until one does.
                        mark_stale(&status, &why);
                    }
                    tracing::info!(prefix = %cfg.prefix, reason = %why, revision = cache.revision(), "watch moved to another etcd member; resuming from its revision");
                    status.send_modify(|s| {
                        s.resumes += 1;
                        s.last_error = Some(why.clone());
                    });
                    start = cache.revision() + 1;
                }
                Outcome::Lost(why) => {
                    tracing::info!(prefix = %cfg.prefix, reason = %why, "watch lost; relisting");
                    mark_stale(&status, &why);
                    backoff = cfg.min_backoff;
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

fn mark_stale(status: &watch::Sender<ReflectorStatus>, err: &str) {
    status.send_modify(|s| {
        if !matches!(s.state, SyncState::Stale { .. }) && s.synced_once {
            s.state = SyncState::Stale {
                since: Instant::now(),
            };
        }
        s.last_error = Some(err.to_owned());
    });
}

async fn watch_from<D: Decoder>(
    store: &KvStore,
    cfg: &ReflectorConfig,
    cache: &mut Cache<D>,
    tx: &mpsc::Sender<ReflectorEvent<D::Key, D::Value>>,
    status: &watch::Sender<ReflectorStatus>,
    start: i64,
) -> Outcome {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    // A member that refuses connections or has no leader is skipped (as in KvStore's
    // requests): the failure takes it out of rotation and the next pick is another member.
    let deadline = Instant::now() + store.op_timeout();
    let (member, mut stream) = loop {
        let (member, mut client) = store.member_client();
        // Half the op timeout per attempt: a member that does not answer leaves time for
        // another.
        let attempt_end = (Instant::now() + store.op_timeout() / 2).min(deadline);
        let created = tokio::time::timeout_at(
            attempt_end,
            client.watch(cfg.prefix.clone(), Some(opts.clone())),
        )
        .await;
        let e = match created {
            Ok(Ok(s)) => break (member, s),
            Err(_) => KvError::Timeout {
                op: "watch".into(),
                timeout: store.op_timeout() / 2,
                endpoints: store.member_endpoint(member).into(),
            },
            Ok(Err(e)) => KvError::from_etcd("watch", e).denied_on(&cfg.prefix, store.user()),
        };
        store.report_failure(member, &e);
        if crate::kvstore::pool::failure_of(&e).is_none() {
            return Outcome::Lost(e.to_string());
        }
        if Instant::now() + Duration::from_millis(20) >= deadline {
            // No member could take the watch (an election, or etcd away): try again from
            // the same revision; a run of these ends in a listing.
            return Outcome::Moved(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A watch resumed after its members failed for a while is live again.
    status.send_if_modified(|s| {
        let stale = s.is_stale() && s.synced_once;
        if stale {
            s.state = SyncState::Synced;
        }
        stale
    });
    let lost = store.member_lost(member);
    tokio::pin!(lost);
    let mut probe = tokio::time::interval(cfg.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return Outcome::Moved("the watch stream ended".into()),
                    Err(e) => {
                        let e = KvError::from_etcd("watch", e);
                        store.report_failure(member, &e);
                        return Outcome::Moved(e.to_string());
                    }
                };
                if resp.compact_revision() > 0 {
                    return Outcome::Lost(format!(
                        "revision {start} was compacted (compact revision {})",
                        resp.compact_revision()
                    ));
                }
                if resp.canceled() {
                    let why = format!("watch canceled: {}", resp.cancel_reason());
                    // A canceled watch carries its reason as text only (no status code); etcd
                    // 3.4 ends a require-leader watch stream with UNAVAILABLE "no leader",
                    // which arrives as a stream error above, classified by its code.
                    if resp.cancel_reason().contains(super::ETCD_NO_LEADER) {
                        store.report_failure(member, &KvError::Etcd {
                            op: "watch".into(),
                            detail: why.clone(),
                            transient: true,
                            kind: super::ErrorKind::NoLeader,
                        });
                        return Outcome::Moved(why);
                    }
                    return Outcome::Lost(why);
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let change = match ev.event_type() {
                        EventType::Put => cache.apply_put(kv.key(), kv.value(), kv.mod_revision()),
                        EventType::Delete => cache.apply_delete(kv.key(), kv.mod_revision()),
                    };
                    if let Some(c) = change
                        && tx.send(c.into()).await.is_err()
                    {
                        return Outcome::Closed;
                    }
                }
                if let Some(h) = resp.header() {
                    cache.advance(h.revision());
                }
                status.send_modify(|s| {
                    s.revision = cache.revision();
                    s.entries = cache.entries().len();
                    s.skipped = cache.skipped();
                });
            }
            _ = probe.tick() => {
                // A failed probe: the watch may be silently stuck; watch again from the
                // last revision (etcd says when it was compacted: then a listing follows).
                if let Err(e) = store.probe().await {
                    return Outcome::Moved(format!("probe failed: {e}"));
                }
            }
            _ = &mut lost => {
                return Outcome::Moved(format!(
                    "etcd member {} went unhealthy",
                    store.member_endpoint(member)
                ));
            }
            _ = tx.closed() => return Outcome::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys `k/<name>`, values decimal numbers.
    #[derive(Debug)]
    struct Numbers;

    impl Decoder for Numbers {
        type Key = String;
        type Value = u32;
        fn decode_key(&self, key: &[u8]) -> Result<String, String> {
            let k = std::str::from_utf8(key).map_err(|e| e.to_string())?;
            k.strip_prefix("k/")
                .map(str::to_owned)
                .ok_or_else(|| format!("{k:?} is not under k/"))
        }
        fn decode_value(&self, _: &String, value: &[u8]) -> Result<u32, String> {
            std::str::from_utf8(value)
                .map_err(|e| e.to_string())?
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        }
    }

    fn up(k: &str, v: u32) -> Change<String, u32> {
        Change::Upsert {
            key: k.into(),
            value: v,
        }
    }

    #[test]
    fn first_list_then_watch() {
        let mut c = Cache::new(Numbers);
        let ch = c.apply_list([(&b"k/a"[..], &b"1"[..]), (b"k/b", b"2")], 10);
        assert_eq!(ch, vec![up("a", 1), up("b", 2)]);
        assert_eq!(c.revision(), 10);
        assert_eq!(c.apply_put(b"k/a", b"3", 11), Some(up("a", 3)));
        assert_eq!(c.apply_put(b"k/a", b"3", 12), None, "same value: no event");
        assert_eq!(
            c.apply_delete(b"k/b", 13),
            Some(Change::Delete {
                key: "b".into(),
                last: 2
            })
        );
        assert_eq!(c.apply_delete(b"k/b", 14), None);
        assert_eq!(c.revision(), 14);
    }

    #[test]
    fn resync_emits_deletes_for_vanished_keys() {
        let mut c = Cache::new(Numbers);
        c.apply_list(
            [(&b"k/a"[..], &b"1"[..]), (b"k/b", b"2"), (b"k/c", b"3")],
            10,
        );
        // While away: b deleted, c changed, d added.
        let ch = c.apply_list(
            [(&b"k/a"[..], &b"1"[..]), (b"k/c", b"30"), (b"k/d", b"4")],
            20,
        );
        assert_eq!(
            ch,
            vec![
                up("c", 30),
                up("d", 4),
                Change::Delete {
                    key: "b".into(),
                    last: 2
                }
            ]
        );
        assert_eq!(c.entries().len(), 3);
    }

    #[test]
    fn malformed_values_are_skipped_and_never_wipe() {
        let mut c = Cache::new(Numbers);
        c.apply_list(
            [(&b"k/a"[..], &b"1"[..]), (b"other", b"x"), (b"k/z", b"zz")],
            5,
        );
        assert_eq!(c.skipped(), 2);
        assert_eq!(c.entries().len(), 1);
        // A bad overwrite keeps the last good value, in a watch and in a relist.
        assert_eq!(c.apply_put(b"k/a", b"garbage", 6), None);
        assert_eq!(c.entries().get("a"), Some(&1));
        let ch = c.apply_list([(&b"k/a"[..], &b"garbage"[..])], 7);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(c.entries().get("a"), Some(&1));
        // A later good value goes through.
        assert_eq!(c.apply_put(b"k/a", b"2", 8), Some(up("a", 2)));
        // Non-UTF-8 keys are skipped too.
        assert_eq!(c.apply_put(b"k/\xff", b"1", 9), None);
    }
}
