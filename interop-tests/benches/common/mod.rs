//! Pieces shared by the lab benchmarks (`bgp_ingest`, `bgp_advertise`): reading a daemon's memory
//! and CPU from `/proc`, running a thread inside a lab host's network namespace, starting bgpd
//! with benchmark logging, and writing the JSON result.
// Each benchmark uses a part of this module.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use interop_tests::{Bgpd, Host, LabError};

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`, ...).
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Like [`status_kb`], failing loudly.
pub fn must_status_kb(pid: u32, key: &str, who: &str) -> Result<u64, String> {
    status_kb(pid, key).ok_or_else(|| format!("{who}: no {key} in /proc/{pid}/status (exited?)"))
}

/// User + system CPU time of a process in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after the closing parenthesis.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second for [`cpu_ticks`] (USER_HZ, 100 on Linux).
pub const TICKS_PER_S: f64 = 100.0;

/// Waits after `since` until the process has used less than 10% of one CPU over a 500 ms
/// window, and returns the time from `since` to the start of that quiet window. `None` if it
/// stays busy for `limit`.
pub fn settle(pid: u32, since: Instant, limit: Duration) -> Option<Duration> {
    let window = Duration::from_millis(500);
    let start = Instant::now();
    let mut last = cpu_ticks(pid)?;
    let mut at = since.elapsed();
    while start.elapsed() < limit {
        std::thread::sleep(window);
        let now = cpu_ticks(pid)?;
        if ((now - last) as f64) < 0.10 * window.as_secs_f64() * TICKS_PER_S {
            return Some(at);
        }
        last = now;
        at = since.elapsed();
    }
    None
}

/// Runs `f` inside `host`'s network namespace (see `Host::in_netns`).
pub fn in_netns<T: Send>(host: &Host, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    host.in_netns(f).map_err(|e| e.to_string())
}

/// Starts the lab's bgpd in `host` with `config` (TOML) and `info` logs: the lab's
/// `Bgpd::start` logs at debug level, one line per Loc-RIB change, which would measure the
/// logger instead of the daemon on a full table.
pub fn start_bgpd(host: &Host, config: &str) -> Result<Bgpd, String> {
    let bin = env!("CARGO_BIN_EXE_lab-bgpd");
    let conf = host.path("bgpd.toml");
    std::fs::write(&conf, config).map_err(|e| format!("writing bgpd.toml: {e}"))?;
    let api = host.path("bgpd.sock");
    let args = vec![
        "--config".to_string(),
        conf.to_string_lossy().into_owned(),
        "--api".into(),
        api.to_string_lossy().into_owned(),
        "--log".into(),
        "info".into(),
    ];
    let process = host.spawn("bgpd", bin, &args).map_err(s)?;
    let b = Bgpd {
        host: host.clone(),
        process,
        api,
        config: conf,
    };
    interop_tests::cmd::wait_for(
        "bgpd API",
        Duration::from_secs(10),
        Duration::from_millis(50),
        |last| {
            if !b.process.is_running() {
                return Err(LabError::Invalid(format!(
                    "bgpd exited: {}",
                    b.process.log_tail(2000)
                )));
            }
            match b.peers() {
                Ok(_) => Ok(Some(())),
                Err(e) => {
                    *last = e.to_string();
                    Ok(None)
                }
            }
        },
    )
    .map_err(s)?;
    Ok(b)
}

/// Imported route count of a BIRD BGP protocol, summed over its channels
/// (`Routes: N imported, ...` in `show protocols all NAME`).
pub fn bird_imported(bird: &interop_tests::Bird, protocol: &str) -> Result<u64, String> {
    let out = bird
        .birdc(&format!("show protocols all {protocol}"))
        .map_err(s)?;
    let mut total = 0;
    let mut seen = false;
    for l in out.lines() {
        if let Some(rest) = l.trim().strip_prefix("Routes:") {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("BIRD routes line: {l}"))?;
            total += n;
            seen = true;
        }
    }
    // A channel that is not up prints no Routes line: 0 imported.
    let _ = seen;
    Ok(total)
}

/// True when run by `cargo bench` (it passes `--bench`). `cargo test --all-targets` runs
/// `harness = false` benchmarks without it: they then do nothing, so a benchmark never runs as
/// a test.
pub fn invoked_as_bench() -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!(
            "benchmark skipped: run it with `scripts/bench NAME` (cargo bench passes --bench)"
        );
    }
    yes
}

/// `LabError` (or anything printable) to a String.
pub fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A positive integer from the environment, or `default`.
pub fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Daemons named on the command line (`scripts/bench NAME bgpd bird`), or all of `all`.
pub fn selected(all: &[&'static str]) -> Vec<&'static str> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.is_empty() {
        return all.to_vec();
    }
    for a in &args {
        assert!(
            all.contains(&a.as_str()),
            "unknown daemon {a:?}: choose from {all:?}"
        );
    }
    all.iter()
        .copied()
        .filter(|d| args.iter().any(|a| a == d))
        .collect()
}

/// Writes `json` to `$IRONMESH_BENCH_JSON` when set.
pub fn write_json(json: &serde_json::Value) {
    if let Ok(path) = std::env::var("IRONMESH_BENCH_JSON") {
        let text = serde_json::to_string_pretty(json).expect("JSON") + "\n";
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

pub fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Rounds for JSON (3 decimals).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
