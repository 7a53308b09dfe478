//! Any bytes into the BFD Control packet decoder: no panic, and whatever decodes re-encodes
//! to bytes that decode to the same packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ironmesh_fuzzing::targets::bgp::bfd(data);
});
