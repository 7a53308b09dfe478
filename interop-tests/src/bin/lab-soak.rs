//! The soak run (issue 8): the two-cluster lab (`interop_tests::mesh`) under continuous churn
//! for a bounded time (default 10 minutes, `--minutes N`, `--seed S`), then everything churned
//! is deleted and the lab must be back at its baseline: eBPF map entries, attached programs,
//! WireGuard peers, kernel routes, bgpd's and the ToRs' routes, the CNI's records, etcd keys
//! per prefix and leases (identities may wait out meshd's GC grace), and each daemon's memory
//! flat. Probes run all along. Prints tables, writes `target/bench/soak.json`, exits non-zero
//! naming what leaked. Never part of the tests (`scripts/soak` runs it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use interop_tests::Host;
use interop_tests::mesh::churn::{self, ChurnSvc, Pick, Slot, SvcKind};
use interop_tests::mesh::services::{LB_PORT, LB_VIP, WEB_VIP};
use interop_tests::mesh::soak::{self, Class, Snapshot};
use interop_tests::mesh::{APP_PORT, Bins, MeshLab, Side};
use ironmesh_meshd::services::Affinity;

/// meshd's identity GC (meshd/src/agent/config.rs): 300 s grace, a pass every 30 s. An
/// identity unused for longer than this (grace + two passes + slack) must be gone.
const IDENTITY_GC_DEADLINE: Duration = Duration::from_secs(300 + 60 + 20);
/// A churn generation (the `gen` label, hence a new identity) lasts this long.
const GENERATION: Duration = Duration::from_secs(60);
const SLOTS_PER_NODE: usize = 3;
/// How long the lab may take to come back to its baseline once the churn is deleted.
const SETTLE: Duration = Duration::from_secs(120);
/// Memory is flat when the median RSS of the last quarter exceeds the second quarter's by
/// no more than this many percent or this many KiB (whichever is larger).
const RSS_TOL_PCT: f64 = 10.0;
const RSS_TOL_KIB: u64 = 2048;
/// Open fds of a judged daemon may differ from the start by this much after the settle.
const FD_TOL: u64 = 8;

#[path = "lab-soak/probes.rs"]
mod probes;
#[path = "lab-soak/report.rs"]
mod report;

use probes::{Expect, Live, Target};

struct Args {
    minutes: f64,
    seed: u64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        minutes: 10.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |what| it.next().with_context(|| format!("{what} needs a value"));
        match arg.as_str() {
            "--minutes" => a.minutes = val("--minutes")?.parse().context("--minutes")?,
            "--seed" => a.seed = val("--seed")?.parse().context("--seed")?,
            other => bail!("unknown argument {other} (use --minutes N, --seed S)"),
        }
    }
    if !(a.minutes > 0.0 && a.minutes <= 120.0) {
        bail!("--minutes must be in (0, 120]");
    }
    Ok(a)
}

/// xorshift64*: reproducible churn from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// Counts of what the churn did.
#[derive(Default)]
struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    fn bump(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }
}

/// The churn's state: slots, services, policies, generations in use.
struct Churn<'a> {
    mesh: &'a MeshLab,
    rng: Rng,
    slots: Vec<Slot>,
    svcs: Vec<ChurnSvc>,
    policy: BTreeMap<&'static str, bool>,
    last_policy: Instant,
    seq: u64,
    started: Instant,
    /// (cluster, generation) -> when its last pod was deleted.
    gen_last_del: BTreeMap<(&'static str, u32), Instant>,
    counts: Counts,
    errors: Vec<String>,
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Red => "red",
        Side::Blue => "blue",
    }
}

