//! Rust mirrors of `struct ipcache_key` / `struct ipcache_value`
//! (bpf/ironmesh.h). Sizes and offsets are checked at compile time here and
//! against clang's view of the header in tests/abi.rs.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{Identity, IdentityError};
use ipnet::IpNet;

pub const FAMILY_IPV4: u8 = 1;
pub const FAMILY_IPV6: u8 = 2;
/// Bits of family + pad that every LPM lookup matches exactly.
pub const STATIC_PREFIX_BITS: u32 = 32;

pub const F_TUNNEL_EP: u8 = 1 << 0;
pub const F_REMOTE_CLUSTER: u8 = 1 << 1;
pub const F_SKIP_TUNNEL: u8 = 1 << 2;

/// Why map bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error("ipcache key has unknown family {0}; expected 1 (IPv4) or 2 (IPv6)")]
    Family(u8),
    #[error("ipcache key prefixlen {prefixlen} is outside 32..={max} for its family")]
    PrefixLen { prefixlen: u32, max: u32 },
    #[error("ipcache value identity: {0}")]
    Identity(#[from] IdentityError),
}

/// `struct ipcache_key`: an LPM trie key (prefixlen first, as the kernel requires).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

const _: () = assert!(size_of::<IpcacheKey>() == 24);
const _: () = assert!(offset_of!(IpcacheKey, prefixlen) == 0);
const _: () = assert!(offset_of!(IpcacheKey, family) == 4);
const _: () = assert!(offset_of!(IpcacheKey, pad) == 5);
const _: () = assert!(offset_of!(IpcacheKey, addr) == 8);

impl IpcacheKey {
    pub const SIZE: usize = size_of::<Self>();

    /// The key of a prefix; host bits are cleared.
    pub fn new(net: IpNet) -> Self {
        let net = net.trunc();
        let mut addr = [0u8; 16];
        let family = match net.addr() {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                FAMILY_IPV4
            }
            IpAddr::V6(a) => {
                addr.copy_from_slice(&a.octets());
                FAMILY_IPV6
            }
        };
        Self {
            prefixlen: STATIC_PREFIX_BITS + u32::from(net.prefix_len()),
            family,
            pad: [0; 3],
            addr,
        }
    }

    /// The key for looking up one address (a full-length prefix).
    pub fn host(ip: IpAddr) -> Self {
        Self::new(IpNet::from(ip))
    }

    pub fn prefix(&self) -> Result<IpNet, AbiError> {
        let (ip, max): (IpAddr, u32) = match self.family {
            FAMILY_IPV4 => (
                Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]).into(),
                32,
            ),
            FAMILY_IPV6 => (Ipv6Addr::from(self.addr).into(), 128),
            other => return Err(AbiError::Family(other)),
        };
        let bad = AbiError::PrefixLen {
            prefixlen: self.prefixlen,
            max: STATIC_PREFIX_BITS + max,
        };
        let len = self
            .prefixlen
            .checked_sub(STATIC_PREFIX_BITS)
            .filter(|l| *l <= max)
            .ok_or(bad.clone())?;
        // Stored bits past the prefix are cleared, as the trie ignores them.
        IpNet::new(ip, len as u8)
            .map(|n| n.trunc())
            .map_err(|_| bad)
    }

    /// The bytes the kernel sees (prefixlen in host order).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.prefixlen.to_ne_bytes());
        b[4] = self.family;
        b[5..8].copy_from_slice(&self.pad);
        b[8..24].copy_from_slice(&self.addr);
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&b[8..24]);
        Self {
            prefixlen: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            family: b[4],
            pad: [b[5], b[6], b[7]],
            addr,
        }
    }
}

/// `struct ipcache_value`: what the datapath knows about an address.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpcacheValue {
    pub identity: u32,
    /// Network order, as `__be32` in C.
    pub tunnel_endpoint_v4: [u8; 4],
    pub flags: u8,
    pub key_index: u8,
    pub pad: [u8; 2],
}

