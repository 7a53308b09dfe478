//! NOTIFICATION message (RFC 4271 §4.5), Cease subcodes (RFC 4486) and
//! shutdown communication (RFC 9003).

use bytes::{BufMut, Bytes, BytesMut};

/// Error codes (RFC 4271 §4.5, RFC 7313 §5).
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header_subcode {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492).
pub mod open_subcode {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Cease subcodes (RFC 4486, RFC 8538 §5).
pub mod cease_subcode {
    pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
}

/// RFC 9003 §2: maximum shutdown communication length.
pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 255;

/// NOTIFICATION message (RFC 4271 §4.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NotificationMsg {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

impl NotificationMsg {
    pub fn new(code: u8, subcode: u8, data: Bytes) -> Self {
        NotificationMsg {
            code,
            subcode,
            data,
        }
    }

    /// Cease with a shutdown communication (RFC 9003 §2); `subcode` should
    /// be Administrative Shutdown or Reset. Long text is cut at a UTF-8
    /// boundary to 255 octets.
    pub fn cease_with_communication(subcode: u8, text: &str) -> Self {
        let mut end = text.len().min(MAX_SHUTDOWN_COMMUNICATION_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = BytesMut::with_capacity(end + 1);
        data.put_u8(end as u8);
        data.put_slice(&text.as_bytes()[..end]);
        NotificationMsg::new(error_code::CEASE, subcode, data.freeze())
    }

    /// RFC 8538 §3: a Cease/Hard Reset carrying `inner` (its code and subcode, then its data).
    pub fn hard_reset(inner: &NotificationMsg) -> Self {
        let mut data = BytesMut::with_capacity(2 + inner.data.len());
        data.put_u8(inner.code);
        data.put_u8(inner.subcode);
        data.put_slice(&inner.data);
        NotificationMsg::new(error_code::CEASE, cease_subcode::HARD_RESET, data.freeze())
    }

    /// RFC 8538 §3: Cease/Hard Reset, which ends the session without graceful restart.
    pub fn is_hard_reset(&self) -> bool {
        self.code == error_code::CEASE && self.subcode == cease_subcode::HARD_RESET
    }

    /// RFC 8538 §3: the NOTIFICATION a Hard Reset carries (None if this is not one, or its
    /// data is too short to hold a code and subcode).
    pub fn hard_reset_inner(&self) -> Option<NotificationMsg> {
        if !self.is_hard_reset() || self.data.len() < 2 {
            return None;
        }
        Some(NotificationMsg::new(
            self.data[0],
            self.data[1],
            self.data.slice(2..),
        ))
    }

    /// RFC 8538 §5: the Cease subcodes that must (1, 2, 3) or should (4) go out as a Hard
    /// Reset when the N bit was exchanged: the routes are meant to go, not to be kept.
    pub fn wants_hard_reset(&self) -> bool {
        self.code == error_code::CEASE
            && matches!(
                self.subcode,
                cease_subcode::MAXIMUM_PREFIXES_REACHED
                    | cease_subcode::ADMINISTRATIVE_SHUTDOWN
                    | cease_subcode::PEER_DECONFIGURED
                    | cease_subcode::ADMINISTRATIVE_RESET
            )
    }

    /// RFC 9003 §2: the shutdown communication, if this is a Cease
    /// Administrative Shutdown/Reset whose data holds valid UTF-8 text.
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != error_code::CEASE
            || !matches!(
                self.subcode,
                cease_subcode::ADMINISTRATIVE_SHUTDOWN | cease_subcode::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..len as usize)?;
        std::str::from_utf8(text).ok()
    }

    pub(crate) fn decode(body: &Bytes) -> Self {
        // The header check guarantees at least 2 octets.
        NotificationMsg {
            code: body.first().copied().unwrap_or(0),
            subcode: body.get(1).copied().unwrap_or(0),
            data: body.slice(2.min(body.len())..),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }
}
