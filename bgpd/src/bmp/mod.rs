//! BMP (RFC 7854) export to monitoring stations.
//!
//! One exporter task per configured collector. The core hands it events without ever waiting
//! ([`BmpSink::send`] drops when the queue is full and marks the exporter for a resync). The
//! exporter connects (retrying with backoff), sends Initiation, a Peer Up per established peer and
//! then each such peer's post-policy Adj-RIB-In (L flag, §5) as Route Monitoring messages with a
//! statistics report, and from then on, live, every UPDATE as received (pre-policy, L clear; the
//! decoded UPDATE re-encoded with the session's codec context) followed by the post-policy
//! state of the prefixes it touched (L set: accepted ones with their stored attributes, the
//! rest withdrawn), Peer Up and Peer Down. A lost
//! connection or an overflowed queue ends the BMP session (Termination "out of resources" when it
//! can still be sent) and the next one starts again with the full state.

pub mod msg;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::fsm::DownReason;
use crate::rib::{PeerId, Rib};
use crate::wire::{Context, Message};
pub use msg::{BmpError, BmpMessage, PeerHeader};

/// Events queued per exporter before it is considered too slow and resynced.
const QUEUE: usize = 65_536;

/// An established peer as BMP describes it.
#[derive(Clone, Debug)]
pub struct PeerUp {
    pub peer: PeerId,
    /// Flags (A), address, ASN and BGP identifier; the timestamp is filled per message.
    pub header: PeerHeader,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Whole OPEN messages.
    pub sent_open: Bytes,
    pub received_open: Bytes,
    pub ctx: Context,
}

#[derive(Clone, Debug)]
pub enum BmpEvent {
    Up(Arc<PeerUp>),
    Down {
        peer: PeerId,
        reason: DownReason,
    },
    /// A received UPDATE, whole message (pre-policy), or the post-policy state of what it
    /// changed (L flag).
    Update {
        peer: PeerId,
        pdu: Bytes,
        post_policy: bool,
    },
    /// bgpd stops: send Termination and close.
    Shutdown,
}

/// The core's side: a queue per exporter. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct BmpSink {
    exporters: Vec<(mpsc::Sender<BmpEvent>, Arc<AtomicBool>)>,
}

impl BmpSink {
    pub fn is_empty(&self) -> bool {
        self.exporters.is_empty()
    }

