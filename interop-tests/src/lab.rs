//! The lab: hosts (network namespaces), links (veth), switches (bridges) and the processes
//! in them. Everything is torn down on drop, also when a test panics, and daemon logs are
//! printed when it does.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cmd::run;
use crate::error::{LabError, Result, io_err};
use crate::process::{Proc, ProcSpec, Process, tail};
use crate::sys;

/// Prefix of every namespace the lab makes: `im-<owner pid>-<random>-<host>`.
const NS_PREFIX: &str = "im-";

#[derive(Debug)]
pub(crate) struct LabInner {
    pub id: String,
    pub dir: PathBuf,
    hosts: Mutex<Vec<String>>,
    procs: Mutex<Vec<Arc<Proc>>>,
    cleanup: Mutex<Vec<PathBuf>>,
    seq: AtomicU32,
}

/// One lab per test. Drop tears it all down.
#[derive(Debug)]
pub struct Lab {
    inner: Arc<LabInner>,
}

/// A host: one network namespace.
#[derive(Debug, Clone)]
pub struct Host {
    lab: Arc<LabInner>,
    name: String,
    netns: String,
    ifseq: Arc<AtomicU32>,
}

/// A veth pair between two hosts.
#[derive(Debug, Clone)]
pub struct Link {
    pub a: Host,
    pub a_if: String,
    pub b: Host,
    pub b_if: String,
}

/// Stack of threads that run inside a host: whole daemons' futures (etcd clients with TLS,
/// several meshd on one runtime) are large in debug builds, more than the default 2 MiB.
const THREAD_STACK: usize = 16 << 20;

pub(crate) fn random_hex(len: usize) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())[..len].to_string()
}

impl Lab {
    /// A new, empty lab. `test` names it in logs. Sweeps namespaces left by dead test runs.
    pub fn new(test: &str) -> Result<Lab> {
        if !sys::is_root() {
            return Err(LabError::NotRoot);
        }
        crate::cmd::require_binary("ip", "iproute2")?;
        sweep_stale();
        let id = format!("{NS_PREFIX}{}-{}", std::process::id(), random_hex(4));
        let dir = std::env::temp_dir().join(format!("ironmesh-lab-{id}-{test}"));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // Daemons that drop privileges (FRR's zebra runs as `frr`) must read their config here.
        set_mode(&dir, 0o755)?;
        Ok(Lab {
            inner: Arc::new(LabInner {
                id,
                dir,
                hosts: Mutex::new(Vec::new()),
                procs: Mutex::new(Vec::new()),
                cleanup: Mutex::new(Vec::new()),
                seq: AtomicU32::new(0),
            }),
        })
    }

    /// The lab's id, the prefix of all its namespace names.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The lab's temp dir (configs, logs, data dirs live below it).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A new host (network namespace) with loopback up and IP forwarding on.
    pub fn host(&self, name: &str) -> Result<Host> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(LabError::Invalid(format!(
                "host name {name:?}: use letters, digits and '-'"
            )));
        }
        let netns = format!("{}-{name}", self.inner.id);
        run("ip", &["netns", "add", &netns])?;
        self.inner.hosts.lock().unwrap().push(netns.clone());
        let host = Host {
            lab: self.inner.clone(),
            name: name.into(),
            netns,
            ifseq: Arc::new(AtomicU32::new(0)),
        };
        host.ip(&["link", "set", "lo", "up"])?;
        for s in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.all.keep_addr_on_down=1",
            "net.ipv6.conf.default.keep_addr_on_down=1",
        ] {
            host.exec("sysctl", &["-q", "-w", s])?;
        }
        Ok(host)
    }

    /// A veth pair between `a` and `b` (named `ethN` in each), up, with the given addresses
    /// (CIDR notation; IPv6 without DAD so they are usable at once).
    pub fn link(&self, a: &Host, a_addrs: &[&str], b: &Host, b_addrs: &[&str]) -> Result<Link> {
        let a_if = a.next_ifname();
        let b_if = b.next_ifname();
        run(
            "ip",
            &[
                "link", "add", &a_if, "netns", &a.netns, "type", "veth", "peer", "name", &b_if,
                "netns", &b.netns,
            ],
        )?;
        for (h, ifname, addrs) in [(a, &a_if, a_addrs), (b, &b_if, b_addrs)] {
            for addr in addrs {
                h.add_addr(ifname, addr)?;
            }
            h.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Link {
            a: a.clone(),
            a_if,
            b: b.clone(),
            b_if,
        })
    }

    /// A switch: a bridge in a host of its own. Attach hosts with [`Lab::attach`].
    pub fn switch(&self, name: &str) -> Result<Host> {
        let sw = self.host(name)?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        Ok(sw)
    }

    /// Connects `host` to `switch` (from [`Lab::switch`]); returns the link (a = host).
    pub fn attach(&self, host: &Host, addrs: &[&str], switch: &Host) -> Result<Link> {
        let link = self.link(host, addrs, switch, &[])?;
        switch.ip(&["link", "set", &link.b_if, "master", "br0"])?;
        Ok(link)
    }

    /// Names every process's log and dumps them; used on failure.
    pub fn dump_logs(&self) {
        dump_logs(&self.inner);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let verbose = std::env::var_os("IRONMESH_LAB_LOGS").is_some();
        if std::thread::panicking() || verbose {
            dump_logs(&self.inner);
        }
        teardown(&self.inner);
    }
}

