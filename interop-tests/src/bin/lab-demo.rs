//! The lab demo: two clusters meshed over BGP and WireGuard (see `interop_tests::mesh`), and a
//! short tour of it: the ToRs' sessions and routes (the VIP's ECMP paths), the mesh and
//! encryption status as `ironctl` shows them, a cross-cluster pod-to-pod request, one denied
//! by policy with the datapath monitor's explanation, the global service, and the VIP reached
//! from an external client. `--keep` leaves the lab up until Ctrl-C.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use interop_tests::mesh::services::{self, LB_PORT, LB_VIP, WEB_VIP};
use interop_tests::mesh::{APP_PORT, Bins, MeshLab, Node, Side, probe};

fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let check = |step: &str| -> Result<()> {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted during {step}; the lab is torn down");
        }
        Ok(())
    };
    let bins = Bins::find()?;
    println!("ironmesh lab demo: two clusters, two ToRs, an external client (about 10 s) ...");
    let started = Instant::now();
    let mesh = match MeshLab::start_with("demo", bins, &stop) {
        Ok(m) => m,
        Err(e) if stop.load(Ordering::SeqCst) => bail!("{e} (Ctrl-C); the lab is torn down"),
        Err(e) => return Err(e.into()),
    };
    check("the start")?;
    println!("Lab up in {:.1} s.\n", mesh.startup.as_secs_f64());
    topology(&mesh);

    title("1. BGP at the ToRs");
    for side in [Side::Red, Side::Blue] {
        let tor = mesh.tor(side);
        println!(
            "{} ToR ({}): sessions",
            mesh.cluster(side).name,
            tor.daemon()
        );
        indent(&tor.show_sessions()?);
        println!("{} ToR: BGP routes", mesh.cluster(side).name);
        indent(&tor.show_routes()?);
    }
    println!(
        "The LoadBalancer VIP {LB_VIP}: BIRD has a path from each red node with a local backend, in the kernel as one ECMP route:"
    );
    indent(
        &mesh
            .red_tor
            .host()
            .ip(&["route", "show", &LB_VIP.to_string()])?,
    );
    check("the BGP tour")?;

    trust_boundary(&mesh)?;
    check("the etcd tour")?;

    title("2. The mesh, as meshd on red/n1 (then blue/n1) sees it");
    let red1 = mesh.red.node("n1");
    let api = red1.api.display().to_string();
    for what in ["status", "nodes", "identities"] {
        println!("$ ironctl mesh --meshd {api} {what}");
        indent(&mesh.ironctl(&["mesh", "--meshd", &api, what])?);
    }
    let blue_api = mesh.blue.node("n1").api.display().to_string();
    println!("$ ironctl mesh --meshd {blue_api} status");
    indent(&mesh.ironctl(&["mesh", "--meshd", &blue_api, "status"])?);

    title("3. Encryption (WireGuard, opportunistic), red/n1");
    println!("$ ironctl encryption --meshd {api} status");
    indent(&mesh.ironctl(&["encryption", "--meshd", &api, "status"])?);
    check("the mesh tour")?;

    title("4. Pod to pod across clusters");
    let client = mesh.pod(Side::Red, "n1", "client");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let tx = red1.wg_tx_bytes()?;
    let answer = probe::ask(&client.host, web.addr());
    let sent = red1.wg_tx_bytes()? - tx;
    println!(
        "red/n1/client {} -> blue/n1/web {}:{APP_PORT}: {}",
        client.ip,
        web.ip,
        show(&answer)
    );
    println!(
        "  route on red/n1: {}  WireGuard sent {sent} bytes for it",
        red1.host
            .ip(&[
                "route",
                "get",
                &web.ip.to_string(),
                "from",
                &client.ip.to_string(),
                "iif",
                &client.host_if
            ])?
            .lines()
            .next()
            .unwrap_or("")
    );
    policy_denied(&mesh)?;
    check("the pod tour")?;

    title("5. Services, applied as manifests");
    let red_file = services::RED_MANIFEST
        .rsplit_once("/../")
        .map_or(services::RED_MANIFEST, |(_, f)| f);
    println!(
        "The lab applied {red_file} (and mesh-blue.yaml on blue) with `ironctl apply -f`; meshd gave\n\
         the services their addresses and derives their backends from the pods their selectors match:"
    );
    for args in [
        &["get", "svc", "-o", "wide"][..],
        &["get", "ippool"],
        &["get", "pods", "-A"],
    ] {
        println!("$ ironctl {} --meshd {api}", args.join(" "));
        let mut full = args.to_vec();
        full.extend(["--meshd", &api]);
        indent(&mesh.ironctl(&full)?);
    }
    println!("default/web is global with affinity local (backends in both clusters):");
    for _ in 0..2 {
        let a = probe::ask(&client.host, (WEB_VIP, APP_PORT).into());
        println!("  red/n1/client -> {WEB_VIP}:{APP_PORT}: {}", show(&a));
    }
    vip_from_outside(&mesh)?;
    println!(
        "\nTour done {:.1} s after the start.",
        started.elapsed().as_secs_f64()
    );

    if keep {
        explore(&mesh);
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("Ctrl-C: tearing the lab down.");
    } else {
        println!("Run `scripts/demo --keep` to keep the lab up and explore it.");
    }
    drop(mesh);
    println!("Lab torn down: no namespaces or daemons left.");
    Ok(())
}

