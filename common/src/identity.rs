//! Security identities packed in 24 bits, as Cilium's numeric identities:
//! `cluster_id << local_bits | local_id`, plus cluster-independent reserved
//! identities in cluster 0.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identity, cluster ID or layout was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity cluster_bits {0} is not supported; use 8, 9 or 10")]
    ClusterBits(u8),
    #[error("cluster ID {id} is out of range; use 1..={max} (with cluster_bits = {bits})")]
    ClusterId { id: u32, max: u16, bits: u8 },
    #[error(
        "local identity {local} is out of range; use {min}..={max} (with cluster_bits = {bits})"
    )]
    LocalId {
        local: u32,
        min: u32,
        max: u32,
        bits: u8,
    },
    #[error("identity {0} does not fit in 24 bits; use 1..=16777215")]
    TooWide(u32),
    #[error("identity 0 is invalid; use 1..=16777215")]
    Zero,
    #[error("identity {0} is in the reserved range 1..=255 but is not a known reserved identity")]
    UnknownReserved(u32),
    #[error(
        "unknown reserved identity {0:?}; use one of host, world, unmanaged, health, init, remote-node, kube-apiserver"
    )]
    UnknownReservedName(String),
}

/// A cluster's numeric ID: 1..=1023 in general, 1..=max for a given layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct ClusterId(u16);

impl ClusterId {
    /// Largest ID of the widest layout (10 cluster bits).
    pub const MAX: u16 = (1 << IdentityLayout::MAX_CLUSTER_BITS) - 1;

