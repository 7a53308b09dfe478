//! The core task: a thin driver around [`CoreState`] (sans-IO, in `state.rs`). Peer tasks send
//! it session events and UPDATEs, the API sends it commands; it turns each into an [`Input`],
//! hands it to the state with the time, and carries out the [`Action`]s: bytes to a session,
//! FIB changes, BMP events, commands to a peer task, replies. Timers are deadlines it sleeps
//! on. After each batch it asks the state to flush.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::peer::{CoreEvent, Outbound, PeerMsg};
use crate::bmp::BmpSink;
use crate::fib::FibMsg;
use crate::policy::Policy;
use crate::rib::{Advert, PeerId, Rib};

mod state;
#[cfg(test)]
mod tests;

pub use state::{
    Action, AdvertsAdded, CoreError, CoreState, CoreTimer, Input, NewPeer, PeerCommand, Reply,
    SessionUp,
};

/// A read-only look at the RIB, run inside the core task.
pub type Query = Box<dyn FnOnce(&Rib) + Send>;

/// Commands to the core task (from the API, the registry, BMP).
pub enum CoreCmd {
    /// Adds or replaces adverts, each optionally in a VIP pool; replies what it did, or why
    /// nothing was added.
    AddAdverts {
        adverts: Vec<(Advert, Option<String>)>,
        reply: oneshot::Sender<Result<AdvertsAdded, CoreError>>,
    },
    /// Removes adverts; replies how many existed.
    RemoveAdverts {
        prefixes: Vec<IpNet>,
        reply: oneshot::Sender<u32>,
    },
    Query(Query),
    /// RFC 8326: re-announce everything with GRACEFUL_SHUTDOWN; replies the number of peers.
    Drain {
        reply: oneshot::Sender<u32>,
    },
    /// A new peer (before its task starts); acknowledged.
    AddPeer {
        peer: NewPeer,
        link: PeerLink,
        ack: oneshot::Sender<()>,
    },
    /// Forget a peer and withdraw what it sent; acknowledged.
    RemovePeer {
        peer: PeerId,
        ack: oneshot::Sender<()>,
    },
    /// New import and export policies for a peer, without a session reset; acknowledged.
    SetPolicies {
        peer: PeerId,
        import: Policy,
        export: Policy,
        ack: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for CoreCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoreCmd::AddAdverts { .. } => "AddAdverts",
            CoreCmd::RemoveAdverts { .. } => "RemoveAdverts",
            CoreCmd::Query(_) => "Query",
            CoreCmd::Drain { .. } => "Drain",
            CoreCmd::AddPeer { .. } => "AddPeer",
            CoreCmd::RemovePeer { .. } => "RemovePeer",
            CoreCmd::SetPolicies { .. } => "SetPolicies",
        })
    }
}

/// How the core reaches a peer's task.
pub struct PeerLink {
    /// Session-level commands (max-prefix Cease, notices).
    pub tx: mpsc::Sender<PeerMsg>,
    /// Encoded messages, tagged with the session generation.
    pub out: Outbound,
}

pub struct Core {
    state: CoreState,
    /// The kernel FIB writer, when learned routes are installed.
    fib: Option<mpsc::Sender<FibMsg>>,
    /// BMP exporters (RFC 7854); empty when none is configured.
    bmp: BmpSink,
    links: HashMap<PeerId, PeerLink>,
    /// Armed timers, as the state's actions left them.
    timers: BTreeMap<CoreTimer, Instant>,
}