/// Each cluster's etcd users, as `ironctl mesh provision` made them at the start, and red's
/// reader credential for blue's etcd (what red's meshd mirrors blue with) refused a write there.
fn trust_boundary(mesh: &MeshLab) -> Result<()> {
    use ironmesh_meshd::kvstore::{KvConfig, KvStore, TlsFiles};
    title("1b. etcd: TLS with client certificates, a user per cluster");
    for side in [Side::Red, Side::Blue] {
        let c = mesh.cluster(side);
        println!(
            "$ ironctl mesh provision --cluster {} --endpoints {} --cacert ... --cert ... --key ... --root-password-file ... --password-file ... --reader {}=...",
            c.name,
            c.etcd.endpoints(),
            if c.name == "red" { "blue" } else { "red" }
        );
        indent(&c.provisioned);
    }
    let (red, blue) = (&mesh.red, &mesh.blue);
    let password = std::fs::read_to_string(interop_tests::etcd_auth::password_path(
        &mesh.auth.dir,
        blue.name,
        "red-reader",
    ))
    .context("reading red-reader's password file")?;
    let mut kv = KvConfig::new(blue.etcd.members.iter().map(|m| m.client_url()));
    kv.user = Some(("red-reader".into(), password.trim().to_string()));
    kv.probe_prefix = "ironmesh/v1/clusters/blue/".into();
    kv.tls = Some(TlsFiles {
        ca: red.creds.ca.clone(),
        client_cert: Some((red.creds.cert.cert.clone(), red.creds.cert.key.clone())),
        server_name: None,
    });
    let key = "ironmesh/v1/clusters/blue/nodes/evil";
    let got = red.node("n1").host.block_on(async move {
        let store = KvStore::connect(&kv).await.map_err(|e| e.to_string())?;
        let read = store
            .list("ironmesh/v1/clusters/blue/nodes/", true)
            .await
            .map(|(kvs, _)| kvs.len())
            .map_err(|e| e.to_string());
        let write = store
            .put(key, b"{}".to_vec(), None)
            .await
            .map_err(|e| e.to_string());
        Ok::<_, String>((read, write))
    })?;
    let (read, write) = got.map_err(anyhow::Error::msg)?;
    println!("red/n1 with red-reader (red's read-only user in blue's etcd, what its mirror uses):");
    println!(
        "  read blue's nodes: {}",
        match read {
            Ok(n) => format!("{n} records"),
            Err(e) => format!("FAILED ({e})"),
        }
    );
    match write {
        Err(e) => println!("  write {key}: refused ({e})"),
        Ok(()) => bail!("red-reader wrote {key} in blue's etcd"),
    }
    Ok(())
}

fn title(t: &str) {
    println!("\n== {t} ==");
}

fn indent(text: &str) {
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {l}");
    }
}

fn show(r: &std::result::Result<String, String>) -> String {
    match r {
        Ok(a) => format!("answered by {a}"),
        Err(e) => format!("FAILED ({e})"),
    }
}

