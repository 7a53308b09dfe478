//! A thin async layer over etcd (v3 API as etcd 3.4 serves it: KV, Txn, Watch, Lease only).
//!
//! [`KvStore`] connects to a list of endpoints, checks at once that the cluster answers (so a
//! wrong address or wrong credentials fail at start-up with the endpoints named), and puts a
//! timeout on every unary call. [`Reflector`] mirrors a prefix into a consumer with
//! list-then-watch and resync after disconnects or compaction.
//!
//! Errors say whether they are worth retrying ([`KvError::is_transient`]): the allocators retry
//! transient errors (leader elections, a member that died, timeouts) within a deadline.

pub mod auth;
pub mod members;
pub(crate) mod pool;
mod reflector;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use etcd_client as etcd;
use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions, Txn, TxnResponse};
pub use reflector::{
    Cache, Change, Decoder, Reflector, ReflectorConfig, ReflectorEvent, ReflectorStatus, SyncState,
};

/// Whether this build can talk TLS to etcd (the `tls` feature).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

/// TLS to etcd: PEM files (needs meshd built with the `tls` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificates (`--trusted-ca-file` of etcd).
    pub ca: std::path::PathBuf,
    /// Client certificate and key, when etcd runs with `--client-cert-auth`.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The name to check in the server certificate (default: the endpoint's host).
    pub server_name: Option<String>,
}

/// How to reach an etcd cluster.
#[derive(Clone)]
pub struct KvConfig {
    /// `http://host:port` URLs, or `https://host:port` with [`tls`](Self::tls).
    pub endpoints: Vec<String>,
    /// How long start-up waits for the cluster to answer.
    pub connect_timeout: Duration,
    /// Timeout of each unary request (get, put, txn, lease grant).
    pub op_timeout: Duration,
    /// User name and password, when etcd has auth enabled.
    pub user: Option<(String, String)>,
    /// The key prefix of the liveness probe (a count-only read): a user restricted to a prefix
    /// (a remote cluster's read-only user) must probe inside it. Default `ironmesh/`.
    pub probe_prefix: String,
    /// TLS material; required for `https://` endpoints.
    pub tls: Option<TlsFiles>,
}

impl fmt::Debug for KvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvConfig")
            .field("endpoints", &self.endpoints)
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("probe_prefix", &self.probe_prefix)
            .field("tls", &self.tls)
            .finish()
    }
}

impl KvConfig {
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(3),
            user: None,
            probe_prefix: crate::schema::ROOT.into(),
            tls: None,
        }
    }
}

/// Why an etcd operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error("no etcd endpoints configured; list at least one like \"http://10.0.0.5:2379\"")]
    NoEndpoints,
    #[error("etcd endpoint {endpoint:?} is invalid: {detail}")]
    InvalidEndpoint { endpoint: String, detail: String },
    #[error("etcd TLS setting {field}: {detail}")]
    Tls { field: String, detail: String },
    #[error(
        "etcd is unreachable at {endpoints} (no answer within {timeout:?}): {detail}; check the addresses and that etcd runs"
    )]
    Unreachable {
        endpoints: String,
        timeout: Duration,
        detail: String,
    },
    #[error("etcd authentication failed for user {user:?} at {endpoints}: {detail}")]
    Auth {
        user: String,
        endpoints: String,
        detail: String,
    },
    #[error("etcd at {endpoints} requires authentication but no user is configured: {detail}")]
    AuthRequired { endpoints: String, detail: String },
    #[error(
        "etcd denied {} the {access} of {} ({op}: {detail}); {}",
        who(.user.as_deref()),
        what(.key),
        fix(*.access)
    )]
    PermissionDenied {
        op: String,
        /// Whether the request read or wrote.
        access: Access,
        /// The key or prefix asked for (empty when the request spans several).
        key: String,
        /// The etcd user the request ran as (`None`: no user configured).
        user: Option<String>,
        detail: String,
    },
    #[error("etcd {op} timed out after {timeout:?} (endpoints {endpoints})")]
    Timeout {
        op: String,
        timeout: Duration,
        endpoints: String,
    },
    #[error("etcd {op} failed: {detail}")]
    Etcd {
        op: String,
        detail: String,
        transient: bool,
    },
}

