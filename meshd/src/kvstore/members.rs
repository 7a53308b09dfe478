//! Health of each etcd member, as a pure state machine (no I/O, time passed in).
//!
//! meshd keeps one connection per member instead of one channel balanced over all of them, so
//! a member that lost quorum (cut off from the others but still answering TCP: a minority
//! partition) can be left behind at once. Every request carries etcd's `hasleader` metadata
//! (clientv3's `WithRequireLeader`), so such a member answers "no leader" instead of waiting out
//! a timeout; that answer, a refused connection, a timeout or a failed probe marks the member
//! unhealthy and [`MemberSet::pick`] stops choosing it until a probe (status plus a
//! linearizable read with a short deadline) succeeds again.
//!
//! Selection is sticky: requests go to one member (the preferred one) while it is healthy, as
//! clientv3 pins an endpoint; different meshds start at different members so the load spreads.
//!
//! A *slow* member is told apart from a *failed* one: it answers, but its smoothed round trip
//! (of probes and requests) is above [`HealthConfig::slow_rtt`], or a request sent to it was
//! overtaken by a copy sent to another member ([`Event::Late`]), or its probe read timed out
//! while it still reported a leader. A slow member stays in rotation but a healthy one is
//! preferred; a failed one (no leader, unreachable, a request timed out) leaves the rotation.
//! The smoothed round trip also sets how long a request waits before a copy of it goes to
//! another member ([`MemberSet::hedge_after`]: a few smoothed round trips).

use std::time::{Duration, Instant};

/// How a member is doing, as far as this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed or used yet.
    Unknown,
    Healthy,
    /// Answers (and has a leader), but slowly: used only when no healthy member is left.
    Slow,
    /// Failed: out of rotation until a probe succeeds.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Slow => "slow",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Why a request to a member or a probe failed, as far as health is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The member answered but has no leader (it is in a minority, or an election runs).
    NoLeader(String),
    /// The connection failed (refused, reset, unreachable).
    Unreachable(String),
    /// No answer within the deadline.
    Timeout(String),
}

impl Failure {
    fn detail(&self) -> &str {
        match self {
            Failure::NoLeader(d) | Failure::Unreachable(d) | Failure::Timeout(d) => d,
        }
    }
}

/// What happened to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A probe: `reachable` when the member answered a status request (with the leader it
    /// knows, 0 = none), `read` the outcome of a linearizable read with a short deadline.
    Probe {
        reachable: bool,
        leader: u64,
        read: Result<Duration, Failure>,
    },
    /// A request (a stream) succeeded on this member.
    RequestOk,
    /// A unary request succeeded on this member, with its round trip.
    Answered(Duration),
    /// A request sent to this member had no answer after its hedge delay while a copy sent
    /// to another member answered: the member is at least slow (probe it now).
    Late,
    /// A request failed on this member for a reason that says the member is not usable.
    RequestFailed(Failure),
    /// A request has waited longer than the probe deadline: probe the member now.
    Suspect,
}

/// The state change an event caused (for logs and for moving watches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub member: usize,
    pub from: Health,
    pub to: Health,
}

/// Healthy members that requests do not use are probed every this many intervals.
pub const IDLE_PROBE_FACTOR: u32 = 3;

/// The shortest wait before a request is copied to another member (a burst of slow fsyncs
/// on a healthy cluster should not double every request).
pub const HEDGE_MIN: Duration = Duration::from_millis(50);

/// A request waits this many smoothed round trips of its member before it is copied.
pub const HEDGE_FACTOR: u32 = 4;

impl MemberView {
    /// Takes a round-trip sample (a moving average with gain 1/2, so two samples of a new
    /// latency decide, and one slow answer, e.g. during an election, is forgotten as fast)
    /// and says whether the member is healthy or slow now.
    fn sample(&mut self, rtt: Duration, cfg: &HealthConfig) -> Health {
        self.rtt = Some(match self.rtt {
            None => rtt,
            Some(srtt) => (srtt + rtt) / 2,
        });
        let srtt = self.rtt.unwrap_or(rtt);
        let slow = match self.health {
            // Hysteresis: back to healthy only well below the threshold.
            Health::Slow => srtt > cfg.slow_rtt * 3 / 4,
            _ => srtt > cfg.slow_rtt,
        };
        if slow { Health::Slow } else { Health::Healthy }
    }
}

