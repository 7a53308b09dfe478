//! Active health checks of a node's own backends (`ironmesh.io/health-check`), the pure part:
//! each (backend address, port) turns failing after [`FALL`] failed checks in a row and
//! healthy again after [`RISE`] passed ones (as HAProxy's and Kubernetes' probes count); the
//! failing ports of an address are what the node publishes at `health/<ip>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Failed checks in a row that quarantine a backend.
pub const FALL: u32 = 3;
/// Passed checks in a row that bring it back.
pub const RISE: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    failing: bool,
    fails: u32,
    passes: u32,
    reason: String,
}

/// The checks' results per target, and what changed.
#[derive(Debug, Default)]
pub struct HealthTracker {
    targets: BTreeMap<(IpAddr, u16), State>,
}

impl HealthTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one check of `ip:port`; returns whether its failing state flipped.
    pub fn observe(&mut self, ip: IpAddr, port: u16, result: Result<(), String>) -> bool {
        let s = self.targets.entry((ip, port)).or_default();
        match result {
            Ok(()) => {
                s.fails = 0;
                s.passes = s.passes.saturating_add(1);
                if s.failing && s.passes >= RISE {
                    s.failing = false;
                    s.reason.clear();
                    return true;
                }
            }
            Err(why) => {
                s.passes = 0;
                s.fails = s.fails.saturating_add(1);
                s.reason = why;
                if !s.failing && s.fails >= FALL {
                    s.failing = true;
                    return true;
                }
            }
        }
        false
    }

    /// Forgets targets no longer checked (a backend gone); returns the addresses whose
    /// failing set changed by it.
    pub fn retain(&mut self, keep: &BTreeSet<(IpAddr, u16)>) -> BTreeSet<IpAddr> {
        let mut changed = BTreeSet::new();
        self.targets.retain(|k, s| {
            let kept = keep.contains(k);
            if !kept && s.failing {
                changed.insert(k.0);
            }
            kept
        });
        changed
    }

    /// The failing ports of `ip` and the last reason.
    pub fn failing(&self, ip: IpAddr) -> (Vec<u16>, String) {
        let mut reason = String::new();
        let ports = self
            .targets
            .range((ip, 0)..=(ip, u16::MAX))
            .filter(|(_, s)| s.failing)
            .map(|((_, p), s)| {
                reason.clone_from(&s.reason);
                *p
            })
            .collect();
        (ports, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_falls_after_three_failures_and_rises_after_two_passes() {
        let ip: IpAddr = "10.1.0.5".parse().unwrap();
        let mut t = HealthTracker::new();
        let fail = || Err("connect: refused".to_string());
        assert!(!t.observe(ip, 80, Ok(())));
        assert!(!t.observe(ip, 80, fail()));
        assert!(!t.observe(ip, 80, fail()));
        // A pass in between starts the count again.
        assert!(!t.observe(ip, 80, Ok(())));
        assert!(!t.observe(ip, 80, fail()));
        assert!(!t.observe(ip, 80, fail()));
        assert!(t.observe(ip, 80, fail()), "the third failure in a row");
        assert_eq!(t.failing(ip), (vec![80], "connect: refused".to_string()));
        assert!(!t.observe(ip, 80, fail()), "already failing");
        assert!(!t.observe(ip, 80, Ok(())));
        assert!(t.observe(ip, 80, Ok(())), "the second pass in a row");
        assert_eq!(t.failing(ip).0, Vec::<u16>::new());
        // Another port of the same address is its own target.
        for _ in 0..3 {
            t.observe(ip, 9090, fail());
        }
        assert_eq!(t.failing(ip).0, vec![9090]);
        // A backend that goes away while failing is reported as changed.
        let changed = t.retain(&BTreeSet::from([(ip, 80)]));
        assert_eq!(changed, BTreeSet::from([ip]));
        assert_eq!(t.failing(ip).0, Vec::<u16>::new());
    }
}
