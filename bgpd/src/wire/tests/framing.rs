//! Splitting the TCP byte stream into messages (RFC 4271 §4.1, §6.1): the marker is checked
//! before the length, and both as soon as their octets arrive.

use bytes::BytesMut;

use crate::wire::*;

fn keepalive() -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&[0, 19, 4]);
    v
}

#[test]
fn whole_messages_are_split_off_and_a_partial_one_waits() {
    let mut buf = BytesMut::from(&[keepalive(), keepalive()[..10].to_vec()].concat()[..]);
    let first = next_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
    assert_eq!(&first[..], &keepalive()[..]);
    assert_eq!(next_frame(&mut buf, MAX_MESSAGE_LEN), Ok(None));
    assert_eq!(buf.len(), 10);
}

#[test]
fn a_bad_marker_octet_is_refused_before_the_length_arrives() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0x00][..]);
    assert_eq!(
        next_frame(&mut buf, MAX_MESSAGE_LEN),
        Err(DecodeError::ConnectionNotSynchronized)
    );
    assert_eq!(buf.len(), 3, "a framing error consumes nothing");
}

#[test]
fn a_bad_marker_wins_over_a_bad_length() {
    let mut v = vec![0u8; 16];
    v.extend_from_slice(&[0, 0, 4]);
    let e = next_frame(&mut BytesMut::from(&v[..]), MAX_MESSAGE_LEN).unwrap_err();
    assert_eq!(e, DecodeError::ConnectionNotSynchronized);
    assert_eq!((e.code(), e.subcode()), (1, 1));
}

#[test]
fn a_length_below_19_is_bad_message_length_with_the_length_as_data() {
    let mut v = keepalive();
    v[17] = 18;
    // The type octet is not needed to refuse the length.
    let e = next_frame(&mut BytesMut::from(&v[..18]), MAX_MESSAGE_LEN).unwrap_err();
    assert_eq!(e, DecodeError::BadMessageLength(18));
    assert_eq!((e.code(), e.subcode()), (1, 2));
    assert_eq!(&e.data()[..], &[0, 18]);
}

#[test]
fn a_length_above_4096_is_refused_at_once_without_extended_messages() {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&4097u16.to_be_bytes());
    let e = next_frame(&mut BytesMut::from(&v[..]), MAX_MESSAGE_LEN).unwrap_err();
    assert_eq!(e, DecodeError::BadMessageLength(4097));
    assert_eq!(&e.data()[..], &[0x10, 0x01]);
}

#[test]
fn a_length_above_4096_waits_for_its_body_with_extended_messages() {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&4097u16.to_be_bytes());
    v.push(2);
    let mut buf = BytesMut::from(&v[..]);
    assert_eq!(next_frame(&mut buf, MAX_EXTENDED_MESSAGE_LEN), Ok(None));
    buf.extend_from_slice(&vec![0; 4097 - 19]);
    let f = next_frame(&mut buf, MAX_EXTENDED_MESSAGE_LEN)
        .unwrap()
        .unwrap();
    assert_eq!(f.len(), 4097);
    assert!(buf.is_empty());
}
