//! bgpd: the ironmesh BGP-4 speaker. See `ironmesh_bgpd::cli`.

fn main() -> std::process::ExitCode {
    ironmesh_bgpd::cli::main()
}