/// Whether a request reads or writes etcd (a denied one says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// What an operation named `op` does (reads: get, list, probe, watch, connect).
    pub fn of(op: &str) -> Self {
        match op {
            "get" | "list" | "probe" | "watch" | "connect" | "authenticate" => Access::Read,
            _ => Access::Write,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

fn who(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user {u:?}"),
        None => "the client (no etcd user configured; TLS client certificate's CN)".into(),
    }
}

/// The longest key an error quotes.
const MAX_KEY_SHOWN: usize = 200;

fn what(key: &str) -> String {
    let shown: String = key.chars().take(MAX_KEY_SHOWN).collect();
    let cut = if shown.len() < key.len() { "…" } else { "" };
    match key {
        "" => "its keys".into(),
        k if k.ends_with('/') => format!("prefix {shown:?}{cut}"),
        _ => format!("key {shown:?}{cut}"),
    }
}

fn fix(access: Access) -> &'static str {
    match access {
        Access::Read => {
            "the user's roles do not grant reading it: a cluster's meshd user reads `ironmesh/`, a remote's reader user only the cluster prefix it mirrors. Check which user the config names for this etcd (mesh.auth.user for the local etcd, mesh.remote_clusters[].auth for a remote) and run `ironctl mesh provision` on that etcd to grant the roles"
        }
        Access::Write => {
            "the user's roles do not grant writing it: a cluster's meshd user may write only its own cluster's prefix `ironmesh/v1/clusters/<cluster>/` and `ironmesh/v1/mirror/`, a reader user nothing. Check that mesh.auth.user is this cluster's own user and run `ironctl mesh provision` on this cluster's etcd to grant the roles"
        }
    }
}

impl KvError {
    /// A denied request's key and user, once the caller knows them (other errors unchanged).
    pub fn denied_on(self, key: &str, user: Option<&str>) -> Self {
        match self {
            KvError::PermissionDenied {
                op, access, detail, ..
            } => KvError::PermissionDenied {
                op,
                access,
                key: key.to_owned(),
                user: user.map(str::to_owned),
                detail,
            },
            e => e,
        }
    }

