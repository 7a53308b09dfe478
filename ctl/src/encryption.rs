//! `ironctl encryption status`: this node's encryption as meshd runs it (mode, backend, key
//! age, WireGuard peers configured vs expected, handshakes), from meshd's `EncryptionStatus`.
//! `ironctl encryption rotate`: a new WireGuard key now (`RotateKey`), published in the node
//! record for the peers.
//! `ironctl encryption rollout --to off|opportunistic|strict`: the cluster's desired mode in etcd
//! (`SetEncryptionRollout`), which every node's meshd follows without a restart, gated;
//! `ironctl encryption rollout status`: per node mode and peers ready/expected, and what
//! blocks the rollout (`EncryptionRolloutStatus`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use api::mesh::mesh_client::MeshClient;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::table::{Align, Table, human_duration, key_values, shorten};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct EncryptionArgs {
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
    command: EncryptionCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Text and a peer table for people.
    Table,
    /// JSON for scripts (stable field names).
    Json,
}

#[derive(Debug, Subcommand)]
enum EncryptionCommand {
    /// Mode, backend, key age, peers configured vs expected, last handshake, per peer.
    Status,
    /// Replace this node's WireGuard key now; peers pick it up from the node record.
    Rotate,
    /// The cluster's encryption rollout: `--to MODE` sets the desired mode (every node moves
    /// without a restart; strict only once every node is ready), `status` shows it.
    Rollout(RolloutArgs),
}

#[derive(Debug, Args)]
struct RolloutArgs {
    /// The cluster's desired mode: off, opportunistic or strict.
    #[arg(long, value_name = "MODE")]
    to: Option<String>,
    #[command(subcommand)]
    command: Option<RolloutCommand>,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Desired mode, per node mode and peers ready/expected, what blocks the rollout.
    Status,
}

/// What the rollout command asks meshd: set a mode, or show the status.
fn rollout_request(a: &RolloutArgs) -> Result<Option<String>, String> {
    match (&a.to, &a.command) {
        (Some(_), Some(_)) => {
            Err("ironctl encryption rollout: give either --to MODE or `status`, not both".into())
        }
        (None, None) => Err(
            "ironctl encryption rollout: give --to off|opportunistic|strict, or `status`".into(),
        ),
        (None, Some(RolloutCommand::Status)) => Ok(None),
        (Some(m), None) => match m.as_str() {
            "off" | "opportunistic" | "strict" => Ok(Some(m.clone())),
            other => Err(format!(
                "--to {:?}: unknown encryption mode; use off, opportunistic or strict",
                other.chars().take(40).collect::<String>()
            )),
        },
    }
}

/// One node of the rollout, as printed.
#[derive(Debug, Serialize)]
struct RolloutNodeView {
    node: String,
    mode: String,
    ready_for_strict: bool,
    peers_ready: u32,
    peers_expected: u32,
    not_ready: String,
    draining: bool,
}

/// The rollout, as printed (JSON field names are stable).
#[derive(Debug, Serialize)]
struct RolloutView {
    cluster: String,
    set: bool,
    desired: String,
    complete: bool,
    blocking: String,
    nodes: Vec<RolloutNodeView>,
    missing: Vec<String>,
}

fn rollout_view(r: pb::EncryptionRolloutStatusResponse) -> RolloutView {
    RolloutView {
        cluster: r.cluster,
        set: r.set,
        desired: r.desired,
        complete: r.complete,
        blocking: r.blocking,
        nodes: r
            .nodes
            .into_iter()
            .map(|n| RolloutNodeView {
                node: n.node,
                mode: n.mode,
                ready_for_strict: n.ready_for_strict,
                peers_ready: n.peers_ready,
                peers_expected: n.peers_expected,
                not_ready: n.not_ready,
                draining: n.draining,
            })
            .collect(),
        missing: r.missing,
    }
}

