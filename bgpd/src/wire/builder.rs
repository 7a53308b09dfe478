//! Packs many prefixes sharing one attribute set into as few UPDATEs as
//! the maximum message size allows. Attributes are encoded once.

use bytes::{BufMut, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

use super::attribute::put_attr;
use super::mp::{MpNextHop, encode_head};
use super::nlri::{self, Prefix};
use super::{
    Afi, Context, EncodeError, HEADER_LEN, MessageType, PathAttrs, Safi, attr_flags, attr_type,
    header,
};

/// Fixed UPDATE overhead: header, two length fields.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 4;
/// Attribute header with Extended Length, AFI, SAFI.
const MP_OVERHEAD: usize = 4 + 3;

/// Builds packed UPDATE messages for one session.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateBuilder {
    ctx: Context,
    ipv4_mp_reach: bool,
}

impl UpdateBuilder {
    pub fn new(ctx: Context) -> Self {
        UpdateBuilder {
            ctx,
            ipv4_mp_reach: false,
        }
    }

    /// Send IPv4 unicast in MP_REACH/MP_UNREACH instead of the classic
    /// fields (RFC 4760). IPv6 next hops for IPv4 always use MP_REACH.
    pub fn ipv4_mp_reach(mut self, on: bool) -> Self {
        self.ipv4_mp_reach = on;
        self
    }

    /// Appends UPDATEs announcing `prefixes` with `attrs` via `next_hop`
    /// (which overrides `attrs.next_hop`). Returns the message count.
    pub fn announce_ipv4(
        &self,
        attrs: &PathAttrs,
        next_hop: MpNextHop,
        prefixes: &[Ipv4Net],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        match next_hop {
            MpNextHop::Ipv4(nh) if !self.ipv4_mp_reach => {
                let mut encoded = BytesMut::new();
                attrs.encode_with(&mut encoded, &self.ctx, Some(nh));
                self.pack(prefixes, &encoded, None, out)
            }
            nh => self.announce_mp(attrs, Afi::IPV4, nh, prefixes, out),
        }
    }

    /// Appends UPDATEs announcing IPv6 unicast prefixes in MP_REACH.
    pub fn announce_ipv6(
        &self,
        attrs: &PathAttrs,
        next_hop: MpNextHop,
        prefixes: &[Ipv6Net],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        if matches!(next_hop, MpNextHop::Ipv4(_)) {
            return Err(EncodeError::InvalidNextHop);
        }
        self.announce_mp(attrs, Afi::IPV6, next_hop, prefixes, out)
    }

    /// Appends UPDATEs withdrawing IPv4 unicast prefixes.
    pub fn withdraw_ipv4(
        &self,
        prefixes: &[Ipv4Net],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        if self.ipv4_mp_reach {
            return self.withdraw_mp(Afi::IPV4, prefixes, out);
        }
        let budget = self.ctx.max_message_len() - UPDATE_OVERHEAD;
        self.chunks(prefixes, budget, out, |p, out| {
            let wpos = out.len();
            out.put_u16(0);
            nlri::encode(p, out);
            let wlen = (out.len() - wpos - 2) as u16;
            out[wpos..wpos + 2].copy_from_slice(&wlen.to_be_bytes());
            out.put_u16(0);
        })
    }

    /// Appends UPDATEs withdrawing IPv6 unicast prefixes (MP_UNREACH).
    pub fn withdraw_ipv6(
        &self,
        prefixes: &[Ipv6Net],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        self.withdraw_mp(Afi::IPV6, prefixes, out)
    }

    fn announce_mp<P: Prefix>(
        &self,
        attrs: &PathAttrs,
        afi: Afi,
        next_hop: MpNextHop,
        prefixes: &[P],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let mut encoded = BytesMut::new();
        attrs.encode_with(&mut encoded, &self.ctx, None);
        self.pack(prefixes, &encoded, Some((afi, next_hop)), out)
    }

    /// Announcements: classic NLRI when `mp` is None.
    fn pack<P: Prefix>(
        &self,
        prefixes: &[P],
        attrs: &[u8],
        mp: Option<(Afi, MpNextHop)>,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let mp_len = mp.map_or(0, |(_, nh)| MP_OVERHEAD + 1 + nh.encoded_len() + 1);
        let budget = (self.ctx.max_message_len() - UPDATE_OVERHEAD)
            .checked_sub(attrs.len() + mp_len)
            .ok_or(EncodeError::AttributesTooLong)?;
        self.chunks(prefixes, budget, out, |p, out| {
            out.put_u16(0);
            let apos = out.len();
            out.put_u16(0);
            if let Some((afi, nh)) = mp {
                put_attr(out, attr_flags::OPTIONAL, attr_type::MP_REACH_NLRI, |b| {
                    encode_head(afi, Safi::UNICAST, &nh, b);
                    nlri::encode(p, b);
                });
            }
            out.put_slice(attrs);
            let alen = (out.len() - apos - 2) as u16;
            out[apos..apos + 2].copy_from_slice(&alen.to_be_bytes());
            if mp.is_none() {
                nlri::encode(p, out);
            }
        })
    }

    fn withdraw_mp<P: Prefix>(
        &self,
        afi: Afi,
        prefixes: &[P],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let budget = self.ctx.max_message_len() - UPDATE_OVERHEAD - MP_OVERHEAD;
        self.chunks(prefixes, budget, out, |p, out| {
            out.put_u16(0);
            let apos = out.len();
            out.put_u16(0);
            put_attr(out, attr_flags::OPTIONAL, attr_type::MP_UNREACH_NLRI, |b| {
                b.put_u16(afi.0);
                b.put_u8(Safi::UNICAST.0);
                nlri::encode(p, b);
            });
            let alen = (out.len() - apos - 2) as u16;
            out[apos..apos + 2].copy_from_slice(&alen.to_be_bytes());
        })
    }

    /// Splits `prefixes` into runs fitting `budget` octets and writes one
    /// UPDATE per run with `body`.
    fn chunks<P: Prefix>(
        &self,
        mut prefixes: &[P],
        budget: usize,
        out: &mut BytesMut,
        body: impl Fn(&[P], &mut BytesMut),
    ) -> Result<usize, EncodeError> {
        let mut count = 0;
        while !prefixes.is_empty() {
            let (n, _) = nlri::fit(prefixes, budget);
            if n == 0 {
                return Err(EncodeError::AttributesTooLong);
            }
            let start = header::begin(out, MessageType::Update);
            body(&prefixes[..n], out);
            header::finish(out, start, &self.ctx)?;
            prefixes = &prefixes[n..];
            count += 1;
        }
        Ok(count)
    }
}