impl Churn<'_> {
    fn note(&mut self, what: &'static str, r: interop_tests::Result<()>) {
        match r {
            Ok(()) => self.counts.bump(what),
            Err(e) => {
                self.counts.bump("failed operations");
                if self.errors.len() < 20 {
                    self.errors.push(format!("{what}: {e}"));
                }
            }
        }
    }

    fn step(&mut self) {
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].pod.is_none())
            .collect();
        let used: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].pod.is_some())
            .collect();
        let roll = self.rng.below(100);
        if self.last_policy.elapsed() > Duration::from_secs(20) && roll < 10 {
            self.toggle_policy();
        } else if roll < 40 && !free.is_empty() || used.is_empty() {
            let i = free[self.rng.below(free.len())];
            self.add_pod(i);
        } else if roll < 70 {
            let i = used[self.rng.below(used.len())];
            self.del_pod(i);
        } else {
            let i = self.rng.below(self.svcs.len());
            self.service_op(i);
        }
    }

    fn generation(&self) -> u32 {
        (self.started.elapsed().as_secs() / GENERATION.as_secs()) as u32
    }

    fn add_pod(&mut self, i: usize) {
        self.seq += 1;
        let (g, seq) = (self.generation(), self.seq);
        let r = churn::add_pod(self.mesh, &mut self.slots[i], g, seq).map(drop);
        self.note("pod add (CNI ADD)", r);
    }

    /// CNI DEL: meshd takes the pod out of every service it backs by itself (within a second;
    /// a probe of a service in that second may fail: churned probes report transients).
    fn del_pod(&mut self, i: usize) {
        match churn::del_pod(self.mesh, &mut self.slots[i]) {
            Ok(pod) => {
                let c = side_name(self.slots[i].side);
                self.gen_last_del
                    .insert((c, pod.generation), Instant::now());
                self.counts.bump("pod delete (CNI DEL)");
            }
            Err(e) => self.note("pod delete (CNI DEL)", Err(e)),
        }
    }

    fn affinity(&mut self) -> Affinity {
        [Affinity::Local, Affinity::None, Affinity::Remote][self.rng.below(3)]
    }

    /// Which pods a service selects next: this generation's, the last one's, or all.
    fn pick(&mut self) -> Pick {
        let g = self.generation();
        match self.rng.below(3) {
            0 => Pick::Generation(g),
            1 => Pick::Generation(g.saturating_sub(1)),
            _ => Pick::All,
        }
    }

    fn service_op(&mut self, i: usize) {
        let exists = self.svcs[i].pick.is_some();
        if exists && self.rng.chance(30) {
            let r = churn::delete_service(self.mesh, &mut self.svcs[i]);
            self.note("service delete", r);
            return;
        }
        let b = self.pick();
        let a = self.affinity();
        let what = match (self.svcs[i].kind, exists) {
            (SvcKind::LoadBalancer, false) => "service create (LoadBalancer)",
            (SvcKind::Global, false) => "service create (global)",
            (_, false) => "service create (ClusterIP)",
            (_, true) => "service change",
        };
        let r = churn::put_service(self.mesh, &mut self.svcs[i], b, a);
        self.note(what, r);
    }

    fn toggle_policy(&mut self) {
        self.last_policy = Instant::now();
        let side = [Side::Red, Side::Blue][self.rng.below(2)];
        let on = self.policy.entry(side_name(side)).or_default();
        if *on {
            let r = churn::delete_policy(self.mesh, side);
            *self.policy.get_mut(side_name(side)).unwrap() = r.is_err();
            self.note("policy delete", r);
        } else {
            let r = churn::apply_policy(self.mesh, side);
            *self.policy.get_mut(side_name(side)).unwrap() = r.is_ok();
            self.note("policy apply", r);
        }
    }

    /// What the probes may ask now: churned pods and services with an active backend,
    /// unchanged for 3 s.
    fn live(&self, probe_from: &BTreeMap<&'static str, Host>) -> Live {
        let settled = |t: Instant| t.elapsed() > Duration::from_secs(3);
        let mut l = Live::default();
        for s in &self.slots {
            let Some(p) = s.pod.as_ref().filter(|p| settled(p.since)) else {
                continue;
            };
            l.targets.push(Target {
                name: format!("client -> churned pod ({})", side_name(s.side)),
                from: probe_from["red"].clone(),
                dst: SocketAddr::from((p.ip, APP_PORT)),
                expect: Expect::Exact(s.answer(self.mesh)),
            });
        }
        for s in self.svcs.iter().filter(|s| settled(s.changed)) {
            // A backend: a settled pod of its cluster that its selector takes (the service
            // itself unchanged for 3 s; its backends follow the pods by themselves).
            let served = self.slots.iter().any(|slot| {
                slot.side == s.side
                    && slot.pod.as_ref().is_some_and(|p| {
                        settled(p.since) && s.pick.is_some_and(|k| k.selects(p.generation))
                    })
            });
            if !served {
                continue;
            }
            let c = side_name(s.side);
            let dst = SocketAddr::from((s.vip, s.port));
            l.targets.push(Target {
                name: format!("{c} pod -> {c} {}", s.name),
                from: probe_from[c].clone(),
                dst,
                expect: Expect::Any,
            });
            if s.kind == SvcKind::LoadBalancer {
                l.targets.push(Target {
                    name: format!("external client -> {}", s.name),
                    from: self.mesh.client.clone(),
                    dst,
                    expect: Expect::Any,
                });
            }
        }
        l
    }

    /// Deletes everything churned: services (VIPs released), pods, policies.
    fn delete_all(&mut self) {
        for i in 0..self.svcs.len() {
            if self.svcs[i].pick.is_some() {
                let r = churn::delete_service(self.mesh, &mut self.svcs[i]);
                self.note("service delete", r);
            }
        }
        for i in 0..self.slots.len() {
            for _ in 0..3 {
                if self.slots[i].pod.is_some() {
                    self.del_pod(i);
                }
            }
        }
        for side in [Side::Red, Side::Blue] {
            if self.policy.get(side_name(side)) == Some(&true) {
                let r = churn::delete_policy(self.mesh, side);
                self.policy.insert(side_name(side), r.is_err());
                self.note("policy delete", r);
            }
        }
    }
}

