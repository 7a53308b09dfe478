//! ROUTE-REFRESH message (RFC 2918 §3, RFC 7313 §3).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Afi, DecodeError, Safi};

/// Message subtype (RFC 7313 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    Normal,
    /// Beginning of Route Refresh.
    BoRR,
    /// End of Route Refresh.
    EoRR,
    /// Reserved values; RFC 7313 §5 says ignore the message.
    Reserved(u8),
}

impl RouteRefreshSubtype {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::BoRR,
            2 => Self::EoRR,
            v => Self::Reserved(v),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::BoRR => 1,
            Self::EoRR => 2,
            Self::Reserved(v) => v,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefreshMsg {
    pub afi: Afi,
    pub subtype: RouteRefreshSubtype,
    pub safi: Safi,
}

impl RouteRefreshMsg {
    pub fn new(afi: Afi, safi: Safi) -> Self {
        RouteRefreshMsg {
            afi,
            subtype: RouteRefreshSubtype::Normal,
            safi,
        }
    }

    /// RFC 7313 §5: a body other than 4 octets is an Invalid Message
    /// Length error carrying the whole message. (ORF, RFC 5291, is not
    /// supported.)
    pub(crate) fn decode(frame: &Bytes, body: &[u8]) -> Result<Self, DecodeError> {
        let [a0, a1, subtype, safi] = body
            .try_into()
            .map_err(|_| DecodeError::RouteRefreshInvalidLength(frame.clone()))?;
        Ok(RouteRefreshMsg {
            afi: Afi(u16::from_be_bytes([a0, a1])),
            subtype: RouteRefreshSubtype::from_u8(subtype),
            safi: Safi(safi),
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.afi.0);
        out.put_u8(self.subtype.to_u8());
        out.put_u8(self.safi.0);
    }
}
