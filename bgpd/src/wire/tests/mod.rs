//! Codec tests: wire vectors both ways, RFC 7606 cases, error codes,
//! builder packing and proptest round trips.

mod builder;
mod errors;
mod framing;
mod fuzz_regressions;
mod props;
mod rfc7606;
mod vectors;

use bytes::{Bytes, BytesMut};

use super::{Context, HEADER_LEN, Message, UpdateMsg};

pub(super) const CTX4: Context = Context {
    four_octet_as: true,
    extended_message: false,
};
pub(super) const CTX2: Context = Context {
    four_octet_as: false,
    extended_message: false,
};

/// Hex to bytes; whitespace is ignored.
pub(super) fn hex(s: &str) -> Bytes {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length");
    digits
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// A full message: marker, length, type, then `body` hex.
pub(super) fn msg(msg_type: u8, body: &str) -> Bytes {
    let body = hex(body);
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    v.push(msg_type);
    v.extend_from_slice(&body);
    v.into()
}

/// Decodes `wire` to `expected` and encodes `expected` back to `wire`.
pub(super) fn both_ways(wire: &Bytes, expected: &Message, ctx: &Context) {
    let decoded = Message::decode(wire.clone(), ctx).expect("decode");
    assert_eq!(&decoded, expected, "decode");
    let mut out = BytesMut::new();
    expected.encode(&mut out, ctx).expect("encode");
    assert_eq!(hex_string(&out), hex_string(wire), "encode");
}

pub(super) fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes an UPDATE message from its body hex.
pub(super) fn update(body: &str, ctx: &Context) -> Result<UpdateMsg, super::DecodeError> {
    match Message::decode(msg(2, body), ctx)? {
        Message::Update(u) => Ok(*u),
        m => panic!("not an UPDATE: {m:?}"),
    }
}

pub(super) fn net4(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

pub(super) fn net6(s: &str) -> ipnet::Ipv6Net {
    s.parse().unwrap()
}
