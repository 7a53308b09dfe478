//! `ironctl bgp ...`: bgpd's gRPC API on its Unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::bgp as pb;
use api::bgp::bgp_client::BgpClient;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tonic::transport::Channel;

use crate::view::{self, PeerRow, RibView, RouteRow};

/// How long one API call may take before ironctl gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct BgpArgs {
    /// bgpd's API socket.
    #[arg(
        long = "bgpd",
        value_name = "PATH",
        env = "IRONMESH_BGPD_SOCKET",
        default_value = "/run/ironmesh/bgpd.sock",
        global = true
    )]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: BgpCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables and text for people.
    Table,
    /// JSON for scripts (stable field names).
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

#[derive(Debug, Subcommand)]
enum BgpCommand {
    /// Every peer: state, time in that state, prefix counts, last error.
    Peers,
    /// One peer in detail: negotiated capabilities, hold time, counters, router id, last error.
    Peer {
        /// The peer's name in the config.
        name: String,
    },
    /// Routes: the Loc-RIB, or a peer's Adj-RIB-In (--received) or Adj-RIB-Out (--advertised).
    Routes {
        /// Only routes learned from this peer (Loc-RIB), or the peer whose Adj-RIB to show.
        #[arg(long, value_name = "NAME")]
        peer: Option<String>,
        /// The peer's Adj-RIB-Out: what bgpd sends it.
        #[arg(long, requires = "peer", conflicts_with = "received")]
        advertised: bool,
        /// The peer's Adj-RIB-In: what it sent, before import policy.
        #[arg(long, requires = "peer")]
        received: bool,
        /// Only this prefix and the prefixes it covers.
        #[arg(long, value_name = "CIDR")]
        prefix: Option<String>,
        /// Only one address family.
        #[arg(long, value_enum)]
        family: Option<Family>,
    },
    /// Adverts: prefixes this node originates (PodCIDRs, VIPs).
    #[command(subcommand)]
    Advert(AdvertCommand),
    /// Re-announce every route with GRACEFUL_SHUTDOWN (RFC 8326) before a planned stop.
    Drain,
    /// Re-read bgpd's config file (as SIGHUP does); unchanged sessions stay up.
    Reload,
    /// Write an MRT TABLE_DUMP_V2 snapshot of the RIB (RFC 6396), readable by bgpdump.
    Dump {
        /// Output file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AdvertCommand {
    /// Add or replace adverts (keyed by prefix). Never resets a session.
    Add {
        /// Prefixes in CIDR notation, e.g. 203.0.113.10/32.
        #[arg(required = true, value_name = "PREFIX")]
        prefixes: Vec<String>,
        /// Community ASN:VALUE or a well-known name (no-export, graceful-shutdown...).
        #[arg(long = "community", value_name = "C")]
        communities: Vec<String>,
        /// Large community GLOBAL:LOCAL1:LOCAL2 (RFC 8092).
        #[arg(long = "large-community", value_name = "L")]
        large_communities: Vec<String>,
        /// LOCAL_PREF sent to iBGP peers.
        #[arg(long, value_name = "N")]
        local_pref: Option<u32>,
    },
    /// Withdraw adverts.
    Del {
        #[arg(required = true, value_name = "PREFIX")]
        prefixes: Vec<String>,
    },
}

/// Runs a `bgp` command; the error is the message to print.
pub fn run(args: BgpArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run_async(args))
}

