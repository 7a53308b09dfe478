//! `ironmesh-fuzz`: the stable fuzzing driver (`scripts/fuzz` runs it).
//!
//! ```text
//! ironmesh-fuzz --list
//! ironmesh-fuzz NAME... | --all  [--seconds N] [--runs N] [--seed S] [--timeout S]
//!                               [--crash-dir DIR] [--corpus-dir DIR]
//! ironmesh-fuzz NAME --input FILE     replay one input (a crash file), panicking as it did
//! ironmesh-fuzz NAME... | --all --write-seeds DIR
//!                                     seeds and dictionary for libFuzzer (scripts/fuzz --libfuzzer)
//! ```
//!
//! Exit status: 0 when no target crashed, 1 when one did (each crash named with its target
//! and the file holding the input), 2 for bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironmesh_fuzzing::driver::{self, Config};
use ironmesh_fuzzing::{Target, all, find};

const USAGE: &str = "usage: ironmesh-fuzz --list
       ironmesh-fuzz NAME... | --all  [--seconds N] [--runs N] [--seed S] [--timeout S] [--crash-dir DIR] [--corpus-dir DIR]
       ironmesh-fuzz NAME --input FILE";

#[derive(Debug)]
struct Args {
    list: bool,
    all: bool,
    worker: bool,
    names: Vec<String>,
    input: Option<PathBuf>,
    write_seeds: Option<PathBuf>,
    seconds: Option<f64>,
    runs: Option<u64>,
    seed: Option<u64>,
    timeout: f64,
    crash_dir: PathBuf,
    corpus_dir: PathBuf,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        list: false,
        all: false,
        worker: false,
        names: Vec::new(),
        input: None,
        write_seeds: None,
        seconds: None,
        runs: None,
        seed: None,
        timeout: 10.0,
        crash_dir: std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../target"))
            .join("fuzz-crashes"),
        corpus_dir: root.join("corpus"),
    };
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: {v:?} is not a valid value"))
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => a.list = true,
            "--all" => a.all = true,
            "--worker" => a.worker = true,
            "--seconds" => a.seconds = Some(value(&arg, it.next())?),
            "--runs" => a.runs = Some(value(&arg, it.next())?),
            "--seed" => a.seed = Some(value(&arg, it.next())?),
            "--timeout" => a.timeout = value(&arg, it.next())?,
            "--input" => a.input = Some(value(&arg, it.next())?),
            "--write-seeds" => a.write_seeds = Some(value(&arg, it.next())?),
            "--crash-dir" => a.crash_dir = value(&arg, it.next())?,
            "--corpus-dir" => a.corpus_dir = value(&arg, it.next())?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => a.names.push(arg),
        }
    }
    if a.seconds.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
        return Err("--seconds must be a number of seconds".into());
    }
    Ok(a)
}

fn targets(a: &Args) -> Result<Vec<Target>, String> {
    if a.all {
        return Ok(all());
    }
    if a.names.is_empty() {
        return Err("name a target (--list shows them) or give --all".into());
    }
    a.names
        .iter()
        .map(|n| find(n).ok_or_else(|| format!("no target {n:?}; --list shows them")))
        .collect()
}

