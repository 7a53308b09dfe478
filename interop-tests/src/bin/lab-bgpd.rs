//! bgpd, built as part of the lab so interop tests run the current code (same `main`).

fn main() -> std::process::ExitCode {
    ironmesh_bgpd::cli::main()
}
