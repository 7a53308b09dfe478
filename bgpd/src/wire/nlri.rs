//! Prefix encoding (RFC 4271 §4.3, RFC 4760 §5): length in bits, then the
//! minimum number of octets. Trailing bits past the length are ignored.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

/// An address family's prefix type.
pub(crate) trait Prefix: Copy {
    const MAX_LEN: u8;
    /// Builds the prefix from zero-padded octets, masking trailing bits.
    fn from_octets(octets: [u8; 16], len: u8) -> Self;
    fn len_bits(&self) -> u8;
    fn octets(&self) -> [u8; 16];
}

impl Prefix for Ipv4Net {
    const MAX_LEN: u8 = 32;

    fn from_octets(o: [u8; 16], len: u8) -> Self {
        let addr = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
        Ipv4Net::new(addr, len)
            .map(|n| n.trunc())
            .unwrap_or_default()
    }

    fn len_bits(&self) -> u8 {
        self.prefix_len()
    }

    fn octets(&self) -> [u8; 16] {
        let mut o = [0; 16];
        o[..4].copy_from_slice(&self.addr().octets());
        o
    }
}

impl Prefix for Ipv6Net {
    const MAX_LEN: u8 = 128;

    fn from_octets(o: [u8; 16], len: u8) -> Self {
        Ipv6Net::new(Ipv6Addr::from(o), len)
            .map(|n| n.trunc())
            .unwrap_or_default()
    }

    fn len_bits(&self) -> u8 {
        self.prefix_len()
    }

    fn octets(&self) -> [u8; 16] {
        self.addr().octets()
    }
}

/// Octets one prefix takes on the wire.
pub(crate) fn encoded_len<P: Prefix>(p: &P) -> usize {
    1 + (p.len_bits() as usize).div_ceil(8)
}

/// Decodes a run of prefixes, appending to `out`.
pub(crate) fn decode<P: Prefix>(mut buf: &[u8], out: &mut Vec<P>) -> Result<(), &'static str> {
    while let Some((&len, rest)) = buf.split_first() {
        if len > P::MAX_LEN {
            return Err("prefix length too long");
        }
        let n = (len as usize).div_ceil(8);
        let Some(bytes) = rest.get(..n) else {
            return Err("prefix truncated");
        };
        let mut octets = [0u8; 16];
        octets[..n].copy_from_slice(bytes);
        out.push(P::from_octets(octets, len));
        buf = &rest[n..];
    }
    Ok(())
}

/// Encodes prefixes; host bits past the length are written as zero.
pub(crate) fn encode<P: Prefix>(prefixes: &[P], out: &mut BytesMut) {
    for p in prefixes {
        let len = p.len_bits();
        let n = (len as usize).div_ceil(8);
        let mut o = p.octets();
        if len % 8 != 0 {
            o[n - 1] &= 0xffu8 << (8 - len % 8);
        }
        out.put_u8(len);
        out.put_slice(&o[..n]);
    }
}

/// How many of `prefixes` fit in `budget` octets, and the octets they use.
pub(crate) fn fit<P: Prefix>(prefixes: &[P], budget: usize) -> (usize, usize) {
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let l = encoded_len(p);
        if used + l > budget {
            return (i, used);
        }
        used += l;
    }
    (prefixes.len(), used)
}
