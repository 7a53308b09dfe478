//! WireGuard: the device behind a backend trait, the peer reconciler and key rotation.
//!
//! ```text
//!  node records ──► desired_peers() ──► diff(desired, actual) ──► stages of PeerChange ──► backend
//!  (meshd)          (validation,         (make before break:      (one request each)    (UAPI or
//!                    rejects per node)    add/update, handover,                          netlink)
//!                                         remove)
//! ```
//!
//! - [`uapi`] is the sans-IO text protocol of userspace WireGuard (the "cross-platform
//!   interface": `get=1` / `set=1`), parser and serializer, tested against captured
//!   wireguard-go output.
//! - [`UserspaceBackend`] speaks it over `/var/run/wireguard/<ifname>.sock` (wireguard-go,
//!   boringtun). This is what runs on hosts without the kernel module, e.g. the lab.
//! - [`KernelBackend`] speaks generic netlink (`WG_CMD_GET_DEVICE` / `WG_CMD_SET_DEVICE`,
//!   [`genl`]) to the kernel module; this machine has no module, so its messages are checked
//!   against vectors only.
//! - [`diff`] stages the changes so a prefix never lacks a running peer (a key rotation hands
//!   the prefixes from the old peer to the new one before the old one goes).
//! - [`reconcile`] turns node records into desired peers and applies only the differences.
//! - [`rotate_key`] replaces the node's key in its store and on the device.
//! - [`contact`] picks which side of a new pair initiates the first handshake (the lower public
//!   key; the other holds back for at most [`FIRST_CONTACT_HOLD`]), so crossed initiations do
//!   not cost a 5 s retransmit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::keys::{PrivateKey, PublicKey};

pub mod contact;
mod diff;
#[cfg(test)]
pub(crate) mod fake;
pub mod genl;
mod keepalive;
pub mod kernel;
pub mod reconcile;
mod rotate;
pub mod uapi;
mod userspace;

pub use contact::{ContactRole, FIRST_CONTACT_HOLD, FirstContact};
pub use diff::diff;
pub use keepalive::{MIN_PERSISTENT_KEEPALIVE, effective_keepalive};
pub use kernel::KernelBackend;
pub use reconcile::{
    MeshNode, NodeRejected, PeerPolicy, ReconcileReport, Reconciler, RejectReason, desired_peers,
};
pub use rotate::{RotateError, ensure_device, rotate_key};
pub use uapi::UapiErrno;
pub use userspace::{UAPI_SOCKET_DIR, UserspaceBackend};

/// The configuration of one peer: what the reconciler wants and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: BTreeSet<IpNet>,
    /// Seconds; 0 is off (as on the wire).
    pub persistent_keepalive: u16,
}

/// A peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub config: PeerConfig,
    /// None when no handshake completed yet.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A device as it reports itself. The private key the device returns is turned into its public
/// key at once and zeroized: it never leaves the parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceState {
    /// The public key of the device's private key; None if it has none yet.
    pub public_key: Option<PublicKey>,
    /// 0 when the device has no port yet (wireguard-go then omits it).
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: BTreeMap<PublicKey, PeerState>,
}

/// Device-level settings; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceSettings<'a> {
    pub private_key: Option<&'a PrivateKey>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
}

/// One change to a device's peers. Only the changed fields of an update are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Creates the peer (or overwrites it, if it appeared meanwhile) with exactly this config.
    Add(PeerConfig),
    /// Changes an existing peer; a peer that vanished meanwhile is not re-created.
    Update {
        public_key: PublicKey,
        endpoint: Option<SocketAddr>,
        /// Replaces the whole set.
        allowed_ips: Option<BTreeSet<IpNet>>,
        persistent_keepalive: Option<u16>,
    },
    Remove(PublicKey),
}

impl PeerChange {
    pub fn public_key(&self) -> &PublicKey {
        match self {
            PeerChange::Add(c) => &c.public_key,
            PeerChange::Update { public_key, .. } | PeerChange::Remove(public_key) => public_key,
        }
    }
}

