//! One node's IPsec: the loaded keys per SPI, the rotation, and the XFRM objects they imply.
//!
//! Policies are reconciled like WireGuard peers: the desired set (per peer `in` + `fwd`, and
//! one `out` per SPI still installed, so packets the datapath marks with an old SPI never
//! leave unencrypted during a switch) against what the kernel has (ironmesh's policies are
//! those with priority [`POLICY_PRIORITY`]); only the difference is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::derive::pair_keys;
use super::keyfile::{self, IpsecKey, KeyFileError};
use super::rotation::{Action, Rotation};
use super::spi::{SpiError, wire_spi};
use super::xfrm::{
    Dir, POLICY_PRIORITY, Policy, Sa, Xfrm, XfrmError, XfrmPeer, out_mark, policies,
};

/// A node's IPsec state.
#[derive(Debug)]
pub struct IpsecNode {
    local: String,
    /// Keys of the SPIs this node still has SAs for (the latest and, during a rotation, older).
    keys: BTreeMap<u8, IpsecKey>,
    rotation: Rotation,
}

/// Why [`IpsecNode::install_sas`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Spi(#[from] SpiError),
    #[error(transparent)]
    Xfrm(#[from] XfrmError),
}

/// What a policy sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicySync {
    pub added: Vec<Policy>,
    pub removed: Vec<Policy>,
}

impl IpsecNode {
    /// Loads the key file; the node starts settled on its SPI.
    pub fn load(local: &str, key_file: &Path) -> Result<Self, KeyFileError> {
        let key = keyfile::load(key_file)?;
        Ok(Self::with_key(local, key))
    }

    pub fn with_key(local: &str, key: IpsecKey) -> Self {
        let spi = key.spi;
        Self {
            local: local.into(),
            keys: [(spi, key)].into(),
            rotation: Rotation::new(spi),
        }
    }

    /// This node's name (the key derivation's local identity).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The shared key of `spi`, while this node keeps it.
    pub fn key(&self, spi: u8) -> Option<&IpsecKey> {
        self.keys.get(&spi)
    }

    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    pub fn rotation_mut(&mut self) -> &mut Rotation {
        &mut self.rotation
    }

    /// Re-reads the key file. A bad file is an error and changes nothing: the current keys
    /// stay in use. A new SPI starts a rotation (the returned actions).
    pub fn reload(&mut self, key_file: &Path) -> Result<Vec<Action>, KeyFileError> {
        let key = keyfile::load(key_file)?;
        let spi = key.spi;
        self.keys.entry(spi).or_insert(key);
        Ok(self.rotation.on_key(spi))
    }

    /// Applies a rotation action's effect on the kept keys (after the XFRM work is done).
    pub fn forget_removed(&mut self, actions: &[Action]) {
        for a in actions {
            if let Action::Remove(spi) = a {
                self.keys.remove(spi);
            }
        }
    }

    /// SPIs with SAs on this node.
    pub fn spis(&self) -> Vec<u8> {
        self.rotation.announce().accepts.into_iter().collect()
    }

    /// The policies for `peers` with the SPIs in use.
    pub fn desired_policies(&self, peers: &[XfrmPeer]) -> BTreeSet<Policy> {
        let spis = self.spis();
        let mut out = BTreeSet::new();
        for peer in peers {
            for spi in &spis {
                for p in policies(peer, *spi) {
                    if p.dir == Dir::Out || *spi == spis[0] {
                        out.insert(p);
                    }
                }
            }
        }
        out
    }

    /// Makes the kernel's ironmesh policies equal `desired`: adds first, then removes.
    pub fn sync_policies(xfrm: &Xfrm, desired: &BTreeSet<Policy>) -> Result<PolicySync, XfrmError> {
        let have: BTreeSet<Policy> = xfrm
            .policies()?
            .into_iter()
            .filter(|p| p.priority == POLICY_PRIORITY)
            .collect();
        let mut sync = PolicySync::default();
        for p in desired.difference(&have) {
            xfrm.put_policy(p)?;
            sync.added.push(p.clone());
        }
        for p in have.difference(desired) {
            xfrm.delete_policy(p)?;
            sync.removed.push(p.clone());
        }
        Ok(sync)
    }

    /// Installs the inbound and outbound SAs with `peer` for every SPI in use, inbound first.
    /// `local` and `remote` are the two nodes' numbers: the wire SPI of each direction is
    /// its sender's ([`wire_spi`], RFC 4303 §2.1). Stops at the first error (on a kernel
    /// without ESP: [`XfrmError::EspUnavailable`] for all of them).
    pub fn install_sas(
        &self,
        xfrm: &Xfrm,
        peer: &XfrmPeer,
        (local, remote): (u32, u32),
    ) -> Result<usize, InstallError> {
        let mut n = 0;
        for (spi, key) in &self.keys {
            let pair = pair_keys(key, &self.local, &peer.node);
            xfrm.add_sa(&Sa {
                src: peer.remote_ip,
                dst: peer.local_ip,
                spi: wire_spi(*spi, remote)?,
                key: &pair.inbound,
                mark: None,
            })?;
            xfrm.add_sa(&Sa {
                src: peer.local_ip,
                dst: peer.remote_ip,
                spi: wire_spi(*spi, local)?,
                key: &pair.outbound,
                mark: Some(out_mark(*spi)),
            })?;
            n += 2;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(spi: u8) -> IpsecKey {
        keyfile::parse(
            Path::new("k"),
            &format!("{spi}+ rfc4106(gcm(aes)) 0123456789abcdef0123456789abcdef01234567 128"),
        )
        .unwrap()
    }

    fn peer(i: u8) -> XfrmPeer {
        XfrmPeer {
            node: format!("n{i}"),
            local_ip: "192.0.2.1".parse().unwrap(),
            remote_ip: format!("192.0.2.{i}").parse().unwrap(),
            local_pods: "10.244.1.0/24".parse().unwrap(),
            remote_pods: format!("10.244.{i}.0/24").parse().unwrap(),
        }
    }

    #[test]
    fn out_policies_per_spi_in_use_in_and_fwd_once() {
        let mut n = IpsecNode::with_key("n1", key(3));
        n.rotation_mut().set_peers(["n2"]);
        let peers = [peer(2), peer(3)];
        assert_eq!(n.desired_policies(&peers).len(), 6);
        n.keys.insert(4, key(4));
        let actions = n.rotation_mut().on_key(4);
        assert_eq!(actions[0], Action::InstallInbound(4));
        let during = n.desired_policies(&peers);
        assert_eq!(during.len(), 8, "old and new out policies overlap");
        let marks: BTreeSet<_> = during.iter().filter_map(|p| p.mark).collect();
        assert_eq!(marks, [out_mark(3), out_mark(4)].into());
    }
}