fn rollout_text(v: &RolloutView) -> String {
    let mut out = format!("Encryption rollout of cluster {}\n", v.cluster);
    if !v.set {
        out.push_str(&key_values(&[(
            "desired",
            "not set: every node runs its configured [encryption] mode".into(),
        )]));
    } else {
        out.push_str(&key_values(&[
            ("desired", v.desired.clone()),
            (
                "state",
                if v.complete {
                    "complete: every node runs the desired mode".into()
                } else {
                    format!("in progress: {}", v.blocking)
                },
            ),
            ("missing", v.missing.join(", ")),
        ]));
    }
    if !v.nodes.is_empty() {
        let mut t = Table::new(&[
            ("NODE", Align::Left),
            ("MODE", Align::Left),
            ("READY", Align::Left),
            ("PEERS", Align::Right),
            ("WHY NOT READY", Align::Left),
        ]);
        for n in &v.nodes {
            t.row(vec![
                n.node.clone(),
                if n.draining {
                    format!("{} (draining)", n.mode)
                } else {
                    n.mode.clone()
                },
                if n.ready_for_strict { "yes" } else { "no" }.into(),
                format!("{}/{}", n.peers_ready, n.peers_expected),
                n.not_ready.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

/// A rotation, as printed (JSON field names are stable).
#[derive(Debug, Serialize)]
struct RotateView {
    node: String,
    public_key: String,
    previous_public_key: String,
    rotated_at_unix_ms: u64,
    published: bool,
    published_after_ms: Option<u64>,
    note: String,
}

fn rotate_view(r: pb::RotateKeyResponse) -> RotateView {
    RotateView {
        published_after_ms: r.published.then_some(r.published_after_ms),
        node: r.node,
        public_key: r.public_key,
        previous_public_key: r.previous_public_key,
        rotated_at_unix_ms: r.rotated_at_unix_ms,
        published: r.published,
        note: r.note,
    }
}

fn rotate_text(v: &RotateView) -> String {
    let at = v.rotated_at_unix_ms;
    let mut out = format!("Rotated the WireGuard key of node {}\n", v.node);
    out.push_str(&key_values(&[
        ("public key", v.public_key.clone()),
        ("previous key", v.previous_public_key.clone()),
        (
            "rotated at",
            format!("{}.{:03} (unix time)", at / 1000, at % 1000),
        ),
        (
            "node record",
            match v.published_after_ms {
                Some(ms) => format!("carries the new key ({ms} ms after the rotation)"),
                None => format!("not updated yet: {}", v.note),
            },
        ),
    ]));
    out
}

/// One peer, as printed.
#[derive(Debug, Serialize)]
struct PeerRow {
    node: String,
    path: String,
    public_key: String,
    last_handshake_unix: Option<u64>,
    last_handshake_ago_seconds: Option<u64>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// The node's status, as printed (JSON field names are stable).
#[derive(Debug, Serialize)]
struct StatusView {
    node: String,
    enabled: bool,
    reason: String,
    mode: String,
    backend: String,
    device: String,
    public_key: String,
    key_age_seconds: Option<u64>,
    peers_configured: u32,
    peers_expected: u32,
    peers_handshaked: u32,
    last_handshake_unix: Option<u64>,
    last_handshake_ago_seconds: Option<u64>,
    tunnel_prefixes: u32,
    ready_for_strict: bool,
    rejected: Vec<String>,
    last_error: String,
    peers: Vec<PeerRow>,
}

fn ago(now: u64, t: Option<u64>) -> Option<u64> {
    t.map(|t| now.saturating_sub(t))
}

fn view(s: pb::EncryptionStatusResponse, now: u64) -> StatusView {
    StatusView {
        last_handshake_ago_seconds: ago(now, s.last_handshake_unix),
        peers: s
            .peers
            .into_iter()
            .map(|p| PeerRow {
                last_handshake_ago_seconds: ago(now, p.last_handshake_unix),
                node: p.node,
                path: p.path,
                public_key: p.public_key,
                last_handshake_unix: p.last_handshake_unix,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect(),
        node: s.node,
        enabled: s.enabled,
        reason: s.reason,
        mode: s.mode,
        backend: s.backend,
        device: s.device,
        public_key: s.public_key,
        key_age_seconds: s.key_age_seconds,
        peers_configured: s.peers_configured,
        peers_expected: s.peers_expected,
        peers_handshaked: s.peers_handshaked,
        last_handshake_unix: s.last_handshake_unix,
        tunnel_prefixes: s.tunnel_prefixes,
        ready_for_strict: s.ready_for_strict,
        rejected: s.rejected,
        last_error: s.last_error,
    }
}

fn since(secs: Option<u64>) -> String {
    secs.map(|s| format!("{} ago", human_duration(s)))
        .unwrap_or_else(|| "never".into())
}

fn text(v: &StatusView) -> String {
    let mut out = format!("Encryption of node {}\n", v.node);
    if !v.enabled {
        out.push_str(&key_values(&[
            ("mode", v.mode.clone()),
            ("why", v.reason.clone()),
        ]));
        return out;
    }
    out.push_str(&key_values(&[
        ("mode", v.mode.clone()),
        ("backend", format!("{} ({})", v.backend, v.device)),
        ("public key", v.public_key.clone()),
        (
            "key age",
            v.key_age_seconds.map(human_duration).unwrap_or_default(),
        ),
        (
            "peers",
            format!(
                "{} configured / {} expected, {} with a fresh handshake",
                v.peers_configured, v.peers_expected, v.peers_handshaked
            ),
        ),
        ("last handshake", since(v.last_handshake_ago_seconds)),
        ("tunnel prefixes", v.tunnel_prefixes.to_string()),
        ("ready for strict", v.ready_for_strict.to_string()),
        ("rejected", v.rejected.join(", ")),
        ("last error", v.last_error.clone()),
    ]));
    if !v.peers.is_empty() {
        let mut t = Table::new(&[
            ("PEER", Align::Left),
            ("PATH", Align::Left),
            ("KEY", Align::Left),
            ("HANDSHAKE", Align::Right),
            ("RX", Align::Right),
            ("TX", Align::Right),
        ]);
        for p in &v.peers {
            t.row(vec![
                p.node.clone(),
                p.path.clone(),
                shorten(&p.public_key, 12),
                since(p.last_handshake_ago_seconds),
                p.rx_bytes.to_string(),
                p.tx_bytes.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

async fn connect(path: &Path) -> Result<tonic::transport::Channel, String> {
    match tokio::time::timeout(CALL_TIMEOUT, api::unix::connect(path)).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(_)) => Err(format!(
            "cannot reach meshd at {}: is meshd running? (--meshd or IRONMESH_MESHD_SOCKET; meshd's --api)",
            path.display()
        )),
        Err(_) => Err(format!("meshd at {} did not answer", path.display())),
    }
}

/// The answer of a call, or meshd's message (which says what to do).
async fn answer<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("meshd: {}", s.message())),
        Err(_) => Err(format!(
            "meshd did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// Runs an `encryption` command; the error is the message to print.
pub fn run(args: EncryptionArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let path = args.socket.clone();
    if let EncryptionCommand::Rollout(r) = &args.command {
        let to = rollout_request(r)?;
        let st = rt.block_on(async move {
            let mut c = MeshClient::new(connect(&path).await?);
            match to {
                Some(to) => {
                    answer(c.set_encryption_rollout(pb::SetEncryptionRolloutRequest { to })).await
                }
                None => {
                    answer(c.encryption_rollout_status(pb::EncryptionRolloutStatusRequest {})).await
                }
            }
        })?;
        let v = rollout_view(st);
        if args.output == Output::Json {
            let s =
                serde_json::to_string_pretty(&v).map_err(|e| format!("cannot encode JSON: {e}"))?;
            println!("{s}");
        } else {
            print!("{}", rollout_text(&v));
        }
        return Ok(());
    }
    if let EncryptionCommand::Rotate = args.command {
        let r = rt.block_on(async move {
            let mut c = MeshClient::new(connect(&path).await?);
            answer(c.rotate_key(pb::RotateKeyRequest {})).await
        })?;
        let v = rotate_view(r);
        if args.output == Output::Json {
            let s =
                serde_json::to_string_pretty(&v).map_err(|e| format!("cannot encode JSON: {e}"))?;
            println!("{s}");
        } else {
            print!("{}", rotate_text(&v));
        }
        return Ok(());
    }
    let st = rt.block_on(async move {
        let mut c = MeshClient::new(connect(&path).await?);
        answer(c.encryption_status(pb::EncryptionStatusRequest {})).await
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let v = view(st, now);
    if args.output == Output::Json {
        let s = serde_json::to_string_pretty(&v).map_err(|e| format!("cannot encode JSON: {e}"))?;
        println!("{s}");
    } else {
        print!("{}", text(&v));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_arguments_are_checked_with_the_fix() {
        let args = |to: Option<&str>, status: bool| RolloutArgs {
            to: to.map(String::from),
            command: status.then_some(RolloutCommand::Status),
        };
        assert_eq!(
            rollout_request(&args(Some("strict"), false)),
            Ok(Some("strict".into()))
        );
        assert_eq!(rollout_request(&args(None, true)), Ok(None));
        assert_eq!(
            rollout_request(&args(Some("Strict"), false)).unwrap_err(),
            "--to \"Strict\": unknown encryption mode; use off, opportunistic or strict"
        );
        assert!(
            rollout_request(&args(None, false))
                .unwrap_err()
                .contains("give --to")
        );
        assert!(
            rollout_request(&args(Some("off"), true))
                .unwrap_err()
                .contains("not both")
        );
    }

    #[test]
    fn rollout_text_names_the_blocker() {
        let v = rollout_view(pb::EncryptionRolloutStatusResponse {
            cluster: "c1".into(),
            set: true,
            desired: "strict".into(),
            complete: false,
            blocking: "node n2 is not ready for strict (1/2 peers in the tunnel; waiting for n3)"
                .into(),
            nodes: vec![pb::EncryptionRolloutNode {
                node: "n2".into(),
                mode: "opportunistic".into(),
                ready_for_strict: false,
                peers_ready: 1,
                peers_expected: 2,
                not_ready: "1/2 peers in the tunnel; waiting for n3".into(),
                draining: false,
            }],
            missing: vec![],
        });
        let t = rollout_text(&v);
        assert!(
            t.contains("in progress: node n2 is not ready for strict"),
            "{t}"
        );
        assert!(t.contains("opportunistic") && t.contains("1/2"), "{t}");
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["nodes"][0]["peers_expected"], 2);
        assert_eq!(j["desired"], "strict");
    }

    #[test]
    fn status_text_and_json() {
        let s = pb::EncryptionStatusResponse {
            node: "n1".into(),
            enabled: true,
            mode: "opportunistic".into(),
            backend: "userspace".into(),
            device: "wg0".into(),
            public_key: "k".into(),
            key_age_seconds: Some(90),
            peers_configured: 2,
            peers_expected: 2,
            peers_handshaked: 1,
            last_handshake_unix: Some(995),
            peers: vec![pb::EncryptionPeer {
                node: "green/g1".into(),
                path: "tunnel".into(),
                public_key: "abcdefghijklmnopqrstuvwxyz".into(),
                last_handshake_unix: Some(995),
                rx_bytes: 10,
                tx_bytes: 20,
            }],
            ..Default::default()
        };
        let v = view(s, 1000);
        let t = text(&v);
        assert!(t.contains("2 configured / 2 expected"), "{t}");
        assert!(t.contains("1m30s"), "{t}");
        assert!(t.contains("green/g1") && t.contains("5s ago"), "{t}");
        let j: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(j["peers"][0]["last_handshake_ago_seconds"], 5);
        let off = view(
            pb::EncryptionStatusResponse {
                node: "n1".into(),
                mode: "off".into(),
                reason: "encryption is off".into(),
                ..Default::default()
            },
            1000,
        );
        assert!(text(&off).contains("encryption is off"));
    }

    #[test]
    fn rotate_text_and_json() {
        let r = pb::RotateKeyResponse {
            node: "n1".into(),
            public_key: "NEW".into(),
            previous_public_key: "OLD".into(),
            rotated_at_unix_ms: 1_700_000_000_123,
            published: true,
            published_after_ms: 7,
            note: String::new(),
        };
        let v = rotate_view(r.clone());
        let t = rotate_text(&v);
        assert!(t.contains("NEW") && t.contains("OLD"), "{t}");
        assert!(t.contains("1700000000.123"), "{t}");
        assert!(t.contains("carries the new key (7 ms"), "{t}");
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["published_after_ms"], 7);
        let late = rotate_view(pb::RotateKeyResponse {
            published: false,
            note: "etcd unreachable".into(),
            ..r
        });
        assert!(rotate_text(&late).contains("not updated yet: etcd unreachable"));
        assert!(serde_json::to_value(&late).unwrap()["published_after_ms"].is_null());
    }
}
