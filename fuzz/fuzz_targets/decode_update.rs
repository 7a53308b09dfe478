//! UPDATE bodies behind a valid header, decoded with 2- and 4-octet AS
//! contexts: no panic, stable re-encoding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ironmesh_fuzzing::targets::bgp::update(data);
});
