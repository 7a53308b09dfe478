//! SPI rotation without loss, sans-IO: old and new SAs overlap until every node switched.
//!
//! Each node publishes what it has *installed* (after installing, never before):
//! `accepts` (SPIs it has inbound SAs for) and `sends` (the SPI of its outbound SAs).
//!
//! 1. A new key file is loaded: install inbound SAs for the new SPI next to the old ones;
//!    publish.
//! 2. Once every peer publishes that it accepts the new SPI: switch outbound (new out SAs
//!    and policies, the datapath marks with the new SPI), then publish.
//! 3. Once no peer publishes that it sends an old SPI (and we do not): remove that SPI's SAs
//!    and policies; publish.
//!
//! Published state lags installed state, and both only move forward, so a node never sends
//! with an SPI a peer cannot decrypt, and never removes an SPI a peer still sends with.
//! Limit: a node that joins during a rotation only has the new key; finish a rotation before
//! adding nodes (a peer that never announces blocks step 2, visibly, in [`Rotation::waiting_for`]).

use std::collections::{BTreeMap, BTreeSet};

/// What a node publishes about its SAs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Announce {
    pub accepts: BTreeSet<u8>,
    pub sends: u8,
}

/// What the I/O layer must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Inbound SAs (and in/fwd policies) for this SPI, for every peer.
    InstallInbound(u8),
    /// Outbound SAs and out policies for `to`; the datapath marks with `to` from now on.
    SwitchOutbound { from: u8, to: u8 },
    /// Remove every SA and policy of this SPI.
    Remove(u8),
    /// Publish this node's announce (after the actions before it are done).
    Publish(Announce),
}

/// One node's rotation state.
#[derive(Debug, Clone)]
pub struct Rotation {
    accepts: BTreeSet<u8>,
    sends: u8,
    latest: u8,
    peers: BTreeMap<String, Option<Announce>>,
}

impl Rotation {
    /// A node in steady state with `spi` (its SAs installed).
    pub fn new(spi: u8) -> Self {
        Self {
            accepts: [spi].into(),
            sends: spi,
            latest: spi,
            peers: BTreeMap::new(),
        }
    }

    pub fn announce(&self) -> Announce {
        Announce {
            accepts: self.accepts.clone(),
            sends: self.sends,
        }
    }

