//! `ironmesh-cni`: called by container runtimes with CNI_* environment variables and the
//! network configuration on stdin; prints the result (or the spec's error object) on stdout.

use std::io::Read;
use std::process::ExitCode;

use ironmesh_cni::config::{CURRENT_VERSION, SUPPORTED_VERSIONS, sniff_version};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("ironmesh-cni: reading stdin: {e}");
    }
    match ironmesh_cni::plugin::run(|k| std::env::var(k).ok(), &stdin) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let version = sniff_version(&stdin)
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| CURRENT_VERSION.to_string());
            println!("{}", e.to_json(&version));
            eprintln!("ironmesh-cni: {e}");
            ExitCode::FAILURE
        }
    }
}