    /// Never waits: a full queue marks that exporter for a resync instead.
    pub fn send(&self, ev: BmpEvent) {
        for (tx, lost) in &self.exporters {
            if tx.try_send(ev.clone()).is_err() {
                lost.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Asks every exporter to send Termination; waits at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        for (tx, _) in &self.exporters {
            let _ = tokio::time::timeout(limit, tx.send(BmpEvent::Shutdown)).await;
        }
    }
}

/// How an exporter gets the RIB dump when a BMP session starts.
pub type DumpFn = Arc<
    dyn Fn(Box<dyn FnOnce(&Rib) + Send>) -> futures_util::future::BoxFuture<'static, bool>
        + Send
        + Sync,
>;

/// Starts one exporter per collector; returns the sink for the core.
pub fn start(collectors: &[SocketAddr], sys_name: &str, dump: DumpFn) -> BmpSink {
    let mut sink = BmpSink::default();
    for &addr in collectors {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        let ex = Exporter {
            addr,
            sys_name: sys_name.to_owned(),
            rx,
            lost: lost.clone(),
            up: BTreeMap::new(),
            dump: dump.clone(),
        };
        tokio::spawn(ex.run());
        sink.exporters.push((tx, lost));
    }
    sink
}

fn now() -> (u32, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros())
}

fn stamped(h: &PeerHeader, flags: u8) -> PeerHeader {
    let (seconds, micros) = now();
    PeerHeader {
        flags: h.flags | flags,
        seconds,
        micros,
        ..*h
    }
}

/// §4.9 reason and data for a session end.
fn down_message(up: &PeerUp, reason: &DownReason) -> Bytes {
    let h = stamped(&up.header, 0);
    let pdu = |n: &crate::wire::NotificationMsg| {
        Message::Notification(n.clone())
            .to_bytes(&up.ctx)
            .unwrap_or_default()
    };
    match reason {
        DownReason::NotificationSent(n) => {
            msg::peer_down(&h, msg::down_reason::LOCAL_NOTIFICATION, &pdu(n))
        }
        DownReason::NotificationReceived(n) => {
            msg::peer_down(&h, msg::down_reason::REMOTE_NOTIFICATION, &pdu(n))
        }
        // RFC 4271 §8.1: event 2 ManualStop; event 18 TcpConnectionFails.
        DownReason::ManualStop => msg::peer_down(
            &h,
            msg::down_reason::LOCAL_NO_NOTIFICATION,
            &2u16.to_be_bytes(),
        ),
        DownReason::BfdDown => msg::peer_down(
            &h,
            msg::down_reason::LOCAL_NO_NOTIFICATION,
            &18u16.to_be_bytes(),
        ),
        DownReason::TcpFailed => msg::peer_down(&h, msg::down_reason::REMOTE_NO_NOTIFICATION, &[]),
    }
}

fn up_message(up: &PeerUp) -> Bytes {
    msg::peer_up(
        &stamped(&up.header, 0),
        (up.local.ip(), up.local.port()),
        up.remote.port(),
        &up.sent_open,
        &up.received_open,
    )
}

struct Exporter {
    addr: SocketAddr,
    sys_name: String,
    rx: mpsc::Receiver<BmpEvent>,
    lost: Arc<AtomicBool>,
    /// Established peers, for the Peer Up messages of a new BMP session.
    up: BTreeMap<PeerId, Arc<PeerUp>>,
    dump: DumpFn,
}

enum End {
    Shutdown,
    Reconnect,
}

impl Exporter {
    /// Keeps the peer table; false when bgpd stops.
    fn track(&mut self, ev: &BmpEvent) -> bool {
        match ev {
            BmpEvent::Up(u) => {
                self.up.insert(u.peer, u.clone());
            }
            BmpEvent::Down { peer, .. } => {
                self.up.remove(peer);
            }
            BmpEvent::Update { .. } => {}
            BmpEvent::Shutdown => return false,
        }
        true
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        loop {
            let conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr));
            let stream = match conn.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(collector = %self.addr, error = %e, "BMP collector unreachable; retrying");
                    }
                    if !self.wait(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    if !self.wait(backoff).await {
                        return;
                    }
                    continue;
                }
            };
            failures = 0;
            backoff = Duration::from_millis(500);
            info!(collector = %self.addr, "BMP session up");
            let _ = stream.set_nodelay(true);
            match self.session(stream).await {
                Ok(End::Shutdown) => return,
                Ok(End::Reconnect) => {}
                Err(e) => {
                    warn!(collector = %self.addr, error = %e, "BMP session lost; reconnecting")
                }
            }
            if !self.wait(Duration::from_millis(200)).await {
                return;
            }
        }
    }

    /// Sleeps while tracking events; false when bgpd stops.
    async fn wait(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                ev = self.rx.recv() => match ev {
                    Some(ev) => if !self.track(&ev) { return false },
                    None => return false,
                },
            }
        }
    }

    async fn session(&mut self, mut s: TcpStream) -> std::io::Result<End> {
        self.lost.store(false, Ordering::Relaxed);
        let descr = format!("ironmesh bgpd {}", env!("CARGO_PKG_VERSION"));
        s.write_all(&msg::initiation(&descr, &self.sys_name))
            .await?;
        for up in self.up.values() {
            s.write_all(&up_message(up)).await?;
        }
        self.initial_dump(&mut s).await?;
        let mut scratch = [0u8; 512];
        loop {
            tokio::select! {
                ev = self.rx.recv() => {
                    let Some(ev) = ev else { return Ok(End::Shutdown) };
                    // The message first: a Down needs the peer's header before `track` drops it.
                    let out = match &ev {
                        BmpEvent::Up(u) => Some(up_message(u)),
                        BmpEvent::Down { peer, reason } => {
                            self.up.get(peer).map(|u| down_message(u, reason))
                        }
                        BmpEvent::Update {
                            peer,
                            pdu,
                            post_policy,
                        } => self.up.get(peer).map(|u| {
                            let l = if *post_policy { msg::peer_flags::L } else { 0 };
                            msg::route_monitoring(&stamped(&u.header, l), pdu)
                        }),
                        BmpEvent::Shutdown => {
                            Some(msg::termination(msg::term_reason::ADMIN_CLOSE, "bgpd stopping"))
                        }
                    };
                    let go_on = self.track(&ev);
                    if let Some(m) = out {
                        s.write_all(&m).await?;
                    }
                    if !go_on {
                        let _ = s.shutdown().await;
                        return Ok(End::Shutdown);
                    }
                    if self.lost.swap(false, Ordering::Relaxed) {
                        warn!(collector = %self.addr, "BMP queue overflowed; restarting the BMP session to resync");
                        s.write_all(&msg::termination(msg::term_reason::OUT_OF_RESOURCES, "queue overflow")).await?;
                        let _ = s.shutdown().await;
                        return Ok(End::Reconnect);
                    }
                }
                // §3.3: a monitoring station sends nothing; EOF means it went away.
                r = s.read(&mut scratch) => {
                    if r? == 0 {
                        return Ok(End::Reconnect);
                    }
                }
            }
        }
    }

    /// §5: each established peer's post-policy Adj-RIB-In, End-of-RIB, and route counts.
    async fn initial_dump(&mut self, s: &mut TcpStream) -> std::io::Result<()> {
        let peers: Vec<Arc<PeerUp>> = self.up.values().cloned().collect();
        if peers.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let wanted: Vec<(PeerId, Context)> = peers.iter().map(|u| (u.peer, u.ctx)).collect();
        let q = Box::new(move |rib: &Rib| {
            let out: Vec<(PeerId, Vec<Bytes>, u64)> = wanted
                .iter()
                .map(|&(id, ctx)| {
                    let (pdus, n) = rib.adj_rib_in_updates(id, ctx);
                    (id, pdus, n)
                })
                .collect();
            let _ = tx.send(out);
        });
        if !(self.dump)(q).await {
            return Ok(());
        }
        let Ok(dumps) = rx.await else { return Ok(()) };
        for (id, pdus, routes) in dumps {
            let Some(up) = peers.iter().find(|u| u.peer == id) else {
                continue;
            };
            for pdu in &pdus {
                let h = stamped(&up.header, msg::peer_flags::L);
                s.write_all(&msg::route_monitoring(&h, pdu)).await?;
            }
            let h = stamped(&up.header, msg::peer_flags::L);
            s.write_all(&msg::statistics(
                &h,
                &[(msg::stat_type::ADJ_RIB_IN_ROUTES, routes)],
            ))
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
