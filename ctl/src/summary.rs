//! The short human summary printed by `ironctl config check`.

use std::fmt::Write;
use std::path::Path;

use configs::{Backend, Config, DatapathMode, EncryptionMode, PeerTarget};

pub fn render(file: &Path, c: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |s: String| {
        let _ = writeln!(out, "{s}");
    };
    line(format!("{}: ok", file.display()));
    line(format!(
        "node      {} in cluster {} (state in {})",
        c.node.name,
        c.node.cluster,
        c.node.state_dir.display()
    ));
    match &c.bgp {
        None => line("bgp       off".into()),
        Some(b) => {
            let listen = b
                .listen
                .map_or("not listening".into(), |a| format!("listening on {a}"));
            line(format!(
                "bgp       AS{} router-id {}, {listen}, {} peer(s), {} advert(s)",
                b.local_asn,
                b.router_id,
                b.peers.len(),
                b.adverts.len()
            ));
            for p in &b.peers {
                let target = match &p.target {
                    PeerTarget::Address(a) => a.to_string(),
                    PeerTarget::Interface(i) => format!("interface {i}"),
                };
                line(format!(
                    "  peer    {} {target} peer-as {} hold {}s",
                    p.name, p.peer_asn, p.hold_time
                ));
            }
        }
    }
    let backend = match c.encryption.backend {
        Backend::WireGuard { listen_port, .. } => format!("wireguard (udp {listen_port})"),
        Backend::Ipsec => "ipsec".into(),
    };
    if c.encryption.mode == EncryptionMode::Off {
        line("crypto    off".into());
    } else {
        line(format!(
            "crypto    {} via {backend}",
            c.encryption.mode.name()
        ));
    }
    match &c.mesh {
        None => line("mesh      off".into()),
        Some(m) => {
            let remotes: Vec<_> = m
                .remote_clusters
                .iter()
                .map(|r| format!("{} ({})", r.name, r.id))
                .collect();
            line(format!(
                "mesh      cluster id {}, {} etcd endpoint(s), remote clusters: {}",
                m.cluster_id,
                m.etcd_endpoints.len(),
                if remotes.is_empty() {
                    "none".into()
                } else {
                    remotes.join(", ")
                }
            ));
        }
    }
    let mode = match c.datapath.mode {
        DatapathMode::Native => "native".to_string(),
        DatapathMode::Vxlan { port } => format!("vxlan (udp {port})"),
    };
    line(format!(
        "datapath  {mode}, maps pinned in {}",
        c.datapath.bpffs.display()
    ));
    for w in c.warnings() {
        line(format!("warning: {w}"));
    }
    out
}