fn topology(mesh: &MeshLab) {
    let names = |side| {
        mesh.cluster(side)
            .nodes
            .iter()
            .map(|n: &Node| format!("{} {} (AS {}, pods {})", n.name, n.ip, n.asn, n.pod_cidr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("Topology (lab {}):", mesh.lab.id());
    println!("  client 172.16.1.10 -- red ToR: BIRD 2, AS 65010 ==eBGP== blue ToR: FRR, AS 65020");
    println!(
        "  red  (cluster 1, 3-member etcd 192.0.2.21-23):    {}",
        names(Side::Red)
    );
    println!(
        "  blue (cluster 2, 3-member etcd 198.51.100.21-23): {}",
        names(Side::Blue)
    );
    println!("  every node: bgpd (eBGP to its ToR, routes into the kernel), meshd, wireguard-go");
    println!(
        "  each etcd: TLS with client certificates, users and roles by `ironctl mesh provision`:\n    \
         red's meshd (user red) writes only red's keys, reads blue's as red-reader (read-only)"
    );
}

/// red/n2/other -> blue/n1/web is denied by blue web's NetworkPolicy (in mesh-blue.yaml,
/// applied with `ironctl apply`); the datapath monitor on blue/n1 explains the drop.
fn policy_denied(mesh: &MeshLab) -> Result<()> {
    let other = mesh.pod(Side::Red, "n2", "other");
    let web = mesh.pod(Side::Blue, "n1", "web");
    let blue1 = mesh.blue.node("n1");
    let api = blue1.api.display().to_string();
    println!("$ ironctl get netpol --meshd {api}");
    indent(&mesh.ironctl(&["get", "netpol", "--meshd", &api])?);
    let monitor = Command::new(&mesh.bins.ironctl)
        .args(["monitor", "--pin-root"])
        .arg(blue1.dp.pin_root())
        .arg("--endpoints")
        .arg(&blue1.cni_dir)
        .args(["--meshd", &api])
        .args(["--type", "drop", "--count", "1", "--timeout", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ironctl monitor")?;
    std::thread::sleep(Duration::from_millis(300));
    let answer = probe::ask(&other.host, web.addr());
    println!(
        "red/n2/other {} -> blue/n1/web {}:{APP_PORT}: {}",
        other.ip,
        web.ip,
        match &answer {
            Ok(a) => format!("answered by {a} (policy NOT enforced!)"),
            Err(e) => format!("denied ({e})"),
        }
    );
    let out = monitor.wait_with_output()?;
    println!(
        "$ ironctl monitor --pin-root {} --endpoints {} --meshd {api} --type drop   (on blue/n1)",
        blue1.dp.pin_root().display(),
        blue1.cni_dir.display()
    );
    indent(&String::from_utf8_lossy(&out.stdout));
    println!(
        "  (id {} is red/n2's pod, named by meshd's identities of every cluster; id {} blue's web)",
        other.identity, web.identity
    );
    Ok(())
}

/// default/front's VIP from the external client: ECMP at the ToR, translated by the datapath of
/// the red node the flow reached (its external entry, conntrack), nothing configured by the lab.
fn vip_from_outside(mesh: &MeshLab) -> Result<()> {
    println!("default/front's VIP from the external client (ECMP over red/n1 and red/n2):");
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let mut example = None;
    for _ in 0..8 {
        let mut flow = probe::Flow::open(&mesh.client, (LB_VIP, LB_PORT).into());
        let a = flow.as_mut().map_err(|e| e.clone()).and_then(|f| f.ask());
        *seen.entry(show(&a)).or_default() += 1;
        if let (Ok(f), None) = (&flow, &example) {
            for n in &mesh.red.nodes {
                if let Some(v) = services::vip_flow(n, f.local)? {
                    example = Some((f.local, n, v));
                }
            }
        }
    }
    for (answer, n) in &seen {
        println!("  client -> {LB_VIP}:{LB_PORT}: {answer} ({n} of 8 connections)");
    }
    match example {
        Some((c, n, v)) => println!(
            "  translated by the datapath: red/{}'s conntrack has {c} -> {LB_VIP}:{LB_PORT} \
             DNATed to {} (external entry id {}{}), no SNAT",
            n.name,
            v.backend,
            v.svc_id,
            if v.external {
                ", reply reverse-NATed in pod_egress"
            } else {
                ""
            },
        ),
        None => println!("  (no red node's datapath has a conntrack entry for these flows!)"),
    }
    for n in &mesh.red.nodes {
        let s = services::stand_ins(n)?;
        println!(
            "  red/{}: VIP address or nftables NAT: {}",
            n.name,
            if s.is_empty() {
                "none".into()
            } else {
                s.join("; ")
            }
        );
    }
    Ok(())
}

fn explore(mesh: &MeshLab) {
    println!("\nThe lab stays up until Ctrl-C. Explore it (as root, from the repository root):");
    for side in [Side::Red, Side::Blue] {
        println!("  {}", mesh.tor(side).cli_hint());
    }
    for n in mesh.nodes() {
        let api = n.api.display();
        println!("  # {}/{} (netns {})", n.cluster, n.name, n.host.netns());
        println!("  target/debug/ironctl mesh --meshd {api} status");
        println!("  target/debug/ironctl encryption --meshd {api} status");
        println!(
            "  target/debug/ironctl bgp --bgpd {} routes",
            n.bgpd.api.display()
        );
        println!(
            "  target/debug/ironctl monitor --pin-root {} --endpoints {}",
            n.dp.pin_root().display(),
            n.cni_dir.display()
        );
        println!(
            "  ip netns exec {} ip route; ip -n {} rule",
            n.host.netns(),
            n.host.netns()
        );
    }
    let c = mesh.pod(Side::Red, "n1", "client");
    println!(
        "  ip netns exec {} ping {}    # red client -> blue web",
        c.host.netns(),
        mesh.pod(Side::Blue, "n1", "web").ip
    );
    for side in [Side::Red, Side::Blue] {
        let c = mesh.cluster(side);
        let m = &c.etcd.members[0];
        println!(
            "  ip netns exec {} env ETCDCTL_API=3 etcdctl --endpoints={} {} get --prefix --keys-only ironmesh/    # {}'s etcd as root (certificate CN=root)",
            m.host.netns(),
            m.client_url(),
            c.etcd.etcdctl_tls_flags().join(" "),
            c.name
        );
    }
    println!("  Configs and logs: {}", mesh.dir().display());
}