/// Timing of the health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Every member is probed this often (an unhealthy one too, to bring it back).
    pub probe_interval: Duration,
    /// Deadline of each probe (status and the linearizable read each).
    pub probe_timeout: Duration,
    /// A member whose smoothed round trip is above this is slow (healthy again at 3/4 of it).
    pub slow_rtt: Duration,
}

impl HealthConfig {
    /// Derived from the op timeout: probes answer within half of it (at most 1 s), and run
    /// every second (or every op timeout, when that is shorter); a member is slow above a
    /// quarter of the probe deadline (250 ms with the default 3 s op timeout).
    pub fn from_op_timeout(op_timeout: Duration) -> Self {
        let probe_timeout = (op_timeout / 2).min(Duration::from_secs(1));
        HealthConfig {
            probe_interval: op_timeout.min(Duration::from_secs(1)),
            probe_timeout,
            slow_rtt: probe_timeout / 4,
        }
    }
}

/// What is known about one member (what `ironctl mesh status` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub endpoint: String,
    pub health: Health,
    /// The member answered its last status request.
    pub reachable: bool,
    /// The member had a leader at its last probe or request.
    pub has_leader: bool,
    pub last_error: Option<String>,
    /// Smoothed round trip of probe reads and requests (moving average, gain 1/2).
    pub rtt: Option<Duration>,
    /// Since when the member has been in its current health.
    pub since: Instant,
    /// Times it went unhealthy.
    pub failures: u64,
}

/// The members of one etcd cluster and their health.
#[derive(Debug, Clone)]
pub struct MemberSet {
    members: Vec<MemberView>,
    next_probe: Vec<Instant>,
    preferred: usize,
    cfg: HealthConfig,
}

