//! Any bytes into the message decoder: no panic, and whatever decodes
//! re-encodes to a stable form. The first byte picks the session context.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ironmesh_fuzzing::targets::bgp::message(data);
});
