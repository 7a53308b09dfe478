//! The speaker: tokio I/O at the edge of the sans-IO FSM and RIB. One task per peer, one core
//! task owning the RIB, one accept loop, and the gRPC API on a Unix socket.

pub mod config;
mod conn;
mod core;
mod graceful;
mod grpc;
mod listener;
pub mod metrics;
mod peer;
mod registry;
pub mod reload;
pub mod sockopt;
mod status;
mod unnumbered;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{ConfigError, PeerSpec, SpeakerConfig};
pub use status::{Counters, PeerStatus, notification_text};

use crate::rib::{Advert, PeerId, Rib};
pub use core::{AdvertsAdded, CoreError};
use core::{Core, CoreCmd};
use peer::PeerMsg;
use registry::Registry;
pub use reload::ReloadError;

/// Why adverts were refused (nothing was added).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvertError {
    /// A special prefix while `bgp.allow_special_prefixes` is off (the refusal names it).
    #[error("advert {0}")]
    SpecialPrefix(String),
    #[error(transparent)]
    Pool(#[from] CoreError),
}

/// Why a reload from the config file was refused (the running config is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReloadFileError {
    #[error("bgpd was started without a config file to reload")]
    NoConfigFile,
    #[error("{path}: {source}")]
    Config {
        path: String,
        source: configs::ConfigError,
    },
    #[error("{path}: {source}")]
    Speaker { path: String, source: ConfigError },
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the API on {path}: {source}")]
    Api {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write kernel routes: {0}")]
    Fib(crate::fib::FibError),
    #[error("API server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Options of [`run`] besides the config.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Serve the gRPC API on this Unix socket.
    pub api_socket: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address.
    pub metrics: Option<SocketAddr>,
    /// The config file, re-read on SIGHUP and by the API's Reload.
    pub config_path: Option<PathBuf>,
}

/// A peer as the API sees it.
#[derive(Debug)]
pub struct PeerView {
    pub id: PeerId,
    pub name: String,
    pub address: IpAddr,
    pub local_asn: u32,
    pub status: Arc<Mutex<PeerStatus>>,
    tx: mpsc::Sender<PeerMsg>,
}

/// A cheap, cloneable handle to a running speaker.
#[derive(Clone, Debug)]
pub struct SpeakerHandle {
    cmds: mpsc::Sender<CoreCmd>,
    peers: Arc<RwLock<Vec<Arc<PeerView>>>>,
    registry: Arc<tokio::sync::Mutex<Registry>>,
    config_path: Option<Arc<PathBuf>>,
}

/// A running speaker.
#[derive(Debug)]
pub struct Speaker {
    handle: SpeakerHandle,
    listen_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    bmp: crate::bmp::BmpSink,
}

impl Speaker {
    /// Binds the listening socket, starts every peer and the core. Errors before any session.
    pub async fn start(cfg: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let listener = match cfg.listen {
            Some(addr) => {
                let md5: Vec<(IpAddr, Vec<u8>)> = cfg
                    .peers
                    .iter()
                    .filter_map(|p| p.transport.md5_key.clone().map(|k| (p.address, k)))
                    .collect();
                Some(
                    listener::bind(addr, &md5)
                        .map_err(|source| SpeakerError::Listen { addr, source })?,
                )
            }
            None => None,
        };
        let listen_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let listener = listener.map(Arc::new);
        // Events carry batches (one read of UPDATEs each): a small bound keeps TCP backpressure.
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let fib_tx = match cfg.fib {
            Some(f) => {
                let fib =
                    crate::fib::Fib::connect(f.table, f.protocol).map_err(SpeakerError::Fib)?;
                let (tx, rx) = mpsc::channel(1024);
                let stale_after = std::time::Duration::from_secs(config::RESTART_TIME.into());
                tokio::spawn(crate::fib::run(fib, rx, stale_after));
                info!(
                    table = f.table,
                    protocol = f.protocol,
                    "installing learned routes into the kernel"
                );
                Some(tx)
            }
            None => None,
        };
        let mut rib = Rib::new(cfg.local_asn, cfg.router_id);
        rib.set_fib_tracking(cfg.fib.is_some());
        let bmp = if cfg.bmp_collectors.is_empty() {
            crate::bmp::BmpSink::default()
        } else {
            let q = cmd_tx.clone();
            let dump: crate::bmp::DumpFn = Arc::new(move |f| {
                let q = q.clone();
                Box::pin(async move { q.send(CoreCmd::Query(f)).await.is_ok() })
            });
            info!(collectors = ?cfg.bmp_collectors, "exporting to BMP collectors");
            crate::bmp::start(&cfg.bmp_collectors, &cfg.sys_name, dump)
        };
        let mut core = Core::new(rib, fib_tx, bmp.clone());
        core.set_pools(&cfg.pools);
        let initial = cfg
            .adverts
            .iter()
            .map(|a| (a.clone(), cfg.advert_pool.get(&a.prefix).cloned()))
            .collect();
        let mut tasks = vec![tokio::spawn(core.run(initial, ev_rx, cmd_rx))];
        let peers = cfg.peers.clone();
        let restarted = cfg.state_dir.as_deref().is_some_and(graceful::restarted);
        let mut reg = Registry::new(cfg, ev_tx, cmd_tx.clone(), listener.clone());
        reg.restarted = restarted;
        for p in peers {
            reg.add(p).await;
        }
        reg.restarted = false;
        if let Some(l) = listener {
            info!(addr = ?listen_addr, "listening for BGP connections");
            tasks.push(tokio::spawn(listener::accept_loop(l, reg.routes.clone())));
        }
        Ok(Speaker {
            handle: SpeakerHandle {
                cmds: cmd_tx,
                peers: reg.views.clone(),
                registry: Arc::new(tokio::sync::Mutex::new(reg)),
                config_path: None,
            },
            listen_addr,
            tasks,
            bmp,
        })
    }

