//! The meshd agent: the per-node daemon around the library (see `docs/architecture.md`).
//!
//! [`run`] binds its API socket and metrics listener first (so a bad path fails at once and
//! `ironctl mesh status` says what meshd waits for), then reaches the local etcd (retrying
//! while it is unreachable), takes its PodCIDRs by transaction, registers its node record on
//! a lease, joins the mirror election of every remote cluster (mirroring while elected), and
//! runs the merged view and the garbage collectors until `shutdown` completes. On a clean
//! stop it resigns its mirror elections (others take over) and stops renewing its node lease:
//! a restart takes the record back before the lease runs out, so the other nodes see no change
//! (`mesh.deregister_on_stop` revokes it instead, for decommissioning).

pub mod addrs;
pub mod cli;
mod config;
pub mod convert;
pub mod datapath_owner;
pub mod endpoints;
pub mod flows;
pub mod grpc;
mod health;
pub mod metrics;
mod node;
mod podcidrs;
mod rollout;
pub mod sinks;
pub mod state;
mod wiring;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{AgentConfig, RemoteSpec, default_api_socket};
use tokio::sync::watch;

use crate::kvstore::{KvError, KvStore};
use state::Shared;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the config has no [mesh] section; meshd needs mesh.etcd_endpoints and mesh.cluster_id"
    )]
    NoMesh,
    /// `observe.serve`: the flows server could not listen.
    #[error("{0}")]
    Observe(String),
    #[error("{field}: {detail}")]
    Config { field: String, detail: String },
    #[error(transparent)]
    Secret(configs::SecretFileError),
    #[error(
        "the local etcd refused user {user:?} on cluster {cluster}'s keys: {source}. mesh.auth.user must be cluster {cluster}'s own meshd user, the one `ironctl mesh provision --cluster {cluster}` creates in this cluster's etcd"
    )]
    Denied {
        user: String,
        cluster: common::ClusterName,
        source: Box<KvError>,
    },
    #[error("cannot serve the API on {path}: {source}; pass --api with a writable path")]
    Api {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}; pass --metrics with a free address")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the node's WireGuard key: {0}")]
    Keys(#[from] crypto::StoreError),
    #[error("the local etcd: {0}")]
    Etcd(KvError),
    #[error("PodCIDR allocation: {0}")]
    Ipam(crate::ipam::IpamError),
    #[error(transparent)]
    Datapath(#[from] datapath_owner::OwnerError),
    #[error("API server failed: {0}")]
    ApiServer(#[from] tonic::transport::Error),
}

/// Completes once `stop` turned true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs `op` until it succeeds; a transient failure is logged and retried every `every`.
/// `None`: the agent was asked to stop meanwhile.
async fn retrying<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    every: Duration,
    stop: &watch::Receiver<bool>,
    transient: impl FnMut(&E) -> bool,
    op: impl FnMut() -> Fut,
) -> Result<Option<T>, E> {
    retry_loop(what, every, every, stop, transient, op).await
}

/// [`retrying`], with the wait doubling from `first` to 30 s while the error lasts (for errors
/// only an operator can end, e.g. a malformed value under this node's keys).
async fn retrying_backoff<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    first: Duration,
    stop: &watch::Receiver<bool>,
    transient: impl FnMut(&E) -> bool,
    op: impl FnMut() -> Fut,
) -> Result<Option<T>, E> {
    retry_loop(what, first, Duration::from_secs(30), stop, transient, op).await
}

