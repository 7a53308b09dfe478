//! BFD in the lab: timers shared by the BIRD and FRR configs, and nftables cuts that drop BFD
//! and BGP on a host without touching the link.

use crate::error::{Result, io_err};
use crate::lab::Host;

/// BFD timers (RFC 5880 §6.8): Desired Min TX, Required Min RX (ms) and Detect Mult.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    pub min_tx_ms: u32,
    pub min_rx_ms: u32,
    pub multiplier: u8,
}

impl BfdTimers {
    /// `ms` both ways, `mult` missed packets.
    pub fn new(ms: u32, mult: u8) -> BfdTimers {
        BfdTimers {
            min_tx_ms: ms,
            min_rx_ms: ms,
            multiplier: mult,
        }
    }
}

/// The nftables table [`drop_bfd_and_bgp`] installs.
const TABLE: &str = "lab_cut";

/// Drops BFD (UDP 3784) and BGP (TCP 179) in and out of `host`, so both sides lose both.
pub fn drop_bfd_and_bgp(host: &Host) -> Result<()> {
    let script = format!(
        "table inet {TABLE} {{\n\
         \x20 chain input {{ type filter hook input priority 0; policy accept;\n\
         \x20   udp dport 3784 drop\n    tcp dport 179 drop\n    tcp sport 179 drop\n  }}\n\
         \x20 chain output {{ type filter hook output priority 0; policy accept;\n\
         \x20   udp dport 3784 drop\n    tcp dport 179 drop\n    tcp sport 179 drop\n  }}\n}}\n"
    );
    let path = host.path("nft-cut.nft");
    std::fs::write(&path, script).map_err(io_err("writing the nft script"))?;
    host.exec("nft", &["-f", &path.to_string_lossy()]).map(drop)
}

/// Removes what [`drop_bfd_and_bgp`] installed.
pub fn restore_bfd_and_bgp(host: &Host) -> Result<()> {
    host.exec("nft", &["delete", "table", "inet", TABLE])
        .map(drop)
}
