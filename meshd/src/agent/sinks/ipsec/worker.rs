//! The IPsec worker: one step = key file, rotation, SAs, policies, announce, status snapshot.
//! Errors never carry key material: key file errors name path, line and field only, and SA
//! errors come from netlink (errno) and name SPI and addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::SystemTime;

use common::{ClusterName, NodeName};
use crypto::ipsec::rotation::Announce;
use crypto::ipsec::xfrm::{POLICY_PRIORITY, Policy, Sa, Xfrm, XfrmError, XfrmPeer};
use crypto::ipsec::{IpsecNode, pair_keys};
use tokio::sync::watch;

use super::IpsecSettings;
use super::ids;
use super::plan::{self, PeerView, SaLedger};
use crate::agent::sinks::NodeTable;
use crate::nodes::NodeRecord;

/// A remote node: published key index, XFRM peers (or why none), announce, node number.
type Remote = (
    Option<u8>,
    Result<Vec<XfrmPeer>, String>,
    Option<Announce>,
    Option<u32>,
);

/// What identifies a version of the key file without reading it.
type Stamp = (u64, i64, i64, i64, u32);

fn stamp(m: &std::fs::Metadata) -> Stamp {
    (
        m.ino(),
        m.size() as i64,
        m.mtime_nsec(),
        m.ctime_nsec() + m.ctime(),
        m.mode(),
    )
}

/// The last step's result, for the status.
#[derive(Debug, Default, Clone)]
pub(super) struct Snapshot {
    pub peers: Vec<PeerView>,
    pub expected: usize,
    pub tunnel_prefixes: usize,
    pub announce: Option<Announce>,
    pub waiting_for: Vec<String>,
    pub key_loaded: Option<SystemTime>,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    node: Option<IpsecNode>,
    stamp: Option<Stamp>,
    key_error: Option<String>,
    key_loaded: Option<SystemTime>,
    ledger: SaLedger,
    xfrm_error: Option<String>,
    /// Peers refused for SAs (node numbers), to log changes once.
    refused: BTreeMap<String, String>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub local: ClusterName,
    pub me: NodeName,
    pub settings: IpsecSettings,
    own: NodeRecord,
    pub nodes: std::sync::Arc<NodeTable>,
    state: Mutex<State>,
    pub snapshot: Mutex<Snapshot>,
    publish: watch::Sender<Option<Announce>>,
}

impl Inner {
    pub fn new(
        settings: IpsecSettings,
        own: NodeRecord,
        publish: watch::Sender<Option<Announce>>,
    ) -> Self {
        Self {
            local: own.cluster.clone(),
            me: own.name.clone(),
            settings,
            own,
            nodes: std::sync::Arc::default(),
            state: Mutex::default(),
            snapshot: Mutex::default(),
            publish,
        }
    }

    /// Loads or reloads the key file when it changed. A bad file is reported once per
    /// version and changes nothing.
    fn key_file(&self, st: &mut State) {
        let path = &self.settings.key_file;
        let now = std::fs::metadata(path).map(|m| stamp(&m)).ok();
        if now.is_some() && now == st.stamp {
            return;
        }
        st.stamp = now;
        let me = self.me.to_string();
        let res = match st.node.as_mut() {
            None => IpsecNode::load(&me, path).map(|n| {
                tracing::info!(spi = n.rotation().announce().sends, "IPsec key loaded");
                st.node = Some(n);
            }),
            Some(n) => n.reload(path).map(|actions| {
                if !actions.is_empty() {
                    tracing::info!(?actions, "IPsec key file changed: rotation started");
                }
            }),
        };
        match res {
            Ok(()) => {
                st.key_error = None;
                st.key_loaded = Some(SystemTime::now());
            }
            Err(e) => {
                let msg = match st.node {
                    Some(_) => format!("{e}; the keys loaded before stay in use"),
                    None => format!("{e}; no IPsec until the key file is fixed"),
                };
                if st.key_error.as_ref() != Some(&msg) {
                    tracing::error!("{msg}");
                }
                st.key_error = Some(msg);
            }
        }
    }

    /// The remote nodes: name → (published SPI, XFRM peers or why none, announce, node
    /// number).
    fn peers(&self) -> BTreeMap<String, Remote> {
        let nodes = self.nodes.lock().expect("nodes lock");
        // This node's record as published now: a node that took another PodCIDR block
        // (IPPools, growth) protects the new block's traffic too.
        let own = nodes
            .get(&(self.local.clone(), self.me.clone()))
            .unwrap_or(&self.own);
        nodes
            .iter()
            .filter(|((c, n), _)| !(c == &self.local && n == &self.me))
            .map(|((c, n), r)| {
                let name = plan::peer_name(&self.local, c, n);
                let xp = plan::xfrm_peers(&name, own, r);
                let remote = (r.ipsec_key_index, xp, plan::announce_of(r), r.ipsec_node_id);
                (name, remote)
            })
            .collect()
    }

    /// Logs the peers refused for SAs when that changes.
    fn log_refused(seen: &mut BTreeMap<String, String>, refused: &BTreeMap<String, String>) {
        for (peer, why) in refused {
            if seen.get(peer) != Some(why) {
                tracing::warn!(peer = %peer, "IPsec SAs {why}");
            }
        }
        seen.clone_from(refused);
    }

