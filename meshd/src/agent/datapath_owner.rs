//! meshd owning the node's datapath (`[datapath] load = true`): load the programs (maps
//! reused from the pin root), write the node-wide config (routing mode, policy enforcement),
//! attach host_ingress to the uplinks and, in VXLAN mode, create the flow-based (`external`)
//! VXLAN device and attach overlay_ingress to it.
//!
//! Idempotent across restarts: pins are reused (entries, conntrack included, survive) and
//! attaching replaces a previous meshd's links without a gap (`datapath::links`).

use std::path::PathBuf;
use std::process::Command;

use datapath::pin::PinRoot;
use datapath::{Config, Datapath, PolicyMode, Routing};

/// What meshd loads and attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSettings {
    pub pin_root: PathBuf,
    pub uplinks: Vec<String>,
    /// `Some((device, UDP port))` in VXLAN mode.
    pub vxlan: Option<(String, u16)>,
    pub policy_mode: PolicyMode,
    /// `datapath.flows`: how many flow records meshd keeps (0: it does not read the events).
    pub flows: usize,
}

/// Why meshd could not set up the datapath it was asked to own.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("datapath.bpffs {}: {detail}", .pin_root.display())]
    PinRoot { pin_root: PathBuf, detail: String },
    #[error("loading the datapath under {}: {source}", .pin_root.display())]
    Load {
        pin_root: PathBuf,
        source: datapath::DatapathError,
    },
    #[error("writing the datapath config: {0}")]
    Config(datapath::DatapathError),
    #[error(
        "datapath.uplinks: interface {0:?} does not exist in meshd's network namespace; \
         name the node's underlay device(s)"
    )]
    NoUplink(String),
    #[error("datapath.uplinks: attaching host_ingress to {iface:?}: {source}")]
    Uplink {
        iface: String,
        source: datapath::DatapathError,
    },
    #[error(
        "datapath.vxlan_device {device:?}: {detail}; check that VXLAN is available \
         (`ip link add x type vxlan external`) or pick another name"
    )]
    Vxlan { device: String, detail: String },
    #[error("datapath.vxlan_device {device:?}: attaching overlay_ingress: {source}")]
    Overlay {
        device: String,
        source: datapath::DatapathError,
    },
}

/// The ifindex of `name` in this network namespace (0: none).
#[allow(unsafe_code)] // if_nametoindex(3) has no safe wrapper in std or libc.
pub fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates (if absent) and brings up the `external` VXLAN device; returns its ifindex.
fn vxlan_device(device: &str, port: u16) -> Result<u32, OwnerError> {
    let err = |detail: String| OwnerError::Vxlan {
        device: device.into(),
        detail,
    };
    if ifindex(device) == 0 {
        let port = port.to_string();
        ip(&[
            "link", "add", device, "type", "vxlan", "external", "dstport", &port,
        ])
        .map_err(err)?;
        tracing::info!(device, port, "created the external VXLAN device");
    }
    ip(&["link", "set", device, "up"]).map_err(err)?;
    match ifindex(device) {
        0 => Err(err("the device vanished after it was created".into())),
        i => Ok(i),
    }
}

/// Loads, configures and attaches the datapath (see the module docs).
pub fn load(s: &OwnerSettings) -> Result<Datapath, OwnerError> {
    let root = PinRoot::new(&s.pin_root).map_err(|e| OwnerError::PinRoot {
        pin_root: s.pin_root.clone(),
        detail: e.to_string(),
    })?;
    let mut dp = Datapath::load(&root).map_err(|source| OwnerError::Load {
        pin_root: s.pin_root.clone(),
        source,
    })?;
    let routing = match &s.vxlan {
        Some((device, port)) => Routing::Vxlan {
            ifindex: vxlan_device(device, *port)?,
        },
        None => Routing::Native,
    };
    let old = dp.config().ok();
    dp.set_config(&Config {
        policy_mode: s.policy_mode,
        routing,
        ..Config::default()
    })
    .map_err(OwnerError::Config)?;
    for u in &s.uplinks {
        if ifindex(u) == 0 {
            return Err(OwnerError::NoUplink(u.clone()));
        }
        dp.attach_uplink(u).map_err(|source| OwnerError::Uplink {
            iface: u.clone(),
            source,
        })?;
    }
    if let Some((device, _)) = &s.vxlan {
        dp.attach_overlay(device)
            .map_err(|source| OwnerError::Overlay {
                device: device.clone(),
                source,
            })?;
    }
    tracing::info!(pin_root = %s.pin_root.display(), uplinks = ?s.uplinks, routing = ?routing,
        policy_mode = ?s.policy_mode, previous_config = ?old, "datapath loaded and attached");
    Ok(dp)
}
