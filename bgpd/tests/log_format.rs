//! `--log-format`: bgpd takes `text` or `json` (the setup is meshd's, `api::log`, whose JSON
//! lines meshd's tests check) and refuses anything else naming the choices.

use std::process::Command;

#[test]
fn an_unknown_log_format_is_refused_naming_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd"))
        .args(["--config", "/nonexistent.toml", "--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format") && err.contains("\"text\" or \"json\""),
        "{err}"
    );
    // A good format passes the parser: the error is then the missing config file.
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd"))
        .args([
            "--config",
            "/nonexistent.toml",
            "--log-format",
            "json",
            "--check",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}
