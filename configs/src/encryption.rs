//! `[encryption]`: node-to-node encryption of pod traffic.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Errors;
use crate::raw::RawEncryption;

/// Cilium's WireGuard port, so firewalls written for it carry over.
pub const DEFAULT_WIREGUARD_PORT: u16 = 51871;

/// Default of `encryption.ipsec.key_file` (Cilium's format: `SPI rfc4106(gcm(aes)) KEY 128`).
pub const DEFAULT_IPSEC_KEY_FILE: &str = "/etc/ironmesh/ipsec.key";

/// The shortest `encryption.wireguard.rotate_every`: each rotation must be done (record
/// propagated, every peer re-handshaked: well under a second in the lab) long before the next.
pub const MIN_ROTATE_EVERY: Duration = Duration::from_secs(10);

/// The longest: ten years (beyond that the schedule is meaningless; leave it unset instead).
const MAX_ROTATE_EVERY: Duration = Duration::from_secs(3650 * 86_400);

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
        /// `encryption.wireguard.rotate_every`: meshd replaces the node's key once it is this
        /// old (age from the key file's mtime, so restarts keep it). `None`: only on command.
        rotate_every: Option<Duration>,
    },
    Ipsec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub mode: EncryptionMode,
    pub backend: Backend,
    /// `encryption.ipsec.key_file`: the IPsec key file meshd loads (and watches) with
    /// `backend = "ipsec"`; unused with WireGuard.
    pub ipsec_key_file: PathBuf,
}

impl Default for Encryption {
    fn default() -> Self {
        Self {
            mode: EncryptionMode::Off,
            backend: Backend::WireGuard {
                listen_port: DEFAULT_WIREGUARD_PORT,
                persistent_keepalive: 0,
                rotate_every: None,
            },
            ipsec_key_file: PathBuf::from(DEFAULT_IPSEC_KEY_FILE),
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
            let rotate = match wg.and_then(|w| w.rotate_every.as_deref()) {
                Some(t) => rotate_every(t, errs).map(Some),
                None => Some(None),
            };
            Some(Backend::WireGuard {
                listen_port: listen_port?,
                persistent_keepalive: keepalive?,
                rotate_every: rotate?,
            })
        }
        "ipsec" => {
            if let Some(k) = raw.ipsec.as_ref().and_then(|i| i.key_file.as_deref())
                && !k.starts_with('/')
            {
                errs.push(
                    "encryption.ipsec.key_file",
                    format!(
                        "{k:?} is not an absolute path; write e.g. \"{DEFAULT_IPSEC_KEY_FILE}\""
                    ),
                );
            }
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
    if raw.ipsec.is_some() && matches!(backend, Some(Backend::WireGuard { .. })) {
        errs.push(
            "encryption.ipsec",
            "is set but backend is \"wireguard\"; remove the section or set backend = \"ipsec\"",
        );
    }
    let ipsec_key_file = raw
        .ipsec
        .and_then(|i| i.key_file)
        .unwrap_or_else(|| DEFAULT_IPSEC_KEY_FILE.into());
    Some(Encryption {
        mode: mode?,
        backend: backend?,
        ipsec_key_file: PathBuf::from(ipsec_key_file),
    })
}

/// `encryption.wireguard.rotate_every`: a duration in `MIN_ROTATE_EVERY..=MAX_ROTATE_EVERY`.
fn rotate_every(text: &str, errs: &mut Errors) -> Option<Duration> {
    crate::duration::field(
        errs,
        "encryption.wireguard.rotate_every",
        text,
        MIN_ROTATE_EVERY..=MAX_ROTATE_EVERY,
        "each rotation re-keys every peer",
        "write e.g. \"24h\", or remove the field to rotate only with `ironctl encryption rotate`",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Backend, Config};

    const NODE: &str = "[node]\nname = \"n1\"\ncluster = \"c1\"\n";

    #[test]
    fn ipsec_key_file_default_set_and_checked() {
        let c = Config::from_toml(&format!("{NODE}[encryption]\nbackend = \"ipsec\"\n")).unwrap();
        assert_eq!(c.encryption.backend, Backend::Ipsec);
        assert_eq!(
            c.encryption.ipsec_key_file,
            std::path::Path::new(super::DEFAULT_IPSEC_KEY_FILE)
        );
        let c = Config::from_toml(&format!(
            "{NODE}[encryption]\nbackend = \"ipsec\"\n[encryption.ipsec]\nkey_file = \"/k\"\n"
        ))
        .unwrap();
        assert_eq!(c.encryption.ipsec_key_file, std::path::Path::new("/k"));
        let e = Config::from_toml(&format!(
            "{NODE}[encryption]\nbackend = \"ipsec\"\n[encryption.ipsec]\nkey_file = \"k\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("encryption.ipsec.key_file: \"k\" is not an absolute path"),
            "{e}"
        );
        let e = Config::from_toml(&format!(
            "{NODE}[encryption]\n[encryption.ipsec]\nkey_file = \"/k\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("encryption.ipsec: is set but backend is \"wireguard\""),
            "{e}"
        );
    }

    fn wg(extra: &str) -> Result<Config, crate::ConfigError> {
        Config::from_toml(&format!(
            "{NODE}[encryption]\nmode = \"strict\"\n[encryption.wireguard]\n{extra}"
        ))
    }

    fn rotate_every(c: &Config) -> Option<Duration> {
        match c.encryption.backend {
            Backend::WireGuard { rotate_every, .. } => rotate_every,
            Backend::Ipsec => panic!("wireguard expected"),
        }
    }

    #[test]
    fn rotate_every_off_by_default_and_parsed() {
        assert_eq!(rotate_every(&wg("").unwrap()), None);
        let c = Config::from_toml(NODE).unwrap();
        assert_eq!(rotate_every(&c), None);
        for (t, secs) in [
            ("24h", 86_400),
            ("10s", 10),
            ("1h30m", 5400),
            ("7d", 604_800),
        ] {
            let c = wg(&format!("rotate_every = \"{t}\"\n")).unwrap();
            assert_eq!(rotate_every(&c), Some(Duration::from_secs(secs)), "{t}");
        }
    }

    #[test]
    fn rotate_every_refused_with_field_and_fix() {
        for (t, needle) in [
            ("0s", "\"0s\" is too short: at least 10s"),
            ("9s", "is too short: at least 10s"),
            ("5", "has no unit"),
            ("1y", "is not a unit; use s, m, h or d"),
            ("3651d", "is too long: at most 3650d"),
        ] {
            let e = wg(&format!("rotate_every = \"{t}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("encryption.wireguard.rotate_every: ") && e.contains(needle),
                "{t}: {e}"
            );
        }
        let e = wg("rotate_every = \"1s\"\n").unwrap_err().to_string();
        assert!(e.contains("remove the field"), "{e}");
        // A number instead of a string is a type error naming the line.
        let e = wg("rotate_every = 86400\n").unwrap_err().to_string();
        assert!(e.contains("rotate_every"), "{e}");
    }
}
