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

use std::time::{Duration, Instant};

/// How a member is doing, as far as this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed or used yet.
    Unknown,
    Healthy,
    /// Out of rotation until a probe succeeds.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
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
    /// A request succeeded on this member.
    RequestOk,
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

/// Timing of the health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Every member is probed this often (an unhealthy one too, to bring it back).
    pub probe_interval: Duration,
    /// Deadline of each probe (status and the linearizable read each).
    pub probe_timeout: Duration,
}

impl HealthConfig {
    /// Derived from the op timeout: probes answer within half of it (at most 1 s), and run
    /// every second (or every op timeout, when that is shorter).
    pub fn from_op_timeout(op_timeout: Duration) -> Self {
        HealthConfig {
            probe_interval: op_timeout.min(Duration::from_secs(1)),
            probe_timeout: (op_timeout / 2).min(Duration::from_secs(1)),
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
    /// Round trip of the last successful probe read.
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
                        m.rtt = Some(rtt);
                        m.has_leader = true;
                        // Healthy members not in use are probed less often (the load of
                        // probes grows with the number of meshds); the one in use and the
                        // unhealthy ones every interval.
                        if member != self.preferred {
                            self.next_probe[member] = now + cfg.probe_interval * IDLE_PROBE_FACTOR;
                        }
                        Health::Healthy
                    }
                    Err(f) => {
                        m.has_leader =
                            reachable && leader != 0 && !matches!(f, Failure::NoLeader(_));
                        m.last_error = Some(f.detail().to_owned());
                        Health::Unhealthy
                    }
                }
            }
            Event::RequestOk => {
                m.reachable = true;
                m.has_leader = true;
                Health::Healthy
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

    /// The member for the next request, skipping those in `tried`: the preferred one while it
    /// is not unhealthy, else the next healthy one (which becomes preferred), else the next
    /// unknown one, else (every member unhealthy) the next untried one, so requests still
    /// go somewhere and a recovered cluster is found. `None` when every member was tried.
    pub fn pick(&mut self, tried: &[usize]) -> Option<usize> {
        let n = self.members.len();
        let order: Vec<usize> = (0..n)
            .map(|i| (self.preferred + i) % n)
            .filter(|i| !tried.contains(i))
            .collect();
        let first_with = |h: Health| order.iter().copied().find(|&i| self.members[i].health == h);
        let chosen = match self.members.get(self.preferred).map(|m| m.health) {
            Some(Health::Healthy | Health::Unknown) if !tried.contains(&self.preferred) => {
                Some(self.preferred)
            }
            _ => first_with(Health::Healthy)
                .or_else(|| first_with(Health::Unknown))
                .or_else(|| {
                    // Every member unhealthy: the next call (a stream reopened, a request
                    // sent again) goes to the next member, so a recovered one is found.
                    let first = order.first().copied();
                    if tried.is_empty() && n > 0 {
                        self.preferred = (self.preferred + 1) % n;
                    }
                    first
                }),
        }?;
        // The preference moves only away from an unhealthy member (a retry elsewhere while
        // the preferred one is fine does not move it).
        let preferred_bad = self
            .members
            .get(self.preferred)
            .is_none_or(|m| m.health == Health::Unhealthy);
        if preferred_bad && self.members[chosen].health != Health::Unhealthy {
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
        assert_eq!(s.view()[0].rtt, Some(Duration::from_millis(3)));
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
        // 1 is preferred and unknown (not failed): it stays.
        assert_eq!(s.pick(&[]), Some(1));
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
                probe_timeout: Duration::from_millis(400)
            }
        );
    }
}