    /// True for failures that a retry may cure: timeouts, unavailable members, leader changes.
    pub fn is_transient(&self) -> bool {
        match self {
            KvError::Timeout { .. } | KvError::Unreachable { .. } => true,
            KvError::Etcd { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The request failed before reaching any server (connection refused or unreachable),
    /// so sending it again cannot apply it twice.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, KvError::Etcd { detail, .. } if detail.contains("connect error"))
    }

    pub(crate) fn from_etcd(op: &str, e: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        use tonic::Code;
        match e {
            E::GRpcStatus(s) => {
                let detail = format!("{:?}: {}", s.code(), s.message());
                match s.code() {
                    Code::PermissionDenied => KvError::PermissionDenied {
                        op: op.into(),
                        access: Access::of(op),
                        key: String::new(),
                        user: None,
                        detail,
                    },
                    code => KvError::Etcd {
                        op: op.into(),
                        detail,
                        transient: matches!(
                            code,
                            Code::Unavailable
                                | Code::DeadlineExceeded
                                | Code::Unknown
                                | Code::Aborted
                                | Code::Internal
                                | Code::Cancelled
                                | Code::ResourceExhausted
                        ),
                    },
                }
            }
            E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => {
                KvError::Etcd {
                    op: op.into(),
                    detail: error_chain(&e),
                    transient: true,
                }
            }
            other => KvError::Etcd {
                op: op.into(),
                detail: error_chain(&other),
                transient: false,
            },
        }
    }
}

/// With TLS configured, a connection that fails in the handshake (unknown issuer, no client
/// certificate, transport closed by the server) is a TLS setting problem, not an auth one.
fn tls_failure(cfg: &KvConfig, detail: &str) -> bool {
    cfg.tls.is_some()
        && [
            "certificate",
            "UnknownIssuer",
            "transport error",
            "handshake",
            "tls",
        ]
        .iter()
        .any(|w| detail.contains(w))
}

fn tls_error(detail: String) -> KvError {
    KvError::Tls {
        field: "tls".into(),
        detail: format!(
            "the TLS handshake with etcd failed ({detail}); check that `ca` signed etcd's server certificate and that `client_cert`/`client_key` are signed by a CA etcd trusts (--trusted-ca-file)"
        ),
    }
}

/// The error and its sources on one line (tonic hides the useful part in `source()`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl From<&etcd_client::KeyValue> for Kv {
    fn from(kv: &etcd_client::KeyValue) -> Self {
        Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

/// Connects to one member (authenticating when a user is configured) and checks with a
/// linearizable read that it is part of a quorum, by `deadline`. Errors name all endpoints.
async fn connect_member(
    cfg: &KvConfig,
    opts: ConnectOptions,
    ep: &str,
    endpoints: &str,
    deadline: tokio::time::Instant,
) -> Result<Client, KvError> {
    let unreachable = |detail: String| KvError::Unreachable {
        endpoints: endpoints.to_string(),
        timeout: cfg.connect_timeout,
        detail,
    };
    // Authentication happens in connect; a transient failure there (a member starting, a
    // stream cancelled) is retried within the connect timeout.
    let mut client = loop {
        let connect = Client::connect([ep], Some(opts.clone()));
        let e = match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => return Err(unreachable("connect timed out".into())),
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => KvError::from_etcd("authenticate", e),
        };
        let rejected = |d: &str| {
            [
                "authentication failed",
                "InvalidArgument",
                "Unauthenticated",
                "PermissionDenied",
            ]
            .iter()
            .any(|w| d.contains(w))
        };
        return Err(match (&cfg.user, e) {
            (_, KvError::Etcd { detail, .. }) if tls_failure(cfg, &detail) => tls_error(detail),
            (Some((user, _)), KvError::Etcd { detail, .. }) if rejected(&detail) => KvError::Auth {
                user: user.clone(),
                endpoints: endpoints.to_string(),
                detail,
            },
            (_, e)
                if e.is_transient()
                    && tokio::time::Instant::now() + Duration::from_millis(100) < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            (_, KvError::Etcd { detail, .. }) => unreachable(detail),
            (_, e) => e,
        });
    };
    // The channel connects lazily: one read proves the member is there and has a quorum.
    // A refused connection is retried within the connect timeout.
    let key = cfg.probe_prefix.as_bytes();
    let e = loop {
        let read = client.get(key, Some(GetOptions::new().with_count_only()));
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(_)) => return Ok(client),
            Err(_) => return Err(unreachable("no answer to a first read".into())),
            Ok(Err(e)) => {
                let e = KvError::from_etcd("probe", e);
                if e.is_transient()
                    && tokio::time::Instant::now() + Duration::from_millis(100) < deadline
                    && !matches!(&e, KvError::Etcd { detail, .. } if tls_failure(cfg, detail))
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                break e.denied_on(
                    &cfg.probe_prefix,
                    cfg.user.as_ref().map(|(u, _)| u.as_str()),
                );
            }
        }
    };
    Err(match e {
        KvError::Etcd { detail, .. } if tls_failure(cfg, &detail) => tls_error(detail),
        KvError::Etcd { detail, .. }
            if detail.contains("Unauthenticated") || detail.contains("user name") =>
        {
            match &cfg.user {
                Some((user, _)) => KvError::Auth {
                    user: user.clone(),
                    endpoints: endpoints.to_string(),
                    detail,
                },
                None => KvError::AuthRequired {
                    endpoints: endpoints.to_string(),
                    detail,
                },
            }
        }
        KvError::Etcd { detail, .. } => unreachable(detail),
        other => other,
    })
}

/// A connected etcd client. Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct KvStore {
    /// One client per member, chosen by member health (`members.rs`, `pool.rs`).
    pool: Arc<pool::Pool>,
    _prober: Arc<pool::ProberGuard>,
    endpoints: Arc<str>,
    op_timeout: Duration,
    probe_prefix: Arc<str>,
    /// The etcd user requests run as (named by a denied request's error).
    user: Option<Arc<str>>,
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore")
            .field("endpoints", &self.endpoints)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

/// Keys per page when listing a prefix (keeps each response far below gRPC's 4 MiB).
const LIST_PAGE: i64 = 1000;

