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
        /// What failed, from the gRPC status code (member health is judged by this).
        kind: ErrorKind,
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

/// etcd's description of its "no leader" error (`rpctypes.ErrGRPCNoLeader`, UNAVAILABLE):
/// among UNAVAILABLE answers it is the one that says the member lost its quorum. clientv3
/// tells etcd's errors apart by the same descriptions (`rpctypes.ErrorDesc`).
pub const ETCD_NO_LEADER: &str = "etcdserver: no leader";

/// The class of a failed etcd call, from its gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A gRPC status: from the member, or tonic's own (UNAVAILABLE for a connection that
    /// could not be made, as gRPC specifies).
    Status(tonic::Code),
    /// UNAVAILABLE with etcd's [`ETCD_NO_LEADER`]: the member has no quorum.
    NoLeader,
    /// The connection broke below gRPC (transport, I/O, a stream that ended).
    Transport,
    /// Anything else (an argument the client refused, an unexpected answer).
    Other,
}

impl ErrorKind {
    /// The class of a gRPC status.
    pub fn of_status(s: &tonic::Status) -> Self {
        if s.code() == tonic::Code::Unavailable && s.message() == ETCD_NO_LEADER {
            ErrorKind::NoLeader
        } else {
            ErrorKind::Status(s.code())
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

    /// The class of an [`Etcd`](KvError::Etcd) error (`None` for the others).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            KvError::Etcd { kind, .. } => Some(*kind),
            _ => None,
        }
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
                        kind: ErrorKind::of_status(&s),
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
                    kind: ErrorKind::Transport,
                }
            }
            other => KvError::Etcd {
                op: op.into(),
                detail: error_chain(&other),
                transient: false,
                kind: ErrorKind::Other,
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
        // etcd refuses a login with INVALID_ARGUMENT ("authentication failed, invalid user
        // ID or password"), UNAUTHENTICATED or PERMISSION_DENIED.
        let rejected = |k: ErrorKind| {
            matches!(
                k,
                ErrorKind::Status(
                    tonic::Code::InvalidArgument
                        | tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                )
            )
        };
        return Err(match (&cfg.user, e) {
            (_, KvError::Etcd { detail, .. }) if tls_failure(cfg, &detail) => tls_error(detail),
            (Some((user, _)), KvError::Etcd { detail, kind, .. }) if rejected(kind) => {
                KvError::Auth {
                    user: user.clone(),
                    endpoints: endpoints.to_string(),
                    detail,
                }
            }
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
        // No or an expired token (UNAUTHENTICATED), or no user name (INVALID_ARGUMENT,
        // etcd's "user name is empty") on a read.
        KvError::Etcd {
            detail,
            kind: ErrorKind::Status(tonic::Code::Unauthenticated | tonic::Code::InvalidArgument),
            ..
        } => match &cfg.user {
            Some((user, _)) => KvError::Auth {
                user: user.clone(),
                endpoints: endpoints.to_string(),
                detail,
            },
            None => KvError::AuthRequired {
                endpoints: endpoints.to_string(),
                detail,
            },
        },
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

    /// Runs one request with the op timeout, on a healthy member, copied to other members
    /// when it is not answered in time (a hedged request). The first copy goes to the
    /// preferred member; while no copy has answered, another is sent after the hedge delay of
    /// the member it goes to ([`MemberSet::hedge_after`](members::MemberSet::hedge_after):
    /// 4 times that member's smoothed round trip, between 50 ms and a quarter of the op
    /// timeout), to a member without a copy first, then rotating over the usable ones; a
    /// copy that fails in a way that says its member is unusable (no leader, refused) sends
    /// the next one at once. Each copy lives half the op timeout (etcd 3.4 does not resend a
    /// read index lost in an election, so a stuck copy never comes back by itself); one that
    /// runs out marks its member unhealthy. The first answer wins; members whose copies it
    /// overtook are reported late (slow, probed at once).
    ///
    /// So a member cut off from its peers costs one hedge delay, not a timeout, and a cut
    /// leader costs etcd's election plus at most a rotation of copies. A member without
    /// leader refuses requests before applying them, and a member that lost its quorum cannot
    /// commit a copy; a copy on a merely slow member may still apply as well as another one,
    /// which the callers' requests tolerate (puts and deletes are idempotent, allocations are
    /// compare-and-set transactions that look up first).
    async fn timed<T, F, Fut>(&self, op: &str, mut f: F) -> Result<T, KvError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        use members::Event;
        use tokio::time::Instant;
        let start = Instant::now();
        let deadline = start + self.op_timeout;
        let copy_for = self.op_timeout / 2;
        let hedge_max = self.op_timeout / 4;
        // A copy stuck on a follower whose leader was cut never returns (its forwarded
        // proposal is lost), so copies keep going out every hedge delay until etcd has a new
        // leader: enough for one per hedge delay over a copy's life, plus one per member.
        let max_copies = self.pool.len().max(1)
            + (copy_for.as_millis() / members::HEDGE_MIN.as_millis()) as usize;
        let timeout = || KvError::Timeout {
            op: op.into(),
            timeout: self.op_timeout,
            endpoints: self.endpoints.to_string(),
        };
        // In flight: a few (during an election, one per hedge delay), polled in turn.
        struct Copy<C> {
            member: usize,
            sent: Instant,
            hedge: Duration,
            suspected: bool,
            fut: std::pin::Pin<Box<tokio::time::Timeout<C>>>,
        }
        let mut copies: Vec<Copy<Fut>> = Vec::new();
        let mut last_member = 0;
        let mut last_err: Option<KvError> = None;
        let mut next_copy = start;
        // Copies that failed since the last pause: once every member failed one, the next
        // copy waits a little (members that refuse at once are not hammered in a loop).
        let mut failed = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last_err.unwrap_or_else(timeout));
            }
            if now >= next_copy && copies.len() < max_copies {
                let in_flight: Vec<usize> = copies.iter().map(|c| c.member).collect();
                match self.pool.pick_copy(&in_flight, last_member) {
                    Some((i, client)) => {
                        let hedge = self.pool.hedge_after(i, hedge_max);
                        // The members this copy is sent away from are probed now.
                        for c in copies.iter_mut().filter(|c| !c.suspected) {
                            c.suspected = true;
                            self.pool.report(c.member, Event::Suspect);
                        }
                        let end = (now + copy_for).min(deadline);
                        copies.push(Copy {
                            member: i,
                            sent: now,
                            hedge,
                            suspected: false,
                            fut: Box::pin(tokio::time::timeout_at(end, f(client))),
                        });
                        last_member = i;
                        next_copy = now + hedge;
                    }
                    None => next_copy = now + members::HEDGE_MIN,
                }
            }
            let wake = if copies.len() < max_copies {
                next_copy.min(deadline)
            } else {
                deadline
            };
            let done = tokio::select! {
                d = std::future::poll_fn(|cx| {
                    for (k, c) in copies.iter_mut().enumerate() {
                        if let std::task::Poll::Ready(r) = c.fut.as_mut().poll(cx) {
                            return std::task::Poll::Ready((k, r));
                        }
                    }
                    std::task::Poll::Pending
                }), if !copies.is_empty() => Some(d),
                _ = tokio::time::sleep_until(wake) => None,
            };
            let Some((k, r)) = done else { continue };
            let Copy {
                member: i, sent, ..
            } = copies.swap_remove(k);
            match r {
                Ok(Ok(v)) => {
                    let rtt = sent.elapsed();
                    self.pool.report(i, Event::Answered(rtt));
                    for c in &copies {
                        if c.member != i && c.sent.elapsed() > c.hedge {
                            self.pool.report(c.member, Event::Late);
                        }
                    }
                    return Ok(v);
                }
                Ok(Err(e)) => {
                    let e = KvError::from_etcd(op, e);
                    if pool::failure_of(&e).is_none() {
                        return Err(e);
                    }
                    tracing::debug!(op, member = %self.pool.endpoint(i), error = %e, "request failed on a member; sending it to another");
                    self.report_failure(i, &e);
                    last_err = Some(e);
                    failed += 1;
                    next_copy = if failed >= self.pool.len() {
                        failed = 0;
                        Instant::now() + members::HEDGE_MIN
                    } else {
                        Instant::now()
                    };
                }
                Err(_) => {
                    let e = KvError::Timeout {
                        op: op.into(),
                        timeout: copy_for,
                        endpoints: self.pool.endpoint(i).to_string(),
                    };
                    tracing::debug!(op, member = %self.pool.endpoint(i), "a copy of a request got no answer in time");
                    self.report_failure(i, &e);
                    next_copy = Instant::now();
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

    /// Each class of failure, from the gRPC status code alone: what member health makes
    /// of it (`pool::failure_of`), and whether a retry may cure it.
    #[test]
    fn errors_are_classified_by_grpc_status_code() {
        use members::Failure;
        use tonic::Status;
        let class = |s: Status| {
            let e = KvError::from_etcd("put", etcd_client::Error::GRpcStatus(s));
            (e.kind(), pool::failure_of(&e), e.is_transient())
        };
        // No leader: etcd's UNAVAILABLE with its no-leader description.
        let (k, f, t) = class(Status::unavailable(ETCD_NO_LEADER));
        assert_eq!(k, Some(ErrorKind::NoLeader));
        assert!(matches!(f, Some(Failure::NoLeader(_))), "{f:?}");
        assert!(t);
        // Any other UNAVAILABLE (a refused connection as tonic reports it, etcd's "request
        // timed out", "leader changed"; also a message that merely mentions a leader):
        // the member is unusable for now.
        for msg in [
            "tcp connect error: Connection refused (os error 111)",
            "etcdserver: request timed out",
            "etcdserver: leader changed",
            "this text says no leader but is not etcd's error",
        ] {
            let (k, f, t) = class(Status::unavailable(msg));
            assert_eq!(
                k,
                Some(ErrorKind::Status(tonic::Code::Unavailable)),
                "{msg}"
            );
            assert!(matches!(f, Some(Failure::Unreachable(_))), "{msg}: {f:?}");
            assert!(t, "{msg}");
        }
        // DEADLINE_EXCEEDED: no answer in time.
        let (k, f, t) = class(Status::deadline_exceeded("context deadline exceeded"));
        assert_eq!(k, Some(ErrorKind::Status(tonic::Code::DeadlineExceeded)));
        assert!(matches!(f, Some(Failure::Timeout(_))), "{f:?}");
        assert!(t);
        // The member answered and refused the request: not a health matter, and whatever the
        // text says (here it even mentions "Unavailable" and "no leader").
        let (k, f, t) = class(Status::invalid_argument(
            "etcdserver: key is not provided (Unavailable? no leader?)",
        ));
        assert_eq!(k, Some(ErrorKind::Status(tonic::Code::InvalidArgument)));
        assert_eq!(f, None);
        assert!(!t);
        let (k, f, t) = class(Status::failed_precondition(
            "etcdserver: requested lease not found",
        ));
        assert_eq!(k, Some(ErrorKind::Status(tonic::Code::FailedPrecondition)));
        assert_eq!(f, None);
        assert!(!t);
        // PERMISSION_DENIED is its own error, never a member failure.
        let e = KvError::from_etcd(
            "put",
            etcd_client::Error::GRpcStatus(Status::permission_denied(
                "etcdserver: permission denied",
            )),
        );
        assert!(matches!(e, KvError::PermissionDenied { .. }), "{e:?}");
        assert_eq!(pool::failure_of(&e), None);
        // Below gRPC: a broken connection is an unreachable member.
        let e = KvError::from_etcd(
            "watch",
            etcd_client::Error::IoError(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
        );
        assert_eq!(e.kind(), Some(ErrorKind::Transport));
        assert!(matches!(
            pool::failure_of(&e),
            Some(Failure::Unreachable(_))
        ));
        // A client-side refusal is the caller's problem.
        let e = KvError::from_etcd("put", etcd_client::Error::InvalidArgs("no key".into()));
        assert_eq!(e.kind(), Some(ErrorKind::Other));
        assert_eq!(pool::failure_of(&e), None);
        // meshd's own timeout of a request.
        let e = KvError::Timeout {
            op: "put".into(),
            timeout: Duration::from_secs(1),
            endpoints: "http://192.0.2.1:2379".into(),
        };
        assert!(matches!(pool::failure_of(&e), Some(Failure::Timeout(_))));
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
