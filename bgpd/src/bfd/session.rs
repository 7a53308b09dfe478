//! One BFD session, sans-IO (RFC 5880 asynchronous mode): packets and time in, [`Action`]s out.
//!
//! The I/O layer calls [`Session::on_packet`] for each valid packet demultiplexed to this
//! session, [`Session::on_timer`] at [`Session::next_deadline`], and sends what it is told.

use std::time::{Duration, Instant};

use super::packet::{BfdState, ControlPacket, Diag};

/// The local parameters of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdConfig {
    /// bfd.DesiredMinTxInterval once the session is Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
    /// Multihop (RFC 5883) with the lowest TTL / hop limit accepted (1: any, as peers like
    /// BIRD send multihop BFD with TTL 64); `None`: single hop (TTL 255 only, RFC 5881 §5).
    pub multihop: Option<u8>,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            multihop: None,
        }
    }
}

/// §6.8.3: while not Up, transmit no faster than once a second.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// What the I/O layer must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(ControlPacket),
    StateChange {
        from: BfdState,
        to: BfdState,
        diag: Diag,
    },
}

/// What the operator sees of a session (API, `ironctl bgp peer`, metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdStatus {
    pub state: BfdState,
    /// The state the peer last reported.
    pub remote_state: BfdState,
    /// Our diagnostic (why the session last went down).
    pub diag: Diag,
    pub local_disc: u32,
    /// 0 until the peer was heard.
    pub remote_disc: u32,
    /// The interval between our packets now (§6.8.7, before jitter).
    pub tx_interval: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// The peer's Required Min RX and Desired Min TX intervals, as last received.
    pub remote_min_rx: Duration,
    pub remote_desired_min_tx: Duration,
    pub detect_mult: u8,
    pub remote_detect_mult: u8,
    /// §6.8.4; `None` until the peer was heard.
    pub detection_time: Option<Duration>,
}

/// RFC 5880 §6.8.1 state variables.
#[derive(Debug)]
pub struct Session {
    cfg: BfdConfig,
    state: BfdState,
    remote_state: BfdState,
    local_disc: u32,
    remote_disc: u32,
    local_diag: Diag,
    /// Microseconds, as received.
    remote_min_rx_us: u32,
    remote_desired_min_tx_us: u32,
    remote_detect_mult: u8,
    /// We are polling (P set) until a packet with F arrives.
    polling: bool,
    /// The interval the peer believes we transmit at (our Desired Min TX last acknowledged).
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    rng: u64,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in state Down. `local_disc` must be nonzero and unique on this system;
    /// `seed` drives the jitter.
    pub fn new(cfg: BfdConfig, local_disc: u32, seed: u64) -> Session {
        Session {
            cfg,
            state: BfdState::Down,
            remote_state: BfdState::Down,
            local_disc,
            remote_disc: 0,
            local_diag: Diag::NONE,
            // §6.8.1: initialised to 1 (µs).
            remote_min_rx_us: 1,
            remote_desired_min_tx_us: 0,
            remote_detect_mult: 0,
            polling: false,
            next_tx: None,
            detect_at: None,
            rng: seed | 1,
        }
    }

    pub fn state(&self) -> BfdState {
        self.state
    }

    pub fn local_disc(&self) -> u32 {
        self.local_disc
    }

    /// The state the peer last reported.
    pub fn remote_state(&self) -> BfdState {
        self.remote_state
    }

    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    pub fn diag(&self) -> Diag {
        self.local_diag
    }

    /// The session as the operator sees it.
    pub fn status(&self) -> BfdStatus {
        BfdStatus {
            state: self.state,
            remote_state: self.remote_state,
            diag: self.local_diag,
            local_disc: self.local_disc,
            remote_disc: self.remote_disc,
            tx_interval: self.tx_interval(),
            required_min_rx: self.cfg.required_min_rx,
            remote_min_rx: Duration::from_micros(self.remote_min_rx_us.into()),
            remote_desired_min_tx: Duration::from_micros(self.remote_desired_min_tx_us.into()),
            detect_mult: self.cfg.detect_mult,
            remote_detect_mult: self.remote_detect_mult,
            detection_time: self.detection_time(),
        }
    }