/// The time as the driver gives it to the state (tokio's clock, so paused-time tests work).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Core {
    pub fn new(rib: Rib, fib: Option<mpsc::Sender<FibMsg>>, bmp: BmpSink) -> Core {
        Core {
            state: CoreState::new(rib, fib.is_some(), !bmp.is_empty()),
            fib,
            bmp,
            links: HashMap::new(),
            timers: BTreeMap::new(),
        }
    }

    pub fn set_pools(&mut self, pools: &[configs::Pool]) {
        self.state.set_pools(pools);
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        initial: Vec<(Advert, Option<String>)>,
        mut events: mpsc::Receiver<CoreEvent>,
        mut cmds: mpsc::Receiver<CoreCmd>,
    ) {
        self.state.add_initial(initial);
        self.step(Input::Flush).await;
        let mut cmds_open = true;
        loop {
            let deadline = self.timers.values().min().copied();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    self.event(ev).await;
                    // Batch whatever else is queued before flushing.
                    for _ in 0..1024 {
                        match events.try_recv() {
                            Ok(ev) => self.event(ev).await,
                            Err(_) => break,
                        }
                    }
                }
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(c) => self.command(c).await,
                    None => cmds_open = false,
                },
                () = sleep => {
                    let now = now();
                    let due: Vec<CoreTimer> = self
                        .timers
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(t, _)| *t)
                        .collect();
                    for t in due {
                        self.timers.remove(&t);
                        self.step(Input::Timer(t)).await;
                    }
                }
            }
            self.step(Input::Flush).await;
        }
    }

    async fn event(&mut self, ev: CoreEvent) {
        let input = match ev {
            CoreEvent::Up {
                peer,
                generation,
                negotiated,
                local,
                remote,
            } => Input::Up(SessionUp {
                peer,
                generation,
                negotiated,
                local,
                remote,
                link_local: link_local_for(local.ip()),
            }),
            CoreEvent::Down {
                peer,
                generation,
                reason,
            } => Input::Down {
                peer,
                generation,
                reason,
            },
            CoreEvent::Updates {
                peer,
                generation,
                updates,
            } => Input::Updates {
                peer,
                generation,
                updates,
            },
            CoreEvent::RouteRefresh {
                peer,
                generation,
                msg,
            } => Input::RouteRefresh {
                peer,
                generation,
                msg,
            },
        };
        self.step(input).await;
    }

    async fn command(&mut self, cmd: CoreCmd) {
        match cmd {
            CoreCmd::Query(q) => q(self.state.rib()),
            CoreCmd::AddAdverts { adverts, reply } => {
                if let Some(Reply::Adverts(r)) = self.step(Input::AddAdverts(adverts)).await {
                    let _ = reply.send(r);
                }
            }
            CoreCmd::RemoveAdverts { prefixes, reply } => {
                if let Some(Reply::Removed(n)) = self.step(Input::RemoveAdverts(prefixes)).await {
                    let _ = reply.send(n);
                }
            }
            CoreCmd::Drain { reply } => {
                if let Some(Reply::Drained(n)) = self.step(Input::Drain).await {
                    let _ = reply.send(n);
                }
            }
            CoreCmd::AddPeer { peer, link, ack } => {
                self.links.insert(peer.info.id, link);
                self.step(Input::AddPeer(peer)).await;
                let _ = ack.send(());
            }
            CoreCmd::RemovePeer { peer, ack } => {
                self.step(Input::RemovePeer(peer)).await;
                self.links.remove(&peer);
                let _ = ack.send(());
            }
            CoreCmd::SetPolicies {
                peer,
                import,
                export,
                ack,
            } => {
                self.step(Input::SetPolicies {
                    peer,
                    import,
                    export,
                })
                .await;
                let _ = ack.send(());
            }
        }
    }

    /// Feeds one input to the state and carries out its actions; returns its reply, if any.
    async fn step(&mut self, input: Input) -> Option<Reply> {
        let mut reply = None;
        for action in self.state.on(input, now()) {
            match action {
                Action::Send {
                    peer,
                    generation,
                    bytes,
                } => {
                    // Never waits: the peer task may be waiting on us.
                    if let Some(l) = self.links.get(&peer)
                        && l.out.send((generation, bytes)).is_err()
                    {
                        debug!(?peer, "peer task gone");
                    }
                }
                Action::Fib(msg) => {
                    if let Some(fib) = &self.fib
                        && fib.send(msg).await.is_err()
                    {
                        warn!("the FIB task is gone: kernel routes are no longer updated");
                    }
                }
                Action::Bmp(ev) => self.bmp.send(ev),
                Action::Peer { peer, cmd } => {
                    let msg = match cmd {
                        PeerCommand::Cease {
                            subcode,
                            communication,
                            hold_down,
                            reason,
                        } => PeerMsg::Cease {
                            subcode,
                            communication,
                            hold_down,
                            reason,
                        },
                        PeerCommand::Notice(s) => PeerMsg::Notice(s),
                    };
                    if let Some(l) = self.links.get(&peer)
                        && l.tx.try_send(msg).is_err()
                    {
                        warn!(?peer, "peer task busy: max-prefix action not delivered");
                    }
                }
                Action::ArmTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Action::CancelTimer(t) => {
                    self.timers.remove(&t);
                }
                Action::Reply(r) => reply = Some(r),
            }
        }
        reply
    }
}

/// The IPv6 link-local address of the interface that holds `local` (sent as the second next
/// hop of IPv6 routes, RFC 2545 §3). None when unknown.
fn link_local_for(local: IpAddr) -> Option<Ipv6Addr> {
    let IpAddr::V6(addr) = local else { return None };
    if addr.is_unicast_link_local() {
        return None;
    }
    let rows = super::unnumbered::interface_addresses();
    let ifname = rows
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, i)| i.clone())?;
    rows.into_iter()
        .find(|(a, i)| *i == ifname && a.is_unicast_link_local())
        .map(|(a, _)| a)
}
