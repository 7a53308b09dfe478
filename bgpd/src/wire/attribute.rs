//! Path attributes (RFC 4271 §4.3, §5) with RFC 7606 error handling.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{AttrError, AttrErrorReason, DecodeError, ErrorAction};
use super::mp::{MpReach, MpUnreach};
use super::{AS_TRANS, AsPath, Community, Context, ExtCommunity, LargeCommunity};

/// Attribute flag bits (RFC 4271 §4.3).
pub mod attr_flags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA).
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

use attr_flags::{EXTENDED_LENGTH, OPTIONAL, PARTIAL, TRANSITIVE};
use attr_type::*;

/// ORIGIN values (RFC 4271 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AGGREGATOR / AS4_AGGREGATOR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// An attribute we do not recognize, kept as received (flags without the
/// Extended Length bit, which is chosen again on encode).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub type_code: u8,
    pub value: Bytes,
}

/// The path attributes of an UPDATE, minus MP_REACH/MP_UNREACH (which carry
/// NLRI). Hash/Eq make it easy to intern. Empty lists mean "absent": RFC
/// 7606 makes zero-length list attributes malformed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<Community>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub ext_communities: Vec<ExtCommunity>,
    /// Only on 2-octet sessions (RFC 6793 §4.2).
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
    pub large_communities: Vec<LargeCommunity>,
    /// Unrecognized optional attributes, one per type code, sorted by it.
    pub unknown: Vec<RawAttr>,
}