fn stable_targets(mesh: &MeshLab) -> Vec<Target> {
    let client = mesh.pod(Side::Red, "n1", "client");
    let t = |name: &str, from: &Host, dst: SocketAddr, expect| Target {
        name: name.into(),
        from: from.clone(),
        dst,
        expect,
    };
    let mut v = Vec::new();
    for n in ["n1", "n2"] {
        let web = mesh.pod(Side::Blue, n, "web");
        let what = format!("red/n1/client -> blue/{n}/web");
        v.push(t(
            &what,
            &client.host,
            web.addr(),
            Expect::Exact(web.answer()),
        ));
    }
    let red2 = mesh.pod(Side::Red, "n2", "web");
    let blue2 = mesh.pod(Side::Blue, "n2", "web");
    v.push(t(
        "blue/n2/web -> red/n2/web",
        &blue2.host,
        red2.addr(),
        Expect::Exact(red2.answer()),
    ));
    v.push(t(
        "red/n1/client -> shop/web (global, affinity local)",
        &client.host,
        (WEB_VIP, APP_PORT).into(),
        Expect::Prefix("red/".into()),
    ));
    v.push(t(
        "external client -> shop/front VIP",
        &mesh.client,
        (LB_VIP, LB_PORT).into(),
        Expect::Prefix("red/".into()),
    ));
    let other = mesh.pod(Side::Red, "n2", "other");
    let web1 = mesh.pod(Side::Blue, "n1", "web");
    v.push(t(
        "red/n2/other -> blue/n1/web (policy: denied)",
        &other.host,
        web1.addr(),
        Expect::Denied,
    ));
    v
}

/// Takes snapshots 3 s apart until two agree on every strict counter (at most 60 s).
fn steady_snapshot(mesh: &MeshLab) -> Result<Snapshot> {
    let start = Instant::now();
    let mut prev = soak::snapshot(mesh)?;
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = soak::snapshot(mesh)?;
        if soak::strict_diff(&prev, &now).is_empty() || start.elapsed() > Duration::from_secs(60) {
            return Ok(now);
        }
        prev = now;
    }
}

/// Identities: those beyond the baseline must be churned ones still within the GC grace.
struct IdentityCheck {
    /// cluster -> churned identities still present (pending GC).
    pending: BTreeMap<&'static str, u64>,
    /// cluster -> churned identities seen during the run (checked every 30 s) and, of
    /// those, gone now (collected by meshd's GC).
    allocated: BTreeMap<&'static str, u64>,
    collected: BTreeMap<&'static str, u64>,
    problems: Vec<String>,
}

type Ids = BTreeMap<u32, BTreeMap<String, String>>;

