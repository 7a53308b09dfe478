//! etcd as a trust boundary (issue 14): each cluster's etcd on TLS with client certificates,
//! its users and roles made by the real `ironctl mesh provision`, and the meshd daemon holding
//! red's credentials refused by blue's etcd when it tries to write blue's keys.
//!
//! Two one-member etcds, red (192.0.2.21) and blue (192.0.2.31), and one node host
//! (192.0.2.11) on a switch. Red's meshd holds two credentials: user `red` for red's etcd and
//! `red-reader` for blue's (what it mirrors blue with). Each is tried against blue's etcd as
//! if it were meshd's local etcd; etcd refuses, meshd stops with an error naming the user and
//! `mesh.auth.user`, and blue's etcd holds no key afterwards. The same meshd config with
//! red's own etcd registers the node: the refusals are etcd's RBAC, not a broken config.

use std::path::Path;
use std::time::{Duration, Instant};

use interop_tests::cmd::wait_for;
use interop_tests::etcd_auth::{EtcdAuthLab, NodeCreds, password_path};
use interop_tests::mesh::Bins;
use interop_tests::*;

/// A meshd config for node `node` of `cluster` whose local etcd is `etcd` (https URL), logging
/// in with `creds`' client certificate as `user` with the password in `password_file`.
fn config(
    host: &Host,
    node: &str,
    cluster: &str,
    id: u16,
    etcd: &str,
    creds: &NodeCreds,
    (user, password_file): (&str, &Path),
) -> String {
    format!(
        "[node]\nname = \"{node}\"\ncluster = \"{cluster}\"\nstate_dir = {state:?}\n\n\
         [mesh]\netcd_endpoints = [\"{etcd}\"]\ncluster_id = {id}\nlease_ttl = 4\n\
         node_ipv4 = \"192.0.2.11\"\n\
         pod_cidr_pools = [{{ cidr = \"10.{id}.0.0/16\", node_mask = 24 }}]\n\n\
         [mesh.tls]\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n\n\
         [mesh.auth]\nuser = \"{user}\"\npassword_file = {password_file:?}\n",
        state = host.path(&format!("state-{node}")),
        ca = creds.ca,
        cert = creds.cert.cert,
        key = creds.cert.key,
    )
}

fn spawn(host: &Host, meshd: &Path, name: &str, toml: &str) -> Process {
    let conf = host.path(&format!("{name}.toml"));
    std::fs::write(&conf, toml).unwrap();
    let args = vec![
        "--config".to_string(),
        conf.display().to_string(),
        "--api".into(),
        host.path(&format!("{name}.sock")).display().to_string(),
    ];
    host.spawn(name, &meshd.display().to_string(), &args)
        .unwrap()
}