impl MemberSet {
    /// `start` picks the first preferred member (spreads load over meshds).
    pub fn new(endpoints: &[String], start: usize, cfg: HealthConfig, now: Instant) -> Self {
        let members = endpoints
            .iter()
            .map(|e| MemberView {
                endpoint: e.clone(),
                health: Health::Unknown,
                reachable: false,
                has_leader: false,
                last_error: None,
                rtt: None,
                since: now,
                failures: 0,
            })
            .collect();
        MemberSet {
            members,
            next_probe: vec![now; endpoints.len()],
            preferred: if endpoints.is_empty() {
                0
            } else {
                start % endpoints.len()
            },
            cfg,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn view(&self) -> &[MemberView] {
        &self.members
    }

    pub fn health(&self, member: usize) -> Health {
        self.members[member].health
    }

    pub fn config(&self) -> HealthConfig {
        self.cfg
    }

    /// Applies an event; returns the health change it caused, if any.
    pub fn on(&mut self, member: usize, event: Event, now: Instant) -> Option<Transition> {
        let cfg = self.cfg;
        let preferred = self.preferred;
        let m = self.members.get_mut(member)?;
        let from = m.health;
        let to = match event {
            Event::Probe {
                reachable,
                leader,
                read,
            } => {
                self.next_probe[member] = now + cfg.probe_interval;
                m.reachable = reachable;
                match read {
                    Ok(rtt) => {
                        m.has_leader = true;
                        // Healthy members not in use are probed less often (the load of
                        // probes grows with the number of meshds); the one in use and the
                        // unhealthy or slow ones every interval.
                        let to = m.sample(rtt, &cfg);
                        if member != preferred && to == Health::Healthy {
                            self.next_probe[member] = now + cfg.probe_interval * IDLE_PROBE_FACTOR;
                        }
                        to
                    }
                    Err(f) => {
                        m.has_leader =
                            reachable && leader != 0 && !matches!(f, Failure::NoLeader(_));
                        m.last_error = Some(f.detail().to_owned());
                        // It answers and knows a leader, but the read did not come back in
                        // time: slow (or not yet aware that it lost its peers), not failed.
                        if matches!(f, Failure::Timeout(_)) && m.has_leader {
                            Health::Slow
                        } else {
                            Health::Unhealthy
                        }
                    }
                }
            }
            Event::RequestOk => {
                m.reachable = true;
                m.has_leader = true;
                match from {
                    Health::Slow => Health::Slow,
                    _ => Health::Healthy,
                }
            }
            Event::Answered(rtt) => {
                m.reachable = true;
                m.has_leader = true;
                m.sample(rtt, &cfg)
            }
            Event::Late => {
                self.next_probe[member] = now;
                match from {
                    Health::Unhealthy => Health::Unhealthy,
                    _ => Health::Slow,
                }
            }
            Event::RequestFailed(f) => {
                match &f {
                    Failure::NoLeader(_) => {
                        m.reachable = true;
                        m.has_leader = false;
                    }
                    Failure::Unreachable(_) => m.reachable = false,
                    Failure::Timeout(_) => {}
                }
                m.last_error = Some(f.detail().to_owned());
                // Confirm (or clear) soon rather than after a whole interval.
                self.next_probe[member] = self.next_probe[member].min(now + cfg.probe_interval / 2);
                Health::Unhealthy
            }
            Event::Suspect => {
                self.next_probe[member] = now;
                return None;
            }
        };
        if to == from {
            return None;
        }
        m.health = to;
        m.since = now;
        if to == Health::Unhealthy {
            m.failures += 1;
        }
        Some(Transition { member, from, to })
    }

    /// How long a request sent to `member` waits for an answer before a copy of it goes to
    /// another member: [`HEDGE_FACTOR`] times the member's smoothed round trip, but at least
    /// [`HEDGE_MIN`], and at most `max` (also when nothing was measured yet).
    pub fn hedge_after(&self, member: usize, max: Duration) -> Duration {
        let Some(m) = self.members.get(member) else {
            return max;
        };
        match m.rtt {
            Some(srtt) => (srtt * HEDGE_FACTOR).max(HEDGE_MIN).min(max),
            None => max,
        }
    }

    /// The member for one more copy of a request that has copies in flight on `in_flight`
    /// (a member once per copy), the last one sent to `last`: a member without a copy, as
    /// [`pick`](Self::pick) orders them, if it is usable; else the usable member (not
    /// unhealthy, unless all are) with the fewest copies, the next after `last` first, so
    /// copies rotate over the members until one of them answers.
    pub fn pick_copy(&mut self, in_flight: &[usize], last: usize) -> Option<usize> {
        let n = self.members.len();
        let all_down = self.members.iter().all(|m| m.health == Health::Unhealthy);
        let usable = |h: Health| all_down || h != Health::Unhealthy;
        let mut distinct = in_flight.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < n
            && let Some(i) = self.pick(&distinct)
            && usable(self.members[i].health)
        {
            return Some(i);
        }
        (1..=n)
            .map(|k| (last + k) % n)
            .filter(|&i| usable(self.members[i].health))
            .min_by_key(|&i| in_flight.iter().filter(|&&j| j == i).count())
    }

    /// The member for the next request, skipping those in `tried`: the preferred one while it
    /// is healthy, else the first healthy one, else the first slow one, else the first unknown
    /// one (the first at or after the preferred one each time; it becomes preferred when
    /// better than the preferred one), else (every member unhealthy) the next untried one, so
    /// requests still go somewhere and a recovered cluster is found. `None` when every member
    /// was tried.
    pub fn pick(&mut self, tried: &[usize]) -> Option<usize> {
        let n = self.members.len();
        let order: Vec<usize> = (0..n)
            .map(|i| (self.preferred + i) % n)
            .filter(|i| !tried.contains(i))
            .collect();
        let first_with = |h: Health| order.iter().copied().find(|&i| self.members[i].health == h);
        let chosen = first_with(Health::Healthy)
            .or_else(|| first_with(Health::Slow))
            .or_else(|| first_with(Health::Unknown))
            .or_else(|| {
                // Every member unhealthy: the next call (a stream reopened, a request
                // sent again) goes to the next member, so a recovered one is found.
                let first = order.first().copied();
                if tried.is_empty() && n > 0 {
                    self.preferred = (self.preferred + 1) % n;
                }
                first
            })?;
        // The preference moves only to a better member (a retry elsewhere while the
        // preferred one is fine does not move it): away from an unhealthy one, and from a
        // slow or unknown one to a healthy one.
        let rank = |h: Health| match h {
            Health::Healthy => 3,
            Health::Slow => 2,
            Health::Unknown => 1,
            Health::Unhealthy => 0,
        };
        let preferred_rank = self
            .members
            .get(self.preferred)
            .map_or(0, |m| rank(m.health));
        let chosen_rank = rank(self.members[chosen].health);
        if chosen_rank > preferred_rank
            && (preferred_rank == 0 || self.members[chosen].health == Health::Healthy)
        {
            self.preferred = chosen;
        }
        Some(chosen)
    }

    /// Members whose probe is due at `now`.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.next_probe[i] <= now)
            .collect()
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_probe.iter().min().copied()
    }

    /// Marks the probes of `members` as started (not due again until the interval passed).
    pub fn probing(&mut self, members: &[usize], now: Instant) {
        for &i in members {
            if let Some(t) = self.next_probe.get_mut(i) {
                *t = now + self.cfg.probe_interval;
            }
        }
    }

    /// Whether some member other than `member` is healthy (a failover target exists).
    pub fn other_healthy(&self, member: usize) -> bool {
        self.members
            .iter()
            .enumerate()
            .any(|(i, m)| i != member && m.health == Health::Healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(now: Instant) -> MemberSet {
        let eps: Vec<String> = (1..=3)
            .map(|i| format!("http://192.0.2.{i}:2379"))
            .collect();
        MemberSet::new(
            &eps,
            0,
            HealthConfig {
                probe_interval: Duration::from_secs(1),
                probe_timeout: Duration::from_millis(500),
                slow_rtt: Duration::from_millis(100),
            },
            now,
        )
    }

    fn ok(rtt_ms: u64) -> Event {
        Event::Probe {
            reachable: true,
            leader: 7,
            read: Ok(Duration::from_millis(rtt_ms)),
        }
    }

    #[test]
    fn a_member_without_leader_leaves_rotation_and_the_others_carry_the_load() {
        let t0 = Instant::now();
        let mut s = set(t0);
        for i in 0..3 {
            s.on(i, ok(2), t0);
        }
        assert_eq!(s.pick(&[]), Some(0));
        let tr = s.on(
            0,
            Event::RequestFailed(Failure::NoLeader("etcdserver: no leader".into())),
            t0,
        );
        assert_eq!(
            tr,
            Some(Transition {
                member: 0,
                from: Health::Healthy,
                to: Health::Unhealthy
            })
        );
        let v = &s.view()[0];
        assert!(v.reachable && !v.has_leader);
        assert_eq!(v.last_error.as_deref(), Some("etcdserver: no leader"));
        // Failover to the next healthy member, which stays preferred.
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(s.pick(&[1]), Some(2));
        // A probe that fails keeps it out; one that succeeds brings it back (but the
        // preference stays where it is: no flapping back).
        let t1 = t0 + Duration::from_secs(1);
        let bad = Event::Probe {
            reachable: true,
            leader: 0,
            read: Err(Failure::Timeout("probe timed out".into())),
        };
        assert_eq!(s.on(0, bad, t1), None);
        assert_eq!(s.pick(&[]), Some(1));
        let t2 = t1 + Duration::from_secs(1);
        assert!(s.on(0, ok(3), t2).is_some());
        assert_eq!(s.health(0), Health::Healthy);
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(s.view()[0].failures, 1);
        // Smoothed: the 2 ms and 3 ms probes.
        assert_eq!(s.view()[0].rtt, Some(Duration::from_micros(2500)));
    }

    #[test]
    fn with_every_member_down_requests_still_rotate() {
        let t0 = Instant::now();
        let mut s = set(t0);
        for i in 0..3 {
            s.on(
                i,
                Event::RequestFailed(Failure::Unreachable("refused".into())),
                t0,
            );
        }
        assert_eq!(s.pick(&[]), Some(0));
        assert_eq!(s.pick(&[0]), Some(1));
        assert_eq!(s.pick(&[0, 1]), Some(2));
        assert_eq!(s.pick(&[0, 1, 2]), None);
        assert!(!s.view()[0].reachable);
        // Streams (no tried list) rotate too.
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(s.pick(&[]), Some(2));
        // A request that works makes the member healthy and preferred.
        s.on(2, Event::RequestOk, t0);
        assert_eq!(s.pick(&[]), Some(2));
    }

    #[test]
    fn unknown_members_are_tried_before_unhealthy_ones() {
        let t0 = Instant::now();
        let mut s = set(t0);
        s.on(0, Event::RequestFailed(Failure::Timeout("t".into())), t0);
        assert_eq!(s.pick(&[]), Some(1));
        assert!(!s.other_healthy(0));
        s.on(2, ok(1), t0);
        assert!(s.other_healthy(0));
        // 1 is preferred but unknown: a member known to be healthy is better.
        assert_eq!(s.pick(&[]), Some(2));
        assert_eq!(s.pick(&[2]), Some(1));
    }

    #[test]
    fn probes_are_scheduled_per_member_and_a_suspect_is_probed_at_once() {
        let t0 = Instant::now();
        let mut s = set(t0);
        assert_eq!(s.due(t0), vec![0, 1, 2]);
        s.probing(&[0, 1, 2], t0);
        assert!(s.due(t0).is_empty());
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_millis(100);
        s.on(1, Event::Suspect, t1);
        assert_eq!(s.due(t1), vec![1]);
        // Member 1 is healthy and not in use (0 is preferred): probed every 3 intervals.
        s.on(1, ok(1), t1);
        assert_eq!(s.due(t1 + Duration::from_secs(2)), vec![0, 2]);
        assert_eq!(s.due(t1 + Duration::from_secs(3)), vec![0, 1, 2]);
        // A failed request asks for a probe within half an interval.
        s.on(2, Event::RequestFailed(Failure::Timeout("t".into())), t1);
        assert_eq!(s.due(t1 + Duration::from_millis(500)), vec![2]);
        assert_eq!(s.due(t1 + Duration::from_millis(950)), vec![0, 2]);
        // The member in use is probed every interval.
        s.on(0, ok(1), t1);
        assert_eq!(s.due(t1 + Duration::from_secs(1)), vec![0, 2]);
    }

    #[test]
    fn start_spreads_the_preference() {
        let t0 = Instant::now();
        let eps: Vec<String> = (1..=3).map(|i| format!("e{i}")).collect();
        let mut s = MemberSet::new(
            &eps,
            4,
            HealthConfig::from_op_timeout(Duration::from_secs(3)),
            t0,
        );
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(
            HealthConfig::from_op_timeout(Duration::from_millis(800)),
            HealthConfig {
                probe_interval: Duration::from_millis(800),
                probe_timeout: Duration::from_millis(400),
                slow_rtt: Duration::from_millis(100),
            }
        );
    }

    #[test]
    fn a_slow_member_is_told_apart_from_a_failed_one_and_fast_members_are_preferred() {
        let t0 = Instant::now();
        let mut s = set(t0);
        for i in 0..3 {
            s.on(i, ok(2), t0);
        }
        assert_eq!(s.pick(&[]), Some(0));
        // Member 0's round trips grow past the 100 ms threshold: two samples decide (gain
        // 1/2), and it is slow, not failed: reachable, with a leader, still usable.
        assert_eq!(
            s.on(0, Event::Answered(Duration::from_millis(150)), t0),
            None
        );
        let tr = s.on(0, Event::Answered(Duration::from_millis(300)), t0);
        assert_eq!(tr.map(|t| t.to), Some(Health::Slow));
        let v = &s.view()[0];
        assert!(v.reachable && v.has_leader);
        assert_eq!(v.failures, 0, "slow is not a failure");
        // A healthy member is preferred from now on, and stays so.
        assert_eq!(s.pick(&[]), Some(1));
        assert_eq!(s.pick(&[]), Some(1));
        // With the healthy ones tried, the slow one comes before giving up.
        assert_eq!(s.pick(&[1, 2]), Some(0));
        // Fast again (below 3/4 of the threshold) after a few quick probes: healthy, but
        // the preference does not flap back.
        let mut tr = None;
        for _ in 0..4 {
            tr = tr.or(s.on(0, ok(2), t0));
        }
        assert_eq!(tr.map(|t| t.to), Some(Health::Healthy));
        assert_eq!(s.pick(&[]), Some(1));

        // A failed member: no leader. Unhealthy, out of rotation even behind slow ones.
        s.on(2, Event::Late, t0);
        assert_eq!(s.health(2), Health::Slow);
        assert_eq!(s.due(t0), vec![2], "a late member is probed at once");
        s.on(
            1,
            Event::RequestFailed(Failure::NoLeader("etcdserver: no leader".into())),
            t0,
        );
        assert_eq!(s.health(1), Health::Unhealthy);
        assert_eq!(s.pick(&[]), Some(0), "healthy 0 comes first");
        assert_eq!(s.pick(&[0]), Some(2), "then slow 2, not failed 1");
        assert_eq!(
            s.pick(&[0, 2]),
            Some(1),
            "the failed one only when nothing else is left"
        );

        // A probe read that times out on a member that still reports a leader: slow; the
        // same with no leader known: failed.
        let timed_out = |leader| Event::Probe {
            reachable: true,
            leader,
            read: Err(Failure::Timeout("read timed out".into())),
        };
        s.on(0, timed_out(7), t0);
        assert_eq!(s.health(0), Health::Slow);
        s.on(0, timed_out(0), t0);
        assert_eq!(s.health(0), Health::Unhealthy);
        assert!(!s.view()[0].has_leader);
        // A stream working on a slow member does not make it fast.
        s.on(2, Event::RequestOk, t0);
        assert_eq!(s.health(2), Health::Slow);
    }

    #[test]
    fn the_hedge_delay_follows_the_measured_round_trip_within_bounds() {
        let t0 = Instant::now();
        let mut s = set(t0);
        let max = Duration::from_millis(300);
        // Nothing measured: wait the maximum.
        assert_eq!(s.hedge_after(0, max), max);
        // 1 ms round trips: the floor.
        s.on(0, ok(1), t0);
        s.on(0, Event::Answered(Duration::from_millis(1)), t0);
        assert_eq!(s.hedge_after(0, max), HEDGE_MIN);
        // 40 ms then 20 ms: srtt 30 ms, 4 of them.
        let mut s = set(t0);
        s.on(1, ok(40), t0);
        s.on(1, Event::Answered(Duration::from_millis(20)), t0);
        assert_eq!(s.view()[1].rtt, Some(Duration::from_millis(30)));
        assert_eq!(s.hedge_after(1, max), Duration::from_millis(120));
        assert_eq!(
            s.hedge_after(1, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        // One slow answer (an election) is forgotten after two quick ones.
        s.on(1, Event::Answered(Duration::from_millis(580)), t0);
        assert_eq!(s.hedge_after(1, max), max);
        s.on(1, Event::Answered(Duration::from_millis(10)), t0);
        s.on(1, Event::Answered(Duration::from_millis(10)), t0);
        assert_eq!(s.view()[1].rtt, Some(Duration::from_micros(83_750)));
        for _ in 0..3 {
            s.on(1, Event::Answered(Duration::from_millis(10)), t0);
        }
        assert!(s.hedge_after(1, max) < Duration::from_millis(100));
    }

    #[test]
    fn copies_of_a_request_go_to_members_without_one_then_rotate_over_usable_ones() {
        let t0 = Instant::now();
        let mut s = set(t0);
        for i in 0..3 {
            s.on(i, ok(2), t0);
        }
        // First copy: the preferred member; then the others in order.
        assert_eq!(s.pick_copy(&[], 0), Some(0));
        assert_eq!(s.pick_copy(&[0], 0), Some(1));
        assert_eq!(s.pick_copy(&[0, 1], 1), Some(2));
        // Every member has one: the next after the last, fewest copies first.
        assert_eq!(s.pick_copy(&[0, 1, 2], 2), Some(0));
        assert_eq!(s.pick_copy(&[0, 1, 2, 0], 0), Some(1));
        // A failed member gets no more copies while others are usable...
        s.on(
            0,
            Event::RequestFailed(Failure::NoLeader("etcdserver: no leader".into())),
            t0,
        );
        assert_eq!(s.pick_copy(&[0, 1, 2], 2), Some(1));
        assert_eq!(s.pick_copy(&[0, 1, 2, 1], 1), Some(2));
        // ...and one without a copy is skipped when it failed.
        assert_eq!(s.pick_copy(&[1, 2], 2), Some(1));
        // Every member failed: copies rotate over all of them.
        for i in 1..3 {
            s.on(
                i,
                Event::RequestFailed(Failure::Unreachable("refused".into())),
                t0,
            );
        }
        assert_eq!(s.pick_copy(&[0, 1, 2], 0), Some(1));
        assert_eq!(s.pick_copy(&[0, 1, 2], 1), Some(2));
    }
}