fn check_identities(
    mesh: &MeshLab,
    base: &BTreeMap<&'static str, Ids>,
    seen: &mut BTreeMap<&'static str, BTreeSet<u32>>,
    last_del: &BTreeMap<(&'static str, u32), Instant>,
) -> Result<IdentityCheck> {
    let mut c = IdentityCheck {
        pending: BTreeMap::new(),
        allocated: BTreeMap::new(),
        collected: BTreeMap::new(),
        problems: Vec::new(),
    };
    for side in [Side::Red, Side::Blue] {
        let cl = mesh.cluster(side);
        let name = side_name(side);
        let now = soak::identities(cl)?;
        for id in base[name].keys().filter(|id| !now.contains_key(id)) {
            c.problems
                .push(format!("{name}: baseline identity {id} disappeared"));
        }
        let seen = seen.entry(name).or_default();
        let mut pending = 0;
        for (id, labels) in now.iter().filter(|(id, _)| !base[name].contains_key(id)) {
            seen.insert(*id);
            let generation = labels
                .get("gen")
                .and_then(|g| g.strip_prefix('g')?.parse::<u32>().ok());
            let unused_for = generation
                .and_then(|g| last_del.get(&(name, g)))
                .map(|t| t.elapsed());
            match unused_for {
                Some(d) if d > IDENTITY_GC_DEADLINE => c.problems.push(format!(
                    "{name}: identity {id} {labels:?} unused for {} s, not collected",
                    d.as_secs()
                )),
                Some(_) => pending += 1,
                None if generation.is_some() => pending += 1,
                None => c
                    .problems
                    .push(format!("{name}: unexpected identity {id} {labels:?}")),
            }
        }
        c.pending.insert(name, pending);
        let collected = seen.iter().filter(|id| !now.contains_key(id)).count();
        c.collected.insert(name, collected as u64);
        c.allocated.insert(name, seen.len() as u64);
    }
    Ok(c)
}

/// Counters that are off: strict ones not at the baseline; identity ones not at the
/// baseline plus the cluster's pending identities.
fn off_counters(base: &Snapshot, now: &Snapshot, ids: &IdentityCheck) -> Vec<String> {
    let mut off: Vec<String> = soak::strict_diff(base, now)
        .into_iter()
        .map(|(n, b, a)| format!("{n}: {} -> {}", opt(b), opt(a)))
        .collect();
    for (name, (class, v)) in &now.0 {
        if *class != Class::Identity {
            continue;
        }
        let cluster = ["red", "blue"]
            .into_iter()
            .find(|c| name.contains(&format!("/{c}/")))
            .unwrap_or("red");
        let want = base.get(name).unwrap_or(0) + ids.pending.get(cluster).copied().unwrap_or(0);
        if *v != want {
            off.push(format!(
                "{name}: {v}, expected {want} (baseline + pending GC)"
            ));
        }
    }
    off
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn main() -> Result<()> {
    let a = args()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst)).context("Ctrl-C handler")?;
    let bins = Bins::find()?;
    println!(
        "ironmesh soak: {} min of churn, seed {}; starting the lab ...",
        a.minutes, a.seed
    );
    let mesh = match MeshLab::start_with("soak", bins, &stop) {
        Ok(m) => m,
        Err(e) if stop.load(Ordering::SeqCst) => bail!("{e} (Ctrl-C); the lab is torn down"),
        Err(e) => return Err(e.into()),
    };
    println!("Lab up in {:.1} s.", mesh.startup.as_secs_f64());
    let servers = Arc::new(AtomicBool::new(false));
    let r = run(&mesh, &a, &stop, &servers);
    servers.store(true, Ordering::SeqCst);
    if r.is_err() && !stop.load(Ordering::SeqCst) {
        mesh.lab.dump_logs();
        let gone = soak::exited(&mesh);
        if !gone.is_empty() {
            eprintln!("No longer running: {}", gone.join(", "));
        }
    }
    drop(mesh);
    println!("Lab torn down.");
    match r {
        Ok(leaks) if leaks.is_empty() => Ok(()),
        Ok(leaks) => bail!("soak failed:\n  {}", leaks.join("\n  ")),
        Err(e) => Err(e),
    }
}