    pub fn step(&self) {
        let mut guard = self.state.lock().expect("state lock");
        let st = &mut *guard;
        self.key_file(st);
        let peers = self.peers();
        let mode = self.settings.mode;
        let Some(node) = st.node.as_mut() else {
            let mut snap = self.snapshot.lock().expect("snapshot lock");
            snap.expected = peers.len();
            snap.last_error = st.key_error.clone();
            return;
        };
        // Rotation: the peers and their announces.
        let mut actions = node
            .rotation_mut()
            .set_peers(peers.keys().map(String::as_str));
        for (name, (_, _, a, _)) in &peers {
            if let Some(a) = a {
                actions.extend(node.rotation_mut().on_peer(name, a.clone()));
            }
        }
        if !actions.is_empty() {
            tracing::info!(?actions, "IPsec rotation stepped");
        }
        let accepts = node.rotation().announce().accepts;
        let xpeers: Vec<XfrmPeer> = peers
            .values()
            .filter_map(|(_, xp, _, _)| xp.as_ref().ok())
            .flatten()
            .cloned()
            .collect();
        let numbers = ids::numbers(
            self.own.ipsec_node_id,
            peers.iter().map(|(n, r)| (n.as_str(), r.3)),
        );
        Self::log_refused(&mut st.refused, &numbers.refused);
        let want_sas = plan::desired_sas(mode, &xpeers, &accepts, &numbers);
        let res = Xfrm::open().and_then(|x| {
            apply_sas(&x, node, &mut st.ledger, &want_sas, &xpeers);
            let want = plan::desired_policies(mode, &xpeers, &accepts, &st.ledger.installed);
            let sync = IpsecNode::sync_policies(&x, &want);
            let have: BTreeSet<Policy> = x
                .policies()?
                .into_iter()
                .filter(|p| p.priority == POLICY_PRIORITY)
                .collect();
            let sync = sync?;
            if !sync.added.is_empty() || !sync.removed.is_empty() {
                tracing::info!(
                    added = sync.added.len(),
                    removed = sync.removed.len(),
                    "XFRM policies reconciled"
                );
                tracing::debug!(?sync, "XFRM policy changes");
            }
            Ok((want, have))
        });
        node.forget_removed(&actions);
        st.ledger.settle(&want_sas);
        let announce = node.rotation().announce();
        let waiting_for = node
            .rotation()
            .waiting_for()
            .into_iter()
            .map(String::from)
            .collect();
        self.publish.send_if_modified(|cur| {
            let changed = cur.as_ref() != Some(&announce);
            *cur = Some(announce.clone());
            changed
        });
        let (want, have) = match res {
            Ok(wh) => {
                st.xfrm_error = None;
                wh
            }
            Err(e) => {
                let msg = format!("XFRM: {e}");
                if st.xfrm_error.as_ref() != Some(&msg) {
                    tracing::warn!("{msg}; retrying every {}s", super::TICK.as_secs());
                }
                st.xfrm_error = Some(msg);
                Default::default()
            }
        };
        let views_in: plan::PeerInputs = peers
            .into_iter()
            .map(|(n, (spi, xp, _, _))| (n, (spi, xp)))
            .collect();
        let views = plan::peer_views(
            mode,
            &views_in,
            &want,
            &have,
            &want_sas,
            &st.ledger,
            &numbers.refused,
        );
        let sa_errors = views
            .iter()
            .filter(|v| v.error.is_some() && v.path != "rejected")
            .count();
        let last_error = st.key_error.clone().or(st.xfrm_error.clone()).or_else(|| {
            let first = views
                .iter()
                .find(|v| v.path != "rejected")
                .and_then(|v| v.error.clone())?;
            Some(format!("SAs missing for {sa_errors} peer(s): {first}"))
        });
        *self.snapshot.lock().expect("snapshot lock") = Snapshot {
            expected: views.len(),
            tunnel_prefixes: xpeers.len(),
            peers: views,
            announce: Some(announce),
            waiting_for,
            key_loaded: st.key_loaded,
            last_error,
        };
    }
}

/// Removes the SAs no longer wanted, then adds the missing ones (retrying the failed), per
/// peer inbound before outbound (a peer may send as soon as it sees our outbound work).
fn apply_sas(
    x: &Xfrm,
    node: &IpsecNode,
    ledger: &mut SaLedger,
    want: &BTreeMap<crypto::ipsec::SaId, plan::SaSpec>,
    peers: &[XfrmPeer],
) {
    const EEXIST: i32 = 17;
    let p = ledger.plan(want);
    for id in p.remove {
        match x.delete_sa(&id) {
            Ok(()) => {
                ledger.installed.remove(&id);
            }
            Err(e) => tracing::warn!("{e}; retrying"),
        }
    }
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut add = p.add;
    add.sort_by_key(|(_, s)| !s.inbound);
    for (id, spec) in add {
        if failed.contains_key(&spec.peer) {
            continue;
        }
        let Some(key) = node.key(spec.key_index) else {
            continue;
        };
        let Some(peer) = peers.iter().find(|p| p.node == spec.peer) else {
            continue;
        };
        let keys = pair_keys(key, node.local(), &peer.node);
        let sa = Sa {
            src: id.src,
            dst: id.dst,
            spi: id.spi,
            key: if spec.inbound {
                &keys.inbound
            } else {
                &keys.outbound
            },
            mark: id.mark,
        };
        match x.add_sa(&sa) {
            Ok(()) => {
                ledger.installed.insert(id);
            }
            Err(XfrmError::Netlink { source, .. }) if source.errno() == Some(EEXIST) => {
                ledger.installed.insert(id);
            }
            Err(e) => {
                let dir = if spec.inbound { "inbound" } else { "outbound" };
                failed.insert(spec.peer.clone(), format!("{dir} SA: {e}"));
            }
        }
    }
    for (peer, e) in failed {
        if ledger.errors.get(&peer) != Some(&e) {
            tracing::warn!(peer = %peer, "IPsec SA install failed: {e}; policies stay, retrying every {}s", super::TICK.as_secs());
        }
        ledger.errors.insert(peer, e);
    }
}
