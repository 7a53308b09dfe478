//! BFD, Bidirectional Forwarding Detection (RFC 5880 asynchronous mode, RFC 5881 single hop
//! and RFC 5883 multihop, over IPv4 and IPv6).
//!
//! [`session`] and [`packet`] are sans-IO. The I/O here: a [`Service`] owns one receive socket
//! per address family on UDP 3784 (single hop: datagrams whose TTL / hop limit is not 255 are
//! dropped, RFC 5881 §5) and one on UDP 4784 (multihop: the TTL must be at least the
//! session's configured minimum, RFC 5883 §5; any by default, since e.g. BIRD sends TTL 64),
//! and demultiplexes packets to sessions by Your
//! Discriminator, or by source address while the peer does not know ours yet, never across
//! the two kinds. Each session is a task with its own send socket (source port 49152-65535,
//! TTL 255) that reports Up and Down to its owner.
//!
//! A session runs independently of the BGP session it protects (as FRR and BIRD do): it starts
//! when the peer is configured and a BFD Up→Down takes BGP down at once. A Down because the
//! peer signalled AdminDown is not a failure (RFC 5882 §3.2) and is not reported as one.
//! Stopping a session sends AdminDown first, so the peer does not take it for a failure either.

pub mod packet;
pub mod session;
mod sock;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use packet::{BadPacket, BfdState, CONTROL_PORT, ControlPacket, Diag, MULTIHOP_PORT};
pub use session::{Action, BfdConfig, BfdStatus, Session};

/// What a session tells its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdEvent {
    Up,
    /// The session went from Up to Down: the path to the peer failed.
    Down {
        diag: Diag,
    },
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    multihop: bool,
    /// Lowest TTL / hop limit accepted: 255 single hop, 256 - hops multihop.
    min_ttl: u8,
    tx: mpsc::Sender<ControlPacket>,
}

type Demux = Arc<RwLock<HashMap<u32, Entry>>>;

