//! Network namespaces for the tests that run the plugin as a runtime does (`e2e.rs`,
//! `chain.rs`): named `imcni-<pid>-<seq>-<role>`, deleted on drop (also when a test fails)
//! and swept when a dead run left them behind.
#![allow(dead_code)] // each test crate uses its part

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const PREFIX: &str = "imcni-";

pub fn is_root() -> bool {
    // The effective uid from /proc (no unsafe geteuid call in tests).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace of this test run, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn sweep_stale() {
    let Ok(list) = sh("ip", &["netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let owner = ns
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "{PREFIX}{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name]).unwrap();
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A node: forwarding on, an underlay-ish address on lo.
    pub fn node() -> Netns {
        let ns = Netns::new("node");
        for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            ns.exec("sysctl", &["-q", "-w", s]).unwrap();
        }
        ns.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full).unwrap()
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    pub fn ping(&self, dst: &str) -> bool {
        self.exec(
            "ping",
            &["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst],
        )
        .is_ok()
    }

    pub fn delete(&self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}
