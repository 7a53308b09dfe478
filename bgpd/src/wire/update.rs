//! UPDATE message (RFC 4271 §4.3) with RFC 7606 error handling.

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::{Ipv4Net, Ipv6Net};

use super::attribute::{DecodedAttrs, put_attr};
use super::error::{AttrError, AttrErrorReason, DecodeError, EncodeError, ErrorAction};
use super::mp::{MpReach, MpUnreach};
use super::{Afi, Context, PathAttrs, Safi, attr_flags, attr_type, nlri};

/// An UPDATE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateMsg {
    /// Withdrawn Routes (IPv4 unicast).
    pub withdrawn: Vec<Ipv4Net>,
    pub attrs: PathAttrs,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// NLRI (IPv4 unicast).
    pub nlri: Vec<Ipv4Net>,
    /// RFC 7606 errors found while decoding (never encoded). Malformed
    /// attributes are already removed from `attrs`.
    pub errors: Vec<AttrError>,
}

impl UpdateMsg {
    /// The strongest RFC 7606 action required, if any.
    pub fn error_action(&self) -> Option<ErrorAction> {
        self.errors.iter().map(|e| e.action).max()
    }

    /// RFC 7606 §2: all NLRI of this UPDATE must be handled as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.error_action() == Some(ErrorAction::TreatAsWithdraw)
    }

    /// RFC 4724 §2: the End-of-RIB marker's address family, if this is one.
    pub fn end_of_rib(&self) -> Option<(Afi, Safi)> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || self.mp_reach.is_some() {
            return None;
        }
        match &self.mp_unreach {
            None if self.attrs.is_empty() => Some((Afi::IPV4, Safi::UNICAST)),
            Some(u) if u.is_empty() && self.attrs.is_empty() => Some(u.afi_safi()),
            _ => None,
        }
    }

    /// The End-of-RIB marker for an address family (RFC 4724 §2).
    pub fn end_of_rib_marker(afi: Afi, safi: Safi) -> UpdateMsg {
        let mp_unreach = match (afi, safi) {
            (Afi::IPV4, Safi::UNICAST) => None,
            (Afi::IPV6, Safi::UNICAST) => Some(MpUnreach::Ipv6Unicast(Vec::new())),
            _ => Some(MpUnreach::Unknown {
                afi,
                safi,
                value: Bytes::new(),
            }),
        };
        UpdateMsg {
            mp_unreach,
            ..UpdateMsg::default()
        }
    }

    pub(crate) fn decode(body: &Bytes, ctx: &Context) -> Result<UpdateMsg, DecodeError> {
        // RFC 7606 §3 a / RFC 4271 §6.3: lengths must be consistent.
        let bad_len = DecodeError::MalformedAttributeList("length inconsistent");
        let wlen = body
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(bad_len.clone())?;
        let attr_off = 2 + wlen + 2;
        let alen = body
            .get(2 + wlen..attr_off)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or(bad_len.clone())?;
        let nlri_off = attr_off + alen;
        if nlri_off > body.len() {
            return Err(bad_len);
        }
        let mut msg = UpdateMsg::default();
        // RFC 7606 §5.3: unparseable NLRI is a session reset.
        nlri::decode(&body[2..2 + wlen], &mut msg.withdrawn)
            .map_err(DecodeError::InvalidNetworkField)?;
        let decoded = DecodedAttrs::decode(&body.slice(attr_off..nlri_off), ctx)?;
        nlri::decode(&body[nlri_off..], &mut msg.nlri).map_err(DecodeError::InvalidNetworkField)?;
        msg.attrs = decoded.attrs;
        msg.mp_reach = decoded.mp_reach;
        msg.mp_unreach = decoded.mp_unreach;
        msg.errors = decoded.errors;
        msg.check_mandatory();
        Ok(msg)
    }

    /// RFC 7606 §3 d: missing well-known mandatory attributes.
    fn check_mandatory(&mut self) {
        let classic = !self.nlri.is_empty();
        if !classic && !self.mp_reach.as_ref().is_some_and(MpReach::has_nlri) {
            return;
        }
        let a = &self.attrs;
        let mut missing = Vec::new();
        let malformed = |code| self.errors.iter().any(|e| e.type_code == code);
        if a.origin.is_none() && !malformed(attr_type::ORIGIN) {
            missing.push(attr_type::ORIGIN);
        }
        if a.as_path.is_none() && !malformed(attr_type::AS_PATH) {
            missing.push(attr_type::AS_PATH);
        }
        if classic && a.next_hop.is_none() && !malformed(attr_type::NEXT_HOP) {
            missing.push(attr_type::NEXT_HOP);
        }
        for code in missing {
            self.errors.push(AttrError {
                type_code: code,
                action: ErrorAction::TreatAsWithdraw,
                reason: AttrErrorReason::Missing,
                // RFC 4271 §6.3: data is the missing type code.
                data: Bytes::copy_from_slice(&[code]),
            });
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut, ctx: &Context) -> Result<(), EncodeError> {
        let wpos = out.len();
        out.put_u16(0);
        nlri::encode(&self.withdrawn, out);
        patch_u16(out, wpos)?;
        let apos = out.len();
        out.put_u16(0);
        // RFC 7606 §5.1: MP_REACH/MP_UNREACH first.
        if let Some(r) = &self.mp_reach {
            let mut res = Ok(());
            put_attr(out, attr_flags::OPTIONAL, attr_type::MP_REACH_NLRI, |b| {
                res = r.encode_value(b)
            });
            res?;
        }
        if let Some(u) = &self.mp_unreach {
            put_attr(out, attr_flags::OPTIONAL, attr_type::MP_UNREACH_NLRI, |b| {
                u.encode_value(b)
            });
        }
        self.attrs.encode(out, ctx);
        patch_u16(out, apos)?;
        nlri::encode(&self.nlri, out);
        Ok(())
    }

    /// All reachable IPv6 unicast prefixes (empty slice if none).
    pub fn ipv6_nlri(&self) -> &[Ipv6Net] {
        match &self.mp_reach {
            Some(MpReach::Ipv6Unicast { nlri, .. }) => nlri,
            _ => &[],
        }
    }
}

/// Writes the length of what follows the 2-octet field at `pos`.
fn patch_u16(out: &mut BytesMut, pos: usize) -> Result<(), EncodeError> {
    let len = out.len() - pos - 2;
    let v = u16::try_from(len).map_err(|_| EncodeError::MessageTooLong(len, 65535))?;
    out[pos..pos + 2].copy_from_slice(&v.to_be_bytes());
    Ok(())
}