/// The shared receive side and the discriminator allocator.
#[derive(Debug)]
pub struct Service {
    demux: Demux,
    next_disc: AtomicU32,
    /// Why a (family, kind) has no receive socket: [v4 single, v6 single, v4 multi, v6 multi].
    errors: [Option<String>; 4],
    receivers: Vec<JoinHandle<()>>,
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Service {
    /// Binds UDP 3784 and 4784 for IPv4 and IPv6 and starts receiving. A socket that cannot
    /// be bound is reported when a session that needs it is started.
    pub fn start() -> Service {
        let demux: Demux = Arc::default();
        let mut receivers = Vec::new();
        let mut errors = [None, None, None, None];
        for (i, (multihop, v6)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let port = if multihop {
                MULTIHOP_PORT
            } else {
                CONTROL_PORT
            };
            match sock::bind_receive(v6, port) {
                Ok(s) => receivers.push(tokio::spawn(receive(s, demux.clone(), multihop))),
                Err(e) => {
                    let fam = if v6 { "IPv6" } else { "IPv4" };
                    warn!(error = %e, "cannot receive BFD over {fam} on UDP {port}");
                    errors[i] = Some(format!("cannot bind UDP {port} ({fam}): {e}"));
                }
            }
        }
        Service {
            demux,
            next_disc: AtomicU32::new((seed() as u32) | 1),
            errors,
            receivers,
        }
    }

    fn alloc_disc(&self) -> u32 {
        loop {
            let d = self.next_disc.fetch_add(1, Ordering::Relaxed);
            if d != 0 && !self.demux.read().unwrap().contains_key(&d) {
                return d;
            }
        }
    }

    /// Starts a session to `peer` (sending from `local` if given) that reports to `notify`.
    pub fn spawn<T: From<BfdEvent> + Send + 'static>(
        &self,
        name: &str,
        peer: IpAddr,
        local: Option<IpAddr>,
        cfg: BfdConfig,
        notify: mpsc::Sender<T>,
    ) -> Result<SessionHandle, String> {
        let peer = canonical(peer);
        let kind = usize::from(cfg.multihop.is_some()) * 2 + usize::from(peer.is_ipv6());
        if let Some(e) = &self.errors[kind] {
            return Err(e.clone());
        }
        // RFC 5883 §5: an optional minimum TTL for multihop.
        let (multihop, min_ttl, port) = match cfg.multihop {
            Some(min_ttl) => (true, min_ttl, MULTIHOP_PORT),
            None => (false, sock::TTL, CONTROL_PORT),
        };
        let disc = self.alloc_disc();
        let seed = seed() ^ u64::from(disc);
        let sock = sock::bind_send(peer, local, seed)
            .map_err(|e| format!("cannot bind a BFD source port: {e}"))?;
        let (tx, rx) = mpsc::channel(64);
        self.demux.write().unwrap().insert(
            disc,
            Entry {
                peer,
                multihop,
                min_ttl,
                tx,
            },
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let session = Session::new(cfg, disc, seed);
        let status = Arc::new(std::sync::Mutex::new(session.status()));
        let task = SessionTask {
            name: name.to_string(),
            status: status.clone(),
            session,
            sock,
            peer: SocketAddr::new(peer, port),
            rx,
            stop: stop_rx,
            demux: self.demux.clone(),
        };
        let src = task.sock.local_addr().ok();
        info!(peer = %name, remote = %peer, ?src, disc, tx_ms = cfg.desired_min_tx.as_millis(),
              rx_ms = cfg.required_min_rx.as_millis(), mult = cfg.detect_mult, multihop,
              "BFD session started");
        Ok(SessionHandle {
            local_disc: disc,
            status,
            stop: Some(stop_tx),
            task: tokio::spawn(task.run(notify)),
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for r in &self.receivers {
            r.abort();
        }
    }
}

/// A running session; dropping it stops the session (AdminDown is sent).
#[derive(Debug)]
pub struct SessionHandle {
    local_disc: u32,
    /// Refreshed by the session task after every packet and timer.
    status: Arc<std::sync::Mutex<BfdStatus>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Our discriminator for this session.
    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    /// The session now (state, discriminators, intervals).
    pub fn status(&self) -> BfdStatus {
        *self.status.lock().unwrap()
    }

    /// Sends AdminDown to the peer and waits for the task to end.
    pub async fn stop(self) {
        let SessionHandle { stop, task, .. } = self;
        if let Some(s) = stop {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
}

async fn receive(sock: UdpSocket, demux: Demux, multihop: bool) {
    let mut buf = [0u8; 512];
    loop {
        let d = match sock::recv(&sock, &mut buf).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // RFC 5881 §5: single hop needs 255; multihop is checked per session below.
        if !multihop && d.ttl != Some(sock::TTL) {
            debug!(from = %d.from, ttl = ?d.ttl, "BFD packet dropped: TTL is not 255 (RFC 5881 §5)");
            continue;
        }
        let pkt = match ControlPacket::decode(&buf[..d.len.min(buf.len())]) {
            Ok(p) => p,
            Err(e) => {
                debug!(from = %d.from, reason = %e, "BFD packet discarded");
                continue;
            }
        };
        let from = canonical(d.from.ip());
        let map = demux.read().unwrap();
        let ours = |e: &&Entry| e.peer == from && e.multihop == multihop;
        let entry = if pkt.your_disc != 0 {
            map.get(&pkt.your_disc).filter(ours)
        } else {
            map.values().find(ours)
        };
        match entry {
            Some(e) if d.ttl.unwrap_or(0) < e.min_ttl => {
                debug!(from = %d.from, ttl = ?d.ttl, min = e.min_ttl,
                       "BFD packet dropped: TTL below the configured minimum (RFC 5883 §5)");
            }
            Some(e) => {
                let _ = e.tx.try_send(pkt);
            }
            None => debug!(from = %d.from, your_disc = pkt.your_disc,
                           "BFD packet discarded: no session for it"),
        }
    }
}

struct SessionTask {
    name: String,
    status: Arc<std::sync::Mutex<BfdStatus>>,
    session: Session,
    sock: UdpSocket,
    peer: SocketAddr,
    rx: mpsc::Receiver<ControlPacket>,
    stop: oneshot::Receiver<()>,
    demux: Demux,
}

impl SessionTask {
    async fn run<T: From<BfdEvent> + Send + 'static>(mut self, notify: mpsc::Sender<T>) {
        let mut acts = self.session.start(Instant::now());
        loop {
            for a in acts.drain(..) {
                self.act(a, &notify).await;
            }
            *self.status.lock().unwrap() = self.session.status();
            let deadline = self
                .session
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                p = self.rx.recv() => match p {
                    Some(p) => acts = self.session.on_packet(&p, Instant::now()),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    acts = self.session.on_timer(Instant::now());
                }
                _ = &mut self.stop => {
                    for a in self.session.admin_down(Instant::now()) {
                        if let Action::Send(p) = a {
                            let _ = self.sock.send_to(&p.encode(), self.peer).await;
                        }
                    }
                    break;
                }
            }
        }
        self.demux
            .write()
            .unwrap()
            .remove(&self.session.local_disc());
        info!(peer = %self.name, "BFD session stopped");
    }

    async fn act<T: From<BfdEvent>>(&mut self, a: Action, notify: &mpsc::Sender<T>) {
        match a {
            Action::Send(p) => {
                if let Err(e) = self.sock.send_to(&p.encode(), self.peer).await {
                    debug!(peer = %self.name, error = %e, "BFD send failed");
                }
            }
            Action::StateChange { from, to, diag } => {
                let remote = self.session.remote_state();
                info!(peer = %self.name, %from, %to, %diag, remote_disc = self.session.remote_disc(),
                      "BFD session state changed");
                let ev = match (from, to) {
                    (_, BfdState::Up) => Some(BfdEvent::Up),
                    // RFC 5882 §3.2: the peer going AdminDown is not a path failure.
                    (BfdState::Up, BfdState::Down) if remote != BfdState::AdminDown => {
                        Some(BfdEvent::Down { diag })
                    }
                    _ => None,
                };
                if let Some(ev) = ev {
                    let _ = notify.send(T::from(ev)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both tests bind the BFD ports of this namespace: unicast datagrams reach only one of
    /// two services bound to the same port, so they must not overlap.
    static PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A looped-back session to 127.0.0.1 (it hears its own packets) that is Up, with the
    /// service it runs in and its events.
    async fn looped(
        kind: usize,
        multihop: Option<u8>,
    ) -> (Service, SessionHandle, mpsc::Receiver<BfdEvent>) {
        let svc = Service::start();
        if let Some(e) = &svc.errors[kind] {
            panic!("{e} (BFD needs root or CAP_NET_BIND_SERVICE for ports 3784/4784)");
        }
        let cfg = BfdConfig {
            desired_min_tx: Duration::from_millis(50),
            required_min_rx: Duration::from_millis(50),
            detect_mult: 3,
            multihop,
        };
        let (tx, mut rx) = mpsc::channel::<BfdEvent>(8);
        let h = svc.spawn("self", LO, None, cfg, tx).unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(ev.unwrap(), Some(BfdEvent::Up));
        (svc, h, rx)
    }

    #[tokio::test]
    async fn status_shows_state_discriminators_and_intervals() {
        let _one_at_a_time = PORTS.lock().await;
        let (_svc, h, _rx) = looped(0, None).await;
        // The task refreshes the status after each packet: wait for one sent while Up.
        let mut s = h.status();
        for _ in 0..200 {
            if s.state == BfdState::Up && s.remote_state == BfdState::Up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            s = h.status();
        }
        assert_eq!(s.state, BfdState::Up);
        // Looped back: the "peer" is this session, with our discriminator and timers.
        assert_eq!(s.remote_state, BfdState::Up);
        assert_eq!(s.remote_disc, h.local_disc());
        assert_eq!(s.local_disc, h.local_disc());
        assert_eq!(s.tx_interval, Duration::from_millis(50));
        assert_eq!(s.remote_min_rx, Duration::from_millis(50));
        assert_eq!((s.detect_mult, s.remote_detect_mult), (3, 3));
        assert_eq!(s.detection_time, Some(Duration::from_millis(150)));
        h.stop().await;
    }

    const LO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A Down for session `your_disc`, sent from 127.0.0.1 with `ttl` to `port`.
    fn send_down(your_disc: u32, ttl: u32, port: u16) {
        let down = ControlPacket {
            diag: Diag::CONTROL_DETECTION_TIME_EXPIRED,
            state: BfdState::Down,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 0x5eed,
            your_disc,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 1_000_000,
            required_min_echo_rx_us: 0,
        };
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_ttl(ttl).unwrap();
        s.send_to(&down.encode(), (LO, port)).unwrap();
    }

    /// Nothing for a while, then the session goes down because the peer said so; then stop.
    async fn dropped_then_down(
        svc: Service,
        h: SessionHandle,
        rx: &mut mpsc::Receiver<BfdEvent>,
        go: impl FnOnce(),
    ) {
        let ev = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(
            ev.is_err(),
            "a packet that should be dropped was accepted: {ev:?}"
        );
        go();
        let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert_eq!(
            ev.unwrap(),
            Some(BfdEvent::Down {
                diag: Diag::NEIGHBOR_SIGNALED_SESSION_DOWN
            })
        );
        h.stop().await;
        assert!(svc.demux.read().unwrap().is_empty());
        // Let the aborted receivers close their sockets before the next test binds.
        drop(svc);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// A session to 127.0.0.1 hears itself (its packets come back to port 3784 from the same
    /// address) and comes up; then a Down packet for it with TTL 64 is dropped (RFC 5881 §5)
    /// while the same packet with TTL 255 takes it down.
    #[tokio::test]
    async fn looped_session_comes_up_and_only_ttl_255_counts() {
        let _one_at_a_time = PORTS.lock().await;
        let (svc, h, mut rx) = looped(0, None).await;
        let disc = h.local_disc();
        send_down(disc, 64, CONTROL_PORT);
        dropped_then_down(svc, h, &mut rx, || send_down(disc, 255, CONTROL_PORT)).await;
    }

    /// RFC 5883: a multihop session to 127.0.0.1 (minimum TTL 253) hears itself on port 4784
    /// and comes up; a Down packet with TTL 250 is dropped, one sent to the single-hop port is
    /// not its business, and TTL 253 takes it down.
    #[tokio::test]
    async fn multihop_session_checks_hops_and_port() {
        let _one_at_a_time = PORTS.lock().await;
        let (svc, h, mut rx) = looped(2, Some(253)).await;
        let disc = h.local_disc();
        send_down(disc, 250, MULTIHOP_PORT);
        send_down(disc, 255, CONTROL_PORT);
        dropped_then_down(svc, h, &mut rx, || send_down(disc, 253, MULTIHOP_PORT)).await;
    }
}
