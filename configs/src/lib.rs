//! Typed, validated ironmesh configuration.
//!
//! The TOML is first read into loose `raw` structs (unknown fields are
//! rejected), then validated into the typed structs here. Every validation
//! error names the TOML path of the field and how to fix it, and all of them
//! are reported at once.

mod bgp;
mod datapath;
mod duration;
mod encryption;
mod error;
mod mesh;
mod node;
mod observe;
mod policy;
mod raw;
mod secret;

use std::path::Path;

pub use bgp::{
    Advert, BGP_PORT, Bfd, Bgp, DEFAULT_BFD_INTERVAL_MS, DEFAULT_BFD_MULTIPLIER,
    DEFAULT_FIB_PROTOCOL, DEFAULT_FIB_TABLE, DEFAULT_GRACEFUL_RESTART_TIME, DEFAULT_HOLD_TIME,
    Family, Fib, MaxPrefixAction, MaxPrefixes, Peer, PeerAsn, PeerTarget, Pool,
};
pub use common::{Community, LargeCommunity};
pub use datapath::{
    DEFAULT_BPFFS, DEFAULT_VXLAN_DEVICE, DEFAULT_VXLAN_PORT, Datapath, DatapathMode,
    PolicyEnforcement,
};
pub use duration::format as format_duration;
pub use encryption::{
    Backend, DEFAULT_WIREGUARD_PORT, Encryption, EncryptionMode, MIN_ROTATE_EVERY,
};
pub use error::{ConfigError, FieldError};
pub use mesh::{
    AdvertiseVips, DEFAULT_CNI_ENDPOINTS_DIR, DEFAULT_LEASE_TTL, DEFAULT_WIREGUARD_DEVICE,
    EtcdAuth, EtcdEndpoint, LeaseTiming, Mesh, PodCidrPool, RemoteCluster, Tls,
};
pub use node::{DEFAULT_STATE_DIR, Node};
pub use observe::{DEFAULT_OBSERVE_PORT, Observe};
pub use policy::{BUILTIN_POLICIES, BgpPolicy, PolicyAction, PolicyRule, PrefixMatch};
pub use secret::{MAX_SECRET_FILE_BYTES, Secret, SecretFileError, read_secret_file};

/// A node's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: Node,
    /// `None`: this node runs no BGP.
    pub bgp: Option<Bgp>,
    pub encryption: Encryption,
    /// `None`: standalone node without etcd.
    pub mesh: Option<Mesh>,
    pub datapath: Datapath,
    pub observe: Observe,
}

impl Config {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        use std::io::Read;
        let path = path.as_ref();
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Bounded even if the file grows while it is read.
        let mut buf = Vec::new();
        file.take(error::MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if buf.len() as u64 > error::MAX_CONFIG_BYTES {
            let size = std::fs::metadata(path).map_or(buf.len() as u64, |m| m.len());
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let text = String::from_utf8(buf).map_err(|e| {
            read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            ))
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text)?;
        let mut errs = error::Errors::default();
        let node = node::validate(raw.node, &mut errs);
        let bgp = raw.bgp.map(|b| bgp::validate(b, &mut errs));
        let encryption = encryption::validate(raw.encryption, &mut errs);
        let mesh = raw
            .mesh
            .map(|m| mesh::validate(m, node.as_ref().map(|n| &n.cluster), &mut errs));
        let datapath = datapath::validate(raw.datapath, &mut errs);
        let observe = observe::validate(
            raw.observe,
            datapath.as_ref().map(|d| d.flows),
            mesh.as_ref()
                .map(|m| m.as_ref().is_some_and(|m| m.node_ipv4.is_some())),
            &mut errs,
        );
        if !errs.0.is_empty() {
            return Err(ConfigError::Invalid(errs.0));
        }
        // Every validator pushes an error whenever it returns None.
        let missing = || {
            ConfigError::Invalid(vec![FieldError {
                path: "(config)".into(),
                message: "validation failed without a message; please report this".into(),
            }])
        };
        Ok(Config {
            node: node.ok_or_else(missing)?,
            bgp: bgp.map(|b| b.ok_or_else(missing)).transpose()?,
            encryption: encryption.ok_or_else(missing)?,
            mesh: mesh.map(|m| m.ok_or_else(missing)).transpose()?,
            datapath: datapath.ok_or_else(missing)?,
            observe: observe.ok_or_else(missing)?,
        })
    }

    /// Every etcd user the config names: `mesh.auth`, then each `mesh.remote_clusters[].auth`.
    pub fn etcd_auths(&self) -> impl Iterator<Item = &EtcdAuth> {
        self.mesh.iter().flat_map(|m| {
            m.auth
                .iter()
                .chain(m.remote_clusters.iter().filter_map(|r| r.auth.as_ref()))
        })
    }

    /// Reads every etcd password file of the config with the checks meshd applies when it
    /// loads them ([`EtcdAuth::password`]: a private regular file, not a FIFO or device, at most
    /// [`MAX_SECRET_FILE_BYTES`], one line) and drops the passwords; returns what is wrong with
    /// each (naming the field, never quoting the file). `ironctl config check` reports these.
    pub fn check_secret_files(&self) -> Vec<SecretFileError> {
        self.etcd_auths()
            .filter_map(|a| a.password().err())
            .collect()
    }

    /// Valid but probably unintended settings, as `path: advice` lines.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(bgp) = &self.bgp {
            for (i, p) in bgp.peers.iter().enumerate() {
                if !p.may_be_ebgp(bgp.local_asn) || !p.ebgp_requires_policy {
                    continue;
                }
                for (dir, set, effect) in [
                    (
                        "import_policy",
                        !p.import_policy.is_empty(),
                        "no routes will be accepted",
                    ),
                    (
                        "export_policy",
                        !p.export_policy.is_empty(),
                        "no routes will be advertised",
                    ),
                ] {
                    if !set {
                        out.push(format!(
                            "bgp.peers[{i}].{dir}: eBGP peer {:?} has none, so {effect} (RFC 8212); set {dir} or ebgp_requires_policy = false",
                            p.name
                        ));
                    }
                }
            }
        }
        if self.encryption.mode != EncryptionMode::Off && self.mesh.is_none() {
            out.push("encryption.mode: encryption is on but there is no [mesh] section, so no peer nodes (and keys) are known".into());
        }
        if let Some(m) = &self.mesh
            && m.auth.is_none()
            && m.tls.as_ref().is_none_or(|t| t.client.is_none())
        {
            out.push("mesh.auth: meshd logs in to its etcd with neither a user nor a client certificate, so etcd cannot keep other clusters (or any client that reaches it) from writing this cluster's keys; run `ironctl mesh provision` and set [mesh.auth] user and password_file (or [mesh.tls] cert_file and key_file, with etcd's --client-cert-auth)".into());
        }
        out
    }
}

impl std::str::FromStr for Config {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_toml(s)
    }
}
