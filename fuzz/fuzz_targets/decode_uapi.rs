//! Userspace WireGuard UAPI responses (`get=1` answers from a daemon over its Unix socket).
//! The parser must never panic, and a private key must never appear in an error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ironmesh_fuzzing::targets::crypto::uapi(data);
});
