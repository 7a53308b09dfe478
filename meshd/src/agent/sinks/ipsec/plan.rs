//! The IPsec reconcile logic without I/O: node records → XFRM peers, the desired policies and
//! SAs for this node's mode and rotation state, what to add and remove, and each peer's path.
//!
//! What the mode means for IPsec (Linux checks `in`/`fwd` policies on every received packet
//! and `out` policies on every sent packet whose selector and mark match):
//! - `opportunistic`: `in`/`fwd` templates are optional (`level use`): plaintext from a peer
//!   still passes, ESP is accepted once the SA exists. Linux refuses optional tunnel-mode
//!   templates on `out` policies, so the `out` policy of a peer and SPI exists only once the
//!   outbound SA does (no SA → no policy → marked packets leave in clear, never dropped).
//! - `strict`: templates required everywhere and `out` policies for every peer and SPI in use:
//!   without an SA, marked packets to the peer and plaintext from its pods are dropped.
//! - `off`: no ironmesh policy and no SA.

use std::collections::{BTreeMap, BTreeSet};

use common::{ClusterName, NodeName};
use crypto::ipsec::SaId;
use crypto::ipsec::rotation::Announce;
use crypto::ipsec::spi::wire_spi;
use crypto::ipsec::xfrm::{self, Dir, Policy, XfrmPeer, out_mark};
use crypto::rollout::EncryptionMode;

use super::ids::Numbers;
use crate::nodes::NodeRecord;

/// The node-record label with the SPIs this node has inbound SAs for (`3` or `3.4` during a
/// rotation); `ipsec_key_index` is the SPI it sends with. Both together are the rotation's
/// [`Announce`].
pub const ACCEPTS_LABEL: &str = "ipsec.ironmesh.io/accepts";

/// `node` in the own cluster, `cluster/node` for the others (as for WireGuard peers).
pub fn peer_name(local: &ClusterName, cluster: &ClusterName, node: &NodeName) -> String {
    if cluster == local {
        node.to_string()
    } else {
        format!("{cluster}/{node}")
    }
}

/// The XFRM peers of a remote node: one per pair of PodCIDRs of the same family, between
/// the node addresses of that family. An error names what the record lacks.
pub fn xfrm_peers(name: &str, own: &NodeRecord, rec: &NodeRecord) -> Result<Vec<XfrmPeer>, String> {
    let addrs = |r: &NodeRecord| {
        [
            r.ipv4.map(std::net::IpAddr::V4),
            r.ipv6.map(std::net::IpAddr::V6),
        ]
    };
    let mut out = Vec::new();
    for (l, r) in addrs(own).into_iter().zip(addrs(rec)) {
        let (Some(local_ip), Some(remote_ip)) = (l, r) else {
            continue;
        };
        for lp in own
            .pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == local_ip.is_ipv4())
        {
            for rp in rec
                .pod_cidrs
                .iter()
                .filter(|c| c.addr().is_ipv4() == local_ip.is_ipv4())
            {
                out.push(XfrmPeer {
                    node: name.to_string(),
                    local_ip,
                    remote_ip,
                    local_pods: *lp,
                    remote_pods: *rp,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "node {name}: no node address and PodCIDR of a family this node has (record: ipv4 {:?}, ipv6 {:?}, pod_cidrs {:?})",
            rec.ipv4, rec.ipv6, rec.pod_cidrs
        ));
    }
    Ok(out)
}

/// A peer's announce from its record (`None`: it publishes no IPsec key).
pub fn announce_of(rec: &NodeRecord) -> Option<Announce> {
    let sends = rec.ipsec_key_index?;
    let mut accepts: BTreeSet<u8> = rec
        .labels
        .get(ACCEPTS_LABEL)
        .unwrap_or_default()
        .split('.')
        .filter_map(|s| s.parse().ok())
        .collect();
    accepts.insert(sends);
    Some(Announce { accepts, sends })
}

/// `rec` publishing `a`.
pub fn with_announce(rec: &NodeRecord, a: &Announce) -> NodeRecord {
    let mut r = rec.clone();
    r.ipsec_key_index = Some(a.sends);
    let accepts: Vec<String> = a.accepts.iter().map(u8::to_string).collect();
    if let Err(e) = r.labels.insert(ACCEPTS_LABEL, accepts.join(".")) {
        tracing::warn!(error = %e, "cannot label the node record with the accepted SPIs");
    }
    r
}

/// One SA this node wants: for `peer`, inbound or outbound, with key index `key_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaSpec {
    pub peer: String,
    pub inbound: bool,
    pub key_index: u8,
}

