//! OPEN message (RFC 4271 §4.2), optional parameters (RFC 5492, RFC 9072).

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use super::cursor::Reader;
use super::{Capability, DecodeError, EncodeError};

/// BGP version (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;
/// Optional parameter type: capabilities (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: marks the extended optional parameters length.
const PARAM_EXTENDED_LENGTH: u8 = 255;

/// OPEN message (version is always 4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpenMsg {
    /// 2-octet My Autonomous System (AS_TRANS for 4-octet ASNs).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    /// Capabilities from all Capabilities optional parameters, in order.
    pub capabilities: Vec<Capability>,
}

impl OpenMsg {
    /// The peer's AS: the 4-octet AS capability if present (RFC 6793 §3).
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(self.my_as as u32)
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    /// RFC 5492 §5: error listing the `required` capabilities (compared by
    /// value) that the peer did not advertise.
    pub fn check_required(&self, required: &[Capability]) -> Result<(), DecodeError> {
        let mut data = BytesMut::new();
        for cap in required.iter().filter(|c| !self.capabilities.contains(c)) {
            // A capability too long to encode is not worth failing over.
            let _ = cap.encode(&mut data);
        }
        if data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedCapability(data.freeze()))
        }
    }

    pub(crate) fn decode(body: &Bytes) -> Result<OpenMsg, DecodeError> {
        let mut r = Reader::new(body);
        let short = DecodeError::MalformedOpen("message too short");
        let version = r.u8().ok_or(short.clone())?;
        if version != BGP_VERSION {
            return Err(DecodeError::UnsupportedVersionNumber(version));
        }
        let my_as = r.u16().ok_or(short.clone())?;
        let hold_time = r.u16().ok_or(short.clone())?;
        // §6.2: hold time 1 or 2 seconds is rejected.
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime(hold_time));
        }
        let bgp_id = Ipv4Addr::from(r.u32().ok_or(short.clone())?);
        // RFC 6286 §2.2: any non-zero 4-octet value.
        if bgp_id.is_unspecified() {
            return Err(DecodeError::BadBgpIdentifier(bgp_id));
        }
        let opt_len = r.u8().ok_or(short)?;
        let rest = r.rest();
        let offset = body.len() - rest.len();
        // RFC 9072 §2: 255 followed by type 255 means a 2-octet length.
        let extended = opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED_LENGTH);
        let (params_off, params_len) = if extended {
            let len = rest
                .get(1..3)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                .ok_or(DecodeError::MalformedOpen(
                    "extended optional parameters length",
                ))?;
            (offset + 3, len)
        } else {
            (offset, opt_len as usize)
        };
        if body.len() - params_off != params_len {
            return Err(DecodeError::MalformedOpen("optional parameters length"));
        }
        let params = body.slice(params_off..);
        let mut capabilities = Vec::new();
        let mut r = Reader::new(&params);
        while !r.is_empty() {
            let bad = DecodeError::MalformedOpen("optional parameter");
            let ptype = r.u8().ok_or(bad.clone())?;
            let plen = if extended {
                r.u16()
            } else {
                r.u8().map(u16::from)
            }
            .ok_or(bad.clone())?;
            let start = params.len() - r.remaining();
            let value = r.take(plen as usize).ok_or(bad)?;
            if ptype != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter(ptype));
            }
            decode_capabilities(&params.slice(start..start + value.len()), &mut capabilities)?;
        }
        Ok(OpenMsg {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(BGP_VERSION);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_slice(&self.bgp_id.octets());
        let mut caps = BytesMut::new();
        for cap in &self.capabilities {
            cap.encode(&mut caps)?;
        }
        if caps.is_empty() {
            out.put_u8(0);
        } else if caps.len() <= 253 {
            // One Capabilities parameter (RFC 5492 §4).
            out.put_u8(caps.len() as u8 + 2);
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u8(caps.len() as u8);
            out.put_slice(&caps);
        } else {
            // RFC 9072 §2 extended encoding.
            let len = u16::try_from(caps.len() + 3)
                .map_err(|_| EncodeError::MessageTooLong(caps.len(), 65535))?;
            out.put_u8(255);
            out.put_u8(PARAM_EXTENDED_LENGTH);
            out.put_u16(len);
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u16(caps.len() as u16);
            out.put_slice(&caps);
        }
        Ok(())
    }
}

fn decode_capabilities(value: &Bytes, out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let mut r = Reader::new(value);
    while !r.is_empty() {
        let bad = DecodeError::MalformedOpen("capability truncated");
        let code = r.u8().ok_or(bad.clone())?;
        let len = r.u8().ok_or(bad.clone())? as usize;
        let start = value.len() - r.remaining();
        r.take(len).ok_or(bad)?;
        out.push(Capability::decode(code, &value.slice(start..start + len)));
    }
    Ok(())
}
