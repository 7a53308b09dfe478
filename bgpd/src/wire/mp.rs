//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760 §3-4) for IPv4/IPv6 unicast,
//! IPv6 next hops (RFC 2545 §3) and IPv6 next hop for IPv4 (RFC 8950).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

use super::cursor::Reader;
use super::{Afi, EncodeError, Safi, nlri};

/// Next hop of MP_REACH_NLRI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    Ipv4(Ipv4Addr),
    /// RFC 2545 §3: global, optionally followed by link-local.
    Ipv6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

impl MpNextHop {
    fn decode(b: &[u8]) -> Option<MpNextHop> {
        Some(match b.len() {
            4 => MpNextHop::Ipv4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?)),
            16 => MpNextHop::Ipv6 {
                global: Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?),
                link_local: None,
            },
            32 => MpNextHop::Ipv6 {
                global: Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).ok()?),
                link_local: Some(Ipv6Addr::from(<[u8; 16]>::try_from(&b[16..]).ok()?)),
            },
            _ => return None,
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            MpNextHop::Ipv4(_) => 4,
            MpNextHop::Ipv6 { link_local, .. } => 16 + 16 * link_local.is_some() as usize,
        }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.encoded_len() as u8);
        match self {
            MpNextHop::Ipv4(a) => out.put_slice(&a.octets()),
            MpNextHop::Ipv6 { global, link_local } => {
                out.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.put_slice(&ll.octets());
                }
            }
        }
    }
}

/// MP_REACH_NLRI attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpReach {
    /// IPv4 unicast; an IPv6 next hop is RFC 8950.
    Ipv4Unicast {
        next_hop: MpNextHop,
        nlri: Vec<Ipv4Net>,
    },
    /// IPv6 unicast; the next hop must be IPv6.
    Ipv6Unicast {
        next_hop: MpNextHop,
        nlri: Vec<Ipv6Net>,
    },
    /// An AFI/SAFI we do not parse: the rest of the value, raw.
    Unknown { afi: Afi, safi: Safi, value: Bytes },
}

/// MP_UNREACH_NLRI attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpUnreach {
    Ipv4Unicast(Vec<Ipv4Net>),
    Ipv6Unicast(Vec<Ipv6Net>),
    Unknown { afi: Afi, safi: Safi, value: Bytes },
}

fn is_v4u(afi: Afi, safi: Safi) -> bool {
    afi == Afi::IPV4 && safi == Safi::UNICAST
}

fn is_v6u(afi: Afi, safi: Safi) -> bool {
    afi == Afi::IPV6 && safi == Safi::UNICAST
}

impl MpReach {
    /// RFC 4760 §3. Errors are session resets (RFC 7606 §7.11).
    pub(crate) fn decode(value: &Bytes) -> Result<MpReach, &'static str> {
        let mut r = Reader::new(value);
        let afi = Afi(r.u16().ok_or("truncated")?);
        let safi = Safi(r.u8().ok_or("truncated")?);
        if !is_v4u(afi, safi) && !is_v6u(afi, safi) {
            return Ok(MpReach::Unknown {
                afi,
                safi,
                value: value.slice(3..),
            });
        }
        let nh_len = r.u8().ok_or("truncated")? as usize;
        let nh = r.take(nh_len).ok_or("next hop truncated")?;
        let next_hop = MpNextHop::decode(nh).ok_or("bad next hop length")?;
        let _reserved = r.u8().ok_or("truncated")?;
        let rest = r.rest();
        if is_v4u(afi, safi) {
            let mut v = Vec::new();
            nlri::decode(rest, &mut v)?;
            Ok(MpReach::Ipv4Unicast { next_hop, nlri: v })
        } else {
            if matches!(next_hop, MpNextHop::Ipv4(_)) {
                return Err("bad next hop length");
            }
            let mut v = Vec::new();
            nlri::decode(rest, &mut v)?;
            Ok(MpReach::Ipv6Unicast { next_hop, nlri: v })
        }
    }

    pub(crate) fn encode_value(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            MpReach::Ipv4Unicast { next_hop, nlri } => {
                encode_head(Afi::IPV4, Safi::UNICAST, next_hop, out);
                nlri::encode(nlri, out);
            }
            MpReach::Ipv6Unicast { next_hop, nlri } => {
                if matches!(next_hop, MpNextHop::Ipv4(_)) {
                    return Err(EncodeError::InvalidNextHop);
                }
                encode_head(Afi::IPV6, Safi::UNICAST, next_hop, out);
                nlri::encode(nlri, out);
            }
            MpReach::Unknown { afi, safi, value } => {
                out.put_u16(afi.0);
                out.put_u8(safi.0);
                out.put_slice(value);
            }
        }
        Ok(())
    }

    /// Whether this carries reachable prefixes we parsed.
    pub fn has_nlri(&self) -> bool {
        match self {
            MpReach::Ipv4Unicast { nlri, .. } => !nlri.is_empty(),
            MpReach::Ipv6Unicast { nlri, .. } => !nlri.is_empty(),
            MpReach::Unknown { .. } => false,
        }
    }
}

/// AFI, SAFI, next hop and the reserved octet.
pub(crate) fn encode_head(afi: Afi, safi: Safi, nh: &MpNextHop, out: &mut BytesMut) {
    out.put_u16(afi.0);
    out.put_u8(safi.0);
    nh.encode(out);
    out.put_u8(0);
}

impl MpUnreach {
    /// RFC 4760 §4. Errors are session resets (RFC 7606 §7.12).
    pub(crate) fn decode(value: &Bytes) -> Result<MpUnreach, &'static str> {
        let mut r = Reader::new(value);
        let afi = Afi(r.u16().ok_or("truncated")?);
        let safi = Safi(r.u8().ok_or("truncated")?);
        let rest = r.rest();
        if is_v4u(afi, safi) {
            let mut v = Vec::new();
            nlri::decode(rest, &mut v)?;
            Ok(MpUnreach::Ipv4Unicast(v))
        } else if is_v6u(afi, safi) {
            let mut v = Vec::new();
            nlri::decode(rest, &mut v)?;
            Ok(MpUnreach::Ipv6Unicast(v))
        } else {
            Ok(MpUnreach::Unknown {
                afi,
                safi,
                value: value.slice(3..),
            })
        }
    }

    pub(crate) fn encode_value(&self, out: &mut BytesMut) {
        match self {
            MpUnreach::Ipv4Unicast(v) => {
                out.put_u16(Afi::IPV4.0);
                out.put_u8(Safi::UNICAST.0);
                nlri::encode(v, out);
            }
            MpUnreach::Ipv6Unicast(v) => {
                out.put_u16(Afi::IPV6.0);
                out.put_u8(Safi::UNICAST.0);
                nlri::encode(v, out);
            }
            MpUnreach::Unknown { afi, safi, value } => {
                out.put_u16(afi.0);
                out.put_u8(safi.0);
                out.put_slice(value);
            }
        }
    }

    pub fn afi_safi(&self) -> (Afi, Safi) {
        match self {
            MpUnreach::Ipv4Unicast(_) => (Afi::IPV4, Safi::UNICAST),
            MpUnreach::Ipv6Unicast(_) => (Afi::IPV6, Safi::UNICAST),
            MpUnreach::Unknown { afi, safi, .. } => (*afi, *safi),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            MpUnreach::Ipv4Unicast(v) => v.is_empty(),
            MpUnreach::Ipv6Unicast(v) => v.is_empty(),
            MpUnreach::Unknown { value, .. } => value.is_empty(),
        }
    }
}
