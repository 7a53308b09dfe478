//! Message header (RFC 4271 §4.1) and its checks (§6.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Context, DecodeError, EncodeError, HEADER_LEN};

/// The all-ones marker (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];

/// Message types (RFC 4271 §4.1, RFC 2918 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    fn from_u8(t: u8) -> Option<Self> {
        Some(match t {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest valid message length (§4.2-4.5).
    fn min_len(self) -> usize {
        match self {
            MessageType::Open => 29,
            MessageType::Update => 23,
            MessageType::Notification => 21,
            MessageType::Keepalive => 19,
            // RFC 7313 §5: checked by the message decoder, code 7.
            MessageType::RouteRefresh => 19,
        }
    }
}

/// A checked message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub length: u16,
    pub msg_type: MessageType,
}

impl Header {
    /// Checks a header (§6.1); `buf` must hold at least 19 octets.
    pub fn decode(buf: &[u8], ctx: &Context) -> Result<Header, DecodeError> {
        Self::peek(buf, ctx)?.ok_or(DecodeError::BadMessageLength(buf.len() as u16))
    }

    /// Like [`Header::decode`], but `Ok(None)` if fewer than 19 octets.
    pub fn peek(buf: &[u8], ctx: &Context) -> Result<Option<Header>, DecodeError> {
        let Some(hdr) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if hdr[..16] != MARKER {
            return Err(DecodeError::ConnectionNotSynchronized);
        }
        let length = u16::from_be_bytes([hdr[16], hdr[17]]);
        let len = length as usize;
        if len < HEADER_LEN || len > ctx.max_message_len() {
            return Err(DecodeError::BadMessageLength(length));
        }
        let msg_type = MessageType::from_u8(hdr[18]).ok_or(DecodeError::BadMessageType(hdr[18]))?;
        if len < msg_type.min_len() || (msg_type == MessageType::Keepalive && len != HEADER_LEN) {
            return Err(DecodeError::BadMessageLength(length));
        }
        Ok(Some(Header { length, msg_type }))
    }
}

/// Splits the next whole message off a TCP byte stream (RFC 4271 §4.1, §6.1), checking only
/// what framing needs, in wire order and as soon as the octets are there: the marker first
/// (a wrong octet is Connection Not Synchronized before the rest of the header arrives), then
/// the length (Bad Message Length unless `19..=max_len`). `Ok(None)`: more octets are needed.
/// A framing error leaves `buf` as it was: the stream is unusable, the session must be reset.
/// The message type and the type's own length rules are [`Header::decode`]'s, once whole.
pub fn next_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, DecodeError> {
    let seen = buf.len().min(MARKER.len());
    if buf[..seen] != MARKER[..seen] {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let Some(len) = buf.get(16..18) else {
        return Ok(None);
    };
    let length = u16::from_be_bytes([len[0], len[1]]);
    if (length as usize) < HEADER_LEN || length as usize > max_len {
        return Err(DecodeError::BadMessageLength(length));
    }
    if buf.len() < length as usize {
        return Ok(None);
    }
    Ok(Some(buf.split_to(length as usize).freeze()))
}

/// Writes a header with a zero length; returns its offset.
pub(crate) fn begin(out: &mut BytesMut, t: MessageType) -> usize {
    let start = out.len();
    out.put_slice(&MARKER);
    out.put_u16(0);
    out.put_u8(t as u8);
    start
}

/// Patches the length of the message started at `start`.
pub(crate) fn finish(out: &mut BytesMut, start: usize, ctx: &Context) -> Result<(), EncodeError> {
    let len = out.len() - start;
    if len > ctx.max_message_len() {
        out.truncate(start);
        return Err(EncodeError::MessageTooLong(len, ctx.max_message_len()));
    }
    out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}
