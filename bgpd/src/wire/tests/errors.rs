//! Hard errors and their NOTIFICATION code/subcode/data (RFC 4271 §6).

use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::wire::*;

fn err(wire: Bytes, ctx: &Context) -> DecodeError {
    Message::decode(wire, ctx).expect_err("must fail")
}

fn codes(e: &DecodeError) -> (u8, u8) {
    (e.code(), e.subcode())
}

#[test]
fn sec6_1_bad_marker() {
    let mut v = msg(4, "").to_vec();
    v[3] = 0;
    let e = err(v.into(), &CTX4);
    assert_eq!(e, DecodeError::ConnectionNotSynchronized);
    assert_eq!(codes(&e), (1, 1));
}

#[test]
fn sec6_1_length_too_short() {
    let mut v = msg(4, "").to_vec();
    v[17] = 18;
    let e = err(v.into(), &CTX4);
    assert_eq!(codes(&e), (1, 2));
    assert_eq!(e.data(), hex("0012"));
}

#[test]
fn sec6_1_length_over_4096() {
    let body = "00".repeat(4096 - 19 + 1);
    let wire = msg(2, &body);
    assert_eq!(codes(&err(wire.clone(), &CTX4)), (1, 2));
    // RFC 8654: allowed with extended messages.
    let ext = Context {
        extended_message: true,
        ..CTX4
    };
    assert!(Message::decode(wire, &ext).is_ok());
}

#[test]
fn sec6_1_bad_type() {
    let e = err(msg(9, ""), &CTX4);
    assert_eq!(e, DecodeError::BadMessageType(9));
    assert_eq!(codes(&e), (1, 3));
    assert_eq!(e.data(), hex("09"));
}

#[test]
fn sec6_1_type_specific_lengths() {
    assert_eq!(codes(&err(msg(4, "00"), &CTX4)), (1, 2));
    assert_eq!(
        err(msg(1, "04 fde9 00b4 0a000001"), &CTX4),
        DecodeError::BadMessageLength(28)
    );
    assert_eq!(codes(&err(msg(2, "0000"), &CTX4)), (1, 2));
    assert_eq!(codes(&err(msg(3, "06"), &CTX4)), (1, 2));
}

#[test]
fn frame_length_must_match_header() {
    let mut v = msg(4, "").to_vec();
    v.push(0);
    assert_eq!(codes(&err(v.into(), &CTX4)), (1, 2));
}

#[test]
fn sec6_2_unsupported_version() {
    let e = err(msg(1, "03 fde9 00b4 0a000001 00"), &CTX4);
    assert_eq!(e, DecodeError::UnsupportedVersionNumber(3));
    assert_eq!(codes(&e), (2, 1));
    assert_eq!(e.data(), hex("0004"));
}

#[test]
fn sec6_2_hold_time_one_or_two_rejected() {
    for hold in ["0001", "0002"] {
        let e = err(msg(1, &format!("04 fde9 {hold} 0a000001 00")), &CTX4);
        assert_eq!(codes(&e), (2, open_subcode::UNACCEPTABLE_HOLD_TIME));
    }
    for hold in ["0000", "0003"] {
        assert!(Message::decode(msg(1, &format!("04 fde9 {hold} 0a000001 00")), &CTX4).is_ok());
    }
}

#[test]
fn sec6_2_bad_bgp_identifier() {
    let e = err(msg(1, "04 fde9 00b4 00000000 00"), &CTX4);
    assert_eq!(e, DecodeError::BadBgpIdentifier(Ipv4Addr::UNSPECIFIED));
    assert_eq!(codes(&e), (2, 3));
}

#[test]
fn sec6_2_unsupported_optional_parameter() {
    // Type 1 (authentication, deprecated).
    let e = err(msg(1, "04 fde9 00b4 0a000001 03 01 01 00"), &CTX4);
    assert_eq!(e, DecodeError::UnsupportedOptionalParameter(1));
    assert_eq!(codes(&e), (2, 4));
}