    /// Checks only the widest range; use [`IdentityLayout::cluster_id`] to
    /// check against a configured layout.
    pub fn new(id: u16) -> Result<Self, IdentityError> {
        IdentityLayout {
            cluster_bits: IdentityLayout::MAX_CLUSTER_BITS,
        }
        .cluster_id(id.into())
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for ClusterId {
    type Error = IdentityError;
    fn try_from(v: u16) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<ClusterId> for u16 {
    fn from(v: ClusterId) -> u16 {
        v.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the 24 identity bits split between cluster ID and local ID.
/// 8 bits: 255 clusters of 65280 identities; 9: 511 of 32512; 10: 1023 of 16128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawLayout", into = "RawLayout")]
pub struct IdentityLayout {
    cluster_bits: u8,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    cluster_bits: u8,
}

impl TryFrom<RawLayout> for IdentityLayout {
    type Error = IdentityError;
    fn try_from(r: RawLayout) -> Result<Self, Self::Error> {
        Self::new(r.cluster_bits)
    }
}

impl From<IdentityLayout> for RawLayout {
    fn from(l: IdentityLayout) -> Self {
        RawLayout {
            cluster_bits: l.cluster_bits,
        }
    }
}

impl Default for IdentityLayout {
    fn default() -> Self {
        Self { cluster_bits: 8 }
    }
}

impl IdentityLayout {
    pub const IDENTITY_BITS: u8 = 24;
    pub const MAX_CLUSTER_BITS: u8 = 10;
    /// Local IDs below this are kept free in every cluster, as in Cilium.
    pub const MIN_LOCAL_ID: u32 = 256;
    pub const ALL: [IdentityLayout; 3] = [
        Self { cluster_bits: 8 },
        Self { cluster_bits: 9 },
        Self { cluster_bits: 10 },
    ];

    pub fn new(cluster_bits: u8) -> Result<Self, IdentityError> {
        match cluster_bits {
            8..=10 => Ok(Self { cluster_bits }),
            other => Err(IdentityError::ClusterBits(other)),
        }
    }

    pub fn cluster_bits(self) -> u8 {
        self.cluster_bits
    }

    pub fn local_bits(self) -> u8 {
        Self::IDENTITY_BITS - self.cluster_bits
    }

    pub fn max_cluster_id(self) -> u16 {
        (1u16 << self.cluster_bits) - 1
    }

    pub fn max_local_id(self) -> u32 {
        (1u32 << self.local_bits()) - 1
    }

    /// Validates a cluster ID against this layout.
    pub fn cluster_id(self, id: u32) -> Result<ClusterId, IdentityError> {
        let max = self.max_cluster_id();
        match u16::try_from(id) {
            Ok(v) if (1..=max).contains(&v) => Ok(ClusterId(v)),
            _ => Err(IdentityError::ClusterId {
                id,
                max,
                bits: self.cluster_bits,
            }),
        }
    }

    /// Builds the identity of `local` in `cluster`.
    pub fn identity(self, cluster: ClusterId, local: u32) -> Result<Identity, IdentityError> {
        let cluster = self.cluster_id(cluster.0.into())?;
        let (min, max) = (Self::MIN_LOCAL_ID, self.max_local_id());
        if !(min..=max).contains(&local) {
            return Err(IdentityError::LocalId {
                local,
                min,
                max,
                bits: self.cluster_bits,
            });
        }
        Ok(Identity(
            (u32::from(cluster.0) << self.local_bits()) | local,
        ))
    }

    /// Splits an identity into its reserved or (cluster, local) form.
    pub fn decode(self, id: Identity) -> Result<IdentityKind, IdentityError> {
        if let Some(r) = id.reserved() {
            return Ok(IdentityKind::Reserved(r));
        }
        let cluster = id.0 >> self.local_bits();
        let local = id.0 & self.max_local_id();
        if cluster == 0 {
            return Err(IdentityError::UnknownReserved(id.0));
        }
        let cluster = self.cluster_id(cluster)?;
        // Re-encode to check the local range.
        self.identity(cluster, local)?;
        Ok(IdentityKind::Cluster { cluster, local })
    }
}

/// A numeric security identity (24 bits, never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Identity(u32);

/// What an identity means under a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Reserved(ReservedIdentity),
    Cluster { cluster: ClusterId, local: u32 },
}

impl Identity {
    pub const MAX: u32 = (1 << IdentityLayout::IDENTITY_BITS) - 1;

    /// Checks the value fits 24 bits and is not 0; the cluster/local split
    /// needs a layout ([`IdentityLayout::decode`]).
    pub fn from_raw(v: u32) -> Result<Self, IdentityError> {
        match v {
            0 => Err(IdentityError::Zero),
            v if v > Self::MAX => Err(IdentityError::TooWide(v)),
            v => Ok(Self(v)),
        }
    }

    pub fn raw(self) -> u32 {
        self.0
    }

    pub fn reserved(self) -> Option<ReservedIdentity> {
        ReservedIdentity::ALL.into_iter().find(|r| r.id() == self.0)
    }

    /// The cluster of a cluster-scoped identity; `None` for reserved ones.
    pub fn cluster(self, layout: IdentityLayout) -> Option<ClusterId> {
        match layout.decode(self) {
            Ok(IdentityKind::Cluster { cluster, .. }) => Some(cluster),
            _ => None,
        }
    }

    /// The local part of a cluster-scoped identity; `None` for reserved ones.
    pub fn local(self, layout: IdentityLayout) -> Option<u32> {
        match layout.decode(self) {
            Ok(IdentityKind::Cluster { local, .. }) => Some(local),
            _ => None,
        }
    }
}

impl TryFrom<u32> for Identity {
    type Error = IdentityError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Self::from_raw(v)
    }
}

impl From<Identity> for u32 {
    fn from(v: Identity) -> u32 {
        v.0
    }
}

impl From<ReservedIdentity> for Identity {
    fn from(r: ReservedIdentity) -> Self {
        Identity(r.id())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identities with a fixed meaning in every cluster (Cilium's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedIdentity {
    Host,
    World,
    Unmanaged,
    Health,
    Init,
    RemoteNode,
    KubeApiserver,
}

impl ReservedIdentity {
    pub const ALL: [ReservedIdentity; 7] = [
        Self::Host,
        Self::World,
        Self::Unmanaged,
        Self::Health,
        Self::Init,
        Self::RemoteNode,
        Self::KubeApiserver,
    ];

    pub fn id(self) -> u32 {
        match self {
            Self::Host => 1,
            Self::World => 2,
            Self::Unmanaged => 3,
            Self::Health => 4,
            Self::Init => 5,
            Self::RemoteNode => 6,
            Self::KubeApiserver => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::World => "world",
            Self::Unmanaged => "unmanaged",
            Self::Health => "health",
            Self::Init => "init",
            Self::RemoteNode => "remote-node",
            Self::KubeApiserver => "kube-apiserver",
        }
    }
}

impl fmt::Display for ReservedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReservedIdentity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| IdentityError::UnknownReservedName(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts() {
        assert_eq!(
            IdentityLayout::new(7).unwrap_err().to_string(),
            "identity cluster_bits 7 is not supported; use 8, 9 or 10"
        );
        let l8 = IdentityLayout::default();
        assert_eq!(
            (l8.local_bits(), l8.max_cluster_id(), l8.max_local_id()),
            (16, 255, 65535)
        );
        let l10 = IdentityLayout::new(10).unwrap();
        assert_eq!(
            (l10.local_bits(), l10.max_cluster_id(), l10.max_local_id()),
            (14, 1023, 16383)
        );
    }

    #[test]
    fn cluster_ids() {
        let l8 = IdentityLayout::default();
        assert!(l8.cluster_id(0).is_err());
        assert_eq!(l8.cluster_id(255).unwrap().get(), 255);
        assert_eq!(
            l8.cluster_id(256).unwrap_err().to_string(),
            "cluster ID 256 is out of range; use 1..=255 (with cluster_bits = 8)"
        );
        assert!(IdentityLayout::new(9).unwrap().cluster_id(511).is_ok());
        assert!(ClusterId::new(1023).is_ok());
        assert!(ClusterId::new(1024).is_err());
        assert!(serde_json::from_str::<ClusterId>("0").is_err());
    }

    #[test]
    fn cilium_compatible_encoding() {
        // Cilium, 8 cluster bits: cluster 3, local 256 -> (3 << 16) | 256.
        let l8 = IdentityLayout::default();
        let id = l8.identity(ClusterId::new(3).unwrap(), 256).unwrap();
        assert_eq!(id.raw(), 196_864);
        assert_eq!(id.cluster(l8).map(ClusterId::get), Some(3));
        assert_eq!(id.local(l8), Some(256));
        assert!(l8.identity(ClusterId::new(3).unwrap(), 255).is_err());
        assert!(l8.identity(ClusterId::new(3).unwrap(), 65536).is_err());
        // A cluster ID valid for 10 bits but not for 8.
        assert!(l8.identity(ClusterId::new(300).unwrap(), 300).is_err());
    }

    #[test]
    fn reserved_identities_are_cluster_independent() {
        for l in IdentityLayout::ALL {
            for r in ReservedIdentity::ALL {
                let id = Identity::from(r);
                assert_eq!(l.decode(id), Ok(IdentityKind::Reserved(r)));
                assert_eq!(id.cluster(l), None);
                assert_eq!(r.name().parse::<ReservedIdentity>(), Ok(r));
            }
        }
        assert_eq!(Identity::from(ReservedIdentity::KubeApiserver).raw(), 7);
        assert_eq!(Identity::from(ReservedIdentity::RemoteNode).raw(), 6);
        assert!("nobody".parse::<ReservedIdentity>().is_err());
        let unknown = Identity::from_raw(100).unwrap();
        assert_eq!(
            IdentityLayout::default().decode(unknown),
            Err(IdentityError::UnknownReserved(100))
        );
    }

    #[test]
    fn raw_bounds() {
        assert_eq!(Identity::from_raw(0), Err(IdentityError::Zero));
        assert!(Identity::from_raw(Identity::MAX).is_ok());
        assert_eq!(
            Identity::from_raw(1 << 24),
            Err(IdentityError::TooWide(1 << 24))
        );
        assert!(serde_json::from_str::<Identity>("16777216").is_err());
    }

    fn layout_cluster_local() -> impl Strategy<Value = (IdentityLayout, u16, u32)> {
        (8u8..=10).prop_flat_map(|bits| {
            let l = IdentityLayout::new(bits).unwrap();
            (
                Just(l),
                1..=l.max_cluster_id(),
                IdentityLayout::MIN_LOCAL_ID..=l.max_local_id(),
            )
        })
    }

    proptest! {
        #[test]
        fn identity_round_trips((l, c, local) in layout_cluster_local()) {
            let cluster = l.cluster_id(c.into()).unwrap();
            let id = l.identity(cluster, local).unwrap();
            prop_assert!(id.raw() <= Identity::MAX);
            prop_assert!(id.reserved().is_none());
            prop_assert_eq!(l.decode(id), Ok(IdentityKind::Cluster { cluster, local }));
            prop_assert_eq!(Identity::from_raw(id.raw()), Ok(id));
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
        }

        #[test]
        fn decode_never_panics(bits in 8u8..=10, raw in 1u32..=Identity::MAX) {
            let l = IdentityLayout::new(bits).unwrap();
            let id = Identity::from_raw(raw).unwrap();
            if let Ok(IdentityKind::Cluster { cluster, local }) = l.decode(id) {
                prop_assert_eq!(l.identity(cluster, local), Ok(id));
            }
        }
    }
}
