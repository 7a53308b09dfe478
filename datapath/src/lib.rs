//! The eBPF datapath: C programs, pinned maps and their Rust mirrors.
//!
//! For now: the IP cache map layout ([`ipcache`], mirroring `bpf/ironmesh.h`)
//! and the bpffs pin root ([`pin`]).

pub mod ipcache;
pub mod pin;

/// Path of the shared C header, for build scripts and tests.
pub const HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/ironmesh.h");