#[test]
fn sec6_2_optional_parameters_length_mismatch() {
    let e = err(msg(1, "04 fde9 00b4 0a000001 05 02 02 0200"), &CTX4);
    assert_eq!(codes(&e), (2, 0));
    let e = err(msg(1, "04 fde9 00b4 0a000001 04 02 03 0200"), &CTX4);
    assert_eq!(codes(&e), (2, 0));
    // Capability overruns its parameter.
    let e = err(msg(1, "04 fde9 00b4 0a000001 04 02 02 0201"), &CTX4);
    assert_eq!(codes(&e), (2, 0));
}

#[test]
fn rfc5492_sec5_unsupported_capability() {
    let wire = msg(1, "04 fde9 00b4 0a000001 08 02 06 01040001 0001");
    let Message::Open(open) = Message::decode(wire, &CTX4).unwrap() else {
        panic!()
    };
    let v6 = Capability::Multiprotocol {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
    };
    let v4 = Capability::Multiprotocol {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    };
    assert_eq!(open.check_required(std::slice::from_ref(&v4)), Ok(()));
    let e = open.check_required(&[v4, v6]).unwrap_err();
    assert_eq!(codes(&e), (2, open_subcode::UNSUPPORTED_CAPABILITY));
    assert_eq!(e.data(), hex("01 04 0002 00 01"));
    let n = Message::Notification(e.to_notification())
        .to_bytes(&CTX4)
        .unwrap();
    assert_eq!(n, msg(3, "02 07 01 04 0002 00 01"));
}

#[test]
fn malformed_capability_value_kept_as_unknown() {
    // 4-octet AS capability with 2 octets: treated as not received.
    let wire = msg(1, "04 fde9 00b4 0a000001 06 02 04 4102 fde9");
    let Message::Open(open) = Message::decode(wire, &CTX4).unwrap() else {
        panic!()
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Unknown {
            code: 65,
            value: hex("fde9")
        }]
    );
    assert_eq!(open.four_octet_as(), None);
}

#[test]
fn rfc7313_sec5_route_refresh_bad_length() {
    let wire = msg(5, "0001 01 01 00");
    let e = err(wire.clone(), &CTX4);
    assert_eq!(codes(&e), (error_code::ROUTE_REFRESH, 1));
    assert_eq!(e.data(), wire);
    assert_eq!(codes(&err(msg(5, "0001"), &CTX4)), (7, 1));
}

#[test]
fn notification_from_error_encodes() {
    let e = DecodeError::BadMessageLength(5000);
    let wire = Message::Notification(e.to_notification())
        .to_bytes(&CTX4)
        .unwrap();
    assert_eq!(wire, msg(3, "01 02 1388"));
}

#[test]
fn decode_from_stream_buffer() {
    let mut stream = BytesMut::new();
    stream.extend_from_slice(&msg(4, ""));
    stream.extend_from_slice(&msg(5, "0001 00 01"));
    let whole = stream.clone();
    // Byte by byte: nothing until a message is complete.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in whole.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some(m) = Message::decode_from(&mut buf, &CTX4).unwrap() {
            got.push(m);
        }
    }
    assert_eq!(
        got,
        vec![
            Message::Keepalive,
            Message::RouteRefresh(RouteRefreshMsg::new(Afi::IPV4, Safi::UNICAST))
        ]
    );
    assert!(buf.is_empty());
    // A bad header fails as soon as it is complete.
    let mut bad = BytesMut::from(&[0u8; 19][..]);
    assert_eq!(
        Message::decode_from(&mut bad, &CTX4),
        Err(DecodeError::ConnectionNotSynchronized)
    );
}

#[test]
fn encode_too_long_fails() {
    let u = UpdateMsg {
        withdrawn: (0..2000u32)
            .map(|i| ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap())
            .collect(),
        ..UpdateMsg::default()
    };
    let m = Message::Update(Box::new(u));
    let mut out = BytesMut::new();
    assert!(matches!(
        m.encode(&mut out, &CTX4),
        Err(EncodeError::MessageTooLong(..))
    ));
    assert!(out.is_empty());
    let ext = Context {
        extended_message: true,
        ..CTX4
    };
    assert!(m.to_bytes(&ext).is_ok());
}
