//! `[encryption]`: node-to-node encryption of pod traffic.

use crate::error::Errors;
use crate::raw::RawEncryption;

/// Cilium's WireGuard port, so firewalls written for it carry over.
pub const DEFAULT_WIREGUARD_PORT: u16 = 51871;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptionMode {
    #[default]
    Off,
    /// Encrypt to peers that have keys; send in clear to the others.
    Opportunistic,
    /// Never send pod traffic in clear to another node.
    Strict,
}

impl EncryptionMode {
    /// The name as written in config.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::Off => "off",
            EncryptionMode::Opportunistic => "opportunistic",
            EncryptionMode::Strict => "strict",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    WireGuard {
        listen_port: u16,
        persistent_keepalive: u16,
    },
    Ipsec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encryption {
    pub mode: EncryptionMode,
    pub backend: Backend,
}

impl Default for Encryption {
    fn default() -> Self {
        Self {
            mode: EncryptionMode::Off,
            backend: Backend::WireGuard {
                listen_port: DEFAULT_WIREGUARD_PORT,
                persistent_keepalive: 0,
            },
        }
    }
}

pub(crate) fn validate(raw: Option<RawEncryption>, errs: &mut Errors) -> Option<Encryption> {
    let Some(raw) = raw else {
        return Some(Encryption::default());
    };
    let mode = match raw.mode.as_deref().unwrap_or("off") {
        "off" => Some(EncryptionMode::Off),
        "opportunistic" => Some(EncryptionMode::Opportunistic),
        "strict" => Some(EncryptionMode::Strict),
        other => {
            errs.push(
                "encryption.mode",
                format!("{other:?} is not an encryption mode; use \"off\", \"opportunistic\" or \"strict\""),
            );
            None
        }
    };
    let backend = match raw.backend.as_deref().unwrap_or("wireguard") {
        "wireguard" => {
            let wg = raw.wireguard.as_ref();
            let listen_port = match wg.and_then(|w| w.listen_port) {
                Some(p) => errs.int(
                    "encryption.wireguard.listen_port",
                    p,
                    1,
                    65535,
                    "a UDP port",
                ),
                None => Some(DEFAULT_WIREGUARD_PORT),
            };
            let keepalive = match wg.and_then(|w| w.persistent_keepalive) {
                Some(k) => errs.int(
                    "encryption.wireguard.persistent_keepalive",
                    k,
                    0,
                    65535,
                    "seconds; 0 turns it off",
                ),
                None => Some(0),
            };
            Some(Backend::WireGuard {
                listen_port: listen_port?,
                persistent_keepalive: keepalive?,
            })
        }
        "ipsec" => {
            if raw.wireguard.is_some() {
                errs.push(
                    "encryption.wireguard",
                    "is set but backend is \"ipsec\"; remove the section or set backend = \"wireguard\"",
                );
            }
            Some(Backend::Ipsec)
        }
        other => {
            errs.push(
                "encryption.backend",
                format!("{other:?} is not a backend; use \"wireguard\" or \"ipsec\""),
            );
            None
        }
    };
    Some(Encryption {
        mode: mode?,
        backend: backend?,
    })
}
