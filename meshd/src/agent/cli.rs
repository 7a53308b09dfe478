//! The `meshd` command: parse arguments, load and validate the config (before anything
//! starts), set up logs, and run the agent until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use super::{AgentConfig, default_api_socket};

#[derive(Debug, Parser)]
#[command(name = "meshd", about = "ironmesh node agent", version)]
struct Args {
    /// TOML config file with [node] and [mesh] (see configs/examples/).
    #[arg(long, short)]
    config: PathBuf,
    /// Unix socket for the gRPC API (ironctl mesh). Default: <node.state_dir>/meshd.sock.
    #[arg(long, value_name = "PATH")]
    api: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. 127.0.0.1:9180.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing env-filter syntax), e.g. "info" or "ironmesh_meshd=debug".
    #[arg(long, default_value = "info")]
    log: String,
    /// Log lines as text (for people) or JSON, one object per line (for log shippers).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = api::log::LogFormat::parse)]
    log_format: api::log::LogFormat,
}

/// The agent's settings and the config's warnings.
fn load(args: &Args) -> anyhow::Result<(AgentConfig, Vec<String>)> {
    let cfg = configs::Config::from_file(&args.config)
        .with_context(|| format!("{}", args.config.display()))?;
    // Every password file at once, with the checks `ironctl config check` runs too.
    let secrets = cfg.check_secret_files();
    if !secrets.is_empty() {
        let all: Vec<String> = secrets.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}: {}", args.config.display(), all.join("; "));
    }
    let mut agent =
        AgentConfig::from_config(&cfg).with_context(|| format!("{}", args.config.display()))?;
    agent.api_socket = Some(
        args.api
            .clone()
            .unwrap_or_else(|| default_api_socket(&cfg.node.state_dir)),
    );
    agent.metrics = args.metrics;
    Ok((agent, cfg.warnings()))
}

/// The whole `main` of meshd.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let (cfg, warnings) = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshd: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        for w in &warnings {
            println!("meshd: warning: {w}");
        }
        println!(
            "meshd: {} is valid (node {} of cluster {}, {} remote cluster(s))",
            args.config.display(),
            cfg.node,
            cfg.cluster,
            cfg.remotes.len()
        );
        return ExitCode::SUCCESS;
    }
    api::log::init(&args.log, args.log_format);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(super::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