fn dump_logs(inner: &LabInner) {
    let procs = inner.procs.lock().unwrap();
    eprintln!(
        "==== lab {}: {} daemon log(s) in {} ====",
        inner.id,
        procs.len(),
        inner.dir.display()
    );
    for p in procs.iter() {
        let pid = Process(p.clone())
            .pid()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        eprintln!(
            "---- {} pid {pid} in {} ({} {}) ----\n{}",
            p.spec.name,
            p.spec.netns,
            p.spec.program,
            p.spec.args.join(" "),
            tail(&p.spec.log, 8 * 1024)
        );
    }
}

fn teardown(inner: &LabInner) {
    let procs: Vec<_> = inner.procs.lock().unwrap().drain(..).collect();
    // Last started, first stopped: clients (meshd) before the servers they say goodbye to
    // (etcd), or each waits out its grace on a dead server.
    for p in procs.iter().rev() {
        p.stop(Duration::from_secs(3));
    }
    for ns in inner.hosts.lock().unwrap().drain(..) {
        delete_netns(&ns);
    }
    for path in inner.cleanup.lock().unwrap().drain(..) {
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    if std::env::var_os("IRONMESH_KEEP_LAB").is_none() {
        let _ = std::fs::remove_dir_all(&inner.dir);
    }
}

/// Kills whatever still runs in `ns` (by PID) and deletes it.
fn delete_netns(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            sys::signal(pid, libc::SIGKILL);
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Deletes namespaces (and FRR dirs) of labs whose owning process is gone, e.g. a test run
/// killed by SIGKILL, which no Drop can clean.
fn sweep_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner_pid(ns).is_some_and(|pid| !sys::alive(pid)) {
            delete_netns(ns);
            let _ = std::fs::remove_dir_all(Path::new("/var/run/frr").join(ns));
            let _ = std::fs::remove_dir_all(Path::new("/etc/frr").join(ns));
        }
    }
}

fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(NS_PREFIX)?.split('-').next()?.parse().ok()
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name (unique on the machine).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A file path in the lab dir, unique to this host: `<dir>/<host>-<what>`.
    pub fn path(&self, what: &str) -> PathBuf {
        self.lab.dir.join(format!("{}-{what}", self.name))
    }

    /// A lab-unique number (for unique names, e.g. WireGuard interfaces).
    pub(crate) fn next_seq(&self) -> u32 {
        self.lab.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn next_ifname(&self) -> String {
        format!("eth{}", self.ifseq.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a path outside the lab dir to delete at teardown.
    pub(crate) fn cleanup_on_drop(&self, path: PathBuf) {
        self.lab.cleanup.lock().unwrap().push(path);
    }

    /// Runs `program args` inside the host and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.netns, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `ip -n <netns> args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.netns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The interface index of link `name` in this host.
    pub fn ifindex(&self, name: &str) -> Result<u32> {
        let out = self.ip(&["-o", "link", "show", name])?;
        out.split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .ok_or_else(|| {
                LabError::Invalid(format!("{}: no ifindex for {name}: {out}", self.name))
            })
    }

    /// Adds an address (CIDR) to an interface; IPv6 without DAD.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// The IPv6 link-local address of `ifname`.
    pub fn link_local(&self, ifname: &str) -> Result<std::net::Ipv6Addr> {
        let out = self.ip(&["-6", "-o", "addr", "show", "dev", ifname, "scope", "link"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LabError::Parse {
                what: format!("link-local address of {ifname}"),
                detail: out.clone(),
            })
    }

    /// Adds an address to `lo` (no dummy devices on these kernels).
    pub fn add_loopback_addr(&self, cidr: &str) -> Result<()> {
        self.add_addr("lo", cidr)
    }

    /// `ip route add <spec>`, e.g. `"198.51.100.0/24 via 192.0.2.1"`.
    pub fn route_add(&self, spec: &str) -> Result<()> {
        let mut args = vec!["route", "add"];
        args.extend(spec.split_whitespace());
        self.ip(&args).map(drop)
    }

    /// Starts a daemon in this host; its output goes to `<host>-<name>.log` in the lab dir.
    pub fn spawn(&self, name: &str, program: &str, args: &[String]) -> Result<Process> {
        self.spawn_env(name, program, args, &[])
    }

    pub fn spawn_env(
        &self,
        name: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Process> {
        let spec = ProcSpec {
            name: format!("{}/{name}", self.name),
            netns: self.netns.clone(),
            program: program.into(),
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: self.path(&format!("{name}.log")),
        };
        let p = Proc::start(spec)?;
        self.lab.procs.lock().unwrap().push(p.clone());
        Ok(Process(p))
    }

    /// Runs `f` on a new thread inside this host's namespace and waits for it (scoped, so `f`
    /// may borrow). A panic in `f` is passed on to the caller.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let netns = self.netns.clone();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(THREAD_STACK)
                .spawn_scoped(s, move || {
                    sys::join_netns(&netns).map_err(io_err(format!("joining netns {netns}")))?;
                    Ok(f())
                })
                .map_err(io_err("spawning a thread"))?
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `fut` to completion on a current-thread tokio runtime inside this host's namespace
    /// (the test process itself stays in the root namespace).
    pub fn block_on<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> Result<T> {
        self.in_netns(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("starting a tokio runtime"))
                .map(|rt| rt.block_on(fut))
        })?
    }

    /// Starts a long-lived thread inside this host's namespace.
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let netns = self.netns.clone();
        std::thread::Builder::new()
            .name(name.into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                sys::join_netns(&netns).map_err(io_err(format!("joining netns {netns}")))?;
                f()
            })
            .map_err(io_err("spawning a thread"))
    }

    /// Sends `count` pings at `interval` to `dst`; returns (transmitted, received).
    pub fn ping(&self, dst: &str, count: u32, interval: Duration) -> Result<PingStats> {
        crate::cmd::require_binary("ping", "iputils-ping")?;
        let count = count.to_string();
        let interval = format!("{:.3}", interval.as_secs_f64());
        let wait = format!("{}", 1 + count.parse::<u64>().unwrap_or(1) / 5);
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "ping",
                "-n",
                "-q",
                "-c",
                &count,
            ])
            .args(["-i", &interval, "-W", "1", "-w", &wait, dst])
            .output()
            .map_err(io_err("running ping"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // With no route at all ping sends nothing and prints no summary: all lost.
        if !stdout.contains("packets transmitted") && stderr.contains("unreachable") {
            return Ok(PingStats {
                transmitted: count.parse().unwrap_or(0),
                received: 0,
            });
        }
        PingStats::parse(&format!("{stdout}{stderr}"))
    }
}

/// Result of [`Host::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

impl PingStats {
    pub fn lost(&self) -> u32 {
        self.transmitted - self.received.min(self.transmitted)
    }

    fn parse(out: &str) -> Result<PingStats> {
        // "5 packets transmitted, 5 received, 0% packet loss, time 4005ms"
        let line = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| LabError::Parse {
                what: "ping output".into(),
                detail: out.trim().into(),
            })?;
        let num = |i: usize| -> Option<u32> {
            line.split(',')
                .nth(i)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        match (num(0), num(1)) {
            (Some(transmitted), Some(received)) => Ok(PingStats {
                transmitted,
                received,
            }),
            _ => Err(LabError::Parse {
                what: "ping summary".into(),
                detail: line.into(),
            }),
        }
    }
}

impl Link {
    /// Cuts the link: both ends down (carrier lost). Routes through it vanish from the kernel.
    pub fn cut(&self) -> Result<()> {
        self.a.ip(&["link", "set", &self.a_if, "down"])?;
        self.b.ip(&["link", "set", &self.b_if, "down"])?;
        Ok(())
    }

    /// Brings both ends up again (addresses are kept: keep_addr_on_down is set).
    pub fn restore(&self) -> Result<()> {
        self.a.ip(&["link", "set", &self.a_if, "up"])?;
        self.b.ip(&["link", "set", &self.b_if, "up"])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_parses() {
        let out = "--- 192.0.2.2 ping statistics ---\n\
                   10 packets transmitted, 9 received, 10% packet loss, time 903ms\n";
        let s = PingStats::parse(out).unwrap();
        assert_eq!((s.transmitted, s.received, s.lost()), (10, 9, 1));
        let out = "20 packets transmitted, 0 received, +20 errors, 100% packet loss";
        assert_eq!(PingStats::parse(out).unwrap().lost(), 20);
        assert!(PingStats::parse("ping: connect: Network is unreachable").is_err());
    }

    #[test]
    fn owner_pid_is_read_from_namespace_names() {
        assert_eq!(owner_pid("im-4242-a1b2-tor"), Some(4242));
        assert_eq!(owner_pid("other-ns"), None);
        assert_eq!(owner_pid("im-x-a1b2-tor"), None);
    }
}
