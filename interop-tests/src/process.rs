//! Daemons started inside a host, owned by the lab: killed by PID, never by name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result, io_err};
use crate::sys;

#[derive(Debug)]
pub(crate) struct ProcSpec {
    pub name: String,
    pub netns: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

#[derive(Debug)]
pub(crate) struct Proc {
    pub spec: ProcSpec,
    child: Mutex<Option<Child>>,
}

/// A daemon in the lab. Cloning gives another handle to the same process.
#[derive(Debug, Clone)]
pub struct Process(pub(crate) Arc<Proc>);

impl Proc {
    pub(crate) fn start(spec: ProcSpec) -> Result<Arc<Proc>> {
        let p = Arc::new(Proc {
            spec,
            child: Mutex::new(None),
        });
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&self) -> Result<()> {
        let s = &self.spec;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .map_err(io_err(format!("opening log {}", s.log.display())))?;
        let log2 = log.try_clone().map_err(io_err("cloning log handle"))?;
        // `ip netns exec` execs the program, so the child PID is the daemon's PID.
        let child = Command::new("ip")
            .args(["netns", "exec", &s.netns, &s.program])
            .args(&s.args)
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err(format!("starting {} in {}", s.program, s.netns)))?;
        *self.child.lock().unwrap() = Some(child);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; with no grace, SIGKILL only. Idempotent.
    pub(crate) fn stop(&self, grace: Duration) {
        let mut guard = self.child.lock().unwrap();
        let Some(child) = guard.as_mut() else { return };
        if grace.is_zero() {
            // A crash: SIGKILL alone. A SIGTERM first would let the daemon say goodbye (BIRD
            // sends a Cease) when it gets scheduled between the two signals.
            let _ = child.kill();
        } else if let Ok(None) = child.try_wait() {
            sys::signal(child.id(), libc::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < grace {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        *guard = None;
    }

    pub(crate) fn kill(&self) {
        self.stop(Duration::ZERO);
    }
}

impl Process {
    pub fn name(&self) -> &str {
        &self.0.spec.name
    }

    /// PID of the running daemon, if it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut g = self.0.child.lock().unwrap();
        let c = g.as_mut()?;
        matches!(c.try_wait(), Ok(None)).then(|| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Graceful stop: SIGTERM, SIGKILL after 5 s.
    pub fn terminate(&self) {
        self.0.stop(Duration::from_secs(5));
    }

    /// Hard stop: SIGKILL (a crash, as far as the daemon's peers can tell).
    pub fn kill(&self) {
        self.0.kill();
    }

    /// Starts the same command again (after a stop); fails if it still runs.
    pub fn restart(&self) -> Result<()> {
        if self.is_running() {
            return Err(LabError::Invalid(format!(
                "{} still runs; stop it before restart",
                self.name()
            )));
        }
        self.0.spawn()
    }

    pub fn log_path(&self) -> &Path {
        &self.0.spec.log
    }

    /// The last `max_bytes` of the daemon's log.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        tail(&self.0.spec.log, max_bytes)
    }
}

pub(crate) fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
