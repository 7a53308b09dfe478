//! `ironctl mesh provision`: one cluster's etcd users and roles (meshd's
//! `kvstore::auth::provision`), then auth on. Run once per cluster against that cluster's
//! etcd, again whenever a remote cluster joins; it changes nothing that exists, unless
//! `--rotate-passwords` asks it to set the passwords of the users that exist from their files.
//!
//! ```text
//! ironctl mesh provision --cluster red --endpoints https://192.0.2.21:2379 \
//!     --cacert ca.pem --cert root.pem --key root-key.pem \
//!     --root-password-file root.password --password-file red.password \
//!     --reader blue=blue-reader.password
//! user/root created
//! role/root created
//! role/ironmesh-red created
//! user/red created
//! role/ironmesh-red-read created
//! user/blue-reader created
//! auth enabled
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use common::ClusterName;
use ironmesh_meshd::kvstore::auth::{AuthPlan, provision};
use ironmesh_meshd::kvstore::{KvConfig, KvError, KvStore, TlsFiles};

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The cluster whose etcd this is: its meshd user (named like the cluster) may write only
    /// `ironmesh/v1/clusters/<cluster>/` (and the local mirrors of remote clusters).
    #[arg(long)]
    cluster: String,
    /// The cluster's etcd client URLs, comma-separated (https:// with --cacert).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The CA that signed etcd's server certificates (for https:// endpoints).
    #[arg(long, value_name = "PATH")]
    cacert: Option<PathBuf>,
    /// Client certificate, when etcd runs with --client-cert-auth (with --key).
    #[arg(long, value_name = "PATH", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key (with --cert).
    #[arg(long, value_name = "PATH", requires = "cert")]
    key: Option<PathBuf>,
    /// The password of etcd's `root` user (set on the first run; logged in with afterwards).
    /// One line, in a file only its owner can read (chmod 600).
    #[arg(long, value_name = "PATH")]
    root_password_file: PathBuf,
    /// The password of the cluster's meshd user (chmod 600; meshd's mesh.auth.password_file).
    #[arg(long, value_name = "PATH")]
    password_file: PathBuf,
    /// A remote cluster that reads this cluster: REMOTE=PASSWORD_FILE makes user
    /// `<REMOTE>-reader`, which may only read this cluster's keys (the remote's
    /// mesh.remote_clusters[].auth). Repeat for each remote.
    #[arg(long, value_name = "REMOTE=PATH")]
    reader: Vec<String>,
    /// Also set the password of the cluster's meshd user and of each --reader that exists
    /// already, from its file (new users always get theirs). etcd never tells a password, so
    /// each is reported `rotated` whether it differed or not. Root's password is not changed.
    /// meshd reads its password file at start: write the new files, rotate, then restart the
    /// meshds of this cluster (own user) and of the remotes (readers).
    #[arg(long)]
    rotate_passwords: bool,
    /// How long to wait for etcd to answer.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    timeout: u64,
}

/// Runs the command; the error is the message to print.
pub fn run(args: ProvisionArgs) -> Result<(), String> {
    let cluster = ClusterName::new(&args.cluster).map_err(|e| format!("--cluster: {e}"))?;
    let secret = |path: &PathBuf, flag: &str| {
        configs::read_secret_file(path, flag)
            .map(|s| s.expose().to_string())
            .map_err(|e| e.to_string())
    };
    let root_password = secret(&args.root_password_file, "--root-password-file")?;
    let meshd_password = secret(&args.password_file, "--password-file")?;
    let mut readers = Vec::new();
    for r in &args.reader {
        let (name, path) = r.split_once('=').ok_or_else(|| {
            format!("--reader {r:?}: write REMOTE=PASSWORD_FILE, e.g. blue=/etc/ironmesh/blue-reader.password")
        })?;
        let remote = ClusterName::new(name).map_err(|e| format!("--reader {r:?}: {e}"))?;
        if remote == cluster {
            return Err(format!(
                "--reader {r:?}: {remote} is the cluster being provisioned; list only remote clusters"
            ));
        }
        if readers.iter().any(|(n, _)| *n == remote) {
            return Err(format!("--reader {r:?}: {remote} is listed twice"));
        }
        let password = secret(&PathBuf::from(path), &format!("--reader {name}"))?;
        readers.push((remote, password));
    }
    let mut cfg = KvConfig::new(args.endpoints.clone());
    cfg.connect_timeout = Duration::from_secs(args.timeout.max(1));
    cfg.op_timeout = Duration::from_secs(args.timeout.max(1));
    if let Some(ca) = &args.cacert {
        cfg.tls = Some(TlsFiles {
            ca: ca.clone(),
            client_cert: args.cert.clone().zip(args.key.clone()),
            server_name: None,
        });
    } else if args.cert.is_some() {
        return Err("--cert needs --cacert (the CA of etcd's server certificates)".into());
    }
    let plan = AuthPlan {
        cluster,
        root_password: root_password.clone(),
        meshd_password,
        readers,
        rotate_passwords: args.rotate_passwords,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let (store, was_enabled) = connect(&cfg, &root_password).await?;
        let done = provision(&store, &plan)
            .await
            .map_err(|e| format!("provisioning {}: {e}", store.endpoints()))?;
        for p in &done {
            println!("{}/{} {}", p.kind, p.name, p.outcome.as_str());
        }
        println!(
            "{}",
            if was_enabled {
                "auth unchanged (enabled)"
            } else {
                "auth enabled"
            }
        );
        Ok(())
    })
}

/// Logs in as root; before the first run (auth still off) connects without a user.
/// Returns the store and whether auth was on already.
async fn connect(cfg: &KvConfig, root_password: &str) -> Result<(KvStore, bool), String> {
    let mut as_root = cfg.clone();
    as_root.user = Some(("root".into(), root_password.to_string()));
    match KvStore::connect(&as_root).await {
        Ok(s) => Ok((s, true)),
        Err(e) if auth_off(&e) => KvStore::connect(cfg)
            .await
            .map(|s| (s, false))
            .map_err(|e| e.to_string()),
        Err(KvError::Auth { endpoints, .. }) => Err(format!(
            "etcd at {endpoints} refused user root with the password of --root-password-file: auth is on and root has another password; give the file root was provisioned with"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn auth_off(e: &KvError) -> bool {
    e.to_string().contains("authentication is not enabled")
}
