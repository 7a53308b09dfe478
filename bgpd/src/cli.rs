//! The `bgpd` command: parse arguments, load and validate the config (before any socket opens),
//! set up logs, and run the speaker until SIGINT/SIGTERM. SIGHUP reloads the config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::speaker::{RunOptions, SpeakerConfig};

#[derive(Debug, Parser)]
#[command(name = "bgpd", about = "ironmesh BGP-4 speaker", version)]
struct Args {
    /// TOML config file (see configs/examples/).
    #[arg(long, short)]
    config: PathBuf,
    /// Unix socket for the gRPC API (ironctl, meshd).
    #[arg(long, default_value = "/run/ironmesh/bgpd.sock")]
    api: PathBuf,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. 127.0.0.1:9179. Off
    /// unless given.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing env-filter syntax), e.g. "info" or "ironmesh_bgpd=debug".
    #[arg(long, default_value = "info")]
    log: String,
    /// Log lines as text (for people) or JSON, one object per line (for log shippers).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = api::log::LogFormat::parse)]
    log_format: api::log::LogFormat,
}

/// The whole `main` of bgpd (shared by the lab's copy of the binary).
pub fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bgpd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "bgpd: {} is valid ({} peers, {} adverts)",
            args.config.display(),
            cfg.peers.len(),
            cfg.adverts.len()
        );
        return ExitCode::SUCCESS;
    }
    api::log::init(&args.log, args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bgpd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        config_path: Some(args.config.clone()),
        api_socket: Some(args.api),
        metrics: args.metrics,
    };
    match rt.block_on(crate::speaker::run(cfg, opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgpd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<SpeakerConfig, String> {
    let cfg = configs::Config::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SpeakerConfig::from_config(&cfg).map_err(|e| format!("{}: {e}", path.display()))
}

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