    pub fn handle(&self) -> SpeakerHandle {
        self.handle.clone()
    }

    /// The bound listening address (useful with port 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Stops every session. `notify`: send Cease/Administrative Shutdown; otherwise close the
    /// connections silently so graceful-restart peers keep our routes (RFC 4724).
    pub async fn stop(self, notify: bool) {
        // BFD first, with AdminDown: the peers must not take our stop for a path failure
        // (RFC 5882 §3.2), which would defeat graceful restart.
        let bfd: Vec<_> = self
            .handle
            .registry
            .lock()
            .await
            .bfd_sessions
            .drain()
            .collect();
        for (_, b) in bfd {
            b.stop().await;
        }
        for p in self.handle.peers() {
            let _ = p.tx.send(PeerMsg::Shutdown { notify }).await;
        }
        // Peer tasks exit on Shutdown (after sending a Cease if asked); wait for them, then
        // stop the core and the accept loop.
        let peer_tasks: Vec<_> = self.handle.registry.lock().await.tasks.drain().collect();
        for (_, t) in peer_tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
        }
        // BMP sessions end with a Termination after the Peer Downs above.
        self.bmp.shutdown(std::time::Duration::from_secs(1)).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

impl SpeakerHandle {
    /// The configured peers now (a snapshot: reloads add and remove peers).
    pub fn peers(&self) -> Vec<Arc<PeerView>> {
        self.peers.read().unwrap().clone()
    }

    /// Applies a new config without touching sessions whose peer settings did not change;
    /// returns the names of the peers whose sessions were started, restarted or removed.
    pub async fn reload(&self, new: SpeakerConfig) -> Result<Vec<String>, ReloadError> {
        self.registry.lock().await.reload(new).await
    }

    /// The config the speaker runs with now (as given at start or by the last reload).
    pub async fn reload_config_snapshot(&self) -> SpeakerConfig {
        self.registry.lock().await.current.clone()
    }

    /// Re-reads the config file given in [`RunOptions::config_path`] and applies it.
    pub async fn reload_from_file(&self) -> Result<Vec<String>, ReloadFileError> {
        let path = self
            .config_path
            .as_ref()
            .ok_or(ReloadFileError::NoConfigFile)?;
        let at = |p: &std::path::Path| p.display().to_string();
        let cfg = configs::Config::from_file(path.as_path()).map_err(|source| {
            ReloadFileError::Config {
                path: at(path),
                source,
            }
        })?;
        let new = SpeakerConfig::from_config(&cfg).map_err(|source| ReloadFileError::Speaker {
            path: at(path),
            source,
        })?;
        Ok(self.reload(new).await?)
    }

    /// The BFD session of each peer that has one, by peer name.
    pub async fn bfd_status(&self) -> std::collections::HashMap<String, crate::bfd::BfdStatus> {
        self.registry
            .lock()
            .await
            .bfd_sessions
            .iter()
            .map(|(name, h)| (name.clone(), h.status()))
            .collect()
    }

