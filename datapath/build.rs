//! Compiles every `bpf/*.bpf.c` with clang for the BPF target into OUT_DIR;
//! `src/loader.rs` embeds the objects.

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "run scripts/setup as root (Debian packages clang and libbpf-dev)";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let bpf_dir = manifest.join("bpf");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());

    // <linux/types.h> needs <asm/types.h> from the multiarch include dir.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets it");
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    for header in ["bpf/bpf_helpers.h", "bpf/bpf_endian.h"] {
        if !Path::new("/usr/include").join(header).exists() {
            fail(&format!(
                "libbpf header <{header}> not found in /usr/include; {SETUP}"
            ));
        }
    }
    if !Path::new(&multiarch).join("asm/types.h").exists() {
        fail(&format!(
            "{multiarch}/asm/types.h not found; {SETUP} (linux-libc-dev)"
        ));
    }

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", bpf_dir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".bpf.c")))
        .collect();
    sources.sort();
    for src in &sources {
        let stem = src
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let obj = out.join(stem.replace(".bpf.c", ".bpf.o"));
        let result = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .arg(format!("-I{}", bpf_dir.display()))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .output();
        match result {
            Err(e) => fail(&format!("cannot run `{clang}` ({e}); {SETUP}")),
            Ok(o) if !o.status.success() => fail(&format!(
                "clang failed on {}:\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Ok(_) => {}
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("ironmesh-datapath build: {msg}");
    panic!("ironmesh-datapath build: {msg}");
}
