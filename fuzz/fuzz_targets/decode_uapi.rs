//! Userspace WireGuard UAPI responses (`get=1` answers from a daemon over its Unix socket).
//! The parser must never panic, and a private key must never appear in an error.
#![no_main]

use ironmesh_crypto::wireguard::uapi::{self, ResponseParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Whole responses, as the tests use it.
    if let Err(e) = uapi::parse_get(text) {
        let msg = e.to_string();
        // The value of a private_key line must not reach the error (unless the same text also
        // stands on some other line, which the error may quote).
        let others: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("private_key="))
            .collect();
        for line in text.lines() {
            if let Some(secret) = line.strip_prefix("private_key=") {
                // A key-shaped secret (64 hex digits) cannot be in the fixed texts by chance.
                let key_shaped =
                    secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
                let elsewhere = others.iter().any(|l| l.contains(secret));
                assert!(
                    !key_shaped || elsewhere || !msg.contains(secret),
                    "private key echoed in an error: {msg}"
                );
            }
        }
    }
    let _ = uapi::parse_set_response(text);
    // Line by line, as the socket reader feeds it (lines of any length, any split).
    let mut p = ResponseParser::new();
    for line in text.split('\n') {
        match p.feed_line(line) {
            Ok(true) | Err(_) => break,
            Ok(false) => {}
        }
    }
    let _ = p.finish();
});
