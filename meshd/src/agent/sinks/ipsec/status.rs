//! `EncryptionStatus` for IPsec, in the WireGuard-shaped response (field mapping in
//! docs/encryption.md): `backend` "ipsec", `device` "xfrm", `public_key` "spi N" (the SPI
//! this node sends with, and the accepted ones during a rotation), `peers_handshaked` the
//! peers with all SAs installed, `tunnel_prefixes` the PodCIDR pairs covered by policies,
//! per peer `path` and `public_key` "spi N" (the peer's published SPI), and each peer's SA
//! error as `"<peer>: <error>"` in `rejected`.

use std::sync::Arc;
use std::time::SystemTime;

use api::mesh as pb;
use crypto::rollout::EncryptionMode;

use super::worker::Inner;

/// Answers `EncryptionStatus` from the worker's last step.
#[derive(Debug, Clone)]
pub struct IpsecStatusSource(pub(super) Arc<Inner>);

impl IpsecStatusSource {
    pub fn status(&self) -> pb::EncryptionStatusResponse {
        let inner = &self.0;
        let s = inner.snapshot.lock().expect("snapshot lock").clone();
        let spi = s.announce.as_ref().map(|a| {
            let accepts: Vec<String> = a.accepts.iter().map(u8::to_string).collect();
            if a.accepts.len() > 1 {
                format!(
                    "spi {} (rotating: accepts {}; waiting for {})",
                    a.sends,
                    accepts.join(","),
                    if s.waiting_for.is_empty() {
                        "nobody".into()
                    } else {
                        s.waiting_for.join(",")
                    }
                )
            } else {
                format!("spi {}", a.sends)
            }
        });
        let with_sas = s.peers.iter().filter(|p| p.path == "ipsec").count();
        let configured = s
            .peers
            .iter()
            .filter(|p| matches!(p.path, "ipsec" | "clear_no_sa" | "blocked_no_sa"))
            .count();
        pb::EncryptionStatusResponse {
            node: inner.me.to_string(),
            enabled: inner.settings.mode != EncryptionMode::Off,
            reason: match &spi {
                None => format!(
                    "no IPsec key loaded from {}",
                    inner.settings.key_file.display()
                ),
                Some(_) => String::new(),
            },
            mode: inner.settings.mode.to_string(),
            backend: "ipsec".into(),
            device: "xfrm".into(),
            public_key: spi.unwrap_or_default(),
            key_age_seconds: s.key_loaded.and_then(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .ok()
                    .map(|d| d.as_secs())
            }),
            peers_configured: configured as u32,
            peers_expected: s.expected as u32,
            peers_handshaked: with_sas as u32,
            last_handshake_unix: None,
            tunnel_prefixes: s.tunnel_prefixes as u32,
            ready_for_strict: s.announce.is_some() && with_sas == s.expected,
            peers: s
                .peers
                .iter()
                .map(|p| pb::EncryptionPeer {
                    node: p.node.clone(),
                    path: p.path.into(),
                    public_key: p.spi.map(|s| format!("spi {s}")).unwrap_or_default(),
                    last_handshake_unix: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                })
                .collect(),
            rejected: s
                .peers
                .iter()
                .filter_map(|p| Some(format!("{}: {}", p.node, p.error.as_ref()?)))
                .collect(),
            last_error: s.last_error.unwrap_or_default(),
        }
    }
}
