//! The set of configured peers at run time: starting a peer (RIB entry, task, listener MD5 key,
//! accept routing), removing one, and applying a reloaded config.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use super::config::{PeerSpec, SpeakerConfig};
use super::core::{CoreCmd, NewPeer, PeerLink};
use super::peer::{CoreEvent, PeerMsg, PeerTask};
use super::reload::{ReloadError, plan};
use super::status::PeerStatus;
use super::{PeerView, listener};
use crate::fsm::PeerAs;
use crate::rib::{PeerId, PeerInfo};
use crate::wire::cease_subcode;

/// Where the accept loop sends a connection: by the peer's address, or for unnumbered peers
/// by the interface (scope) of the link-local address it came from.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    pub by_ip: HashMap<IpAddr, mpsc::Sender<PeerMsg>>,
    pub by_ifindex: HashMap<u32, mpsc::Sender<PeerMsg>>,
}

pub(crate) type Routes = Arc<RwLock<RouteTable>>;

#[derive(Debug)]
pub(crate) struct Registry {
    pub current: SpeakerConfig,
    pub views: Arc<RwLock<Vec<Arc<PeerView>>>>,
    pub routes: Routes,
    pub tasks: HashMap<String, JoinHandle<()>>,
    /// BFD sessions of the peers with `bfd = true`, by peer name.
    pub bfd_sessions: HashMap<String, crate::bfd::SessionHandle>,
    /// Started with the first BFD peer.
    bfd: Option<crate::bfd::Service>,
    ev_tx: mpsc::Sender<CoreEvent>,
    cmds: mpsc::Sender<CoreCmd>,
    listener: Option<Arc<TcpListener>>,
    next_id: u32,
    /// Peers added now start with the graceful-restart R bit (RFC 4724 §4.1).
    pub restarted: bool,
}

impl Registry {
    pub fn new(
        current: SpeakerConfig,
        ev_tx: mpsc::Sender<CoreEvent>,
        cmds: mpsc::Sender<CoreCmd>,
        listener: Option<Arc<TcpListener>>,
    ) -> Registry {
        Registry {
            current,
            views: Arc::new(RwLock::new(Vec::new())),
            routes: Arc::new(RwLock::new(RouteTable::default())),
            tasks: HashMap::new(),
            bfd_sessions: HashMap::new(),
            bfd: None,
            ev_tx,
            cmds,
            listener,
            next_id: 1,
            restarted: false,
        }
    }