const _: () = assert!(size_of::<IpcacheValue>() == 12);
const _: () = assert!(offset_of!(IpcacheValue, identity) == 0);
const _: () = assert!(offset_of!(IpcacheValue, tunnel_endpoint_v4) == 4);
const _: () = assert!(offset_of!(IpcacheValue, flags) == 8);
const _: () = assert!(offset_of!(IpcacheValue, key_index) == 9);
const _: () = assert!(offset_of!(IpcacheValue, pad) == 10);

impl IpcacheValue {
    pub const SIZE: usize = size_of::<Self>();

    pub fn new(identity: Identity) -> Self {
        Self {
            identity: identity.raw(),
            ..Self::default()
        }
    }

    /// Encapsulate traffic to this address towards `node`.
    pub fn with_tunnel(mut self, node: Ipv4Addr) -> Self {
        self.tunnel_endpoint_v4 = node.octets();
        self.flags |= F_TUNNEL_EP;
        self
    }

    pub fn with_key_index(mut self, key_index: u8) -> Self {
        self.key_index = key_index;
        self
    }

    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags |= flags;
        self
    }

    pub fn identity(&self) -> Result<Identity, AbiError> {
        Ok(Identity::from_raw(self.identity)?)
    }

    pub fn tunnel_endpoint(&self) -> Option<Ipv4Addr> {
        (self.flags & F_TUNNEL_EP != 0).then(|| Ipv4Addr::from(self.tunnel_endpoint_v4))
    }

    /// The bytes the kernel sees (identity in host order).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.identity.to_ne_bytes());
        b[4..8].copy_from_slice(&self.tunnel_endpoint_v4);
        b[8] = self.flags;
        b[9] = self.key_index;
        b[10..12].copy_from_slice(&self.pad);
        b
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        Self {
            identity: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            tunnel_endpoint_v4: [b[4], b[5], b[6], b[7]],
            flags: b[8],
            key_index: b[9],
            pad: [b[10], b[11]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ReservedIdentity;

    #[test]
    fn keys_of_prefixes() {
        let k = IpcacheKey::new("10.244.1.7/24".parse().unwrap());
        assert_eq!((k.prefixlen, k.family), (56, FAMILY_IPV4));
        assert_eq!(&k.addr[..4], &[10, 244, 1, 0]);
        assert!(k.addr[4..].iter().all(|b| *b == 0));
        assert_eq!(k.prefix().unwrap().to_string(), "10.244.1.0/24");

        let h = IpcacheKey::host("fd00::7".parse().unwrap());
        assert_eq!((h.prefixlen, h.family), (160, FAMILY_IPV6));
        assert_eq!(h.prefix().unwrap().to_string(), "fd00::7/128");
        assert_eq!(IpcacheKey::new("0.0.0.0/0".parse().unwrap()).prefixlen, 32);
    }

    #[test]
    fn byte_round_trip() {
        let k = IpcacheKey::new("2001:db8::/32".parse().unwrap());
        assert_eq!(IpcacheKey::from_bytes(&k.to_bytes()), k);
        assert_eq!(&k.to_bytes()[..4], &64u32.to_ne_bytes());
        let v = IpcacheValue::new(ReservedIdentity::World.into())
            .with_tunnel(Ipv4Addr::new(192, 0, 2, 9))
            .with_key_index(3);
        let b = v.to_bytes();
        assert_eq!(&b[4..8], &[192, 0, 2, 9]);
        assert_eq!((b[8], b[9]), (F_TUNNEL_EP, 3));
        let back = IpcacheValue::from_bytes(&b);
        assert_eq!(back, v);
        assert_eq!(back.tunnel_endpoint(), Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(back.identity().unwrap(), ReservedIdentity::World.into());
    }

    #[test]
    fn rejects_bad_bytes() {
        let mut k = IpcacheKey::host("10.0.0.1".parse().unwrap());
        k.prefixlen = 65;
        assert_eq!(
            k.prefix(),
            Err(AbiError::PrefixLen {
                prefixlen: 65,
                max: 64
            })
        );
        k.prefixlen = 31;
        assert!(k.prefix().is_err());
        k.family = 9;
        assert_eq!(k.prefix(), Err(AbiError::Family(9)));
        assert!(IpcacheValue::default().identity().is_err());
        assert_eq!(IpcacheValue::default().tunnel_endpoint(), None);
    }
}
