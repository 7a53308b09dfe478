//! One etcd client per member, chosen by the [`MemberSet`] state machine, and a prober task
//! that keeps every member's health current (the I/O edge of `members.rs`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::members::{Event, Failure, Health, HealthConfig, MemberSet, MemberView};
use super::{ErrorKind, KvError, KvStore};

pub(crate) struct Pool {
    endpoints: Vec<String>,
    clients: Vec<Mutex<Option<Client>>>,
    set: Mutex<MemberSet>,
    /// Bumped at every health transition.
    changes: watch::Sender<u64>,
    wake: Notify,
    opts: ConnectOptions,
    connect_timeout: Duration,
    probe_key: Vec<u8>,
}

/// Aborts the prober when the last [`KvStore`] clone goes.
pub(crate) struct ProberGuard(tokio::task::JoinHandle<()>);

impl Drop for ProberGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The health-relevant part of a failed request, if any (`None`: the member answered and
/// the request itself was refused, e.g. permission denied or a malformed request).
///
/// Classified by the gRPC status code ([`ErrorKind`]), never by the message: etcd's "no
/// leader" is UNAVAILABLE with etcd's own description; any other UNAVAILABLE (a connection
/// tonic could not make, etcd's "request timed out" or "leader changed") or a broken
/// transport is an unreachable member; DEADLINE_EXCEEDED is a timeout.
pub(crate) fn failure_of(e: &KvError) -> Option<Failure> {
    use tonic::Code;
    match e {
        KvError::Timeout { .. } => Some(Failure::Timeout(e.to_string())),
        KvError::Unreachable { detail, .. } => Some(Failure::Unreachable(detail.clone())),
        KvError::Etcd { detail, kind, .. } => match kind {
            ErrorKind::NoLeader => Some(Failure::NoLeader(detail.clone())),
            ErrorKind::Transport | ErrorKind::Status(Code::Unavailable) => {
                Some(Failure::Unreachable(detail.clone()))
            }
            ErrorKind::Status(Code::DeadlineExceeded) => Some(Failure::Timeout(detail.clone())),
            ErrorKind::Status(_) | ErrorKind::Other => None,
        },
        _ => None,
    }
}

fn lock(m: &Mutex<MemberSet>) -> MutexGuard<'_, MemberSet> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    /// `first`: a member already connected (index and client).
    pub(crate) fn new(
        endpoints: Vec<String>,
        first: (usize, Client),
        opts: ConnectOptions,
        connect_timeout: Duration,
        op_timeout: Duration,
        probe_key: Vec<u8>,
    ) -> Arc<Pool> {
        let now = std::time::Instant::now();
        // Different meshds prefer different members (the load spreads); start with the one
        // that answered first.
        let mut set = MemberSet::new(
            &endpoints,
            first.0,
            HealthConfig::from_op_timeout(op_timeout),
            now,
        );
        set.on(first.0, Event::RequestOk, now);
        let clients = (0..endpoints.len())
            .map(|i| Mutex::new((i == first.0).then(|| first.1.clone())))
            .collect();
        Arc::new(Pool {
            endpoints,
            clients,
            set: Mutex::new(set),
            changes: watch::channel(0).0,
            wake: Notify::new(),
            opts,
            connect_timeout,
            probe_key,
        })
    }

    pub(crate) fn spawn_prober(self: &Arc<Self>) -> ProberGuard {
        let pool = self.clone();
        ProberGuard(tokio::spawn(async move { pool.prober().await }))
    }

    fn client(&self, i: usize) -> Option<Client> {
        self.clients[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn endpoint(&self, i: usize) -> &str {
        &self.endpoints[i]
    }

    pub(crate) fn probe_timeout(&self) -> Duration {
        lock(&self.set).config().probe_timeout
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(crate) fn hedge_after(&self, i: usize, max: Duration) -> Duration {
        lock(&self.set).hedge_after(i, max)
    }

    /// The member for one more copy of a request (see `MemberSet::pick_copy`) and its
    /// client; a member without a client yet is not chosen.
    pub(crate) fn pick_copy(&self, in_flight: &[usize], last: usize) -> Option<(usize, Client)> {
        let mut busy = in_flight.to_vec();
        for _ in 0..=self.endpoints.len() {
            let i = lock(&self.set).pick_copy(&busy, last)?;
            match self.client(i) {
                Some(c) => return Some((i, c)),
                // Counted as busy: it has no connection to send on.
                None => busy.extend(std::iter::repeat_n(i, 4 * self.endpoints.len())),
            }
        }
        None
    }

    /// The member for the next request (skipping `tried`) and its client.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<(usize, Client)> {
        let mut skip = tried.to_vec();
        loop {
            let i = lock(&self.set).pick(&skip)?;
            match self.client(i) {
                Some(c) => return Some((i, c)),
                None => skip.push(i),
            }
        }
    }

    pub(crate) fn report(&self, i: usize, ev: Event) {
        let suspect = matches!(ev, Event::Suspect);
        let tr = lock(&self.set).on(i, ev, std::time::Instant::now());
        if suspect {
            self.wake.notify_one();
        }
        let Some(tr) = tr else { return };
        let view = lock(&self.set).view()[i].clone();
        match tr.to {
            Health::Unhealthy => tracing::warn!(
                member = %self.endpoints[i],
                reachable = view.reachable,
                has_leader = view.has_leader,
                error = view.last_error.as_deref().unwrap_or(""),
                "etcd member unhealthy; taken out of rotation until a probe succeeds"
            ),
            Health::Slow => tracing::warn!(
                member = %self.endpoints[i],
                has_leader = view.has_leader,
                rtt_ms = view.rtt.map(|d| d.as_millis() as u64),
                "etcd member slow (it answers, but its round trip is above the slow threshold); used only when no healthy member is left"
            ),
            _ if matches!(tr.from, Health::Unhealthy | Health::Slow) => tracing::info!(
                member = %self.endpoints[i],
                was = ?tr.from,
                "etcd member healthy again"
            ),
            _ => {}
        }
        self.changes.send_modify(|g| *g += 1);
    }

    pub(crate) fn view(&self) -> Vec<MemberView> {
        lock(&self.set).view().to_vec()
    }

    /// Resolves when member `i` goes unhealthy after this call (not if it already is).
    pub(crate) fn lost(self: &Arc<Self>, i: usize) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.changes.subscribe();
        let start = lock(&self.set).view()[i].failures;
        let weak = Arc::downgrade(self);
        async move {
            loop {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let Some(p) = weak.upgrade() else {
                    return std::future::pending().await;
                };
                if lock(&p.set).view()[i].failures > start {
                    return;
                }
            }
        }
    }

    async fn prober(self: Arc<Self>) {
        loop {
            let now = std::time::Instant::now();
            let due = {
                let mut s = lock(&self.set);
                let d = s.due(now);
                s.probing(&d, now);
                d
            };
            for i in due {
                let p = self.clone();
                tokio::spawn(async move { p.probe(i).await });
            }
            let next = lock(&self.set)
                .next_due()
                .map(|t| t.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(next.max(Duration::from_millis(10))) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Status, then a linearizable read, each with the probe deadline. A member without a
    /// client yet (it did not answer at start) is connected first.
    async fn probe(&self, i: usize) {
        let timeout = self.probe_timeout();
        let mut client = match self.client(i) {
            Some(c) => c,
            None => {
                let connect =
                    Client::connect([self.endpoints[i].as_str()], Some(self.opts.clone()));
                match tokio::time::timeout(self.connect_timeout.min(timeout * 4), connect).await {
                    Ok(Ok(c)) => {
                        *self.clients[i].lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(c.clone());
                        c
                    }
                    Ok(Err(e)) => {
                        let e = KvError::from_etcd("connect", e);
                        let f = failure_of(&e).unwrap_or(Failure::Unreachable(e.to_string()));
                        self.report(
                            i,
                            Event::Probe {
                                reachable: false,
                                leader: 0,
                                read: Err(f),
                            },
                        );
                        return;
                    }
                    Err(_) => {
                        let f = Failure::Timeout(format!("connecting timed out after {timeout:?}"));
                        self.report(
                            i,
                            Event::Probe {
                                reachable: false,
                                leader: 0,
                                read: Err(f),
                            },
                        );
                        return;
                    }
                }
            }
        };
        // The linearizable read says whether the member is usable; only when it fails does a
        // status request say whether the member answers at all, and which leader it knows.
        let start = Instant::now();
        let read = tokio::time::timeout(
            timeout,
            client.get(
                self.probe_key.clone(),
                Some(GetOptions::new().with_count_only()),
            ),
        )
        .await;
        let read = match read {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => {
                let e = KvError::from_etcd("probe", e);
                Err(failure_of(&e).unwrap_or(Failure::Unreachable(e.to_string())))
            }
            Err(_) => Err(Failure::Timeout(format!(
                "a linearizable read got no answer within {timeout:?} (no quorum reachable from this member?)"
            ))),
        };
        let (reachable, leader) = if read.is_ok() {
            (true, 1)
        } else {
            match tokio::time::timeout(timeout, client.status()).await {
                Ok(Ok(s)) => (true, s.leader()),
                // The member answered (e.g. "no leader"): reachable. Any other UNAVAILABLE
                // is tonic's for a connection it could not make.
                Ok(Err(etcd_client::Error::GRpcStatus(s)))
                    if ErrorKind::of_status(&s) != ErrorKind::Status(tonic::Code::Unavailable) =>
                {
                    (true, 0)
                }
                _ => (false, 0),
            }
        };
        self.report(
            i,
            Event::Probe {
                reachable,
                leader,
                read,
            },
        );
    }
}

impl KvStore {
    /// A member's client for a stream (watch, lease keep-alive), with the member's index for
    /// [`report_failure`](Self::report_failure) and [`member_lost`](Self::member_lost).
    pub fn member_client(&self) -> (usize, Client) {
        self.pool
            .pick(&[])
            .expect("a KvStore has at least one connected member")
    }

    /// Tells the member health that a stream on `member` failed with `e` (a member without
    /// leader, unreachable or silent leaves the rotation).
    pub fn report_failure(&self, member: usize, e: &KvError) {
        if let Some(f) = failure_of(e) {
            self.pool.report(member, Event::RequestFailed(f));
        }
    }

    /// A stream on `member` worked.
    pub fn report_ok(&self, member: usize) {
        self.pool.report(member, Event::RequestOk);
    }

    /// Resolves when `member` goes unhealthy (after this call): a stream on it should move.
    pub fn member_lost(&self, member: usize) -> impl Future<Output = ()> + Send + 'static {
        self.pool.lost(member)
    }

    /// The endpoint of member `i`.
    pub fn member_endpoint(&self, member: usize) -> &str {
        self.pool.endpoint(member)
    }

    /// Every member and its health (for status and metrics).
    pub fn members(&self) -> Vec<MemberView> {
        self.pool.view()
    }
}