/// Expected Optional/Transitive bits of the attributes we know.
fn expected_flags(code: u8) -> Option<u8> {
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => TRANSITIVE,
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            OPTIONAL
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITY => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// RFC 7606 §7 (and RFC 6793 §6 for AS4_*): how a malformed attribute of
/// this type is handled. MP_REACH/MP_UNREACH are session resets instead.
fn malformed_action(code: u8) -> ErrorAction {
    match code {
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => ErrorAction::AttributeDiscard,
        _ => ErrorAction::TreatAsWithdraw,
    }
}

/// The attributes of one UPDATE.
#[derive(Debug, Default)]
pub(crate) struct DecodedAttrs {
    pub attrs: PathAttrs,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub errors: Vec<AttrError>,
}

type Check<T> = Result<T, AttrErrorReason>;

fn fixed<const N: usize>(v: &[u8]) -> Check<[u8; N]> {
    v.try_into().map_err(|_| AttrErrorReason::Length)
}

fn u32_value(v: &[u8]) -> Check<u32> {
    fixed::<4>(v).map(u32::from_be_bytes)
}

/// A non-zero multiple of `N` octets (RFC 7606 §7.8, §7.10, §7.14; RFC 8092 §6).
fn list<const N: usize, T>(v: &[u8], f: impl Fn([u8; N]) -> T) -> Check<Vec<T>> {
    if v.is_empty() || !v.len().is_multiple_of(N) {
        return Err(AttrErrorReason::Length);
    }
    Ok(v.chunks_exact(N)
        .map(|c| f(c.try_into().unwrap_or([0; N])))
        .collect())
}

/// A decoded AS_PATH or AS4_PATH: malformed if it did not decode, or (RFC 7607 §2) if it holds
/// AS 0, which then is treat-as-withdraw for AS_PATH and attribute discard for AS4_PATH
/// ([`malformed_action`]).
fn no_as_zero(p: Option<AsPath>) -> Check<AsPath> {
    let p = p.ok_or(AttrErrorReason::Value)?;
    if p.segments.iter().any(|s| s.asns.contains(&0)) {
        return Err(AttrErrorReason::AsZero);
    }
    Ok(p)
}

fn aggregator(v: &[u8], four_octet: bool) -> Check<Aggregator> {
    let (asn, addr) = if four_octet {
        let b = fixed::<8>(v)?;
        (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            [b[4], b[5], b[6], b[7]],
        )
    } else {
        let b = fixed::<6>(v)?;
        (
            u16::from_be_bytes([b[0], b[1]]) as u32,
            [b[2], b[3], b[4], b[5]],
        )
    };
    // RFC 7607 §2: AS 0 in (AS4_)AGGREGATOR is malformed: attribute discard (RFC 7606 §7.7).
    if asn == 0 {
        return Err(AttrErrorReason::AsZero);
    }
    Ok(Aggregator {
        asn,
        address: Ipv4Addr::from(addr),
    })
}

impl DecodedAttrs {
    /// Parses the Path Attributes field (RFC 4271 §4.3, RFC 7606 §3-4).
    pub(crate) fn decode(data: &Bytes, ctx: &Context) -> Result<DecodedAttrs, DecodeError> {
        let mut out = DecodedAttrs::default();
        let mut seen = [0u64; 4];
        let mut pos = 0;
        while pos < data.len() {
            let rem = &data[pos..];
            let ext = rem[0] & EXTENDED_LENGTH != 0;
            let hdr = if ext { 4 } else { 3 };
            let code = rem.get(1).copied().unwrap_or(0);
            let len = match (ext, rem.get(2), rem.get(3)) {
                (false, Some(&l), _) => Some(l as usize),
                (true, Some(&h), Some(&l)) => Some(u16::from_be_bytes([h, l]) as usize),
                _ => None,
            };
            let Some(len) = len.filter(|l| hdr + l <= rem.len()) else {
                // RFC 7606 §4: attribute overruns the list.
                if rem.len() >= 2 && (code == MP_REACH_NLRI || code == MP_UNREACH_NLRI) {
                    return Err(DecodeError::OptionalAttribute {
                        reason: "attribute length overruns",
                        data: data.slice(pos..),
                    });
                }
                out.errors.push(AttrError {
                    type_code: code,
                    action: ErrorAction::TreatAsWithdraw,
                    reason: AttrErrorReason::Truncated,
                    data: data.slice(pos..),
                });
                break;
            };
            let flags = rem[0];
            let raw = data.slice(pos..pos + hdr + len);
            let value = data.slice(pos + hdr..pos + hdr + len);
            pos += hdr + len;
            // RFC 7606 §3 g: duplicates.
            let (word, bit) = ((code / 64) as usize, 1u64 << (code % 64));
            if seen[word] & bit != 0 {
                if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI {
                    return Err(DecodeError::MalformedAttributeList(
                        "duplicate MP attribute",
                    ));
                }
                out.errors.push(AttrError {
                    type_code: code,
                    action: ErrorAction::AttributeDiscard,
                    reason: AttrErrorReason::Duplicate,
                    data: raw,
                });
                continue;
            }
            seen[word] |= bit;
            out.decode_one(flags, code, &value, &raw, ctx)?;
        }
        Ok(out)
    }

    fn decode_one(
        &mut self,
        flags: u8,
        code: u8,
        value: &Bytes,
        raw: &Bytes,
        ctx: &Context,
    ) -> Result<(), DecodeError> {
        let Some(expected) = expected_flags(code) else {
            // RFC 4271 §6.3: an unrecognized well-known attribute.
            if flags & OPTIONAL == 0 {
                return Err(DecodeError::UnrecognizedWellKnownAttribute(raw.clone()));
            }
            // Kept sorted by type code, the order they are encoded in.
            let unknown = &mut self.attrs.unknown;
            let at = unknown.partition_point(|u| u.type_code < code);
            unknown.insert(
                at,
                RawAttr {
                    flags: flags & !EXTENDED_LENGTH,
                    type_code: code,
                    value: value.clone(),
                },
            );
            return Ok(());
        };
        // RFC 7606 §3 c.
        if flags & (OPTIONAL | TRANSITIVE) != expected {
            return self.malformed(code, AttrErrorReason::Flags, raw);
        }
        if let Err(reason) = self.parse_value(code, value, raw, ctx)? {
            return self.malformed(code, reason, raw);
        }
        Ok(())
    }

    /// Outer error: session reset; inner: RFC 7606 malformed attribute.
    fn parse_value(
        &mut self,
        code: u8,
        value: &Bytes,
        raw: &Bytes,
        ctx: &Context,
    ) -> Result<Check<()>, DecodeError> {
        let v: &[u8] = value;
        let a = &mut self.attrs;
        let four = ctx.four_octet_as;
        let r = (|| -> Check<()> {
            match code {
                // RFC 7606 §7.1.
                ORIGIN => {
                    a.origin = Some(match fixed::<1>(v)? {
                        [0] => Origin::Igp,
                        [1] => Origin::Egp,
                        [2] => Origin::Incomplete,
                        _ => return Err(AttrErrorReason::Value),
                    })
                }
                // RFC 7606 §7.2.
                AS_PATH => a.as_path = Some(no_as_zero(AsPath::decode(v, four))?),
                // RFC 7606 §7.3-7.5.
                NEXT_HOP => a.next_hop = Some(Ipv4Addr::from(fixed::<4>(v)?)),
                MULTI_EXIT_DISC => a.med = Some(u32_value(v)?),
                LOCAL_PREF => a.local_pref = Some(u32_value(v)?),
                // RFC 7606 §7.6.
                ATOMIC_AGGREGATE => {
                    fixed::<0>(v)?;
                    a.atomic_aggregate = true;
                }
                // RFC 7606 §7.7.
                AGGREGATOR => a.aggregator = Some(aggregator(v, four)?),
                // RFC 7606 §7.8.
                COMMUNITIES => a.communities = list(v, |b| Community(u32::from_be_bytes(b)))?,
                // RFC 7606 §7.9-7.10.
                ORIGINATOR_ID => a.originator_id = Some(Ipv4Addr::from(fixed::<4>(v)?)),
                CLUSTER_LIST => a.cluster_list = list(v, Ipv4Addr::from)?,
                // RFC 7606 §7.14.
                EXTENDED_COMMUNITIES => a.ext_communities = list(v, ExtCommunity)?,
                // RFC 6793 §3: a NEW speaker discards these from a NEW speaker.
                AS4_PATH | AS4_AGGREGATOR if four => {
                    return Err(AttrErrorReason::As4FromNewSpeaker);
                }
                AS4_PATH => a.as4_path = Some(no_as_zero(AsPath::decode(v, true))?),
                AS4_AGGREGATOR => a.as4_aggregator = Some(aggregator(v, true)?),
                // RFC 8092 §6.
                LARGE_COMMUNITY => {
                    a.large_communities = list(v, |b: [u8; 12]| LargeCommunity {
                        global_admin: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                        local_data1: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                        local_data2: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                    })?
                }
                _ => {}
            }
            Ok(())
        })();
        // RFC 7606 §7.11-12: MP attributes are session resets.
        let mp_err = |reason| DecodeError::OptionalAttribute {
            reason,
            data: raw.clone(),
        };
        match code {
            MP_REACH_NLRI => self.mp_reach = Some(MpReach::decode(value).map_err(mp_err)?),
            MP_UNREACH_NLRI => self.mp_unreach = Some(MpUnreach::decode(value).map_err(mp_err)?),
            _ => {}
        }
        Ok(r)
    }

    fn malformed(
        &mut self,
        code: u8,
        reason: AttrErrorReason,
        raw: &Bytes,
    ) -> Result<(), DecodeError> {
        if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI {
            return Err(DecodeError::AttributeFlags(raw.clone()));
        }
        self.errors.push(AttrError {
            type_code: code,
            action: malformed_action(code),
            reason,
            data: raw.clone(),
        });
        Ok(())
    }
}

/// Writes one attribute, choosing the Extended Length bit (RFC 4271 §4.3)
/// when the value exceeds 255 octets.
pub(crate) fn put_attr(out: &mut BytesMut, flags: u8, code: u8, f: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_slice(&[flags & !EXTENDED_LENGTH, code, 0]);
    let vstart = out.len();
    f(out);
    let vlen = out.len() - vstart;
    if vlen > 255 {
        out.put_u8(0);
        out.copy_within(vstart..vstart + vlen, vstart + 1);
        out[start] |= EXTENDED_LENGTH;
        out[start + 2..start + 4].copy_from_slice(&(vlen.min(0xffff) as u16).to_be_bytes());
    } else {
        out[start + 2] = vlen as u8;
    }
}

fn put_aggregator(out: &mut BytesMut, agg: &Aggregator, four_octet: bool) {
    if four_octet {
        out.put_u32(agg.asn);
    } else {
        out.put_u16(u16::try_from(agg.asn).unwrap_or(AS_TRANS));
    }
    out.put_slice(&agg.address.octets());
}

impl RawAttr {
    /// RFC 4271 §5: unknown optional transitive attributes are passed on
    /// with Partial set; unknown optional non-transitive ones are dropped.
    fn encode(&self, out: &mut BytesMut) {
        let opt_trans = OPTIONAL | TRANSITIVE;
        let flags = match self.flags & opt_trans {
            OPTIONAL => return,
            f if f == opt_trans => self.flags | PARTIAL,
            _ => self.flags,
        };
        put_attr(out, flags, self.type_code, |b| b.put_slice(&self.value));
    }
}

impl PathAttrs {
    /// Appends the attributes in type-code order; `next_hop` replaces
    /// the NEXT_HOP field (the builder omits it for MP_REACH).
    pub(crate) fn encode_with(
        &self,
        out: &mut BytesMut,
        ctx: &Context,
        next_hop: Option<Ipv4Addr>,
    ) {
        let four = ctx.four_octet_as;
        let mut unknown = self.unknown.iter().peekable();
        let mut flush = |out: &mut BytesMut, below: u16| {
            while let Some(u) = unknown.next_if(|u| (u.type_code as u16) < below) {
                u.encode(out);
            }
        };
        flush(out, ORIGIN as u16);
        if let Some(o) = self.origin {
            put_attr(out, TRANSITIVE, ORIGIN, |b| b.put_u8(o as u8));
        }
        flush(out, AS_PATH as u16);
        if let Some(p) = &self.as_path {
            put_attr(out, TRANSITIVE, AS_PATH, |b| p.encode(b, four));
        }
        flush(out, NEXT_HOP as u16);
        if let Some(nh) = next_hop {
            put_attr(out, TRANSITIVE, NEXT_HOP, |b| b.put_slice(&nh.octets()));
        }
        flush(out, MULTI_EXIT_DISC as u16);
        if let Some(med) = self.med {
            put_attr(out, OPTIONAL, MULTI_EXIT_DISC, |b| b.put_u32(med));
        }
        flush(out, LOCAL_PREF as u16);
        if let Some(lp) = self.local_pref {
            put_attr(out, TRANSITIVE, LOCAL_PREF, |b| b.put_u32(lp));
        }
        flush(out, ATOMIC_AGGREGATE as u16);
        if self.atomic_aggregate {
            put_attr(out, TRANSITIVE, ATOMIC_AGGREGATE, |_| {});
        }
        flush(out, AGGREGATOR as u16);
        if let Some(agg) = &self.aggregator {
            put_attr(out, OPTIONAL | TRANSITIVE, AGGREGATOR, |b| {
                put_aggregator(b, agg, four)
            });
        }
        flush(out, COMMUNITIES as u16);
        if !self.communities.is_empty() {
            put_attr(out, OPTIONAL | TRANSITIVE, COMMUNITIES, |b| {
                self.communities.iter().for_each(|c| b.put_u32(c.0))
            });
        }
        flush(out, ORIGINATOR_ID as u16);
        if let Some(id) = self.originator_id {
            put_attr(out, OPTIONAL, ORIGINATOR_ID, |b| b.put_slice(&id.octets()));
        }
        flush(out, CLUSTER_LIST as u16);
        if !self.cluster_list.is_empty() {
            put_attr(out, OPTIONAL, CLUSTER_LIST, |b| {
                self.cluster_list
                    .iter()
                    .for_each(|c| b.put_slice(&c.octets()))
            });
        }
        flush(out, EXTENDED_COMMUNITIES as u16);
        if !self.ext_communities.is_empty() {
            put_attr(out, OPTIONAL | TRANSITIVE, EXTENDED_COMMUNITIES, |b| {
                self.ext_communities.iter().for_each(|c| b.put_slice(&c.0))
            });
        }
        flush(out, AS4_PATH as u16);
        if !four {
            // RFC 6793 §4.2.2: send AS4_PATH when the path needs 4 octets.
            let generated = match (&self.as4_path, &self.as_path) {
                (None, Some(p)) if p.has_four_octet_asn() => Some(p.without_confed()),
                _ => None,
            };
            if let Some(p) = self.as4_path.as_ref().or(generated.as_ref()) {
                put_attr(out, OPTIONAL | TRANSITIVE, AS4_PATH, |b| p.encode(b, true));
            }
        }
        flush(out, AS4_AGGREGATOR as u16);
        if !four {
            let generated = match (&self.as4_aggregator, &self.aggregator) {
                (None, Some(a)) if a.asn > 0xffff => Some(*a),
                _ => None,
            };
            if let Some(agg) = self.as4_aggregator.or(generated) {
                put_attr(out, OPTIONAL | TRANSITIVE, AS4_AGGREGATOR, |b| {
                    put_aggregator(b, &agg, true)
                });
            }
        }
        flush(out, LARGE_COMMUNITY as u16);
        if !self.large_communities.is_empty() {
            put_attr(out, OPTIONAL | TRANSITIVE, LARGE_COMMUNITY, |b| {
                for c in &self.large_communities {
                    b.put_u32(c.global_admin);
                    b.put_u32(c.local_data1);
                    b.put_u32(c.local_data2);
                }
            });
        }
        flush(out, 256);
    }

    /// Appends the encoded attributes.
    pub fn encode(&self, out: &mut BytesMut, ctx: &Context) {
        self.encode_with(out, ctx, self.next_hop);
    }

    /// RFC 6793 §4.2.3: the AS path and aggregator as a 4-octet speaker
    /// sees them, merging AS4_PATH/AS4_AGGREGATOR received on a 2-octet
    /// session.
    pub fn effective_as_path(&self) -> (Option<AsPath>, Option<Aggregator>) {
        // An AGGREGATOR with a real AS means AS4_* must be ignored.
        if let Some(agg) = self.aggregator
            && agg.asn != AS_TRANS as u32
        {
            return (self.as_path.clone(), Some(agg));
        }
        let aggregator = self.as4_aggregator.or(self.aggregator);
        let path = match (&self.as_path, &self.as4_path) {
            (Some(p), Some(p4)) => Some(p.merge_as4_path(p4)),
            (p, _) => p.clone(),
        };
        (path, aggregator)
    }

    pub fn is_empty(&self) -> bool {
        *self == PathAttrs::default()
    }
}