    /// Runs `f` on the RIB inside the core task.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rib) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let q: core::Query = Box::new(move |rib: &Rib| {
            let _ = tx.send(f(rib));
        });
        self.cmds.send(CoreCmd::Query(q)).await.ok()?;
        rx.await.ok()
    }

    /// Adds or replaces adverts; returns how many were added and replaced. Never resets a
    /// session.
    pub async fn add_adverts(&self, adverts: Vec<Advert>) -> Option<AdvertsAdded> {
        let list = adverts.into_iter().map(|a| (a, None)).collect();
        self.add_adverts_in_pools(list).await?.ok()
    }

    /// Adds adverts, each optionally in a VIP pool; `Err` names a bad pool, or a special
    /// prefix (default route, loopback, multicast, ... see [`config::special_prefix`]) while
    /// `bgp.allow_special_prefixes` is off, and adds nothing.
    pub async fn add_adverts_in_pools(
        &self,
        adverts: Vec<(Advert, Option<String>)>,
    ) -> Option<Result<AdvertsAdded, AdvertError>> {
        if !self.registry.lock().await.current.allow_special_prefixes
            && let Some(e) = adverts
                .iter()
                .find_map(|(a, _)| config::special_prefix_refusal(&a.prefix))
        {
            return Some(Err(AdvertError::SpecialPrefix(e)));
        }
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(CoreCmd::AddAdverts { adverts, reply })
            .await
            .ok()?;
        Some(rx.await.ok()?.map_err(AdvertError::from))
    }

    pub async fn remove_adverts(&self, prefixes: Vec<IpNet>) -> Option<u32> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(CoreCmd::RemoveAdverts { prefixes, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// RFC 8326 graceful shutdown of every session's routes; returns the sessions up.
    pub async fn drain(&self) -> Option<u32> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(CoreCmd::Drain { reply }).await.ok()?;
        rx.await.ok()
    }

    /// Stops a peer's session (Cease/Administrative Shutdown with `communication`, RFC 9003)
    /// and keeps it down until [`SpeakerHandle::start_peer`].
    pub async fn stop_peer(&self, name: &str, communication: Option<String>) -> bool {
        self.send_to(name, PeerMsg::Stop { communication }).await
    }

    pub async fn start_peer(&self, name: &str) -> bool {
        self.send_to(name, PeerMsg::Start).await
    }

    async fn send_to(&self, name: &str, msg: PeerMsg) -> bool {
        let peer = self.peers().into_iter().find(|p| p.name == name);
        match peer {
            Some(p) => p.tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Asks a peer to re-send its routes (RFC 2918).
    pub async fn request_refresh(&self, name: &str) -> bool {
        self.send_to(name, PeerMsg::RequestRefresh).await
    }
}

/// Binds the gRPC API on the Unix socket `path` now and returns the server, which serves
/// `handle` until `shutdown` completes.
pub fn serve_api(
    handle: SpeakerHandle,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static, SpeakerError>
{
    let incoming = api::unix::bind(path).map_err(|source| SpeakerError::Api {
        path: path.to_path_buf(),
        source,
    })?;
    info!(socket = %path.display(), "API listening");
    let svc = api::bgp::bgp_server::BgpServer::new(grpc::BgpApi::new(handle));
    Ok(tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown))
}

/// SIGHUP: re-read the config file; a bad one is refused and the running config kept.
async fn reload_on_sighup(handle: SpeakerHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot catch SIGHUP: reload only through the API");
        return;
    };
    while hup.recv().await.is_some() {
        match handle.reload_from_file().await {
            Ok(changed) => info!(?changed, "config reloaded"),
            Err(e) => warn!(error = %e, "config reload refused; the running config is kept"),
        }
    }
}

/// Runs bgpd until `shutdown` completes: the speaker, plus the API and metrics if configured.
pub async fn run(
    cfg: SpeakerConfig,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SpeakerError> {
    let metrics = match opts.metrics {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| SpeakerError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let mut speaker = Speaker::start(cfg).await?;
    speaker.handle.config_path = opts.config_path.map(Arc::new);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let api = match opts.api_socket {
        Some(path) => Some(tokio::spawn(serve_api(speaker.handle(), &path, async {
            let _ = stop_rx.await;
        })?)),
        None => None,
    };
    let (mstop_tx, mstop_rx) = oneshot::channel::<()>();
    let metrics = metrics.map(|l| {
        info!(addr = ?l.local_addr().ok(), "metrics listening");
        tokio::spawn(metrics::serve(l, speaker.handle(), async {
            let _ = mstop_rx.await;
        }))
    });
    let reloader = tokio::spawn(reload_on_sighup(speaker.handle()));
    shutdown.await;
    reloader.abort();
    info!("shutting down: closing sessions without NOTIFICATION (graceful restart)");
    let _ = stop_tx.send(());
    let _ = mstop_tx.send(());
    let state_dir = speaker.handle.reload_config_snapshot().await.state_dir;
    speaker.stop(false).await;
    if let Some(dir) = state_dir {
        graceful::mark_stopped(&dir);
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(api) = api {
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "API server ended with an error"),
            Err(e) => warn!(error = %e, "API task failed"),
        }
    }
    Ok(())
}