/// The run itself; returns what leaked or grew (empty: passed).
fn run(
    mesh: &MeshLab,
    a: &Args,
    stop: &AtomicBool,
    servers: &Arc<AtomicBool>,
) -> Result<Vec<String>> {
    let base = steady_snapshot(mesh)?;
    let base_ids: BTreeMap<&'static str, Ids> = [
        ("red", soak::identities(&mesh.red)?),
        ("blue", soak::identities(&mesh.blue)?),
    ]
    .into();
    println!("Baseline: {} counters.", base.0.len());
    let daemons = soak::daemons(mesh);
    let duration = Duration::from_secs_f64(a.minutes * 60.0);
    let every = Duration::from_secs((duration.as_secs() / 60).clamp(2, 10));
    let sampler = report::Sampler::start(daemons.clone(), every);

    let mut c = Churn {
        mesh,
        rng: Rng(a.seed.max(1)),
        slots: churn::slots(mesh, SLOTS_PER_NODE, servers)?,
        svcs: churn::services(),
        policy: BTreeMap::new(),
        last_policy: Instant::now(),
        seq: 0,
        started: Instant::now(),
        gen_last_del: BTreeMap::new(),
        counts: Counts::default(),
        errors: Vec::new(),
    };
    let probe_from: BTreeMap<&'static str, Host> = [
        ("red", mesh.pod(Side::Red, "n1", "client").host.clone()),
        ("blue", mesh.pod(Side::Blue, "n1", "web").host.clone()),
    ]
    .into();
    let live = Arc::new(Mutex::new(Live::default()));
    let blue2 = mesh.pod(Side::Blue, "n2", "web");
    let flow = (
        mesh.pod(Side::Red, "n1", "client").host.clone(),
        blue2.addr(),
        blue2.answer(),
    );
    let prober = probes::Prober::start(stable_targets(mesh), flow, live.clone(), a.seed);

    let mut next_report = Instant::now() + Duration::from_secs(60);
    let mut next_ids = Instant::now() + Duration::from_secs(30);
    let mut next_alive = Instant::now();
    // One snapshot half-way: shows that the counters do move with the churn.
    let mut mid = None;
    let mut seen = BTreeMap::new();
    while c.started.elapsed() < duration && !stop.load(Ordering::SeqCst) {
        c.step();
        *live.lock().unwrap() = c.live(&probe_from);
        if Instant::now() >= next_alive {
            // A daemon gone (crashed, or killed from outside the lab) voids the run.
            next_alive += Duration::from_secs(5);
            let gone = soak::exited(mesh);
            if !gone.is_empty() {
                bail!("daemons exited during the churn: {}", gone.join(", "));
            }
        }
        if Instant::now() >= next_ids {
            // Which identities the churn allocated (the GC may collect them before the end).
            next_ids += Duration::from_secs(30);
            let _ = check_identities(mesh, &base_ids, &mut seen, &c.gen_last_del);
        }
        if mid.is_none() && c.started.elapsed() >= duration / 2 {
            mid = Some(soak::snapshot(mesh)?);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(60);
            let pods = c.slots.iter().filter(|s| s.pod.is_some()).count();
            println!(
                "  {:>4.1} min: {} operations, {pods} churned pods live, probes {}",
                c.started.elapsed().as_secs_f64() / 60.0,
                c.counts.0.values().sum::<u64>(),
                prober.summary()
            );
        }
        std::thread::sleep(Duration::from_millis(200 + c.rng.below(400) as u64));
    }
    let churn_secs = c.started.elapsed().as_secs_f64();
    let probes = prober.stop();
    sampler.mark_churn_end();
    println!("Churn stopped after {churn_secs:.0} s; deleting everything churned ...");
    c.delete_all();
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C); the lab is torn down");
    }

    // Settle: until every counter is back (bounded).
    let settle_start = Instant::now();
    let (after, ids, off) = loop {
        let now = soak::snapshot(mesh)?;
        let ids = check_identities(mesh, &base_ids, &mut seen, &c.gen_last_del)?;
        let off = off_counters(&base, &now, &ids);
        if off.is_empty() || settle_start.elapsed() > SETTLE || stop.load(Ordering::SeqCst) {
            break (now, ids, off);
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    let settled = settle_start.elapsed().as_secs_f64();
    let mem = sampler.stop();

    let mut failures: Vec<String> = off.iter().map(|o| format!("leak: {o}")).collect();
    failures.extend(ids.problems.iter().map(|p| format!("identity: {p}")));
    failures.extend(mem.failures(RSS_TOL_PCT, RSS_TOL_KIB, FD_TOL));
    failures.extend(soak::exited(mesh).iter().map(|d| format!("exited: {d}")));

    let r = report::Report {
        minutes: a.minutes,
        seed: a.seed,
        startup_s: mesh.startup.as_secs_f64(),
        churn_s: churn_secs,
        settle_s: settled,
        counts: &c.counts.0,
        errors: &c.errors,
        probes: &probes,
        base: &base,
        mid: mid.as_ref(),
        after: &after,
        pending: &ids.pending,
        allocated: &ids.allocated,
        collected: &ids.collected,
        mem: &mem,
        failures: &failures,
        rss_tol: (RSS_TOL_PCT, RSS_TOL_KIB, FD_TOL),
    };
    r.print();
    let path = report::write_json(&r.json())?;
    println!("Results: {}", path.display());
    Ok(failures)
}
