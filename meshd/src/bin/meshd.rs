//! meshd: the ironmesh node agent. See `ironmesh_meshd::agent::cli`.

fn main() -> std::process::ExitCode {
    ironmesh_meshd::agent::cli::main()
}
