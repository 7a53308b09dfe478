//! BMP wire vectors, built by hand from RFC 7854 §4 and checked both ways.

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};

use super::msg::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(b: &Bytes) -> BmpMessage {
    let mut buf = BytesMut::from(&b[..]);
    let m = BmpMessage::decode_from(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "one message, all consumed");
    m
}

const PEER: PeerHeader = PeerHeader {
    flags: peer_flags::L,
    address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    asn: 65001,
    bgp_id: Ipv4Addr::new(10, 0, 0, 1),
    seconds: 0x6000_0000,
    micros: 5,
};

/// §4.2: type 0, flags, distinguisher 0, address in the last 4 of 16, AS, BGP ID, time.
const PEER_HEX: &str = "00 40 0000000000000000 000000000000000000000000 c0000201 \
                        0000fde9 0a000001 60000000 00000005";

#[test]
fn route_monitoring_vector() {
    // A KEEPALIVE-sized stand-in is enough: the PDU is carried opaque.
    let pdu = hex("ffffffffffffffffffffffffffffffff 0017 02 0000 0000");
    let m = route_monitoring(&PEER, &pdu);
    let want = [hex("03 00000047 00"), hex(PEER_HEX), pdu.clone()].concat();
    assert_eq!(m.len(), 6 + 42 + 23);
    assert_eq!(&m[..], &want[..]);
    assert_eq!(
        decode(&m),
        BmpMessage::RouteMonitoring {
            peer: PEER,
            update: Bytes::from(pdu)
        }
    );
}

#[test]
fn ipv6_peer_sets_the_v_flag() {
    let p = PeerHeader {
        address: "2001:db8::1".parse().unwrap(),
        flags: 0,
        ..PEER
    };
    let m = route_monitoring(&p, &[]);
    assert_eq!(m[7], peer_flags::V);
    assert_eq!(&m[16..32], &hex("20010db8000000000000000000000001")[..]);
    match decode(&m) {
        BmpMessage::RouteMonitoring { peer, .. } => assert_eq!(peer.address, p.address),
        other => panic!("{other:?}"),
    }
}

#[test]
fn initiation_and_termination_vectors() {
    let m = initiation("d", "n");
    assert_eq!(&m[..], &hex("03 00000010 04 0001 0001 64 0002 0001 6e")[..]);
    assert_eq!(
        decode(&m),
        BmpMessage::Initiation(vec![(1, Bytes::from("d")), (2, Bytes::from("n"))])
    );
    let t = termination(term_reason::OUT_OF_RESOURCES, "");
    assert_eq!(&t[..], &hex("03 0000000c 05 0001 0002 0002")[..]);
    assert_eq!(
        decode(&t),
        BmpMessage::Termination(vec![(1, Bytes::from(vec![0, 2]))])
    );
}

#[test]
fn peer_up_and_down_vectors() {
    let open = hex("ffffffffffffffffffffffffffffffff 001d 01 04 fde9 005a 0a000001 00");
    let up = peer_up(
        &PEER,
        ("192.0.2.2".parse().unwrap(), 179),
        40000,
        &open,
        &open,
    );
    let want = [
        hex("03 000000"),
        vec![(6 + 42 + 20 + 2 * 29) as u8],
        hex("03"),
        hex(PEER_HEX),
        hex("000000000000000000000000 c0000202 00b3 9c40"),
        open.clone(),
        open.clone(),
    ]
    .concat();
    assert_eq!(&up[..], &want[..]);
    assert_eq!(
        decode(&up),
        BmpMessage::PeerUp {
            peer: PEER,
            local_address: "192.0.2.2".parse().unwrap(),
            local_port: 179,
            remote_port: 40000,
            sent_open: Bytes::from(open.clone()),
            received_open: Bytes::from(open),
        }
    );
    let down = peer_down(
        &PEER,
        down_reason::LOCAL_NO_NOTIFICATION,
        &2u16.to_be_bytes(),
    );
    assert_eq!(&down[48..], &hex("02 0002")[..]);
    assert_eq!(
        decode(&down),
        BmpMessage::PeerDown {
            peer: PEER,
            reason: 2,
            data: Bytes::from(vec![0, 2])
        }
    );
}

#[test]
fn statistics_vector() {
    let m = statistics(&PEER, &[(stat_type::ADJ_RIB_IN_ROUTES, 1_000_000)]);
    assert_eq!(&m[48..], &hex("00000001 0007 0008 00000000000f4240")[..]);
    assert_eq!(
        decode(&m),
        BmpMessage::Statistics {
            peer: PEER,
            stats: vec![(7, 1_000_000)]
        }
    );
}

#[test]
fn partial_and_bad_input() {
    let m = initiation("d", "n");
    let mut half = BytesMut::from(&m[..10]);
    assert_eq!(
        BmpMessage::decode_from(&mut half),
        Ok(None),
        "waits for the rest"
    );
    let mut v2 = BytesMut::from(&hex("02 00000006 04")[..]);
    assert_eq!(BmpMessage::decode_from(&mut v2), Err(BmpError::Version(2)));
    let mut short = BmpMessage::decode_from(&mut BytesMut::from(&hex("03 00000005 04")[..]));
    assert_eq!(short, Err(BmpError::Length(5)));
    short = BmpMessage::decode_from(&mut BytesMut::from(&hex("03 0000000a 00 00000000")[..]));
    assert_eq!(
        short,
        Err(BmpError::Truncated {
            what: "per-peer header"
        })
    );
}