/// Every key of the etcd (as the lab's root), one per line.
fn all_keys(etcd: &EtcdCluster) -> Vec<String> {
    etcd.etcdctl(0, &["get", "", "--prefix", "--keys-only"])
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Waits until `p` exited; returns its log.
fn exited(p: &Process, what: &str) -> String {
    let log = wait_for(
        what,
        Duration::from_secs(30),
        Duration::from_millis(100),
        |_| Ok((!p.is_running()).then(|| p.log_tail(20_000))),
    );
    log.unwrap_or_else(|e| panic!("{e}; log: {}", p.log_tail(5000)))
}

#[test]
fn etcd_mesh_red_meshd_cannot_write_blue_keys_rbac_through_its_own_code_path() {
    let bins = Bins::build().unwrap();
    let lab = Lab::new("rbac").unwrap();
    let sw = lab.switch("sw").unwrap();
    let (red_h, blue_h, node) = (
        lab.host("red-e").unwrap(),
        lab.host("blue-e").unwrap(),
        lab.host("n").unwrap(),
    );
    lab.attach(&red_h, &["192.0.2.21/24"], &sw).unwrap();
    lab.attach(&blue_h, &["192.0.2.31/24"], &sw).unwrap();
    lab.attach(&node, &["192.0.2.11/24"], &sw).unwrap();
    let auth = EtcdAuthLab::new(&lab.dir().join("secrets")).unwrap();
    let start = |h: &Host, cluster: &str, ip: &str| {
        let ip = ip.parse().unwrap();
        EtcdCluster::start_tls(&[(h, ip)], auth.etcd_tls(cluster, &[ip]).unwrap()).unwrap()
    };
    let t = Instant::now();
    let (red, blue) = std::thread::scope(|s| {
        let r = s.spawn(|| start(&red_h, "red", "192.0.2.21"));
        let b = s.spawn(|| start(&blue_h, "blue", "192.0.2.31"));
        (r.join().unwrap(), b.join().unwrap())
    });
    eprintln!("both etcds up in {:?}", t.elapsed());

    // The real command, as an operator runs it; a second run changes nothing.
    let t = Instant::now();
    let out = auth
        .provision(&bins.ironctl, &red_h, &red, "red", &["blue"])
        .unwrap();
    eprintln!("red provisioned in {:?}:\n{out}", t.elapsed());
    for line in [
        "user/root created",
        "role/ironmesh-red created",
        "user/red created",
        "role/ironmesh-red-read created",
        "user/blue-reader created",
        "auth enabled",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line:?} missing in:\n{out}"
        );
    }
    let out = auth
        .provision(&bins.ironctl, &blue_h, &blue, "blue", &["red"])
        .unwrap();
    assert!(out.contains("user/red-reader created"), "{out}");
    let again = auth
        .provision(&bins.ironctl, &blue_h, &blue, "blue", &["red"])
        .unwrap();
    assert!(
        again
            .lines()
            .all(|l| l.ends_with(" unchanged") || l == "auth unchanged (enabled)"),
        "a second provision changed something:\n{again}"
    );
    assert!(again.contains("user/red-reader unchanged"), "{again}");

    // Auth is on: a client with a CA-signed certificate but no user gets nothing.
    let anon = auth.node_creds("anon").unwrap();
    let denied = blue_h.exec(
        "env",
        &[
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints=https://192.0.2.31:2379",
            &format!("--cacert={}", anon.ca.display()),
            &format!("--cert={}", anon.cert.cert.display()),
            &format!("--key={}", anon.cert.key.display()),
            "put",
            "ironmesh/v1/clusters/blue/x",
            "y",
        ],
    );
    assert!(
        denied.is_err(),
        "an unknown certificate wrote to blue's etcd"
    );

    // Password rotation. A new password in red-reader's file: a plain provision leaves etcd's
    // (it cannot tell that they differ); --rotate-passwords sets it, and blue's own user's, on
    // every run, never root's. Checked by logging in to blue's etcd with each password.
    let reader_file = password_path(&auth.dir, "blue", "red-reader");
    let read_pw = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    let old_pw = read_pw(&reader_file);
    std::fs::remove_file(&reader_file).unwrap();
    interop_tests::pki::password_file(&reader_file).unwrap();
    let new_pw = read_pw(&reader_file);
    assert_ne!(old_pw, new_pw);
    let anon_ca = format!("--cacert={}", anon.ca.display());
    let anon_cert = format!("--cert={}", anon.cert.cert.display());
    let anon_key = format!("--key={}", anon.cert.key.display());
    // Whether red-reader logs in with `pw` and reads blue's prefix (the password goes to
    // etcdctl in its environment, not on a command line, and no output is printed).
    let reads_with = |pw: &str| {
        let pw = pw.to_string();
        let (ca, cert, key) = (anon_ca.clone(), anon_cert.clone(), anon_key.clone());
        blue_h
            .in_netns(move || {
                std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .env("ETCDCTL_USER", format!("red-reader:{pw}"))
                    .args([
                        "--endpoints=https://192.0.2.31:2379",
                        "--command-timeout=3s",
                        &ca,
                        &cert,
                        &key,
                        "get",
                        "ironmesh/v1/clusters/blue/",
                        "--prefix",
                        "--keys-only",
                    ])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .unwrap()
    };
    assert!(
        reads_with(&old_pw) && !reads_with(&new_pw),
        "before any rotation"
    );
    let plain = auth
        .provision(&bins.ironctl, &blue_h, &blue, "blue", &["red"])
        .unwrap();
    assert!(plain.contains("user/red-reader unchanged"), "{plain}");
    assert!(
        reads_with(&old_pw) && !reads_with(&new_pw),
        "a provision without --rotate-passwords changed a password"
    );
    for run in 0..2 {
        let rotated = auth
            .provision_with(
                &bins.ironctl,
                &blue_h,
                &blue,
                "blue",
                &["red"],
                &["--rotate-passwords"],
            )
            .unwrap();
        eprintln!("rotation {run}:\n{rotated}");
        for line in [
            "user/root unchanged",
            "user/blue rotated",
            "user/red-reader rotated",
            "auth unchanged (enabled)",
        ] {
            assert!(
                rotated.lines().any(|l| l == line),
                "{line:?} missing in:\n{rotated}"
            );
        }
        assert!(!rotated.contains(&new_pw) && !rotated.contains(&old_pw));
        assert!(
            reads_with(&new_pw) && !reads_with(&old_pw),
            "after rotation {run}: the new password logs in, the old one no longer"
        );
    }

    let creds = auth.node_creds("red").unwrap();
    let dir = &auth.dir;
    let red_pw = password_path(dir, "red", "red");
    let reader_pw = password_path(dir, "blue", "red-reader");
    let blue_url = "https://192.0.2.31:2379";
    let before = all_keys(&blue);
    assert!(
        before.iter().all(|k| !k.starts_with("ironmesh/")),
        "{before:?}"
    );

    // 1. red's meshd user against blue's etcd, as a blue node: blue's etcd has no such user.
    let p = spawn(
        &node,
        &bins.meshd,
        "as-red-user",
        &config(
            &node,
            "evil1",
            "blue",
            2,
            blue_url,
            &creds,
            ("red", &red_pw),
        ),
    );
    let t = Instant::now();
    let log = exited(&p, "meshd with red's user on blue's etcd to stop");
    eprintln!("refused in {:?}", t.elapsed());
    assert!(
        log.contains("mesh.auth: etcd authentication failed for user \"red\""),
        "{log}"
    );

    // 2. red's reader of blue (a valid user there) as a blue node: it may read blue's keys,
    //    so meshd connects, and its first write (the PodCIDR transaction) is refused.
    let p = spawn(
        &node,
        &bins.meshd,
        "as-reader-blue",
        &config(
            &node,
            "evil2",
            "blue",
            2,
            blue_url,
            &creds,
            ("red-reader", &reader_pw),
        ),
    );
    let log = exited(&p, "meshd with red's reader as a blue node to stop");
    assert!(log.contains("connected to the local etcd"), "{log}");
    assert!(
        log.contains("the local etcd refused user \"red-reader\" on cluster blue's keys"),
        "{log}"
    );
    // The refusal names the user, the operation (a write) and the fix.
    assert!(
        log.contains("etcd denied user \"red-reader\" the write of"),
        "{log}"
    );
    assert!(log.contains("(txn: PermissionDenied"), "{log}");
    assert!(
        log.contains("may write only its own cluster's prefix"),
        "{log}"
    );
    assert!(log.contains("permission denied"), "{log}");
    assert!(log.contains("mesh.auth.user"), "{log}");

    // 3. The same user as a red node in blue's etcd: it may not even read red's prefix there.
    let p = spawn(
        &node,
        &bins.meshd,
        "as-reader-red",
        &config(
            &node,
            "evil3",
            "red",
            1,
            blue_url,
            &creds,
            ("red-reader", &reader_pw),
        ),
    );
    let log = exited(&p, "meshd with red's reader as a red node to stop");
    assert!(
        log.contains("the local etcd refused user \"red-reader\" on cluster red's keys"),
        "{log}"
    );
    // A read, named as one (not as a write), with the prefix it asked for.
    assert!(
        log.contains(
            "etcd denied user \"red-reader\" the read of prefix \"ironmesh/v1/clusters/red/\""
        ),
        "{log}"
    );
    assert!(log.contains("do not grant reading it"), "{log}");
    assert!(!log.contains("may write only"), "{log}");

    let after = all_keys(&blue);
    assert_eq!(after, before, "blue's etcd changed: {after:?}");
    // No password in any log.
    for f in [&red_pw, &reader_pw] {
        let pw = std::fs::read_to_string(f).unwrap();
        assert!(!log.contains(pw.trim()), "a password in meshd's log");
    }

    // The same config with red's own etcd works: the node registers under red's prefix.
    let p = spawn(
        &node,
        &bins.meshd,
        "red-node",
        &config(
            &node,
            "n1",
            "red",
            1,
            "https://192.0.2.21:2379",
            &creds,
            ("red", &red_pw),
        ),
    );
    wait_for(
        "red/n1's node record in red's etcd",
        Duration::from_secs(30),
        Duration::from_millis(200),
        |_| {
            assert!(p.is_running(), "meshd stopped: {}", p.log_tail(5000));
            Ok(red.get(0, "ironmesh/v1/clusters/red/nodes/n1")?.map(drop))
        },
    )
    .unwrap();
    p.terminate();
}
