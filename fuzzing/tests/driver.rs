//! The driver end to end: a target that crashes is reported with its name and the file that
//! holds the input, and the run exits 1; a panic and an abort (which kills the worker) alike.

use std::process::Command;

fn run(target: &str, crash_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ironmesh-fuzz"))
        .args([
            target,
            "bfd_packet",
            "--runs",
            "200",
            "--seed",
            "1",
            "--crash-dir",
        ])
        .arg(crash_dir)
        .env("IRONMESH_FUZZ_SELFTEST", "1")
        .output()
        .expect("runs")
}

#[test]
fn a_crash_is_saved_named_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    for (target, why) in [("selftest_panic", "panic"), ("selftest_abort", "signal 6")] {
        let out = run(target, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("CRASH in target {target} (")),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{stderr}");
        // The file named holds the mutated input, with its hex beside it.
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("  {target}: ")))
            .unwrap_or_else(|| panic!("no summary line: {stderr}"));
        let file = line
            .trim_start_matches(&format!("  {target}: "))
            .split(" (")
            .next()
            .unwrap();
        let input = std::fs::read(file).unwrap();
        assert_ne!(input, b"seed");
        let hex = std::fs::read_to_string(format!("{file}.hex")).unwrap();
        assert_eq!(hex.trim().len(), input.len() * 2);
        // The other target of the run still ran, and did not crash.
        assert!(String::from_utf8_lossy(&out.stdout).contains("bfd_packet       ok:"));
        assert!(!stderr.contains("CRASH in target bfd_packet"));
    }
}

#[test]
fn the_list_has_every_target_and_no_selftest() {
    let out = Command::new(env!("CARGO_BIN_EXE_ironmesh-fuzz"))
        .arg("--list")
        .env_remove("IRONMESH_FUZZ_SELFTEST")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().count() >= 10, "{list}");
    assert!(!list.contains("selftest"));
}
