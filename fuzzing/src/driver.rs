//! The stable fuzzing driver: a worker process mutates a target's corpus for a bounded time
//! and stops at the first panic; its supervisor (the same binary) saves the input that was
//! running when the worker stopped abnormally (panic, abort, stack overflow, a hang caught by
//! the watchdog) under `<crash dir>/<target>/` as raw bytes and hex.
//!
//! The worker writes each input to `<crash dir>/<target>/.current-<pid>` (one `pwrite`) before
//! running it, so even a crash that kills the process (abort, stack overflow, out of memory)
//! leaves the input behind for the supervisor.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mutate::{Rng, mutate};
use crate::{Outcome, Target};

/// Corpus entries kept at most (seeds always stay).
const MAX_CORPUS: usize = 4096;

/// How one target is run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stop after this long (the seeds always run).
    pub duration: Option<Duration>,
    /// Stop after this many mutated inputs.
    pub runs: Option<u64>,
    pub seed: u64,
    pub crash_dir: PathBuf,
    /// `<corpus dir>/<target>/*`: extra seeds and the regression inputs of fixed crashes.
    pub corpus_dir: Option<PathBuf>,
    /// One input running longer than this is a hang.
    pub timeout: Duration,
}

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub execs: u64,
    pub corpus: usize,
    pub seeds: usize,
    pub kinds: usize,
    pub accepted: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        write!(
            f,
            "{} execs in {:.1} s ({:.0}/s), corpus {} ({} seeds), {} outcome kinds, {:.1}% accepted",
            self.execs,
            secs,
            self.execs as f64 / secs,
            self.corpus,
            self.seeds,
            self.kinds,
            100.0 * self.accepted as f64 / self.execs.max(1) as f64
        )
    }
}

/// The seeds of `target`: its generated ones, then the files of `<corpus dir>/<target>/`.
pub fn seeds(target: &Target, corpus_dir: Option<&Path>) -> Vec<Vec<u8>> {
    let mut out = (target.seeds)();
    if let Some(dir) = corpus_dir
        && let Ok(rd) = std::fs::read_dir(dir.join(target.name))
    {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if f.is_file()
                && let Ok(b) = std::fs::read(&f)
            {
                out.push(b);
            }
        }
    }
    out
}

/// Runs `input` through `target`, turning a panic into `Err(message)`.
pub fn exec(target: &Target, input: &[u8]) -> Result<Outcome, String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-string payload".into())
    })
}

/// The worker: fuzzes `target` in this process. Returns the stats, or exits the process with
/// status 1 at the first panic (2 for a hang), leaving the input in the `.current` file.
pub fn work(target: &Target, cfg: &Config) -> std::io::Result<Stats> {
    let dir = cfg.crash_dir.join(target.name);
    std::fs::create_dir_all(&dir)?;
    let current = File::create(current_path(&dir, std::process::id()))?;
    let started = Instant::now();
    let execs = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (execs, done, timeout, name) = (execs.clone(), done.clone(), cfg.timeout, target.name);
        std::thread::spawn(move || watch(name, &execs, &done, timeout))
    };
    let mut buf = Vec::with_capacity(target.max_len + 4);
    let mut run = |input: &[u8]| -> Outcome {
        buf.clear();
        buf.extend_from_slice(&(input.len() as u32).to_le_bytes());
        buf.extend_from_slice(input);
        // Best effort: without it a panic is still reported, only not saved.
        let _ = current.write_all_at(&buf, 0);
        let r = exec(target, input);
        execs.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(o) => o,
            Err(msg) => {
                eprintln!("fuzz: {}: panic: {msg}", target.name);
                std::process::exit(1);
            }
        }
    };
    let mut corpus = seeds(target, cfg.corpus_dir.as_deref());
    for s in &mut corpus {
        s.truncate(target.max_len);
    }
    let mut stats = Stats {
        seeds: corpus.len(),
        ..Stats::default()
    };
    let mut kinds = HashSet::new();
    for s in &corpus {
        let o = run(s);
        kinds.insert(o.signature);
    }
    let mut rng = Rng::new(cfg.seed);
    let mut input = Vec::with_capacity(target.max_len);
    let deadline = cfg.duration.map(|d| started + d);
    let mut n: u64 = 0;
    loop {
        if cfg.runs.is_some_and(|r| n >= r) {
            break;
        }
        // The clock is read every 64 inputs.
        if n.is_multiple_of(64) && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        n += 1;
        let base = rng.below(corpus.len().max(1));
        input.clear();
        if let Some(b) = corpus.get(base) {
            input.extend_from_slice(b);
        }
        let other = corpus
            .get(rng.below(corpus.len().max(1)))
            .map_or(&[][..], |v| v);
        mutate(
            &mut rng,
            &mut input,
            other,
            target.dictionary,
            target.max_len,
        );
        let o = run(&input);
        stats.accepted += u64::from(o.accepted);
        if kinds.insert(o.signature) {
            if corpus.len() < MAX_CORPUS {
                corpus.push(input.clone());
            } else {
                let i = stats.seeds + rng.below(MAX_CORPUS - stats.seeds);
                corpus[i] = input.clone();
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    drop(current);
    let _ = std::fs::remove_file(current_path(&dir, std::process::id()));
    stats.execs = execs.load(Ordering::Relaxed);
    stats.corpus = corpus.len();
    stats.kinds = kinds.len();
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn current_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!(".current-{pid}"))
}

/// Exits the process with status 2 when no input finished for `timeout`.
fn watch(name: &str, execs: &AtomicU64, done: &AtomicBool, timeout: Duration) {
    let mut last = execs.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = execs.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > timeout {
            eprintln!(
                "fuzz: {name}: hang: one input ran for more than {} s",
                timeout.as_secs_f64()
            );
            std::process::exit(2);
        }
    }
}

