//! `ironctl mesh ...`: meshd's gRPC API on its Unix socket (status, nodes, identities,
//! services of every cluster in the mesh; this cluster's network policies).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use api::mesh::mesh_client::MeshClient;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tonic::transport::Channel;

mod policy;
mod provision;
mod view;

use view::{IdentityRow, NodeRow, ServiceRow};

/// How long one API call may take before ironctl gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct MeshArgs {
    /// meshd's API socket (meshd's --api; by default <node.state_dir>/meshd.sock).
    #[arg(
        long = "meshd",
        value_name = "PATH",
        env = "IRONMESH_MESHD_SOCKET",
        default_value = "/var/lib/ironmesh/meshd.sock",
        global = true
    )]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: MeshCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables and text for people.
    Table,
    /// JSON for scripts (stable field names).
    Json,
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// This node, the local etcd, and each remote cluster: connected, stale, last sync, counts.
    Status,
    /// Nodes of every cluster (merged view).
    Nodes,
    /// Security identities (label set -> number) of every cluster.
    Identities,
    /// Services of every cluster, with the merged backends of global services.
    Services,
    /// This cluster's network policies: apply (from a JSON/TOML file), list, delete.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Create a cluster's etcd users and roles and turn etcd auth on (talks to etcd, not
    /// meshd): the cluster's meshd user writes only its cluster's keys; each remote's reader
    /// only reads them. Idempotent.
    Provision(provision::ProvisionArgs),
}

/// Runs a `mesh` command; the error is the message to print.
pub fn run(args: MeshArgs) -> Result<(), String> {
    if let MeshCommand::Provision(p) = args.command {
        return provision::run(p);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run_async(args))
}

/// Every identity meshd knows (all clusters) with its labels, within `limit`: what
/// `ironctl monitor` names remote identities by.
pub fn identities_blocking(socket: &Path, limit: Duration) -> Result<Vec<pb::Identity>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let ask = async {
            let mut c = connect(socket).await?;
            Ok(call(c.list_identities(pb::ListIdentitiesRequest {}))
                .await?
                .identities)
        };
        tokio::time::timeout(limit, ask).await.unwrap_or_else(|_| {
            Err(format!(
                "meshd at {} did not answer within {}s",
                socket.display(),
                limit.as_secs_f64()
            ))
        })
    })
}

async fn run_async(args: MeshArgs) -> Result<(), String> {
    let mut c = connect(&args.socket).await?;
    let json = args.output == Output::Json;
    let (text, value) = match args.command {
        MeshCommand::Status => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let v = view::status_view(call(c.status(pb::StatusRequest {})).await?, now);
            (view::status_text(&v), json_of(&v)?)
        }
        MeshCommand::Nodes => {
            let rows: Vec<NodeRow> = call(c.list_nodes(pb::ListNodesRequest {}))
                .await?
                .nodes
                .into_iter()
                .map(Into::into)
                .collect();
            (view::nodes_table(&rows), json_of(&rows)?)
        }
        MeshCommand::Identities => {
            let rows: Vec<IdentityRow> = call(c.list_identities(pb::ListIdentitiesRequest {}))
                .await?
                .identities
                .into_iter()
                .map(|i| IdentityRow {
                    id: i.id,
                    cluster: i.cluster,
                    labels: i.labels.into_iter().collect(),
                })
                .collect();
            (view::identities_table(&rows), json_of(&rows)?)
        }
        MeshCommand::Services => {
            let rows: Vec<ServiceRow> = call(c.list_services(pb::ListServicesRequest {}))
                .await?
                .services
                .into_iter()
                .map(Into::into)
                .collect();
            (view::services_table(&rows), json_of(&rows)?)
        }
        MeshCommand::Policy(cmd) => policy::run(&mut c, cmd).await?,
        MeshCommand::Provision(_) => unreachable!("provision runs without meshd"),
    };
    if json {
        println!("{value}");
    } else {
        print!("{text}");
    }
    Ok(())
}

fn json_of<T: Serialize + ?Sized>(v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| format!("cannot encode JSON: {e}"))
}

pub(crate) async fn connect(path: &Path) -> Result<MeshClient<Channel>, String> {
    match tokio::time::timeout(CALL_TIMEOUT, api::unix::connect(path)).await {
        Ok(Ok(ch)) => Ok(MeshClient::new(ch)),
        Ok(Err(_)) => Err(format!(
            "cannot reach meshd at {}: is meshd running? (--meshd or IRONMESH_MESHD_SOCKET; meshd's --api)",
            path.display()
        )),
        Err(_) => Err(format!(
            "meshd at {} did not answer within {}s",
            path.display(),
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// One API call with a deadline; a gRPC error becomes the server's message.
pub(crate) async fn call<T>(
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if s.message().is_empty() => Err(format!("meshd: {}", s.code().description())),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err(format!(
            "meshd did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}
