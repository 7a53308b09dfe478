//! Running short commands (ip, birdc, vtysh, gobgp, etcdctl, wg) and polling.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result, io_err};

/// Runs a program to completion; non-zero exit is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("spawning `{program}`")))?;
    let shown = || format!("{program} {}", args.join(" "));
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: shown(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a hint to run the setup script when a binary is not on PATH.
pub fn require_binary(binary: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false);
    if found || std::path::Path::new(binary).is_file() {
        Ok(())
    } else {
        Err(LabError::MissingBinary {
            binary: binary.into(),
            package: package.into(),
        })
    }
}

/// Polls `probe` every `every` until it returns `Ok(Some(v))` or `timeout` passes.
/// `probe` returns `Ok(None)` (with a description of what it saw in `last`) to keep waiting.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut(&mut String) -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    loop {
        match probe(&mut last) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.into(),
                waited: start.elapsed(),
                last,
            });
        }
        sleep(every);
    }
}

/// `ironctl GROUP --meshd SOCK -o json WHAT` against one meshd, parsed; Err with ironctl's
/// stderr when it fails.
pub fn ironctl_json(
    ironctl: &std::path::Path,
    group: &str,
    sock: &std::path::Path,
    what: &str,
) -> std::result::Result<serde_json::Value, String> {
    let out = Command::new(ironctl)
        .args([group, "--meshd"])
        .arg(sock)
        .args(["-o", "json", what])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {:?}", out.stdout))
}