impl fmt::Display for PeerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerChange::Add(c) => write!(f, "add peer {}", c.public_key),
            PeerChange::Update {
                public_key,
                endpoint,
                allowed_ips,
                persistent_keepalive,
            } => {
                write!(f, "update peer {public_key}:")?;
                if let Some(e) = endpoint {
                    write!(f, " endpoint={e}")?;
                }
                if let Some(ips) = allowed_ips {
                    write!(f, " allowed_ips={}", ips.len())?;
                }
                if let Some(k) = persistent_keepalive {
                    write!(f, " keepalive={k}")?;
                }
                Ok(())
            }
            PeerChange::Remove(k) => write!(f, "remove peer {k}"),
        }
    }
}

/// Why a backend operation failed. Each names the device.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error(
        "WireGuard device {device}: cannot connect to {path}: {source}; is the userspace daemon (wireguard-go) running for this interface?"
    )]
    Connect {
        device: String,
        path: String,
        source: std::io::Error,
    },
    #[error("WireGuard device {device}: I/O on the UAPI socket during {op}: {source}")]
    Io {
        device: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("WireGuard device {device} refused the {op} request: {errno}")]
    Refused {
        device: String,
        op: &'static str,
        errno: UapiErrno,
    },
    #[error("WireGuard device {device}: malformed {op} response: {source}")]
    Protocol {
        device: String,
        op: &'static str,
        source: uapi::ParseError,
    },
    #[error(
        "WireGuard device {device}: the kernel has no WireGuard (generic netlink family \"wireguard\" not found); load the module (modprobe wireguard) or run wireguard-go and use the userspace backend"
    )]
    NoKernelWireGuard { device: String },
    #[error("WireGuard device {device}: kernel refused to {op}: {source}")]
    Kernel {
        device: String,
        op: &'static str,
        source: crate::netlink::NetlinkError,
    },
    #[error("WireGuard device {device}: malformed kernel reply: {source}")]
    KernelReply {
        device: String,
        source: genl::GenlParseError,
    },
}

/// A WireGuard device: read its state, configure it, change its peers.
///
/// Implementations: [`UserspaceBackend`] (UAPI text protocol over a Unix socket; wireguard-go,
/// boringtun) and [`KernelBackend`] (generic netlink family `wireguard`). The kernel backend's
/// messages are checked against hand-built vectors from `linux/wireguard.h`; this machine's
/// kernel has no WireGuard module, so it was never run against a real kernel device here.
///
/// Calls block for one short local request; async callers use `spawn_blocking`. Every call is
/// idempotent at the level the reconciler uses it (it always re-reads before it writes).
pub trait WireGuardBackend: fmt::Debug + Send + Sync {
    /// The interface name.
    fn device_name(&self) -> &str;

    /// A short name of the backend kind for status output, e.g. `userspace-uapi`.
    fn kind(&self) -> &'static str;

    /// The device's current configuration and peer statistics.
    fn device(&self) -> Result<DeviceState, WgError>;

    /// Sets the private key, listen port or fwmark (only those given).
    fn configure(&self, settings: &DeviceSettings<'_>) -> Result<(), WgError>;

    /// Applies the changes in order, as one request where the backend allows. On error, some
    /// changes may have been applied (the next reconcile sees and repairs that).
    fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError>;
}

/// A backend chosen at run time (kernel or userspace) is a backend.
impl WireGuardBackend for Box<dyn WireGuardBackend> {
    fn device_name(&self) -> &str {
        (**self).device_name()
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn device(&self) -> Result<DeviceState, WgError> {
        (**self).device()
    }

    fn configure(&self, settings: &DeviceSettings<'_>) -> Result<(), WgError> {
        (**self).configure(settings)
    }

    fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError> {
        (**self).apply(changes)
    }
}

/// The backend for `device`, as `wg(8)` picks it: userspace when a UAPI socket serves the
/// device (wireguard-go, boringtun), else the kernel when it has WireGuard, else userspace
/// (whose errors then say to start the daemon).
pub fn backend_for(device: &str) -> Box<dyn WireGuardBackend> {
    let user = UserspaceBackend::new(device);
    if user.socket_path().exists() {
        return Box::new(user);
    }
    match KernelBackend::open(device) {
        Ok(k) => Box::new(k),
        Err(_) => Box::new(user),
    }
}