/// Runs `op` until it succeeds, fails for good or meshd stops, waiting `first` after the
/// first transient error and doubling the wait up to `max`.
async fn retry_loop<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    first: Duration,
    max: Duration,
    stop: &watch::Receiver<bool>,
    mut transient: impl FnMut(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<Option<T>, E> {
    let mut every = first;
    loop {
        let r = tokio::select! {
            r = op() => r,
            _ = stopped(stop.clone()) => return Ok(None),
        };
        match r {
            Ok(v) => return Ok(Some(v)),
            Err(e) if transient(&e) => {
                tracing::error!("{what}: {e}; retrying in {}s", every.as_secs_f32());
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(stop.clone()) => return Ok(None),
        }
        every = (every * 2).min(max);
    }
}

/// Runs the agent until `shutdown` completes (see the module docs).
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let metrics_listener = match cfg.metrics {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let wireguard_key = if cfg.wireguard {
        let ks = crypto::KeyStore::load_or_create(&cfg.state_dir)?;
        Some(ks.public_key().to_string())
    } else {
        None
    };
    let shared = Arc::new(
        Shared::new(
            cfg.node.clone(),
            cfg.cluster.clone(),
            cfg.cluster_id,
            cfg.local_etcd.endpoints.join(","),
            cfg.remotes.iter().map(|r| (r.name.clone(), r.id)).collect(),
        )
        .with_service_cidrs(cfg.service_cidrs.clone())
        .with_pod_pools(cfg.pools.iter().map(|p| p.cidr()).collect())
        .with_observe(cfg.observe.clone()),
    );
    // The flow records' ring exists from the start (the collector fills it once the datapath
    // is loaded), so relays can connect at once.
    if let Some(owner) = cfg.datapath_owner.as_ref().filter(|o| o.flows > 0) {
        shared.set_flows(Some(flows::FlowStore::new(owner.flows)));
    }
    let (stop_tx, stop) = watch::channel(false);
    // The node record's address.
    let flows_ip = node::addresses(&cfg).0;
    if cfg.observe.serve && flows_ip.is_none() {
        return Err(AgentError::Observe(
            "observe.serve: this node has no IPv4 address to serve its flows on; set mesh.node_ipv4".into(),
        ));
    }
    let node_flows = match (cfg.observe.serve, flows_ip) {
        (true, Some(ip)) => Some(tokio::spawn(
            flows::serve_node_flows(
                shared.clone(),
                std::net::SocketAddr::new(ip.into(), cfg.observe.port),
                stopped(stop.clone()),
            )
            .await
            .map_err(AgentError::Observe)?,
        )),
        _ => None,
    };
    let api = match &cfg.api_socket {
        Some(path) => Some(tokio::spawn(grpc::serve(
            shared.clone(),
            path,
            stopped(stop.clone()),
        )?)),
        None => None,
    };
    let ui = match cfg.observe.ui {
        Some(addr) => {
            let l = metrics::bind(addr)
                .await
                .map_err(|e| AgentError::Observe(format!("observe.ui: binding {addr}: {e}")))?;
            tracing::info!(%addr, "serving the flows page");
            let page_shared = shared.clone();
            let handler = move |route| flows::page_answer(page_shared.clone(), route);
            Some(tokio::spawn(api::metrics::serve_routes(
                l,
                handler,
                stopped(stop.clone()),
            )))
        }
        None => None,
    };
    let metrics = metrics_listener.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "metrics listening");
        tokio::spawn(metrics::serve(l, shared.clone(), stopped(stop.clone())))
    });
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });

    let result = node::serve(&cfg, &shared, wireguard_key, stop.clone()).await;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(f) = node_flows {
        let _ = f.await;
    }
    if let Some(u) = ui {
        let _ = u.await;
    }
    if let Some(api) = api {
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "API server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "API task failed"),
        }
    }
    if let Some(path) = &cfg.api_socket {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Connects to the local etcd, retrying while it is unreachable. `None`: stopped meanwhile.
async fn connect_local(
    cfg: &AgentConfig,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) -> Result<Option<KvStore>, AgentError> {
    let r = retrying(
        "cannot reach the local etcd",
        cfg.retry_interval,
        stop,
        |e: &KvError| {
            shared.set_etcd_error(Some(e.to_string()));
            e.is_transient()
        },
        || KvStore::connect(&cfg.local_etcd),
    )
    .await
    .map_err(|e| node::denied(cfg, e, AgentError::Etcd))?;
    if r.is_some() {
        shared.set_etcd_error(None);
        tracing::info!(endpoints = %cfg.local_etcd.endpoints.join(","), "connected to the local etcd");
    }
    Ok(r)
}