    /// Starts a peer: RIB entry first (acknowledged by the core), then its task.
    pub async fn add(&mut self, mut spec: PeerSpec) {
        spec.id = PeerId(self.next_id);
        self.next_id += 1;
        if let (Some(l), Some(key)) = (&self.listener, &spec.transport.md5_key)
            && let Err(e) = listener::set_md5(l, spec.address, key)
        {
            warn!(peer = %spec.name, error = %e, "cannot set the TCP MD5 key on the listener");
        }
        let (tx, rx) = mpsc::channel(1024);
        let asn = match spec.session.peer_as {
            PeerAs::Exact(a) => a,
            PeerAs::Any => 0,
        };
        let info = PeerInfo {
            id: spec.id,
            address: spec.address,
            asn,
            router_id: std::net::Ipv4Addr::UNSPECIFIED,
            ibgp: asn == self.current.local_asn,
            import: spec.import.clone(),
            export: spec.export.clone(),
            next_hop_self: spec.next_hop_self,
            enforce_first_as: spec.enforce_first_as,
            max_accepted: spec
                .max_prefixes
                .filter(|m| m.action == configs::MaxPrefixAction::Drop)
                .map(|m| m.limit),
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let cmd = CoreCmd::AddPeer {
            peer: NewPeer {
                info,
                name: spec.name.clone(),
                max_prefixes: spec.max_prefixes,
            },
            link: PeerLink {
                tx: tx.clone(),
                out: out_tx,
            },
            ack: ack_tx,
        };
        if self.cmds.send(cmd).await.is_err() || ack_rx.await.is_err() {
            return; // shutting down
        }
        let status = Arc::new(Mutex::new(PeerStatus::default()));
        match &spec.transport.interface {
            Some(ifname) => match super::sockopt::ifindex(ifname) {
                Ok(i) => {
                    self.routes
                        .write()
                        .unwrap()
                        .by_ifindex
                        .insert(i, tx.clone());
                }
                Err(e) => {
                    warn!(peer = %spec.name, error = %e, "incoming connections cannot be matched")
                }
            },
            None => {
                self.routes
                    .write()
                    .unwrap()
                    .by_ip
                    .insert(spec.address, tx.clone());
            }
        }
        self.views.write().unwrap().push(Arc::new(PeerView {
            id: spec.id,
            name: spec.name.clone(),
            address: spec.address,
            local_asn: self.current.local_asn,
            status: status.clone(),
            tx: tx.clone(),
        }));
        if let Some(cfg) = spec.bfd {
            let svc = self.bfd.get_or_insert_with(crate::bfd::Service::start);
            match svc.spawn(
                &spec.name,
                spec.address,
                spec.transport.local,
                cfg,
                tx.clone(),
            ) {
                Ok(h) => {
                    self.bfd_sessions.insert(spec.name.clone(), h);
                }
                Err(e) => {
                    warn!(peer = %spec.name, error = %e, "cannot start BFD");
                    status.lock().unwrap().last_error = Some(format!("BFD: {e}"));
                }
            }
        }
        let task = PeerTask {
            id: spec.id,
            name: spec.name.clone(),
            transport: spec.transport.clone(),
            cfg: spec.session.clone(),
            status,
            core: self.ev_tx.clone(),
            rx,
            tx,
            out_rx: Some(out_rx),
            start: true,
            restarted: self.restarted,
        };
        // Every log line of the peer's task carries its name and address.
        let span = tracing::info_span!("peer", name = %spec.name, addr = %spec.address);
        let handle = tokio::spawn(task.run().instrument(span));
        self.tasks.insert(spec.name.clone(), handle);
    }

    /// Stops a peer with a Cease of `subcode` (RFC 4486) and forgets it.
    pub async fn remove(&mut self, name: &str, subcode: u8) {
        let view = {
            let mut views = self.views.write().unwrap();
            let Some(i) = views.iter().position(|v| v.name == name) else {
                return;
            };
            views.remove(i)
        };
        {
            let mut r = self.routes.write().unwrap();
            if let Some(tx) = r.by_ip.get(&view.address)
                && tx.same_channel(&view.tx)
            {
                r.by_ip.remove(&view.address);
            }
            r.by_ifindex.retain(|_, tx| !tx.same_channel(&view.tx));
        }
        if let Some(b) = self.bfd_sessions.remove(name) {
            b.stop().await;
        }
        let _ = view.tx.send(PeerMsg::Remove { subcode }).await;
        if let Some(t) = self.tasks.remove(name) {
            let _ = t.await;
        }
        let (ack_tx, ack_rx) = oneshot::channel();
        if self
            .cmds
            .send(CoreCmd::RemovePeer {
                peer: view.id,
                ack: ack_tx,
            })
            .await
            .is_ok()
        {
            let _ = ack_rx.await;
        }
        if let (Some(l), Some(_)) = (&self.listener, self.md5_of(name)) {
            let _ = listener::set_md5(l, view.address, &[]);
        }
    }

    fn md5_of(&self, name: &str) -> Option<&[u8]> {
        self.current
            .peers
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.transport.md5_key.as_deref())
    }

    /// Applies a new config; returns the names of the peers whose sessions changed.
    pub async fn reload(&mut self, new: SpeakerConfig) -> Result<Vec<String>, ReloadError> {
        let p = plan(&self.current, &new)?;
        let changed = p.changed_peers();
        for name in &p.remove {
            info!(peer = %name, "reload: peer removed");
            self.remove(name, cease_subcode::PEER_DECONFIGURED).await;
        }
        for spec in &p.restart {
            info!(peer = %spec.name, "reload: peer changed, restarting its session");
            self.remove(&spec.name, cease_subcode::OTHER_CONFIGURATION_CHANGE)
                .await;
        }
        for spec in &p.policies {
            // The running peer keeps its id (ids follow config order and may have moved).
            let Some(id) = self
                .current
                .peers
                .iter()
                .find(|o| o.name == spec.name)
                .map(|o| o.id)
            else {
                continue;
            };
            info!(peer = %spec.name, "reload: policy changed, applying without a session reset");
            let (ack, rx) = oneshot::channel();
            let cmd = CoreCmd::SetPolicies {
                peer: id,
                import: spec.import.clone(),
                export: spec.export.clone(),
                ack,
            };
            if self.cmds.send(cmd).await.is_ok() {
                let _ = rx.await;
            }
        }
        self.current
            .peers
            .retain(|o| new.peers.iter().any(|n| n.name == o.name));
        for spec in p.add.iter().chain(&p.restart) {
            info!(peer = %spec.name, "reload: starting peer");
            self.add(spec.clone()).await;
        }
        if !p.advertise.is_empty() {
            let (reply, rx) = oneshot::channel();
            let adverts = p
                .advertise
                .iter()
                .map(|a| (a.clone(), new.advert_pool.get(&a.prefix).cloned()))
                .collect();
            if self
                .cmds
                .send(CoreCmd::AddAdverts { adverts, reply })
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        }
        if !p.withdraw.is_empty() {
            let (reply, rx) = oneshot::channel();
            if self
                .cmds
                .send(CoreCmd::RemoveAdverts {
                    prefixes: p.withdraw.clone(),
                    reply,
                })
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        }
        self.current = new;
        Ok(changed)
    }
}
