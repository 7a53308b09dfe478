//! The soak's memory sampler (VmRSS and open fds of every daemon) and its report: tables on
//! stdout and `target/bench/soak.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use interop_tests::mesh::soak::{self, Daemon, Snapshot};
use serde_json::{Value, json};

use super::probes::{Results, Stat};

/// One sample: seconds since the start, then (RSS KiB, fds) per daemon (`None`: gone).
type Sample = (f64, Vec<Option<(u64, u64)>>);

struct Shared {
    samples: Vec<Sample>,
    churn_end: Option<f64>,
}

/// Samples every daemon on its own thread until stopped.
pub struct Sampler {
    daemons: Vec<Daemon>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    start: Instant,
    handle: JoinHandle<()>,
}

fn sample(daemons: &[Daemon]) -> Vec<Option<(u64, u64)>> {
    daemons
        .iter()
        .map(|d| Some((soak::vm_rss_kib(d.pid)?, soak::fd_count(d.pid)?)))
        .collect()
}

impl Sampler {
    pub fn start(daemons: Vec<Daemon>, every: Duration) -> Sampler {
        let shared = Arc::new(Mutex::new(Shared {
            samples: Vec::new(),
            churn_end: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let (d, sh, st) = (daemons.clone(), shared.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let s = sample(&d);
                sh.lock()
                    .unwrap()
                    .samples
                    .push((start.elapsed().as_secs_f64(), s));
                let next = Instant::now() + every;
                while Instant::now() < next && !st.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Sampler {
            daemons,
            shared,
            stop,
            start,
            handle,
        }
    }

    pub fn mark_churn_end(&self) {
        self.shared.lock().unwrap().churn_end = Some(self.start.elapsed().as_secs_f64());
    }

    /// Stops sampling (with one last sample, after the settle).
    pub fn stop(self) -> Mem {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
        let mut sh = self.shared.lock().unwrap();
        let last = sample(&self.daemons);
        sh.samples.push((self.start.elapsed().as_secs_f64(), last));
        Mem {
            daemons: self.daemons,
            samples: std::mem::take(&mut sh.samples),
            churn_end: sh.churn_end.unwrap_or(f64::MAX),
        }
    }
}

/// Every sample of every daemon.
pub struct Mem {
    pub daemons: Vec<Daemon>,
    samples: Vec<Sample>,
    churn_end: f64,
}

/// One daemon's figures.
pub struct MemRow {
    pub name: String,
    pub judged: bool,
    pub first_kib: u64,
    pub q2_kib: u64,
    pub q4_kib: u64,
    pub last_kib: u64,
    pub fd_first: u64,
    pub fd_last: u64,
    pub samples: usize,
    /// The daemon vanished at some sample.
    pub gone: bool,
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

impl MemRow {
    pub fn growth_kib(&self) -> i64 {
        self.q4_kib as i64 - self.q2_kib as i64
    }

    /// Why this daemon fails (judged ones only), if it does.
    pub fn failure(&self, pct: f64, kib: u64, fds: u64) -> Option<String> {
        if !self.judged {
            return None;
        }
        if self.gone {
            return Some(format!("memory: {} exited during the soak", self.name));
        }
        let allowed = ((self.q2_kib as f64 * pct / 100.0) as u64).max(kib);
        if self.growth_kib() > allowed as i64 {
            return Some(format!(
                "memory: {} grew from {} KiB (median, 2nd quarter) to {} KiB (last quarter), \
                 more than {allowed} KiB",
                self.name, self.q2_kib, self.q4_kib
            ));
        }
        if self.fd_last > self.fd_first + fds {
            return Some(format!(
                "fds: {} had {} open fds at the start, {} after the settle",
                self.name, self.fd_first, self.fd_last
            ));
        }
        None
    }
}

impl Mem {
    pub fn rows(&self) -> Vec<MemRow> {
        let churn: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|(t, _)| *t <= self.churn_end)
            .collect();
        self.daemons
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let rss: Vec<u64> = churn.iter().filter_map(|(_, s)| Some(s[i]?.0)).collect();
                let q = (rss.len() / 4).max(1);
                let all: Vec<Option<(u64, u64)>> = self.samples.iter().map(|(_, s)| s[i]).collect();
                let first = all.first().copied().flatten().unwrap_or((0, 0));
                let last = all.last().copied().flatten().unwrap_or((0, 0));
                MemRow {
                    name: d.name.clone(),
                    judged: d.judged,
                    first_kib: first.0,
                    q2_kib: median(rss.get(q..(2 * q).min(rss.len())).unwrap_or(&[])),
                    q4_kib: median(&rss[rss.len().saturating_sub(q)..]),
                    last_kib: last.0,
                    fd_first: first.1,
                    fd_last: last.1,
                    samples: rss.len(),
                    gone: all.iter().any(Option::is_none),
                }
            })
            .collect()
    }

    pub fn failures(&self, pct: f64, kib: u64, fds: u64) -> Vec<String> {
        self.rows()
            .iter()
            .filter_map(|r| r.failure(pct, kib, fds))
            .collect()
    }

    pub fn every_s(&self) -> f64 {
        match self.samples.as_slice() {
            [a, b, ..] => b.0 - a.0,
            _ => 0.0,
        }
    }
}

/// Everything the report shows.
pub struct Report<'a> {
    pub minutes: f64,
    pub seed: u64,
    pub startup_s: f64,
    pub churn_s: f64,
    pub settle_s: f64,
    pub counts: &'a BTreeMap<&'static str, u64>,
    pub errors: &'a [String],
    pub probes: &'a Results,
    pub base: &'a Snapshot,
    pub mid: Option<&'a Snapshot>,
    pub after: &'a Snapshot,
    pub pending: &'a BTreeMap<&'static str, u64>,
    pub allocated: &'a BTreeMap<&'static str, u64>,
    pub collected: &'a BTreeMap<&'static str, u64>,
    pub mem: &'a Mem,
    pub failures: &'a [String],
    pub rss_tol: (f64, u64, u64),
}

/// Prints rows as aligned columns (first column left, the rest right).
fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<width$}", width = w[0])
                } else {
                    format!("{c:>width$}", width = w[i])
                }
            })
            .collect();
        println!("  {}", s.join("  ").trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn stat_row(name: &str, s: &Stat) -> Vec<String> {
    vec![
        name.to_string(),
        s.total.to_string(),
        s.failed.to_string(),
        s.last_error.clone().unwrap_or_default(),
    ]
}

impl Report<'_> {
    fn verdict(&self, name: &str) -> String {
        let (class, after) = self
            .after
            .0
            .get(name)
            .copied()
            .unwrap_or((soak::Class::Strict, 0));
        let base = self.base.get(name).unwrap_or(0);
        match class {
            soak::Class::Aging => "aging (not judged)".into(),
            _ if self
                .failures
                .iter()
                .any(|f| f.starts_with(&format!("leak: {name}:"))) =>
            {
                format!("LEAK ({:+})", after as i64 - base as i64)
            }
            soak::Class::Identity if after != base => {
                format!("ok ({:+} pending GC)", after as i64 - base as i64)
            }
            _ => "ok".into(),
        }
    }

    pub fn print(&self) {
        println!("\n== Churn ({:.0} s, seed {}) ==", self.churn_s, self.seed);
        let rows: Vec<Vec<String>> = self
            .counts
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect();
        table(&["operation", "count"], &rows);
        for e in self.errors {
            println!("  error: {e}");
        }

        println!("\n== Probes (every 2 s) ==");
        let mut rows: Vec<Vec<String>> = self
            .probes
            .stable
            .iter()
            .map(|(k, s)| stat_row(k, s))
            .collect();
        rows.push(stat_row(&self.probes.flow_name, &self.probes.flow));
        table(
            &["stable (should succeed)", "total", "failed", "last error"],
            &rows,
        );
        let rows: Vec<Vec<String>> = self
            .probes
            .churned
            .iter()
            .map(|(k, s)| stat_row(k, s))
            .collect();
        table(
            &[
                "churned (transients expected)",
                "total",
                "failed",
                "last error",
            ],
            &rows,
        );

        println!(
            "\n== Counters: baseline vs after the settle ({:.0} s) ==",
            self.settle_s
        );
        let rows: Vec<Vec<String>> = self
            .after
            .0
            .keys()
            .chain(
                self.base
                    .0
                    .keys()
                    .filter(|k| !self.after.0.contains_key(*k)),
            )
            .map(|k| {
                let show = |s: Option<&Snapshot>| {
                    s.and_then(|s| s.get(k))
                        .map_or("-".into(), |v: u64| v.to_string())
                };
                vec![
                    k.clone(),
                    show(Some(self.base)),
                    show(self.mid),
                    show(Some(self.after)),
                    self.verdict(k),
                ]
            })
            .collect();
        table(
            &["counter", "baseline", "mid-churn", "after", "verdict"],
            &rows,
        );
        if let Some(mid) = self.mid {
            let moved = mid
                .0
                .iter()
                .filter(|(k, (_, v))| self.base.get(k) != Some(*v))
                .count();
            println!(
                "  {moved} of {} counters differed from the baseline half-way through the churn.",
                mid.0.len()
            );
        }
        let get = |m: &BTreeMap<&str, u64>, c: &str| m.get(c).copied().unwrap_or(0);
        for (c, n) in self.pending {
            println!(
                "  {c}: {} identities allocated by the churn, {} collected by meshd's GC, \
                 {n} pending (unused for less than its 300 s grace)",
                get(self.allocated, c),
                get(self.collected, c)
            );
        }

        let (pct, kib, fds) = self.rss_tol;
        println!(
            "\n== Memory (VmRSS every {:.0} s; flat: last-quarter median within max({pct}%, {kib} KiB) of the 2nd quarter's; fds within +{fds}) ==",
            self.mem.every_s()
        );
        let rows: Vec<Vec<String>> = self
            .mem
            .rows()
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.first_kib.to_string(),
                    r.q2_kib.to_string(),
                    r.q4_kib.to_string(),
                    r.last_kib.to_string(),
                    format!("{:+}", r.growth_kib()),
                    format!("{} -> {}", r.fd_first, r.fd_last),
                    match (r.judged, r.failure(pct, kib, fds)) {
                        (false, _) => "reported".into(),
                        (true, None) => "flat".into(),
                        (true, Some(_)) => "GREW".into(),
                    },
                ]
            })
            .collect();
        table(
            &[
                "daemon",
                "first KiB",
                "Q2 med",
                "Q4 med",
                "last",
                "Q4-Q2",
                "fds",
                "verdict",
            ],
            &rows,
        );

        if self.failures.is_empty() {
            println!("\nSoak passed: nothing leaked, memory flat.");
        } else {
            println!("\nSoak FAILED:");
            for f in self.failures {
                println!("  {f}");
            }
        }
    }

    pub fn json(&self) -> Value {
        let stat =
            |s: &Stat| json!({"total": s.total, "failed": s.failed, "last_error": s.last_error});
        let stats = |m: &BTreeMap<String, Stat>| -> Value {
            m.iter().map(|(k, s)| (k.clone(), stat(s))).collect()
        };
        let counters: Vec<Value> = self
            .after
            .0
            .iter()
            .map(|(k, (class, v))| {
                json!({"name": k, "class": class.name(), "baseline": self.base.get(k),
                       "mid_churn": self.mid.and_then(|m| m.get(k)),
                       "after": v, "verdict": self.verdict(k)})
            })
            .collect();
        let (pct, kib, fds) = self.rss_tol;
        let mem: Vec<Value> = self
            .mem
            .rows()
            .iter()
            .map(|r| {
                json!({"daemon": r.name, "judged": r.judged, "samples": r.samples,
                       "first_kib": r.first_kib, "q2_median_kib": r.q2_kib,
                       "q4_median_kib": r.q4_kib, "last_kib": r.last_kib,
                       "growth_kib": r.growth_kib(), "fds_first": r.fd_first,
                       "fds_last": r.fd_last, "ok": r.failure(pct, kib, fds).is_none()})
            })
            .collect();
        json!({
            "minutes": self.minutes,
            "seed": self.seed,
            "lab_startup_s": self.startup_s,
            "churn_s": self.churn_s,
            "settle_s": self.settle_s,
            "churn": self.counts,
            "churn_errors": self.errors,
            "probes": {
                "stable": stats(&self.probes.stable),
                "flow": stat(&self.probes.flow),
                "churned": stats(&self.probes.churned),
            },
            "counters": counters,
            "identities": {"allocated": self.allocated, "collected": self.collected,
                           "pending_gc": self.pending},
            "memory": {"every_s": self.mem.every_s(), "tolerance_pct": pct,
                       "tolerance_kib": kib, "fd_tolerance": fds, "daemons": mem},
            "failures": self.failures,
            "ok": self.failures.is_empty(),
        })
    }
}

/// Writes `target/bench/soak.json` (next to the running binary's profile dir).
pub fn write_json(v: &Value) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current exe")?;
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .context("no target dir")?;
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("soak.json");
    std::fs::write(&path, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
