//! Every target of `scripts/fuzz --list` (the `ironmesh-fuzzing` crate), picked by the
//! IRONMESH_FUZZ_TARGET environment variable: `scripts/fuzz --libfuzzer NAME` builds and runs it
//! on stable Rust, `IRONMESH_FUZZ_TARGET=NAME cargo +nightly fuzz run ironmesh` with cargo-fuzz.
#![no_main]

use std::sync::OnceLock;

use ironmesh_fuzzing::Target;

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("IRONMESH_FUZZ_TARGET").unwrap_or_default();
        ironmesh_fuzzing::find(&name).unwrap_or_else(|| {
            let names: Vec<&str> = ironmesh_fuzzing::all().iter().map(|t| t.name).collect();
            eprintln!("set IRONMESH_FUZZ_TARGET to one of: {}", names.join(" "));
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t = target();
    if data.len() <= t.max_len {
        (t.run)(data);
    }
});
