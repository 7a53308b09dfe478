//! `[datapath]`: how pod traffic leaves the node, where eBPF maps are pinned, and whether
//! meshd loads and attaches the programs itself (`load = true`).

use std::path::PathBuf;

use crate::error::Errors;
use crate::node::absolute_path;
use crate::raw::RawDatapath;

pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/ironmesh";
/// Default name of the flow-based (`external`) VXLAN device meshd creates in VXLAN mode.
pub const DEFAULT_VXLAN_DEVICE: &str = "ironmesh_vxlan";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathMode {
    /// Routed: pod CIDRs are reachable through BGP or the underlay.
    Native,
    /// Encapsulated in VXLAN between nodes.
    Vxlan { port: u16 },
}

/// `datapath.policy_enforcement`: which endpoints network policy polices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyEnforcement {
    /// An endpoint is default-deny in a direction once a policy selects it there.
    #[default]
    Default,
    /// Every endpoint is default-deny, selected or not.
    Always,
    /// Nothing is enforced.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datapath {
    pub mode: DatapathMode,
    /// Pin root for eBPF maps (must be on a bpffs mount).
    pub bpffs: PathBuf,
    /// meshd loads the programs (reusing pins), writes the datapath config and attaches
    /// host_ingress to `uplinks` (and overlay_ingress to the VXLAN device in VXLAN mode).
    pub load: bool,
    /// Underlay devices host_ingress is attached to (only with `load`).
    pub uplinks: Vec<String>,
    /// The `external` VXLAN device meshd creates in VXLAN mode (only with `load`).
    pub vxlan_device: String,
    pub policy_enforcement: PolicyEnforcement,
    /// How many flow records meshd keeps (its ring, served by `ironctl observe`); 0: meshd
    /// does not read the datapath's events (only with `load`: the events ring buffer has one
    /// reader, which is then meshd, not `ironctl monitor`).
    pub flows: usize,
}

/// The largest `datapath.flows`.
pub const MAX_FLOWS: i64 = 1 << 20;

impl Default for Datapath {
    fn default() -> Self {
        Self {
            mode: DatapathMode::Native,
            bpffs: DEFAULT_BPFFS.into(),
            load: false,
            uplinks: Vec::new(),
            vxlan_device: DEFAULT_VXLAN_DEVICE.into(),
            policy_enforcement: PolicyEnforcement::Default,
            flows: 0,
        }
    }
}

/// A Linux interface name: 1..=15 bytes, no '/', whitespace or ':'.
pub(crate) fn ifname_ok(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn ifname(errs: &mut Errors, path: &str, v: &str) -> Option<String> {
    if ifname_ok(v) {
        Some(v.to_string())
    } else {
        errs.push(
            path,
            format!("{v:?} is not an interface name; use 1 to 15 letters, digits, '-', '_' or '.'"),
        );
        None
    }
}

pub(crate) fn validate(raw: Option<RawDatapath>, errs: &mut Errors) -> Option<Datapath> {
    let Some(raw) = raw else {
        return Some(Datapath::default());
    };
    let mode = match raw.mode.as_deref().unwrap_or("native") {
        "native" => {
            if raw.vxlan_port.is_some() {
                errs.push(
                    "datapath.vxlan_port",
                    "is set but mode is \"native\"; remove it or set mode = \"vxlan\"",
                );
            }
            Some(DatapathMode::Native)
        }
        "vxlan" => match raw.vxlan_port {
            Some(p) => errs.int("datapath.vxlan_port", p, 1, 65535, "a UDP port"),
            None => Some(DEFAULT_VXLAN_PORT),
        }
        .map(|port| DatapathMode::Vxlan { port }),
        other => {
            errs.push(
                "datapath.mode",
                format!("{other:?} is not a datapath mode; use \"native\" or \"vxlan\""),
            );
            None
        }
    };
    let bpffs = absolute_path(
        errs,
        "datapath.bpffs",
        raw.bpffs.as_deref().unwrap_or(DEFAULT_BPFFS),
    );
    let load = raw.load.unwrap_or(false);
    let mut uplinks = Some(Vec::new());
    for (i, u) in raw.uplinks.iter().flatten().enumerate() {
        let path = format!("datapath.uplinks[{i}]");
        match (ifname(errs, &path, u), uplinks.as_mut()) {
            (Some(u), Some(list)) if list.contains(&u) => {
                errs.push(path, format!("{u:?} is listed twice; keep one"));
                uplinks = None;
            }
            (Some(u), Some(list)) => list.push(u),
            _ => uplinks = None,
        }
    }
    if !load && raw.uplinks.as_ref().is_some_and(|u| !u.is_empty()) {
        errs.push(
            "datapath.uplinks",
            "is set but meshd does not load the datapath; set datapath.load = true or remove uplinks",
        );
    }
    if !load && raw.vxlan_device.is_some() {
        errs.push(
            "datapath.vxlan_device",
            "is set but meshd does not load the datapath; set datapath.load = true or remove it",
        );
    }
    let vxlan_device = match raw.vxlan_device.as_deref() {
        Some(d) => ifname(errs, "datapath.vxlan_device", d),
        None => Some(DEFAULT_VXLAN_DEVICE.to_string()),
    };
    if let (Some(DatapathMode::Native), Some(_)) = (mode, &raw.vxlan_device) {
        errs.push(
            "datapath.vxlan_device",
            "is set but mode is \"native\"; remove it or set mode = \"vxlan\"",
        );
    }
    let policy_enforcement = match raw.policy_enforcement.as_deref() {
        None | Some("default") => Some(PolicyEnforcement::Default),
        Some("always") => Some(PolicyEnforcement::Always),
        Some("never") => Some(PolicyEnforcement::Never),
        Some(other) => {
            errs.push(
                "datapath.policy_enforcement",
                format!(
                    "{other:?} is not a mode; use \"default\" (endpoints selected by a policy), \
                     \"always\" (every endpoint) or \"never\""
                ),
            );
            None
        }
    };
    let flows = match raw.flows {
        None => Some(0),
        Some(_) if !load => {
            errs.push(
                "datapath.flows",
                "is set but meshd does not load the datapath (it reads the events of the \
                 datapath it owns); set datapath.load = true or remove it",
            );
            None
        }
        Some(n) => errs.int::<usize>(
            "datapath.flows",
            n,
            0,
            MAX_FLOWS,
            "a number of flow records",
        ),
    };
    Some(Datapath {
        flows: flows?,
        mode: mode?,
        bpffs: bpffs?,
        load,
        uplinks: uplinks?,
        vxlan_device: vxlan_device?,
        policy_enforcement: policy_enforcement?,
    })
}
