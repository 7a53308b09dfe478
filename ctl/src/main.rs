//! ironctl, the operator's CLI. Exit codes: 0 success, 1 failure (an invalid config, an
//! unreachable daemon, an API error), 2 usage.

mod bgp;
mod encryption;
mod mesh;
mod monitor;
mod objects;
mod observe;
mod summary;
mod table;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use configs::{Config, ConfigError};

#[derive(Debug, Parser)]
#[command(name = "ironctl", version, about = "Operate ironmesh nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with node configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and drive bgpd over its API: peers, routes, adverts, drain.
    Bgp(bgp::BgpArgs),
    /// Inspect meshd over its API: mesh status, nodes, identities, services of every cluster.
    Mesh(mesh::MeshArgs),
    /// This node's encryption via meshd: mode, key age, WireGuard peers, handshakes.
    Encryption(encryption::EncryptionArgs),
    /// Follow the datapath's drop, policy-verdict and trace events, like `hubble observe`
    /// (where meshd keeps flow records, datapath.flows, it reads them: use `observe`).
    Monitor(monitor::MonitorArgs),
    /// A node's flow records from meshd (datapath.flows), filtered like `hubble observe`.
    Observe(observe::ObserveArgs),
    /// Apply manifests (Namespace, Service, NetworkPolicy, IPPool, BGPAdvertisement) as `kubectl apply -f`.
    Apply(objects::ApplyArgs),
    /// List resources like `kubectl get`: svc, netpol, ns, ippool, bgpadv, pods.
    Get(objects::GetArgs),
    /// Delete resources by manifest (-f) or by KIND NAME.
    Delete(objects::DeleteArgs),
    /// Show one resource in detail: backends, selected pods, conditions.
    Describe(objects::DescribeArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate a config file; print a summary, or every error (exit 1).
    Check {
        /// Path of the TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(ConfigCommand::Check { file }) => check(&file),
        Command::Mesh(args) => match mesh::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Encryption(args) => match encryption::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Observe(args) => match observe::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Monitor(args) => match monitor::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironctl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Apply(args) => done(objects::apply(args)),
        Command::Get(args) => done(objects::get(args)),
        Command::Delete(args) => done(objects::delete(args)),
        Command::Describe(args) => done(objects::describe(args)),
        Command::Bgp(args) => match bgp::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ironctl: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// kubectl prints its own "error: ..." prefixes: the message goes out as it is.
fn done(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::from_file(file) {
        Ok(config) => {
            // The etcd password files, read with meshd's own checks (private regular file,
            // bounded, one line): a config meshd would refuse at start does not pass here.
            let secrets = config.check_secret_files();
            if !secrets.is_empty() {
                eprintln!("{}: {} error(s):", file.display(), secrets.len());
                for e in &secrets {
                    eprintln!("  {e}");
                }
                return ExitCode::FAILURE;
            }
            print!("{}", summary::render(file, &config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            let shown = file.display();
            match &e {
                ConfigError::Invalid(list) => {
                    eprintln!("{shown}: {} error(s):", list.len());
                    for err in list {
                        eprintln!("  {err}");
                    }
                }
                other => eprintln!("{shown}: {other}"),
            }
            ExitCode::FAILURE
        }
    }
}