/// The SAs for `peers` with every key index in `accepts` (keys are derived per direction;
/// the out SA carries the index's out mark). Each SA's wire SPI is its sender's
/// ([`wire_spi`]): outbound this node's number, inbound the peer's, so every peer has its own
/// inbound SA (RFC 4303 §2.1). Peers without a usable number ([`Numbers::refused`]) and
/// mode off: none.
pub fn desired_sas(
    mode: EncryptionMode,
    peers: &[XfrmPeer],
    accepts: &BTreeSet<u8>,
    numbers: &Numbers,
) -> BTreeMap<SaId, SaSpec> {
    let mut out = BTreeMap::new();
    let Some(own) = numbers.own else {
        return out;
    };
    if mode == EncryptionMode::Off {
        return out;
    }
    for p in peers {
        let Some(&remote) = numbers.peers.get(&p.node) else {
            continue;
        };
        for &k in accepts {
            // Key indexes come from the key file (1..=15) and numbers were checked.
            let (Ok(spi_in), Ok(spi_out)) = (wire_spi(k, remote), wire_spi(k, own)) else {
                continue;
            };
            let spec = |inbound| SaSpec {
                peer: p.node.clone(),
                inbound,
                key_index: k,
            };
            out.insert(inbound_sa(p, spi_in), spec(true));
            out.insert(outbound_sa(p, k, spi_out), spec(false));
        }
    }
    out
}

/// The SA of `p`'s traffic to this node (no mark: found by SPI).
pub fn inbound_sa(p: &XfrmPeer, spi: u32) -> SaId {
    SaId {
        src: p.remote_ip,
        dst: p.local_ip,
        spi,
        mark: None,
    }
}

/// The SA of this node's traffic to `p` with key index `k` (its out mark).
pub fn outbound_sa(p: &XfrmPeer, k: u8, spi: u32) -> SaId {
    SaId {
        src: p.local_ip,
        dst: p.remote_ip,
        spi,
        mark: Some(out_mark(k)),
    }
}

fn has_outbound(installed: &BTreeSet<SaId>, p: &XfrmPeer, k: u8) -> bool {
    installed
        .iter()
        .any(|id| id.src == p.local_ip && id.dst == p.remote_ip && id.mark == Some(out_mark(k)))
}

/// The policies for `peers` (see the module doc for what the mode changes). `installed`:
/// the SAs in the kernel (opportunistic `out` policies wait for theirs).
pub fn desired_policies(
    mode: EncryptionMode,
    peers: &[XfrmPeer],
    accepts: &BTreeSet<u8>,
    installed: &BTreeSet<SaId>,
) -> BTreeSet<Policy> {
    let mut out = BTreeSet::new();
    let Some(&first) = accepts.first() else {
        return out;
    };
    if mode == EncryptionMode::Off {
        return out;
    }
    let optional = mode == EncryptionMode::Opportunistic;
    for p in peers {
        for &spi in accepts {
            for mut pol in xfrm::policies(p, spi) {
                match pol.dir {
                    Dir::Out => {
                        if optional && !has_outbound(installed, p, spi) {
                            continue;
                        }
                    }
                    Dir::In | Dir::Fwd if spi != first => continue,
                    Dir::In | Dir::Fwd => pol.optional = optional,
                }
                out.insert(pol);
            }
        }
    }
    out
}

