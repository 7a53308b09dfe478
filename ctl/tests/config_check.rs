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
