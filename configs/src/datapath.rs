//! `[datapath]`: how pod traffic leaves the node and where eBPF maps are pinned.

use std::path::PathBuf;

use crate::error::Errors;
use crate::node::absolute_path;
use crate::raw::RawDatapath;

pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/ironmesh";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathMode {
    /// Routed: pod CIDRs are reachable through BGP or the underlay.
    Native,
    /// Encapsulated in VXLAN between nodes.
    Vxlan { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datapath {
    pub mode: DatapathMode,
    /// Pin root for eBPF maps (must be on a bpffs mount).
    pub bpffs: PathBuf,
}

impl Default for Datapath {
    fn default() -> Self {
        Self {
            mode: DatapathMode::Native,
            bpffs: DEFAULT_BPFFS.into(),
        }
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
    Some(Datapath {
        mode: mode?,
        bpffs: bpffs?,
    })
}
