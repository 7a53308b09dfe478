//! The eBPF datapath: C programs, pinned maps and their Rust mirrors.
