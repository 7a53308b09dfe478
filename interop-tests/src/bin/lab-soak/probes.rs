//! The soak's probes, on their own thread every 2 s: stable targets (must answer as expected,
//! or stay denied), one long-lived flow, and up to two churned targets per round (they may
//! fail while they change: reported, not judged).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use interop_tests::Host;
use interop_tests::mesh::probe::{self, Flow};

/// What a probe must see.
#[derive(Debug, Clone)]
pub enum Expect {
    Exact(String),
    Prefix(String),
    Any,
    /// No answer (a policy drops it).
    Denied,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub from: Host,
    pub dst: SocketAddr,
    pub expect: Expect,
}

/// The churned targets that exist now (set by the churn loop).
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub total: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

impl Stat {
    fn record(&mut self, r: Result<(), String>) {
        self.total += 1;
        if let Err(e) = r {
            self.failed += 1;
            self.last_error = Some(e);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub stable: BTreeMap<String, Stat>,
    pub churned: BTreeMap<String, Stat>,
    /// Requests on the long-lived flow; a failure reopens it.
    pub flow: Stat,
    pub flow_name: String,
}

fn sum(m: &BTreeMap<String, Stat>) -> (u64, u64) {
    m.values()
        .fold((0, 0), |(t, f), s| (t + s.total, f + s.failed))
}

impl Results {
    pub fn stable_totals(&self) -> (u64, u64) {
        let (t, f) = sum(&self.stable);
        (t + self.flow.total, f + self.flow.failed)
    }
    pub fn churned_totals(&self) -> (u64, u64) {
        sum(&self.churned)
    }
}

pub struct Prober {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Results>>,
    handle: JoinHandle<()>,
}

fn check(t: &Target) -> Result<(), String> {
    let r = probe::ask(&t.from, t.dst);
    match (&t.expect, r) {
        (Expect::Denied, Ok(a)) => Err(format!("answered by {a}")),
        (Expect::Denied, Err(_)) => Ok(()),
        (Expect::Exact(w), Ok(a)) if a == *w => Ok(()),
        (Expect::Prefix(p), Ok(a)) if a.starts_with(p.as_str()) => Ok(()),
        (Expect::Any, Ok(_)) => Ok(()),
        (_, Ok(a)) => Err(format!("unexpected answer {a}")),
        (_, Err(e)) => Err(e),
    }
}

impl Prober {
    /// Starts probing; `flow` is (from, to, expected answer) of the long-lived flow.
    pub fn start(
        stable: Vec<Target>,
        flow: (Host, SocketAddr, String),
        live: Arc<Mutex<Live>>,
        seed: u64,
    ) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Results {
            flow_name: format!("long-lived flow red/n1/client -> {}", flow.2),
            ..Default::default()
        }));
        let (s, r) = (stop.clone(), results.clone());
        let handle = std::thread::spawn(move || run(stable, flow, live, seed, &s, &r));
        Prober {
            stop,
            results,
            handle,
        }
    }

    /// "stable F/T failed, churned F/T failed".
    pub fn summary(&self) -> String {
        let r = self.results.lock().unwrap();
        let (st, sf) = r.stable_totals();
        let (ct, cf) = r.churned_totals();
        format!("stable {sf}/{st} failed, churned {cf}/{ct} failed")
    }

    pub fn stop(self) -> Results {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        self.results.lock().unwrap().clone()
    }
}

fn run(
    stable: Vec<Target>,
    (from, to, answer): (Host, SocketAddr, String),
    live: Arc<Mutex<Live>>,
    seed: u64,
    stop: &AtomicBool,
    results: &Mutex<Results>,
) {
    let mut flow: Option<Flow> = None;
    let mut pick = seed | 1;
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        for t in &stable {
            // A denied probe waits out its connect timeout: not every round.
            if matches!(t.expect, Expect::Denied) && !round.is_multiple_of(5) {
                continue;
            }
            let r = check(t);
            results
                .lock()
                .unwrap()
                .stable
                .entry(t.name.clone())
                .or_default()
                .record(r);
        }
        let r = match flow.as_mut() {
            Some(f) => f.ask(),
            None => Flow::open(&from, to).and_then(|mut f| {
                let a = f.ask();
                flow = Some(f);
                a
            }),
        };
        let r = match r {
            Ok(a) if a == answer => Ok(()),
            Ok(a) => Err(format!("unexpected answer {a}")),
            Err(e) => Err(e),
        };
        if r.is_err() {
            flow = None;
        }
        results.lock().unwrap().flow.record(r);
        let targets = live.lock().unwrap().targets.clone();
        for _ in 0..2.min(targets.len()) {
            pick = pick
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let t = &targets[(pick >> 33) as usize % targets.len()];
            let r = check(t);
            results
                .lock()
                .unwrap()
                .churned
                .entry(t.name.clone())
                .or_default()
                .record(r);
        }
        round += 1;
        while started.elapsed() < Duration::from_secs(2) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