/// A crash the supervisor saved.
#[derive(Debug, Clone)]
pub struct Crash {
    pub target: String,
    pub why: String,
    pub file: PathBuf,
    pub input: Vec<u8>,
}

/// The supervisor: runs `exe --worker <target> <args>` and, if the worker ends abnormally,
/// saves the input it was running. `Ok(None)`: no crash.
pub fn supervise(
    exe: &Path,
    target: &Target,
    worker_args: &[String],
    crash_dir: &Path,
) -> std::io::Result<Option<Crash>> {
    let mut child = Command::new(exe)
        .arg("--worker")
        .arg(target.name)
        .args(worker_args)
        .spawn()?;
    let pid = child.id();
    let status = child.wait()?;
    let dir = crash_dir.join(target.name);
    let cur = current_path(&dir, pid);
    if status.success() {
        let _ = std::fs::remove_file(&cur);
        return Ok(None);
    }
    let why = describe(status);
    let input = match std::fs::read(&cur) {
        Ok(b) if b.len() >= 4 => {
            let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
            b[4..].get(..n).map(<[u8]>::to_vec)
        }
        _ => None,
    };
    let _ = std::fs::remove_file(&cur);
    let Some(input) = input else {
        return Ok(Some(Crash {
            target: target.name.into(),
            why: format!("{why} (no input recorded: the worker failed before its first input)"),
            file: PathBuf::new(),
            input: Vec::new(),
        }));
    };
    let file = save_crash(&dir, &input)?;
    Ok(Some(Crash {
        target: target.name.into(),
        why,
        file,
        input,
    }))
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(1), _) => "panic".into(),
        (Some(2), _) => "hang".into(),
        (Some(c), _) => format!("worker exited with status {c}"),
        (None, Some(s)) => format!(
            "worker killed by signal {s} ({})",
            match s {
                6 => "abort: out of memory, or a stack overflow",
                11 => "segmentation fault: a stack overflow",
                9 => "killed",
                _ => "signal",
            }
        ),
        (None, None) => "worker ended abnormally".into(),
    }
}

/// Writes `input` as `crash-<hash>` and `crash-<hash>.hex`; returns the raw file's path.
pub fn save_crash(dir: &Path, input: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!("crash-{:016x}", crate::fnv(0xcbf2_9ce4_8422_2325, input));
    let file = dir.join(&name);
    std::fs::write(&file, input)?;
    std::fs::write(dir.join(format!("{name}.hex")), format!("{}\n", hex(input)))?;
    Ok(file)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