async fn run_async(args: BgpArgs) -> Result<(), String> {
    let mut c = connect(&args.socket).await?;
    let json = args.output == Output::Json;
    match args.command {
        BgpCommand::Peers => {
            let peers = list_peers(&mut c, String::new()).await?;
            if json {
                print_json(&peers)
            } else {
                print!("{}", view::peers_table(&peers));
                Ok(())
            }
        }
        BgpCommand::Peer { name } => {
            let peers = list_peers(&mut c, name.clone()).await?;
            let p = peers
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| format!("no peer named {name:?}"))?;
            if json {
                print_json(&p)
            } else {
                print!("{}", view::peer_detail(&p));
                Ok(())
            }
        }
        BgpCommand::Routes {
            peer,
            advertised,
            received,
            prefix,
            family,
        } => {
            let (rib, view) = if advertised {
                (pb::RibKind::AdjOut, RibView::AdjOut)
            } else if received {
                (pb::RibKind::AdjIn, RibView::AdjIn)
            } else {
                (pb::RibKind::Loc, RibView::Loc)
            };
            let req = pb::ListRoutesRequest {
                rib: rib as i32,
                peer: peer.unwrap_or_default(),
                prefix: prefix.unwrap_or_default(),
                family: match family {
                    Some(Family::Ipv4Unicast) => "ipv4-unicast",
                    Some(Family::Ipv6Unicast) => "ipv6-unicast",
                    None => "",
                }
                .into(),
            };
            let routes: Vec<RouteRow> = call(c.list_routes(req))
                .await?
                .routes
                .into_iter()
                .map(Into::into)
                .collect();
            if json {
                print_json(&routes)
            } else {
                print!("{}", view::routes_table(&routes, view));
                Ok(())
            }
        }
        BgpCommand::Advert(AdvertCommand::Add {
            prefixes,
            communities,
            large_communities,
            local_pref,
        }) => {
            let adverts = prefixes
                .into_iter()
                .map(|prefix| pb::Advert {
                    prefix,
                    communities: communities.clone(),
                    large_communities: large_communities.clone(),
                    local_pref,
                    pool: String::new(),
                })
                .collect();
            let r = call(c.add_adverts(pb::AddAdvertsRequest { adverts })).await?;
            #[derive(Serialize)]
            struct Added {
                added: u32,
                replaced: u32,
            }
            if json {
                print_json(&Added {
                    added: r.added,
                    replaced: r.replaced,
                })
            } else {
                println!("added {}, replaced {}", r.added, r.replaced);
                Ok(())
            }
        }
        BgpCommand::Advert(AdvertCommand::Del { prefixes }) => {
            let asked = prefixes.len();
            let r = call(c.remove_adverts(pb::RemoveAdvertsRequest { prefixes })).await?;
            #[derive(Serialize)]
            struct Removed {
                removed: u32,
            }
            if json {
                print_json(&Removed { removed: r.removed })
            } else {
                if r.removed as usize == asked {
                    println!("removed {}", r.removed);
                } else {
                    println!(
                        "removed {} of {asked} (the others were not advertised)",
                        r.removed
                    );
                }
                Ok(())
            }
        }
        BgpCommand::Drain => {
            let r = call(c.drain(pb::DrainRequest {})).await?;
            #[derive(Serialize)]
            struct Drained {
                peers: u32,
            }
            if json {
                print_json(&Drained { peers: r.peers })
            } else {
                println!(
                    "draining: routes re-announced with GRACEFUL_SHUTDOWN (65535:0) to {} session(s)",
                    r.peers
                );
                Ok(())
            }
        }
        BgpCommand::Dump { file } => {
            let mut big = c.clone().max_decoding_message_size(usize::MAX);
            let r = call(big.dump_mrt(pb::DumpMrtRequest {})).await?;
            std::fs::write(&file, &r.data)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            #[derive(Serialize)]
            struct Dumped {
                file: String,
                routes: u64,
                bytes: usize,
            }
            let d = Dumped {
                file: file.display().to_string(),
                routes: r.routes,
                bytes: r.data.len(),
            };
            if json {
                print_json(&d)
            } else {
                println!(
                    "wrote {} routes ({} bytes) to {}",
                    d.routes, d.bytes, d.file
                );
                Ok(())
            }
        }
        BgpCommand::Reload => {
            let r = call(c.reload(pb::ReloadRequest {})).await?;
            #[derive(Serialize)]
            struct Reloaded {
                changed_peers: Vec<String>,
            }
            if json {
                print_json(&Reloaded {
                    changed_peers: r.changed_peers,
                })
            } else {
                if r.changed_peers.is_empty() {
                    println!("reloaded: no session changed");
                } else {
                    println!("reloaded: sessions changed: {}", r.changed_peers.join(", "));
                }
                Ok(())
            }
        }
    }
}

async fn list_peers(c: &mut BgpClient<Channel>, name: String) -> Result<Vec<PeerRow>, String> {
    Ok(call(c.list_peers(pb::ListPeersRequest { name }))
        .await?
        .peers
        .into_iter()
        .map(Into::into)
        .collect())
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| format!("cannot encode JSON: {e}"))?;
    println!("{s}");
    Ok(())
}

async fn connect(path: &Path) -> Result<BgpClient<Channel>, String> {
    match tokio::time::timeout(CALL_TIMEOUT, api::unix::connect(path)).await {
        Ok(Ok(ch)) => Ok(BgpClient::new(ch)),
        Ok(Err(e)) => Err(unreachable(path, &e)),
        Err(_) => Err(format!(
            "bgpd at {} did not answer within {}s",
            path.display(),
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// The message for a socket that cannot be dialled, from the underlying I/O error.
fn unreachable(path: &Path, e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return format!(
                "cannot reach bgpd at {}: permission denied (run as root or as a member of the socket's group)",
                path.display()
            );
        }
        cause = c.source();
    }
    format!(
        "cannot reach bgpd at {}: is bgpd running? (--bgpd or IRONMESH_BGPD_SOCKET)",
        path.display()
    )
}

/// One API call with a deadline; a gRPC error becomes the server's message.
async fn call<T>(
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) if s.message().is_empty() => Err(format!("bgpd: {}", s.code().description())),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err(format!(
            "bgpd did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}