    /// Peers whose announce keeps the rotation from its next step.
    pub fn waiting_for(&self) -> Vec<&str> {
        self.peers
            .iter()
            .filter(|(_, a)| match a {
                None => true,
                Some(a) => {
                    !a.accepts.contains(&self.latest)
                        || (self.sends == self.latest && a.sends != self.latest)
                }
            })
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// True when only the latest SPI is in use here.
    pub fn is_settled(&self) -> bool {
        self.sends == self.latest && self.accepts.len() == 1
    }

    /// The mesh's node list changed: new peers are unknown until they announce.
    pub fn set_peers<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<Action> {
        let names: BTreeSet<&str> = names.into_iter().collect();
        self.peers.retain(|n, _| names.contains(n.as_str()));
        for n in names {
            self.peers.entry(n.to_string()).or_insert(None);
        }
        self.advance()
    }

    /// A new key file with `spi` was loaded.
    pub fn on_key(&mut self, spi: u8) -> Vec<Action> {
        if spi == self.latest {
            return Vec::new();
        }
        self.latest = spi;
        let mut out = Vec::new();
        if self.accepts.insert(spi) {
            out.push(Action::InstallInbound(spi));
            out.push(Action::Publish(self.announce()));
        }
        out.extend(self.advance());
        out
    }

    /// A peer published its announce.
    pub fn on_peer(&mut self, node: &str, announce: Announce) -> Vec<Action> {
        self.peers.insert(node.to_string(), Some(announce));
        self.advance()
    }

    fn advance(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let known: Vec<&Announce> = self.peers.values().flatten().collect();
        let all_known = known.len() == self.peers.len();
        if self.sends != self.latest
            && all_known
            && known.iter().all(|a| a.accepts.contains(&self.latest))
        {
            out.push(Action::SwitchOutbound {
                from: self.sends,
                to: self.latest,
            });
            self.sends = self.latest;
        }
        let old: Vec<u8> = self
            .accepts
            .iter()
            .copied()
            .filter(|&s| s != self.latest && s != self.sends)
            .filter(|&s| all_known && known.iter().all(|a| a.sends != s))
            .collect();
        for s in old {
            self.accepts.remove(&s);
            out.push(Action::Remove(s));
        }
        if !out.is_empty() {
            out.push(Action::Publish(self.announce()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A node as the I/O layer would run it: installed state follows the actions.
    struct Node {
        name: String,
        rot: Rotation,
        installed: BTreeSet<u8>,
        sending: u8,
        removed: Vec<u8>,
    }

    struct Mesh {
        nodes: Vec<Node>,
        /// (to, from, announce) in flight.
        wire: VecDeque<(usize, String, Announce)>,
        seed: u64,
        max_overlap: usize,
    }

    impl Mesh {
        fn new(n: usize, spi: u8, seed: u64) -> Self {
            let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let mut nodes: Vec<Node> = names
                .iter()
                .map(|name| Node {
                    name: name.clone(),
                    rot: Rotation::new(spi),
                    installed: [spi].into(),
                    sending: spi,
                    removed: Vec::new(),
                })
                .collect();
            for node in &mut nodes {
                let peers: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|p| *p != node.name)
                    .collect();
                node.rot.set_peers(peers);
                for p in names.iter().filter(|p| **p != node.name) {
                    node.rot.on_peer(
                        p,
                        Announce {
                            accepts: [spi].into(),
                            sends: spi,
                        },
                    );
                }
            }
            Self {
                nodes,
                wire: VecDeque::new(),
                seed,
                max_overlap: 1,
            }
        }

        fn run(&mut self, i: usize, actions: Vec<Action>) {
            for a in actions {
                let node = &mut self.nodes[i];
                match a {
                    Action::InstallInbound(s) => {
                        node.installed.insert(s);
                    }
                    Action::SwitchOutbound { from, to } => {
                        assert_eq!(from, node.sending);
                        node.sending = to;
                    }
                    Action::Remove(s) => {
                        node.installed.remove(&s);
                        node.removed.push(s);
                    }
                    Action::Publish(ann) => {
                        let from = node.name.clone();
                        for j in (0..self.nodes.len()).filter(|&j| j != i) {
                            self.wire.push_back((j, from.clone(), ann.clone()));
                        }
                    }
                }
                self.max_overlap = self.max_overlap.max(self.nodes[i].installed.len());
                self.check();
            }
        }

        /// The invariant: everyone can decrypt what everyone sends.
        fn check(&self) {
            for a in &self.nodes {
                for b in self.nodes.iter().filter(|b| b.name != a.name) {
                    assert!(
                        b.installed.contains(&a.sending),
                        "{} sends SPI {} but {} has only {:?}",
                        a.name,
                        a.sending,
                        b.name,
                        b.installed
                    );
                }
            }
        }

        fn rand(&mut self) -> u64 {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.seed >> 33
        }

        /// Delivers announces in a pseudo-random order across node pairs, in order within a
        /// pair (as a watch on a node's record does), until none is in flight (bounded).
        fn settle(&mut self) {
            for _ in 0..10_000 {
                if self.wire.is_empty() {
                    return;
                }
                let k = (self.rand() as usize) % self.wire.len();
                let (to, from) = (self.wire[k].0, self.wire[k].1.clone());
                let k = self
                    .wire
                    .iter()
                    .position(|(t, f, _)| *t == to && *f == from)
                    .unwrap();
                let (to, from, ann) = self.wire.remove(k).unwrap();
                let actions = self.nodes[to].rot.on_peer(&from, ann);
                self.run(to, actions);
            }
            panic!("announces never settled");
        }
    }

    /// Three nodes, the new key reaches them one at a time with announces in between, in
    /// 200 different delivery orders: nobody ever sends an SPI someone cannot decrypt; the
    /// SAs of both SPIs overlap; in the end only the new SPI is left everywhere.
    #[test]
    fn rotation_story_overlaps_then_removes_the_old_spi() {
        for seed in 0..200 {
            let mut m = Mesh::new(3, 3, seed);
            for i in 0..3 {
                let actions = m.nodes[i].rot.on_key(4);
                assert_eq!(actions[0], Action::InstallInbound(4));
                m.run(i, actions);
                // Some announces arrive before the next node gets the key.
                for _ in 0..(m.rand() % 3) {
                    if let Some((to, from, ann)) = m.wire.pop_front() {
                        let a = m.nodes[to].rot.on_peer(&from, ann);
                        m.run(to, a);
                    }
                }
            }
            m.settle();
            assert_eq!(m.max_overlap, 2, "seed {seed}: old and new overlapped");
            for n in &m.nodes {
                assert_eq!(n.installed, [4].into(), "seed {seed}: {}", n.name);
                assert_eq!((n.sending, n.removed.as_slice()), (4, &[3][..]));
                assert!(n.rot.is_settled() && n.rot.waiting_for().is_empty());
            }
        }
    }

    /// A node that never loads the new key holds the others on the old SPI (no loss) and is
    /// named; removing it from the mesh lets the rotation finish.
    #[test]
    fn a_lagging_node_blocks_visibly_and_its_removal_unblocks() {
        let mut m = Mesh::new(3, 7, 1);
        for i in 0..2 {
            let a = m.nodes[i].rot.on_key(8);
            m.run(i, a);
        }
        m.settle();
        assert_eq!(m.nodes[0].sending, 7, "n3 cannot decrypt 8 yet");
        assert_eq!(m.nodes[0].rot.waiting_for(), ["n3"]);
        assert_eq!(m.nodes[0].installed, [7, 8].into());
        // n3 leaves the mesh.
        for i in 0..2 {
            let peer = if i == 0 { "n2" } else { "n1" };
            let a = m.nodes[i].rot.set_peers([peer]);
            // Run without the removed node's invariant.
            for act in a {
                match act {
                    Action::SwitchOutbound { to, .. } => m.nodes[i].sending = to,
                    Action::Remove(s) => {
                        m.nodes[i].installed.remove(&s);
                    }
                    Action::Publish(ann) => {
                        let from = m.nodes[i].name.clone();
                        m.wire.push_back((1 - i, from, ann));
                    }
                    Action::InstallInbound(_) => {}
                }
            }
        }
        m.nodes.truncate(2);
        m.settle();
        for n in &m.nodes {
            assert_eq!((n.sending, &n.installed), (8, &[8].into()), "{}", n.name);
        }
    }

    #[test]
    fn loading_the_same_key_again_does_nothing() {
        let mut r = Rotation::new(3);
        r.set_peers(["n2"]);
        assert!(r.on_key(3).is_empty());
        // An unknown peer (no announce yet) blocks the switch.
        let a = r.on_key(4);
        assert_eq!(
            a,
            [
                Action::InstallInbound(4),
                Action::Publish(Announce {
                    accepts: [3, 4].into(),
                    sends: 3
                })
            ]
        );
        assert_eq!(r.waiting_for(), ["n2"]);
    }
}