    /// bfd.DesiredMinTxInterval now: the configured value when Up, at least 1 s otherwise.
    fn desired_min_tx(&self) -> Duration {
        if self.state == BfdState::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        }
    }

    /// §6.8.7: the interval between our packets, before jitter.
    pub fn tx_interval(&self) -> Duration {
        self.desired_min_tx()
            .max(Duration::from_micros(self.remote_min_rx_us.into()))
    }

    /// §6.8.4: the Detection Time in asynchronous mode (None until the peer was heard).
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let remote_tx = Duration::from_micros(self.remote_desired_min_tx_us.into());
        Some(
            self.cfg
                .required_min_rx
                .max(remote_tx)
                .saturating_mul(self.remote_detect_mult.into()),
        )
    }

    /// When [`Session::on_timer`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts transmitting (the first packet goes out now).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.next_tx = Some(now);
        self.on_timer(now)
    }

    /// §6.8.16: administratively down. The returned packet tells the peer; the session keeps
    /// transmitting AdminDown at the slow rate until [`Session::admin_up`].
    pub fn admin_down(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.local_diag = Diag::ADMINISTRATIVELY_DOWN;
        self.set_state(BfdState::AdminDown, &mut out);
        self.detect_at = None;
        self.remote_disc = 0;
        out.push(Action::Send(self.packet(false)));
        self.schedule_tx(now);
        out
    }

    /// Leaves AdminDown for Down.
    pub fn admin_up(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == BfdState::AdminDown {
            self.set_state(BfdState::Down, &mut out);
            self.next_tx = Some(now);
            out.extend(self.on_timer(now));
        }
        out
    }

    /// A valid packet (see [`ControlPacket::decode`]) demultiplexed to this session (its Your
    /// Discriminator is ours, or zero and it came from our peer). §6.8.6 from "If the A bit".
    pub fn on_packet(&mut self, p: &ControlPacket, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return out; // not ours; the demultiplexer should not have sent it
        }
        let old_tx = self.tx_interval();
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_min_tx_us = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        if p.final_ {
            self.polling = false;
        }
        if self.state == BfdState::AdminDown {
            return out;
        }
        // The detection timer restarts on every packet (§6.8.4).
        self.detect_at = self.detection_time().map(|d| now + d);
        let before = self.state;
        if p.state == BfdState::AdminDown {
            if self.state != BfdState::Down {
                self.local_diag = Diag::NEIGHBOR_SIGNALED_SESSION_DOWN;
                self.set_state(BfdState::Down, &mut out);
            }
        } else {
            match (self.state, p.state) {
                (BfdState::Down, BfdState::Down) => self.set_state(BfdState::Init, &mut out),
                (BfdState::Down, BfdState::Init) => self.set_state(BfdState::Up, &mut out),
                (BfdState::Init, BfdState::Init | BfdState::Up) => {
                    self.set_state(BfdState::Up, &mut out)
                }
                (BfdState::Up, BfdState::Down) => {
                    self.local_diag = Diag::NEIGHBOR_SIGNALED_SESSION_DOWN;
                    self.set_state(BfdState::Down, &mut out);
                }
                _ => {}
            }
        }
        if before != BfdState::Up && self.state == BfdState::Up && self.cfg.desired_min_tx < SLOW_TX
        {
            // §6.8.3: Desired Min TX changes from the slow 1 s to the configured value.
            self.polling = true;
        }
        if p.poll {
            // §6.8.6: answer a Poll at once with Final (and without Poll).
            out.push(Action::Send(self.packet(true)));
        } else if self.state != before {
            // Tell the peer about our new state without waiting a whole (slow) interval.
            out.push(Action::Send(self.packet(false)));
        }
        if self.state != before || self.tx_interval() < old_tx {
            self.schedule_tx(now);
        }
        out
    }

    /// Runs what is due at `now`: the detection timeout, then a periodic transmission.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.detect_at.is_some_and(|d| d <= now) {
            self.detect_at = None;
            // §6.8.1: bfd.RemoteDiscr is reset when the Detection Time expires.
            self.remote_disc = 0;
            self.remote_state = BfdState::Down;
            self.remote_min_rx_us = 1;
            self.remote_detect_mult = 0;
            self.polling = false;
            if matches!(self.state, BfdState::Init | BfdState::Up) {
                self.local_diag = Diag::CONTROL_DETECTION_TIME_EXPIRED;
                self.set_state(BfdState::Down, &mut out);
            }
        }
        if self.next_tx.is_some_and(|t| t <= now) {
            // §6.8.7: nothing is sent while the peer asks for no packets (Required Min RX 0).
            if self.remote_min_rx_us != 0 {
                out.push(Action::Send(self.packet(false)));
            }
            self.schedule_tx(now);
        }
        out
    }

    fn set_state(&mut self, to: BfdState, out: &mut Vec<Action>) {
        if self.state != to {
            out.push(Action::StateChange {
                from: self.state,
                to,
                diag: self.local_diag,
            });
            self.state = to;
        }
    }

    /// §6.8.7: the next periodic packet, jittered to 75-100% of the interval (75-90% with
    /// Detect Mult 1).
    fn schedule_tx(&mut self, now: Instant) {
        let interval = self.tx_interval();
        let max_pct = if self.cfg.detect_mult == 1 { 90 } else { 100 };
        let pct = 75 + self.next_rand() % (max_pct - 75 + 1);
        let d = interval.mul_f64(pct as f64 / 100.0);
        self.next_tx = Some(now + d);
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: jitter needs no cryptographic quality.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32
    }

    /// §6.8.7: the packet we send now.
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx_us: us(self.desired_min_tx()),
            required_min_rx_us: us(self.cfg.required_min_rx),
            required_min_echo_rx_us: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> BfdConfig {
        BfdConfig {
            desired_min_tx: 100 * MS,
            required_min_rx: 100 * MS,
            detect_mult: 3,
            multihop: None,
        }
    }

    fn sent(a: &[Action]) -> Vec<ControlPacket> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn changes(a: &[Action]) -> Vec<(BfdState, BfdState)> {
        a.iter()
            .filter_map(|a| match a {
                Action::StateChange { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    /// Delivers every packet `from` sends to `to`, both ways, until nothing is sent.
    fn exchange(a: &mut Session, b: &mut Session, first: Vec<Action>, now: Instant) {
        let mut pending: Vec<(bool, ControlPacket)> =
            sent(&first).into_iter().map(|p| (true, p)).collect();
        let mut rounds = 0;
        while let Some((a_to_b, p)) = pending.pop() {
            rounds += 1;
            assert!(rounds < 50, "packet storm");
            let (rx, dir) = if a_to_b {
                (&mut *b, false)
            } else {
                (&mut *a, true)
            };
            for q in sent(&rx.on_packet(&p, now)) {
                pending.push((dir, q));
            }
        }
    }

    fn up_pair(now: Instant) -> (Session, Session) {
        let mut a = Session::new(cfg(), 11, 1);
        let mut b = Session::new(cfg(), 22, 2);
        let first = a.start(now);
        let _ = b.start(now);
        exchange(&mut a, &mut b, first, now);
        (a, b)
    }

    #[test]
    fn comes_up_with_a_peer_and_speeds_up_with_poll_final() {
        let now = Instant::now();
        let mut a = Session::new(cfg(), 11, 1);
        let mut b = Session::new(cfg(), 22, 2);
        let pa = sent(&a.start(now));
        assert_eq!(pa.len(), 1);
        assert_eq!((pa[0].state, pa[0].your_disc), (BfdState::Down, 0));
        // Slow while not Up (§6.8.3).
        assert_eq!(pa[0].desired_min_tx_us, 1_000_000);
        let rb = b.on_packet(&pa[0], now);
        assert_eq!(changes(&rb), vec![(BfdState::Down, BfdState::Init)]);
        let pb = sent(&rb);
        assert_eq!((pb[0].state, pb[0].your_disc), (BfdState::Init, 11));
        let ra = a.on_packet(&pb[0], now);
        assert_eq!(changes(&ra), vec![(BfdState::Down, BfdState::Up)]);
        let pa = sent(&ra);
        // Up: the faster Desired Min TX is announced with a Poll.
        assert!(pa[0].poll);
        assert_eq!(pa[0].desired_min_tx_us, 100_000);
        let rb = b.on_packet(&pa[0], now);
        assert_eq!(changes(&rb), vec![(BfdState::Init, BfdState::Up)]);
        let pb = sent(&rb);
        assert!(pb[0].final_ && !pb[0].poll);
        a.on_packet(&pb[0], now);
        assert_eq!((a.state(), b.state()), (BfdState::Up, BfdState::Up));
        assert_eq!(a.tx_interval(), 100 * MS);
        assert_eq!(a.detection_time(), Some(300 * MS));
        // Periodic transmission within 75-100% of the interval, Poll over after Final.
        let t = a.next_deadline().unwrap();
        assert!(t >= now + 75 * MS && t <= now + 100 * MS, "{:?}", t - now);
        let p = sent(&a.on_timer(t));
        assert_eq!(p.len(), 1);
        assert!(!p[0].poll);
    }

    #[test]
    fn negotiated_intervals_use_the_slower_side() {
        let now = Instant::now();
        let (mut a, _) = up_pair(now);
        let p = ControlPacket {
            diag: Diag::NONE,
            state: BfdState::Up,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 5,
            my_disc: 22,
            your_disc: 11,
            desired_min_tx_us: 250_000,
            required_min_rx_us: 400_000,
            required_min_echo_rx_us: 0,
        };
        a.on_packet(&p, now);
        // Transmit at max(our 100 ms, their required 400 ms); detect at 5 × max(100, 250).
        assert_eq!(a.tx_interval(), 400 * MS);
        assert_eq!(a.detection_time(), Some(1250 * MS));
    }

    #[test]
    fn goes_down_on_detection_timeout_and_comes_back() {
        let now = Instant::now();
        let (mut a, mut b) = up_pair(now);
        // a keeps sending, b hears nothing: down after 3 × 100 ms, not before.
        let mut t = now;
        let mut down_at = None;
        while t < now + Duration::from_secs(1) {
            t = b.next_deadline().unwrap();
            let acts = b.on_timer(t);
            if changes(&acts).contains(&(BfdState::Up, BfdState::Down)) {
                down_at = Some(t);
                break;
            }
        }
        let down_at = down_at.expect("b went down");
        assert_eq!(down_at - now, 300 * MS);
        assert_eq!(b.diag(), Diag::CONTROL_DETECTION_TIME_EXPIRED);
        assert_eq!(b.remote_disc(), 0);
        // b's next packet is Down with the diagnostic; a follows (Neighbor Signaled Down).
        let p = sent(&b.on_timer(b.next_deadline().unwrap()));
        assert_eq!((p[0].state, p[0].diag), (BfdState::Down, Diag(1)));
        let r = a.on_packet(&p[0], down_at);
        assert_eq!(changes(&r), vec![(BfdState::Up, BfdState::Down)]);
        assert_eq!(a.diag(), Diag::NEIGHBOR_SIGNALED_SESSION_DOWN);
        // And both come back up.
        let first = a.on_timer(a.next_deadline().unwrap());
        exchange(&mut a, &mut b, first, down_at);
        assert_eq!((a.state(), b.state()), (BfdState::Up, BfdState::Up));
    }

    #[test]
    fn admin_down_is_signalled_and_not_a_failure_of_the_peer() {
        let now = Instant::now();
        let (mut a, mut b) = up_pair(now);
        let r = a.admin_down(now);
        assert_eq!(changes(&r), vec![(BfdState::Up, BfdState::AdminDown)]);
        let p = sent(&r);
        assert_eq!((p[0].state, p[0].diag), (BfdState::AdminDown, Diag(7)));
        let r = b.on_packet(&p[0], now);
        assert_eq!(changes(&r), vec![(BfdState::Up, BfdState::Down)]);
        assert_eq!(b.diag(), Diag::NEIGHBOR_SIGNALED_SESSION_DOWN);
        // In AdminDown, received packets change nothing and a is slow.
        let pb = sent(&b.on_timer(b.next_deadline().unwrap()));
        assert!(changes(&a.on_packet(&pb[0], now)).is_empty());
        assert_eq!(a.state(), BfdState::AdminDown);
        assert!(a.tx_interval() >= SLOW_TX);
        // Admin up: Down, then Up again with b.
        let first = a.admin_up(now);
        assert_eq!(a.state(), BfdState::Down);
        exchange(&mut a, &mut b, first, now);
        assert_eq!((a.state(), b.state()), (BfdState::Up, BfdState::Up));
    }

    #[test]
    fn answers_a_poll_with_final_and_ignores_packets_for_others() {
        let now = Instant::now();
        let (mut a, _) = up_pair(now);
        let mut p = ControlPacket {
            diag: Diag::NONE,
            state: BfdState::Up,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 22,
            your_disc: 11,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
            required_min_echo_rx_us: 0,
        };
        let r = sent(&a.on_packet(&p, now));
        assert_eq!(r.len(), 1);
        assert!(r[0].final_ && !r[0].poll);
        p.your_disc = 99;
        assert!(a.on_packet(&p, now).is_empty());
    }

    #[test]
    fn required_min_rx_zero_stops_transmission() {
        let now = Instant::now();
        let mut a = Session::new(cfg(), 11, 1);
        let _ = a.start(now);
        let p = ControlPacket {
            diag: Diag::NONE,
            state: BfdState::AdminDown,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 22,
            your_disc: 0,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 0,
            required_min_echo_rx_us: 0,
        };
        a.on_packet(&p, now);
        let t = now + Duration::from_secs(2);
        assert!(sent(&a.on_timer(t)).is_empty());
    }

    #[test]
    fn jitter_stays_in_range_with_detect_mult_one() {
        let now = Instant::now();
        let mut a = Session::new(
            BfdConfig {
                detect_mult: 1,
                ..cfg()
            },
            11,
            7,
        );
        let _ = a.start(now);
        let mut t = now;
        for _ in 0..200 {
            let next = a.next_deadline().unwrap();
            let d = next - t;
            assert!(d >= 750 * MS && d <= 900 * MS, "{d:?}");
            t = next;
            a.on_timer(t);
        }
    }
}