fn main() -> ExitCode {
    let a = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ironmesh-fuzz: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if a.list {
        for t in all() {
            println!("{:<16} {}", t.name, t.decoder);
        }
        return ExitCode::SUCCESS;
    }
    let ts = match targets(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ironmesh-fuzz: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = &a.input {
        return replay(&ts, file);
    }
    if let Some(dir) = &a.write_seeds {
        return match write_seeds(&ts, dir, &a.corpus_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironmesh-fuzz: {}: {e}", dir.display());
                ExitCode::from(2)
            }
        };
    }
    let seed = a.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let cfg = Config {
        duration: a.seconds.map(Duration::from_secs_f64),
        runs: a.runs,
        seed,
        crash_dir: a.crash_dir.clone(),
        corpus_dir: Some(a.corpus_dir.clone()),
        timeout: Duration::from_secs_f64(a.timeout),
    };
    if cfg.duration.is_none() && cfg.runs.is_none() {
        eprintln!("ironmesh-fuzz: give --seconds N or --runs N (a run is always bounded)");
        return ExitCode::from(2);
    }
    if a.worker {
        // The worker: one target, in this process.
        let t = &ts[0];
        return match driver::work(t, &cfg) {
            Ok(stats) => {
                println!("{:<16} ok: {stats} (seed {seed})", t.name);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ironmesh-fuzz: {}: {e}", t.name);
                ExitCode::from(3)
            }
        };
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ironmesh-fuzz: cannot find this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut worker_args = vec!["--seed".to_string(), seed.to_string()];
    if let Some(s) = a.seconds {
        worker_args.extend(["--seconds".into(), s.to_string()]);
    }
    if let Some(r) = a.runs {
        worker_args.extend(["--runs".into(), r.to_string()]);
    }
    worker_args.extend(["--timeout".into(), a.timeout.to_string()]);
    worker_args.extend(["--crash-dir".into(), a.crash_dir.display().to_string()]);
    worker_args.extend(["--corpus-dir".into(), a.corpus_dir.display().to_string()]);
    let mut crashes = Vec::new();
    for t in &ts {
        match driver::supervise(&exe, t, &worker_args, &a.crash_dir) {
            Ok(None) => {}
            Ok(Some(c)) => {
                let shown = &c.input[..c.input.len().min(256)];
                eprintln!(
                    "CRASH in target {} ({}): input {} ({} bytes)\n  hex: {}{}\n  replay: scripts/fuzz {} --input {}",
                    c.target,
                    c.why,
                    c.file.display(),
                    c.input.len(),
                    driver::hex(shown),
                    if shown.len() < c.input.len() {
                        "..."
                    } else {
                        ""
                    },
                    c.target,
                    c.file.display()
                );
                crashes.push(c);
            }
            Err(e) => {
                eprintln!("ironmesh-fuzz: {}: cannot run the worker: {e}", t.name);
                return ExitCode::from(2);
            }
        }
    }
    if crashes.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("\n{} of {} target(s) crashed:", crashes.len(), ts.len());
    for c in &crashes {
        eprintln!("  {}: {} ({})", c.target, c.file.display(), c.why);
    }
    ExitCode::from(1)
}

/// Runs one input through each named target without catching anything.
fn replay(ts: &[Target], file: &PathBuf) -> ExitCode {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ironmesh-fuzz: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    for t in ts {
        let o = (t.run)(&data);
        println!(
            "{}: no crash on {} ({} bytes, {})",
            t.name,
            file.display(),
            data.len(),
            if o.accepted { "accepted" } else { "refused" }
        );
    }
    ExitCode::SUCCESS
}

/// Writes each target's seeds to `<dir>/<name>/seeds/` and its dictionary (libFuzzer's format)
/// to `<dir>/<name>/dict`, and prints `<name> -max_len=N -dict=<file>` per target.
fn write_seeds(
    ts: &[Target],
    dir: &std::path::Path,
    corpus_dir: &std::path::Path,
) -> std::io::Result<()> {
    for t in ts {
        let seeds_dir = dir.join(t.name).join("seeds");
        std::fs::create_dir_all(&seeds_dir)?;
        for (i, s) in driver::seeds(t, Some(corpus_dir)).iter().enumerate() {
            std::fs::write(seeds_dir.join(format!("seed-{i:03}")), s)?;
        }
        let tokens = t
            .dictionary
            .iter()
            .chain(ironmesh_fuzzing::mutate::COMMON_TOKENS)
            .map(|tok| {
                let esc: String = tok.iter().map(|b| format!("\\x{b:02x}")).collect();
                format!("\"{esc}\"\n")
            })
            .collect::<String>();
        let dict = dir.join(t.name).join("dict");
        std::fs::write(&dict, tokens)?;
        println!("{} -max_len={} -dict={}", t.name, t.max_len, dict.display());
    }
    Ok(())
}
