//! Runs the built `ironctl` binary.

use std::path::Path;
use std::process::{Command, Output};

fn ironctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(args)
        .output()
        .expect("run ironctl")
}

fn example(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name);
    p.to_str().unwrap().to_owned()
}

#[test]
fn good_config_prints_summary() {
    let out = ironctl(&["config", "check", &example("node-dual-homed.toml")]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node-dual-homed.toml: ok"), "{stdout}");
    assert!(
        stdout.contains("node      worker-7.rack3 in cluster prod-eu"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "bgp       AS4200000107 router-id 10.10.1.7, not listening, 3 peer(s), 2 advert(s)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("crypto    strict via wireguard (udp 51871)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("change-me"),
        "the MD5 password must never be printed: {stdout}"
    );
}

#[test]
fn bad_config_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[node]\nname = \"n\"\ncluster = \"c\"\n[bgp]\nlocal_asn = 1\nrouter_id = \"192.0.2.1\"\n\
         [[bgp.peers]]\nname = \"p\"\naddress = \"192.0.2.2\"\npeer_asn = 0\nhold_time = 1\n",
    )
    .unwrap();
    let out = ironctl(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("bad.toml: 2 error(s):"), "{stderr}");
    assert!(
        stderr.contains(
            "  bgp.peers[0].peer_asn: 0 is not a valid ASN; use 1..=4294967295 or \"any\""
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("  bgp.peers[0].hold_time: 1 is not allowed"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn syntax_error_and_missing_file_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "[node\n").unwrap();
    let out = ironctl(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    let out = ironctl(&["config", "check", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent.toml")
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ironctl(&["config"]).status.code(), Some(2));
    assert_eq!(ironctl(&["bogus"]).status.code(), Some(2));
}

/// A mesh config whose local and remote etcd users read the given password files.
fn mesh_config(dir: &Path, local_pw: &Path, remote_pw: &Path) -> std::path::PathBuf {
    let file = dir.join("mesh.toml");
    std::fs::write(
        &file,
        format!(
            "[node]\nname = \"n1\"\ncluster = \"red\"\n\n\
             [mesh]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ncluster_id = 1\n\
             pod_cidr_pools = [{{ cidr = \"10.1.0.0/16\", node_mask = 24 }}]\n\n\
             [mesh.auth]\nuser = \"red\"\npassword_file = {local_pw:?}\n\n\
             [[mesh.remote_clusters]]\nname = \"blue\"\nid = 2\n\
             endpoints = [\"http://127.0.0.1:2380\"]\npod_cidrs = [\"10.2.0.0/16\"]\n\n\
             [mesh.remote_clusters.auth]\nuser = \"red-reader\"\npassword_file = {remote_pw:?}\n"
        ),
    )
    .unwrap();
    file
}

fn secret(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn password_files_are_read_with_meshds_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = secret(d, "red.password", b"s3cret-red\n", 0o600);
    let reader = secret(d, "reader.password", b"s3cret-reader\n", 0o400);
    let out = ironctl(&[
        "config",
        "check",
        mesh_config(d, &good, &reader).to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mesh.toml: ok"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "a password printed: {stdout}");

    // Readable by others, and a remote's file that is two lines: both reported, exit 1.
    let open = secret(d, "open.password", b"s3cret-open\n", 0o644);
    let two = secret(d, "two.password", b"s3cret-a\ns3cret-b\n", 0o600);
    let out = ironctl(&[
        "config",
        "check",
        mesh_config(d, &open, &two).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mesh.toml: 2 error(s):"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "  mesh.auth.password_file: {} can be read by its group or by others (mode 0644); a password file must be private: run `chmod 600 {}`",
            open.display(),
            open.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("  mesh.remote_clusters[0].auth.password_file: ")
            && stderr.contains("holds more than one line"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "a password printed: {stderr}");
    assert!(out.stdout.is_empty());

    // Too large; a FIFO (never opened: it would block); missing.
    let big = secret(d, "big.password", &[b'x'; 5000], 0o600);
    let fifo = d.join("fifo.password");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let out = ironctl(&[
        "config",
        "check",
        mesh_config(d, &big, &fifo).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has more than 4096 bytes"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "mesh.remote_clusters[0].auth.password_file: {} is not a regular file",
            fifo.display()
        )),
        "{stderr}"
    );
    let out = ironctl(&[
        "config",
        "check",
        mesh_config(d, &d.join("missing"), &good).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mesh.toml: 1 error(s):")
            && stderr.contains("mesh.auth.password_file: cannot read"),
        "{stderr}"
    );
}
