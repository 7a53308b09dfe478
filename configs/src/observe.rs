//! `[observe]`: who reads this node's flow records besides its own API (issue 17).
//!
//! ```toml
//! [observe]
//! serve = true   # this node's flows on <node address>:<port> for relays
//! port = 4244    # where every node serves them (and relays reach them)
//! relay = true   # `ironctl observe --mesh` through this meshd: every node of every cluster
//! ui = "127.0.0.1:4245"  # the flows page (service map, flow table) of the relay's flows
//! ```

use crate::error::Errors;
use crate::raw::RawObserve;

/// Default of `observe.port` (Hubble's peer port).
pub const DEFAULT_OBSERVE_PORT: u16 = 4244;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observe {
    /// Serve this node's flow records on `<node address>:<port>` (the node record's IPv4
    /// address: `mesh.node_ipv4`, else the host's first global one; plaintext gRPC, the
    /// `NodeFlows` service: flows only, read-only).
    pub serve: bool,
    pub port: u16,
    /// This meshd's API answers `Flows` for the whole mesh: it reaches every node of every
    /// cluster in its merged view at `<node address>:<port>` and merges their flows.
    pub relay: bool,
    /// Serve the flows page (service map and flow table of the relay's flows) here.
    pub ui: Option<std::net::SocketAddr>,
}

impl Default for Observe {
    fn default() -> Self {
        Observe {
            serve: false,
            port: DEFAULT_OBSERVE_PORT,
            relay: false,
            ui: None,
        }
    }
}

/// `flows`: `datapath.flows` (0: none); `node_ipv4`: whether `mesh.node_ipv4` is set (`None`:
/// no `[mesh]`).
pub(crate) fn validate(
    raw: Option<RawObserve>,
    flows: Option<usize>,
    node_ipv4: Option<bool>,
    errs: &mut Errors,
) -> Option<Observe> {
    let Some(raw) = raw else {
        return Some(Observe::default());
    };
    let port = match raw.port {
        None => Some(DEFAULT_OBSERVE_PORT),
        Some(p) => errs.int("observe.port", p, 1, 65535, "a TCP port"),
    };
    let serve = raw.serve.unwrap_or(false);
    let relay = raw.relay.unwrap_or(false);
    if serve && flows == Some(0) {
        errs.push(
            "observe.serve",
            "there are no flow records to serve; set datapath.flows (with datapath.load = true)",
        );
    }
    if serve && node_ipv4.is_none() {
        errs.push(
            "observe.serve",
            "needs [mesh] (relays reach this node at its node record's address)",
        );
    }
    if relay && node_ipv4.is_none() {
        errs.push(
            "observe.relay",
            "needs [mesh] (the relay finds the nodes in the mesh's node records)",
        );
    }
    let ui = match raw.ui.as_deref() {
        None => Some(None),
        Some(a) => match a.parse::<std::net::SocketAddr>() {
            Ok(addr) if relay => Some(Some(addr)),
            Ok(_) => {
                errs.push(
                    "observe.ui",
                    "the page shows the relay's flows; set observe.relay = true or remove it",
                );
                None
            }
            Err(_) => {
                errs.push(
                    "observe.ui",
                    format!("{a:?} is not an address; use IP:PORT, e.g. \"127.0.0.1:4245\""),
                );
                None
            }
        },
    };
    Some(Observe {
        serve,
        port: port?,
        relay,
        ui: ui?,
    })
}