/// The SAs this node installed and the last failure per peer.
#[derive(Debug, Default)]
pub struct SaLedger {
    pub installed: BTreeSet<SaId>,
    pub errors: BTreeMap<String, String>,
}

/// What to do with SAs, in order: remove, then add.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SaPlan {
    pub remove: Vec<SaId>,
    pub add: Vec<(SaId, SaSpec)>,
}

impl SaLedger {
    /// The SAs to add (missing, including those that failed before: retried) and to remove.
    pub fn plan(&self, desired: &BTreeMap<SaId, SaSpec>) -> SaPlan {
        SaPlan {
            remove: self
                .installed
                .iter()
                .filter(|id| !desired.contains_key(id))
                .cloned()
                .collect(),
            add: desired
                .iter()
                .filter(|(id, _)| !self.installed.contains(id))
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect(),
        }
    }

    /// Errors of peers that are gone are dropped; a peer with all its SAs has none.
    pub fn settle(&mut self, desired: &BTreeMap<SaId, SaSpec>) {
        let missing: BTreeSet<&str> = desired
            .iter()
            .filter(|(id, _)| !self.installed.contains(id))
            .map(|(_, s)| s.peer.as_str())
            .collect();
        self.errors
            .retain(|peer, _| missing.contains(peer.as_str()));
    }
}

/// A peer's state, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub node: String,
    /// `ipsec` (SAs and policies in place), `clear_no_sa` (opportunistic: policies in
    /// place, no SA: pod traffic in clear), `blocked_no_sa` (strict: no SA: pod traffic
    /// dropped), `pending` (policies not in place yet), `rejected` (unusable record).
    pub path: &'static str,
    /// The SPI the peer publishes (its `ipsec_key_index`).
    pub spi: Option<u8>,
    pub error: Option<String>,
}

/// The remote nodes by peer name: the SPI each publishes and its XFRM peers (or why none).
pub type PeerInputs = BTreeMap<String, (Option<u8>, Result<Vec<XfrmPeer>, String>)>;

/// Each peer's path from the desired and actual state; `refused`: peers without SAs by
/// design (no usable node number), shown as SA failures with the reason.
pub fn peer_views(
    mode: EncryptionMode,
    peers: &PeerInputs,
    desired_policies: &BTreeSet<Policy>,
    have_policies: &BTreeSet<Policy>,
    desired_sas: &BTreeMap<SaId, SaSpec>,
    ledger: &SaLedger,
    refused: &BTreeMap<String, String>,
) -> Vec<PeerView> {
    peers
        .iter()
        .map(|(node, (spi, xp))| {
            let (path, error) = match xp {
                Err(e) => ("rejected", Some(e.clone())),
                Ok(xp) => {
                    let mine = |p: &&Policy| {
                        xp.iter().any(|x| {
                            (p.dst == x.remote_pods && p.src == x.local_pods)
                                || (p.src == x.remote_pods && p.dst == x.local_pods)
                        })
                    };
                    let pols_ok = desired_policies
                        .iter()
                        .filter(mine)
                        .all(|p| have_policies.contains(p));
                    let sas_ok = !refused.contains_key(node)
                        && desired_sas
                            .iter()
                            .filter(|(_, s)| &s.peer == node)
                            .all(|(id, _)| ledger.installed.contains(id));
                    let path = match (pols_ok, sas_ok, mode) {
                        (false, _, _) => "pending",
                        (true, true, _) => "ipsec",
                        (true, false, EncryptionMode::Strict) => "blocked_no_sa",
                        (true, false, _) => "clear_no_sa",
                    };
                    let error = refused.get(node).or(ledger.errors.get(node));
                    (path, error.cloned())
                }
            };
            PeerView {
                node: node.clone(),
                path,
                spi: *spi,
                error,
            }
        })
        .collect()
}
