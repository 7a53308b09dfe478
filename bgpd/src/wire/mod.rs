//! BGP-4 wire codec (RFC 4271 §4), sans-IO.
//!
//! Decoding works on whole frames held in [`Bytes`] so raw pieces (unknown
//! attributes, NOTIFICATION data, offending bytes) are zero-copy slices.
//! Encoding appends to a [`BytesMut`].

mod aspath;
mod attribute;
mod builder;
mod capability;
mod community;
mod cursor;
mod error;
mod header;
mod mp;
mod nlri;
mod notification;
mod open;
mod route_refresh;
mod update;

#[cfg(test)]
mod tests;

pub use aspath::{AsPath, AsSegment, AsSegmentType};
pub use attribute::{Aggregator, Origin, PathAttrs, RawAttr, attr_flags, attr_type};
pub use builder::UpdateBuilder;
pub use capability::{
    AddPathFamily, AddPathMode, Capability, ExtNextHopEntry, GrFamily, GracefulRestart, LlgrFamily,
    cap_code,
};
pub use community::{Community, ExtCommunity, LargeCommunity};
pub use error::{AttrError, AttrErrorReason, DecodeError, EncodeError, ErrorAction};
pub use header::{Header, MARKER, MessageType, next_frame};
pub use mp::{MpNextHop, MpReach, MpUnreach};
pub use notification::{
    NotificationMsg, cease_subcode, error_code, header_subcode, open_subcode, update_subcode,
};
pub use open::OpenMsg;
pub use route_refresh::{RouteRefreshMsg, RouteRefreshSubtype};
pub use update::UpdateMsg;

use bytes::{Bytes, BytesMut};

/// BGP header length (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum message size (RFC 4271 §4).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with extended messages (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// AS_TRANS (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
}

/// Per-session facts the codec needs (negotiated capabilities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// 4-octet AS numbers negotiated (RFC 6793).
    pub four_octet_as: bool,
    /// Extended messages negotiated (RFC 8654).
    pub extended_message: bool,
}

impl Context {
    /// Maximum message length allowed on this session.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A BGP message (RFC 4271 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(OpenMsg),
    /// Boxed: the attribute set makes it large.
    Update(Box<UpdateMsg>),
    Notification(NotificationMsg),
    Keepalive,
    RouteRefresh(RouteRefreshMsg),
}

impl Message {
    /// Decodes exactly one message; `frame` holds header and body.
    pub fn decode(frame: Bytes, ctx: &Context) -> Result<Message, DecodeError> {
        let hdr = Header::decode(&frame, ctx)?;
        if frame.len() != hdr.length as usize {
            return Err(DecodeError::BadMessageLength(hdr.length));
        }
        let body = frame.slice(HEADER_LEN..);
        match hdr.msg_type {
            MessageType::Open => OpenMsg::decode(&body).map(Message::Open),
            MessageType::Update => {
                UpdateMsg::decode(&body, ctx).map(|u| Message::Update(Box::new(u)))
            }
            MessageType::Notification => Ok(Message::Notification(NotificationMsg::decode(&body))),
            MessageType::Keepalive => Ok(Message::Keepalive),
            MessageType::RouteRefresh => {
                RouteRefreshMsg::decode(&frame, &body).map(Message::RouteRefresh)
            }
        }
    }

    /// Splits one complete message off the front of `buf` and decodes it.
    /// Returns `Ok(None)` until enough bytes are buffered.
    pub fn decode_from(buf: &mut BytesMut, ctx: &Context) -> Result<Option<Message>, DecodeError> {
        let Some(hdr) = Header::peek(buf, ctx)? else {
            return Ok(None);
        };
        if buf.len() < hdr.length as usize {
            return Ok(None);
        }
        let frame = buf.split_to(hdr.length as usize).freeze();
        Message::decode(frame, ctx).map(Some)
    }

    /// Message type code.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut, ctx: &Context) -> Result<(), EncodeError> {
        let start = header::begin(out, self.msg_type());
        match self {
            Message::Open(m) => m.encode_body(out)?,
            Message::Update(m) => m.encode_body(out, ctx)?,
            Message::Notification(m) => m.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(m) => m.encode_body(out),
        }
        header::finish(out, start, ctx)
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, ctx: &Context) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out, ctx)?;
        Ok(out.freeze())
    }
}