impl KvStore {
    /// Connects and checks that the cluster answers a linearizable read within
    /// `connect_timeout`; authenticates first when a user is configured.
    pub async fn connect(cfg: &KvConfig) -> Result<Self, KvError> {
        if cfg.endpoints.is_empty() {
            return Err(KvError::NoEndpoints);
        }
        for ep in &cfg.endpoints {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(KvError::InvalidEndpoint {
                    endpoint: ep.clone(),
                    detail: "write http://HOST:PORT".into(),
                });
            }
            if ep.starts_with("https://") != cfg.tls.is_some() {
                return Err(KvError::InvalidEndpoint {
                    endpoint: ep.clone(),
                    detail: if cfg.tls.is_some() {
                        "TLS is configured: write https://HOST:PORT".into()
                    } else {
                        "an https:// endpoint needs the TLS files (ca, client cert and key) configured".into()
                    },
                });
            }
        }
        let endpoints: Arc<str> = cfg.endpoints.join(",").into();
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            // HTTP/2 pings find dead connections (etcd's default minimum ping interval is 5 s).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // etcd's `hasleader` metadata (clientv3's WithRequireLeader): a member without
            // quorum answers "no leader" at once instead of letting requests time out.
            .with_require_leader(true);
        if let Some((u, p)) = &cfg.user {
            // etcd's simple tokens expire (5 min unused) and die with a restarted member:
            // log in again and resend once, instead of failing every call from then on.
            opts = opts
                .with_user(u.clone(), p.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &cfg.tls {
            opts = tls::apply(opts, tls)?;
        }
        // One client per member, all tried at once: the first member that answers a
        // linearizable read (so it is part of a quorum) is enough to start; the others are
        // connected by the prober as they answer.
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        let mut tries = tokio::task::JoinSet::new();
        for (i, ep) in cfg.endpoints.iter().enumerate() {
            let (cfg, opts, ep, all) = (cfg.clone(), opts.clone(), ep.clone(), endpoints.clone());
            tries.spawn(async move { (i, connect_member(&cfg, opts, &ep, &all, deadline).await) });
        }
        let mut errors = Vec::new();
        while let Some(done) = tries.join_next().await {
            let Ok((i, r)) = done else { continue };
            match r {
                Ok(client) => {
                    let pool = pool::Pool::new(
                        cfg.endpoints.clone(),
                        (i, client),
                        opts,
                        cfg.connect_timeout,
                        cfg.op_timeout,
                        cfg.probe_prefix.as_bytes().to_vec(),
                    );
                    let prober = pool.spawn_prober();
                    return Ok(KvStore {
                        pool,
                        _prober: Arc::new(prober),
                        endpoints,
                        op_timeout: cfg.op_timeout,
                        probe_prefix: cfg.probe_prefix.as_str().into(),
                        user: cfg.user.as_ref().map(|(u, _)| u.as_str().into()),
                    });
                }
                Err(e) => errors.push((i, e)),
            }
        }
        errors.sort_by_key(|(i, _)| *i);
        // A refusal (credentials, TLS, permission) says more than "unreachable".
        if let Some(pos) = errors
            .iter()
            .position(|(_, e)| !matches!(e, KvError::Unreachable { .. }))
        {
            return Err(errors.swap_remove(pos).1);
        }
        let detail = errors
            .iter()
            .map(|(i, e)| match e {
                KvError::Unreachable { detail, .. } => format!("{}: {detail}", cfg.endpoints[*i]),
                other => format!("{}: {other}", cfg.endpoints[*i]),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(KvError::Unreachable {
            endpoints: endpoints.to_string(),
            timeout: cfg.connect_timeout,
            detail,
        })
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// The client of the member requests go to now (a healthy one), for streams; see
    /// [`member_client`](Self::member_client) to report a stream's failure.
    pub fn client(&self) -> Client {
        self.member_client().1
    }

    /// Runs one request with the op timeout on a healthy member. A member that fails it in a
    /// way that says the member is unusable (no leader, connection refused, no answer within
    /// half the op timeout, or a probe of it failing meanwhile) leaves the rotation and the
    /// request is sent again, to the next member, within the same op timeout. A member
    /// without leader refuses requests before applying them, and a member that lost its
    /// quorum cannot commit an abandoned attempt; an attempt abandoned on a merely slow member
    /// may still apply, which the callers' requests tolerate (puts and deletes are
    /// idempotent, allocations are compare-and-set transactions that look up first).
    async fn timed<T, F, Fut>(&self, op: &str, mut f: F) -> Result<T, KvError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        use members::Event;
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        // One attempt gets half the op timeout: a request stuck on a member (etcd 3.4 does
        // not resend a read index lost in an election) is sent again, elsewhere if the member
        // has gone bad, while time is left.
        let attempt_for = self.op_timeout / 2;
        // A request slower than this has its member probed at once (other requests and
        // streams on it move sooner if the probe fails).
        let suspect_after = (attempt_for / 2).min(self.pool.probe_timeout());
        let timeout = || KvError::Timeout {
            op: op.into(),
            timeout: self.op_timeout,
            endpoints: self.endpoints.to_string(),
        };
        let mut tried = Vec::new();
        let mut last: Option<KvError> = None;
        loop {
            let Some((i, client)) = self.pool.pick(&tried) else {
                // Every member tried: start over after a pause, within the deadline.
                let retry_at = tokio::time::Instant::now() + Duration::from_millis(50);
                if retry_at >= deadline {
                    return Err(last.unwrap_or_else(timeout));
                }
                tokio::time::sleep_until(retry_at).await;
                tried.clear();
                continue;
            };
            tried.push(i);
            let attempt = f(client);
            let lost = self.pool.lost(i);
            let suspect = tokio::time::sleep(suspect_after);
            let attempt_end = (tokio::time::Instant::now() + attempt_for).min(deadline);
            let give_up = tokio::time::sleep_until(attempt_end);
            tokio::pin!(attempt, lost, suspect, give_up);
            let mut suspected = false;
            let outcome = loop {
                tokio::select! {
                    r = &mut attempt => break Some(r),
                    _ = &mut lost => break None,
                    _ = &mut suspect, if !suspected => {
                        suspected = true;
                        self.pool.report(i, Event::Suspect);
                    }
                    _ = &mut give_up => {
                        let e = timeout();
                        self.report_failure(i, &e);
                        if tokio::time::Instant::now() + Duration::from_millis(10) >= deadline {
                            return Err(e);
                        }
                        break None;
                    }
                }
            };
            match outcome {
                Some(Ok(v)) => {
                    self.pool.report(i, Event::RequestOk);
                    return Ok(v);
                }
                Some(Err(e)) => {
                    let e = KvError::from_etcd(op, e);
                    if pool::failure_of(&e).is_none() {
                        return Err(e);
                    }
                    self.report_failure(i, &e);
                    last = Some(e);
                }
                None => {
                    tracing::debug!(op, member = %self.pool.endpoint(i), "member went unhealthy or did not answer in time; sending the request again");
                    last = Some(KvError::Etcd {
                        op: op.into(),
                        detail: format!("member {} went unhealthy", self.pool.endpoint(i)),
                        transient: true,
                    });
                }
            }
        }
    }

    /// One key (linearizable read).
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, KvError> {
        let r = self
            .timed("get", |mut c| async move { c.get(key, None).await })
            .await
            .map_err(|e| self.denied(e, key))?;
        Ok(r.kvs().first().map(Kv::from))
    }

    /// Every key under `prefix` at one revision, paged; returns the keys and that revision.
    pub async fn list(&self, prefix: &str, keys_only: bool) -> Result<(Vec<Kv>, i64), KvError> {
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            if keys_only {
                opts = opts.with_keys_only();
            }
            let r = self
                .timed("list", |mut c| {
                    let (from, opts) = (from.clone(), opts.clone());
                    async move { c.get(from, Some(opts)).await }
                })
                .await
                .map_err(|e| self.denied(e, prefix))?;
            if revision == 0 {
                revision = r.header().map(|h| h.revision()).unwrap_or(0);
            }
            out.extend(r.kvs().iter().map(Kv::from));
            match r.kvs().last() {
                Some(last) if r.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    pub async fn put(&self, key: &str, value: Vec<u8>, lease: Option<i64>) -> Result<(), KvError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        self.timed("put", |mut c| {
            let (value, opts) = (value.clone(), opts.clone());
            async move { c.put(key, value, opts).await }
        })
        .await
        .map(drop)
        .map_err(|e| self.denied(e, key))
    }

    pub async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let r = self
            .timed("delete", |mut c| async move { c.delete(key, None).await })
            .await
            .map_err(|e| self.denied(e, key))?;
        Ok(r.deleted() > 0)
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, KvError> {
        self.timed("txn", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(|e| self.denied(e, ""))
    }

    /// A denied request's error names the key and this store's user.
    fn denied(&self, e: KvError, key: &str) -> KvError {
        e.denied_on(key, self.user.as_deref())
    }

    /// The etcd user requests run as (`None`: no user configured).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Grants a lease of `ttl` seconds; returns its ID.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, KvError> {
        let r = self
            .timed("lease grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok(r.id())
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), KvError> {
        self.timed(
            "lease revoke",
            |mut c| async move { c.lease_revoke(id).await },
        )
        .await
        .map(drop)
    }

    /// A cheap linearizable read: fails when the cluster has no quorum reachable from here.
    pub async fn probe(&self) -> Result<i64, KvError> {
        // One key (the prefix itself), count only: cheap whatever the prefix holds.
        let key = self.probe_prefix.as_bytes();
        let r = self
            .timed("probe", |mut c| async move {
                c.get(key, Some(GetOptions::new().with_count_only())).await
            })
            .await
            .map_err(|e| self.denied(e, &self.probe_prefix))?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }
}

/// Retries `op` while it fails transiently, with backoff, until `deadline` has passed.
pub(crate) async fn retry_transient<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut op: F,
) -> Result<T, KvError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KvError>>,
{
    let start = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if e.is_transient() && start.elapsed() + backoff < deadline => {
                tracing::debug!(what, error = %e, "transient etcd error; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(op: &str) -> KvError {
        KvError::from_etcd(
            op,
            etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(
                "etcdserver: permission denied",
            )),
        )
    }

    #[test]
    fn permission_denied_names_the_operation_the_key_and_the_user_with_the_fix() {
        let e = denied("list").denied_on("ironmesh/v1/clusters/blue/", Some("red-reader"));
        let s = e.to_string();
        assert!(
            s.starts_with(
                "etcd denied user \"red-reader\" the read of prefix \"ironmesh/v1/clusters/blue/\" (list: PermissionDenied: etcdserver: permission denied); the user's roles do not grant reading it"
            ),
            "{s}"
        );
        assert!(
            s.contains("mesh.remote_clusters[].auth") && s.contains("ironctl mesh provision"),
            "{s}"
        );
        assert!(
            !s.contains("may write only"),
            "a read is not about writing: {s}"
        );

        let e = denied("put").denied_on("ironmesh/v1/clusters/blue/nodes/n1", Some("red"));
        let s = e.to_string();
        assert!(
            s.starts_with(
                "etcd denied user \"red\" the write of key \"ironmesh/v1/clusters/blue/nodes/n1\" (put: "
            ),
            "{s}"
        );
        assert!(
            s.contains("may write only its own cluster's prefix `ironmesh/v1/clusters/<cluster>/`")
                && s.contains("mesh.auth.user"),
            "{s}"
        );
        // A transaction spans keys; without a user the client certificate is named.
        let s = denied("txn").denied_on("", None).to_string();
        assert!(
            s.starts_with("etcd denied the client (no etcd user configured; TLS client certificate's CN) the write of its keys (txn: "),
            "{s}"
        );
        assert_eq!(Access::of("watch"), Access::Read);
        assert_eq!(Access::of("delete"), Access::Write);
        // A long key is quoted bounded.
        let long = "k".repeat(5_000);
        let s = denied("get").denied_on(&long, Some("u")).to_string();
        assert!(s.len() < 1_500 && s.contains("…"), "{}", s.len());
        // Other errors are left alone.
        let t = KvError::NoEndpoints.denied_on("x", Some("u"));
        assert!(matches!(t, KvError::NoEndpoints));
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn transient_errors() {
        let t = KvError::Timeout {
            op: "get".into(),
            timeout: Duration::from_secs(1),
            endpoints: "http://192.0.2.1:2379".into(),
        };
        assert!(t.is_transient());
        assert!(t.to_string().contains("http://192.0.2.1:2379"));
        assert!(!KvError::NoEndpoints.is_transient());
    }
}
