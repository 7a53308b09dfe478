//! Decode/encode errors (RFC 4271 §6) and RFC 7606 soft errors.

use std::net::Ipv4Addr;

use bytes::Bytes;

use super::notification::{
    NotificationMsg, error_code, header_subcode, open_subcode, update_subcode,
};

/// A hard decode error: the session must be reset with the NOTIFICATION
/// given by [`DecodeError::code`], [`DecodeError::subcode`] and
/// [`DecodeError::data`] (RFC 4271 §6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// §6.1: marker is not all ones.
    #[error("message header: connection not synchronized")]
    ConnectionNotSynchronized,
    /// §6.1: length field out of range for the message type.
    #[error("message header: bad message length {0}")]
    BadMessageLength(u16),
    /// §6.1: unknown message type.
    #[error("message header: bad message type {0}")]
    BadMessageType(u8),
    /// §6.2: version is not 4.
    #[error("OPEN: unsupported version number {0}")]
    UnsupportedVersionNumber(u8),
    /// §6.2: peer AS unacceptable (checked by the FSM).
    #[error("OPEN: bad peer AS {0}")]
    BadPeerAs(u16),
    /// §6.2, RFC 6286: BGP identifier is zero.
    #[error("OPEN: bad BGP identifier {0}")]
    BadBgpIdentifier(Ipv4Addr),
    /// §6.2: unknown optional parameter type.
    #[error("OPEN: unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// §6.2: hold time 1 or 2 seconds.
    #[error("OPEN: unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// RFC 5492 §5: required capabilities the peer did not advertise;
    /// data holds the missing capability tuples.
    #[error("OPEN: unsupported capability")]
    UnsupportedCapability(Bytes),
    /// §6.2: other OPEN errors (subcode 0, unspecific).
    #[error("OPEN: malformed ({0})")]
    MalformedOpen(&'static str),
    /// §6.3, RFC 7606 §3 a/g: lengths inconsistent or duplicate MP attrs.
    #[error("UPDATE: malformed attribute list ({0})")]
    MalformedAttributeList(&'static str),
    /// §6.3: unrecognized well-known attribute (data: the attribute).
    #[error("UPDATE: unrecognized well-known attribute")]
    UnrecognizedWellKnownAttribute(Bytes),
    /// RFC 7606 §3 c: flags error on MP_REACH/MP_UNREACH.
    #[error("UPDATE: attribute flags error")]
    AttributeFlags(Bytes),
    /// RFC 4760 §7, RFC 7606 §7.11-12: malformed MP_REACH/MP_UNREACH.
    #[error("UPDATE: optional attribute error ({reason})")]
    OptionalAttribute { reason: &'static str, data: Bytes },
    /// §6.3, RFC 7606 §5.3: NLRI field cannot be parsed.
    #[error("UPDATE: invalid network field ({0})")]
    InvalidNetworkField(&'static str),
    /// RFC 7313 §5: ROUTE-REFRESH with invalid length (data: the message).
    #[error("ROUTE-REFRESH: invalid message length")]
    RouteRefreshInvalidLength(Bytes),
}

impl DecodeError {
    /// NOTIFICATION error code.
    pub fn code(&self) -> u8 {
        use DecodeError::*;
        match self {
            ConnectionNotSynchronized | BadMessageLength(_) | BadMessageType(_) => {
                error_code::MESSAGE_HEADER
            }
            UnsupportedVersionNumber(_)
            | BadPeerAs(_)
            | BadBgpIdentifier(_)
            | UnsupportedOptionalParameter(_)
            | UnacceptableHoldTime(_)
            | UnsupportedCapability(_)
            | MalformedOpen(_) => error_code::OPEN_MESSAGE,
            MalformedAttributeList(_)
            | UnrecognizedWellKnownAttribute(_)
            | AttributeFlags(_)
            | OptionalAttribute { .. }
            | InvalidNetworkField(_) => error_code::UPDATE_MESSAGE,
            RouteRefreshInvalidLength(_) => error_code::ROUTE_REFRESH,
        }
    }

    /// NOTIFICATION error subcode.
    pub fn subcode(&self) -> u8 {
        use DecodeError::*;
        match self {
            ConnectionNotSynchronized => header_subcode::CONNECTION_NOT_SYNCHRONIZED,
            BadMessageLength(_) => header_subcode::BAD_MESSAGE_LENGTH,
            BadMessageType(_) => header_subcode::BAD_MESSAGE_TYPE,
            UnsupportedVersionNumber(_) => open_subcode::UNSUPPORTED_VERSION_NUMBER,
            BadPeerAs(_) => open_subcode::BAD_PEER_AS,
            BadBgpIdentifier(_) => open_subcode::BAD_BGP_IDENTIFIER,
            UnsupportedOptionalParameter(_) => open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER,
            UnacceptableHoldTime(_) => open_subcode::UNACCEPTABLE_HOLD_TIME,
            UnsupportedCapability(_) => open_subcode::UNSUPPORTED_CAPABILITY,
            MalformedOpen(_) => open_subcode::UNSPECIFIC,
            MalformedAttributeList(_) => update_subcode::MALFORMED_ATTRIBUTE_LIST,
            UnrecognizedWellKnownAttribute(_) => update_subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            AttributeFlags(_) => update_subcode::ATTRIBUTE_FLAGS_ERROR,
            OptionalAttribute { .. } => update_subcode::OPTIONAL_ATTRIBUTE_ERROR,
            InvalidNetworkField(_) => update_subcode::INVALID_NETWORK_FIELD,
            RouteRefreshInvalidLength(_) => 1,
        }
    }

    /// NOTIFICATION data field (RFC 4271 §6).
    pub fn data(&self) -> Bytes {
        use DecodeError::*;
        match self {
            BadMessageLength(len) => Bytes::copy_from_slice(&len.to_be_bytes()),
            BadMessageType(t) => Bytes::copy_from_slice(&[*t]),
            // §6.2: largest locally supported version.
            UnsupportedVersionNumber(_) => Bytes::from_static(&[0, 4]),
            BadPeerAs(asn) => Bytes::copy_from_slice(&asn.to_be_bytes()),
            BadBgpIdentifier(id) => Bytes::copy_from_slice(&id.octets()),
            UnsupportedCapability(d)
            | UnrecognizedWellKnownAttribute(d)
            | AttributeFlags(d)
            | OptionalAttribute { data: d, .. }
            | RouteRefreshInvalidLength(d) => d.clone(),
            _ => Bytes::new(),
        }
    }

    /// The NOTIFICATION to send for this error.
    pub fn to_notification(&self) -> NotificationMsg {
        NotificationMsg {
            code: self.code(),
            subcode: self.subcode(),
            data: self.data(),
        }
    }
}

/// Encode errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message length {0} exceeds the maximum {1}")]
    MessageTooLong(usize, usize),
    #[error("capability value too long ({0} octets)")]
    CapabilityTooLong(usize),
    #[error("path attributes leave no room for NLRI")]
    AttributesTooLong,
    #[error("next hop does not fit the address family")]
    InvalidNextHop,
}

/// RFC 7606 §2 error-handling approaches short of session reset, ordered
/// by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorAction {
    /// The malformed attribute is dropped, the routes are kept.
    AttributeDiscard,
    /// All routes in the UPDATE are handled as withdrawn.
    TreatAsWithdraw,
}

/// Why an attribute was rejected (RFC 7606).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrErrorReason {
    /// §3 c: Optional/Transitive bits conflict with the attribute type.
    Flags,
    /// §7: length wrong for the attribute type.
    Length,
    /// §7: value undefined or syntactically wrong.
    Value,
    /// §3 d: well-known mandatory attribute missing.
    Missing,
    /// §3 g: second occurrence of an attribute.
    Duplicate,
    /// §4: attribute overruns the attribute list.
    Truncated,
    /// RFC 6793 §3: AS4_PATH/AS4_AGGREGATOR from a 4-octet speaker.
    As4FromNewSpeaker,
    /// RFC 7607 §2: AS number 0 in AS_PATH, AS4_PATH, AGGREGATOR or AS4_AGGREGATOR.
    AsZero,
}

/// A non-fatal UPDATE error (RFC 7606) with the offending bytes for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError {
    /// Attribute type code (0 when it could not be read).
    pub type_code: u8,
    pub action: ErrorAction,
    pub reason: AttrErrorReason,
    /// The offending attribute (flags, type, length, value) as received.
    pub data: Bytes,
}
